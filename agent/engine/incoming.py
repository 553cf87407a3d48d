"""What arrives from outside the engine (mixed into the Engine): IKE datagrams, and the
data plane's acquires and SA events.

One UDP endpoint (500 and 4500) serves every IKE SA: incoming IKE is routed by our SPI
(RFC 7296 section 2.6 lets each side pick its own), and a request with a zero responder
SPI goes through the responder gate of the plan peer its source address belongs to.
A request no peer's address claims goes to the peer with no fixed address (plan
``dynamic_address``), whose IKE_AUTH then checks the identity, or from any other address
to the one responder-side peer the plan has behind a NAT; what matches no peer is
counted, with its latest sources, in the agent's status, and kept a few seconds
(:class:`EarlyRequests`): when a plan put in force in that time has a peer at its source,
it goes through that peer's responder gate at once, so an initiator whose plan came
before ours gets its answer without waiting for its retransmission.
Traffic for a trap policy starts its peer; a child SA's volume limit starts its rekey.
"""

from __future__ import annotations

import logging
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from ..esp.sa import RekeyRequested, SaExpired
from ..esp.sad import SadEvent
from ..ike.admission import HalfOpenTable
from ..ike.errors import LocalError, ProtocolError
from ..ike.ike_sa import IkeSa
from ..ike.message import parse_message
from ..io.dataplane_model import Acquire
from ..io.udp import Address, DatagramEndpoint
from ..plan import StartAction
from ..sink import UnmatchedReport, UnmatchedSource
from .peers import PeerChanges

log = logging.getLogger(__name__)

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


class IncomingDispatch(PeerChanges):
    """IKE datagrams routed to their IKE SA or responder gate, and the data plane's
    acquires and SA events; :class:`~.engine.Engine` provides the state and the I/O
    these methods use."""

    counters: dict[str, int]
    unmatched: UnmatchedSources
    early: EarlyRequests
    endpoint: DatagramEndpoint | None
    _by_spi: dict[bytes, IkeSa]
    _by_address: dict[str, list[str]]
    half_open: HalfOpenTable

    def _natt_port(self) -> int:
        raise NotImplementedError

    # -- incoming datagrams -----------------------------------------------------------

    def _on_ike(self, data: bytes, addr: Address, local_port: int) -> None:
        try:
            self._dispatch_ike(data, addr, local_port)
        except Exception:  # nothing a peer sends may stop the engine
            self.counters["ike_malformed"] += 1
            log.exception("IKE datagram from %s:%d could not be handled", *addr)
        while (notice := self.half_open.next_notice()) is not None:
            log.warning(
                "dropped %d IKE message(s) over %s=%d since the last such line, the latest "
                "from %s; established SAs are not affected (raise ike_limits.%s in the "
                "agent config if this is legitimate load)",
                notice.refused,
                notice.limit.value,
                notice.value,
                notice.source,
                notice.limit.value,
            )

    def _dispatch_ike(self, data: bytes, addr: Address, local_port: int) -> None:
        if len(data) < 28:
            self.counters["ike_malformed"] += 1
            return
        spi_i, spi_r, flags = data[0:8], data[8:16], data[19]
        from_initiator = bool(flags & 0x08)  # RFC 7296 section 3.1: the I flag
        ours = spi_r if from_initiator else spi_i
        if from_initiator and ours == bytes(8):
            self._new_responder(data, addr, local_port)
            return
        sa = self._by_spi.get(ours)
        if sa is None:
            self.counters["ike_unknown_spi"] += 1
            return
        self._last_port[sa] = local_port
        sa.receive_datagram(data, addr, self.now(), self._wall())
        self._service(sa)

    def _responder_names(self, addr: Address) -> list[str]:
        """The plan peers an IKE_SA_INIT from ``addr`` may be for, the likeliest first."""
        names = self._by_address.get(addr[0], [])
        if not names:
            # No peer has this address: the peer with none (it has a dynamic address, or
            # sits behind a NAT not declared) is the one it can be; IKE_AUTH then checks
            # its identity (remote_id).
            names = [s.name for s in self.sessions.values() if s.peer.dynamic_address]
        if not names:
            # Behind a NAT the source is not a plan address: the only responder-side peer
            # the plan has behind a NAT, if there is exactly one, is the one it can be.
            # Any other peer is reached at its own addresses: a stranger's IKE_SA_INIT
            # must not become the business of a peer that does not move.
            names = [
                s.name
                for s in self.sessions.values()
                if not s.peer.initiator and s.peer.nat.remote_behind_nat
            ]
            if len(names) != 1:
                return []
        return names

    def _new_responder(self, data: bytes, addr: Address, local_port: int) -> None:
        try:
            parse_message(data)
        except ProtocolError:
            self.counters["ike_malformed"] += 1
            return
        names = self._responder_names(addr)
        if not names:
            self.counters["ike_no_peer"] += 1
            self.unmatched.record(addr)
            self.early.keep(EarlyRequest(data, addr, local_port, self.now()))
            left_out = self.untrusted_log.admit("no-peer", self.now())
            if left_out is not None:
                more = f" ({left_out} more since)" if left_out else ""
                log.info(
                    "IKE_SA_INIT from %s:%d matches no peer of the plan%s; kept %g s for a "
                    "plan that has its peer",
                    *addr,
                    more,
                    EARLY_MAX_AGE,
                )
            return
        session = self.sessions[names[0]]
        gate = self._gates.get(session.name)
        if gate is None:
            self.counters["ike_no_peer"] += 1
            return
        decision = gate.receive_datagram(data, addr, self.now(), self._wall())
        if decision.reply is not None and self.endpoint is not None:
            self.endpoint.send_ike(decision.reply, addr, local_port == self._natt_port())
        if decision.reason == "cookie required":
            self.counters["cookies_sent"] += 1
        elif decision.reason and decision.limit is None:  # the table counts its caps
            self.counters["ike_refused"] += 1
        sa = decision.sa
        if sa is None:
            return
        self._last_port[sa] = local_port
        if decision.new:
            self._adopt(sa, session)
        self._service(sa)

    def _answer_early(self) -> None:
        """Feed the kept IKE_SA_INIT requests whose source the plan now has a peer for
        through that peer's responder gate (the reply goes to the original request, and
        its retransmissions then meet the cached reply, RFC 7296 section 2.1); let the
        others go, counted."""
        for request in self.early.take(self.now()):
            if self._responder_names(request.addr):
                self.counters["ike_early_answered"] += 1
                self._on_ike(request.data, request.addr, request.local_port)
            else:
                self.early.dropped += 1

    def _on_acquire(self, acquire: Acquire) -> None:
        session = self.sessions.get(acquire.policy)
        if session is None or session.peer.start_action is not StartAction.TRAP:
            return
        sa = session.ike
        if sa is not None and not sa.is_closed:
            return
        self._publish("acquire", session.name, "traffic for a trap policy")
        self._initiate(session)

    def _on_sa_event(self, policy: str, event: SadEvent) -> None:
        session = self.sessions.get(policy)
        if session is None:
            return
        if isinstance(event, RekeyRequested) and session.child is not None:
            spi = int.from_bytes(session.child.spi_in, "big")
            out = int.from_bytes(session.child.spi_out, "big")
            if event.spi in (spi, out):
                try:
                    self._rekey_child(session)
                except LocalError as exc:
                    log.info("%s: volume rekey not started: %s", policy, exc)
        elif isinstance(event, SaExpired):
            self._publish("child_expired", policy, f"SPI {event.spi:08x} {event.reason}")
