"""RFC 7383 IKE fragmentation from the inventory into plans, and across the plan contract."""

from __future__ import annotations

import random
import textwrap
from pathlib import Path

from vpnfleet.agent.convert import plan_from_bytes
from vpnfleet.controller.inventory import load_inventory
from vpnfleet.controller.planner import NodePlan, Peer, Planner, build_plans
from vpnfleet.controller.transport import convert

SECRET = b"0123456789abcdef0123456789abcdef"
NAMES = ["a1", "a2", "a3"]
EXTERNAL = """
external_peers:
  - name: partner
    address: 203.0.113.10
    psk: a-long-enough-shared-key
    subnets: [192.0.2.0/24]
    connect: a1
"""


def write_mesh(root: Path, names: list[str], **host_vars: str) -> Path:
    """A mesh of ``names`` plus one external peer of a1; host_vars: host -> YAML text."""
    lines = ["all:", "  children:", "    mesh:", "      hosts:"]
    for name in names:
        i = int(name[1:])
        lines.append(f"        {name}: {{address: 10.99.0.{i}, subnets: [10.1.{i}.0/24]}}")
    root.mkdir(parents=True, exist_ok=True)
    (root / "hosts.yaml").write_text("\n".join(lines) + "\n")
    (root / "topology.yaml").write_text("meshes:\n  - {name: lab, group: mesh}\n" + EXTERNAL)
    (root / "host_vars").mkdir(exist_ok=True)
    for old in (root / "host_vars").iterdir():
        old.unlink()
    for host, text in host_vars.items():
        (root / "host_vars" / f"{host}.yaml").write_text(textwrap.dedent(text).lstrip("\n"))
    return root


def plans_of(root: Path) -> dict[str, NodePlan]:
    return build_plans(load_inventory(root), master_secret=SECRET)


def peer(plans: dict[str, NodePlan], host: str, name: str) -> Peer:
    (found,) = (p for p in plans[host].peers if p.name == name)
    return found


def test_defaults_leave_the_fields_unset(tmp_path: Path) -> None:
    plans = plans_of(write_mesh(tmp_path / "inv", NAMES))
    for plan in plans.values():
        for p in plan.peers:
            assert (p.ike_fragmentation_off, p.ike_fragment_size) == (False, 0)
        # Unset proto3 scalars are not serialised: plans of fleets that never set the
        # variables keep their bytes, and their content hashes.
        for msg in convert.plan_to_proto(plan).peers:
            fields = {fd.name for fd, _ in msg.ListFields()}
            assert not fields & {"ike_fragmentation_off", "ike_fragment_size"}


def test_each_end_uses_its_own_variables(tmp_path: Path) -> None:
    root = write_mesh(
        tmp_path / "inv",
        NAMES,
        a1="ike_fragmentation: false\nike_fragment_size: 1400\n",
        a2="ike_fragment_size: 576\n",
    )
    plans = plans_of(root)
    assert (
        peer(plans, "a1", "a2").ike_fragmentation_off,
        peer(plans, "a1", "a2").ike_fragment_size,
    ) == (True, 1400)
    assert peer(plans, "a1", "a3").ike_fragment_size == 1400
    # External peers have no IKE settings of their own: the host's variables apply.
    external = peer(plans, "a1", "partner")
    assert (external.ike_fragmentation_off, external.ike_fragment_size) == (True, 1400)
    a2 = peer(plans, "a2", "a1")
    assert (a2.ike_fragmentation_off, a2.ike_fragment_size) == (False, 576)
    a3 = peer(plans, "a3", "a1")
    assert (a3.ike_fragmentation_off, a3.ike_fragment_size) == (False, 0)


def test_explicit_default_size_plans_like_no_setting(tmp_path: Path) -> None:
    unset = plans_of(write_mesh(tmp_path / "one", NAMES))
    explicit = plans_of(
        write_mesh(tmp_path / "two", NAMES, a1="ike_fragmentation: true\nike_fragment_size: 1280\n")
    )
    assert [convert.plan_bytes(p) for p in unset.values()] == [
        convert.plan_bytes(p) for p in explicit.values()
    ]


def test_build_with_fragmentation_is_deterministic(tmp_path: Path) -> None:
    settings = {"a2": "ike_fragmentation: false\n", "a3": "ike_fragment_size: 9000\n"}
    first = plans_of(write_mesh(tmp_path / "one", NAMES, **settings))
    again = plans_of(write_mesh(tmp_path / "one", NAMES, **settings))
    shuffled = NAMES[:]
    random.Random(3).shuffle(shuffled)
    assert shuffled != NAMES
    other = plans_of(write_mesh(tmp_path / "two", shuffled, **settings))
    assert first == again == other
    assert [convert.plan_bytes(p) for p in first.values()] == [
        convert.plan_bytes(p) for p in other.values()
    ]


def test_replan_after_a_fragment_size_change(tmp_path: Path) -> None:
    root = tmp_path / "inv"
    planner = Planner()
    old = planner.plan(load_inventory(write_mesh(root, NAMES)), master_secret=SECRET)
    new = planner.plan(
        load_inventory(write_mesh(root, NAMES, a2="ike_fragment_size: 1400\n")),
        master_secret=SECRET,
    )
    assert new == plans_of(root)  # incremental result equals a full rebuild
    assert planner.changed_hosts(old, new) == {"a2"}
    assert {p.ike_fragment_size for p in new["a2"].peers} == {1400}


def test_round_trip_to_the_agent(tmp_path: Path) -> None:
    root = write_mesh(
        tmp_path / "inv",
        NAMES,
        a1="ike_fragmentation: false\nike_fragment_size: 1400\n",
    )
    plans = plans_of(root)
    a1 = plan_from_bytes(convert.plan_bytes(plans["a1"]))
    assert {(p.name, p.ike_fragmentation, p.ike_fragment_size) for p in a1.peers} == {
        ("a2", False, 1400),
        ("a3", False, 1400),
        ("partner", False, 1400),
    }
    # A plan that leaves the fields unset gets the IKE defaults (RFC 7383 on, 1280).
    a2 = plan_from_bytes(convert.plan_bytes(plans["a2"]))
    assert {(p.ike_fragmentation, p.ike_fragment_size) for p in a2.peers} == {(True, 1280)}
