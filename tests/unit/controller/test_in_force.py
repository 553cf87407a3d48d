"""What is in force (controller.delivery.in_force, controller.delivery.staged_apply.decide)
and the journal of a staged apply, against real compiles of inventories/lab and the fake agents."""

from __future__ import annotations

import shutil
import stat
import subprocess
import traceback
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from tests.support.canary_fakes import LAB, FakeClock, TunnelFleet, compiled
from vpnfleet.controller.cli import fleet as fleet_cli
from vpnfleet.controller.cli import main
from vpnfleet.controller.cli.common import Ctx
from vpnfleet.controller.delivery import canary, staged_apply
from vpnfleet.controller.delivery.canary import step_fleet
from vpnfleet.controller.delivery.health import HealthGate
from vpnfleet.controller.delivery.in_force import (
    ApplyJournal,
    Basis,
    Candidate,
    InForceError,
    journal_position,
    match_candidates,
)
from vpnfleet.controller.fleet import operations
from vpnfleet.controller.fleet.operations import CompiledFleet
from vpnfleet.controller.fleet.rollout import batches
from vpnfleet.controller.reports.results import AggregateResult
from vpnfleet.controller.reports.status import FleetStatus
from vpnfleet.controller.statedir.pki import init_ca
from vpnfleet.controller.statedir.state import StateDir, StateError

HOSTS = ["a1", "a2", "a3", "a4"]
HEAD = "1" * 40  # the commit the old plans are said to come from


@pytest.fixture
def state(tmp_path: Path) -> StateDir:
    return StateDir(tmp_path / "state")


@pytest.fixture
def fleets(tmp_path: Path, state: StateDir) -> tuple[CompiledFleet, CompiledFleet]:
    """The new plans (PSK epoch 2) and the old ones (HEAD's)."""
    return compiled(tmp_path, state, 2), compiled(tmp_path, state, None)


def hashes(fleet: CompiledFleet) -> dict[str, str]:
    return staged_apply.hashes(fleet)


def head(old: CompiledFleet) -> list[staged_apply.Known]:
    return [staged_apply.Known(HEAD, old)]


def no_compile(revision: str) -> CompiledFleet:
    raise AssertionError(f"nothing to compile, asked for {revision}")


def test_each_host_runs_the_first_candidate_with_its_hash() -> None:
    candidates = [
        Candidate("new", {"a": "n", "b": "same"}),
        Candidate("old", {"a": "o", "b": "same"}),
    ]
    found = match_candidates(
        {"a": "o", "b": "same", "c": "", "d": None, "e": "x"}, ["a", "b", "c", "d", "e"], candidates
    )
    assert [(h.host, h.basis, h.candidate) for h in found.hosts] == [
        ("a", Basis.MATCHED, 1),
        ("b", Basis.MATCHED, 0),  # the same plan in both: the first candidate
        ("c", Basis.NO_PLAN, -1),
        ("d", Basis.UNREACHABLE, -1),
        ("e", Basis.UNKNOWN, -1),
    ]
    assert found.unknown == ["e"] and "e runs plan x: the plan of none of new, old" in (
        found.describe_unknown()
    )
    assert found.most_hosts() == 0  # a tie: the first


def test_agents_on_head_stage_from_head(fleets: tuple[CompiledFleet, CompiledFleet]) -> None:
    new, old = fleets
    decision = staged_apply.decide(new, hashes(old), head(old), None, no_compile)
    assert decision.previous is not None and decision.sources == dict.fromkeys(HOSTS, HEAD)
    staging = decision.staging(new)
    assert staging is not None and staging.staged and len(staging.changes) == 12
    assert decision.notes == [f"in force: revision {HEAD[:12]} on a1, a2, a3, a4"]


def test_agents_already_on_the_new_plans_stage_nothing(
    fleets: tuple[CompiledFleet, CompiledFleet],
) -> None:
    """`rotate psk` put epoch 2 in force before its commit: HEAD is not what runs."""
    new, old = fleets
    decision = staged_apply.decide(new, hashes(new), head(old), None, no_compile)
    staging = decision.staging(new)
    assert staging is not None and not staging.staged
    assert decision.notes == ["(the agents already run these plans: nothing to stage)"]


def test_plans_of_no_candidate_are_refused_with_advice(
    tmp_path: Path, state: StateDir, fleets: tuple[CompiledFleet, CompiledFleet]
) -> None:
    new, old = fleets
    other = compiled(tmp_path, state, 7)
    observed = {**hashes(old), "a3": hashes(other)["a3"]}
    with pytest.raises(InForceError) as exc:
        staged_apply.decide(new, observed, head(old), None, no_compile)
    message = str(exc.value)
    assert f"a3 runs plan {hashes(other)['a3'][:12]}" in message
    assert f"revision {HEAD[:12]}" in message and "--rollback-rev REV" in message


def test_hosts_without_a_plan_or_unreachable_decide_nothing(
    fleets: tuple[CompiledFleet, CompiledFleet],
) -> None:
    new, old = fleets
    decision = staged_apply.decide(new, dict.fromkeys(HOSTS, ""), head(old), None, no_compile)
    assert decision.previous is None and decision.notes == [
        "(changes not staged: no agent runs a plan yet)"
    ]
    # An unreachable host is taken to run HEAD's plan, as the others do.
    observed: dict[str, str | None] = {**hashes(old), "a4": None}
    decision = staged_apply.decide(new, observed, head(old), None, no_compile)
    assert decision.previous is not None and decision.previous.plans["a4"] == old.plans["a4"]


def journal_of(new: CompiledFleet, old: CompiledFleet, done: int = 0) -> ApplyJournal:
    staging = staged_apply.Decision(old, dict.fromkeys(HOSTS, HEAD)).staging(new)
    assert staging is not None
    return ApplyJournal(
        target=staged_apply.target_of(new),
        previous=dict.fromkeys(HOSTS, HEAD),
        step_names=[s.name for s in staging.steps],
        steps=[staged_apply.hashes(new, s.plans) for s in staging.steps],
        previous_hashes=hashes(old),
        done=done,
    )


def test_journal_is_written_private_and_read_back(
    state: StateDir, fleets: tuple[CompiledFleet, CompiledFleet]
) -> None:
    journal = journal_of(*fleets, done=1)
    journal.save(state)
    path = ApplyJournal.path(state)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert ApplyJournal.load(state) == journal
    path.write_text('{"version": 1, "target": "x"}')
    with pytest.raises(StateError, match="malformed staged-apply journal"):
        ApplyJournal.load(state)
    path.write_text("{")
    with pytest.raises(StateError, match="unreadable staged-apply journal"):
        ApplyJournal.load(state)
    ApplyJournal.remove(state)
    assert ApplyJournal.load(state) is None


def test_position_is_the_lowest_step_any_host_is_at(
    fleets: tuple[CompiledFleet, CompiledFleet],
) -> None:
    new, old = fleets
    journal = journal_of(new, old)
    accept, use, final = journal.steps
    assert journal_position(journal, hashes(old))[0] == 0
    # Killed in step 2: a1 and a2 took "use", a3 and a4 still run "accept".
    observed = {"a1": use["a1"], "a2": use["a2"], "a3": accept["a3"], "a4": accept["a4"]}
    assert journal_position(journal, observed) == (1, {"a1": 2, "a2": 2, "a3": 1, "a4": 1})
    assert journal_position(journal, final)[0] == 3
    with pytest.raises(InForceError, match="more than one step apart"):
        journal_position(journal, {**hashes(old), "a1": final["a1"]})
    with pytest.raises(InForceError, match="a2 did not answer"):
        journal_position(journal, {**accept, "a2": None})
    with pytest.raises(InForceError, match="a3 runs plan 000000000000, neither"):
        journal_position(journal, {**accept, "a3": "0" * 64})


def test_decide_goes_on_from_the_journal_step(
    fleets: tuple[CompiledFleet, CompiledFleet],
) -> None:
    new, old = fleets
    journal = journal_of(new, old, done=1)
    accept, use, _ = journal.steps
    observed = {"a1": use["a1"], "a2": accept["a2"], "a3": accept["a3"], "a4": accept["a4"]}
    compiles: list[str] = []

    def compile_revision(revision: str) -> CompiledFleet:
        compiles.append(revision)
        return old

    decision = staged_apply.decide(new, observed, head(old), journal, compile_revision)
    assert compiles == [HEAD] and decision.journal is journal
    assert decision.start == 1
    assert decision.notes[0].startswith("resuming the interrupted staged apply of ")
    assert decision.notes[0].endswith("at step 2/3 use")
    assert decision.current is not None
    assert staged_apply.hashes(new, decision.current)["a1"] == use["a1"]


def test_a_journal_of_another_run_is_stale_or_refused(
    tmp_path: Path, state: StateDir, fleets: tuple[CompiledFleet, CompiledFleet]
) -> None:
    new, old = fleets
    journal = journal_of(new, old)
    other = compiled(tmp_path, state, 3)  # another change than the journal's
    # Every host still runs what was in force before it: the journal is stale.
    decision = staged_apply.decide(other, hashes(old), head(old), journal, no_compile)
    assert decision.journal is None and decision.sources == dict.fromkeys(HOSTS, HEAD)
    # Hosts on its steps: not staged blindly over them.
    with pytest.raises(InForceError, match="left hosts on its steps"):
        staged_apply.decide(other, journal.steps[0], head(old), journal, no_compile)


async def test_an_interrupted_run_resumes_from_its_journal_and_finishes(
    state: StateDir, fleets: tuple[CompiledFleet, CompiledFleet]
) -> None:
    new, old = fleets
    clock = FakeClock()
    agents = TunnelFleet(clock, hashes(old))
    gate = HealthGate(5, 1, require_traffic=False)
    decision = staged_apply.decide(new, hashes(old), head(old), None, no_compile)
    staging = decision.staging(new)
    assert staging is not None
    steps = [hashes(step_fleet(new, s.plans)) for s in staging.steps]

    pushes = 0
    real_push = agents.push

    async def push_then_die(fleet: CompiledFleet):  # type: ignore[no-untyped-def]
        nonlocal pushes
        pushes += 1
        if pushes == 4:  # the second batch of step 2: the controller is killed
            raise KeyboardInterrupt
        return await real_push(fleet)

    agents.push = push_then_die  # type: ignore[method-assign]
    plan = batches(new.selected, ("2",))
    with pytest.raises(KeyboardInterrupt):
        await staged_apply.run(
            new, decision, staging, agents, plan, state=state, gate=gate, clock=clock.clock()
        )
    journal = ApplyJournal.load(state)
    assert journal is not None and journal.done == 1 and journal.steps == steps
    assert agents.running == {**steps[0], "a1": steps[1]["a1"], "a2": steps[1]["a2"]}

    agents.push = real_push  # type: ignore[method-assign]
    agents.pushes.clear()
    resumed = staged_apply.decide(new, dict(agents.running), head(old), journal,
                                  lambda _rev: old)  # fmt: skip
    assert resumed.start == 1
    out = await staged_apply.run(
        new, resumed, staging, agents, plan, state=state, gate=gate, clock=clock.clock()
    )
    assert out.regression == "" and agents.running == hashes(new)
    assert [s.state for s in out.steps] == ["done before", "done", "done"]
    # Step 2 again on every host (a1, a2 unchanged), then the final plans.
    assert agents.pushes == [(h, steps[1][h]) for h in HOSTS] + [(h, steps[2][h]) for h in HOSTS]
    assert ApplyJournal.load(state) is None


# ------------------------------------------- `apply --canary` decides as `apply` does


@dataclass
class CanaryCli:
    """`vpnfleet apply --canary` on an inventory in git, its agents the fake ones."""

    inventory: Path
    state: StateDir
    agents: TunnelFleet
    new: CompiledFleet  # the worktree's plans (PSK epoch 2)
    old: CompiledFleet  # HEAD's

    def apply(self, *args: str) -> Result:
        return CliRunner().invoke(
            main,
            ["--state", str(self.state.root), "apply", "-i", str(self.inventory), "--canary",
             "1", *args],
        )  # fmt: skip


@pytest.fixture
def canary_cli(tmp_path: Path, state: StateDir, monkeypatch: pytest.MonkeyPatch) -> CanaryCli:
    repo = tmp_path / "repo"
    shutil.copytree(LAB, repo / "inv")
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.org"]
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "lab"], check=True)
    with (repo / "inv" / "group_vars" / "all.yaml").open("a") as f:
        f.write("psk_epoch: 2\n")  # as `rotate psk` leaves it: in force, not committed
    init_ca(state.root)
    new = operations.compile_fleet_at(repo / "inv", state, None)
    old = operations.compile_fleet_at(repo / "inv", state, "HEAD")
    clock = FakeClock()
    agents = TunnelFleet(clock, hashes(old))

    async def fleet_status(fleet: CompiledFleet, *_: object, **__: object) -> FleetStatus:
        return await agents.observe(fleet)

    monkeypatch.setattr(fleet_cli, "AgentAccess", lambda *_, **__: agents)
    monkeypatch.setattr(operations, "fleet_status", fleet_status)
    monkeypatch.setattr(canary, "Clock", clock.clock)
    return CanaryCli(repo / "inv", state, agents, new, old)


def test_canary_after_rotate_psk_stages_nothing_again(canary_cli: CanaryCli) -> None:
    """The agents already run the new plans while HEAD holds the old: nothing to stage
    from HEAD, and the canary pushes the new plans as they are."""
    agents, new = canary_cli.agents, canary_cli.new
    agents.running = hashes(new)
    res = canary_cli.apply()
    assert res.exit_code == 0, res.output
    assert "(the agents already run these plans: nothing to stage)" in res.output
    assert agents.pushes == [(h, hashes(new)[h]) for h in HOSTS]
    assert ApplyJournal.load(canary_cli.state) is None


def test_canary_over_plans_of_no_candidate_is_refused_with_advice(
    tmp_path: Path, canary_cli: CanaryCli
) -> None:
    agents, old = canary_cli.agents, canary_cli.old
    other = compiled(tmp_path, canary_cli.state, 7)
    agents.running = {**hashes(old), "a3": hashes(other)["a3"]}
    res = canary_cli.apply()
    assert res.exit_code == 1, res.output
    message = " ".join(res.output.split())
    assert f"a3 runs plan {hashes(other)['a3'][:12]}: the plan of none of" in message
    assert "Give --rollback-rev REV naming the revision those hosts run" in message
    assert "--no-stage" not in message  # a canary needs the plans to roll back to
    assert agents.pushes == []


def test_canary_regression_restores_what_the_agents_ran(canary_cli: CanaryCli) -> None:
    """a1 already runs the new plan (pushed by hand), the rest HEAD's: the staged canary
    fails on a2 and every touched host gets back what it ran, a1 the new plan."""
    agents, new, old = canary_cli.agents, canary_cli.new, canary_cli.old
    agents.running = {**hashes(old), "a1": hashes(new)["a1"]}
    before = dict(agents.running)
    agents.stuck = {"a2"}  # a2's tunnels are never set up again
    res = canary_cli.apply("--health-timeout", "5")
    assert res.exit_code == 2, res.output
    assert agents.running == before
    assert "a1: rolled back to the new plan it already ran" in res.output
    assert f"a2: rolled back to the plan of {old.plans['a2'].source_revision[:12]}" in res.output


def test_an_interrupted_canary_resumes_from_its_journal(canary_cli: CanaryCli) -> None:
    agents, new = canary_cli.agents, canary_cli.new
    real_push = agents.push
    pushes = 0

    async def push_then_die(fleet: CompiledFleet) -> AggregateResult:
        nonlocal pushes
        pushes += 1
        if pushes == 3:  # step 2's canary: the controller dies
            raise RuntimeError("controller killed")
        return await real_push(fleet)

    agents.push = push_then_die  # type: ignore[method-assign]
    res = canary_cli.apply()
    assert isinstance(res.exception, RuntimeError), res.output
    journal = ApplyJournal.load(canary_cli.state)
    assert journal is not None and journal.done == 1
    # The killed process's lock goes with it (here: the run's Ctx, held by the traceback).
    assert res.exc_info is not None
    held = [v.lock for f, _ in traceback.walk_tb(res.exc_info[2]) for v in f.f_locals.values()
            if isinstance(v, Ctx) and v.lock is not None]  # fmt: skip
    assert held
    held[0].release()

    agents.push = real_push  # type: ignore[method-assign]
    res = canary_cli.apply()
    assert res.exit_code == 0, res.output
    assert "at step 2/3 use" in res.output
    assert agents.running == hashes(new)
    assert ApplyJournal.load(canary_cli.state) is None


def test_plans_in_force_are_reached_where_their_revision_says(
    fleets: tuple[CompiledFleet, CompiledFleet],
) -> None:
    """The new plans move a3's agent to another port; a3 does not answer there, so it is
    taken to run HEAD's plan, and a rollback reaches it where HEAD says it listens."""
    new, old = fleets
    moved = replace(new, endpoints={**new.endpoints, "a3": "127.0.0.1:9"})
    observed: dict[str, str | None] = {**hashes(old), "a3": None}
    decision = staged_apply.decide(moved, observed, head(old), None, no_compile)
    assert decision.previous is not None
    assert decision.previous.endpoints == old.endpoints
    given = staged_apply.from_revision(moved, staged_apply.Known(HEAD, old))
    assert given.restores(moved).endpoints == old.endpoints
