"""The agent engine: a plan in, IKE and child SAs out (the only owner of SA lifecycles).

It implements :class:`~vpnfleet.agent.sink.PlanSink`, and does two things itself:

- it routes what arrives. One UDP endpoint (500 and 4500) serves every IKE SA: incoming
  IKE is routed by our SPI (RFC 7296 section 2.6 lets each side pick its own) to that
  SA's :class:`~.sa_driver.SaDriver`, and a request with a zero responder SPI goes
  through the responder gate of the plan peer its source address belongs to. A request
  no peer's address claims goes to the peer with no fixed address (plan
  ``dynamic_address``), whose IKE_AUTH then checks the identity, or from any other
  address to the one responder-side peer the plan has behind a NAT; what matches no
  peer is counted, with its latest sources, in the agent's status, and kept a few
  seconds (:class:`~.incoming.EarlyRequests`) for a plan that has its peer. IKEv1
  (version byte 0x10, RFC 2408 section 3.1) has no I flag: a datagram goes to the SA
  whose cookie is ours, and a first Main or Aggressive mode message (zero responder
  cookie) to the IKEv1 gate (:mod:`.v1_gate`) of its peer, under the same half-open
  caps; a request of the other version than the plan's for that peer is counted
  (``wrong_version``) and dropped. The data plane's acquires and SA events go to the
  peer they name.
- it puts plans in force as a difference: a :class:`~.peer_driver.PeerDriver` per plan
  peer, updated in place when the change is this end's own business
  (:func:`same_tunnel`), replaced by a new driver that takes over the old SAs
  (make-before-break) for any other change, removed with its SAs when the plan drops
  the peer.

Everything else (IKE events, child SAs in the data plane, rekeys, retries) is the
drivers' business. The engine owns what they share: the endpoint, the data plane, the
routes into the TUN (:class:`~.plan_routes.PlanRoutes`), the kill switch, the key log,
the event hub and the problem board. Time comes from a :class:`~.clock.Scheduler`.
Peers' faults in what arrives are counted and dropped; our own failures are logged with
their traceback and counted as ``internal_error``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import time
from collections.abc import Callable, Sequence
from typing import Protocol

from ..esp.sa import RekeyRequested, SaExpired
from ..esp.sad import SadEvent
from ..ike.admission import GateRefusal, HalfOpenTable, Limit, LogLimiter, ResponderLimits
from ..ike.errors import ProtocolError
from ..ike.events import IkeEvent
from ..ike.gate import GateDecision, IkeResponderGate
from ..ike.ike_sa import IkeSa
from ..ike.message import parse_message
from ..ike.v1.config import IkeV1Config
from ..ike.v1.constants import ISAKMP_MAJOR_VERSION, ExchangeType
from ..ike.v1.message import IsakmpHeader
from ..ike.v1.sa import IkeV1Sa
from ..io.dataplane import DataPlane, RawAhSender, RawEspSender
from ..io.dataplane_model import Acquire
from ..io.keepalive import KeepaliveScheduler
from ..io.rawah import RawAhCounters, RawAhHandler
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
from ..plan import AgentPlan, AuthMethod, IkeVersion, Peer
from ..sink import (
    PUT_IN_FORCE_KINDS,
    AdmissionLimitReport,
    AdmissionReport,
    DropCount,
    DropLayer,
    DropReason,
    EventHub,
    IkeSaReport,
    LivenessOutcome,
    PeerControlError,
    PeerFailure,
    PlanReport,
    Problem,
    ProblemBoard,
    ProblemKind,
    RekeyOutcome,
    RekeyTarget,
    SaEventReport,
    UnmatchedReport,
)
from . import translate
from .clock import LoopScheduler, Scheduler
from .core import IkeCore, established, version_of
from .forwarding import HostForwarding
from .incoming import EARLY_MAX_AGE, EarlyRequest, EarlyRequests, UnmatchedSources
from .keylog import KeyLog
from .kill_switch import KillSwitch
from .peer_driver import PeerDriver
from .peer_state import SaKind
from .plan_routes import TUNNEL_TABLE, PlanRoutes, RouteTable
from .plane import ChildSaPlane
from .rekey import LIVENESS_ANSWERED, PendingRekey
from .sa_driver import SaDriver, SaOwner
from .v1_gate import V1ResponderGate

log = logging.getLogger(__name__)

NOT_IN_PLAN = "peer is not up (not in the plan in force)"
"""Why a Rekey or liveness check of a name the plan does not have cannot start."""

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


class RawAhChannel(RawAhSender, Protocol):
    """A raw IP protocol 51 socket (``rawah.RawAhSocket``) as the engine uses it."""

    counters: RawAhCounters
    on_batch_end: BatchEndHandler | None

    def start(self, loop: asyncio.AbstractEventLoop | None = None) -> None: ...

    def kernel_drops(self) -> int | None: ...

    def close(self) -> None: ...


RawAhFactory = Callable[[RawAhHandler], RawAhChannel]
"""Makes the raw AH socket given the data plane's receive callback."""

__all__ = ["Engine", "RouteTable", "same_tunnel"]


class Engine:
    """Routes IKE datagrams to the driver of their IKE SA or to a peer's responder gate,
    puts plans in force as a difference over one :class:`~.peer_driver.PeerDriver` per
    plan peer, and owns what the drivers share: the endpoint, the data plane, routes,
    the kill switch, the key log, the event hub and the problem board."""

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
        make_raw_ah: RawAhFactory | None = None,
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
        ``make_raw_ah``: the raw AH socket (IP protocol 51) AH child SAs travel through;
        without it an AH child installs but its packets are refused (counted)
        and none are received.
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
            forwarding.report = lambda message: self.publish("forwarding", "", message)
        self.underlay_mtu = underlay_mtu
        self._make_endpoint = make_endpoint
        self._make_raw = make_raw
        self.raw: RawEspChannel | None = None
        self._make_raw_ah = make_raw_ah
        self.raw_ah: RawAhChannel | None = None
        self._scheduler = scheduler
        self.rng = rng or random.Random()
        self._wall_clock = wall_clock
        self._source_address = source_address
        self.plan: AgentPlan | None = None
        self.peers: dict[str, PeerDriver] = {}
        """The driver of each peer of the plan in force, by name."""
        self._by_spi: dict[bytes, SaDriver] = {}
        """The driver of every IKE SA not yet closed, by our SPI (RFC 7296 section 2.6)."""
        self.half_open = HalfOpenTable(limits)
        """Every gate's half-open IKE SAs and pre-auth fragment bytes, under one set of caps."""
        self._by_address: dict[str, list[str]] = {}
        self.counters: dict[str, int] = {
            "ike_malformed": 0,
            "ike_unknown_spi": 0,
            "ike_no_peer": 0,
            "ike_early_answered": 0,
            "ike_refused": 0,
            "ike_internal_error": 0,
            "ike_wrong_version": 0,
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

    @property
    def plane(self) -> ChildSaPlane | None:
        return self.dp

    @property
    def raw_esp(self) -> bool:
        return self.raw is not None

    def now(self) -> float:
        return self.scheduler.now()

    def wall(self) -> float:
        return self._wall_clock()

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
        # attach() has each socket end its reads with the data plane's end_receive_batch:
        # decrypted packets reach the TUN in the read's own wake-up.
        self.endpoint = self._make_endpoint(self._on_ike, self.dp.receive_esp)
        self.dp.attach(self.endpoint)
        if self._make_raw is not None:
            self.raw = self._make_raw(self.dp.receive_raw_esp)
            self.dp.attach(raw=self.raw)
        if self._make_raw_ah is not None:
            self.raw_ah = self._make_raw_ah(self.dp.receive_ah)
            self.dp.attach(raw_ah=self.raw_ah)
        if self._live:
            self.endpoint.start()
            if self.raw is not None:
                self.raw.start()
            if self.raw_ah is not None:
                self.raw_ah.start()
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
        for peer in list(self.peers.values()):
            peer.stop()
        for driver in list(self._by_spi.values()):
            driver.cancel_timer()
        if self.dp is not None:
            self.dp.stop()
        if self.keepalive is not None:
            self.keepalive.stop()
        if self.endpoint is not None:
            self.endpoint.close()
        if self.raw is not None:
            self.raw.close()
        if self.raw_ah is not None:
            self.raw_ah.close()
        for peer in self.peers.values():
            for kind in SaKind:
                peer.settle(kind, "the agent stopped before the SA was replaced", ok=False)
            peer.answer_liveness("the agent stopped")

    # -- PlanSink ------------------------------------------------------------------------

    async def put_in_force(self, plan: AgentPlan) -> PlanReport:
        """Apply ``plan`` as a difference: untouched peers keep their SAs, changed peers
        are re-established make-before-break, removed peers are deleted. Returns what
        could not be done: the data plane's problems found on the way (routes, rules,
        the kill switch, forwarding) and the peers that cannot be configured."""
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
        found: list[Problem] = []
        if self.routes is not None:
            # The kill switch first: nothing the new plan protects may leave in the clear
            # while its routes are being put in place.
            found = await self.kill_switch.apply(plan) if self.kill_switch is not None else []
            found += await self.routes.apply(plan)
            if self.forwarding is not None:
                found += await self.forwarding.apply(plan)
            self.board.replace(PUT_IN_FORCE_KINDS, found, self.wall())
        failed: list[PeerFailure] = []
        new_peers = {p.name: p for p in plan.peers}
        for name in list(self.peers):
            if name not in new_peers:
                self._remove_peer(name)
        for peer in plan.peers:
            driver = self.peers.get(peer.name)
            if driver is not None and self._local_for(plan, peer) == driver.local:
                if driver.peer == peer and not (
                    anchors_changed and peer.auth.method is AuthMethod.PUBKEY
                ):
                    continue  # untouched: its SAs are not disturbed
                if same_tunnel(driver.peer, peer) and self._update_in_place(plan, peer, driver):
                    continue  # only our own timers changed: nothing to re-negotiate
            failure = self._add_or_change_peer(plan, peer, driver, first)
            if failure is not None:
                failed.append(failure)
        self._rebuild_address_map()
        self._answer_early()
        # IKE unsendable to an address no peer has any more is no one's problem now.
        sending = [p for p in self.board.of(ProblemKind.SOCKET) if self._has_peer_at(p.subject)]
        self.board.replace({ProblemKind.SOCKET}, sending, self.wall())
        return PlanReport(tuple(found), tuple(failed))

    def ike_sas(self) -> Sequence[IkeSaReport]:
        stats = {}
        if self.dp is not None:
            for s in self.dp.stats().sas:
                stats[(s.spi, s.direction)] = s
        return [peer.report(stats) for peer in self.peers.values()]

    def peers_up(self) -> int:
        return sum(1 for p in self.peers.values() if p.is_up)

    def ike_counters(self) -> dict[str, int]:
        """The whole-agent IKE counters by outcome: "malformed", "no_peer" …; of the
        requests that matched no peer when they came, "early_answered" were answered once
        a plan had their peer and "early_dropped" were let go; "internal_error" counts
        input our own code failed on (logged with its traceback)."""
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
        peers = (p.problem for p in self.peers.values())
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
        rejected = self._closed_sa_drops + sum(d.sa.dropped for d in self._by_spi.values())
        out.append(DropCount(DropLayer.IKE_SA, DropReason.REJECTED, rejected))
        return tuple(out)

    # -- the Rekey and CheckLiveness calls -------------------------------------------------

    async def rekey(self, peers: Sequence[str], target: RekeyTarget) -> list[RekeyOutcome]:
        outcomes: list[RekeyOutcome] = []
        for name in peers:
            pending = self.start_rekey(name, target)
            outcomes.append(await pending.outcome())
        return outcomes

    def start_rekey(self, name: str, target: RekeyTarget) -> PendingRekey:
        """Start rekeying ``name``'s SAs; the result settles as the SAs do (see
        :class:`~.rekey.PendingRekey`), at the latest after REKEY_WAIT seconds."""
        peer = self.peers.get(name)
        if peer is None:
            return PendingRekey.refused(name, NOT_IN_PLAN)
        return peer.start_rekey(target)

    async def check_liveness(self, peers: Sequence[str], wait: float) -> list[LivenessOutcome]:
        """Send an empty INFORMATIONAL request (RFC 7296 section 1.4) on the IKE SA in
        force with each of ``peers`` now, and report which answered within ``wait``
        seconds. A check already in flight (the periodic one) is waited for instead."""
        loop = asyncio.get_running_loop()
        asked: dict[str, asyncio.Future[str]] = {}
        answered_at: dict[str, float] = {}
        refused: dict[str, str] = {}
        started = self.now()
        for name in peers:
            peer = self.peers.get(name)
            if peer is None:
                refused[name] = NOT_IN_PLAN
                continue
            fut: asyncio.Future[str] = loop.create_future()
            fut.add_done_callback(self._noting(answered_at, name))
            refusal = peer.check_liveness(fut)
            if refusal is not None:
                refused[name] = refusal
                fut.cancel()
                continue
            asked[name] = fut
        if asked:
            await asyncio.wait(asked.values(), timeout=wait)
            await asyncio.sleep(0)  # let the done callbacks note the time
        out = []
        for name in peers:
            waiter = asked.get(name)
            if waiter is None:
                out.append(LivenessOutcome(name, False, refused[name]))
            elif not waiter.done():
                waiter.cancel()
                out.append(LivenessOutcome(name, False, f"no answer within {wait:g} s"))
            elif waiter.cancelled() or waiter.result() != LIVENESS_ANSWERED:
                detail = "engine stopped" if waiter.cancelled() else waiter.result()
                out.append(LivenessOutcome(name, False, detail))
            else:
                rtt = max(0.0, answered_at.get(name, started) - started)
                out.append(LivenessOutcome(name, True, round_trip=rtt))
        return out

    def _noting(self, times: dict[str, float], name: str) -> Callable[[asyncio.Future[str]], None]:
        """A done callback that notes when ``name``'s waiter was resolved."""

        def note(_: asyncio.Future[str]) -> None:
            times.setdefault(name, self.now())

        return note

    # -- the operator's initiate and terminate (PeerControl) ------------------------------

    def _peer_named(self, name: str) -> PeerDriver:
        peer = self.peers.get(name)
        if peer is None:
            known = ", ".join(sorted(self.peers)) or "none"
            raise PeerControlError(f"no peer {name!r} in the plan in force (peers: {known})")
        return peer

    def initiate_peer(self, name: str) -> str:
        peer = self._peer_named(name)
        if self.stopped:
            raise PeerControlError("the engine is stopping")
        if peer.config is None:
            raise PeerControlError(f"peer {name} cannot be configured: {peer.last_error}")
        return peer.initiate_by_operator()

    def terminate_peer(self, name: str) -> str:
        return self._peer_named(name).terminate_by_operator()

    # -- peers come, change and go -----------------------------------------------------------

    def _add_or_change_peer(
        self, plan: AgentPlan, peer: Peer, old: PeerDriver | None, first: bool = False
    ) -> PeerFailure | None:
        """A peer new in the plan, or changed beyond :func:`same_tunnel`: a new driver
        (which takes over a changed peer's SAs). A peer that cannot be configured gets a
        driver that only reports why; that is returned as a failure."""
        local = self._local_for(plan, peer)
        try:
            config = translate.peer_config(plan, peer, self.ike_credentials)
        except translate.PeerConfigError as exc:
            log.error("%s", exc)
            if old is not None:
                self._remove_peer(peer.name)
            driver = PeerDriver(peer, None, local, self)
            driver.note_error(str(exc), self.wall())
            self.peers[peer.name] = driver
            self.publish("peer_error", peer.name, str(exc))
            return PeerFailure(peer.name, str(exc))
        driver = PeerDriver(peer, config, local, self)
        where = (local, self.ike_port()) if local else None
        if isinstance(config, IkeV1Config):
            driver.gate = V1ResponderGate(config, local=where, table=self.half_open)
        else:
            driver.gate = IkeResponderGate(config, local=where, table=self.half_open)
        self.peers[peer.name] = driver
        if old is None:
            self.publish("peer_added", peer.name, f"{peer.start_action.name.lower()}")
            driver.start(first)
        else:
            self.publish("peer_changed", peer.name, "re-establishing")
            driver.take_over(old)
        return None

    def _update_in_place(self, plan: AgentPlan, peer: Peer, driver: PeerDriver) -> bool:
        """Put a peer whose change is local (liveness checks, lifetimes, keepalives, the
        CAs it accepts, the plan's trust anchors) in force without touching its SAs.
        False when the new configuration cannot be made (the caller replaces the peer)."""
        try:
            config = translate.peer_config(plan, peer, self.ike_credentials)
        except translate.PeerConfigError:
            return False
        driver.update_in_place(peer, config)
        self.publish("peer_changed", peer.name, "updated in place (no new SA needed)")
        return True

    def _remove_peer(self, name: str) -> None:
        self.peers.pop(name).remove()
        self.publish("peer_removed", name, "")

    CREDENTIAL_HANDOVER_DELAY = 2.0
    """Seconds the plan's responder gives its peer to re-establish a certificate tunnel
    after our credentials changed, before starting the new IKE SA itself."""

    def replace_ike_credentials(self, credentials: translate.IkeCredentials) -> int:
        """Use ``credentials`` from now on and re-establish every certificate peer with
        them, make-before-break, as a changed peer (its SAs carry traffic until the new
        IKE SA has its child). PSK peers are not touched. Returns the number of
        certificate peers handed over.

        Where the plan makes the other side the initiator, the SA in force stays
        authenticated with our old certificate until a new one is made. The peer may be
        changing its credentials at the same moment and re-establish anyway (with our
        new certificate: the responder side already answers with it); both starting at
        once would cross (RFC 7296 section 2.8.1), so we start ourselves only if no new
        IKE SA came within :attr:`CREDENTIAL_HANDOVER_DELAY`."""
        self.ike_credentials = credentials
        plan = self.plan
        if plan is None or self.stopped:
            return 0
        count = 0
        changed_at = self.now()
        for peer in plan.peers:
            if peer.auth.method is not AuthMethod.PUBKEY:
                continue
            self._add_or_change_peer(plan, peer, self.peers.get(peer.name))
            count += 1
            driver = self.peers[peer.name]
            current = driver.ike
            if (
                driver.config is not None
                and not driver.initiates
                and current is not None
                and established(current)
            ):
                delay = self.CREDENTIAL_HANDOVER_DELAY * self.rng.uniform(0.9, 1.1)
                driver.reauthenticate_after(delay, changed_at)
        self._rebuild_address_map()
        return count

    # -- incoming datagrams -----------------------------------------------------------

    def _on_ike(self, data: bytes, addr: Address, local_port: int) -> None:
        try:
            self._dispatch_ike(data, addr, local_port)
        except ProtocolError:
            # The peer's fault (malformed, refused input): counted and dropped quietly.
            self.counters["ike_malformed"] += 1
        except Exception:  # our own bug: nothing a peer sends may stop the engine
            self._internal_error("IKE datagram from %s:%d", *addr)
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

    def _internal_error(self, what: str, *args: object) -> None:
        """Our own code failed on some input: logged with its traceback, counted apart
        from the peers' faults (``ike_counters()["internal_error"]``)."""
        self.counters["ike_internal_error"] += 1
        log.exception("internal error handling " + what, *args)

    def _dispatch_ike(self, data: bytes, addr: Address, local_port: int) -> None:
        if len(data) < 28:
            self.counters["ike_malformed"] += 1
            return
        spi_i, spi_r, version, exchange, flags = data[0:8], data[8:16], data[17], data[18], data[19]
        if version >> 4 == ISAKMP_MAJOR_VERSION:
            # IKEv1 (RFC 2408 section 3.1) has no I flag: the cookie that is ours routes
            # it; a zero responder cookie is a new phase 1 (Main or Aggressive mode).
            if spi_r == bytes(8):
                if exchange in (ExchangeType.IDENTITY_PROTECTION, ExchangeType.AGGRESSIVE):
                    self._new_responder(data, addr, local_port)
                else:
                    self.counters["ike_unknown_spi"] += 1
                return
            driver = self._by_spi.get(spi_r) or self._by_spi.get(spi_i)
            if driver is None or version_of(driver.sa) is not IkeVersion.V1:
                self.counters["ike_unknown_spi"] += 1
                return
            driver.receive(data, addr, local_port)
            return
        from_initiator = bool(flags & 0x08)  # RFC 7296 section 3.1: the I flag
        ours = spi_r if from_initiator else spi_i
        if from_initiator and ours == bytes(8):
            self._new_responder(data, addr, local_port)
            return
        driver = self._by_spi.get(ours)
        if driver is not None and version_of(driver.sa) is not IkeVersion.V2:
            driver = None  # an IKEv2 message naming an IKEv1 SA's cookie
        if driver is None:
            self.counters["ike_unknown_spi"] += 1
            return
        driver.receive(data, addr, local_port)

    def _responder_names(self, addr: Address) -> list[str]:
        """The plan peers an IKE_SA_INIT from ``addr`` may be for, the likeliest first."""
        names = self._by_address.get(addr[0], [])
        if not names:
            # No peer has this address: the peer with none (it has a dynamic address, or
            # sits behind a NAT not declared) is the one it can be; IKE_AUTH then checks
            # its identity (remote_id).
            names = [p.name for p in self.peers.values() if p.peer.dynamic_address]
        if not names:
            # Behind a NAT the source is not a plan address: the only responder-side peer
            # the plan has behind a NAT, if there is exactly one, is the one it can be.
            # Any other peer is reached at its own addresses: a stranger's IKE_SA_INIT
            # must not become the business of a peer that does not move.
            names = [
                p.name
                for p in self.peers.values()
                if not p.peer.initiator and p.peer.nat.remote_behind_nat
            ]
            if len(names) != 1:
                return []
        return names

    def _new_responder(self, data: bytes, addr: Address, local_port: int) -> None:
        """An IKE_SA_INIT request (zero responder SPI), or an IKEv1 phase 1 first message
        (zero responder cookie): through the responder gate of the plan peer its source
        belongs to (RFC 7296 section 2.6, cookies under load), when the plan reaches
        that peer with the same IKE version; else counted (``wrong_version``) and
        dropped."""
        v1 = data[17] >> 4 == ISAKMP_MAJOR_VERSION
        try:
            if v1:
                IsakmpHeader.parse(data)
            else:
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
        peer = self.peers[names[0]]
        gate = peer.gate
        if gate is None:
            self.counters["ike_no_peer"] += 1
            return
        decision: GateDecision[IkeSa] | GateDecision[IkeV1Sa]
        if (isinstance(gate, V1ResponderGate) and v1) or (
            isinstance(gate, IkeResponderGate) and not v1
        ):
            decision = gate.receive_datagram(data, addr, self.now(), self.wall())
        else:
            self.counters["ike_wrong_version"] += 1
            left_out = self.untrusted_log.admit("wrong-version", self.now())
            if left_out is not None:
                log.info(
                    "IKEv%d request from %s:%d for peer %s, which the plan reaches with "
                    "IKEv%d: dropped%s",
                    1 if v1 else 2,
                    *addr,
                    peer.name,
                    2 if v1 else 1,
                    f" ({left_out} more since)" if left_out else "",
                )
            return
        if decision.reply is not None and self.endpoint is not None:
            self.endpoint.send_ike(decision.reply, addr, local_port == self._natt_port())
        if decision.refusal is GateRefusal.COOKIE_REQUIRED:
            self.counters["cookies_sent"] += 1
        elif decision.refusal is not None and decision.limit is None:  # the table counts caps
            self.counters["ike_refused"] += 1
        sa = decision.sa
        if sa is None:
            return
        if decision.new:
            driver = peer.adopt_responder(sa)
        else:
            driver = self._by_spi.get(sa.local_spi) or self.driver_of(sa)
        driver.last_port = local_port
        driver.service()

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

    # -- the data plane's calls ----------------------------------------------------------

    def _on_acquire(self, acquire: Acquire) -> None:
        peer = self.peers.get(acquire.policy)
        if peer is not None:
            peer.on_acquire()

    def _on_sa_event(self, policy: str, event: SadEvent) -> None:
        peer = self.peers.get(policy)
        if peer is None:
            return
        if isinstance(event, RekeyRequested):
            peer.on_volume_limit(event.spi)
        elif isinstance(event, SaExpired):
            self.publish("child_expired", policy, f"SPI {event.spi:08x} {event.reason}")

    # -- the SA registry and sockets (SaHost, PeerHost) -------------------------------------

    def adopt(self, sa: IkeCore, owner: SaOwner | None) -> SaDriver:
        driver = SaDriver(sa, owner, self)
        self._by_spi[sa.local_spi] = driver
        return driver

    def driver_of(self, sa: IkeCore) -> SaDriver:
        found = self._by_spi.get(sa.local_spi)
        if found is not None and found.sa is sa:
            return found
        return SaDriver(sa, None, self)  # forgotten already: flushes what is left

    def forget(self, driver: SaDriver) -> None:
        sa = driver.sa
        if self._by_spi.get(sa.local_spi) is driver:
            del self._by_spi[sa.local_spi]
            self._closed_sa_drops += sa.dropped

    def event_failed(self, driver: SaDriver, event: IkeEvent) -> None:
        self._internal_error("%s of %r", type(event).__name__, driver.sa)

    def send_ike(self, driver: SaDriver, data: bytes, addr: Address) -> None:
        endpoint = self.endpoint
        if endpoint is None:
            return
        where = f"{addr[0]}:{addr[1]}"
        try:
            endpoint.send_ike(data, addr, self._via_natt(driver, addr))
        except OSError as exc:  # no port 500 socket, a closed endpoint, no route
            log.info("cannot send IKE to %s: %s", where, exc)
            message = f"cannot send IKE: {exc}"
            self.board.set(Problem(ProblemKind.SOCKET, where, message), self.wall())
        else:
            self.board.clear(ProblemKind.SOCKET, where)

    def _via_natt(self, driver: SaDriver, addr: Address) -> bool:
        if addr[1] == NATT_PORT or driver.last_port == self._natt_port():
            return True
        sa = driver.sa
        return sa.is_initiator and sa.encap

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

    def nat_keepalive(self, addr: Address, on: bool) -> None:
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

    def _rebuild_address_map(self) -> None:
        self._by_address = {}
        for driver in self.peers.values():
            for address in driver.peer.remote_addresses:
                self._by_address.setdefault(str(address), []).append(driver.name)
        # A responder-side peer first: the address's own initiations are for it.
        for names in self._by_address.values():
            names.sort(key=lambda n: self.peers[n].peer.initiator)

    def _has_peer_at(self, where: str) -> bool:
        """Whether ``where`` ("host:port", as SOCKET problems name it) is a plan peer's
        address, or the address an IKE SA of a peer learnt."""
        host = where.rpartition(":")[0]
        if host in self._by_address:
            return True
        return any(d.sa.peer is not None and d.sa.peer[0] == host for d in self._by_spi.values())

    def ike_port(self) -> int:
        port = getattr(self.endpoint, "ike_port", None)
        return int(port) if port else IKE_PORT

    def _natt_port(self) -> int:
        port = getattr(self.endpoint, "natt_port", None)
        return int(port) if port else NATT_PORT

    def _now_or_zero(self) -> float:
        return self._scheduler.now() if self._scheduler is not None else 0.0

    def publish(self, kind: str, peer: str, detail: str) -> None:
        log.info("%s %s: %s", peer or "-", kind, detail)
        self.events.publish(SaEventReport(kind, peer, detail, self.wall()))


def same_tunnel(old: Peer, new: Peer) -> bool:
    """Whether ``new`` differs from ``old`` only in what this end decides alone: the
    liveness check (RFC 7296 section 2.4), lifetimes (not negotiated in IKEv2, section
    2.8), NAT keepalives (RFC 3948 section 4), whether an IKE_SA_INIT from an unknown
    address may be routed to the peer, and which CAs it accepts the peer's certificate
    from. Such a change needs no new SA."""
    auth = new.auth
    if old.auth.method is AuthMethod.PUBKEY and auth.method is AuthMethod.PUBKEY:
        auth = dataclasses.replace(
            auth,
            ca_fingerprint=old.auth.ca_fingerprint,
            accepted_ca_fingerprints=old.auth.accepted_ca_fingerprints,
        )
    local_only = dataclasses.replace(
        new,
        auth=auth,
        dpd=old.dpd,
        lifetimes=old.lifetimes,
        nat=dataclasses.replace(
            new.nat,
            keepalive_seconds=old.nat.keepalive_seconds,
            remote_behind_nat=old.nat.remote_behind_nat,
        ),
    )
    return local_only == old
