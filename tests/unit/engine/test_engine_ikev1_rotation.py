"""IKEv1 peers through a pre-shared key rotation and a shortened ISAKMP SA, two engines
on an in-memory network and fake time: ``rotate psk`` (the responder of a pair gets the
new key first, then its initiator), the staged change of ``apply`` (accept, use,
final: RFC 2409 section 5, SKEYID hangs on the key, so the end that cannot choose the
key tries the accepted ones), and a RESPONDER-LIFETIME (RFC 2407 section 4.6.3.1) that
brings the reauthentication forward."""

from __future__ import annotations

import hashlib

import pytest

from tests.support.engine_pair import Fleet, PlanEdit, Traffic, node_plan
from tests.unit.engine.test_engine_ikev1 import ikev1, one_pair, v1_sa
from vpnfleet.agent.ike.v1.config import IkeV1Config
from vpnfleet.agent.ike.v1.sa import IkeV1Sa
from vpnfleet.agent.sink import RekeyTarget
from vpnfleet.protos import plan_pb2

OLD = hashlib.sha256(b"a/b/1").digest()  # the key sample plans give the pair a, b
NEW = hashlib.sha256(b"a/b/2").digest()


def keyed(psk: bytes, accepted: tuple[bytes, ...] = (), *, aggressive: bool = False) -> PlanEdit:
    def edit(msg: plan_pb2.NodePlan) -> None:
        ikev1(msg)
        for p in msg.peers:
            p.ike_aggressive = aggressive
            p.auth.psk = psk
            p.auth.reference = "psk:new" if psk == NEW else "psk:old"
            del p.auth.accepted_psks[:]
            p.auth.accepted_psks.extend(accepted)
            del p.auth.accepted_psk_references[:]

    return edit


def run_with_traffic(fleet: Fleet, traffic: Traffic, seconds: float) -> None:
    for _ in range(int(seconds / 0.5)):
        traffic.tick()
        fleet.advance(0.5)


@pytest.fixture
async def ab() -> Fleet:
    fleet = Fleet("a", "b")
    await fleet.start()
    await fleet.mesh(a=keyed(OLD), b=keyed(OLD))
    assert fleet["a"].engine.peers_up() == 1
    return fleet


def config_of(fleet: Fleet, host: str, peer: str) -> IkeV1Config:
    config = fleet[host].engine.peers[peer].config
    assert isinstance(config, IkeV1Config)
    return config


async def test_rotate_psk_waves_responder_first_then_initiator(ab: Fleet) -> None:
    """``rotate psk``: the pair's responder (b) gets the new key first: its SAs stay in
    force (it does not initiate); then the initiator (a) re-establishes with the new key
    make-before-break. Not one packet is lost; one ISAKMP SA and one child remain."""
    a, b = ab["a"], ab["b"]
    first = v1_sa(ab, "a", "b")
    traffic = Traffic(ab, a, b)
    await ab.apply("b", node_plan("b", ["a"], 2, keyed(NEW)))
    run_with_traffic(ab, traffic, 5)
    assert v1_sa(ab, "a", "b") is first and config_of(ab, "b", "a").psk == NEW
    await ab.apply("a", node_plan("a", ["b"], 2, keyed(NEW)))
    run_with_traffic(ab, traffic, 10)
    traffic.settle()
    assert v1_sa(ab, "a", "b") is not first and first.is_closed
    assert not a.events("ike_failed") and not b.events("ike_failed")
    assert len(a.engine.peers["b"].sas()) == 1 and len(b.engine.peers["a"].sas()) == 1
    one_pair(ab)


@pytest.mark.parametrize("aggressive", [False, True], ids=["main", "aggressive"])
@pytest.mark.parametrize("first", ["a", "b"])
async def test_staged_psk_change_accept_use_final(first: str, aggressive: bool) -> None:
    """``apply`` stages a key change of both ends: accept (old key, new accepted), use
    (new key, old accepted), final. Either end may be a step ahead of the other: the
    Main mode responder (the Aggressive mode initiator) finds the key the other end
    used among its own and accepted ones, so every re-establishment on the way succeeds
    at the first attempt."""
    ab = Fleet("a", "b")
    await ab.start()
    await ab.mesh(a=keyed(OLD, aggressive=aggressive), b=keyed(OLD, aggressive=aggressive))
    a, b = ab["a"], ab["b"]
    assert a.engine.peers_up() == 1
    other = "b" if first == "a" else "a"
    traffic = Traffic(ab, a, b)
    generation = 2
    steps = ((OLD, (NEW,)), (NEW, (OLD,)), (NEW, ()))
    for edit in (keyed(k, acc, aggressive=aggressive) for k, acc in steps):
        for host in (first, other):
            peer = "b" if host == "a" else "a"
            await ab.apply(host, node_plan(host, [peer], generation, edit))
            run_with_traffic(ab, traffic, 6)
            assert a.engine.peers_up() == 1 and b.engine.peers_up() == 1
        generation += 1
    traffic.settle()
    assert not a.events("ike_failed") and not b.events("ike_failed")
    assert config_of(ab, "a", "b").peer_psks == config_of(ab, "b", "a").peer_psks == (NEW,)
    sa = v1_sa(ab, "a", "b")
    assert sa.config.psk == NEW and sa.keys is not None
    one_pair(ab)


async def test_a_key_the_responder_does_not_accept_keeps_the_old_sa(ab: Fleet) -> None:
    """The initiator moves to a key the responder neither holds nor accepts: the new
    Main mode fails naming the keys, the old SA and its child stay in force."""
    a, b = ab["a"], ab["b"]
    first = v1_sa(ab, "a", "b")
    traffic = Traffic(ab, a, b)
    await ab.apply("b", node_plan("b", ["a"], 2, keyed(OLD, (b"x" * 32,))))
    await ab.apply("a", node_plan("a", ["b"], 2, keyed(NEW)))
    run_with_traffic(ab, traffic, 160)  # the initiator's retransmissions run out
    traffic.settle()
    assert not first.is_closed and first in a.engine.peers["b"].sas()
    refused = [e.detail for e in b.events("ike_failed_unauthenticated")]
    assert refused and "under any of our 2 pre-shared keys" in refused[0], refused
    failures = [e.detail for e in a.events("ike_failed")]
    assert failures and "pre-shared keys" in failures[0] and "previous SA kept" in failures[0]


async def b_keeps_less(lifetime: str) -> Fleet:
    """a and b over IKEv1 with the old PSK; b's plan has ``lifetime`` (a field of the
    peer's lifetimes) at 600 s, less than a proposes."""

    def short(msg: plan_pb2.NodePlan) -> None:
        keyed(OLD)(msg)
        for p in msg.peers:
            setattr(p.lifetimes, lifetime, 600)
            p.lifetimes.rand_seconds = 10

    fleet = Fleet("a", "b")
    await fleet.start()
    await fleet.mesh(a=keyed(OLD), b=short)
    return fleet


async def test_a_shorter_responder_lifetime_brings_the_reauthentication_forward() -> None:
    """b keeps the ISAKMP SA for less than a proposed and says so (RESPONDER-LIFETIME):
    a reauthenticates by the core's ``rekey_due``, before the SA would expire (and be
    deleted with its children), not at its own later schedule. Here b stands for a peer
    that does not reauthenticate itself before then (its own timer is held off)."""

    fleet = await b_keeps_less("ike_rekey_seconds")
    a, b = fleet["a"], fleet["b"]
    driver = a.engine.peers["b"]
    sa = driver.ike
    assert isinstance(sa, IkeV1Sa) and sa.is_initiator
    assert sa.lifetime == config_of(fleet, "b", "a").ike_lifetime < sa.config.ike_lifetime
    due = sa.rekey_due
    assert due is not None and driver.ike_rekey_mono <= due
    timer = b.engine.peers["a"].ike_timer
    assert timer is not None
    timer.cancel()
    traffic = Traffic(fleet, a, b)
    run_with_traffic(fleet, traffic, due - fleet.clock.now() + 5)
    traffic.settle()
    assert a.events("ike_reauthenticate") and not b.events("ike_reauthenticate")
    assert sa.is_closed and v1_sa(fleet, "a", "b") is not sa
    assert not [e for e in a.events() if "expired" in e.detail]
    assert a.engine.peers_up() == 1 and b.engine.peers_up() == 1
    one_pair(fleet)


async def test_a_shorter_quick_mode_lifetime_brings_the_child_rekey_forward() -> None:
    """b keeps its Quick mode SAs for less than a proposed and says so
    (RESPONDER-LIFETIME, RFC 2407 section 4.6.3.1): a replaces the child before that
    lifetime ends, not at its own later schedule, and neither data plane holds the SA
    longer than agreed. b's own child timer is held off, as a peer that leaves the
    replacement to the initiator."""

    fleet = await b_keeps_less("child_rekey_seconds")
    a, b = fleet["a"], fleet["b"]
    driver = a.engine.peers["b"]
    sa, child = driver.ike, driver.child
    assert isinstance(sa, IkeV1Sa) and sa.is_initiator and child is not None
    agreed = sa.child_lifetime(child.spi_in).seconds
    assert agreed == config_of(fleet, "b", "a").child_lifetime < sa.config.child_lifetime
    assert child.next_rekey_at - a.engine.wall() < agreed
    timer = b.engine.peers["a"].child_timer
    assert timer is not None
    timer.cancel()
    before = one_pair(fleet)
    traffic = Traffic(fleet, a, b)
    run_with_traffic(fleet, traffic, agreed + 5)
    traffic.settle()
    assert one_pair(fleet) != before
    assert a.events("child_rekeyed") and not [e for e in a.events() if "expired" in e.detail]
    assert a.engine.peers_up() == 1 and b.engine.peers_up() == 1


async def test_a_phase1_delete_leaves_the_child_to_another_isakmp_sa(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """RFC 2408 section 3.15: a phase 1 Delete deletes no IPsec SA. b holds its child on
    the old ISAKMP SA when a deletes that one (b took nothing over at the new Main mode,
    as an end that moves its SAs only later would): the child moves to the new ISAKMP SA
    and carries on; nothing lost, nothing installed anew."""
    fleet = Fleet("a", "b")
    await fleet.start()
    await fleet.mesh(a=keyed(OLD), b=keyed(OLD))
    a, b = fleet["a"], fleet["b"]
    driver_b = b.engine.peers["a"]
    monkeypatch.setattr(driver_b, "_v1_take_children", lambda sa, initial_contact: None)
    old_b = v1_sa(fleet, "b", "a")
    before = (a.child_spis("b"), b.child_spis("a"))
    traffic = Traffic(fleet, a, b)
    assert fleet.rekey("a", "b", RekeyTarget.IKE, within=1).ok
    run_with_traffic(fleet, traffic, 8)
    traffic.settle()
    assert old_b.is_closed and not old_b.children
    new_b = v1_sa(fleet, "b", "a")
    assert new_b is not old_b and len(new_b.children) == 1
    assert (a.child_spis("b"), b.child_spis("a")) == before
    adopted = [e.detail for e in b.events("children_adopted")]
    assert len(adopted) == 1 and "deleted by the peer" in adopted[0]
    assert not b.events("child_down") and b.engine.peers_up() == 1
    one_pair(fleet)
