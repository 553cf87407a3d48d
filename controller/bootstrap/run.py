"""Bootstrap across the selected hosts: connect to each over SSH, at most ``forks`` at
once, and check its prerequisites; one :class:`HostResult` per host."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..inventory import Inventory
from ..results import AggregateResult, HostResult, Outcome
from .connection import ConnectionSettings, ConnectionVarError, UnreachableError, settings_for
from .hostkeys import HostKeyPolicy
from .prerequisites import PrerequisiteReport, check_prerequisites
from .session import open_session
from .sshlib import asyncssh

DEFAULT_TIMEOUT = 10.0  # Ansible's connection timeout


@dataclass(frozen=True, slots=True)
class BootstrapOptions:
    policy: HostKeyPolicy
    forks: int = 10
    timeout: float = DEFAULT_TIMEOUT

    def __post_init__(self) -> None:
        if self.forks < 1:
            raise ValueError(f"--forks must be 1 or more, got {self.forks}")
        if self.timeout <= 0:
            raise ValueError(f"--timeout must be more than 0, got {self.timeout:g}")


@dataclass(frozen=True, slots=True)
class HostPlan:
    """One host as bootstrap sees it: how to reach it and which agent port it uses."""

    settings: ConnectionSettings
    agent_port: int


@dataclass(slots=True)
class CheckRun:
    result: AggregateResult = field(default_factory=AggregateResult)
    reports: dict[str, PrerequisiteReport] = field(default_factory=dict)


def host_plans(
    inventory: Inventory, hosts: Sequence[str], cwd: Path | None = None
) -> list[HostPlan]:
    """Every selected host's settings, or :class:`ConnectionVarError` listing each host
    whose variables cannot be used (before any host is contacted)."""
    plans: list[HostPlan] = []
    problems: list[str] = []
    for name in hosts:
        resolved = inventory.resolve(name)
        try:
            settings = settings_for(name, resolved.vars, cwd)
        except ConnectionVarError as exc:
            problems.append(str(exc))
            continue
        plans.append(HostPlan(settings, int(resolved.vars["agent_port"])))
    if problems:
        raise ConnectionVarError("\n".join(problems))
    return plans


async def check_hosts(
    plans: Sequence[HostPlan],
    options: BootstrapOptions,
    progress: Callable[[HostResult], None] = lambda _r: None,
) -> CheckRun:
    """Check every host's prerequisites; results in the order the hosts were given."""
    gate = asyncio.Semaphore(options.forks)
    run = CheckRun()

    async def one(plan: HostPlan) -> HostResult:
        async with gate:
            started = time.monotonic()
            host = plan.settings.host
            try:
                async with open_session(plan.settings, options.policy, options.timeout) as s:
                    report = await check_prerequisites(s, plan.settings, plan.agent_port)
            except UnreachableError as exc:
                result = HostResult(
                    host, Outcome.UNREACHABLE, error=str(exc), seconds=time.monotonic() - started
                )
            except (asyncssh.Error, OSError) as exc:
                result = HostResult(
                    host,
                    Outcome.UNREACHABLE,
                    error=f"{plan.settings.describe()}: connection lost: {exc}",
                    seconds=time.monotonic() - started,
                )
            else:
                run.reports[host] = report
                result = HostResult(
                    host,
                    Outcome.OK if report.ok else Outcome.FAILED,
                    error="" if report.ok else "missing " + "; ".join(map(str, report.missing)),
                    seconds=time.monotonic() - started,
                )
            progress(result)
            return result

    run.result.extend(await asyncio.gather(*(one(p) for p in plans)))
    return run
