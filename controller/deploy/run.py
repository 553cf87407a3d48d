"""Bootstrap across the selected hosts: connect to each over SSH, at most ``forks`` at
once, check its prerequisites, install the agent, enrol it, have it write its
configuration and unit, start it through systemd (restart it when its version,
certificates, configuration or unit changed) and wait for its gRPC health; then push
the plans of every host that got there, as ``vpnfleet apply`` does
(:func:`operations.push_plans`). One :class:`HostResult` per host."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..fleet import operations
from ..fleet.operations import CompiledFleet
from ..fleet.rollout import RolloutOptions
from ..inventory import Inventory
from ..reports.results import AggregateResult, ChangeLine, HostResult, Outcome
from ..statedir.state import StateDir
from .configure import ConfigureError, ConfigureOutcome, configure_agent
from .connection import ConnectionSettings, ConnectionVarError, UnreachableError, settings_for
from .enrol import EnrolError, EnrolOutcome, enrol_agent
from .hostkeys import HostKeyPolicy
from .install import AgentLayout, InstallError, InstallOutcome, install_agent
from .prerequisites import PrerequisiteReport, check_prerequisites
from .service import (
    AgentTarget,
    ServiceError,
    daemon_reload,
    enable_agent,
    restart_agent,
    service_state,
    start_agent,
    wait_agent_healthy,
)
from .session import HostSession, open_session
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
    fleet: CompiledFleet | None = None  # the plans to push once the agents run
    call_timeout: float = operations.DEFAULT_TIMEOUT  # per agent call, as apply's

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
    endpoint: str  # address:agent_port where the controller reaches the agent


@dataclass(slots=True)
class BootstrapRun:
    result: AggregateResult = field(default_factory=AggregateResult)
    reports: dict[str, PrerequisiteReport] = field(default_factory=dict)
    summaries: dict[str, str] = field(default_factory=dict)  # what a host has, for ok lines
    diffs: dict[str, dict[ChangeLine, str]] = field(default_factory=dict)  # file diffs


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
            HostPlan(
                settings,
                int(resolved.vars["agent_port"]),
                str(address) if address else None,
                operations.agent_endpoint(resolved.vars),
            )
        )
    if problems:
        raise ConnectionVarError("\n".join(problems))
    return plans


@dataclass(frozen=True, slots=True)
class ServiceOutcome:
    changes: tuple[ChangeLine, ...]
    summary: str
    running: bool  # the agent runs now with everything this run found in place


async def settle_service(
    session: HostSession,
    layout: AgentLayout,
    reasons: Sequence[str],
    unit_changed: bool,
    check: bool,
) -> ServiceOutcome:
    """Enable the agent's unit and have it run: started when it is not running,
    restarted when one of ``reasons`` (what changed under it) says so, left alone
    otherwise; systemd reloads the unit first when it changed. A unit file systemd has
    not read yet (a run that stopped between writing and reloading it) counts as a
    changed unit."""
    state = await service_state(session, layout)
    if state.needs_reload and "unit" not in reasons:
        reasons = (*reasons, "unit")
    steps = []
    if not state.enabled:
        steps.append("enabled")
    if not state.active:
        steps.append("started")
    elif reasons:
        steps.append(f"restarted for its new {', '.join(reasons)}")
    if not steps:
        return ServiceOutcome((), f"{layout.unit} running", True)
    kind = "added" if not (state.enabled or state.active) else "changed"
    change = ChangeLine("service", layout.unit, kind, tuple(steps))
    if check:
        return ServiceOutcome((change,), f"{layout.unit} would be {' and '.join(steps)}", False)
    if unit_changed or state.needs_reload:
        await daemon_reload(session, layout)
    if not state.enabled:
        await enable_agent(session, layout)
    if not state.active:
        await start_agent(session, layout)
    elif reasons:
        await restart_agent(session, layout)
    return ServiceOutcome((change,), f"{layout.unit} {' and '.join(steps)}", True)


def restart_reasons(
    installed: InstallOutcome, enrolment: EnrolOutcome, configured: ConfigureOutcome
) -> tuple[str, ...]:
    reasons = []
    if installed.changes:
        reasons.append("version")
    if enrolment.changes:
        reasons.append("certificates")
    reasons += [f.role.value for f in configured.files if f.changed]
    if not configured.files and configured.changes:  # --check, files not rendered yet
        reasons.append("config")
    return tuple(reasons)


def with_plan(boot: HostResult, applied: HostResult) -> HostResult:
    """One host's bootstrap result followed by the push of its plan."""
    changes = boot.changes + applied.changes
    outcome: Outcome
    if applied.outcome in (Outcome.FAILED, Outcome.UNREACHABLE):
        outcome, error = applied.outcome, f"applying its plan: {applied.error}"
    else:
        outcome = Outcome.CHANGED if (boot.changed or applied.changed) else Outcome.OK
        error = ""
    return HostResult(
        boot.host,
        outcome,
        changes=changes,
        error=error,
        seconds=boot.seconds + applied.seconds,
        generation=applied.generation,
        content_hash=applied.content_hash,
        warnings=applied.warnings,
    )


async def bootstrap_hosts(
    plans: Sequence[HostPlan],
    options: BootstrapOptions,
    progress: Callable[[HostResult], None] = lambda _r: None,
) -> BootstrapRun:
    """Bring every host to a running, healthy agent with its plan in force (with
    ``check``: say what would change instead); results in the hosts' order."""
    gate = asyncio.Semaphore(options.forks)
    run = BootstrapRun()
    state = StateDir(options.state)
    credentials = None if options.check else operations.client_credentials(state)
    running: set[str] = set()  # hosts whose agent runs as it should: their plans go out

    async def one(plan: HostPlan) -> HostResult:
        async with gate:
            started = time.monotonic()
            host = plan.settings.host
            layout = options.layout
            try:
                async with open_session(plan.settings, options.policy, options.timeout) as s:
                    report = await check_prerequisites(
                        s, plan.settings, plan.agent_port, str(layout.venv)
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
                        s, layout, options.wheels, report.python, report.machine, options.check
                    )
                    enrolment = await enrol_agent(
                        s, layout, options.state, host, plan.address, options.check
                    )
                    if options.check and installed.changes:
                        configured = ConfigureOutcome.pending(
                            layout, options.wheels.version, installed.changes[0].kind
                        )
                    else:
                        configured = await configure_agent(
                            s, layout, host, plan.endpoint, options.check
                        )
                    service = await settle_service(
                        s,
                        layout,
                        restart_reasons(installed, enrolment, configured),
                        configured.unit_changed,
                        options.check,
                    )
                    if credentials is not None:
                        await wait_agent_healthy(
                            s, layout, AgentTarget(host, plan.endpoint), credentials
                        )
            except (InstallError, EnrolError, ConfigureError, ServiceError) as exc:
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
                run.summaries[host] = "; ".join(
                    [
                        report.summary(),
                        installed.summary,
                        enrolment.summary,
                        configured.summary,
                        service.summary,
                    ]
                )
                run.diffs[host] = configured.diffs
                if service.running:
                    running.add(host)
                changes = (
                    installed.changes + enrolment.changes + configured.changes + service.changes
                )
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

    results = list(await asyncio.gather(*(one(p) for p in plans)))
    if options.fleet is not None:
        results = await push_plans(results, running, options, state, run.summaries)
    run.result.extend(results)
    return run


async def push_plans(
    results: list[HostResult],
    running: set[str],
    options: BootstrapOptions,
    state: StateDir,
    summaries: dict[str, str],
) -> list[HostResult]:
    """Push the plans of the hosts whose agent runs, exactly as ``vpnfleet apply`` does
    (with ``check``, as ``apply --check``); a host whose agent does not run yet (only
    with ``check``) gets a line saying its plan goes out once it does."""
    assert options.fleet is not None
    ready = [r.host for r in results if r.host in running and r.host in options.fleet.plans]
    pushed: dict[str, HostResult] = {}
    if ready and operations.ca_exists(state):  # --check runs without a CA
        result = await operations.push_plans(
            options.fleet.subset(ready),
            state,
            dry_run=options.check,
            options=RolloutOptions(forks=options.forks),
            timeout=options.call_timeout,
        )
        pushed = {r.host: r for r in result}
    merged = []
    for r in results:
        if r.host in summaries and r.outcome in (Outcome.OK, Outcome.CHANGED):
            summaries[r.host] += "; " + plan_note(pushed.get(r.host), options.check)
        if r.host in pushed:
            merged.append(with_plan(r, pushed[r.host]))
        elif r.outcome in (Outcome.OK, Outcome.CHANGED):
            later = ChangeLine("plan", r.host, "added", ("pushed once the agent runs",))
            merged.append(
                HostResult(r.host, Outcome.CHANGED, (*r.changes, later), seconds=r.seconds)
            )
        else:
            merged.append(r)
    return merged


def plan_note(pushed: HostResult | None, check: bool) -> str:
    """How a host's plan stands, for its ok/changed line."""
    if pushed is None:
        return "plan pushed once the agent runs"
    if pushed.outcome is Outcome.OK:
        return "plan in force"
    return "plan would change" if check else "plan applied"
