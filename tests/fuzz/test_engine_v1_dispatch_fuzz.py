"""The engine's routing of IKEv1 datagrams under mutation: whatever arrives, with a
zero responder cookie or the cookies of the live ISAKMP SA, from the peer's address or
another, nothing raises out of the engine or counts as our own error, the tunnel in
force stays up and the half-open table holds no more than its caps allow."""

from __future__ import annotations

import asyncio
import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.engine_pair import Fleet
from tests.unit.engine.test_engine_ikev1 import ikev1
from vpnfleet.agent.ike.admission import ResponderLimits
from vpnfleet.agent.ike.states import Role
from vpnfleet.agent.ike.v1.config import IkeV1Config
from vpnfleet.agent.ike.v1.sa import IkeV1Sa

EXAMPLES = int(os.environ.get("VPNFLEET_FUZZ_EXAMPLES", "200"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
LIMITS = ResponderLimits(half_open_per_source=3, half_open_per_peer=4, half_open_total=5)


def pair() -> Fleet:
    async def build() -> Fleet:
        fleet = Fleet("a", "b", limits=LIMITS)
        await fleet.start()
        await fleet.mesh(a=ikev1, b=ikev1)
        return fleet

    return asyncio.run(build())


FLEET = pair()


def first_message() -> bytes:
    config = FLEET["a"].engine.peers["b"].config
    assert isinstance(config, IkeV1Config)
    other = IkeV1Sa(config, Role.INITIATOR)
    other.initiate(("192.0.2.2", 500), 0.0)
    return other.datagrams_to_send(0.0)[0][0]


def live_cookies() -> bytes:
    sa = FLEET["a"].engine.peers["b"].ike
    assert isinstance(sa, IkeV1Sa)
    return sa.icookie + sa.rcookie


mutation = st.tuples(st.integers(0, 400), st.integers(0, 255))
source = st.sampled_from([("192.0.2.2", 500), ("192.0.2.2", 4500), ("198.51.100.7", 500)])


@FUZZ
@given(
    base=st.sampled_from(["first", "live", "random"]),
    flips=st.lists(mutation, max_size=6),
    tail=st.binary(max_size=64),
    cut=st.integers(0, 600),
    addr=source,
)
def test_nothing_a_datagram_does_reaches_past_the_engine(
    base: str, flips: list[tuple[int, int]], tail: bytes, cut: int, addr: tuple[str, int]
) -> None:
    engine = FLEET["a"].engine
    if base == "first":
        data = bytearray(first_message())
    elif base == "live":
        data = bytearray(live_cookies() + bytes([0, 0x10, 32, 1]) + bytes(8)) + tail
    else:
        data = bytearray(bytes(8) + bytes(8) + bytes([1, 0x10, 2, 0]) + bytes(8)) + tail
    for at, value in flips:
        if at < len(data) and at not in (17,):  # keep it IKEv1
            data[at] = value
    datagram = bytes(data[: max(cut, 28)])
    errors = engine.ike_counters()["internal_error"]
    engine._on_ike(datagram, addr, addr[1])
    FLEET.pump()
    assert engine.ike_counters()["internal_error"] == errors
    assert engine.peers_up() == 1
    assert engine.admission().half_open <= LIMITS.half_open_total
