"""The data plane's rekey and lifetimes on fake time: make-before-break with packets in
flight both ways, soft and hard limits reaching the engine's callback, timers on a loop."""

from __future__ import annotations

import asyncio

import pytest

from tests.support.dataplane_pair import POLICY, Pair, sa, udp4
from vpnfleet.agent.esp.sa import Direction, Lifetime, RekeyRequested, SaExpired
from vpnfleet.agent.esp.sad import DEFAULT_REKEY_GRACE, InboundRemoved
from vpnfleet.agent.io.dataplane import DataPlane
from vpnfleet.agent.io.tun import MemoryTun

A1, B1 = "10.1.0.5", "10.2.0.7"


def burst(count: int, tag: int, forward: bool = True) -> list[bytes]:
    src, dst = (A1, B1) if forward else (B1, A1)
    return [udp4(src, dst, sport=tag, dport=i + 1) for i in range(count)]


def test_rekey_make_before_break_loses_nothing_in_flight() -> None:
    pair = Pair()
    pair.connect(sa(0x1001, 1), sa(0x2002, 2))
    # Old SAs: packets leave both ways but are still on the wire during the rekey.
    old_ab, old_ba = burst(3, 1), burst(3, 2, forward=False)
    pair.a.send(*old_ab)
    pair.b.send(*old_ba)
    old_a_out = pair.a.dp.sad.outbound(POLICY)
    assert old_a_out is not None
    # RFC 7296 section 2.8: B (responder) installs its new inbound SA and keeps its new
    # outbound SA waiting; A (initiator) installs both and switches at once.
    pair.b.dp.rekey_child_sa(POLICY, sa(0x1101, 11), sa(0x2102, 12), switch_outbound=False)
    pair.a.dp.rekey_child_sa(POLICY, sa(0x2102, 12), sa(0x1101, 11))
    new_ab, still_old_ba = burst(3, 3), burst(2, 4, forward=False)
    pair.a.send(*new_ab)
    pair.b.send(*still_old_ba)
    pair.net.pump()
    assert pair.b.tun.delivered == old_ab + new_ab
    assert pair.a.tun.delivered == old_ba + still_old_ba
    # A's packets on the new SA show B that A holds it: B switched on the first of them
    # (before A's DELETE for the old SA); the old inbound SAs keep accepting until the
    # grace period ends.
    b_out_now = pair.b.dp.sad.outbound(POLICY)
    assert b_out_now is not None and b_out_now.spi == 0x2102
    assert pair.b.dp.counters.outbound_activated_by_peer == 1
    with pytest.raises(ValueError, match="no outbound SA waiting"):
        pair.b.dp.activate_outbound(POLICY)  # the DELETE then finds nothing to do
    new_ba = burst(2, 5, forward=False)
    pair.b.send(*new_ba)
    pair.net.pump()
    assert pair.a.tun.delivered == old_ba + still_old_ba + new_ba
    a_out = {s.spi: s.counters for s in pair.a.dp.stats().sas if s.direction == "out"}
    b_out = {s.spi: s.counters for s in pair.b.dp.stats().sas if s.direction == "out"}
    assert a_out[0x1101]["packets_out"] == 3 and b_out[0x2102]["packets_out"] == 2
    retiring = {s.spi: s.retiring_at for s in pair.a.dp.stats().sas if s.direction == "in"}
    assert retiring == {0x2002: pair.clock.now + DEFAULT_REKEY_GRACE, 0x2102: None}
    # A straggler on the old SA inside the grace period is still accepted...
    straggler = udp4(A1, B1, sport=9)
    sealed = old_a_out.encap(straggler, 4, pair.clock.now)
    assert sealed is not None
    pair.b.dp.receive_esp(sealed, ("192.0.2.1", 4500))
    pair.b.dp.end_receive_batch()
    assert pair.b.tun.delivered[-1] == straggler
    pair.clock.now += DEFAULT_REKEY_GRACE + 0.1
    for node in (pair.a, pair.b):
        node.dp.handle_timer()
    assert (POLICY, InboundRemoved(0x2002, "rekeyed")) in pair.a.events
    assert (POLICY, InboundRemoved(0x1001, "rekeyed")) in pair.b.events
    assert sorted(s.spi for s in pair.a.dp.stats().sas) == [0x1101, 0x2102]
    # ...and after it, the old SPI is unknown.
    sealed = old_a_out.encap(straggler, 4, pair.clock.now)
    assert sealed is not None
    pair.b.dp.receive_esp(sealed, ("192.0.2.1", 4500))
    pair.b.dp.end_receive_batch()
    assert pair.b.dp.stats().inbound_drops == {"unknown_spi": 1}


def test_activate_without_a_waiting_sa_is_refused() -> None:
    pair = Pair()
    pair.connect(sa(0x1001, 1), sa(0x2002, 2))
    with pytest.raises(ValueError, match="policy 'site' has no outbound SA waiting"):
        pair.a.dp.activate_outbound(POLICY)


def test_time_lifetimes_request_rekey_then_expire() -> None:
    pair = Pair()
    life = Lifetime(soft_seconds=10, hard_seconds=20)
    pair.connect(sa(0x1001, 1, lifetime=life), sa(0x2002, 2, lifetime=life))
    a = pair.a
    pair.clock.now += 10.5
    a.dp.handle_timer()
    assert sorted((p, e.spi, e.direction) for p, e in a.events) == [
        (POLICY, 0x1001, Direction.OUTBOUND),
        (POLICY, 0x2002, Direction.INBOUND),
    ]
    assert all(isinstance(e, RekeyRequested) and e.reason == "time" for _, e in a.events)
    a.send(udp4(A1, B1))
    assert a.dp.stats().counters["esp_tx"] == 1  # soft: the SA keeps working
    a.events.clear()
    pair.clock.now += 10
    a.dp.handle_timer()
    kinds = sorted(type(e).__name__ for _, e in a.events)
    assert kinds == ["InboundRemoved", "SaExpired", "SaExpired"]
    assert all(policy == POLICY for policy, _ in a.events)
    assert a.dp.policies() == []
    a.send(udp4(A1, B1))  # the policy traps again: the engine is asked for a new SA
    assert [acq.policy for acq in a.acquires] == [POLICY]


def test_volume_lifetimes_are_seen_on_the_packet_path() -> None:
    pair = Pair()
    life = Lifetime(soft_packets=3, hard_packets=5)
    pair.connect(sa(0x1001, 1, lifetime=life), sa(0x2002, 2))
    a = pair.a
    a.send(*burst(2, 1))
    assert a.events == []
    a.send(*burst(1, 2))
    assert a.events == [(POLICY, RekeyRequested(0x1001, Direction.OUTBOUND, "packets"))]
    a.send(*burst(3, 3))  # the 5th is the last one; the 6th is refused
    assert (POLICY, SaExpired(0x1001, Direction.OUTBOUND, "packets")) in a.events
    counters = a.dp.stats().counters
    assert counters["esp_tx"] == 5 and counters["encap_refused"] == 1
    assert a.dp.sad.outbound(POLICY) is None  # removed by the batch's housekeeping
    a.send(udp4(A1, B1))
    assert counters["no_sa"] == 0 and a.dp.stats().counters["no_sa"] == 1
    pair.net.pump()
    assert len(pair.b.tun.delivered) == 5


def test_inbound_volume_events_are_delivered_after_the_receive_batch() -> None:
    pair = Pair()
    pair.connect(sa(0x1001, 1, lifetime=Lifetime(soft_bytes=100)), sa(0x2002, 2))
    pair.a.send(*burst(3, 1))
    pair.net.pump()
    assert (POLICY, RekeyRequested(0x1001, Direction.INBOUND, "bytes")) in pair.b.events


async def test_timers_run_on_the_loop() -> None:
    loop = asyncio.get_running_loop()
    got: asyncio.Queue[object] = asyncio.Queue()
    dp = DataPlane(MemoryTun(), clock=loop.time, on_sa_event=lambda p, e: got.put_nowait(e))
    life = Lifetime(soft_seconds=0.05, hard_seconds=0.1)
    dp.start(loop)
    try:
        dp.install_child_sa(POLICY, sa(0x2002, 2, lifetime=life), sa(0x1001, 1), "192.0.2.2")
        first = await asyncio.wait_for(got.get(), 5)
        assert first == RekeyRequested(0x2002, Direction.INBOUND, "time")
        second = await asyncio.wait_for(got.get(), 5)
        assert second == SaExpired(0x2002, Direction.INBOUND, "time")
    finally:
        dp.stop()


def test_waiting_outbound_sa_is_kept_until_the_peer_uses_the_new_one() -> None:
    """RFC 7296 section 2.8: the responder of a rekey must not send on the new SA before
    the initiator holds it. Packets on the old SA do not switch it; the first one on the
    new inbound SA does."""
    pair = Pair()
    pair.connect(sa(0x1001, 1), sa(0x2002, 2))
    pair.b.dp.rekey_child_sa(POLICY, sa(0x1101, 11), sa(0x2102, 12), switch_outbound=False)
    pair.a.send(*burst(2, 1))  # a has not rekeyed yet: still the old SA
    pair.net.pump()
    b_out = pair.b.dp.sad.outbound(POLICY)
    assert b_out is not None and b_out.spi == 0x2002
    assert pair.b.dp.counters.outbound_activated_by_peer == 0
    pair.a.dp.rekey_child_sa(POLICY, sa(0x2102, 12), sa(0x1101, 11))
    pair.a.send(*burst(1, 2))
    pair.net.pump()
    b_out = pair.b.dp.sad.outbound(POLICY)
    assert b_out is not None and b_out.spi == 0x2102
    assert pair.b.dp.counters.outbound_activated_by_peer == 1
    reply = burst(1, 3, forward=False)
    pair.b.send(*reply)
    pair.net.pump()
    assert pair.a.tun.delivered[-1:] == reply


def test_an_outbound_switch_supersedes_an_older_waiting_outbound_sa() -> None:
    """A collision of IKEv1 Quick modes (or crossed rekeys): b started one replacement
    (its outbound half waits for the peer) and then took the peer's, which won, with an
    outbound switch at once. The first one is out of the game: a packet the peer still
    sends on it must not move b's outbound back to it (the peer deletes it next, and b's
    traffic would go into an SA nobody opens)."""
    pair = Pair()
    pair.connect(sa(0x1001, 1), sa(0x2002, 2))
    # b's own replacement: both halves installed, the outbound one waiting.
    pair.b.dp.rekey_child_sa(POLICY, sa(0x1101, 11), sa(0x2102, 12), switch_outbound=False)
    # a answered it and sends on it at once.
    pair.a.dp.rekey_child_sa(POLICY, sa(0x2102, 12), sa(0x1101, 11))
    # The peer's replacement wins: b switches to it at once.
    pair.b.dp.rekey_child_sa(POLICY, sa(0x1201, 21), sa(0x2202, 22))
    pair.a.send(*burst(2, 1))  # still on the loser 0x1101: b opens it (grace period)
    pair.net.pump()
    assert pair.b.tun.delivered[-2:] == burst(2, 1)
    b_out = pair.b.dp.sad.outbound(POLICY)
    assert b_out is not None and b_out.spi == 0x2202
    assert pair.b.dp.counters.outbound_activated_by_peer == 0
    # Nothing waits any more: there is nothing to activate.
    with pytest.raises(ValueError, match="no outbound SA waiting"):
        pair.b.dp.activate_outbound(POLICY)
    # a takes the winner too; b's replies cross on it.
    pair.a.dp.rekey_child_sa(POLICY, sa(0x2202, 22), sa(0x1201, 21))
    reply = burst(1, 3, forward=False)
    pair.b.send(*reply)
    pair.net.pump()
    assert pair.a.tun.delivered[-1:] == reply
