"""Staged rollout (controller.delivery.canary.run_staged) against the fake agents and fake clock of
test_canary: steps one after the other, each behind the gates, and the walk back."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.canary_fakes import FakeClock, TunnelFleet, compiled
from vpnfleet.controller.delivery.canary import run_canary, run_staged, step_fleet
from vpnfleet.controller.delivery.health import HealthGate
from vpnfleet.controller.delivery.staging import stage
from vpnfleet.controller.fleet.operations import CompiledFleet
from vpnfleet.controller.fleet.rollout import batches
from vpnfleet.controller.reports.results import Outcome
from vpnfleet.controller.statedir.state import StateDir

HOSTS = ["a1", "a2", "a3", "a4"]


@pytest.fixture
def fleets(tmp_path: Path) -> tuple[CompiledFleet, CompiledFleet]:
    state = StateDir(tmp_path / "state")
    return compiled(tmp_path, state, 2), compiled(tmp_path, state, None)


def hashes(fleet: CompiledFleet) -> dict[str, str]:
    return {h: fleet.message(h).content_hash for h in fleet.selected}


async def test_each_step_goes_to_every_host_before_the_next(
    fleets: tuple[CompiledFleet, CompiledFleet],
) -> None:
    new, old = fleets
    staging = stage(old.plans, new.plans, new.selected)
    steps = [step_fleet(new, s.plans) for s in staging.steps]
    clock = FakeClock()
    agents = TunnelFleet(clock, hashes(old))
    lines: list[str] = []
    out = await run_canary(
        new,
        old,
        agents,
        canary=1,
        serial=("2",),
        gate=HealthGate(5, 1),
        clock=clock.clock(),
        report=lines.append,
        staging=staging,
    )
    assert out.regression == "" and out.exit_code == 0
    expected = [
        (h, hashes(step)[h]) for step in steps for batch in (["a1"], ["a2", "a3"], ["a4"])
        for h in batch
    ]  # fmt: skip
    assert agents.pushes == expected
    assert agents.running == hashes(new)
    assert [s.state for s in out.steps] == ["done"] * 3
    assert [h.outcome for h in out.result] == [Outcome.CHANGED] * 4
    data = out.to_json()
    staged = data["staging"]
    assert isinstance(staged, dict)
    assert [s["name"] for s in staged["steps"]] == ["accept", "use", "final"]
    assert {"host": "a1", "peer": "a2", "fields": ["psk"]} in staged["staged"]
    assert "staged: a1 -> a2: psk" in lines
    assert "step 2/3 use, canary: applying to a1" in lines
    assert "step 3/3 final, batch 2: healthy" in lines


async def test_regression_in_a_later_step_walks_every_host_back(
    fleets: tuple[CompiledFleet, CompiledFleet],
) -> None:
    new, old = fleets
    staging = stage(old.plans, new.plans, new.selected)
    accept, use, _ = (step_fleet(new, s.plans) for s in staging.steps)
    clock = FakeClock()
    agents = TunnelFleet(clock, hashes(old))
    agents.auth_fails_on = use.message("a3").content_hash
    out = await run_staged(
        new,
        old,
        agents,
        staging,
        batches(HOSTS, ("2",)),
        canary=False,
        gate=HealthGate(30, 1),
        clock=clock.clock(),
    )
    assert out.regression.startswith(
        "step 2/3 use, batch 2 (a3, a4): authentication failed: a3: peer"
    )
    assert out.exit_code == 2
    # Back to "accept both" first (it agrees with "use" and with the plans in force),
    # then the plans in force.
    tail = agents.pushes[-8:]
    assert tail == [(h, hashes(accept)[h]) for h in HOSTS] + [(h, hashes(old)[h]) for h in HOSTS]
    assert agents.running == hashes(old)
    assert out.rolled_back == HOSTS and out.rollback_failed == []
    assert [s.state for s in out.steps] == ["done", "regression", "not attempted"]
    assert out.result.aborted == out.regression


async def test_regression_in_the_first_step_restores_only_the_touched_hosts(
    fleets: tuple[CompiledFleet, CompiledFleet],
) -> None:
    new, old = fleets
    staging = stage(old.plans, new.plans, new.selected)
    accept = step_fleet(new, staging.steps[0].plans)
    clock = FakeClock()
    agents = TunnelFleet(clock, hashes(old))
    agents.broken_hash = accept.message("a1").content_hash
    out = await run_canary(
        new, old, agents, canary=1, gate=HealthGate(5, 1), clock=clock.clock(), staging=staging
    )
    # Its SAs stay "connecting": the new ones never come up.
    assert out.regression == (
        "step 1/3 accept, canary (a1): not re-established after 5s: a1->a2, a1->a3, a1->a4"
    )
    assert agents.pushes == [("a1", hashes(accept)["a1"]), ("a1", hashes(old)["a1"])]
    assert out.rolled_back == ["a1"]
    assert out.result.hosts(Outcome.SKIPPED) == ["a2", "a3", "a4"]


async def test_unstaged_change_rolls_out_as_before_and_says_so(
    fleets: tuple[CompiledFleet, CompiledFleet],
) -> None:
    new, old = fleets
    staging = stage(old.plans, new.plans, ["a1"])  # --limit a1: no far end in the run
    assert not staging.staged and staging.unstaged
    one = CompiledFleet(new.inventory, ["a1"], {"a1": new.plans["a1"]}, {}, new.endpoints)
    clock = FakeClock()
    agents = TunnelFleet(clock, hashes(old))
    out = await run_canary(
        one, old, agents, canary=1, gate=HealthGate(5, 1), clock=clock.clock(), staging=staging
    )
    assert agents.pushes == [("a1", one.message("a1").content_hash)]
    data = out.to_json()
    staged = data["staging"]
    assert isinstance(staged, dict)
    assert staged["steps"] == [] and staged["staged"] == []
    assert staged["unstaged"][0]["reason"] == "a2 is not part of this run (--limit)"


async def test_step_waits_until_the_changed_tunnels_are_set_up_again(
    fleets: tuple[CompiledFleet, CompiledFleet],
) -> None:
    # A healthy-looking batch whose old SAs stay in force (the new ones never come up)
    # has not put the step in force: a regression naming the tunnels.
    new, old = fleets
    staging = stage(old.plans, new.plans, new.selected)
    clock = FakeClock()
    agents = TunnelFleet(clock, hashes(old))
    agents.stuck = {"a1"}
    lines: list[str] = []
    out = await run_canary(
        new,
        old,
        agents,
        canary=1,
        gate=HealthGate(5, 1),
        clock=clock.clock(),
        report=lines.append,
        staging=staging,
    )
    assert out.regression == (
        "step 1/3 accept, canary (a1): not re-established after 5s: a1->a2, a1->a3, a1->a4"
    )
    assert "waiting for 3 tunnel(s) to re-establish: a1->a2 …" in lines
    assert out.rolled_back == ["a1"]
    assert agents.running == hashes(old)
