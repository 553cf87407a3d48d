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
- with ``require_traffic``, each tunnel proves it works after the push: its ESP packet
  counters moved since the previous poll, or else — an idle tunnel — its peer answered
  a liveness check the gate asked the agent for (CheckLiveness: an empty INFORMATIONAL
  request on the IKE SA in force, RFC 7296 section 1.4). An answer is authenticated
  with the keys both ends hold now and travels the path ESP takes, both ways; it needs
  nothing of the peer but IKE, so strongSwan peers answer it too. Probing with ICMP
  through the child SA was not chosen: the plan knows the peer's subnets, not an
  address in them that answers, and a policy may bypass or discard ICMP, so an
  unanswered probe would fail healthy tunnels.

A step of a staged rollout has one more gate (:func:`wait_reestablished`): the tunnels
the batch initiates must run an IKE SA set up after the push, since the agents keep the
old SAs until then and the health gate alone could pass on them.

What to do about a gate that does not pass (roll back, stop) is :mod:`canary`'s business.
Agents are reached through :class:`GateAccess`, so tests drive this module with fakes
and a fake clock instead of agents and sleeps.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from ..fleet import operations
from ..fleet.operations import CompiledFleet
from ..fleet.rollout import DEFAULT_OPTIONS, RolloutOptions
from ..reports.results import AggregateResult, HostResult
from ..reports.status import FleetStatus, HostStatus, LivenessView
from ..statedir.state import StateDir

AUTH_FAILED = "AUTHENTICATION_FAILED"
Report = Callable[[str], None]

LIVENESS_WAIT = 3.0
"""Seconds an agent waits for its peers' answers to the liveness checks the gate asks
for (the agent retransmits within that time as it does any IKE request)."""

Liveness = Mapping[str, "tuple[LivenessView, ...] | str"]
"""host -> each peer's answer to a liveness check asked for now, or why the agent could
not be asked."""


class CanaryError(ValueError):
    """Options that make no canary rollout (a count below one, a bad timeout …)."""


class FleetAccess(Protocol):
    """How this module reaches agents: push plans, read status."""

    async def push(self, fleet: CompiledFleet) -> AggregateResult: ...

    async def observe(self, fleet: CompiledFleet) -> FleetStatus: ...


class GateAccess(FleetAccess, Protocol):
    """What the health gate also asks of agents: liveness checks on idle tunnels."""

    async def liveness(self, fleet: CompiledFleet, wait: float) -> Liveness: ...


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

    async def liveness(self, fleet: CompiledFleet, wait: float) -> Liveness:
        return await operations.fleet_liveness(
            fleet, self.state, wait=wait, forks=self.options.forks, timeout=self.timeout
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

    def waits_for(self) -> str:
        """What a batch must show to pass, for the operator reading why it did not."""
        what = (
            "the new plan in force, every IKE SA established with its child SA installed, "
            "no new AUTHENTICATION_FAILED"
        )
        if self.require_traffic:
            what += (
                ", and on every tunnel ESP packets moving or, when it is idle, an answer "
                "to a liveness check (IKE INFORMATIONAL) sent after the push"
            )
        return what


def _packets(host: HostStatus | None) -> dict[str, dict[int, int]]:
    """Per peer, packets each way by inbound SPI (a rekeyed child starts from zero), of
    the IKE SAs established with every child installed: the tunnels traffic can judge."""
    if host is None or host.observed is None:
        return {}
    return {
        ike.peer: {c.spi_in: c.packets_in + c.packets_out for c in ike.children}
        for ike in host.observed.ike_sas
        if ike.state == "established"
        and ike.children
        and all(c.state == "installed" for c in ike.children)
    }


def idle_peers(earlier: HostStatus | None, later: HostStatus) -> list[str]:
    """The peers of ``later`` whose tunnel is up but carried no ESP packet since
    ``earlier`` (counted from zero without it)."""
    old = _packets(earlier)
    return [
        peer
        for peer, counts in _packets(later).items()
        if not any(n > old.get(peer, {}).get(spi, 0) for spi, n in counts.items())
    ]


TRAFFIC_HINT = (
    "; a fleet can be idle, but its peers must answer liveness checks: "
    "--no-health-traffic leaves traffic and liveness out of the gate"
)
"""Added to a failure about traffic: what the operator can do about it."""


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


def unhealthy(
    earlier: FleetStatus | None,
    now: FleetStatus,
    require_traffic: bool,
    liveness: Liveness | None = None,
) -> list[str]:
    """Why the hosts of ``now`` do not (yet) pass the gate; empty when they do.

    With ``require_traffic`` each tunnel's ESP packets must have moved between
    ``earlier`` (the previous poll) and ``now``, or its peer answered a liveness check
    (``liveness``, asked for after ``now`` was read, on the idle tunnels)."""
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
        if require_traffic:
            problems += _idle_unanswered(h.host, idle_peers(old.get(h.host), h), liveness)
    return problems


def _idle_unanswered(host: str, idle: Sequence[str], liveness: Liveness | None) -> list[str]:
    """The idle tunnels of ``host`` whose peer did not answer a liveness check, and why."""
    answers = (liveness or {}).get(host)
    if isinstance(answers, str):
        return [
            f"{host}: peer {p}: ESP packet counters not moving, and the agent could not "
            f"be asked for a liveness check: {answers}"
            for p in idle
        ]
    by_peer = {a.peer: a for a in answers or ()}
    out = []
    for peer in idle:
        answer = by_peer.get(peer)
        if answer is None:
            out.append(f"{host}: peer {peer}: ESP packet counters not moving")
        elif not answer.answered:
            out.append(
                f"{host}: peer {peer}: ESP packet counters not moving and no answer to a "
                f"liveness check: {answer.detail}"
            )
    return out


def about_traffic(problems: Sequence[str]) -> bool:
    return any("ESP packet counters not moving" in p for p in problems)


async def wait_healthy(
    access: GateAccess,
    fleet: CompiledFleet,
    before: FleetStatus | None,
    gate: HealthGate,
    clock: Clock,
    report: Report | None = None,
) -> str:
    """Poll until ``fleet``'s hosts pass the gate: '' then, else the regression's reason.

    An authentication failure fails at once; anything else is given until the timeout.
    Hosts whose tunnels carried no traffic since the previous poll (or, at the first,
    since ``before``, read before the push) are asked for a liveness check."""
    deadline = clock.now() + gate.timeout
    # Traffic counts from the push on: packets counted before it prove nothing of it.
    last = before
    while True:
        status = await access.observe(fleet)
        failed = auth_failures(before, status)
        if failed:
            return "authentication failed: " + "; ".join(failed)
        liveness: Liveness = {}
        if gate.require_traffic:
            old = {h.host: h for h in last.hosts} if last else {}
            idle = [h.host for h in status.hosts if idle_peers(old.get(h.host), h)]
            if idle:
                liveness = await access.liveness(fleet.subset(idle), LIVENESS_WAIT)
        problems = unhealthy(last, status, gate.require_traffic, liveness)
        last = status
        if not problems:
            return ""
        if clock.now() >= deadline:
            hint = TRAFFIC_HINT if about_traffic(problems) else ""
            return (
                f"not healthy after {gate.timeout:g}s of waiting for {gate.waits_for()}: "
                + "; ".join(problems)
                + hint
            )
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
    access: GateAccess,
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
