"""The fleet's observed state, as the agents report it, set against the desired plans.

The controller keeps no copy of what the agents run: every view here is built from a
fresh GetStatus answer (observed) and the plans compiled from the inventory (desired).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


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

    @property
    def in_sync(self) -> bool:
        return self.observed is not None and self.observed.content_hash == self.desired_hash

    @property
    def state(self) -> str:
        if self.observed is None:
            return "unreachable"
        if not self.observed.content_hash:
            return "no plan"
        return "in sync" if self.in_sync else "drift"


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
                    "state": h.state,
                    "desired_hash": h.desired_hash,
                    "error": h.error,
                    "observed": _view_json(obs) if obs else None,
                }
            )
        return {"taken_at": self.taken_at, "all_in_sync": self.all_in_sync, "hosts": out}


def _view_json(view: Any) -> Any:
    if isinstance(view, tuple):
        return [_view_json(v) for v in view]
    if isinstance(view, Mapping):
        return dict(view)
    if hasattr(view, "__dataclass_fields__"):
        return {name: _view_json(getattr(view, name)) for name in view.__dataclass_fields__}
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
                "; ".join(_notes(obs)),
            )
        )
    return rows


def _notes(obs: AgentStatusView) -> list[str]:
    notes = [] if obs.data_plane else ["plan only (no data plane)"]
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
                        ike.state + (" NAT" if ike.nat_detected else ""),
                        f"{child.spi_in:08x}/{child.spi_out:08x}" if child.spi_in else "-",
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
