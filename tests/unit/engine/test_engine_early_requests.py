"""An IKE_SA_INIT that reaches an agent before the plan that has its peer: the agent keeps
it a few seconds (bounded by source, count, bytes and age) and, once a plan with that
peer is in force, answers the original request at once, so the initiator needs no
retransmission; a kept request whose source the new plan does not know is let go and
counted. On the in-memory network, on fake time."""

from __future__ import annotations

from tests.support.engine_pair import SITES, Fleet, node_plan
from vpnfleet.agent.engine.incoming import (
    EARLY_BYTES,
    EARLY_MAX_AGE,
    EARLY_PER_SOURCE,
    EARLY_TOTAL,
    EarlyRequest,
    EarlyRequests,
)
from vpnfleet.agent.io.memory import Datagram
from vpnfleet.agent.io.udp import IKE_PORT

IKE_SA_INIT, IKE_AUTH = 34, 35  # RFC 7296 section 3.1, exchange types
B = (SITES["b"][0], IKE_PORT)
SPI_BASE = 0x5A00_0000_0000_0000
"""Made-up initiator SPIs start here (the UDP endpoint takes 4 leading zero bytes for a
non-ESP marker)."""


def sa_init_requests(log: list[Datagram], src: str, dst: str) -> int:
    return sum(
        1
        for d in log
        if d.src[0] == src and d.dst[0] == dst and d.data[18] == IKE_SA_INIT and d.data[19] & 0x08
    )


def tapped(fleet: Fleet) -> list[Datagram]:
    """Every datagram the network delivers, in order."""
    log: list[Datagram] = []

    def keep(datagram: Datagram) -> bool:
        log.append(datagram)
        return False

    fleet.net.drop = keep
    return log


async def test_request_before_the_plan_is_answered_when_the_plan_arrives() -> None:
    fleet = Fleet("a", "b")
    await fleet.start()
    log = tapped(fleet)
    # a initiates to b (the plans make the lower name the initiator); b has no plan yet.
    await fleet.apply("a", node_plan("a", ["b"]))
    assert sa_init_requests(log, SITES["a"][0], SITES["b"][0]) == 1
    assert fleet["b"].engine.ike_counters()["no_peer"] == 1
    assert len(fleet["b"].engine.early) == 1
    started = fleet.clock.now()

    await fleet.apply("b", node_plan("b", ["a"]))

    # Up at the same instant, on the one request a sent: no retransmission was needed.
    assert fleet.clock.now() == started
    assert fleet["a"].engine.peers["b"].is_up
    assert fleet["b"].engine.peers["a"].is_up
    assert sa_init_requests(log, SITES["a"][0], SITES["b"][0]) == 1
    counters = fleet["b"].engine.ike_counters()
    assert (counters["early_answered"], counters["early_dropped"]) == (1, 0)
    assert len(fleet["b"].engine.early) == 0
    # Nothing is left to retransmit: the retransmission window passes in silence.
    before = len(log)
    fleet.advance(EARLY_MAX_AGE * 4)
    assert sa_init_requests(log[before:], SITES["a"][0], SITES["b"][0]) == 0
    assert fleet["a"].engine.peers["b"].is_up


async def test_kept_request_from_a_source_the_plan_does_not_know_is_let_go_and_counted() -> None:
    fleet = Fleet("a", "b", "c")
    await fleet.start()
    log = tapped(fleet)
    await fleet.apply("a", node_plan("a", ["b"]))
    assert len(fleet["b"].engine.early) == 1

    await fleet.apply("b", node_plan("b", ["c"]))  # b's plan has no peer a

    counters = fleet["b"].engine.ike_counters()
    assert (counters["early_answered"], counters["early_dropped"]) == (0, 1)
    assert len(fleet["b"].engine.early) == 0
    assert not [d for d in log if d.src[0] == SITES["b"][0] and d.dst[0] == SITES["a"][0]]
    assert not fleet["a"].engine.peers["b"].is_up


async def test_request_older_than_the_age_limit_is_not_answered() -> None:
    fleet = Fleet("a", "b")
    await fleet.start()
    log = tapped(fleet)
    await fleet.apply("a", node_plan("a", ["b"]))
    assert sa_init_requests(log, SITES["a"][0], SITES["b"][0]) == 1
    # a's retransmissions are lost: only its first request ever reached b.
    fleet.net.drop = lambda d: d.dst[0] == SITES["b"][0]
    fleet.advance(EARLY_MAX_AGE + 0.1)
    fleet.net.drop = None

    await fleet.apply("b", node_plan("b", ["a"]))

    counters = fleet["b"].engine.ike_counters()
    assert (counters["early_answered"], counters["early_dropped"]) == (0, 1)


async def test_a_flood_before_the_plan_keeps_bounded_state() -> None:
    fleet = Fleet("a", "b")
    await fleet.start()
    log = tapped(fleet)
    await fleet.apply("a", node_plan("a", ["b"]))
    (request,) = [d.data for d in log if d.dst == B]
    fleet.net.drop = None
    engine = fleet["b"].engine
    # 20,000 requests: from 5,000 addresses, 4 SPIs from each.
    for i in range(20_000):
        source = f"198.51.{(i // 4) >> 8 & 255}.{(i // 4) & 255}"
        spi = (SPI_BASE + i).to_bytes(8, "big")
        fleet.net.send(Datagram((source, IKE_PORT), B, spi + request[8:]))
        if i % 1000 == 999:
            fleet.pump()
            assert len(engine.early) <= EARLY_TOTAL
            assert engine.early.bytes <= EARLY_BYTES
    fleet.pump()
    assert len(engine.early) == EARLY_TOTAL
    assert engine.ike_counters()["no_peer"] == 20_001
    assert engine.ike_counters()["early_dropped"] == 20_001 - EARLY_TOTAL
    # a's own request went long ago; the plan then answers none of the strangers.
    await fleet.apply("b", node_plan("b", ["a"]))
    counters = engine.ike_counters()
    assert (counters["early_answered"], counters["early_dropped"]) == (0, 20_001)
    assert len(engine.early) == 0


def early(addr: str, spi: int, at: float, size: int = 300) -> EarlyRequest:
    data = (0x5A00_0000_0000_0000 + spi).to_bytes(8, "big") + bytes(size - 8)
    return EarlyRequest(data, (addr, IKE_PORT), IKE_PORT, at)


def test_one_source_keeps_its_newest_few() -> None:
    kept = EarlyRequests()
    for spi in range(1, 11):
        kept.keep(early("198.51.100.1", spi, 0.0))
    kept.keep(early("198.51.100.2", 1, 0.0))
    taken = kept.take(0.0)
    ones = [int.from_bytes(r.data[1:8], "big") for r in taken if r.addr[0] == "198.51.100.1"]
    assert ones == list(range(11 - EARLY_PER_SOURCE, 11))
    assert len(taken) == EARLY_PER_SOURCE + 1
    assert kept.dropped == 10 - EARLY_PER_SOURCE


def test_a_retransmission_takes_the_place_of_its_request() -> None:
    kept = EarlyRequests()
    kept.keep(early("198.51.100.1", 7, 0.0))
    kept.keep(early("198.51.100.1", 7, 1.0))
    (request,) = kept.take(1.0 + EARLY_MAX_AGE - 0.5)
    assert request.at == 1.0
    assert kept.dropped == 0


def test_bytes_and_age_are_bounded() -> None:
    kept = EarlyRequests(per_source=100, total=100, max_bytes=1000)
    for spi in range(10):
        kept.keep(early(f"198.51.100.{spi}", spi, 0.0, size=300))
    assert kept.bytes == 900 and len(kept) == 3
    kept.keep(early("198.51.100.99", 99, 0.0, size=1001))
    assert len(kept) == 3 and kept.dropped == 8
    assert kept.take(EARLY_MAX_AGE) == []
    assert kept.dropped == 11
    assert kept.bytes == 0


async def test_answered_peer_is_not_initiated_to_again_while_its_set_up_runs() -> None:
    # b's plan arrives after a's request, which b answers; a's IKE_AUTH is lost for 3 s,
    # past b's initial-contact delay: b must not start a second IKE SA of its own.
    fleet = Fleet("a", "b")
    await fleet.start()
    log = tapped(fleet)
    await fleet.apply("a", node_plan("a", ["b"]))
    until = fleet.clock.now() + 3.0

    def lose_auth(d: Datagram) -> bool:
        log.append(d)
        return d.src[0] == SITES["a"][0] and d.data[18] == IKE_AUTH and fleet.clock.now() < until

    fleet.net.drop = lose_auth
    await fleet.apply("b", node_plan("b", ["a"]))
    assert not fleet["a"].engine.peers["b"].is_up
    fleet.advance(10)
    assert fleet["a"].engine.peers["b"].is_up and fleet["b"].engine.peers["a"].is_up
    assert fleet["b"].events("initial_contact") == []
    assert sa_init_requests(log, SITES["b"][0], SITES["a"][0]) == 0
    assert [len(fleet[h].events("ike_up")) for h in "ab"] == [1, 1]
