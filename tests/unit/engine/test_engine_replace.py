"""A changed peer re-established under traffic, on the in-memory engine pair: the new IKE
SA's child replaces the old one make-before-break, as a child rekey does (RFC 7296
section 2.8): the new SA's initiator switches outbound at once, its responder once the
old SA's delete shows the initiator holds the new one, and the old inbound SAs stay
open through their grace period. Traffic flows both ways in every round of the
network, so a packet is always in flight on whichever SA the sender uses; none may be
lost, and both ends must end on the new SA."""

from __future__ import annotations

import hashlib

import pytest

from tests.support.engine_pair import Fleet, PlanEdit, Traffic, carries_ike, node_plan, udp4
from vpnfleet.agent.ike.states import IkeSaState
from vpnfleet.agent.io.memory import Datagram
from vpnfleet.agent.plan import AgentPlan
from vpnfleet.protos import plan_pb2


def epoch_2(msg: plan_pb2.NodePlan) -> None:
    """The next PSK epoch of every pair (what a PSK rotation pushes)."""
    for peer in msg.peers:
        pair = "/".join(sorted((msg.host, peer.name)))
        peer.auth.psk = hashlib.sha256(f"{pair}/2".encode()).digest()
        peer.auth.reference = f"psk:{pair}/epoch-2"
        peer.auth.epoch = 2


def second_esp_proposal(msg: plan_pb2.NodePlan) -> None:
    """A negotiated change both plans accept either way round: a further ESP proposal
    after the one both already share."""
    for peer in msg.peers:
        extra = peer.esp_proposals.add()
        extra.CopyFrom(peer.esp_proposals[0])
        extra.text = "aes128gcm16"
        extra.transforms[0].key_length = 128


def shorter_lifetimes_and_dpd(msg: plan_pb2.NodePlan) -> None:
    """What each end decides alone: lifetimes (not negotiated, RFC 7296 section 2.8),
    the liveness check and NAT keepalives."""
    for peer in msg.peers:
        peer.lifetimes.child_rekey_seconds = 1800
        peer.dpd.delay_seconds = 10
        peer.nat.keepalive_seconds = 15


async def apply_in_steps(fleet: Fleet, host: str, plan: AgentPlan, traffic: Traffic) -> None:
    traffic.tick()
    await fleet.apply(host, plan)
    traffic.tick()


@pytest.fixture
async def ab() -> Fleet:
    fleet = Fleet("a", "b")
    await fleet.start()
    await fleet.mesh()
    return fleet


@pytest.mark.parametrize(
    ("first", "change"),
    [
        pytest.param("b", epoch_2, id="responder-first-psk"),
        pytest.param("b", second_esp_proposal, id="responder-first-proposals"),
        # The responder has not heard of the change: it cannot tell the new IKE SA from
        # a restarted peer's and switches at once (keeping the old inbound SA open).
        pytest.param("a", second_esp_proposal, id="initiator-first-proposals"),
    ],
)
async def test_changed_peer_is_replaced_without_losing_a_packet(
    ab: Fleet, first: str, change: PlanEdit
) -> None:
    """a initiates (the plan's initiator is the smaller name). A PSK rotation changes
    the responders first (a new key at the initiator first fails authentication)."""
    a, b = ab["a"], ab["b"]
    old_a, old_b = a.child_spis("b"), b.child_spis("a")
    old_ike = a.engine.peers["b"].ike
    traffic = Traffic(ab, a, b)
    second = "a" if first == "b" else "b"
    await apply_in_steps(ab, first, node_plan(first, [second], 2, edit=change), traffic)
    ab.advance(1)
    await apply_in_steps(ab, second, node_plan(second, [first], 2, edit=change), traffic)
    ab.advance(5)
    traffic.settle()
    assert len(traffic.sent_ab) >= 10  # traffic crossed every step of the exchanges

    new_a, new_b = a.child_spis("b"), b.child_spis("a")
    assert new_a != old_a and new_b != old_b
    assert new_a == (new_b[1], new_b[0]), (new_a, new_b)
    assert a.engine.peers["b"].ike is not old_ike
    assert a.engine.peers_up() == b.engine.peers_up() == 1
    assert a.events("child_down") == b.events("child_down") == []
    ab.advance(10)  # the old inbound SAs' grace period ends
    for node in (a, b):
        (report,) = node.engine.ike_sas()
        (child,) = report.children
        assert child.state == "installed", (node.host, child)
        assert child.replay_drops == child.integrity_failures == 0
        assert node.engine.dp is not None
        node.engine.dp.handle_timer()  # no loop here to run the SAD's housekeeping
        assert {sa.spi for sa in node.engine.dp.sad.inbound_sas()} == {child.spi_in}
        assert node.engine.dp.stats().inbound_drops.get("unknown_spi", 0) == 0, node.host
        driver = node.engine.peers[{"a": "b", "b": "a"}[node.host]]
        assert driver.awaiting_activation is None
        assert driver.sas() == [driver.ike], node.host  # the old SA went
    (ike_a,) = a.engine.ike_sas()
    (ike_b,) = b.engine.ike_sas()
    assert (ike_a.spi_i, ike_a.spi_r) == (ike_b.spi_i, ike_b.spi_r)
    traffic = Traffic(ab, a, b)
    for _ in range(3):
        traffic.tick()
    traffic.settle()


async def test_responder_switches_when_the_old_sa_is_not_deleted(ab: Fleet) -> None:
    """The responder's plan changed first, but the old IKE SA's delete never comes (the
    initiator lost it): after a short wait the responder switches and deletes it."""
    a, b = ab["a"], ab["b"]
    await ab.apply("b", node_plan("b", ["a"], 2, edit=epoch_2))
    driver_a = a.engine.peers["b"]
    old = driver_a.ike
    assert old is not None
    # Drop a's delete of the old IKE SA (and its retransmissions).
    old_spi = old.spi_i
    ab.net.drop = lambda d: d.src[0] == a.address and old_spi in d.data[:20]
    await ab.apply("a", node_plan("a", ["b"], 2, edit=epoch_2))
    driver_b = b.engine.peers["a"]
    assert driver_b.awaiting_activation is not None
    packet = udp4("10.2.0.7", "10.1.0.5", b"still on the old SA")
    b.send(packet)
    ab.pump()
    assert a.tun.delivered == [packet]  # a's old inbound SA is in its grace period
    ab.advance(3)
    assert driver_b.awaiting_activation is None
    # b deletes the old IKE SA itself (a's answer is lost too: it waits that out).
    assert [sa.state for sa in driver_b.replacing] == [IkeSaState.DELETING]
    a.tun.delivered.clear()
    packet = udp4("10.2.0.7", "10.1.0.5", b"on the new SA")
    b.send(packet)
    ab.pump()
    assert a.tun.delivered == [packet]
    assert b.child_spis("a") == tuple(reversed(a.child_spis("b")))


async def test_local_only_change_is_put_in_force_without_new_sas(ab: Fleet) -> None:
    """Lifetimes, liveness checks and keepalives change no SA: the SPIs stay, the new
    liveness delay drives the IKE SA's timer at once."""
    a, b = ab["a"], ab["b"]
    old_a, old_ike = a.child_spis("b"), a.engine.peers["b"].ike
    await ab.apply("a", node_plan("a", ["b"], 2, edit=shorter_lifetimes_and_dpd))
    ab.advance(5)
    driver = a.engine.peers["b"]
    assert driver.ike is old_ike and a.child_spis("b") == old_a
    assert driver.peer.dpd.delay_seconds == 10
    assert driver.peer.lifetimes.child_rekey_seconds == 1800
    assert old_ike is not None and old_ike.config.dpd_delay == 10.0
    assert [e.detail for e in a.events("peer_changed")] == ["updated in place (no new SA needed)"]
    # The liveness check is due within the new delay (it was 30 s).
    deadline = old_ike.get_timer()
    assert deadline is not None and deadline <= ab.clock.now() + 10
    ab.advance(60)
    assert a.child_spis("b") == old_a and b.events("child_down") == []


async def test_peer_set_up_in_progress_survives_our_plan_change(ab: Fleet) -> None:
    """Both ends change in one batch and the initiator's plan lands first: its new
    IKE_SA_INIT reaches the responder under the old plan, whose change then arrives
    between IKE_SA_INIT and IKE_AUTH. The half-open SA must go on (under the new
    configuration) instead of being dropped, which would leave the initiator's IKE_AUTH
    unanswered until its retransmissions give up."""
    a, b = ab["a"], ab["b"]
    old_ike = a.engine.peers["b"].ike
    # Hold a's IKE_AUTH (the first encrypted request of the new SA) back for one round.
    held: list[Datagram] = []

    def hold_auth(batch: list[Datagram]) -> list[Datagram]:
        keep = []
        for d in batch:
            ike = d.data[4:] if d.data[:4] == bytes(4) else d.data  # RFC 3948 section 2.2
            if d.src[0] == a.address and len(ike) > 28 and ike[18] == 35 and not held:
                held.append(d)  # exchange type 35: IKE_AUTH (RFC 7296 section 3.1)
            else:
                keep.append(d)
        return keep

    ab.net.reorder = hold_auth
    await ab.apply("a", node_plan("a", ["b"], 2, edit=epoch_2))
    assert held, "a's IKE_AUTH was not seen"
    ab.net.reorder = None
    await ab.apply("b", node_plan("b", ["a"], 2, edit=epoch_2))
    ab.net.send(held[0])
    ab.advance(3)
    new_ike = a.engine.peers["b"].ike
    assert new_ike is not None and new_ike is not old_ike
    assert new_ike.state is IkeSaState.ESTABLISHED
    assert a.events("ike_failed") == b.events("ike_failed") == []
    assert a.child_spis("b") == tuple(reversed(b.child_spis("a")))


async def test_initiator_changed_first_keeps_trying_until_the_peer_follows(ab: Fleet) -> None:
    """A new PSK at the initiator before the responder has it: the new IKE SA is refused
    (AUTHENTICATION_FAILED), the old SA stays in force, and the initiator tries again with
    back-off until the responder's plan catches up."""
    a, b = ab["a"], ab["b"]
    old_ike, old_spis = a.engine.peers["b"].ike, a.child_spis("b")
    await ab.apply("a", node_plan("a", ["b"], 2, edit=epoch_2))
    ab.advance(0.5)
    kept = [e.detail for e in a.events("ike_failed")]
    assert kept and kept[0].endswith("(previous SA kept)"), kept
    assert a.engine.peers["b"].ike is old_ike and a.child_spis("b") == old_spis
    ab.advance(4)  # back-off 1 s, then 2 s: still refused, still on the old SA
    assert len(a.events("ike_failed")) >= 2
    assert a.engine.peers["b"].ike is old_ike and a.engine.peers_up() == 1
    await ab.apply("b", node_plan("b", ["a"], 2, edit=epoch_2))
    ab.advance(10)
    new_ike = a.engine.peers["b"].ike
    assert new_ike is not old_ike and new_ike is not None
    assert new_ike.state is IkeSaState.ESTABLISHED
    assert a.child_spis("b") != old_spis
    assert a.child_spis("b") == tuple(reversed(b.child_spis("a")))
    assert a.engine.peers["b"].replacement_pending is False
    assert a.events("child_down") == []


async def test_unchanged_responder_waits_for_the_new_sa_to_be_used(ab: Fleet) -> None:
    """Only the initiator's plan changed (or only its certificate): the responder did not
    expect the new IKE SA. Its ESP must not reach the initiator on the new SA before the
    initiator has read the IKE_AUTH response, here delivered after the ESP sent with it
    (IKE and ESP use different sockets, so nothing keeps them in order). The responder
    keeps sending on the old SA until a packet arrives on the new one."""
    a, b = ab["a"], ab["b"]
    traffic = Traffic(ab, a, b)

    held: set[int] = set()

    def b_ike_one_round_late(batch: list[Datagram]) -> list[Datagram]:
        if carries_ike(batch):
            traffic.tick()  # b's packets sent now go out before its IKE held back here
        late = [
            d for d in batch if d.src[0] == b.address and carries_ike([d]) and id(d) not in held
        ]
        for d in late:
            held.add(id(d))
            ab.net.send(d)
        return [d for d in batch if d not in late]

    ab.net.reorder = b_ike_one_round_late
    await apply_in_steps(ab, "a", node_plan("a", ["b"], 2, edit=second_esp_proposal), traffic)
    ab.advance(5)
    traffic.settle()
    assert len(traffic.sent_ba) >= 5
    assert a.engine.dp is not None and a.engine.dp.stats().inbound_drops.get("unknown_spi", 0) == 0
    assert a.child_spis("b") == tuple(reversed(b.child_spis("a")))
    assert b.engine.dp is not None
    assert b.engine.dp.counters.outbound_activated_by_peer + len(b.events("child_up")) >= 2


async def test_restarted_initiator_is_answered_on_the_new_sa_at_once(ab: Fleet) -> None:
    """A restarted agent initiates with INITIAL_CONTACT (RFC 7296 section 2.4): its peer
    knows it holds nothing of the old SAs and sends on the new child at once."""
    a, b = ab["a"], ab["b"]
    await a.restart()
    await ab.apply("a", node_plan("a", ["b"]))
    ab.pump()
    assert a.engine.peers_up() == 1
    assert b.engine.peers["a"].awaiting_activation is None
    packet = udp4("10.2.0.7", "10.1.0.5", b"right after the restart")
    a.tun.delivered.clear()
    b.send(packet)
    ab.pump()
    assert a.tun.delivered == [packet]


async def test_changed_responder_keeps_the_history_and_rekeys_of_its_sas(ab: Fleet) -> None:
    """The responder's plan changes and its peer's does not (yet): the SAs it keeps are
    reported with their times, and their rekeys stay due when they were."""
    a, b = ab["a"], ab["b"]
    (before,) = b.engine.ike_sas()
    assert before.established_at > 0 and before.next_rekey_at > 0
    await ab.apply("b", node_plan("b", ["a"], 2, edit=second_esp_proposal))
    (after,) = b.engine.ike_sas()
    assert (after.spi_i, after.spi_r) == (before.spi_i, before.spi_r)
    assert after.established_at == before.established_at
    assert after.next_rekey_at == before.next_rekey_at
    assert after.children[0].next_rekey_at == before.children[0].next_rekey_at
    driver = b.engine.peers["a"]
    assert driver.ike_timer is not None and driver.child_timer is not None
    old_spis = b.child_spis("a")
    # The child rekey still comes (sample plan: 3600 s less up to 60 s of jitter).
    ab.advance(3600)
    assert b.child_spis("a") != old_spis
    assert a.child_spis("b") == tuple(reversed(b.child_spis("a")))
