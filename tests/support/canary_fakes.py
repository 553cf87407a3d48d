"""A fake fleet and a manual clock for the canary and staged-rollout state machines."""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path

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
    LivenessView,
)
from vpnfleet.controller.statedir.state import StateDir

LAB = Path(__file__).resolve().parents[2] / "inventories" / "lab"


@dataclass
class FakeClock:
    t: float = 0.0

    def now(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        self.t += seconds

    def clock(self) -> Clock:
        return Clock(self.now, self.sleep)


def sa(peer: str, packets: int, *, state: str = "established", error: str = "") -> IkeSaView:
    child = ChildSaView(name=peer, state="installed", spi_in=7, packets_in=packets)
    return IkeSaView(peer=peer, state=state, last_error=error, children=(child,))


@dataclass
class FakeFleet:
    """Agents: the plan hash each runs, and a status function of (host, polls so far)."""

    clock: FakeClock
    running: dict[str, str] = field(default_factory=dict)  # host -> content hash in force
    broken_hash: str = ""  # a plan whose hosts never get healthy
    auth_fails_on: str = ""  # a plan whose hosts report AUTHENTICATION_FAILED
    unreachable: set[str] = field(default_factory=set)
    strangers_at: set[str] = field(default_factory=set)  # hosts someone sends bad IKE to
    idle: bool = False  # no traffic: ESP packet counters stay at zero
    unanswered_on: str = ""  # a plan whose hosts' peers never answer a liveness check
    pushes: list[tuple[str, str]] = field(default_factory=list)  # (host, hash) in order
    polls: int = 0
    reported: dict[str, list[str]] = field(default_factory=dict)  # host -> peers last shown
    liveness_asked: list[list[str]] = field(default_factory=list)  # hosts, per call

    async def push(self, fleet: CompiledFleet) -> AggregateResult:
        out = AggregateResult()
        for h in fleet.selected:
            digest = fleet.message(h).content_hash
            self.pushes.append((h, digest))
            if h in self.unreachable:
                out.add(HostResult(h, Outcome.UNREACHABLE, error="connection refused"))
                continue
            self.running[h] = digest
            out.add(HostResult(h, Outcome.CHANGED, content_hash=digest))
        return out

    async def observe(self, fleet: CompiledFleet) -> FleetStatus:
        self.polls += 1
        hosts = []
        for h in fleet.selected:
            digest = self.running.get(h, "")
            if digest == self.broken_hash:
                ikes = (sa("peer", 0, state="connecting"),)
            elif digest == self.auth_fails_on:
                ikes = (sa("peer", 0, state="connecting", error="AUTHENTICATION_FAILED: psk"),)
            else:
                # Traffic flows (counters grow per poll), unless the fleet is idle.
                ikes = (sa("peer", 0 if self.idle else self.polls),)
            if h in self.strangers_at:
                # A new failure, with new text of the sender's choosing, every poll.
                ikes = tuple(
                    replace(
                        ike,
                        unauthenticated_failures=self.polls,
                        last_unauthenticated_failure=f"from 192.0.2.66:500: "
                        f"AUTHENTICATION_FAILED: peer identity x{self.polls}, expected peer",
                    )
                    for ike in ikes
                )
            view = AgentStatusView(host=h, content_hash=digest, ike_sas=ikes)
            hosts.append(HostStatus(h, fleet.message(h).content_hash, view))
            self.reported[h] = [ike.peer for ike in ikes]
        return FleetStatus(hosts)

    async def liveness(
        self, fleet: CompiledFleet, wait: float
    ) -> dict[str, tuple[LivenessView, ...] | str]:
        """Each peer of the SAs last shown answers, unless the plan in force is
        ``unanswered_on`` (the peer lost the SA: it was set up, it no longer answers)."""
        self.liveness_asked.append(list(fleet.selected))
        out: dict[str, tuple[LivenessView, ...] | str] = {}
        for h in fleet.selected:
            if h in self.unreachable:
                out[h] = "connection refused"
                continue
            silent = self.running.get(h, "") == self.unanswered_on
            out[h] = tuple(
                LivenessView(p, False, detail=f"no answer within {wait:g} s")
                if silent
                else LivenessView(p, True, round_trip_seconds=0.001)
                for p in self.reported.get(h, ())
            )
        return out


def compiled(tmp_path: Path, state: StateDir, epoch: int | None = None) -> CompiledFleet:
    inv = tmp_path / f"inv{epoch}"
    shutil.copytree(LAB, inv, dirs_exist_ok=True)
    if epoch is not None:
        with (inv / "group_vars" / "all.yaml").open("a") as f:
            f.write(f"psk_epoch: {epoch}\n")
    return operations.compile_fleet(inv, state)


@dataclass
class TunnelFleet(FakeFleet):
    """The fake agents, reporting one IKE SA per peer of the plan in force: an agent
    given a new plan sets up the SAs it initiates again (newer ``established_at``)."""

    pushed: dict[str, int] = field(default_factory=dict)  # host -> pushes so far
    stuck: set[str] = field(default_factory=set)  # hosts whose new SAs never come up

    async def push(self, fleet: CompiledFleet) -> AggregateResult:
        for h in fleet.selected:
            if h not in self.stuck:
                self.pushed[h] = self.pushed.get(h, 0) + 1
        return await super().push(fleet)

    async def observe(self, fleet: CompiledFleet) -> FleetStatus:
        plain = await super().observe(fleet)
        hosts = []
        for h in plain.hosts:
            assert h.observed is not None
            (template,) = h.observed.ike_sas
            ikes = tuple(
                replace(template, peer=p.name, established_at=float(self.pushed.get(h.host, 0)))
                for p in fleet.plans[h.host].peers
            )
            hosts.append(replace(h, observed=replace(h.observed, ike_sas=ikes)))
            self.reported[h.host] = [ike.peer for ike in ikes]
        return FleetStatus(hosts)
