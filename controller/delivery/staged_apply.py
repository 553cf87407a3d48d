"""Putting new plans in force from what the agents run: the one path of ``apply`` (with
``--canary`` or without) and ``serve``.

:func:`decide` sets the agents' plan hashes against the plans it can name (see
:mod:`in_force`) and gives the plans in force per host, or goes on with an interrupted
staged apply from its journal. :func:`run` rolls a staged change out (the steps of
:mod:`staging`, by :func:`canary.run_staged`) and keeps the journal up to date: written
before the first step, after each step, removed once the run ends with every host on
the final plans (or rolled back).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from ..fleet.operations import CompiledFleet
from ..planner.model import NodePlan
from ..statedir.state import StateDir
from .canary import CanaryResult, run_staged, step_fleet
from .health import Clock, GateAccess, HealthGate, Report
from .in_force import (
    JOURNAL_FILE,
    ApplyJournal,
    Basis,
    Candidate,
    InForceError,
    journal_position,
    match_candidates,
)
from .staging import Staging, stage

NEW_PLANS = ""
"""The source of a host whose plan in force is already the new one."""


def target_of(fleet: CompiledFleet) -> str:
    """The revision the new plans were compiled from (a commit, or "worktree")."""
    return next((p.source_revision for p in fleet.plans.values()), "worktree")


def hashes(fleet: CompiledFleet, plans: Mapping[str, NodePlan] | None = None) -> dict[str, str]:
    """Each selected host's plan content hash (of ``plans`` instead, when given)."""
    part = fleet if plans is None else step_fleet(fleet, plans)
    return {h: part.message(h).content_hash for h in part.selected if h in part.plans}


@dataclass(frozen=True, slots=True)
class Known:
    """A revision whose plans may be in force, compiled."""

    revision: str  # the commit
    fleet: CompiledFleet


@dataclass(slots=True)
class Decision:
    """What is in force and so how the new plans go in."""

    previous: CompiledFleet | None  # the plans in force per host; None: none known
    sources: dict[str, str] = field(default_factory=dict)  # host -> revision it runs
    notes: list[str] = field(default_factory=list)  # for people
    start: int = 0  # the first step not yet in force everywhere (a resumed run)
    current: dict[str, NodePlan] | None = None  # what each host runs (a resumed run)
    journal: ApplyJournal | None = None  # the interrupted run this one goes on with

    def staging(self, fleet: CompiledFleet) -> Staging | None:
        if self.previous is None:
            return None
        return stage(self.previous.plans, fleet.plans, fleet.selected)

    def restores(self, fleet: CompiledFleet) -> CompiledFleet:
        """The plans a rollback puts back: those in force (none for a host that ran no
        plan, or when nothing is known)."""
        return self.previous if self.previous is not None else _mixed(fleet, {})


def _mixed(fleet: CompiledFleet, runs: Mapping[str, CompiledFleet]) -> CompiledFleet:
    """``fleet``'s hosts with the plan each runs, from the compile ``runs`` names for it,
    and reached where that compile says its agent listens (a rollback goes there)."""
    plans = {h: f.plans[h] for h, f in runs.items() if h in f.plans}
    endpoints = {**fleet.endpoints}
    endpoints.update((h, runs[h].endpoints[h]) for h in plans if h in runs[h].endpoints)
    return CompiledFleet(fleet.inventory, list(fleet.selected), plans, {}, endpoints)


def from_revision(fleet: CompiledFleet, known: Known) -> Decision:
    """The plans of ``known`` taken as in force on every host (``--rollback-rev``)."""
    previous = _mixed(fleet, dict.fromkeys(fleet.selected, known.fleet))
    return Decision(previous, dict.fromkeys(previous.plans, known.revision))


def decide(
    fleet: CompiledFleet,
    observed: Mapping[str, str | None],
    known: Sequence[Known],
    journal: ApplyJournal | None,
    compile_revision: Callable[[str], CompiledFleet],
    *,
    canary: bool = False,
) -> Decision:
    """The plans in force, from the agents' ``observed`` hashes (see :mod:`in_force`).

    With a journal whose run had the same new plans, that run goes on from the step the
    agents are at. Raises InForceError, saying what differs and what to do, when a host
    runs a plan none of the candidates has, or hosts are on another run's steps. A
    ``canary`` run needs the plans in force to roll back to, unstaged too: its advice
    leaves ``--no-stage`` out."""
    if journal is not None:
        resumed = _resume(fleet, observed, journal, compile_revision)
        if resumed is not None:
            return resumed
    candidates = [Candidate("the new plans", hashes(fleet))]
    candidates += [Candidate(f"revision {k.revision[:12]}", hashes(k.fleet)) for k in known]
    in_force = match_candidates(observed, fleet.selected, candidates)
    if in_force.unknown:
        raise InForceError(
            "cannot tell which plans are in force: " + in_force.describe_unknown() + ". "
            "Give --rollback-rev REV naming the revision those hosts run (its plans are "
            "then taken as in force"
            + (" and a regression restores them)" if canary else "), or --no-stage to push "
               "the new plans as they are")
        )  # fmt: skip
    matched = in_force.on(Basis.MATCHED)
    if not matched:
        why = "no agent answered" if not in_force.on(Basis.NO_PLAN) else "no agent runs a plan"
        return Decision(None, notes=[f"(changes not staged: {why} yet)"])
    fleets = [fleet, *(k.fleet for k in known)]
    revisions = [NEW_PLANS, *(k.revision for k in known)]
    runs: dict[str, CompiledFleet] = {}
    sources: dict[str, str] = {}
    for h in in_force.hosts:
        index = h.candidate
        if h.basis is Basis.UNREACHABLE and known:
            index = 1  # assumed to run the first revision named, as every host did
        if index >= 0 and h.host in fleets[index].plans:
            runs[h.host] = fleets[index]
            sources[h.host] = revisions[index]
    notes = []
    if in_force.all_on(0):
        notes.append("(the agents already run these plans: nothing to stage)")
    else:
        for index in range(1, len(candidates)):
            on = in_force.running(index)
            if on:
                notes.append(f"in force: {candidates[index].label} on {', '.join(on)}")
        on_new = in_force.running(0)
        if on_new:
            notes.append(f"in force: the new plans already on {', '.join(on_new)}")
    return Decision(_mixed(fleet, runs), sources, notes)


def _resume(
    fleet: CompiledFleet,
    observed: Mapping[str, str | None],
    journal: ApplyJournal,
    compile_revision: Callable[[str], CompiledFleet],
) -> Decision | None:
    """Go on with the journal's run; None when the journal is stale (every host runs
    what was in force before it, and this run is another)."""
    at = f"the interrupted staged apply of {journal.target[:12]} (STATE/{JOURNAL_FILE})"
    same = (
        journal.target == target_of(fleet)
        and sorted(journal.hosts) == sorted(fleet.selected)
        and journal.steps[-1] == hashes(fleet)
    )
    if not same:
        if all(observed.get(h) == journal.previous_hashes.get(h) for h in journal.hosts):
            return None
        raise InForceError(
            f"{at} left hosts on its steps and this run's plans differ from it: finish it "
            "first (apply the same inventory, hosts and revision again), or give "
            "--rollback-rev REV naming the revision the hosts should be taken to run"
        )
    start, where = journal_position(journal, observed)
    compiled = {NEW_PLANS: fleet}
    for revision in journal.previous.values():
        if revision not in compiled:
            compiled[revision] = compile_revision(revision)
    previous = _mixed(fleet, {h: compiled[r] for h, r in journal.previous.items()})
    staging = stage(previous.plans, fleet.plans, fleet.selected)
    steps = [hashes(fleet, s.plans) for s in staging.steps]
    if steps != journal.steps:
        raise InForceError(
            f"{at}: its steps cannot be rebuilt (a revision it started from changed?); "
            "give --rollback-rev REV naming the revision the hosts should be taken to run"
        )
    sequence = [previous.plans, *(s.plans for s in staging.steps)]
    current = {h: sequence[p][h] for h, p in where.items() if h in sequence[p]}
    total = len(staging.steps)
    note = (
        f"resuming {at}: every host runs its final plans, nothing left to stage"
        if start == total
        else f"resuming {at} at step {start + 1}/{total} {staging.steps[start].name}"
    )
    return Decision(previous, dict(journal.previous), [note], start, current, journal)


async def run(
    fleet: CompiledFleet,
    decision: Decision,
    staging: Staging,
    access: GateAccess,
    plan: Sequence[Sequence[str]],
    *,
    state: StateDir,
    gate: HealthGate,
    report: Report | None = None,
    command: str = "apply",
    clock: Clock | None = None,
    canary: bool = False,
) -> CanaryResult:
    """Roll ``staging`` out from ``decision.previous`` to ``fleet``, journaled; with
    ``canary``, the first batch of ``plan`` is the canary."""
    assert decision.previous is not None
    previous = decision.previous
    journal = decision.journal or ApplyJournal(
        target=target_of(fleet),
        previous={h: decision.sources.get(h, NEW_PLANS) for h in previous.plans},
        step_names=[s.name for s in staging.steps],
        steps=[hashes(fleet, s.plans) for s in staging.steps],
        previous_hashes={
            h: previous.message(h).content_hash if h in previous.plans else ""
            for h in fleet.selected
        },
        command=command,
    )
    journal.done = max(journal.done, decision.start)
    journal.save(state)

    def step_done(number: int) -> None:
        journal.done = number
        journal.save(state)

    result = await run_staged(
        fleet,
        previous,
        access,
        staging,
        plan,
        canary=canary,
        gate=gate,
        clock=clock,
        report=report,
        start=decision.start,
        current=decision.current,
        step_done=step_done,
    )
    if not result.regression or not result.rollback_failed:
        ApplyJournal.remove(state)  # every host on the final plans, or back where it was
    return result
