"""Canary rollout (controller.delivery.canary) against fake agents on a fake clock.

The fake fleet answers GetStatus from a table the test sets per host and records every
push; its clock only moves when the rollout sleeps, so no test waits.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from tests.support.canary_fakes import LAB, FakeClock, FakeFleet, compiled, sa
from vpnfleet.controller.delivery.canary import canary_batches, run_canary
from vpnfleet.controller.delivery.health import CanaryError, HealthGate, auth_failures, unhealthy
from vpnfleet.controller.fleet.operations import CompiledFleet
from vpnfleet.controller.reports.results import Outcome
from vpnfleet.controller.reports.status import (
    AgentStatusView,
    FleetStatus,
    HostStatus,
    LivenessView,
)
from vpnfleet.controller.statedir.state import StateDir


@pytest.fixture
def fleets(tmp_path: Path) -> tuple[CompiledFleet, CompiledFleet]:
    state = StateDir(tmp_path / "state")
    return compiled(tmp_path, state, 2), compiled(tmp_path, state, None)


def test_batches_canary_first_then_serial() -> None:
    hosts = ["a1", "a2", "a3", "a4", "a5"]
    assert canary_batches(hosts, 1, ()) == [["a1"], ["a2", "a3", "a4", "a5"]]
    assert canary_batches(hosts, 2, ("2",)) == [["a1", "a2"], ["a3", "a4"], ["a5"]]
    assert canary_batches(hosts, 9, ()) == [hosts]


def test_bad_options_are_refused_by_name() -> None:
    with pytest.raises(CanaryError, match="--canary takes a host count"):
        canary_batches(["a1"], 0, ())
    with pytest.raises(CanaryError, match="--health-timeout must be positive"):
        HealthGate(timeout=0)


async def test_healthy_rollout_reaches_every_host(
    fleets: tuple[CompiledFleet, CompiledFleet],
) -> None:
    new, old = fleets
    clock = FakeClock()
    agents = FakeFleet(clock, {h: old.message(h).content_hash for h in old.selected})
    lines: list[str] = []
    out = await run_canary(
        new, old, agents, canary=1, gate=HealthGate(5, 1), clock=clock.clock(), report=lines.append
    )
    assert out.regression == "" and out.exit_code == 0
    assert out.batches == [["a1"], ["a2", "a3", "a4"]]
    assert all(agents.running[h] == new.message(h).content_hash for h in new.selected)
    assert "canary: healthy" in lines and "batch 1: healthy" in lines


async def test_gate_timeout_rolls_the_canary_back_and_skips_the_rest(
    fleets: tuple[CompiledFleet, CompiledFleet],
) -> None:
    new, old = fleets
    clock = FakeClock()
    agents = FakeFleet(clock, {h: old.message(h).content_hash for h in old.selected})
    agents.broken_hash = new.message("a1").content_hash
    out = await run_canary(new, old, agents, canary=1, gate=HealthGate(5, 1), clock=clock.clock())
    assert out.exit_code == 2
    assert "canary (a1): not healthy after 5s" in out.regression
    assert "peer peer IKE SA connecting" in out.regression
    assert "of waiting for the new plan in force, every IKE SA established" in out.regression
    assert "--no-health-traffic" not in out.regression  # not a failure about traffic
    assert out.rolled_back == ["a1"]
    assert agents.running["a1"] == old.message("a1").content_hash
    assert [h for h, _ in agents.pushes] == ["a1", "a1"]  # the push, then the rollback
    assert out.result.hosts(Outcome.SKIPPED) == ["a2", "a3", "a4"]
    assert 5 <= clock.t <= 6


async def test_authentication_failure_is_a_regression_at_once(
    fleets: tuple[CompiledFleet, CompiledFleet],
) -> None:
    new, old = fleets
    clock = FakeClock()
    agents = FakeFleet(clock, {h: old.message(h).content_hash for h in old.selected})
    agents.auth_fails_on = new.message("a2").content_hash
    out = await run_canary(new, old, agents, canary=1, gate=HealthGate(30, 1), clock=clock.clock())
    assert out.regression.startswith("batch 1 (a2, a3, a4): authentication failed: a2: peer")
    # The canary goes back too: the fleet ends on one revision.
    assert out.rolled_back == ["a1", "a2", "a3", "a4"]
    assert agents.running == {h: old.message(h).content_hash for h in old.selected}
    assert clock.t < 30


async def test_ike_failures_before_authentication_are_not_a_regression(
    fleets: tuple[CompiledFleet, CompiledFleet],
) -> None:
    """IKE SAs someone else started that failed before authenticating (anyone can send
    UDP to an agent) say nothing of the tunnels the rollout changed: the gate judges the
    SAs the agents initiated and the SAs in force, and the rollout goes on."""
    new, old = fleets
    clock = FakeClock()
    agents = FakeFleet(clock, {h: old.message(h).content_hash for h in old.selected})
    agents.strangers_at = {"a1", "a2", "a3", "a4"}
    out = await run_canary(new, old, agents, canary=1, gate=HealthGate(30, 1), clock=clock.clock())
    assert out.regression == "" and out.rolled_back == []
    assert all(agents.running[h] == new.message(h).content_hash for h in new.selected)


async def test_unreachable_host_in_batch_rolls_back(
    fleets: tuple[CompiledFleet, CompiledFleet],
) -> None:
    new, old = fleets
    clock = FakeClock()
    agents = FakeFleet(clock, {h: old.message(h).content_hash for h in old.selected})
    agents.unreachable = {"a1"}
    out = await run_canary(new, old, agents, canary=1, gate=HealthGate(5, 1), clock=clock.clock())
    assert out.regression == "canary (a1): apply failed: a1: unreachable connection refused"
    assert out.rollback_failed == ["a1: unreachable connection refused"]
    assert out.rolled_back == []


async def test_idle_fleet_passes_the_gate_by_liveness_checks(
    fleets: tuple[CompiledFleet, CompiledFleet],
) -> None:
    """No traffic anywhere: the gate asks the agents to check their peers' liveness (an
    IKE INFORMATIONAL exchange) and passes on the answers, without --no-health-traffic."""
    new, old = fleets
    clock = FakeClock()
    agents = FakeFleet(clock, {h: old.message(h).content_hash for h in old.selected}, idle=True)
    out = await run_canary(new, old, agents, canary=1, gate=HealthGate(5, 1), clock=clock.clock())
    assert out.regression == "" and out.exit_code == 0
    assert agents.running == {h: new.message(h).content_hash for h in new.selected}
    assert agents.liveness_asked == [["a1"], ["a2", "a3", "a4"]]
    assert clock.t == 0  # answered at the first poll


async def test_idle_tunnel_whose_peer_does_not_answer_fails_the_gate(
    fleets: tuple[CompiledFleet, CompiledFleet],
) -> None:
    """A tunnel that looks up (IKE SA established, child installed) but carries nothing
    and whose peer does not answer liveness checks is broken: the gate fails, saying
    what it waited for and how to leave traffic out of it."""
    new, old = fleets
    clock = FakeClock()
    agents = FakeFleet(clock, {h: old.message(h).content_hash for h in old.selected}, idle=True)
    agents.unanswered_on = new.message("a1").content_hash
    out = await run_canary(new, old, agents, canary=1, gate=HealthGate(5, 1), clock=clock.clock())
    assert out.exit_code == 2
    assert out.regression.startswith(
        "canary (a1): not healthy after 5s of waiting for the new plan in force, every IKE "
        "SA established with its child SA installed, no new AUTHENTICATION_FAILED, and on "
        "every tunnel ESP packets moving or, when it is idle, an answer to a liveness "
        "check (IKE INFORMATIONAL) sent after the push: a1: peer peer: ESP packet counters "
        "not moving and no answer to a liveness check: no answer within 3 s"
    ), out.regression
    assert out.regression.endswith(
        "--no-health-traffic leaves traffic and liveness out of the gate"
    )
    assert out.rolled_back == ["a1"]
    assert agents.running["a1"] == old.message("a1").content_hash
    assert out.result.hosts(Outcome.SKIPPED) == ["a2", "a3", "a4"]


async def test_regression_in_a_later_batch_rolls_back_every_host_the_run_touched(
    fleets: tuple[CompiledFleet, CompiledFleet],
) -> None:
    """The canary and the batches that passed go back with the failing batch, so no host
    is left on the new plans while the rest run the old ones; each host is named."""
    new, old = fleets
    clock = FakeClock()
    agents = FakeFleet(clock, {h: old.message(h).content_hash for h in old.selected})
    agents.broken_hash = new.message("a3").content_hash
    lines: list[str] = []
    out = await run_canary(
        new,
        old,
        agents,
        canary=1,
        serial=("1",),
        gate=HealthGate(5, 1),
        clock=clock.clock(),
        report=lines.append,
    )
    assert out.regression.startswith("batch 2 (a3): not healthy after 5s")
    assert out.rolled_back == ["a1", "a2", "a3"]
    assert agents.running == {h: old.message(h).content_hash for h in old.selected}
    assert [h for h, _ in agents.pushes] == ["a1", "a2", "a3", "a1", "a2", "a3"]
    assert out.result.hosts(Outcome.SKIPPED) == ["a4"]
    for h in ("a1", "a2", "a3"):
        assert f"rollback: {h}: previous plan in force" in lines


def test_gate_wants_traffic_or_liveness_and_ignores_old_auth_errors() -> None:
    def status(packets: int, error: str = "") -> FleetStatus:
        view = AgentStatusView(
            host="a1", content_hash="h", ike_sas=(sa("a2", packets, error=error),)
        )
        return FleetStatus([HostStatus("a1", "h", view)])

    idle = "a1: peer a2: ESP packet counters not moving"
    assert unhealthy(status(3), status(3), True) == [idle]
    assert unhealthy(status(3), status(4), True) == []
    assert unhealthy(status(3), status(3), False) == []
    answered = {"a1": (LivenessView("a2", True),)}
    assert unhealthy(status(3), status(3), True, answered) == []
    assert unhealthy(None, status(3), True, answered) == []
    silent = {"a1": (LivenessView("a2", False, detail="no answer within 3 s"),)}
    assert unhealthy(status(3), status(3), True, silent) == [
        idle + " and no answer to a liveness check: no answer within 3 s"
    ]
    assert unhealthy(status(3), status(3), True, {"a1": "deadline exceeded"}) == [
        idle + ", and the agent could not be asked for a liveness check: deadline exceeded"
    ]
    stale = status(1, "AUTHENTICATION_FAILED: x")
    assert auth_failures(stale, stale) == []
    assert auth_failures(status(1), stale) == ["a1: peer a2: AUTHENTICATION_FAILED: x"]
    drift = FleetStatus([replace(status(1).hosts[0], desired_hash="other")])
    assert unhealthy(None, drift, False) == ["a1: desired plan not in force"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--canary", "0"], "--canary takes a host count of at least 1, not 0"),
        (["--canary", "1", "--health-timeout", "-1"], "--health-timeout must be positive"),
        (["--canary", "1", "--check"], "--canary and --check do not go together"),
    ],
)
def test_apply_refuses_bad_canary_options(tmp_path: Path, args: list[str], message: str) -> None:
    from click.testing import CliRunner

    from vpnfleet.controller.cli import main

    state = tmp_path / "state"
    res = CliRunner().invoke(main, ["--state", str(state), "apply", "-i", str(LAB), *args])
    assert res.exit_code == 1, res.output
    assert message in res.output.replace("\n", " ")
    assert not (state / "generation").exists()  # nothing was pushed
