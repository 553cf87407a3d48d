"""Health gates of a canary rollout: how agents are reached and when a batch passes.

After a batch is pushed the controller polls GetStatus on that batch's hosts until every
one of them passes the health gate (:func:`wait_healthy`):

- the desired plan is in force (its content hash is the one the agent reports);
- every IKE SA is ``established`` with every child SA ``installed``;
- no *new* ``AUTHENTICATION_FAILED`` in an SA's last error (one that was already there
  before the batch was pushed is not this rollout's doing). The last error speaks only
  of the IKE SAs the agent initiated and of the SA in force; IKE SAs the other side
  started that failed before authenticating are counted apart
  (``unauthenticated_failures``) and not judged: anyone who can send UDP to an agent
  can cause them, and they leave the tunnels alone (a change that breaks a tunnel
  shows at the end that initiates it, whose gate judges it);
- with ``require_traffic``, ESP packet counters of each host moved since the push.

A step of a staged rollout has one more gate (:func:`wait_reestablished`): the tunnels
the batch initiates must run an IKE SA set up after the push, since the agents keep the
old SAs until then and the health gate alone could pass on them.

What to do about a gate that does not pass (roll back, stop) is :mod:`canary`'s business.
Agents are reached through :class:`FleetAccess`, so tests drive this module with fakes
and a fake clock instead of agents and sleeps.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from . import operations
from .operations import CompiledFleet
from .results import AggregateResult, HostResult
from .rollout import DEFAULT_OPTIONS, RolloutOptions
from .state import StateDir
from .status import FleetStatus, HostStatus

AUTH_FAILED = "AUTHENTICATION_FAILED"
Report = Callable[[str], None]


class CanaryError(ValueError):
    """Options that make no canary rollout (a count below one, a bad timeout …)."""


class FleetAccess(Protocol):
    """How this module reaches agents: push plans, read status."""

    async def push(self, fleet: CompiledFleet) -> AggregateResult: ...

    async def observe(self, fleet: CompiledFleet) -> FleetStatus: ...


@dataclass(slots=True)
class AgentAccess:
    """:class:`FleetAccess` over gRPC (operations.push_plans and fleet_status)."""

    state: StateDir
    options: RolloutOptions = DEFAULT_OPTIONS
    timeout: float = operations.DEFAULT_TIMEOUT
    progress: Callable[[HostResult], None] | None = None

    async def push(self, fleet: CompiledFleet) -> AggregateResult:
        return await operations.push_plans(
            fleet,
            self.state,
            dry_run=False,
            options=RolloutOptions(forks=self.options.forks),
            progress=self.progress,
            timeout=self.timeout,
        )

    async def observe(self, fleet: CompiledFleet) -> FleetStatus:
        return await operations.fleet_status(
            fleet, self.state, forks=self.options.forks, timeout=self.timeout
        )


@dataclass(frozen=True, slots=True)
class Clock:
    """Monotonic time and sleep; tests pass a fake whose sleep only advances time."""

    now: Callable[[], float] = time.monotonic
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep


@dataclass(frozen=True, slots=True)
class HealthGate:
    timeout: float = 60.0
    poll_interval: float = 1.0
    require_traffic: bool = True

    def __post_init__(self) -> None:
        if self.timeout <= 0:
            raise CanaryError(f"--health-timeout must be positive, not {self.timeout:g}")
        if self.poll_interval <= 0:
            raise CanaryError(f"the poll interval must be positive, not {self.poll_interval:g}")


def _packets(host: HostStatus | None) -> dict[int, int]:
    """Packets each way, by inbound SPI (a rekeyed child starts counting from zero)."""
    if host is None or host.observed is None:
        return {}
    return {
        c.spi_in: c.packets_in + c.packets_out
        for ike in host.observed.ike_sas
        for c in ike.children
    }


def traffic_moved(earlier: HostStatus | None, later: HostStatus) -> bool:
    old = _packets(earlier)
    return any(n > old.get(spi, 0) for spi, n in _packets(later).items())


def _errors(host: HostStatus | None) -> set[tuple[str, str]]:
    """(peer, last error): of the IKE SAs the agent initiated or the SA in force, never of
    an IKE SA someone else started and did not authenticate."""
    if host is None or host.observed is None:
        return set()
    return {(ike.peer, ike.last_error) for ike in host.observed.ike_sas if ike.last_error}


def auth_failures(before: FleetStatus | None, now: FleetStatus) -> list[str]:
    """New AUTHENTICATION_FAILED errors, one line per host and peer."""
    old = {h.host: h for h in before.hosts} if before else {}
    out = []
    for h in now.hosts:
        for peer, error in sorted(_errors(h) - _errors(old.get(h.host))):
            if AUTH_FAILED in error:
                out.append(f"{h.host}: peer {peer}: {error}")
    return out


def unhealthy(earlier: FleetStatus | None, now: FleetStatus, require_traffic: bool) -> list[str]:
    """Why the hosts of ``now`` do not (yet) pass the gate; empty when they do.

    Traffic must have moved between ``earlier`` (the previous poll) and ``now``.
    """
    old = {h.host: h for h in earlier.hosts} if earlier else {}
    problems = []
    for h in now.hosts:
        obs = h.observed
        if obs is None:
            problems.append(f"{h.host}: unreachable ({h.error})")
            continue
        if not h.in_sync:
            problems.append(f"{h.host}: desired plan not in force")
            continue
        for ike in obs.ike_sas:
            if ike.state != "established":
                detail = f": {ike.last_error}" if ike.last_error else ""
                problems.append(f"{h.host}: peer {ike.peer} IKE SA {ike.state}{detail}")
            elif not ike.children:
                problems.append(f"{h.host}: peer {ike.peer} has no child SA")
            else:
                for child in ike.children:
                    if child.state != "installed":
                        problems.append(
                            f"{h.host}: peer {ike.peer} child SA {child.name} {child.state}"
                        )
        if require_traffic and obs.ike_sas and not traffic_moved(old.get(h.host), h):
            problems.append(f"{h.host}: ESP packet counters not moving")
    return problems


async def wait_healthy(
    access: FleetAccess,
    fleet: CompiledFleet,
    before: FleetStatus | None,
    gate: HealthGate,
    clock: Clock,
    report: Report | None = None,
) -> str:
    """Poll until ``fleet``'s hosts pass the gate: '' then, else the regression's reason.

    An authentication failure fails at once; anything else is given until the timeout.
    """
    deadline = clock.now() + gate.timeout
    last: FleetStatus | None = None
    while True:
        status = await access.observe(fleet)
        failed = auth_failures(before, status)
        if failed:
            return "authentication failed: " + "; ".join(failed)
        problems = unhealthy(last, status, gate.require_traffic)
        last = status
        if not problems:
            return ""
        if clock.now() >= deadline:
            return f"not healthy after {gate.timeout:g}s: " + "; ".join(problems)
        if report:
            report(f"waiting for health: {problems[0]}" + (" …" if len(problems) > 1 else ""))
        await clock.sleep(gate.poll_interval)


def ike_times(status: FleetStatus) -> dict[tuple[str, str], float]:
    """(host, peer) -> when the IKE SA in force was set up, for those established with a
    child installed."""
    return {
        (h.host, ike.peer): ike.established_at
        for h in status.hosts
        if h.observed is not None
        for ike in h.observed.ike_sas
        if ike.state == "established" and any(c.state == "installed" for c in ike.children)
    }


async def wait_reestablished(
    access: FleetAccess,
    part: CompiledFleet,
    tunnels: Sequence[tuple[str, str]],
    before: FleetStatus,
    gate: HealthGate,
    clock: Clock,
    report: Report | None = None,
) -> str:
    """Poll until each (host, peer) of ``tunnels`` runs an IKE SA set up after
    ``before`` (the agent keeps the old one until then): '' then, else why not.

    The health gate alone can pass on the old SAs; a step of a staged rollout is done
    only once its new configuration has been negotiated on every changed tunnel."""
    if not tunnels:
        return ""
    since = ike_times(before)
    deadline = clock.now() + gate.timeout
    while True:
        status = await access.observe(part)
        failed = auth_failures(before, status)
        if failed:
            return "authentication failed: " + "; ".join(failed)
        times = ike_times(status)
        pending = [
            f"{h}->{p}" for h, p in tunnels if times.get((h, p), 0.0) <= since.get((h, p), 0.0)
        ]
        if not pending:
            return ""
        if clock.now() >= deadline:
            return f"not re-established after {gate.timeout:g}s: {', '.join(pending)}"
        if report:
            report(f"waiting for {len(pending)} tunnel(s) to re-establish: {pending[0]} …")
        await clock.sleep(gate.poll_interval)
