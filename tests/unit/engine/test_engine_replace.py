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
from engine_pair import Fleet, Node, PlanEdit, node_plan, udp4

from vpnfleet.agent.ike.states import IkeSaState
from vpnfleet.agent.io.memory import Datagram
from vpnfleet.agent.io.udp import NATT_PORT
from vpnfleet.agent.plan import AgentPlan
from vpnfleet.protos import plan_pb2


def epoch_2(msg: plan_pb2.NodePlan) -> None:
    """The next PSK epoch of every pair (what a PSK rotation pushes)."""
    for peer in msg.peers:
        pair = "/".join(sorted((msg.host, peer.name)))
        peer.auth.psk = hashlib.sha256(f"{pair}/2".encode()).digest()
        peer.auth.reference = f"psk:{pair}/epoch-2"
        peer.auth.epoch = 2


def shorter_child_lifetime(msg: plan_pb2.NodePlan) -> None:
    """A change both plans accept either way round (the negotiation does not carry it)."""
    for peer in msg.peers:
        peer.lifetimes.child_rekey_seconds = 1800


def carries_ike(batch: list[Datagram]) -> bool:
    # On port 4500 IKE follows four zero octets, ESP its SPI (RFC 3948 section 2.2).
    return any(d.dst[1] != NATT_PORT or d.data[:4] == b"\0\0\0\0" for d in batch)


class Traffic:
    """One packet each way per network round that carries IKE (and per :meth:`tick`)."""

    def __init__(self, fleet: Fleet, a: Node, b: Node) -> None:
        self.fleet, self.a, self.b = fleet, a, b
        self.sent_ab: list[bytes] = []
        self.sent_ba: list[bytes] = []
        a.tun.delivered.clear()
        b.tun.delivered.clear()
        fleet.net.reorder = self._round

    def _round(self, batch: list[Datagram]) -> list[Datagram]:
        # Sent now, these arrive in the next round, after this round's IKE messages.
        if carries_ike(batch):
            self.tick()
        return batch

    def tick(self) -> None:
        n = len(self.sent_ab)
        one = udp4("10.1.0.5", "10.2.0.7", f"a to b {n}".encode())
        other = udp4("10.2.0.7", "10.1.0.5", f"b to a {n}".encode())
        self.sent_ab.append(one)
        self.sent_ba.append(other)
        self.a.send(one)
        self.b.send(other)

    def settle(self) -> None:
        self.fleet.net.reorder = None
        self.fleet.pump()
        assert self.b.tun.delivered == self.sent_ab
        assert self.a.tun.delivered == self.sent_ba


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
        pytest.param("b", shorter_child_lifetime, id="responder-first-lifetime"),
        # The responder has not heard of the change: it cannot tell the new IKE SA from
        # a restarted peer's and switches at once (keeping the old inbound SA open).
        pytest.param("a", shorter_child_lifetime, id="initiator-first-lifetime"),
    ],
)
async def test_changed_peer_is_replaced_without_losing_a_packet(
    ab: Fleet, first: str, change: PlanEdit
) -> None:
    """a initiates (the plan's initiator is the smaller name). A PSK rotation changes
    the responders first (a new key at the initiator first fails authentication)."""
    a, b = ab["a"], ab["b"]
    old_a, old_b = a.child_spis("b"), b.child_spis("a")
    old_ike = a.engine.sessions["b"].ike
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
    assert a.engine.sessions["b"].ike is not old_ike
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
        assert node.engine.dp.stats().unknown_spi == 0, node.host
        session = node.engine.sessions[{"a": "b", "b": "a"}[node.host]]
        assert session.awaiting_activation is None
        assert node.engine._sas_of(session) == [session.ike], node.host  # the old SA went
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
    session_a = a.engine.sessions["b"]
    old = session_a.ike
    assert old is not None
    # Drop a's delete of the old IKE SA (and its retransmissions).
    old_spi = old.spi_i
    ab.net.drop = lambda d: d.src[0] == a.address and old_spi in d.data[:20]
    await ab.apply("a", node_plan("a", ["b"], 2, edit=epoch_2))
    session_b = b.engine.sessions["a"]
    assert session_b.awaiting_activation is not None
    packet = udp4("10.2.0.7", "10.1.0.5", b"still on the old SA")
    b.send(packet)
    ab.pump()
    assert a.tun.delivered == [packet]  # a's old inbound SA is in its grace period
    ab.advance(3)
    assert session_b.awaiting_activation is None
    # b deletes the old IKE SA itself (a's answer is lost too: it waits that out).
    assert [sa.state for sa in session_b.replacing] == [IkeSaState.DELETING]
    a.tun.delivered.clear()
    packet = udp4("10.2.0.7", "10.1.0.5", b"on the new SA")
    b.send(packet)
    ab.pump()
    assert a.tun.delivered == [packet]
    assert b.child_spis("a") == tuple(reversed(a.child_spis("b")))
