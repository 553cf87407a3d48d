"""What the gRPC service hands a plan to once it is persisted, and what it reads back.

The service validates and persists a plan, then calls :meth:`PlanSink.put_in_force`.
The IKE/ESP engine implements this protocol; until it exists, :class:`PlanOnlySink`
keeps the plan and reports no SAs (``data_plane`` False), which is also what hollow
agents run. Events from the sink (SA up, down, rekeyed) go to an :class:`EventHub` that
WatchStatus streams from; the module imports no gRPC so the engine can use it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from .ike.config import Mode
from .plan import AgentPlan, IkeVersion


class NatState(enum.Enum):
    """Why an IKE SA's IKE and ESP travel in UDP 4500 (RFC 7296 section 2.23), or not."""

    UNSPECIFIED = "-"
    """No IKE SA to tell."""
    NONE = "none"
    DETECTED = "detected"
    """NAT detection found our address rewritten, or the peer's (the plan says it is
    behind a NAT, or its datagrams come from another address or port than the plan's)."""
    FORCED = "forced"
    """UDP 4500 with no NAT in sight: our plan forces it (``force_encap``), or the peer
    does (strongSwan's ``encap = yes`` fakes its NAT-D hash)."""


class ProblemKind(enum.Enum):
    """What a :class:`Problem` is about (the ``Problem.Kind`` of the status proto)."""

    PLAN_ONLY = "plan_only"
    """The agent runs no data plane: plans are kept, no tunnel is built."""
    PLAN = "plan"
    """Part of the plan in force cannot be put in place."""
    ROUTE = "route"
    POLICY_RULE = "policy_rule"
    TUN = "tun"
    SOCKET = "socket"
    """IKE cannot be sent to a destination."""
    IKE = "ike"
    """A peer is not up and its last IKE SA failed."""


PUT_IN_FORCE_KINDS = frozenset(
    {ProblemKind.PLAN, ProblemKind.ROUTE, ProblemKind.POLICY_RULE, ProblemKind.TUN}
)
"""The problems putting a plan in force finds (all of them, each time): applying the
same plan again tries what failed again."""


@dataclass(frozen=True, slots=True)
class Problem:
    """A condition the operator must know of, while it lasts."""

    kind: ProblemKind
    subject: str
    """What it concerns: the route, rule, device, destination or peer."""
    message: str
    since: float = 0.0
    """Wall-clock time it was first seen (unix seconds)."""


class ProblemBoard:
    """The problems in force, by (kind, subject), each keeping the time it was first
    seen while it lasts. Whoever finds problems of some kinds reports all of them at
    once (:meth:`replace`): what it no longer reports is cleared."""

    def __init__(self) -> None:
        self._problems: dict[tuple[ProblemKind, str], Problem] = {}

    def replace(self, kinds: Iterable[ProblemKind], found: Iterable[Problem], now: float) -> None:
        """``found`` are the problems of ``kinds`` now; the others of those kinds clear."""
        kinds = frozenset(kinds)
        fresh: dict[tuple[ProblemKind, str], Problem] = {}
        for p in found:
            if p.kind not in kinds:
                raise ValueError(f"{p} is not of the kinds replaced: {[k.value for k in kinds]}")
            old = self._problems.get((p.kind, p.subject))
            since = old.since if old is not None else now
            fresh[(p.kind, p.subject)] = Problem(p.kind, p.subject, p.message, since)
        for key in [k for k in self._problems if k[0] in kinds]:
            del self._problems[key]
        self._problems.update(fresh)

    def set(self, problem: Problem, now: float) -> None:
        old = self._problems.get((problem.kind, problem.subject))
        since = old.since if old is not None else now
        self._problems[(problem.kind, problem.subject)] = dataclasses.replace(problem, since=since)

    def clear(self, kind: ProblemKind, subject: str) -> None:
        self._problems.pop((kind, subject), None)

    def of(self, kind: ProblemKind) -> list[Problem]:
        return [p for key, p in self._problems.items() if key[0] is kind]

    def current(self) -> tuple[Problem, ...]:
        return tuple(sorted(self._problems.values(), key=lambda p: (p.kind.value, p.subject)))


@dataclass(frozen=True, slots=True)
class PeerFailure:
    """A plan peer that could not be put in force, and why."""

    peer: str
    reason: str


@dataclass(frozen=True, slots=True)
class PlanReport:
    """What putting a plan in force could not do, as values: the problems found on the
    way (routes, rules, the kill switch, forwarding; also on the problem board while
    they last) and the peers that cannot be configured. Empty: all of it is in force."""

    problems: tuple[Problem, ...] = ()
    failed_peers: tuple[PeerFailure, ...] = ()

    @property
    def complete(self) -> bool:
        return not self.problems and not self.failed_peers

    def summary(self) -> str:
        """One line for the log: each failed peer and each problem, with why."""
        parts = [f"peer {f.peer}: {f.reason}" for f in self.failed_peers]
        parts += [f"{p.kind.value} {p.subject}: {p.message}" for p in self.problems]
        return "; ".join(parts)


class DropLayer(enum.Enum):
    """Where input was dropped (the ``DropCount.Layer`` of the status proto)."""

    ESP = "esp"
    UDP = "udp"
    RAW_ESP = "raw_esp"
    IKE_SA = "ike_sa"
    """An established IKE SA refused a message (forged, replayed, unexpected)."""


class DropReason(enum.Enum):
    """Why; one spelling for status and metrics. The ESP reasons are ``esp.sa.Drop``'s
    own values."""

    TRUNCATED = "truncated"
    UNKNOWN_SPI = "unknown_spi"
    REPLAYED = "replayed"
    STALE = "stale"
    INTEGRITY = "integrity"
    BAD_PADDING = "bad_padding"
    DUMMY = "dummy"
    WRONG_NEXT_HEADER = "wrong_next_header"
    BAD_INNER_PACKET = "bad_inner_packet"
    POLICY = "policy"
    EXPIRED = "expired"
    SHORT = "short"
    MALFORMED = "malformed"
    REJECTED = "rejected"
    RECEIVE_BUFFER_FULL = "receive_buffer_full"
    """The kernel dropped the datagram at the socket before the agent read it (its
    receive buffer was full): the data plane is not keeping up."""


@dataclass(frozen=True, slots=True)
class DropCount:
    layer: DropLayer
    reason: DropReason
    count: int


class RekeyTarget(enum.Enum):
    BOTH = "both"
    IKE = "ike"
    CHILD = "child"


@dataclass(frozen=True, slots=True)
class ChildSaReport:
    name: str
    state: str
    spi_in: int = 0
    spi_out: int = 0
    proposal: str = ""
    mode: Mode = Mode.TUNNEL
    local_ts: tuple[str, ...] = ()
    remote_ts: tuple[str, ...] = ()
    established_at: float = 0.0
    rekeyed_at: float = 0.0
    next_rekey_at: float = 0.0
    bytes_in: int = 0
    bytes_out: int = 0
    packets_in: int = 0
    packets_out: int = 0
    replay_drops: int = 0
    integrity_failures: int = 0
    policy_drops: int = 0


@dataclass(frozen=True, slots=True)
class IkeSaReport:
    peer: str
    state: str
    spi_i: int = 0
    spi_r: int = 0
    proposal: str = ""
    local_address: str = ""
    remote_address: str = ""
    initiator: bool = False
    nat: NatState = NatState.UNSPECIFIED
    established_at: float = 0.0
    rekeyed_at: float = 0.0
    next_rekey_at: float = 0.0
    last_liveness_at: float = 0.0
    last_error: str = ""
    """Why the IKE SA we initiated, or the one in force, last failed."""
    children: tuple[ChildSaReport, ...] = ()
    unauthenticated_failures: int = 0
    """IKE SAs the other side started for this peer that failed before it authenticated."""
    last_unauthenticated_failure: str = ""
    """The latest of them (printable, bounded: part of it came from the network)."""
    ike_version: IkeVersion = IkeVersion.V2
    """The IKE protocol the plan reaches the peer with (RFC 7296, or RFC 2409)."""


@dataclass(frozen=True, slots=True)
class AdmissionLimitReport:
    name: str
    """The cap's key in the agent config's ``ike_limits`` (``half_open_per_source`` …)."""
    value: int
    refused: int
    """What it dropped since the agent started: requests, messages or fragments."""


@dataclass(frozen=True, slots=True)
class AdmissionReport:
    """What unauthenticated initiators hold: half-open IKE SAs and their fragments."""

    half_open: int
    preauth_fragment_bytes: int
    cookies_sent: int
    limits: tuple[AdmissionLimitReport, ...]


@dataclass(frozen=True, slots=True)
class UnmatchedSource:
    """One source of IKE_SA_INIT requests that matched no peer of the plan."""

    address: str
    port: int
    count: int
    last_at: float


@dataclass(frozen=True, slots=True)
class UnmatchedReport:
    """IKE_SA_INIT requests that matched no peer: how many since start, and the latest
    sources, newest first (a few at most)."""

    count: int = 0
    recent: tuple[UnmatchedSource, ...] = ()


@dataclass(frozen=True, slots=True)
class RekeyOutcome:
    peer: str
    ok: bool
    detail: str


@dataclass(frozen=True, slots=True)
class LivenessOutcome:
    """One peer's answer to a liveness check asked for now (CheckLiveness)."""

    peer: str
    answered: bool
    detail: str = ""
    """Why not, when not answered."""
    round_trip: float = 0.0
    """Seconds from the request to its authenticated answer."""


@dataclass(frozen=True, slots=True)
class SaEventReport:
    """An event for WatchStatus: ``kind`` is "plan_applied", "ike_up", "child_rekeyed" …"""

    kind: str
    peer: str = ""
    detail: str = ""
    time: float = 0.0


class PeerControlError(Exception):
    """An operator's initiate or terminate that cannot be done (no such peer, a peer
    that cannot be configured); the message says why."""


@runtime_checkable
class PeerControl(Protocol):
    """A sink that can bring a peer's IKE SA up or down now, as swanctl --initiate and
    --terminate do (the engine; a plan-only agent has no SAs to control)."""

    def initiate_peer(self, name: str) -> str:
        """Start ``name``'s IKE SA now and keep it up again as its plan says; returns
        what was done. Raises PeerControlError."""
        ...

    def terminate_peer(self, name: str) -> str:
        """Delete ``name``'s IKE SAs (and so its child SA) now and do not start them
        again until :meth:`initiate_peer`; returns what was done. Raises
        PeerControlError."""
        ...


class PlanSink(Protocol):
    """The part of the agent that turns a persisted plan into SAs."""

    @property
    def data_plane(self) -> bool: ...

    async def put_in_force(self, plan: AgentPlan) -> PlanReport:
        """Make ``plan`` the one in force; only called with a validated, persisted plan.
        Returns what could not be done (an empty report: all of it)."""

    def ike_sas(self) -> Sequence[IkeSaReport]: ...

    def ike_counters(self) -> Mapping[str, int]:
        """Whole-agent IKE counters by outcome ("malformed", "no_peer" …)."""

    def peers_up(self) -> int: ...

    def admission(self) -> AdmissionReport | None:
        """Half-open IKE SAs and what their caps refused; None without an IKE engine."""

    def unmatched_ike_sa_init(self) -> UnmatchedReport:
        """IKE_SA_INIT requests whose source matched no peer of the plan."""

    def problems(self) -> Sequence[Problem]:
        """What the agent cannot do or keep right now."""

    def drops(self) -> Sequence[DropCount]:
        """Input dropped before it reached an SA's payload, by layer and reason."""

    async def rekey(self, peers: Sequence[str], target: RekeyTarget) -> list[RekeyOutcome]: ...

    async def check_liveness(self, peers: Sequence[str], wait: float) -> list[LivenessOutcome]:
        """Check now that each of ``peers`` answers on its IKE SA in force (RFC 7296
        section 1.4); wait up to ``wait`` seconds for the answers."""


@dataclass(slots=True)
class PlanOnlySink:
    """Keeps the plan in force and nothing else: the agent before the engine, hollow agents."""

    plans: list[AgentPlan] = field(default_factory=list)
    reason: str = "plan only: no data plane in this agent"
    """Why there is no data plane (reported as a PLAN_ONLY problem)."""
    since: float = field(default_factory=time.time)

    @property
    def data_plane(self) -> bool:
        return False

    @property
    def plan(self) -> AgentPlan | None:
        return self.plans[-1] if self.plans else None

    async def put_in_force(self, plan: AgentPlan) -> PlanReport:
        # Only the latest plan matters; keep one so a long-lived hollow agent stays small.
        self.plans[:] = [plan]
        return PlanReport()

    def ike_sas(self) -> Sequence[IkeSaReport]:
        return ()

    def ike_counters(self) -> Mapping[str, int]:
        return {}

    def peers_up(self) -> int:
        return 0

    def admission(self) -> AdmissionReport | None:
        return None

    def unmatched_ike_sa_init(self) -> UnmatchedReport:
        return UnmatchedReport()

    def problems(self) -> Sequence[Problem]:
        return (Problem(ProblemKind.PLAN_ONLY, "data plane", self.reason, self.since),)

    def drops(self) -> Sequence[DropCount]:
        return ()

    async def rekey(self, peers: Sequence[str], target: RekeyTarget) -> list[RekeyOutcome]:
        return [RekeyOutcome(p, False, "no data plane in this agent") for p in peers]

    async def check_liveness(self, peers: Sequence[str], wait: float) -> list[LivenessOutcome]:
        return [LivenessOutcome(p, False, "no data plane in this agent") for p in peers]


class EventHub:
    """Fan-out of events to every WatchStatus stream; a slow watcher loses old events
    rather than holding memory or blocking the engine."""

    def __init__(self, queue_size: int = 256) -> None:
        self._queues: set[asyncio.Queue[SaEventReport]] = set()
        self._size = queue_size

    def subscribe(self) -> asyncio.Queue[SaEventReport]:
        q: asyncio.Queue[SaEventReport] = asyncio.Queue(self._size)
        self._queues.add(q)
        return q

    def unsubscribe(self, q: asyncio.Queue[SaEventReport]) -> None:
        self._queues.discard(q)

    def publish(self, event: SaEventReport) -> None:
        for q in self._queues:
            if q.full():
                q.get_nowait()
            q.put_nowait(event)

    @property
    def watchers(self) -> int:
        return len(self._queues)
