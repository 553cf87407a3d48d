"""Property test: simultaneous rekeys (RFC 7296 sections 2.8.1 and 2.8.2), also crossing a
child delete (1.4.1, 2.25), delivered in any order, with datagrams duplicated or lost,
always converge: one IKE SA per side, the same child SAs seen from both ends (one, or
none after a delete), nothing left in flight."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.ike_peers import Endpoint, Peers
from vpnfleet.agent.ike.states import IkeSaState


def _live(endpoint: Endpoint) -> list:
    return [s for s in endpoint.sas if s.state is IkeSaState.ESTABLISHED]


# VPNFLEET_FUZZ_EXAMPLES raises the budget for a deep run, as in test_ike_fuzz.py.
EXAMPLES = max(150, int(os.environ.get("VPNFLEET_FUZZ_EXAMPLES", "400")) // 2)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(["child", "ike", "child+ike", "child+delete", "ike+delete"]),
    st.lists(st.tuples(st.integers(0, 1000), st.booleans()), min_size=1, max_size=60),
)
def test_simultaneous_rekeys_converge_in_any_order(
    kind: str, choices: list[tuple[int, bool]]
) -> None:
    peers = Peers.established()
    peers.clear_events()
    left, right = peers.left.sa, peers.right.sa
    if "child" in kind:
        left.rekey_child(next(iter(left.children)), peers.now)
        if "delete" not in kind:
            right.rekey_child(next(iter(right.children)), peers.now)
    if "ike" in kind:
        left.rekey(peers.now)
        if "delete" not in kind:
            right.rekey(peers.now)
    if "delete" in kind:
        right.delete_child(next(iter(right.children)), peers.now)
    in_flight: list[tuple[Endpoint, bytes]] = []
    for pick, duplicate in choices:
        for sender in (peers.left, peers.right):
            in_flight += [(peers.other(sender), d) for d in peers.outgoing(sender)]
        if not in_flight:
            break
        to, data = in_flight[pick % len(in_flight)]
        if not duplicate:
            in_flight.remove((to, data))
        peers.deliver(to, data)
    for _ in range(12):  # whatever is left: deliver in order, let retransmissions run
        peers.run()
        peers.advance(60.0)
    peers.run()
    (lsa,), (rsa,) = _live(peers.left), _live(peers.right)
    assert (lsa.spi_i, lsa.spi_r) == (rsa.spi_i, rsa.spi_r)
    pairs_left = {(c.spi_in, c.spi_out) for c in lsa.children.values()}
    pairs_right = {(c.spi_out, c.spi_in) for c in rsa.children.values()}
    assert pairs_left == pairs_right
    assert len(pairs_left) == (0 if "delete" in kind else 1)
    for sa in (lsa, rsa):
        assert sa.tasks.idle and sa.get_timer() is None
