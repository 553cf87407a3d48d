"""PSK rotation (controller.rotate.rotation): staging order, inventory epoch, journal, resume.

Agents are fakes that keep, per (host, peer), when the IKE SA in force was established;
a pair re-establishes when its initiator is pushed a plan whose key the responder already
holds, as the agent engine does make-before-break. The clock is fake: nothing sleeps.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from vpnfleet.controller.delivery.health import Clock
from vpnfleet.controller.fleet import operations
from vpnfleet.controller.fleet.operations import CompiledFleet
from vpnfleet.controller.reports.results import AggregateResult, HostResult, Outcome
from vpnfleet.controller.reports.status import (
    AgentStatusView,
    ChildSaView,
    FleetStatus,
    HostStatus,
    IkeSaView,
)
from vpnfleet.controller.rotate.rotation import (
    RotationError,
    RotationJournal,
    inventory_epoch,
    prepare_psk_rotation,
    psk_pairs,
    run_psk_rotation,
    staging_waves,
    write_inventory_epoch,
)
from vpnfleet.controller.statedir.state import StateDir

LAB = Path(__file__).resolve().parents[3] / "inventories" / "lab"


@dataclass
class FakeClock:
    t: float = 100.0

    def now(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        self.t += seconds


@dataclass
class MeshAgents:
    """Each host's peers, the PSK epoch each host holds per peer, SA established times."""

    clock: FakeClock
    epochs: dict[tuple[str, str], int]  # (host, peer) -> epoch of the key it holds
    established: dict[tuple[str, str], float] = field(default_factory=dict)
    auth_failures: int = 0
    crash_after: int | None = None  # pushes accepted before the controller "dies"
    pushes: list[str] = field(default_factory=list)
    stale: set[str] = field(default_factory=set)  # hosts that ack but keep the old key

    async def push(self, fleet: CompiledFleet) -> AggregateResult:
        out = AggregateResult()
        for h in fleet.selected:
            if self.crash_after is not None and len(self.pushes) >= self.crash_after:
                raise KeyboardInterrupt
            self.pushes.append(h)
            for p in fleet.plans[h].peers:
                if h not in self.stale:
                    self.epochs[(h, p.name)] = p.auth.epoch
            for p in fleet.plans[h].peers:
                if not p.initiator:
                    continue  # a responder only answers with its new key
                if self.epochs[(p.name, h)] == p.auth.epoch:
                    self.established[(h, p.name)] = self.clock.t + 0.5
                    self.established[(p.name, h)] = self.clock.t + 0.5
                else:
                    self.auth_failures += 1  # old SA kept; the engine retries
            out.add(HostResult(h, Outcome.CHANGED))
        return out

    async def observe(self, fleet: CompiledFleet) -> FleetStatus:
        hosts = []
        for h in fleet.selected:
            ikes = tuple(
                IkeSaView(
                    peer=p.name,
                    state="established",
                    established_at=self.established.get((h, p.name), 1.0)
                    if self.established.get((h, p.name), 0) <= self.clock.t
                    else 1.0,
                    children=(ChildSaView(state="installed"),),
                )
                for p in fleet.plans[h].peers
            )
            view = AgentStatusView(host=h, content_hash="x", ike_sas=ikes)
            hosts.append(HostStatus(h, "x", view))
        return FleetStatus(hosts)


@pytest.fixture
def inv(tmp_path: Path) -> Path:
    path = tmp_path / "inv"
    shutil.copytree(LAB, path)
    return path


def compile_at(inv: Path, state: StateDir) -> CompiledFleet:
    return operations.compile_fleet(inv, state)


def test_waves_put_responders_before_initiators(inv: Path, tmp_path: Path) -> None:
    fleet = compile_at(inv, StateDir(tmp_path / "s"))
    # The lab mesh: the lower name initiates, so the highest name goes first.
    assert staging_waves(fleet.plans, fleet.selected) == [["a4"], ["a3"], ["a2"], ["a1"]]


def test_initiator_ring_shares_one_wave() -> None:
    @dataclass
    class Auth:
        method: object
        epoch: int = 0

    @dataclass
    class P:
        name: str
        initiator: bool
        managed: bool
        auth: Auth

    @dataclass
    class Plan:
        peers: tuple[P, ...]

    from vpnfleet.controller.planner.model import AuthMethod

    psk = Auth(AuthMethod.PSK)
    ring = {
        "x": Plan((P("y", True, True, psk), P("z", False, True, psk))),
        "y": Plan((P("z", True, True, psk), P("x", False, True, psk))),
        "z": Plan((P("x", True, True, psk), P("y", False, True, psk))),
        "w": Plan((P("x", False, True, psk),)),
    }
    assert staging_waves(ring, ["x", "y", "z", "w"]) == [["w"], ["x", "y", "z"]]  # type: ignore[arg-type]


def test_write_inventory_epoch_replaces_or_appends(inv: Path) -> None:
    path = write_inventory_epoch(inv, 3)
    text = path.read_text()
    assert text.count("psk_epoch") == 1 and text.endswith("psk_epoch: 3\n")
    assert "ike_proposals:" in text  # the rest is kept
    write_inventory_epoch(inv, 4)
    assert path.read_text().count("psk_epoch: 4") == 1
    assert "psk_epoch: 3" not in path.read_text()


def test_prepare_bumps_epoch_and_refuses_going_back(inv: Path, tmp_path: Path) -> None:
    state = StateDir(tmp_path / "s")
    journal, fleet, resumed = prepare_psk_rotation(inv, state, lambda: compile_at(inv, state))
    # psk_epoch defaults to 1.
    assert (journal.from_epoch, journal.epoch, resumed) == (1, 2, False)
    assert inventory_epoch(fleet) == 2
    assert set(psk_pairs(fleet.plans).values()) == {2}
    assert RotationJournal.load(state) == journal
    with pytest.raises(RotationError, match="unfinished rotation to epoch 2"):
        prepare_psk_rotation(inv, state, lambda: compile_at(inv, state), 5)
    journal.finished_at = 1.0
    journal.save(state)
    with pytest.raises(RotationError, match="--epoch 2 is not above the inventory's psk_epoch 2"):
        prepare_psk_rotation(inv, state, lambda: compile_at(inv, state), 2)


def test_host_override_below_target_is_named_and_nothing_changes(inv: Path, tmp_path: Path) -> None:
    state = StateDir(tmp_path / "s")
    (inv / "host_vars").mkdir()
    (inv / "host_vars" / "a1.yaml").write_text("psk_epoch: 1\n")
    (inv / "host_vars" / "a2.yaml").write_text("psk_epoch: 1\n")
    with pytest.raises(RotationError, match=r"pairs still below epoch 2 .*a1->a2 \(epoch 1\)"):
        prepare_psk_rotation(inv, state, lambda: compile_at(inv, state))
    assert "psk_epoch" not in (inv / "group_vars" / "all.yaml").read_text()  # restored
    assert not RotationJournal.path(state).exists()


def test_bad_journal_is_a_clear_error(tmp_path: Path) -> None:
    state = StateDir(tmp_path / "s")
    path = RotationJournal.path(state)
    path.parent.mkdir(parents=True)
    path.write_text("{not json")
    with pytest.raises(RotationError, match="unreadable rotation journal"):
        RotationJournal.load(state)
    path.write_text('{"version": 99}')
    with pytest.raises(RotationError, match="not a version 1 rotation journal"):
        RotationJournal.load(state)


def start_epochs(fleet: CompiledFleet) -> dict[tuple[str, str], int]:
    return {(h, p): 1 for (h, p) in psk_pairs(fleet.plans)}


async def test_rotation_stages_without_auth_failure(inv: Path, tmp_path: Path) -> None:
    state = StateDir(tmp_path / "s")
    journal, fleet, _ = prepare_psk_rotation(inv, state, lambda: compile_at(inv, state))
    clock = FakeClock()
    agents = MeshAgents(clock, start_epochs(fleet))
    lines: list[str] = []
    out = await run_psk_rotation(
        journal,
        fleet,
        state,
        agents,
        clock=Clock(clock.now, clock.sleep),
        report=lines.append,
    )
    assert out.error == "" and out.exit_code == 0
    assert agents.pushes == ["a4", "a3", "a2", "a1"]
    assert agents.auth_failures == 0
    assert set(agents.epochs.values()) == {2}
    assert all(t > 100 for t in agents.established.values()) and len(agents.established) == 12
    saved = RotationJournal.load(state)
    assert saved is not None and saved.finished and saved.done == ["a4", "a3", "a2", "a1"]
    assert lines[-1] == "rotation to PSK epoch 2 done"


async def test_interrupted_rotation_resumes_where_it_stopped(inv: Path, tmp_path: Path) -> None:
    state = StateDir(tmp_path / "s")
    journal, fleet, _ = prepare_psk_rotation(inv, state, lambda: compile_at(inv, state))
    clock = FakeClock()
    agents = MeshAgents(clock, start_epochs(fleet), crash_after=2)
    with pytest.raises(KeyboardInterrupt):
        await run_psk_rotation(journal, fleet, state, agents, clock=Clock(clock.now, clock.sleep))
    saved = RotationJournal.load(state)
    assert saved is not None and saved.done == ["a4", "a3"] and not saved.finished

    agents.crash_after = None
    journal, fleet, resumed = prepare_psk_rotation(inv, state, lambda: compile_at(inv, state))
    assert resumed and journal.epoch == 2
    out = await run_psk_rotation(
        journal, fleet, state, agents, resumed=True, clock=Clock(clock.now, clock.sleep)
    )
    assert out.error == "" and sorted(out.skipped) == ["a3", "a4"]
    assert agents.pushes == ["a4", "a3", "a2", "a1"]  # nobody pushed twice
    assert agents.auth_failures == 0


async def test_tunnel_not_reestablished_stops_the_wave(inv: Path, tmp_path: Path) -> None:
    state = StateDir(tmp_path / "s")
    journal, fleet, _ = prepare_psk_rotation(inv, state, lambda: compile_at(inv, state))
    clock = FakeClock()
    agents = MeshAgents(clock, start_epochs(fleet))
    agents.stale = {"a4"}  # acknowledges, but keeps answering with the old key
    out = await run_psk_rotation(
        journal, fleet, state, agents, timeout=5, clock=Clock(clock.now, clock.sleep)
    )
    assert out.error == "wave 2: not re-established after 5s: a3->a4"
    assert out.exit_code == 2
    assert agents.auth_failures == 1
    saved = RotationJournal.load(state)
    assert saved is not None and saved.done == ["a4", "a3"] and not saved.finished


def test_rotate_without_fleet_ca_changes_nothing(inv: Path, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from vpnfleet.controller.cli import main

    before = (inv / "group_vars" / "all.yaml").read_text()
    state = tmp_path / "s"
    res = CliRunner().invoke(main, ["--state", str(state), "rotate", "psk", "-i", str(inv)])
    assert res.exit_code == 1, res.output
    assert "no fleet CA" in res.output
    assert (inv / "group_vars" / "all.yaml").read_text() == before
    assert not RotationJournal.path(StateDir(state)).exists()
