"""Canary rollout: apply to a few hosts, wait for health gates, roll back on regression.

``apply --canary N`` pushes the new plans to the first N selected hosts, then to the
rest in serial batches (``--serial``, one batch by default). After each batch the
controller polls GetStatus on that batch's hosts until every one of them passes the
health gate (see :mod:`health` for what the gate asks).

A failed push, an authentication failure, or a gate still not passed at the timeout is a
regression: every host the run pushed to — the failing batch, the batches that passed
before it and the canary — gets its previous plan back (compiled from the previous
revision, ``--rollback-rev``), so that the fleet ends on one revision, and the run stops
with the reason; later batches are not attempted.

Pair changes (see :mod:`staging`) are rolled out by :func:`run_staged`: each of the
three steps goes through the same batches and gates, and a batch is done only once the
tunnels it initiates have been set up again under the step's plan (the agents keep the
old SAs until then, so the gate alone could pass on them). The canary and the gates
thus apply to each step; a regression takes every host the run touched back through the
steps already done to the previous plans, not only the failing batch.

Agents are reached through :class:`GateAccess`, so tests drive this module with fakes
and a fake clock instead of agents and sleeps.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from ..fleet.operations import CompiledFleet
from ..fleet.rollout import batches
from ..planner.model import NodePlan, Peer
from ..reports.results import EXIT_FAILED, AggregateResult, HostResult, Outcome
from .health import (
    CanaryError,
    Clock,
    FleetAccess,
    GateAccess,
    HealthGate,
    Report,
    wait_healthy,
    wait_reestablished,
)
from .staging import Staging


@dataclass(slots=True)
class StepResult:
    """One step of a staged rollout: its batches, what each host answered, how it ended."""

    name: str
    description: str
    batches: list[list[str]]
    result: AggregateResult = field(default_factory=AggregateResult)
    state: str = "not attempted"  # "done" | "done before" (an earlier run) | "regression" | …
    started_at: float = 0.0  # wall-clock time the step's first push began (0: never)

    def to_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "description": self.description,
            "state": self.state,
            "started_at": self.started_at,
            "batches": self.batches,
            "hosts": [r.to_json() for r in self.result],
        }


@dataclass(slots=True)
class CanaryResult:
    result: AggregateResult = field(default_factory=AggregateResult)
    batches: list[list[str]] = field(default_factory=list)
    regression: str = ""  # why the run stopped; empty when every batch passed
    rolled_back: list[str] = field(default_factory=list)
    rollback_failed: list[str] = field(default_factory=list)
    staging: Staging | None = None  # what was staged (None: staging not considered)
    steps: list[StepResult] = field(default_factory=list)  # empty unless staged

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
        if self.staging is not None:
            data["staging"] = {
                **self.staging.to_json(),
                "steps": [s.to_json() for s in self.steps],
            }
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
    access: GateAccess,
    *,
    canary: int,
    serial: Sequence[str] = (),
    gate: HealthGate | None = None,
    clock: Clock | None = None,
    report: Report | None = None,
    staging: Staging | None = None,
) -> CanaryResult:
    """Roll ``fleet`` out batch by batch behind health gates; on a regression, give every
    host pushed to so far (the canary and earlier batches too) its plan from
    ``previous`` back and stop.

    With a ``staging`` that stages pair changes, each of its steps is rolled out this
    way in turn (see :func:`run_staged`)."""
    gate = gate or HealthGate()
    clock = clock or Clock()
    if staging is not None and staging.staged:
        return await run_staged(
            fleet,
            previous,
            access,
            staging,
            canary_batches(fleet.selected, canary, serial),
            gate=gate,
            clock=clock,
            report=report,
        )
    out = CanaryResult(batches=canary_batches(fleet.selected, canary, serial), staging=staging)
    touched: list[str] = []
    for index, batch in enumerate(out.batches):
        part = fleet.subset(batch)
        label = "canary" if index == 0 else f"batch {index}"
        if report:
            report(f"{label}: applying to {', '.join(batch)}")
        before = await access.observe(part)
        pushed = await access.push(part)
        out.result.extend(pushed)
        touched += batch
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
        await _restore(access, previous, touched, out, report)
        for rest in out.batches[index + 1 :]:
            out.result.extend(
                HostResult(h, Outcome.SKIPPED, error="not attempted: " + out.regression)
                for h in rest
            )
        out.result.aborted = out.regression
        break
    return out


REPORTED_CHANGES = 20
"""Staged (and unstaged) changes listed one by one; a large fleet's rest is counted."""


def staging_lines(staging: Staging) -> list[str]:
    """What a run stages and what it does not, for people (at most a screenful)."""
    lines = [f"staged: {c}" for c in staging.changes[:REPORTED_CHANGES]]
    if len(staging.changes) > REPORTED_CHANGES:
        lines.append(f"staged: … and {len(staging.changes) - REPORTED_CHANGES} more")
    lines += [str(u) for u in staging.unstaged[:REPORTED_CHANGES]]
    if len(staging.unstaged) > REPORTED_CHANGES:
        lines.append(f"… and {len(staging.unstaged) - REPORTED_CHANGES} more not staged")
    return lines


def step_fleet(fleet: CompiledFleet, plans: Mapping[str, NodePlan]) -> CompiledFleet:
    """``fleet`` with other plans for the same hosts (a step of a staged rollout)."""
    return CompiledFleet(
        fleet.inventory,
        list(fleet.selected),
        {h: plans[h] for h in fleet.selected},
        {},
        dict(fleet.endpoints),
    )


def _merged(host: str, results: Sequence[HostResult]) -> HostResult:
    """One host's results over the steps: the first failure, else changed when any step
    changed it, with every step's changes."""
    for r in results:
        if r.failed or r.unreachable:
            return r
    last = results[-1]
    changed = any(r.changed for r in results)
    return HostResult(
        host,
        Outcome.CHANGED if changed else last.outcome,
        changes=tuple(c for r in results for c in r.changes),
        error=last.error,
        seconds=sum(r.seconds for r in results),
        generation=last.generation,
        content_hash=last.content_hash,
    )


async def _push_batch(
    access: GateAccess,
    part: CompiledFleet,
    tunnels: Sequence[tuple[str, str]],
    gate: HealthGate,
    clock: Clock,
    report: Report | None,
) -> tuple[AggregateResult, str]:
    """Push one batch, wait until the ``tunnels`` it initiates are set up again and the
    batch passes its health gate: the results, and '' or the reason."""
    before = await access.observe(part)
    pushed = await access.push(part)
    bad = [f"{r.host}: {r.outcome.value} {r.error}".rstrip() for r in pushed if r.failed]
    bad += [f"{r.host}: unreachable {r.error}".rstrip() for r in pushed if r.unreachable]
    if bad:
        return pushed, "apply failed: " + "; ".join(bad)
    reason = await wait_reestablished(access, part, tunnels, before, gate, clock, report)
    return pushed, reason or await wait_healthy(access, part, before, gate, clock, report)


def _negotiated(peer: Peer) -> tuple[object, ...]:
    # The agent sets a peer up again when its credential (the keys it accepts included),
    # proposals or addresses change; a batch waits for that before the next one goes,
    # so that no end changes its plan again while a hand-over is still under way.
    return (peer.auth, peer.ike_proposals, peer.esp_proposals, peer.remote_addresses)


def _initiated(
    staging: Staging,
    plans: Mapping[str, NodePlan],
    earlier: Mapping[str, NodePlan],
    batch: Sequence[str],
) -> list[tuple[str, str]]:
    """The staged tunnels the hosts of ``batch`` set up again in this step: those they
    initiate (the initiator starts the new IKE SA, make-before-break) whose credential,
    proposals or addresses differ from the step before (``earlier``)."""
    ends = {(c.host, c.peer) for c in staging.changes}
    out = []
    for h in batch:
        before = {p.name: p for p in earlier[h].peers} if h in earlier else {}
        for p in plans[h].peers:
            old = before.get(p.name)
            if p.initiator and (h, p.name) in ends and old and _negotiated(old) != _negotiated(p):
                out.append((h, p.name))
    return out


async def _walk_back(
    access: FleetAccess,
    fleets: Sequence[CompiledFleet],
    previous: CompiledFleet,
    touched: Sequence[str],
    out: CanaryResult,
    report: Report | None,
) -> None:
    """Take the ``touched`` hosts back through the steps already done (newest first), then
    to ``previous``: each push agrees with the one before on every pair."""
    for index in range(len(fleets) - 1, -1, -1):
        if report:
            report(f"rollback: back to step {index + 1} on {', '.join(touched)}")
        for r in await access.push(fleets[index].subset(touched)):
            if r.failed or r.unreachable:
                out.rollback_failed.append(
                    f"{r.host}: step {index + 1}: {r.outcome.value} {r.error}".rstrip()
                )
    await _restore(access, previous, touched, out, report)


async def _restore(
    access: FleetAccess,
    previous: CompiledFleet,
    touched: Sequence[str],
    out: CanaryResult,
    report: Report | None,
) -> None:
    """Push the plans of ``previous`` to every ``touched`` host at once, so that the whole
    run ends on one revision, and say per host how it went."""
    back = [h for h in touched if h in previous.plans]
    for h in touched:
        if h not in previous.plans:
            out.rollback_failed.append(f"{h}: no previous plan")
            if report:
                report(f"rollback: {h}: no previous plan (the host is new)")
    if not back:
        return
    for r in await access.push(previous.subset(back)):
        if r.failed or r.unreachable:
            line = f"{r.host}: {r.outcome.value} {r.error}".rstrip()
            out.rollback_failed.append(line)
            if report:
                report(f"rollback: {line}")
        else:
            out.rolled_back.append(r.host)
            if report:
                report(f"rollback: {r.host}: previous plan in force")


async def run_staged(
    fleet: CompiledFleet,
    previous: CompiledFleet,
    access: GateAccess,
    staging: Staging,
    plan: Sequence[Sequence[str]],
    *,
    canary: bool = True,
    gate: HealthGate | None = None,
    clock: Clock | None = None,
    report: Report | None = None,
    start: int = 0,
    current: Mapping[str, NodePlan] | None = None,
    step_done: Callable[[int], None] | None = None,
) -> CanaryResult:
    """Roll out the steps of ``staging`` one after the other, each in the batches of
    ``plan`` (the canary batch first, when ``canary``), every batch behind the health
    gate; a step starts only once every host passed the previous one.

    An interrupted run goes on with ``start``, the first step not in force everywhere
    (the steps before it count as done) and ``current``, the plans the hosts run now
    (a host already on the step is then not waited for); ``step_done`` is told the
    number of each step once every host passed it.

    A regression takes every host this run touched back to ``previous``, walking the
    steps back (see :func:`_walk_back`), and stops the run with the reason."""
    gate = gate or HealthGate()
    clock = clock or Clock()
    groups = [list(b) for b in plan]
    out = CanaryResult(batches=groups, staging=staging)
    out.steps = [StepResult(s.name, s.description, groups) for s in staging.steps]
    if report:
        for line in staging_lines(staging):
            report(line)
    fleets = [
        fleet if i == len(staging.steps) - 1 else step_fleet(fleet, step.plans)
        for i, step in enumerate(staging.steps)
    ]
    touched: list[str] = []
    for number, (step, part_of, result) in enumerate(
        zip(staging.steps, fleets, out.steps, strict=True), 1
    ):
        if number <= start:
            result.state = "done before"
            continue
        earlier_plans: Mapping[str, NodePlan] = (
            previous if number == 1 else fleets[number - 2]
        ).plans
        if current is not None and number == start + 1:
            earlier_plans = current
        head = f"step {number}/{len(fleets)} {step.name}"
        result.started_at = time.time()
        if report:
            report(f"{head}: {step.description}")
        for index, batch in enumerate(groups):
            if canary:
                label = f"{head}, " + (f"batch {index}" if index else "canary")
            else:
                label = f"{head}, batch {index + 1}"
            if report:
                report(f"{label}: applying to {', '.join(batch)}")
            tunnels = _initiated(staging, part_of.plans, earlier_plans, batch)
            pushed, reason = await _push_batch(
                access, part_of.subset(batch), tunnels, gate, clock, report
            )
            result.result.extend(pushed)
            touched += [h for h in batch if h not in touched]
            if not reason:
                if report:
                    report(f"{label}: healthy")
                continue
            result.state = "regression"
            out.regression = f"{label} ({', '.join(batch)}): {reason}"
            if report:
                report(f"{label}: REGRESSION, rolling back: {reason}")
            await _walk_back(access, fleets[: number - 1], previous, touched, out, report)
            break
        if out.regression:
            break
        result.state = "done"
        if step_done is not None:
            step_done(number)
    for host in fleet.selected:
        mine = [s.result.results[host] for s in out.steps if host in s.result.results]
        if mine:
            out.result.add(_merged(host, mine))
        else:
            out.result.add(
                HostResult(host, Outcome.SKIPPED, error="not attempted: " + out.regression)
            )
    out.result.aborted = out.regression
    return out
