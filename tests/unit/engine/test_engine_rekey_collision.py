"""Crossing child rekeys (RFC 7296 section 2.8.1) on the in-memory engine pair: both
ends rekey one child at once, each answers the other's request before its own answer
arrives, the exchange holding the lowest of the four nonces made the redundant SA. Both
ends must then send and receive on the one surviving SA, with no packet lost once the
collision has settled (and the replaced SAs' grace periods are over)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.support.engine_pair import Fleet, Node, udp4
from vpnfleet.agent.ike.tasks import child_create
from vpnfleet.agent.io.memory import Datagram
from vpnfleet.agent.io.udp import IKE_PORT, NATT_PORT
from vpnfleet.agent.sink import RekeyTarget


def nonces_first_bytes(monkeypatch: pytest.MonkeyPatch, firsts: list[int]) -> None:
    """The next nonces drawn in child_create start with these bytes, in draw order;
    later nonces and every SPI stay random."""
    queue: Iterator[int] = iter(firsts)

    def fake(size: int) -> bytes:
        first = next(queue, None) if size == child_create.NONCE_LENGTH else None
        if first is None:
            return os.urandom(size)
        return bytes([first]) + os.urandom(size - 1)

    monkeypatch.setattr(child_create, "random_bytes", fake)


def ike_response(datagram: Datagram) -> bool:
    """An IKE message with the Response flag (RFC 7296 section 3.1: flags octet 19)."""
    data = datagram.data
    if datagram.dst[1] == NATT_PORT:
        if data[:4] != b"\0\0\0\0":
            return False  # ESP in UDP (RFC 3948)
        data = data[4:]
    elif datagram.dst[1] != IKE_PORT:
        return False
    return len(data) >= 28 and bool(data[19] & 0x20)


def assert_traffic_both_ways(a: Node, b: Node, fleet: Fleet, count: int) -> None:
    sent_ab = [udp4("10.1.0.5", "10.2.0.7", f"a to b {i}".encode()) for i in range(count)]
    sent_ba = [udp4("10.2.0.7", "10.1.0.5", f"b to a {i}".encode()) for i in range(count)]
    a.tun.delivered.clear()
    b.tun.delivered.clear()
    for one, other in zip(sent_ab, sent_ba, strict=True):
        a.send(one)
        b.send(other)
        fleet.pump()
    assert b.tun.delivered == sent_ab
    assert a.tun.delivered == sent_ba


@pytest.fixture
async def ab() -> Fleet:
    fleet = Fleet("a", "b")
    await fleet.start()
    await fleet.mesh()
    return fleet


@pytest.mark.parametrize("loser", ["a", "b"])
@pytest.mark.parametrize("late_answer", [False, True], ids=["in-order", "delete-first"])
async def test_crossing_child_rekeys_settle_on_one_sa(
    ab: Fleet, monkeypatch: pytest.MonkeyPatch, loser: str, late_answer: bool
) -> None:
    """``loser``'s own request carries the lowest nonce, so the SA of its exchange is
    the redundant one (the nonces are drawn: a's request, b's request, then the
    answers). With ``late_answer`` the answer to the winner's request is lost, so the
    loser's DELETE of its redundant SA reaches the winner first, while the winner
    still holds the loser's SA as the one replacing the old; the winner's
    retransmission then gets the cached answer (section 2.1); traffic must cross
    meanwhile too."""
    a, b = ab["a"], ab["b"]
    winner = "b" if loser == "a" else "a"
    draws = [0x10, 0x20, 0x30, 0x40] if loser == "a" else [0x20, 0x10, 0x30, 0x40]
    nonces_first_bytes(monkeypatch, draws)
    old_a, old_b = a.child_spis("b"), b.child_spis("a")
    assert_traffic_both_ways(a, b, ab, 3)
    winner_address = ab[winner].address

    if late_answer:
        ab.net.drop = lambda d: d.dst[0] == winner_address and ike_response(d)
    from_a = a.engine.start_rekey("b", RekeyTarget.CHILD)
    from_b = b.engine.start_rekey("a", RekeyTarget.CHILD)
    ab.pump()
    if late_answer:
        assert ab.net.dropped > 0
        # Unsettled: each end answered the other, one exchange is still open. Nobody
        # may send on an SA the other end cannot open yet.
        assert_traffic_both_ways(a, b, ab, 3)
        ab.net.drop = None
        ab.advance(3)  # the winner's first retransmission (after 2 s)
    else:
        ab.pump()

    assert from_a.done and from_b.done
    assert from_a.result().ok and from_b.result().ok, (from_a.result(), from_b.result())
    new_a, new_b = a.child_spis("b"), b.child_spis("a")
    assert new_a != old_a and new_b != old_b
    assert new_a == (new_b[1], new_b[0]), (new_a, new_b)
    assert a.engine.peers_up() == b.engine.peers_up() == 1
    assert a.events("child_down") == b.events("child_down") == []
    for node in (a, b):
        (report,) = node.engine.ike_sas()
        (child,) = report.children
        assert child.state == "installed", (node.host, child)
    assert_traffic_both_ways(a, b, ab, 5)
    ab.advance(10)  # the replaced and the redundant SAs' grace periods end
    assert a.child_spis("b") == new_a and b.child_spis("a") == new_b
    assert_traffic_both_ways(a, b, ab, 5)
    for node in (a, b):
        (child,) = node.engine.ike_sas()[0].children
        assert child.replay_drops == child.integrity_failures == 0
        assert node.engine.dp is not None
        node.engine.dp.handle_timer()  # no loop here to run the SAD's housekeeping
        spis = {sa.spi for sa in node.engine.dp.sad.inbound_sas()}
        assert spis == {child.spi_in}, (node.host, spis)


async def test_rekey_of_a_peer_without_child_says_so(ab: Fleet) -> None:
    a = ab["a"]
    driver = a.engine.peers["b"]
    driver._remove_child("removed by the test")
    outcome = ab.rekey("a", "b", RekeyTarget.CHILD)
    assert not outcome.ok
    assert outcome.detail == "IKE SA is up but no child SA is installed", outcome.detail
    missing = ab.rekey("b", "nobody", RekeyTarget.CHILD)
    assert not missing.ok and missing.detail == "peer is not up (not in the plan in force)"
