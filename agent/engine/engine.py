"""The agent engine: a plan in, IKE and child SAs out (the only owner of SA lifecycles).

It implements :class:`~vpnfleet.agent.sink.PlanSink`. One UDP endpoint (500 and 4500)
serves every IKE SA: incoming IKE is routed by our SPI (RFC 7296 section 2.6 lets each
side pick its own), and a request with a zero responder SPI goes through the responder
gate of the plan peer its source address belongs to. IKE events install, rekey and
remove child SAs in the data plane; the engine schedules rekeys (before expiry, with
jitter), retries failed peers with back-off, and reports everything to the EventHub.

Each IKE SA has one timer, re-armed from ``get_timer()`` after every input (aioquic's
asyncio adapter pattern); time comes from a :class:`~.clock.Scheduler`. Routes into
the TUN device, and the policy routing transport mode needs, follow the plan through
:class:`~.plan_routes.PlanRoutes`. How peers are added, changed and removed lives in
:mod:`.peers`, what arrives (IKE datagrams, the data plane's acquires and SA events) in
:mod:`.incoming`, what IKE events do to the peers in :mod:`.lifecycle`, to the data
plane's child SAs in :mod:`.child_sas`, and the rekey timers in :mod:`.rekey`.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Sequence
from typing import Protocol

from ..ike.admission import HalfOpenTable, Limit, LogLimiter, ResponderLimits
from ..ike.errors import LocalError
from ..ike.gate import IkeResponderGate
from ..ike.ike_sa import IkeSa
from ..ike.states import IkeSaState, Role
from ..io.dataplane import DataPlane, RawEspSender
from ..io.keepalive import KeepaliveScheduler
from ..io.rawesp import RawEspCounters, RawEspHandler
from ..io.tun import TunDevice
from ..io.udp import (
    IKE_PORT,
    NATT_PORT,
    Address,
    BatchEndHandler,
    DatagramEndpoint,
    EspHandler,
    IkeHandler,
    UdpCounters,
)
from ..plan import AgentPlan, AuthMethod, Peer
from ..sink import (
    PUT_IN_FORCE_KINDS,
    AdmissionLimitReport,
    AdmissionReport,
    DropCount,
    DropLayer,
    DropReason,
    EventHub,
    IkeSaReport,
    PeerControlError,
    Problem,
    ProblemBoard,
    ProblemKind,
    SaEventReport,
    UnmatchedReport,
)
from . import translate
from .clock import LoopScheduler, Scheduler, TimerHandle
from .forwarding import HostForwarding
from .incoming import EarlyRequests, IncomingDispatch, UnmatchedSources
from .keylog import KeyLog
from .kill_switch import KillSwitch
from .peers import same_tunnel
from .plan_routes import TUNNEL_TABLE, PlanRoutes, RouteTable
from .rekey import Settled
from .session import PeerSession, PeerState, SaKind

log = logging.getLogger(__name__)

_NOT_OWNED = object()

EndpointFactory = Callable[[IkeHandler, EspHandler], DatagramEndpoint]
"""Makes the endpoint given the engine's receive callbacks (real sockets or memory)."""


class RawEspChannel(RawEspSender, Protocol):
    """A raw IP protocol 50 socket (``rawesp.RawEspSocket``) as the engine uses it."""

    counters: RawEspCounters
    on_batch_end: BatchEndHandler | None

    def start(self, loop: asyncio.AbstractEventLoop | None = None) -> None: ...

    def kernel_drops(self) -> int | None: ...

    def close(self) -> None: ...


RawEspFactory = Callable[[RawEspHandler], RawEspChannel]
"""Makes the raw ESP socket given the data plane's receive callback."""


class Engine(IncomingDispatch):
    def __init__(
        self,
        tun: TunDevice,
        make_endpoint: EndpointFactory,
        *,
        scheduler: Scheduler | None = None,
        routing: RouteTable | None = None,
        events: EventHub | None = None,
        rng: random.Random | None = None,
        wall_clock: Callable[[], float] = time.time,
        underlay_mtu: int = 1500,
        source_address: Callable[[str], str | None] | None = None,
        keylog: KeyLog | None = None,
        own_mark: int | None = None,
        ike_credentials: translate.IkeCredentials | None = None,
        make_raw: RawEspFactory | None = None,
        limits: ResponderLimits | None = None,
        kill_switch: KillSwitch | None = None,
        tunnel_table: int = TUNNEL_TABLE,
        forwarding: HostForwarding | None = None,
    ) -> None:
        """``own_mark``: the firewall mark the endpoint's sockets carry, without which
        transport-mode peers are not routed into the TUN (their IKE would follow).
        ``ike_credentials``: this agent's IKE certificate and key, for the peers that
        authenticate with certificates (without them such peers report an error).
        ``make_raw``: the raw ESP socket for peers with no NAT between us (RFC 7296
        section 2.23); without it ESP always travels in UDP 4500.
        ``limits``: the caps on half-open IKE SAs and pre-auth fragments, shared by every
        peer's responder gate (default: :class:`ResponderLimits`'s).
        ``kill_switch``: the nftables table that keeps protected traffic out of the clear
        whether the agent runs or not, installed with every plan put in force.
        ``tunnel_table``: the routing table of the routes into the TUN (with ``own_mark``).
        ``forwarding``: the forwarding sysctls, turned on where the plan makes this host
        a gateway (its changes are ``forwarding`` events)."""
        self.tun = tun
        self.ike_credentials = ike_credentials
        self.keylog = keylog
        """Where SA keys are appended for debugging; None (the default) writes none."""
        self.events = events or EventHub()
        self.routing = routing
        self.routes = (
            PlanRoutes(routing, tun.name, own_mark, underlay_mtu, tunnel_table)
            if routing is not None
            else None
        )
        self.kill_switch = kill_switch
        self.forwarding = forwarding
        if forwarding is not None:
            forwarding.report = lambda message: self._publish("forwarding", "", message)
        self.underlay_mtu = underlay_mtu
        self._make_endpoint = make_endpoint
        self._make_raw = make_raw
        self.raw: RawEspChannel | None = None
        self._scheduler = scheduler
        self._rng = rng or random.Random()
        self._wall = wall_clock
        self._source_address = source_address
        self.plan: AgentPlan | None = None
        self.sessions: dict[str, PeerSession] = {}
        self._by_spi: dict[bytes, IkeSa] = {}
        self._owner: dict[IkeSa, PeerSession | None] = {}
        self._timers: dict[IkeSa, tuple[float, TimerHandle]] = {}
        self._last_port: dict[IkeSa, int] = {}
        self._created: dict[IkeSa, float] = {}
        self._gates: dict[str, IkeResponderGate] = {}
        self.half_open = HalfOpenTable(limits)
        """Every gate's half-open IKE SAs and pre-auth fragment bytes, under one set of caps."""
        self._by_address: dict[str, list[str]] = {}
        self._waits: dict[tuple[str, SaKind], list[asyncio.Future[Settled]]] = {}
        self._liveness_waits: dict[str, list[asyncio.Future[str]]] = {}
        self.counters: dict[str, int] = {
            "ike_malformed": 0,
            "ike_unknown_spi": 0,
            "ike_no_peer": 0,
            "ike_early_answered": 0,
            "ike_refused": 0,
            "cookies_sent": 0,
        }
        self.board = ProblemBoard()
        """Problems of the data plane (routes, rules, TUN, sockets) while they last."""
        self._closed_sa_drops = 0
        """Messages dropped by IKE SAs already forgotten (``IkeSa.dropped``)."""
        self.untrusted_log = LogLimiter()
        """Bounds the log lines about IKE nobody authenticated (strangers can repeat it)."""
        self.unmatched = UnmatchedSources(wall_clock)
        self.early = EarlyRequests()
        """IKE_SA_INIT requests that matched no peer, kept a few seconds for the next plan."""
        self.dp: DataPlane | None = None
        self.endpoint: DatagramEndpoint | None = None
        self._live = False
        self.stopped = False
        """After stop(): nothing is scheduled or sent any more."""
        self.keepalive: KeepaliveScheduler | None = None

    # -- lifecycle ---------------------------------------------------------------------

    @property
    def data_plane(self) -> bool:
        return True

    @property
    def scheduler(self) -> Scheduler:
        if self._scheduler is None:
            raise RuntimeError("engine not started")
        return self._scheduler

    def now(self) -> float:
        return self.scheduler.now()

    async def start(self) -> None:
        """Open the endpoint and data plane; on a real loop unless a scheduler was given."""
        if self._scheduler is None:
            loop = asyncio.get_running_loop()
            self._scheduler = LoopScheduler(loop)
            self._live = True
        self.dp = DataPlane(
            self.tun,
            clock=self._scheduler.now,
            on_acquire=self._on_acquire,
            on_sa_event=self._on_sa_event,
        )
        self.endpoint = self._make_endpoint(self._on_ike, self.dp.receive_esp)
        # Decrypted packets reach the TUN at the end of each socket read, in its wake-up.
        self.endpoint.on_batch_end = self.dp.end_receive_batch
        self.dp.attach(self.endpoint)
        if self._make_raw is not None:
            self.raw = self._make_raw(self.dp.receive_raw_esp)
            self.raw.on_batch_end = self.dp.end_receive_batch
            self.dp.attach(raw=self.raw)
        if self._live:
            self.endpoint.start()
            if self.raw is not None:
                self.raw.start()
            self.dp.start()
            self.keepalive = KeepaliveScheduler(self.endpoint)
            self.keepalive.start()
        if self.routing is not None:
            await self.routing.link_up(self.tun.name)

    async def stop(self) -> None:
        """Delete every IKE SA (best effort, one send each), stop timers, close sockets.

        The routes and rules of the plan, and the kill switch, stay (fail closed): with
        the TUN device gone the tunnel table's ``unreachable`` fallbacks answer for the
        protected prefixes until the next agent routes them again; only a decommission
        (``vpnfleet-agent cleanup``) removes them."""
        self.stopped = True
        for session in list(self.sessions.values()):
            session.cancel_timers()
            for sa in self._sas_of(session):
                self._delete_sa(sa)
        for _, handle in self._timers.values():
            handle.cancel()
        self._timers.clear()
        if self.dp is not None:
            self.dp.stop()
        if self.keepalive is not None:
            self.keepalive.stop()
        if self.endpoint is not None:
            self.endpoint.close()
        if self.raw is not None:
            self.raw.close()
        for peer, kind in list(self._waits):
            self._settle(peer, kind, "the agent stopped before the SA was replaced", ok=False)
        for peer in list(self._liveness_waits):
            self._answer_liveness(peer, "the agent stopped")

    # -- PlanSink ------------------------------------------------------------------------

    async def put_in_force(self, plan: AgentPlan) -> None:
        """Apply ``plan`` as a difference: untouched peers keep their SAs, changed peers
        are re-established make-before-break, removed peers are deleted."""
        if self.dp is None:
            raise RuntimeError("engine not started")
        first = self.plan is None
        # New anchors or a new CRL change whom a certificate peer accepts: each such peer
        # takes the new configuration in place, for its next authentication.
        anchors_changed = self.plan is not None and (
            self.plan.trust_anchors != plan.trust_anchors or self.plan.revoked != plan.revoked
        )
        self.plan = plan
        self.dp.update_spd(translate.spd_entries(plan))
        self._keepalive_interval(plan)
        if self.routes is not None:
            # The kill switch first: nothing the new plan protects may leave in the clear
            # while its routes are being put in place.
            found = await self.kill_switch.apply(plan) if self.kill_switch is not None else []
            found += await self.routes.apply(plan)
            if self.forwarding is not None:
                found += await self.forwarding.apply(plan)
            self.board.replace(PUT_IN_FORCE_KINDS, found, self._wall())
        new_peers = {p.name: p for p in plan.peers}
        for name in list(self.sessions):
            if name not in new_peers:
                self._remove_peer(name)
        for peer in plan.peers:
            session = self.sessions.get(peer.name)
            if session is not None and self._local_for(plan, peer) == session.local:
                if session.peer == peer and not (
                    anchors_changed and peer.auth.method is AuthMethod.PUBKEY
                ):
                    continue  # untouched: its SAs are not disturbed
                if same_tunnel(session.peer, peer) and self._update_in_place(plan, peer, session):
                    continue  # only our own timers changed: nothing to re-negotiate
            self._add_or_change_peer(plan, peer, session, first)
        self._rebuild_address_map()
        self._answer_early()
        # IKE unsendable to an address no peer has any more is no one's problem now.
        sending = [p for p in self.board.of(ProblemKind.SOCKET) if self._has_peer_at(p.subject)]
        self.board.replace({ProblemKind.SOCKET}, sending, self._wall())

    def ike_sas(self) -> Sequence[IkeSaReport]:
        stats = {}
        if self.dp is not None:
            for s in self.dp.stats().sas:
                stats[(s.spi, s.direction)] = s
        reports = []
        mono, wall = self._now_or_zero(), self._wall()
        for session in self.sessions.values():
            sa = session.ike
            if sa is not None and sa.last_heard is not None:
                session.last_liveness_at = wall - (mono - sa.last_heard)
            reports.append(session.report(stats))
        return reports

    def peers_up(self) -> int:
        return sum(1 for s in self.sessions.values() if s.is_up)

    def ike_counters(self) -> dict[str, int]:
        """The whole-agent IKE counters by outcome: "malformed", "no_peer" …; of the
        requests that matched no peer when they came, "early_answered" were answered once
        a plan had their peer and "early_dropped" were let go."""
        counters = {name.removeprefix("ike_"): n for name, n in self.counters.items()}
        counters["early_dropped"] = self.early.dropped
        return counters

    def admission(self) -> AdmissionReport:
        table = self.half_open
        table.expire(self._now_or_zero())
        return AdmissionReport(
            half_open=len(table),
            preauth_fragment_bytes=table.held,
            cookies_sent=self.counters["cookies_sent"],
            limits=tuple(
                AdmissionLimitReport(limit.value, table.limits.value(limit), table.refused[limit])
                for limit in Limit
            ),
        )

    def unmatched_ike_sa_init(self) -> UnmatchedReport:
        return self.unmatched.report(self.counters["ike_no_peer"])

    def problems(self) -> tuple[Problem, ...]:
        """The data plane's problems, then each peer that is not up after a failure."""
        peers = (s.problem for s in self.sessions.values())
        return self.board.current() + tuple(p for p in peers if p is not None)

    def drops(self) -> tuple[DropCount, ...]:
        """Input dropped before an SA's payload, each counted in one place: the SAD, the
        sockets' demultiplexing, the kernel at the sockets (receive buffer full), and
        established IKE SAs (forged or replayed messages)."""
        out: list[DropCount] = []
        if self.dp is not None:
            for reason, n in sorted(self.dp.stats().inbound_drops.items()):
                out.append(DropCount(DropLayer.ESP, DropReason(reason), n))
        sockets: list[tuple[DropLayer, UdpCounters | RawEspCounters, int | None]] = []
        if self.endpoint is not None:
            endpoint = self.endpoint
            sockets.append((DropLayer.UDP, endpoint.counters, endpoint.kernel_drops()))
        if self.raw is not None:
            sockets.append((DropLayer.RAW_ESP, self.raw.counters, self.raw.kernel_drops()))
        for layer, counters, overflowed in sockets:
            if overflowed is not None:
                out.append(DropCount(layer, DropReason.RECEIVE_BUFFER_FULL, overflowed))
            out.append(DropCount(layer, DropReason.SHORT, counters.rx_short))
            out.append(DropCount(layer, DropReason.MALFORMED, counters.rx_malformed))
        rejected = self._closed_sa_drops + sum(sa.dropped for sa in self._owner)
        out.append(DropCount(DropLayer.IKE_SA, DropReason.REJECTED, rejected))
        return tuple(out)

    # -- peers ---------------------------------------------------------------------------

    def _sas_of(self, session: PeerSession) -> list[IkeSa]:
        return [sa for sa, owner in self._owner.items() if owner is session]

    def _initiate(self, session: PeerSession) -> None:
        if session.config is None:
            return
        session.retry_timer = None
        if not session.peer.remote_addresses:
            # A peer with a dynamic address and no SA to learn one from: it must start.
            current = session.ike
            if current is None or current.peer is None:
                session.note_error("no address to initiate to (dynamic address)", self._wall())
                return
            remote, port = current.peer[0], current.peer[1]
        else:
            remote = str(session.peer.remote_addresses[0])
            port = session.peer.remote_port or IKE_PORT
        sa = IkeSa(
            session.config,
            Role.INITIATOR,
            (session.local, self._ike_port()) if session.local else None,
        )
        # Section 2.4: with no other IKE SA up with this peer, tell it so; it then drops
        # whatever it still holds with us (we restarted, or lost ours).
        sa.initial_contact = not any(
            s.state is IkeSaState.ESTABLISHED for s in self._sas_of(session)
        )
        if session.ike is not None and not session.ike.is_closed:
            if session.ike not in session.replacing:
                session.replacing.append(session.ike)
        else:
            session.state = PeerState.CONNECTING
        session.ike = sa
        self._adopt(sa, session)
        sa.initiate((str(remote), port), self.now())
        self._service(sa)

    def _initial_contact(self, session: PeerSession) -> None:
        session.retry_timer = None
        if self.sessions.get(session.name) is not session or self.stopped or session.held_down:
            return
        if any(not sa.is_closed for sa in self._sas_of(session)):
            # The peer's own set-up is under way (we answered its IKE_SA_INIT): it does
            # what initial contact would, and a second IKE SA would only be a duplicate.
            return
        if session.ike is None or session.ike.is_closed:
            self._publish("initial_contact", session.name, "no IKE SA since start: initiating")
            self._initiate(session)

    def _adopt(self, sa: IkeSa, session: PeerSession | None) -> None:
        self._owner[sa] = session
        self._created.setdefault(sa, self.now())
        self._by_spi[sa.local_spi] = sa

    def _schedule_retry(self, session: PeerSession, reason: str) -> None:
        if session.held_down:
            session.state = PeerState.IDLE
            return
        session.attempts += 1
        session.note_error(reason, self._wall())
        if self.sessions.get(session.name) is not session or self.stopped:
            return
        if not (session.always_on and session.initiates):
            session.state = PeerState.IDLE
            return
        delay = session.backoff() * self._rng.uniform(0.9, 1.1)
        session.state = PeerState.RETRY_WAIT
        if session.retry_timer is not None:
            session.retry_timer.cancel()
        session.retry_timer = self.scheduler.call_at(
            self.now() + delay, lambda: self._retry(session)
        )
        self._publish("peer_retry", session.name, f"in {delay:.1f} s after: {reason}")

    def _retry(self, session: PeerSession) -> None:
        session.retry_timer = None
        if self.sessions.get(session.name) is not session or self.stopped or session.held_down:
            return
        if not session.is_up or session.replacement_pending:
            self._initiate(session)

    # -- the operator's initiate and terminate (PeerControl) ------------------------------

    def _session_named(self, name: str) -> PeerSession:
        session = self.sessions.get(name)
        if session is None:
            known = ", ".join(sorted(self.sessions)) or "none"
            raise PeerControlError(f"no peer {name!r} in the plan in force (peers: {known})")
        return session

    def initiate_peer(self, name: str) -> str:
        session = self._session_named(name)
        if self.stopped:
            raise PeerControlError("the engine is stopping")
        if session.config is None:
            raise PeerControlError(f"peer {name} cannot be configured: {session.last_error}")
        session.held_down = False
        current = session.ike
        if current is not None and not current.is_closed:
            if session.is_up:
                return f"{name}: IKE SA already established"
            return f"{name}: IKE SA already being set up ({current.state.value})"
        if session.retry_timer is not None:
            session.retry_timer.cancel()
        session.attempts = 0
        self._publish("initiate", name, "by the operator")
        self._initiate(session)
        return f"{name}: initiating"

    def terminate_peer(self, name: str) -> str:
        session = self._session_named(name)
        session.held_down = True
        if session.retry_timer is not None:
            session.retry_timer.cancel()
            session.retry_timer = None
        live = [sa for sa in self._sas_of(session) if not sa.is_closed]
        if not live:
            session.state = PeerState.IDLE
            return f"{name}: no IKE SA; not started again until initiate"
        self._publish("terminate", name, f"by the operator: deleting {len(live)} IKE SA(s)")
        for sa in live:
            self._delete_sa(sa)
        return f"{name}: deleting {len(live)} IKE SA(s); not started again until initiate"

    # -- driving IKE SAs ------------------------------------------------------------------

    def _service(self, sa: IkeSa) -> None:
        """After any input: send what the SA queued, handle its events, re-arm its timer."""
        now = self.now()
        endpoint = self.endpoint
        for data, addr in sa.datagrams_to_send(now):
            if endpoint is None:
                continue
            where = f"{addr[0]}:{addr[1]}"
            try:
                endpoint.send_ike(data, addr, self._via_natt(sa, addr))
            except OSError as exc:  # no port 500 socket, a closed endpoint, no route
                log.info("cannot send IKE to %s: %s", where, exc)
                message = f"cannot send IKE: {exc}"
                self.board.set(Problem(ProblemKind.SOCKET, where, message), self._wall())
            else:
                self.board.clear(ProblemKind.SOCKET, where)
        while (event := sa.next_event()) is not None:
            try:
                self._handle_event(sa, event)
            except Exception:
                log.exception("handling %s failed", type(event).__name__)
        self._arm(sa)

    def _via_natt(self, sa: IkeSa, addr: Address) -> bool:
        if addr[1] == NATT_PORT or self._last_port.get(sa) == self._natt_port():
            return True
        return sa.is_initiator and sa.encap

    def _arm(self, sa: IkeSa) -> None:
        current = self._timers.get(sa)
        if sa.is_closed:
            if current is not None:
                current[1].cancel()
            self._forget(sa)
            return
        deadline = sa.get_timer()
        if current is not None:
            if current[0] == deadline:
                return
            current[1].cancel()
            del self._timers[sa]
        if deadline is not None and not self.stopped:
            handle = self.scheduler.call_at(deadline, lambda: self._on_timer(sa))
            self._timers[sa] = (deadline, handle)

    def _on_timer(self, sa: IkeSa) -> None:
        self._timers.pop(sa, None)
        sa.handle_timer(self.now())
        self._service(sa)

    def _forget(self, sa: IkeSa) -> None:
        if self._owner.pop(sa, _NOT_OWNED) is not _NOT_OWNED:
            self._closed_sa_drops += sa.dropped
        self._timers.pop(sa, None)
        self._last_port.pop(sa, None)
        self._created.pop(sa, None)
        if self._by_spi.get(sa.local_spi) is sa:
            del self._by_spi[sa.local_spi]

    def _delete_sa(self, sa: IkeSa) -> None:
        now = self.now()
        try:
            if sa.state in (IkeSaState.ESTABLISHED, IkeSaState.REKEYED):
                sa.delete(now)
            elif not sa.is_closed and sa.state is not IkeSaState.DELETING:
                sa.fail("deleted by us before it was established")
        except LocalError as exc:
            log.debug("delete %r: %s", sa, exc)
        self._service(sa)

    # -- small things ----------------------------------------------------------------------

    def _keepalive_interval(self, plan: AgentPlan) -> None:
        current = self.keepalive
        if current is None or self.endpoint is None:
            return
        wanted = [p.nat.keepalive_seconds for p in plan.peers if p.nat.keepalive_seconds > 0]
        interval = float(min(wanted, default=int(current.interval)))
        if interval == current.interval:
            return
        current.stop()
        self.keepalive = KeepaliveScheduler(self.endpoint, interval)
        for addr in current.peers:
            self.keepalive.add_peer(addr)
        self.keepalive.start()

    def _nat_keepalive(self, addr: Address, on: bool) -> None:
        if self.keepalive is None:
            return
        if on:
            self.keepalive.add_peer(addr)
        else:
            self.keepalive.remove_peer(addr)

    def _local_for(self, plan: AgentPlan, peer: Peer) -> str | None:
        """Our outer address towards ``peer``: the one the kernel sends from, when known.
        NAT detection (RFC 7296 section 2.23) must hash the address the socket really
        uses; behind a NAT the plan's address is the public one and would hide it."""
        if self._source_address is not None and peer.remote_addresses:
            found = self._source_address(str(peer.remote_addresses[0]))
            if found:
                return found
        return translate.local_address(plan, peer)

    def _owner_of(self, sa: IkeSa) -> PeerSession | None:
        return self._owner.get(sa)

    def _rebuild_address_map(self) -> None:
        self._by_address = {}
        for session in self.sessions.values():
            for address in session.peer.remote_addresses:
                self._by_address.setdefault(str(address), []).append(session.name)
        # A responder-side peer first: the address's own initiations are for it.
        for names in self._by_address.values():
            names.sort(key=lambda n: self.sessions[n].peer.initiator)

    def _has_peer_at(self, where: str) -> bool:
        """Whether ``where`` ("host:port", as SOCKET problems name it) is a plan peer's
        address, or the address an IKE SA of a peer learnt."""
        host = where.rpartition(":")[0]
        if host in self._by_address:
            return True
        return any(sa.peer is not None and sa.peer[0] == host for sa in self._owner)

    def _ike_port(self) -> int:
        port = getattr(self.endpoint, "ike_port", None)
        return int(port) if port else IKE_PORT

    def _natt_port(self) -> int:
        port = getattr(self.endpoint, "natt_port", None)
        return int(port) if port else NATT_PORT

    def _now_or_zero(self) -> float:
        return self._scheduler.now() if self._scheduler is not None else 0.0

    def _publish(self, kind: str, peer: str, detail: str) -> None:
        log.info("%s %s: %s", peer or "-", kind, detail)
        self.events.publish(SaEventReport(kind, peer, detail, self._wall()))
