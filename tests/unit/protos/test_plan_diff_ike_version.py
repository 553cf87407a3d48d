"""The plan differ on a peer's IKE version and IKEv1 Aggressive Mode (plan.proto Peer
fields 22 and 23): a change of version reads as one, in words an operator knows."""

from __future__ import annotations

from vpnfleet.agent.hollow import sample_plan
from vpnfleet.protos import plan_pb2
from vpnfleet.protos.plan_diff import ChangeKind, Section, plan_changes

PEERS = [("b1", "10.0.0.2", "10.2.0.0/24")]


def msg() -> plan_pb2.NodePlan:
    return sample_plan("a1", "10.0.0.1", "10.1.0.0/24", PEERS)


def test_a_change_of_version_and_mode_is_shown() -> None:
    new = msg()
    new.peers[0].ike_version = plan_pb2.IKE_V1
    new.peers[0].ike_aggressive = True
    (change,) = plan_changes(msg(), new)
    assert (change.section, change.name, change.kind) == (Section.PEER, "b1", ChangeKind.CHANGED)
    assert change.details == ("ike_version v2 -> v1", "ike_aggressive false -> true")
    (back,) = plan_changes(new, msg())
    assert back.details == ("ike_version v1 -> v2", "ike_aggressive true -> false")


def test_an_added_ikev1_peer_says_so_and_an_ikev2_one_does_not() -> None:
    new = msg()
    new.peers[0].ike_version = plan_pb2.IKE_V1
    added = {c.name: c for c in plan_changes(None, new) if c.section is Section.PEER}
    assert added["b1"].details[-1] == "ike_version v1"
    plain = {c.name: c for c in plan_changes(None, msg()) if c.section is Section.PEER}
    assert not any("ike_version" in d for d in plain["b1"].details)


def test_a_plan_written_before_the_fields_reads_as_ikev2() -> None:
    """IKE_V2 is 0: an old plan's bytes parse to IKEv2 peers, and equal a new plan's."""
    old_bytes = msg().SerializeToString(deterministic=True)
    parsed = plan_pb2.NodePlan.FromString(old_bytes)
    assert parsed.peers[0].ike_version == plan_pb2.IKE_V2
    assert not parsed.peers[0].ike_aggressive
    assert plan_changes(parsed, msg()) == []
