"""Rolling upgrade of the agents to the controller's own version, behind health gates.

``vpnfleet upgrade`` takes the selected hosts in the batches of ``apply --canary``: the
canary batch (the first N hosts), then the rest in ``--serial`` batches. For each batch:

1. read the version each host's agent runs (PREFIX/venv); a host already at the
   controller's version is ``ok`` and left alone; a host with no agent installed fails
   (bootstrap it first);
2. read the status of the hosts to upgrade (where traffic counts from), then on each
   one install the new version (its wheels are kept beside the old ones, under
   PREFIX/wheels/VERSION), restart the agent and wait until it answers gRPC health;
3. put the inventory's plan in force on them, as ``apply`` does (the new agent already
   runs the plan it kept; this also proves it takes plans from this controller);
4. the health gate of ``apply --canary`` (controller/delivery/health.py): the plan in force,
   every IKE SA established with its child SAs, no new authentication failure, and
   traffic or liveness on each tunnel.

A host that fails a step, or a batch that fails its gate, is a regression: each host of
that batch that was upgraded gets its previous version back (reinstalled from
PREFIX/wheels/OLD, restarted, healthy again) and the run stops; later batches are not
attempted. Hosts of earlier batches passed their gates and keep the new version (an
agent of one version talks IKE to agents of the previous one, and the version-skew rule
of protos/versions.py lets this controller drive both).

Hosts are reached through :class:`AgentHosts` and agents through the health gate's
:class:`~vpnfleet.controller.delivery.health.GateAccess`, so tests drive this module with fakes
and a fake clock.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from typing import Protocol

from ..delivery.canary import CanaryResult, canary_batches
from ..delivery.health import Clock, GateAccess, HealthGate, Report, wait_healthy
from ..fleet.operations import CompiledFleet
from ..reports.results import ChangeLine, HostResult, Outcome
from .wheels import PROJECT


class HostStepError(Exception):
    """A step failed on a host (the message says which and why)."""


class HostUnreachable(HostStepError):
    """The host could not be reached over SSH."""


class AgentHosts(Protocol):
    """What an upgrade does on a host, over SSH."""

    async def version(self, host: str) -> str | None:
        """The version the host's agent is installed at (None: no agent there)."""
        ...

    async def upgrade(self, host: str) -> None:
        """Install the controller's version, restart the agent, wait for its health."""
        ...

    async def revert(self, host: str, version: str) -> None:
        """Reinstall ``version`` from the wheels kept on the host, restart, wait."""
        ...


@dataclass(frozen=True, slots=True)
class UpgradeOptions:
    target: str  # the version upgraded to: the controller's own
    canary: int = 1
    serial: Sequence[str] = ()
    forks: int = 10
    check: bool = False  # say which hosts would be upgraded; change nothing

    def __post_init__(self) -> None:
        if self.forks < 1:
            raise ValueError(f"--forks must be 1 or more, got {self.forks}")
        canary_batches([], self.canary, self.serial)  # CanaryError on a bad count


def version_change(host_version: str | None, target: str) -> ChangeLine:
    return ChangeLine(
        "agent",
        f"{PROJECT} {target}",
        "changed",
        (f"was {host_version}",) if host_version else (),
    )


async def _bounded(
    forks: int, hosts: Sequence[str], step: Callable[[str], Awaitable[None]]
) -> dict[str, str]:
    """Run ``step`` on every host, at most ``forks`` at once: host -> error ('' = done)."""
    gate = asyncio.Semaphore(forks)

    async def one(host: str) -> tuple[str, str]:
        async with gate:
            try:
                await step(host)
            except HostStepError as exc:
                return host, str(exc) or type(exc).__name__
            return host, ""

    return dict(await asyncio.gather(*(one(h) for h in hosts)))


async def run_upgrade(
    fleet: CompiledFleet,
    hosts: AgentHosts,
    access: GateAccess,
    options: UpgradeOptions,
    *,
    gate: HealthGate | None = None,
    clock: Clock | None = None,
    report: Report | None = None,
) -> CanaryResult:
    """Upgrade ``fleet``'s selected hosts batch by batch (see the module's text)."""
    gate = gate or HealthGate()
    clock = clock or Clock()
    out = CanaryResult(batches=canary_batches(fleet.selected, options.canary, options.serial))
    for index, batch in enumerate(out.batches):
        label = "canary" if index == 0 else f"batch {index}"
        started = time.monotonic()
        reason = await _batch(fleet, hosts, access, options, gate, clock, report, label, batch,
                              out, started)  # fmt: skip
        if not reason:
            continue
        out.regression = f"{label} ({', '.join(batch)}): {reason}"
        for rest in out.batches[index + 1 :]:
            out.result.extend(
                HostResult(h, Outcome.SKIPPED, error="not attempted: " + out.regression)
                for h in rest
            )
        out.result.aborted = out.regression
        break
    return out


async def _batch(
    fleet: CompiledFleet,
    hosts: AgentHosts,
    access: GateAccess,
    options: UpgradeOptions,
    gate: HealthGate,
    clock: Clock,
    report: Report | None,
    label: str,
    batch: list[str],
    out: CanaryResult,
    started: float,
) -> str:
    """One batch; its results go into ``out``; '' when it passed, else why not."""
    versions: dict[str, str | None] = {}
    errors: dict[str, str] = {}
    unreachable: set[str] = set()

    async def read(host: str) -> None:
        try:
            versions[host] = await hosts.version(host)
        except HostUnreachable:
            unreachable.add(host)
            raise

    errors.update({h: e for h, e in (await _bounded(options.forks, batch, read)).items() if e})
    todo = [h for h in batch if h in versions and versions[h] not in (None, options.target)]
    results: dict[str, HostResult] = {}
    for h in batch:
        if h in errors:
            kind = Outcome.UNREACHABLE if h in unreachable else Outcome.FAILED
            results[h] = HostResult(h, kind, error=errors[h])
        elif versions[h] is None:
            results[h] = HostResult(
                h,
                Outcome.FAILED,
                error=f"no agent installed: run `vpnfleet bootstrap -l {h}` first",
            )
        elif versions[h] == options.target:
            results[h] = HostResult(h, Outcome.OK)

    def finish(reason: str = "") -> str:
        seconds = time.monotonic() - started
        for h in batch:
            r = results.get(h) or HostResult(
                h, Outcome.CHANGED, changes=(version_change(versions[h], options.target),)
            )
            out.result.add(replace(r, seconds=seconds))
        return reason

    if options.check:
        return finish()  # --check reports every host, as Ansible's does
    bad = [f"{r.host}: {r.outcome.value} {r.error}" for r in results.values() if r.failed]
    bad += [f"{r.host}: unreachable {r.error}" for r in results.values() if r.unreachable]
    if bad:
        for h in todo:
            results[h] = HostResult(h, Outcome.SKIPPED, error="not upgraded: the batch failed")
        return finish("; ".join(bad))
    if not todo:
        return finish()

    if report:
        report(f"{label}: upgrading {', '.join(todo)} to {PROJECT} {options.target}")
    part = fleet.subset(todo)
    before = await access.observe(part)
    failed = await _bounded(options.forks, todo, hosts.upgrade)
    reason = "; ".join(f"{h}: {e}" for h, e in failed.items() if e)
    if not reason:
        pushed = await access.push(part)
        reason = "; ".join(
            f"{r.host}: {r.outcome.value} {r.error}".rstrip()
            for r in pushed
            if r.failed or r.unreachable
        )
    if not reason:
        reason = await wait_healthy(access, part, before, gate, clock, report)
    if not reason:
        if report:
            report(f"{label}: healthy")
        return finish()

    if report:
        report(f"{label}: REGRESSION, putting the previous version back: {reason}")
    reverted = await _bounded(options.forks, todo, lambda h: hosts.revert(h, str(versions[h])))
    for h in todo:
        old = versions[h]
        if reverted[h]:
            out.rollback_failed.append(f"{h}: reinstalling {PROJECT} {old}: {reverted[h]}")
            results[h] = HostResult(h, Outcome.FAILED, error=f"{reason}; rollback failed")
        else:
            out.rolled_back.append(h)
            results[h] = HostResult(
                h, Outcome.FAILED, error=f"rolled back to {PROJECT} {old}: {failed[h] or reason}"
            )
    return finish(reason)
