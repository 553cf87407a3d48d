"""Canary rollout: apply to a few hosts, wait for health gates, roll back on regression.

``apply --canary N`` pushes the new plans to the first N selected hosts, then to the
rest in serial batches (``--serial``, one batch by default). After each batch the
controller polls GetStatus on that batch's hosts until every one of them passes the
health gate:

- the desired plan is in force (its content hash is the one the agent reports);
- every IKE SA is ``established`` with every child SA ``installed``;
- no *new* ``AUTHENTICATION_FAILED`` in an SA's last error (one that was already there
  before the batch was pushed is not this rollout's doing);
- with ``require_traffic``, ESP packet counters of each host moved since the push.

A failed push, an authentication failure, or a gate still not passed at the timeout is a
regression: the batch's hosts get their previous plans back (those compiled from the
previous revision) and the run stops with the reason; later batches are not attempted.

Agents are reached through :class:`FleetAccess`, so tests drive this module with fakes
and a fake clock instead of agents and sleeps.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from . import operations
from .operations import CompiledFleet
from .results import EXIT_FAILED, AggregateResult, HostResult, Outcome
from .rollout import DEFAULT_OPTIONS, RolloutOptions, batches
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


def subset(fleet: CompiledFleet, hosts: Iterable[str]) -> CompiledFleet:
    """The same compile restricted to ``hosts`` (messages stay shared, so cached)."""
    names = list(hosts)
    return CompiledFleet(
        fleet.inventory,
        names,
        {h: fleet.plans[h] for h in names},
        fleet.messages,
        {h: fleet.endpoints[h] for h in names},
    )


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


@dataclass(slots=True)
class CanaryResult:
    result: AggregateResult = field(default_factory=AggregateResult)
    batches: list[list[str]] = field(default_factory=list)
    regression: str = ""  # why the run stopped; empty when every batch passed
    rolled_back: list[str] = field(default_factory=list)
    rollback_failed: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return EXIT_FAILED if self.regression else self.result.exit_code

    def to_json(self) -> dict[str, object]:
        data = self.result.to_json()
        data.update(
            batches=self.batches,
            regression=self.regression,
            rolled_back=self.rolled_back,
            rollback_failed=self.rollback_failed,
            exit_code=self.exit_code,
        )
        return data


def canary_batches(hosts: Sequence[str], canary: int, serial: Sequence[str]) -> list[list[str]]:
    """The canary batch (first ``canary`` hosts), then the rest in serial batches."""
    if canary < 1:
        raise CanaryError(f"--canary takes a host count of at least 1, not {canary}")
    first, rest = list(hosts[:canary]), list(hosts[canary:])
    return ([first] if first else []) + batches(rest, serial)


async def run_canary(
    fleet: CompiledFleet,
    previous: CompiledFleet,
    access: FleetAccess,
    *,
    canary: int,
    serial: Sequence[str] = (),
    gate: HealthGate | None = None,
    clock: Clock | None = None,
    report: Report | None = None,
) -> CanaryResult:
    """Roll ``fleet`` out batch by batch behind health gates; on a regression, give the
    batch's hosts their plans from ``previous`` back and stop."""
    gate = gate or HealthGate()
    clock = clock or Clock()
    missing = [h for h in fleet.selected if h not in previous.plans]
    out = CanaryResult(batches=canary_batches(fleet.selected, canary, serial))
    for index, batch in enumerate(out.batches):
        part = subset(fleet, batch)
        label = "canary" if index == 0 else f"batch {index}"
        if report:
            report(f"{label}: applying to {', '.join(batch)}")
        before = await access.observe(part)
        pushed = await access.push(part)
        out.result.extend(pushed)
        bad = [f"{r.host}: {r.outcome.value} {r.error}".rstrip() for r in pushed if r.failed]
        bad += [f"{r.host}: unreachable {r.error}".rstrip() for r in pushed if r.unreachable]
        reason = "apply failed: " + "; ".join(bad) if bad else ""
        if not reason:
            reason = await wait_healthy(access, part, before, gate, clock, report)
        if not reason:
            if report:
                report(f"{label}: healthy")
            continue
        out.regression = f"{label} ({', '.join(batch)}): {reason}"
        if report:
            report(f"{label}: REGRESSION, rolling back: {reason}")
        back = [h for h in batch if h not in missing]
        out.rollback_failed = [f"{h}: no previous plan" for h in batch if h in missing]
        if back:
            undone = await access.push(subset(previous, back))
            for r in undone:
                if r.failed or r.unreachable:
                    out.rollback_failed.append(f"{r.host}: {r.outcome.value} {r.error}".rstrip())
                else:
                    out.rolled_back.append(r.host)
        for rest in out.batches[index + 1 :]:
            out.result.extend(
                HostResult(h, Outcome.SKIPPED, error="not attempted: " + out.regression)
                for h in rest
            )
        out.result.aborted = out.regression
        break
    return out
