"""What arrives from outside the engine (mixed into the Engine): IKE datagrams, and the
data plane's acquires and SA events.

One UDP endpoint (500 and 4500) serves every IKE SA: incoming IKE is routed by our SPI
(RFC 7296 section 2.6 lets each side pick its own), and a request with a zero responder
SPI goes through the responder gate of the plan peer its source address belongs to.
A request no peer's address claims goes to the peer with no fixed address (plan
``dynamic_address``), whose IKE_AUTH then checks the identity, or from any other address
to the one responder-side peer the plan has behind a NAT; what matches no peer is
dropped and counted, with its latest sources, in the agent's status.
Traffic for a trap policy starts its peer; a child SA's volume limit starts its rekey.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable

from ..esp.sa import RekeyRequested, SaExpired
from ..esp.sad import SadEvent
from ..ike.admission import HalfOpenTable
from ..ike.errors import IkeError, LocalError
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


class IncomingDispatch(PeerChanges):
    """IKE datagrams routed to their IKE SA or responder gate, and the data plane's
    acquires and SA events; :class:`~.engine.Engine` provides the state and the I/O
    these methods use."""

    counters: dict[str, int]
    unmatched: UnmatchedSources
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

    def _new_responder(self, data: bytes, addr: Address, local_port: int) -> None:
        try:
            parse_message(data)
        except IkeError:
            self.counters["ike_malformed"] += 1
            return
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
                self.counters["ike_no_peer"] += 1
                self.unmatched.record(addr)
                left_out = self.untrusted_log.admit("no-peer", self.now())
                if left_out is not None:
                    more = f" ({left_out} more since)" if left_out else ""
                    log.info("IKE_SA_INIT from %s:%d matches no peer of the plan%s", *addr, more)
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
