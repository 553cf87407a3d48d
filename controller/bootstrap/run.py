"""Bootstrap across the selected hosts: connect to each over SSH, at most ``forks`` at
once, check its prerequisites, install the agent and enrol it; one :class:`HostResult`
per host."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..inventory import Inventory
from ..results import AggregateResult, HostResult, Outcome
from .connection import ConnectionSettings, ConnectionVarError, UnreachableError, settings_for
from .enrol import EnrolError, enrol_agent
from .hostkeys import HostKeyPolicy
from .install import AgentLayout, InstallError, install_agent
from .prerequisites import PrerequisiteReport, check_prerequisites
from .session import open_session
from .sshlib import asyncssh
from .wheels import WheelSet

DEFAULT_TIMEOUT = 10.0  # Ansible's connection timeout


@dataclass(frozen=True, slots=True)
class BootstrapOptions:
    policy: HostKeyPolicy
    wheels: WheelSet
    state: Path  # the controller's state directory: the fleet CA signs the agents
    forks: int = 10
    timeout: float = DEFAULT_TIMEOUT
    check: bool = False  # report what would change; change nothing
    layout: AgentLayout = field(default_factory=AgentLayout)

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
    address: str | None  # the host's underlay address, also in its IKE certificate


@dataclass(slots=True)
class BootstrapRun:
    result: AggregateResult = field(default_factory=AggregateResult)
    reports: dict[str, PrerequisiteReport] = field(default_factory=dict)
    summaries: dict[str, str] = field(default_factory=dict)  # what a host has, for ok lines


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
        address = resolved.vars.get("address")
        plans.append(
            HostPlan(settings, int(resolved.vars["agent_port"]), str(address) if address else None)
        )
    if problems:
        raise ConnectionVarError("\n".join(problems))
    return plans


async def bootstrap_hosts(
    plans: Sequence[HostPlan],
    options: BootstrapOptions,
    progress: Callable[[HostResult], None] = lambda _r: None,
) -> BootstrapRun:
    """Check every host's prerequisites and install the agent where it is missing or at
    another version (with ``check``: say so instead); results in the hosts' order."""
    gate = asyncio.Semaphore(options.forks)
    run = BootstrapRun()

    async def one(plan: HostPlan) -> HostResult:
        async with gate:
            started = time.monotonic()
            host = plan.settings.host
            try:
                async with open_session(plan.settings, options.policy, options.timeout) as s:
                    report = await check_prerequisites(
                        s, plan.settings, plan.agent_port, str(options.layout.venv)
                    )
                    run.reports[host] = report
                    if not report.ok or report.python is None:
                        return done(
                            HostResult(
                                host,
                                Outcome.FAILED,
                                error="missing " + "; ".join(map(str, report.missing)),
                                seconds=time.monotonic() - started,
                            )
                        )
                    installed = await install_agent(
                        s,
                        options.layout,
                        options.wheels,
                        report.python,
                        report.machine,
                        options.check,
                    )
                    enrolment = await enrol_agent(
                        s, options.layout, options.state, host, plan.address, options.check
                    )
            except (InstallError, EnrolError) as exc:
                result = HostResult(
                    host, Outcome.FAILED, error=str(exc), seconds=time.monotonic() - started
                )
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
                run.summaries[host] = (
                    f"{report.summary()}; {installed.summary}; {enrolment.summary}"
                )
                changes = installed.changes + enrolment.changes
                result = HostResult(
                    host,
                    Outcome.CHANGED if changes else Outcome.OK,
                    changes=changes,
                    seconds=time.monotonic() - started,
                )
            return done(result)

    def done(result: HostResult) -> HostResult:
        progress(result)
        return result

    run.result.extend(await asyncio.gather(*(one(p) for p in plans)))
    return run
