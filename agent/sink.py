"""What the gRPC service hands a plan to once it is persisted, and what it reads back.

The service validates and persists a plan, then calls :meth:`PlanSink.put_in_force`.
The IKE/ESP engine implements this protocol; until it exists, :class:`PlanOnlySink`
keeps the plan and reports no SAs (``data_plane`` False), which is also what hollow
agents run. Events from the sink (SA up, down, rekeyed) go to an :class:`EventHub` that
WatchStatus streams from; the module imports no gRPC so the engine can use it.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from .plan import AgentPlan


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
    mode: str = ""
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
    nat_detected: bool = False
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


class PlanSink(Protocol):
    """The part of the agent that turns a persisted plan into SAs."""

    @property
    def data_plane(self) -> bool: ...

    async def put_in_force(self, plan: AgentPlan) -> None:
        """Make ``plan`` the one in force; only called with a validated, persisted plan."""

    def ike_sas(self) -> Sequence[IkeSaReport]: ...

    def ike_counters(self) -> Mapping[str, int]:
        """Whole-agent IKE counters by outcome ("malformed", "no_peer" …)."""

    def peers_up(self) -> int: ...

    def admission(self) -> AdmissionReport | None:
        """Half-open IKE SAs and what their caps refused; None without an IKE engine."""

    def unmatched_ike_sa_init(self) -> UnmatchedReport:
        """IKE_SA_INIT requests whose source matched no peer of the plan."""

    async def rekey(self, peers: Sequence[str], target: RekeyTarget) -> list[RekeyOutcome]: ...

    async def check_liveness(self, peers: Sequence[str], wait: float) -> list[LivenessOutcome]:
        """Check now that each of ``peers`` answers on its IKE SA in force (RFC 7296
        section 1.4); wait up to ``wait`` seconds for the answers."""


@dataclass(slots=True)
class PlanOnlySink:
    """Keeps the plan in force and nothing else: the agent before the engine, hollow agents."""

    plans: list[AgentPlan] = field(default_factory=list)

    @property
    def data_plane(self) -> bool:
        return False

    @property
    def plan(self) -> AgentPlan | None:
        return self.plans[-1] if self.plans else None

    async def put_in_force(self, plan: AgentPlan) -> None:
        # Only the latest plan matters; keep one so a long-lived hollow agent stays small.
        self.plans[:] = [plan]

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
