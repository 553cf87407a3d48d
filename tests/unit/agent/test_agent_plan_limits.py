"""The planner and the agent agree on every limit of a plan's peer values.

Both read ``protos/limits.py``: a value the inventory accepts ends in a plan the agent
takes, and a value the agent refuses is refused at plan time with file:line:col.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from vpnfleet.agent.convert import plan_from_bytes
from vpnfleet.agent.plan import PlanRejected
from vpnfleet.controller.inventory import InventoryErrors, load_inventory
from vpnfleet.controller.planner import build_plans
from vpnfleet.controller.transport import convert
from vpnfleet.protos import limits, plan_pb2
from vpnfleet.protos.hashing import plan_content_hash

SECRET = b"0123456789abcdef0123456789abcdef"
HOSTS = """\
all:
  children:
    mesh:
      hosts:
        a1: {address: 10.99.0.1, subnets: [10.1.1.0/24]}
        a2: {address: 10.99.0.2, subnets: [10.1.2.0/24]}
"""
# The smallest values every other variable allows (rekey_jitter and dpd_delay at 0), so
# that only the variable under test is near its limit.
BASE = {
    "ike_lifetime": 3600,
    "child_lifetime": 3600,
    "rekey_jitter": 0,
    "dpd_delay": 0,
    "dpd_timeout": 0,
    "nat_keepalive": 0,
    "ike_fragment_size": 1280,
}

Setter = Callable[[plan_pb2.Peer, int], None]


def _lifetime(field: str) -> Setter:
    return lambda peer, value: setattr(peer.lifetimes, field, value)


# inventory variable, its limit, where the plan carries it
LIMITS: list[tuple[str, limits.Limit, Setter]] = [
    ("ike_lifetime", limits.REKEY_SECONDS, _lifetime("ike_rekey_seconds")),
    ("child_lifetime", limits.REKEY_SECONDS, _lifetime("child_rekey_seconds")),
    (
        "ike_fragment_size",
        limits.IKE_FRAGMENT_SIZE,
        lambda p, v: setattr(p, "ike_fragment_size", v),
    ),
]


def write(root: Path, variables: dict[str, int]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "hosts.yaml").write_text(HOSTS)
    (root / "topology.yaml").write_text("meshes:\n  - {name: lab, group: mesh}\n")
    (root / "group_vars").mkdir(exist_ok=True)
    text = "".join(f"{k}: {v}\n" for k, v in {**BASE, **variables}.items())
    (root / "group_vars" / "all.yaml").write_text(text)
    return root


def planned(root: Path) -> plan_pb2.NodePlan:
    plans = build_plans(load_inventory(root), master_secret=SECRET)
    return convert.plan_to_proto(plans["a1"])


def agent_takes(msg: plan_pb2.NodePlan) -> None:
    msg.content_hash = plan_content_hash(msg)
    plan_from_bytes(msg.SerializeToString())


@pytest.mark.parametrize(("variable", "limit", "put"), LIMITS, ids=[v for v, _, _ in LIMITS])
def test_lowest_value_passes_both_sides_and_one_less_neither(
    tmp_path: Path, variable: str, limit: limits.Limit, put: Setter
) -> None:
    # The lowest value: planned, and the agent takes the plan.
    msg = planned(write(tmp_path / "ok", {variable: limit.low}))
    agent_takes(msg)
    # One less: the planner refuses it where it is written...
    with pytest.raises(InventoryErrors) as caught:
        load_inventory(write(tmp_path / "low", {variable: limit.low - 1}))
    [error] = caught.value.errors
    assert error.mark is not None
    assert (Path(error.mark.path).name, error.mark.line) == (
        "all.yaml",
        list(BASE).index(variable) + 1,
    )
    assert error.message.startswith(f"group 'all': {variable}: ")
    assert str(limit.low) in error.message.split(": ", 2)[2]
    # ...and so does the agent, in a plan made some other way.
    put(msg.peers[0], limit.low - 1)
    with pytest.raises(PlanRejected, match=r"below the minimum|not within"):
        agent_takes(msg)


def test_child_lifetime_of_five_seconds_is_refused_at_plan_time(tmp_path: Path) -> None:
    with pytest.raises(InventoryErrors) as caught:
        load_inventory(write(tmp_path / "inv", {"child_lifetime": "5s"}))  # type: ignore[dict-item]
    [error] = caught.value.errors
    assert str(error).endswith(
        "all.yaml:2:17: group 'all': child_lifetime: 5s is below the minimum of 10s "
        "(a shorter lifetime keeps the SA rekeying)"
    )


def test_durations_beyond_what_a_plan_carries_are_refused(tmp_path: Path) -> None:
    # The plan's uint32 fields: a bigger value could not even be written into a plan.
    too_big = limits.UINT32_MAX + 1
    with pytest.raises(InventoryErrors) as caught:
        load_inventory(write(tmp_path / "inv", {"ike_lifetime": too_big}))
    [error] = caught.value.errors
    assert f"ike_lifetime: {too_big}s is above the maximum of {limits.UINT32_MAX}s" in str(error)


def test_jitter_and_dpd_rules_are_the_same_on_both_sides(tmp_path: Path) -> None:
    # At the edge: jitter one below the rekey time, DPD timeout equal to the delay.
    edge = {"child_lifetime": 20, "rekey_jitter": 19, "dpd_delay": 15, "dpd_timeout": 15}
    msg = planned(write(tmp_path / "ok", edge))
    agent_takes(msg)
    for plan_field, value, words in (
        (("lifetimes", "rand_seconds"), 20, "the rekey jitter 20s is not below the rekey time 20s"),
        (("dpd", "timeout_seconds"), 14, "the DPD timeout 14s is shorter than the DPD delay 15s"),
    ):
        bad = plan_pb2.NodePlan()
        bad.CopyFrom(msg)
        setattr(getattr(bad.peers[0], plan_field[0]), plan_field[1], value)
        with pytest.raises(PlanRejected) as caught:
            agent_takes(bad)
        assert any(words in r for r in caught.value.reasons), caught.value.reasons
