"""What the engine keeps of IKE_SA_INIT requests that matched no plan peer.

Anyone may send them, so both records are bounded: :class:`UnmatchedSources` keeps the
latest sources for status, :class:`EarlyRequests` keeps the requests themselves a few
seconds. When a plan put in force in that time has a peer at a request's source, the
engine feeds it through that peer's responder gate at once, so an initiator whose plan
came before ours gets its answer without waiting for its retransmission.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from ..io.udp import Address
from ..sink import UnmatchedReport, UnmatchedSource

RECENT_UNMATCHED = 8
"""How many sources of unmatched IKE_SA_INIT requests the status keeps (newest)."""


class UnmatchedSources:
    """The latest sources of IKE_SA_INIT requests that matched no peer, bounded (anyone may
    send them, so a flood from many addresses keeps only the newest few); their number is
    the engine's ``ike_no_peer`` counter."""

    def __init__(self, clock: Callable[[], float], keep: int = RECENT_UNMATCHED) -> None:
        self._clock = clock
        self._keep = keep
        self._recent: OrderedDict[Address, tuple[int, float]] = OrderedDict()

    def record(self, addr: Address) -> None:
        seen, _ = self._recent.pop(addr, (0, 0.0))
        self._recent[addr] = (seen + 1, self._clock())
        while len(self._recent) > self._keep:
            self._recent.popitem(last=False)

    def report(self, count: int) -> UnmatchedReport:
        recent = tuple(
            UnmatchedSource(addr[0], addr[1], seen, at)
            for addr, (seen, at) in reversed(self._recent.items())
        )
        return UnmatchedReport(count, recent)


EARLY_PER_SOURCE = 4
"""Requests kept from one IP address while no peer of the plan matches it (the newest)."""
EARLY_TOTAL = 256
"""Requests kept in all (the newest)."""
EARLY_BYTES = 256 * 1024
"""Their datagrams' bytes in all."""
EARLY_MAX_AGE = 16.0
"""Seconds a request is kept. Initiators retransmit with a back-off (RFC 7296 section
2.1; ours after 2, 6, 14 and 30 s, 2 to 16 s apart) and a retransmission is kept afresh,
so while the initiator still waits a plan arriving finds its request to answer."""


@dataclass(frozen=True, slots=True)
class EarlyRequest:
    """An IKE_SA_INIT request kept until a plan may have its peer."""

    data: bytes
    addr: Address
    local_port: int
    at: float
    """When it arrived (the engine's clock)."""


class EarlyRequests:
    """IKE_SA_INIT requests that matched no peer of the plan in force, kept for
    :data:`EARLY_MAX_AGE` seconds: in a roll-out a peer's plan (and its initiation) often
    comes before ours. Anyone may send them, so what is kept is bounded by source, by
    count and by bytes, the oldest going first; a retransmission (same source and SPIi)
    takes the place of the request it repeats. ``dropped`` counts the requests let go
    unanswered (too old, over a bound, or still matching no peer of the next plan)."""

    def __init__(
        self,
        per_source: int = EARLY_PER_SOURCE,
        total: int = EARLY_TOTAL,
        max_bytes: int = EARLY_BYTES,
        max_age: float = EARLY_MAX_AGE,
    ) -> None:
        self._per_source = per_source
        self._total = total
        self._max_bytes = max_bytes
        self._max_age = max_age
        self._kept: OrderedDict[tuple[Address, bytes], EarlyRequest] = OrderedDict()
        self._sources: Counter[str] = Counter()
        self.bytes = 0
        self.dropped = 0

    def __len__(self) -> int:
        return len(self._kept)

    def keep(self, request: EarlyRequest) -> None:
        self._expire(request.at)
        if len(request.data) > self._max_bytes:
            self.dropped += 1
            return
        key = (request.addr, request.data[0:8])
        if key in self._kept:
            self._remove(key)  # the retransmission replaces it; nothing is lost
        elif self._sources[request.addr[0]] >= self._per_source:
            oldest = next(k for k in self._kept if k[0][0] == request.addr[0])
            self._remove(oldest)
            self.dropped += 1
        self._kept[key] = request
        self._sources[request.addr[0]] += 1
        self.bytes += len(request.data)
        while len(self._kept) > self._total or self.bytes > self._max_bytes:
            self._remove(next(iter(self._kept)))
            self.dropped += 1

    def take(self, now: float) -> list[EarlyRequest]:
        """Every request still young enough, oldest first; none is kept any more."""
        self._expire(now)
        taken = list(self._kept.values())
        self._kept.clear()
        self._sources.clear()
        self.bytes = 0
        return taken

    def _expire(self, now: float) -> None:
        while self._kept:
            key, oldest = next(iter(self._kept.items()))
            if now - oldest.at < self._max_age:
                return
            self._remove(key)
            self.dropped += 1

    def _remove(self, key: tuple[Address, bytes]) -> None:
        request = self._kept.pop(key)
        self.bytes -= len(request.data)
        self._sources[request.addr[0]] -= 1
        if not self._sources[request.addr[0]]:
            del self._sources[request.addr[0]]
