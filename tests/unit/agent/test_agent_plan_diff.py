"""plan_diff: what changes between the plan in force and a new one, never with secrets."""

from __future__ import annotations

from vpnfleet.agent.convert import plan_from_proto
from vpnfleet.agent.hollow import sample_plan
from vpnfleet.agent.plan import AgentPlan, ChangeKind, PlanChange, plan_diff
from vpnfleet.protos import plan_pb2
from vpnfleet.protos.hashing import plan_content_hash

PEERS = [("b1", "10.0.0.2", "10.2.0.0/24"), ("c1", "10.0.0.3", "10.3.0.0/24")]


def msg(**kw: object) -> plan_pb2.NodePlan:
    return sample_plan("a1", "10.0.0.1", "10.1.0.0/24", kw.pop("peers", PEERS), **kw)  # type: ignore[arg-type]


def plan(m: plan_pb2.NodePlan) -> AgentPlan:
    m.content_hash = plan_content_hash(m)
    return plan_from_proto(m)


def by_key(changes: list[PlanChange]) -> dict[tuple[str, str], PlanChange]:
    return {(c.section, c.name): c for c in changes}


def test_same_plan_has_no_changes() -> None:
    assert plan_diff(plan(msg()), plan(msg())) == []


def test_first_plan_is_all_added() -> None:
    changes = by_key(plan_diff(None, plan(msg())))
    assert changes[("peer", "b1")].kind is ChangeKind.ADDED
    assert changes[("spd", "protect-c1")].kind is ChangeKind.ADDED
    assert changes[("identity", "a1")].kind is ChangeKind.ADDED


def test_peer_added_and_removed() -> None:
    old = plan(msg())
    new = plan(msg(peers=[PEERS[0], ("d1", "10.0.0.4", "10.4.0.0/24")]))
    changes = by_key(plan_diff(old, new))
    assert changes[("peer", "c1")].kind is ChangeKind.REMOVED
    assert changes[("peer", "d1")].kind is ChangeKind.ADDED
    assert changes[("spd", "protect-c1")].kind is ChangeKind.REMOVED
    assert ("peer", "b1") not in changes


def test_psk_rotation_shows_reference_not_secret() -> None:
    old_msg, new_msg = msg(), msg(psk_epoch=2)
    old, new = plan(old_msg), plan(new_msg)
    changes = by_key(plan_diff(old, new))
    change = changes[("peer", "b1")]
    assert change.kind is ChangeKind.CHANGED
    assert change.details == ("auth: psk:a1/b1/epoch-1 -> psk:a1/b1/epoch-2",)
    text = repr(plan_diff(old, new))
    for secret in (old_msg.peers[0].auth.psk, new_msg.peers[0].auth.psk):
        assert secret.hex() not in text
        assert repr(secret) not in text


def test_secret_changed_under_same_reference() -> None:
    m = msg()
    m.peers[0].auth.psk = b"another secret value"
    changes = by_key(plan_diff(plan(msg()), plan(m)))
    assert changes[("peer", "b1")].details == ("auth: secret changed (psk:a1/b1/epoch-1)",)
    assert "another secret" not in repr(changes)


def test_field_changes_are_listed() -> None:
    m = msg()
    m.peers[1].mode = plan_pb2.MODE_TRANSPORT
    m.peers[1].dpd.delay_seconds = 10
    m.spd[0].selector.protocol = 6
    m.subnets.append("10.9.0.0/24")
    changes = by_key(plan_diff(plan(msg()), plan(m)))
    assert "mode: tunnel -> transport" in changes[("peer", "c1")].details
    assert any(d.startswith("dpd: delay_seconds=30") for d in changes[("peer", "c1")].details)
    assert changes[("spd", "protect-b1")].details[0].startswith("selector: ")
    assert changes[("subnets", "a1")].details == ("+ 10.9.0.0/24",)


def test_spd_reorder_is_a_change() -> None:
    m = msg()
    first, second = plan_pb2.SpdEntry(), plan_pb2.SpdEntry()
    first.CopyFrom(m.spd[0])
    second.CopyFrom(m.spd[1])
    m.spd[0].CopyFrom(second)
    m.spd[1].CopyFrom(first)
    changes = by_key(plan_diff(plan(msg()), plan(m)))
    assert changes[("spd", "order")].kind is ChangeKind.CHANGED
