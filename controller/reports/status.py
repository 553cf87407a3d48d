"""The fleet's observed state, as the agents report it, set against the desired plans.

The controller keeps no copy of what the agents run: every view here is built from a
fresh GetStatus answer (observed) and the plans compiled from the inventory (desired).
"""

from __future__ import annotations

import enum
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..planner.model import IkeVersion
from .results import ChangeLine


class NatState(enum.Enum):
    """What NAT detection found on an IKE SA (RFC 7296 section 2.23), apart from what
    the plan forced (``force_encap``)."""

    UNSPECIFIED = "-"
    NONE = "none"
    DETECTED = "detected"
    FORCED = "forced"


class ProblemKind(enum.Enum):
    """The kinds of ``Problem`` in protos/agent.proto."""

    UNSPECIFIED = "unspecified"
    PLAN_ONLY = "plan_only"
    PLAN = "plan"
    ROUTE = "route"
    POLICY_RULE = "policy_rule"
    TUN = "tun"
    SOCKET = "socket"
    IKE = "ike"


FAULTS = frozenset({ProblemKind.PLAN, ProblemKind.ROUTE, ProblemKind.POLICY_RULE, ProblemKind.TUN})
"""Problems held against a push and a status: the plan is in force, not all of it in
place. The others are shown only: a plan-only agent runs so on purpose, and IKE that
cannot be sent or a peer not up is the network's state, told per SA as well."""


class DropLayer(enum.Enum):
    UNSPECIFIED = "unspecified"
    ESP = "esp"
    UDP = "udp"
    RAW_ESP = "raw_esp"
    IKE_SA = "ike_sa"


class DropReason(enum.Enum):
    UNSPECIFIED = "unspecified"
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


class CertificateKind(enum.Enum):
    """The kinds of ``CertificateExpiry`` in protos/agent.proto."""

    UNSPECIFIED = "unspecified"
    TLS = "tls"
    IKE = "ike"


CERTIFICATE_WARNING_DAYS = 30
"""``status`` warns when an agent's certificate expires within this many days."""
_RENEW = "renew: vpnfleet renew"


@dataclass(frozen=True, slots=True)
class CertificateView:
    """One of the agent's own certificates and when it expires."""

    kind: CertificateKind = CertificateKind.UNSPECIFIED
    not_after: float = 0.0
    subject: str = ""
    not_before: float = 0.0
    """0 from an agent that does not say (older than the field)."""

    def warning(self, now: float) -> str:
        """What to tell when it expires within :data:`CERTIFICATE_WARNING_DAYS` (or has);
        empty otherwise."""
        left = self.not_after - now
        name = f"{self.kind.value.upper()} certificate"
        if left <= 0:
            return f"{name} expired {age(now, self.not_after)} ago; {_RENEW}"
        if left > CERTIFICATE_WARNING_DAYS * 86400:
            return ""
        span = f"{left / 86400:.0f} days" if left >= 2 * 86400 else f"{left / 3600:.0f} hours"
        return f"{name} expires in {span}; {_RENEW}"


@dataclass(frozen=True, slots=True)
class ProblemView:
    """Something the agent cannot do or keep, while it lasts."""

    kind: ProblemKind = ProblemKind.UNSPECIFIED
    subject: str = ""
    message: str = ""
    since: float = 0.0

    def __str__(self) -> str:
        return f"{self.kind.value} {self.subject}: {self.message}"


@dataclass(frozen=True, slots=True)
class ApplyAnswer:
    """One agent's ApplyPlan answer."""

    changed: bool
    changes: tuple[ChangeLine, ...]
    generation: int
    content_hash: str
    problems: tuple[ProblemView, ...]
    """The agent's problems once the plan was in force."""


@dataclass(frozen=True, slots=True)
class DropCountView:
    layer: DropLayer = DropLayer.UNSPECIFIED
    reason: DropReason = DropReason.UNSPECIFIED
    count: int = 0


@dataclass(frozen=True, slots=True)
class ChildSaView:
    name: str = ""
    state: str = ""
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
class IkeSaView:
    peer: str = ""
    state: str = ""
    spi_i: int = 0
    spi_r: int = 0
    proposal: str = ""
    local_address: str = ""
    remote_address: str = ""
    initiator: bool = False
    nat_detected: bool = False
    """True only when NAT detection found a NAT (``nat`` DETECTED)."""
    established_at: float = 0.0
    rekeyed_at: float = 0.0
    next_rekey_at: float = 0.0
    last_liveness_at: float = 0.0
    last_error: str = ""
    """Why the IKE SA the agent initiated, or the one in force, last failed."""
    children: tuple[ChildSaView, ...] = ()
    unauthenticated_failures: int = 0
    """IKE SAs the other side started that failed before it authenticated (a wrong key,
    or anyone who can send UDP to the agent): not a fault of this tunnel."""
    last_unauthenticated_failure: str = ""
    nat: NatState = NatState.UNSPECIFIED
    ike_version: IkeVersion = IkeVersion.V2
    """IKEv1 SAs show it in the SA table's state column."""


@dataclass(frozen=True, slots=True)
class LivenessView:
    """One peer's answer to a liveness check the controller asked for (CheckLiveness)."""

    peer: str = ""
    answered: bool = False
    round_trip_seconds: float = 0.0
    detail: str = ""


@dataclass(frozen=True, slots=True)
class UnmatchedSourceView:
    address: str = ""
    port: int = 0
    count: int = 0
    last_at: float = 0.0


@dataclass(frozen=True, slots=True)
class UnmatchedIkeSaInitView:
    """IKE_SA_INIT requests the agent dropped because their source matched no peer."""

    count: int = 0
    recent: tuple[UnmatchedSourceView, ...] = ()


@dataclass(frozen=True, slots=True)
class AgentStatusView:
    """One agent's GetStatus answer."""

    host: str = ""
    generation: int = 0
    content_hash: str = ""
    plan_applied_at: float = 0.0
    agent_version: str = ""
    uptime_seconds: float = 0.0
    peers_total: int = 0
    peers_up: int = 0
    ike_sas: tuple[IkeSaView, ...] = ()
    data_plane: bool = False
    ike_counters: Mapping[str, int] = field(default_factory=dict)
    """Whole-agent IKE counters by outcome ("malformed", "no_peer" …)."""
    unmatched_ike_sa_init: UnmatchedIkeSaInitView = UnmatchedIkeSaInitView()
    problems: tuple[ProblemView, ...] = ()
    drops: tuple[DropCountView, ...] = ()
    certificates: tuple[CertificateView, ...] = ()

    def certificate_warnings(self, now: float) -> list[str]:
        """A line per certificate of the agent that expires within 30 days or has."""
        return [w for c in self.certificates if (w := c.warning(now))]

    @property
    def faults(self) -> tuple[ProblemView, ...]:
        """Problems that mean the agent does not do what its plan asks (a route or rule
        refused, the TUN not set up): a push that leaves them failed."""
        return tuple(p for p in self.problems if p.kind in FAULTS)

    @property
    def unauthenticated_failures(self) -> int:
        """IKE SAs the other side started that failed before it authenticated."""
        return sum(ike.unauthenticated_failures for ike in self.ike_sas)


@dataclass(frozen=True, slots=True)
class HostStatus:
    """Desired against observed for one host."""

    host: str
    desired_hash: str
    observed: AgentStatusView | None = None
    error: str = ""  # why there is no observation (unreachable, refused …)
    endpoint: str = ""  # where its agent was asked

    @property
    def in_sync(self) -> bool:
        return self.observed is not None and self.observed.content_hash == self.desired_hash

    @property
    def faults(self) -> tuple[ProblemView, ...]:
        return self.observed.faults if self.observed is not None else ()

    @property
    def state(self) -> str:
        if self.observed is None:
            return "unreachable"
        if not self.observed.content_hash:
            return "no plan"
        return "in sync" if self.in_sync else "drift"


class StatusCondition(enum.IntFlag):
    """What keeps a host from being in sync with all its tunnels up.

    ``vpnfleet status`` exits with the bitwise OR of every host's conditions, so several
    combine (18 = drift and plan only) and 0 means none. The values are powers of two
    from 2 up: 1 stays the exit code of bad input, and an unreachable agent is 4 as in
    ``apply``. A new condition takes the next free bit (up to 128).
    """

    DRIFT = 2
    """The plan in force is not the desired one (or the agent has no plan)."""
    UNREACHABLE = 4
    """The agent did not answer GetStatus (down, refused, wrong name): nothing else is
    known of the host."""
    TUNNELS_DOWN = 8
    """Fewer peers up (IKE SA and child SA) than the plan in force has."""
    PLAN_ONLY = 16
    """The agent keeps its plan but runs no data plane, so it brings up no tunnel."""
    PROBLEMS = 32
    """The agent reports that it does not do what its plan asks: a route or policy rule
    the kernel refused, the TUN device not set up, the plan itself (``faults``)."""

    @property
    def label(self) -> str:
        return ", ".join((c.name or "").lower().replace("_", " ") for c in self)


def host_conditions(host: HostStatus) -> StatusCondition:
    """The conditions of one host (empty when it is in sync with all its tunnels up)."""
    obs = host.observed
    if obs is None:
        return StatusCondition.UNREACHABLE
    found = StatusCondition(0)
    if not host.in_sync:
        found |= StatusCondition.DRIFT
    if not obs.data_plane:
        found |= StatusCondition.PLAN_ONLY
    elif obs.peers_up < obs.peers_total:
        found |= StatusCondition.TUNNELS_DOWN
    if obs.faults:
        found |= StatusCondition.PROBLEMS
    return found


def fleet_conditions(status: FleetStatus) -> StatusCondition:
    """Every host's conditions together; ``int()`` of it is the exit code of `status`."""
    found = StatusCondition(0)
    for host in status.hosts:
        found |= host_conditions(host)
    return found


@dataclass(slots=True)
class FleetStatus:
    hosts: list[HostStatus] = field(default_factory=list)
    taken_at: float = field(default_factory=time.time)

    @property
    def all_in_sync(self) -> bool:
        return all(h.in_sync for h in self.hosts)

    def to_json(self) -> dict[str, Any]:
        out = []
        for h in self.hosts:
            obs = h.observed
            out.append(
                {
                    "host": h.host,
                    "endpoint": h.endpoint,
                    "state": h.state,
                    "conditions": _condition_names(host_conditions(h)),
                    "desired_hash": h.desired_hash,
                    "error": h.error,
                    "warnings": obs.certificate_warnings(self.taken_at) if obs else [],
                    "observed": _view_json(obs) if obs else None,
                }
            )
        conditions = fleet_conditions(self)
        return {
            "taken_at": self.taken_at,
            "all_in_sync": self.all_in_sync,
            "conditions": _condition_names(conditions),
            "exit_code": int(conditions),
            "hosts": out,
        }


def _condition_names(conditions: StatusCondition) -> list[str]:
    return [(c.name or "").lower() for c in conditions]


# SPIs are shown as swanctl --list-sas shows them: hex, 8 digits for ESP/AH (32 bits),
# 16 for IKE (64 bits). The views keep the integers GetStatus carries.
_SPI_BYTES = {"spi_in": 4, "spi_out": 4, "spi_i": 8, "spi_r": 8}


def spi_hex(spi: int, size: int = 4) -> str:
    """An SPI as hex digits, zero-padded to its size in bytes ("c3a5f1e2")."""
    return f"{spi:0{2 * size}x}"


def _view_json(view: Any) -> Any:
    if isinstance(view, tuple):
        return [_view_json(v) for v in view]
    if isinstance(view, Mapping):
        return dict(view)
    if isinstance(view, enum.Enum):
        return view.value
    if hasattr(view, "__dataclass_fields__"):
        return {
            name: spi_hex(getattr(view, name), _SPI_BYTES[name])
            if name in _SPI_BYTES
            else _view_json(getattr(view, name))
            for name in view.__dataclass_fields__
        }
    return view


def short_hash(h: str) -> str:
    return h[:12] if h else "-"


def age(now: float, since: float) -> str:
    """Human age of a timestamp, '-' when unset."""
    if not since:
        return "-"
    s = max(0, int(now - since))
    if s < 120:
        return f"{s}s"
    if s < 7200:
        return f"{s // 60}m"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


def fleet_rows(status: FleetStatus) -> list[tuple[str, ...]]:
    """Rows of the fleet table: host, state, generation, hash in force/desired, peers."""
    rows: list[tuple[str, ...]] = []
    for h in status.hosts:
        obs = h.observed
        if obs is None:
            rows.append((h.host, h.state, "-", "-", short_hash(h.desired_hash), "-", h.error))
            continue
        rows.append(
            (
                h.host,
                h.state,
                str(obs.generation),
                short_hash(obs.content_hash),
                short_hash(h.desired_hash),
                f"{obs.peers_up}/{obs.peers_total}",
                "; ".join(_notes(obs, status.taken_at)),
            )
        )
    return rows


def _notes(obs: AgentStatusView, now: float) -> list[str]:
    notes = [str(p) for p in obs.problems if p.kind is not ProblemKind.PLAN_ONLY]
    notes.extend(obs.certificate_warnings(now))
    if not obs.data_plane:
        notes.insert(0, "plan only (no data plane)")
    if obs.unauthenticated_failures:
        notes.append(f"{obs.unauthenticated_failures} IKE SA(s) failed before auth")
    unmatched = obs.unmatched_ike_sa_init
    if unmatched.count:
        last = unmatched.recent[0] if unmatched.recent else None
        where = f", last from {last.address}:{last.port}" if last else ""
        notes.append(f"{unmatched.count} IKE_SA_INIT matched no peer{where}")
    return notes


FLEET_COLUMNS = ("host", "state", "generation", "in force", "desired", "peers up", "note")


def sa_rows(status: FleetStatus) -> list[tuple[str, ...]]:
    """One row per child SA (or per IKE SA without children)."""
    now = status.taken_at
    rows: list[tuple[str, ...]] = []
    for h in status.hosts:
        if h.observed is None:
            continue
        for ike in h.observed.ike_sas:
            children = ike.children or (ChildSaView(),)
            for child in children:
                rows.append(
                    (
                        h.host,
                        ike.peer,
                        ike.state + _VERSION_MARK[ike.ike_version] + _NAT_MARK[ike.nat],
                        (
                            f"{spi_hex(child.spi_in)}/{spi_hex(child.spi_out)}"
                            if child.spi_in
                            else "-"
                        ),
                        child.proposal or ike.proposal,
                        age(now, child.established_at or ike.established_at),
                        age(child.next_rekey_at, now) if child.next_rekey_at > now else "-",
                        f"{child.bytes_in}/{child.bytes_out}",
                        f"{child.packets_in}/{child.packets_out}",
                        f"{child.replay_drops}/{child.integrity_failures}",
                        age(now, ike.last_liveness_at),
                    )
                )
    return rows


_VERSION_MARK = {IkeVersion.V2: "", IkeVersion.V1: " IKEv1"}

_NAT_MARK = {
    NatState.UNSPECIFIED: "",
    NatState.NONE: "",
    NatState.DETECTED: " NAT",
    NatState.FORCED: " NAT-T forced",
}

SA_COLUMNS = (
    "host",
    "peer",
    "state",
    "SPI in/out",
    "proposal",
    "age",
    "rekey in",
    "bytes in/out",
    "packets in/out",
    "replay/integ drops",
    "liveness",
)
