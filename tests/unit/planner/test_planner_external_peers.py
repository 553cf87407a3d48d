"""Peers a managed host only answers: with start_action none (the plan says responder)
and external peers with no fixed address (``address: any``), in the plan and across the
plan contract."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from vpnfleet.agent.convert import plan_from_bytes
from vpnfleet.agent.plan import PlanRejected
from vpnfleet.controller.inventory import load_inventory
from vpnfleet.controller.planner import NodePlan, Peer, PlanError, StartAction, build_plans
from vpnfleet.controller.transport import convert
from vpnfleet.protos.hashing import plan_content_hash

SECRET = b"0123456789abcdef0123456789abcdef"
HOSTS = """
all:
  children:
    gateways:
      hosts:
        gw1: {address: 10.99.2.1, subnets: [10.3.1.0/24]}
        gw2: {address: 10.99.2.2, subnets: [10.3.2.0/24]}
"""
ROAMING = """
external_peers:
  - name: roaming
    address: any
    identity: roaming.partner.example
    psk: a-long-enough-shared-key
    subnets: [10.30.0.0/16]
    connect: gw1
"""


def make(tmp_path: Path, topology: str, **files: str) -> Path:
    root = tmp_path / "inv"
    root.mkdir(exist_ok=True)
    (root / "hosts.yaml").write_text(textwrap.dedent(HOSTS).lstrip("\n"))
    (root / "topology.yaml").write_text(textwrap.dedent(topology).lstrip("\n"))
    for name, text in files.items():
        path = root / name.replace("__yaml", ".yaml").replace("__", "/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip("\n"))
    return root


def plans_of(root: Path) -> dict[str, NodePlan]:
    return build_plans(load_inventory(root), master_secret=SECRET)


def plan_errors(root: Path) -> list[str]:
    with pytest.raises(PlanError) as caught:
        plans_of(root)
    return [str(e) for e in caught.value.errors]


def peer(plans: dict[str, NodePlan], host: str, name: str) -> Peer:
    (found,) = (p for p in plans[host].peers if p.name == name)
    return found


def test_a_peer_with_address_any_is_answered_and_known_by_identity(tmp_path: Path) -> None:
    plans = plans_of(make(tmp_path, ROAMING))
    roaming = peer(plans, "gw1", "roaming")
    assert roaming.remote_addresses == () and roaming.dynamic_address
    # Nothing to send to: gw1 only answers, whatever its start_action.
    assert roaming.initiator is False and roaming.start_action is StartAction.NONE
    assert (roaming.remote_id.type, roaming.remote_id.value) == ("FQDN", "roaming.partner.example")
    assert [p.name for p in plans["gw2"].peers] == []
    # The agent takes the plan.
    msg = convert.plan_to_proto(plans["gw1"])
    msg.content_hash = plan_content_hash(msg)
    taken = plan_from_bytes(msg.SerializeToString()).peer("roaming")
    assert taken is not None and taken.dynamic_address and taken.remote_addresses == ()


def test_a_host_that_only_responds_is_not_called_initiator(tmp_path: Path) -> None:
    topology = ROAMING.replace("address: any", "address: 192.0.2.10").replace(
        "connect: gw1", "connect: gateways"
    )
    plans = plans_of(make(tmp_path, topology, host_vars__gw1__yaml="start_action: none\n"))
    answering, starting = peer(plans, "gw1", "roaming"), peer(plans, "gw2", "roaming")
    assert (answering.initiator, answering.start_action) == (False, StartAction.NONE)
    assert (starting.initiator, starting.start_action) == (True, StartAction.START)
    assert answering.remote_addresses == ("192.0.2.10",) and not answering.dynamic_address


def test_in_a_managed_pair_the_end_that_only_responds_does_not_initiate(tmp_path: Path) -> None:
    # By name gw1 would initiate; with start_action none it never would, and gw2 (which
    # keeps the tunnel up) would wait for it.
    topology = "links:\n  - {a: gw1, b: gw2}\n"
    plans = plans_of(make(tmp_path, topology, host_vars__gw1__yaml="start_action: none\n"))
    assert peer(plans, "gw1", "gw2").initiator is False
    assert peer(plans, "gw2", "gw1").initiator is True


def test_address_any_needs_an_identity(tmp_path: Path) -> None:
    root = make(tmp_path, ROAMING.replace("    identity: roaming.partner.example\n", ""))
    [error] = plan_errors(root)
    assert error == (
        f"{root}/topology.yaml:3:14: external_peers[0]: address any needs 'identity': the "
        "peer is known by its IKE identity alone (e.g. identity: gw.partner.example)"
    )


def test_a_host_answers_one_peer_with_address_any(tmp_path: Path) -> None:
    second = ROAMING.split("\n", 2)[2].replace("roaming", "nomad")
    [error] = plan_errors(make(tmp_path, ROAMING + second))
    assert error.startswith(
        f"{tmp_path}/inv/topology.yaml:8:5: external_peers[1]: gw1 would have two external "
        f"peers with address any, roaming (at {tmp_path}/inv/topology.yaml:2:5) and nomad;"
    )


def test_transport_mode_needs_the_external_peers_address(tmp_path: Path) -> None:
    [error] = plan_errors(make(tmp_path, ROAMING, host_vars__gw1__yaml="mode: transport\n"))
    assert error.startswith(f"{tmp_path}/inv/host_vars/gw1.yaml:1:1: host gw1 uses transport")
    assert "external peer roaming" in error and "has address any" in error


def test_the_agent_refuses_a_dynamic_peer_it_would_have_to_initiate_to(tmp_path: Path) -> None:
    msg = convert.plan_to_proto(plans_of(make(tmp_path, ROAMING))["gw1"])
    msg.peers[0].initiator = True
    msg.content_hash = plan_content_hash(msg)
    with pytest.raises(PlanRejected, match="can only respond: needs initiator false"):
        plan_from_bytes(msg.SerializeToString())
    msg.peers[0].initiator = False
    second = msg.peers.add()
    second.CopyFrom(msg.peers[0])
    second.name = "nomad"
    msg.content_hash = plan_content_hash(msg)
    with pytest.raises(PlanRejected, match="more than one peer with a dynamic address"):
        plan_from_bytes(msg.SerializeToString())
