"""The rolling upgrade (controller/deploy/upgrade.py) on fake hosts, fake agents and a
fake clock: batches, hosts already at the version, health gates, rollback."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.support.canary_fakes import LAB, FakeClock, FakeFleet, compiled, sa
from vpnfleet.controller.delivery.canary import CanaryResult
from vpnfleet.controller.delivery.health import CanaryError, HealthGate
from vpnfleet.controller.deploy.upgrade import (
    HostStepError,
    HostUnreachable,
    UpgradeOptions,
    run_upgrade,
)
from vpnfleet.controller.fleet.operations import CompiledFleet
from vpnfleet.controller.reports.status import FleetStatus, HostStatus
from vpnfleet.controller.statedir.state import StateDir

OLD, NEW = "0.1.0", "0.2.0"


@dataclass
class UpgradeFleet(FakeFleet):
    """Fake agents; those in ``sick`` run a version whose tunnels never come up."""

    sick: set[str] = field(default_factory=set)

    async def observe(self, fleet: CompiledFleet) -> FleetStatus:
        status = await super().observe(fleet)
        hosts = []
        for h in status.hosts:
            if h.host in self.sick and h.observed is not None:
                view = h.observed.__class__(
                    host=h.host,
                    content_hash=h.observed.content_hash,
                    ike_sas=(sa("peer", 0, state="connecting"),),
                )
                h = HostStatus(h.host, h.desired_hash, view)
            hosts.append(h)
        return FleetStatus(hosts)


@dataclass
class FakeHosts:
    """Hosts over a fake SSH: the installed version of each, and what was done."""

    agents: UpgradeFleet
    installed: dict[str, str | None]
    target: str = NEW
    bad_version: bool = False  # the target version's agent never gets healthy
    fails_install: set[str] = field(default_factory=set)
    unreachable: set[str] = field(default_factory=set)
    log: list[tuple[str, str]] = field(default_factory=list)

    async def version(self, host: str) -> str | None:
        if host in self.unreachable:
            raise HostUnreachable(f"{host}: ssh: connection refused")
        return self.installed[host]

    async def upgrade(self, host: str) -> None:
        self.log.append(("upgrade", host))
        if host in self.fails_install:
            raise HostStepError("installing vpnfleet 0.2.0 failed: no space left on device")
        self.installed[host] = self.target
        if self.bad_version:
            self.agents.sick.add(host)

    async def revert(self, host: str, version: str) -> None:
        self.log.append(("revert", host))
        self.installed[host] = version
        self.agents.sick.discard(host)


@pytest.fixture
def fleet(tmp_path: Path) -> CompiledFleet:
    return compiled(tmp_path, StateDir(tmp_path / "state"))


def setup(fleet: CompiledFleet, **versions: str | None) -> tuple[FakeClock, FakeHosts]:
    clock = FakeClock()
    agents = UpgradeFleet(clock, {h: fleet.message(h).content_hash for h in fleet.selected})
    installed: dict[str, str | None] = {h: OLD for h in fleet.selected}
    installed.update(versions)
    return clock, FakeHosts(agents, installed)


async def upgrade(
    fleet: CompiledFleet, clock: FakeClock, hosts: FakeHosts, **options: object
) -> CanaryResult:
    return await run_upgrade(
        fleet,
        hosts,
        hosts.agents,
        UpgradeOptions(NEW, **options),  # type: ignore[arg-type]
        gate=HealthGate(5, 1),
        clock=clock.clock(),
    )


def outcomes(result: CanaryResult) -> dict[str, str]:
    return {r.host: r.outcome.value for r in result.result}


async def test_upgrades_batch_by_batch_and_leaves_current_hosts_ok(fleet: CompiledFleet) -> None:
    clock, hosts = setup(fleet, a3=NEW)
    out = await upgrade(fleet, clock, hosts, canary=1, serial=("2",))
    assert out.batches == [["a1"], ["a2", "a3"], ["a4"]]
    assert out.exit_code == 0 and out.regression == ""
    assert outcomes(out) == {"a1": "changed", "a2": "changed", "a3": "ok", "a4": "changed"}
    assert [str(c) for c in out.result.results["a1"].changes] == [
        "~ agent vpnfleet 0.2.0: was 0.1.0"
    ]
    assert hosts.log == [("upgrade", "a1"), ("upgrade", "a2"), ("upgrade", "a4")]
    assert set(hosts.installed.values()) == {NEW}
    # Each upgraded host was given its plan by the new agent's first push.
    assert [h for h, _ in hosts.agents.pushes] == ["a1", "a2", "a4"]


async def test_second_run_changes_nothing(fleet: CompiledFleet) -> None:
    clock, hosts = setup(fleet, a1=NEW, a2=NEW, a3=NEW, a4=NEW)
    out = await upgrade(fleet, clock, hosts)
    assert set(outcomes(out).values()) == {"ok"} and out.exit_code == 0
    assert hosts.log == [] and hosts.agents.pushes == []


async def test_check_says_what_would_change_and_changes_nothing(fleet: CompiledFleet) -> None:
    clock, hosts = setup(fleet, a2=NEW)
    out = await upgrade(fleet, clock, hosts, check=True)
    assert outcomes(out) == {"a1": "changed", "a2": "ok", "a3": "changed", "a4": "changed"}
    assert hosts.log == [] and hosts.agents.pushes == [] and hosts.agents.polls == 0
    assert hosts.installed["a1"] == OLD


async def test_canary_failing_its_gate_gets_its_version_back_and_the_rest_waits(
    fleet: CompiledFleet,
) -> None:
    clock, hosts = setup(fleet)
    hosts.bad_version = True
    out = await upgrade(fleet, clock, hosts, canary=1)
    assert out.exit_code == 2
    assert out.regression.startswith("canary (a1): not healthy after 5s")
    assert out.rolled_back == ["a1"] and out.rollback_failed == []
    assert hosts.installed == {"a1": OLD, "a2": OLD, "a3": OLD, "a4": OLD}
    assert hosts.log == [("upgrade", "a1"), ("revert", "a1")]
    assert outcomes(out) == {"a1": "failed", "a2": "skipped", "a3": "skipped", "a4": "skipped"}
    assert "rolled back to vpnfleet 0.1.0" in out.result.results["a1"].error
    assert out.result.results["a2"].error.startswith("not attempted: canary (a1)")


async def test_failed_install_in_a_later_batch_reverts_that_batch_only(
    fleet: CompiledFleet,
) -> None:
    clock, hosts = setup(fleet)
    hosts.fails_install = {"a3"}
    out = await upgrade(fleet, clock, hosts, canary=1, serial=("2",))
    assert out.regression == (
        "batch 1 (a2, a3): a3: installing vpnfleet 0.2.0 failed: no space left on device"
    )
    # a1 passed its gate and keeps the new version; the failing batch goes back.
    assert hosts.installed == {"a1": NEW, "a2": OLD, "a3": OLD, "a4": OLD}
    assert sorted(out.rolled_back) == ["a2", "a3"]
    assert outcomes(out) == {"a1": "changed", "a2": "failed", "a3": "failed", "a4": "skipped"}
    assert "no space left on device" in out.result.results["a3"].error
    assert ("upgrade", "a4") not in hosts.log


async def test_unreachable_host_stops_the_rollout_before_its_batch_changes(
    fleet: CompiledFleet,
) -> None:
    clock, hosts = setup(fleet)
    hosts.unreachable = {"a2"}
    out = await upgrade(fleet, clock, hosts, canary=1, serial=("3",))
    assert outcomes(out) == {"a1": "changed", "a2": "unreachable", "a3": "skipped", "a4": "skipped"}
    assert out.exit_code == 2 and "a2: unreachable" in out.regression
    assert ("upgrade", "a3") not in hosts.log


async def test_host_without_an_agent_fails_with_advice(fleet: CompiledFleet) -> None:
    clock, hosts = setup(fleet, a1=None)
    out = await upgrade(fleet, clock, hosts, canary=1)
    assert (
        out.result.results["a1"].error == "no agent installed: run `vpnfleet bootstrap -l a1` first"
    )
    assert hosts.log == []


def test_bad_options_are_refused_by_name() -> None:
    with pytest.raises(CanaryError, match="--canary takes a host count"):
        UpgradeOptions(NEW, canary=0)
    with pytest.raises(ValueError, match="--forks must be 1 or more"):
        UpgradeOptions(NEW, forks=0)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--canary", "0"], "--canary takes a host count of at least 1, not 0"),
        (["--forks", "0"], "--forks must be 1 or more, got 0"),
        (["--health-timeout", "0"], "--health-timeout must be positive"),
        (["--prefix", "opt/vpnfleet"], "--prefix must be an absolute path on the hosts"),
    ],
)
def test_upgrade_refuses_bad_options_before_contacting_anything(
    tmp_path: Path, args: list[str], message: str
) -> None:
    from click.testing import CliRunner

    from vpnfleet.controller.cli import main

    state = tmp_path / "state"
    res = CliRunner().invoke(main, ["--state", str(state), "upgrade", "-i", str(LAB), *args])
    assert res.exit_code == 1, res.output
    assert message in res.output.replace("\n", " ")
    assert not state.exists()  # no wheels built, no lock taken


async def test_check_reports_every_host_even_past_an_unreachable_one(
    fleet: CompiledFleet,
) -> None:
    clock, hosts = setup(fleet, a4=NEW)
    hosts.unreachable = {"a1"}
    out = await upgrade(fleet, clock, hosts, canary=1, check=True)
    assert outcomes(out) == {"a1": "unreachable", "a2": "changed", "a3": "changed", "a4": "ok"}
    assert out.regression == "" and out.exit_code == 4
    assert hosts.log == []
