"""The same change reads the same in `vpnfleet diff` and in an agent's ApplyPlan answer
(what `apply --diff`, `apply --check` and `plan` print): both go through the one differ."""

from __future__ import annotations

import textwrap
from pathlib import Path

from vpnfleet.agent.service import AgentService
from vpnfleet.agent.sink import PlanOnlySink
from vpnfleet.agent.store import PlanStore
from vpnfleet.controller.gitops.diff import diff_plans
from vpnfleet.controller.inventory import load_inventory
from vpnfleet.controller.planner import NodePlan, build_plans
from vpnfleet.controller.transport import convert

SECRET = b"0123456789abcdef0123456789abcdef"
HOSTS = """\
all:
  children:
    mesh:
      hosts:
        a1: {address: 10.99.0.1, subnets: [10.1.1.0/24]}
        a2: {address: 10.99.0.2, subnets: [10.1.2.0/24]}
        a3: {address: 10.99.0.3, subnets: [10.1.3.0/24]}
"""
ALL = "ike_proposals: [aes256gcm16-prfsha384-x25519]\nesp_proposals: [aes256gcm16]\n"
TOPOLOGY = "meshes:\n  - {name: lab, group: mesh}\n"
POLICY = "policies:\n  - {name: ssh, action: bypass, remote_ports: 22, protocol: tcp, hosts: a1}\n"


def plans(root: Path, all_vars: str = ALL, topology: str = TOPOLOGY) -> dict[str, NodePlan]:
    root.mkdir(parents=True)
    (root / "hosts.yaml").write_text(HOSTS)
    (root / "group_vars").mkdir()
    (root / "group_vars" / "all.yaml").write_text(all_vars)
    (root / "topology.yaml").write_text(textwrap.dedent(topology))
    return build_plans(load_inventory(root), master_secret=SECRET, revision=root.name)


async def agent_lines(
    tmp_path: Path, in_force: NodePlan | None, new: NodePlan, dry_run: bool
) -> list[str]:
    """The lines the controller prints for a1's ApplyPlan answer."""
    service = AgentService("a1", PlanStore(tmp_path), PlanOnlySink(), clock=lambda: 1234.0)
    if in_force is not None:
        await service.apply(convert.plan_to_proto(in_force), dry_run=False)
    answer = await service.apply(convert.plan_to_proto(new), dry_run=dry_run)
    return [str(c) for c in convert.changes_from_proto(answer)]


def diff_lines(old: dict[str, NodePlan], new: dict[str, NodePlan]) -> list[str]:
    (host,) = [h for h in diff_plans(old, new).hosts if h.host == "a1"]
    return [str(c) for c in host.changes]


async def test_a_change_reads_the_same_in_diff_dry_run_and_apply(tmp_path: Path) -> None:
    old = plans(tmp_path / "r1")
    new = plans(
        tmp_path / "r2",
        all_vars="ike_proposals: [aes128-sha256-modp2048]\nesp_proposals: [aes128gcm16]\n"
        "psk_epoch: 2\nmode: transport\ndpd_delay: 10\n",
        topology=TOPOLOGY + POLICY,
    )
    shown = diff_lines(old, new)
    assert "~ peer a2: auth psk:a1+a2/epoch-1 -> epoch-2; " in "; ".join(shown) + "; "
    assert any(line.startswith("+ spd policy:ssh: bypass ") for line in shown), shown
    dry = await agent_lines(tmp_path / "dry", old["a1"], new["a1"], dry_run=True)
    applied = await agent_lines(tmp_path / "apply", old["a1"], new["a1"], dry_run=False)
    assert dry == shown
    assert applied == shown


async def test_a_first_plan_reads_the_same_as_a_new_host(tmp_path: Path) -> None:
    new = plans(tmp_path / "r1")
    shown = diff_lines({}, new)
    assert shown[0] == "+ identity a1: fqdn:a1"
    assert "+ peer a2: address 10.99.0.2; auth psk:a1+a2/epoch-1; " in "; ".join(shown)
    assert await agent_lines(tmp_path / "dry", None, new["a1"], dry_run=True) == shown
