"""The pre-auth fragment budget (admission.py) under any order of fragments, sizes,
re-fragmentations and expiries: what the table says it holds is what the reassemblies
hold, never more than the agent's budget, never more than one message's cap per SA."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vpnfleet.agent.ike.admission import HalfOpenSlot, HalfOpenTable, ResponderLimits
from vpnfleet.agent.ike.fragments import Reassembly
from vpnfleet.agent.ike.payloads import SkfPayload

EXAMPLES = int(os.environ.get("VPNFLEET_FUZZ_EXAMPLES", "200"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
LIMITS = ResponderLimits(preauth_message_bytes=3000, preauth_fragment_bytes=5000)


class HalfOpen:
    """What the table needs of an IKE SA: the slot it points back to."""

    def __init__(self) -> None:
        self.half_open_slot: HalfOpenSlot | None = None


arrival = st.tuples(
    st.integers(0, 3),  # which SA
    st.integers(1, 2),  # message ID
    st.integers(1, 4),  # total fragments
    st.integers(1, 4),  # fragment number (clamped to the total)
    st.integers(0, 2500),  # bytes
)
step = st.one_of(arrival, st.tuples(st.just("expire"), st.integers(0, 3)))


@FUZZ
@given(steps=st.lists(step, max_size=60))
def test_the_budget_matches_what_is_held(steps: list[tuple[object, ...]]) -> None:
    table = HalfOpenTable(LIMITS)
    sas = [HalfOpen() for _ in range(4)]
    reassemblies = [Reassembly() for _ in range(4)]
    for n, sa in enumerate(sas):
        sa.half_open_slot = table.add(n, ("192.0.2.1", 500), bytes([n]) * 8, sa, 30.0)  # type: ignore[arg-type]
    for item in steps:
        if item[0] == "expire":
            n = int(item[1])  # type: ignore[call-overload]
            if sas[n].half_open_slot is not None:
                sas[n].half_open_slot.release()  # type: ignore[union-attr]
                reassemblies[n] = Reassembly()  # the SA is gone, with what it held
            continue
        n, message_id, total, number, size = (int(x) for x in item)  # type: ignore[call-overload]
        fragment = SkfPayload(0, min(number, total), total, b"")
        reassemblies[n].add(message_id, fragment, b"\0" * size, sas[n].half_open_slot, 0.0)
        held = [
            r.held for r, sa in zip(reassemblies, sas, strict=True) if sa.half_open_slot is not None
        ]
        assert table.held == sum(held) <= LIMITS.preauth_fragment_bytes
        assert all(h <= LIMITS.preauth_message_bytes for h in held)
        for r, sa in zip(reassemblies, sas, strict=True):
            if sa.half_open_slot is not None:
                assert sa.half_open_slot.held == r.held
