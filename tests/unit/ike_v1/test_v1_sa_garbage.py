"""Garbage never kills an IKEv1 SA: what does not parse, decrypt or verify is counted
and dropped (hypothesis, as tests/fuzz/ does)."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.ike_v1_peers import LEFT, Peers, left_right
from vpnfleet.agent.ike.events import ChildSaEstablished, IkeSaFailed, LivenessAnswered
from vpnfleet.agent.ike.v1.constants import ExchangeType, Flag
from vpnfleet.agent.ike.v1.message import IsakmpHeader
from vpnfleet.agent.ike.v1.sa import V1State

EXCHANGES = st.sampled_from([int(e) for e in ExchangeType] + [99])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(
            EXCHANGES,
            st.sampled_from([0, 1, 2, 3]),
            st.integers(0, 2**32 - 1),
            st.integers(0, 255),
            st.binary(max_size=200),
        ),
        min_size=1,
        max_size=8,
    )
)
def test_random_datagrams_with_our_cookies_are_dropped(
    datagrams: list[tuple[int, int, int, int, bytes]],
) -> None:
    peers = ESTABLISHED
    sa = peers.right.sa
    before = sa.dropped
    for exchange, flags, mid, first, body in datagrams:
        header = IsakmpHeader(
            sa.icookie, sa.rcookie, first, exchange, Flag(flags), mid, 28 + len(body)
        )
        sa.receive_datagram(header.encode() + body, LEFT, peers.now)
    assert sa.dropped == before + len(datagrams)
    assert sa.state is V1State.ESTABLISHED
    assert sa.next_event() is None


ESTABLISHED = Peers.established()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 4), st.integers(0, 10_000), st.integers(1, 255))
def test_a_corrupted_encrypted_message_is_dropped_and_the_real_one_taken(
    which: int, position: int, xor: int
) -> None:
    """Before the ``which``-th encrypted datagram of a handshake (Main mode 5 and 6,
    Quick mode, informational), a copy with one byte changed arrives; it is dropped
    and the exchange completes with the real one.

    The byte is never in the last cipher block: CBC lets a change there garble only
    the last plaintext block, which may be all padding; such a message verifies, and
    the IV chains of the two ends (RFC 2409 Appendix B) then part. IKEv1 has no
    integrity check over its ciphertext to stop that; no peer we know of checks the
    padding either."""
    peers = Peers(*left_right())
    seen = {"n": 0, "hit": False}
    peers.start()
    for _ in range(50):
        moved = False
        for sender in (peers.left, peers.right):
            for data, addr in peers.outgoing(sender):
                moved = True
                if data[19] & Flag.ENCRYPTION:
                    if seen["n"] == which:
                        at = 28 + position % (len(data) - 28 - 16)
                        bad = data[:at] + bytes([data[at] ^ xor]) + data[at + 1 :]
                        peers.deliver(peers.other(sender), bad, addr[1])
                        seen["hit"] = True
                    seen["n"] += 1
                peers.deliver(peers.other(sender), data, addr[1])
        if not moved:
            break
    assert peers.left.sa.state is peers.right.sa.state is V1State.ESTABLISHED
    assert peers.left.of(ChildSaEstablished) and peers.right.of(ChildSaEstablished)
    assert not peers.left.of(IkeSaFailed) and not peers.right.of(IkeSaFailed)
    assert seen["hit"]  # five encrypted datagrams: Main mode 5 and 6, Quick mode 1-3
    assert peers.left.sa.dropped + peers.right.sa.dropped == 1
    peers.left.sa.check_liveness(peers.now)
    peers.run()
    assert peers.left.of(LivenessAnswered)
