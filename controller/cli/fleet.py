"""`vpnfleet plan`, `apply`, `rekey` and `status`: the fleet operations."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, NoReturn

import click
from rich.console import Group
from rich.live import Live
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from ..delivery import staged_apply
from ..delivery.canary import CanaryResult, canary_batches, run_canary, staging_lines
from ..delivery.health import AgentAccess, CanaryError, HealthGate
from ..delivery.in_force import ApplyJournal, InForceError, observed_hashes
from ..delivery.staging import Staging
from ..fleet import operations
from ..fleet.rollout import RolloutOptions, batches
from ..inventory.vault import Vault
from ..reports.status import (
    FLEET_COLUMNS,
    SA_COLUMNS,
    FleetStatus,
    fleet_conditions,
    fleet_rows,
    sa_rows,
)
from .common import (
    Ctx,
    enforce_rails,
    err,
    fail,
    force_option,
    input_errors,
    inventory_option,
    limit_option,
    open_vault,
    out,
    output_option,
    parse_serial,
    pass_ctx,
    progress_bar,
    render_changes,
    render_recap,
    require_ca,
    rev_option,
    vault_option,
)
from .root import main


@main.command("plan")
@inventory_option
@limit_option
@vault_option
@output_option
@rev_option
@force_option
@click.option(
    "--emit",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Write one plan file per host (HOST.plan) into this directory; contact no agent.",
)
@click.option("--timeout", default=10.0, show_default=True, help="Seconds per agent call.")
@pass_ctx
def plan_cmd(
    ctx: Ctx,
    inventory: Path,
    limit: str | None,
    vault_password_file: Path | None,
    vault_key_file: Path | None,
    output: str,
    emit: Path | None,
    timeout: float,
    rev: str | None,
    force: bool,
) -> None:
    """Compile the inventory and show, per host, what would change on its agent.

    Without --emit this asks each agent for a dry run of the new plan (nothing is
    changed anywhere). With --emit it only writes plan files, for
    `vpnfleet-agent run --plan FILE`.
    """
    with input_errors():
        fleet = operations.compile_fleet_at(
            inventory,
            ctx.state,
            rev,
            limit=limit,
            vault=open_vault(vault_password_file, vault_key_file),
        )
        enforce_rails(fleet, force)
        if emit is not None:
            paths = operations.emit_plans(fleet, emit)
            summary = [operations.plan_summary(fleet, h) for h in fleet.selected]
            if output == "json":
                click.echo(json.dumps({"written": [str(p) for p in paths], "plans": summary}))
            else:
                render_plan_summaries(summary)
                out.print(f"\nwrote {len(paths)} plan file(s) to {emit}")
            return
        if not operations.ca_exists(ctx.state):
            summary = [operations.plan_summary(fleet, h) for h in fleet.selected]
            if output == "json":
                click.echo(json.dumps({"plans": summary, "agents_contacted": False}))
            else:
                render_plan_summaries(summary)
                out.print(
                    "\n(no fleet CA in the state directory yet, so no agent was asked what "
                    "would change: run `vpnfleet ca init`)"
                )
            return
        with progress_bar(len(fleet.selected), "dry run") as hook:
            result = asyncio.run(
                operations.push_plans(
                    fleet, ctx.state, dry_run=True, progress=hook, timeout=timeout
                )
            )
    if output == "json":
        click.echo(json.dumps(result.to_json()))
    else:
        render_changes(result, show_diff=True)
        render_recap(result)
    sys.exit(result.exit_code)


def render_plan_summaries(summaries: list[dict[str, Any]]) -> None:
    """Plans in the manner of ``swanctl --list-conns``: one block per host."""
    for s in summaries:
        out.print(
            f"[bold]{escape(s['host'])}[/]: generation {s['generation']}, "
            f"hash {s['content_hash'][:12]}, identity {s['identity']}, agent {s['endpoint']}"
        )
        out.print(f"  subnets: {', '.join(s['subnets']) or '-'}", markup=False)
        for p in s["peers"]:
            role = "initiator" if p["initiator"] else "responder"
            managed = "" if p["managed"] else ", external"
            # IKEv2 goes without saying (swanctl --list-conns names the version likewise).
            version = f", IKEv{p['ike_version']}" if p["ike_version"] != 2 else ""
            version += " aggressive" if p["ike_aggressive"] else ""
            out.print(
                f"  peer {p['name']}: {p['address']}, {role}{managed}{version}, {p['auth']}, "
                f"{p['mode']}, start={p['start']}",
                markup=False,
            )
            out.print(f"    ike: {', '.join(p['ike'])}", markup=False)
            out.print(f"    esp: {', '.join(p['esp'])}", markup=False)
            out.print(f"    {' '.join(p['local_ts'])} === {' '.join(p['remote_ts'])}", markup=False)
        for i, e in enumerate(s["spd"], 1):
            via = f" via {e['peer']}" if e["peer"] else ""
            out.print(
                f"  spd {i:>3} {e['action']:<8} {e['local']} -> {e['remote']} "
                f"proto {e['protocol']} ports {e['ports']}{via}  ({e['name']})",
                markup=False,
            )
        out.print()


@main.command("apply")
@inventory_option
@limit_option
@vault_option
@output_option
@rev_option
@force_option
@click.option(
    "--check", is_flag=True, help="Dry run: ask agents what would change; change nothing."
)
@click.option("--diff", is_flag=True, help="Show the changes on each host.")
@click.option("-f", "--forks", default=10, show_default=True, help="Agents contacted at once.")
@click.option(
    "--serial",
    default=None,
    metavar="N|N%[,...]",
    help="Roll out in batches of N hosts or N% of them; the last size repeats.",
)
@click.option(
    "--max-fail-percentage",
    type=float,
    default=None,
    help="Stop before the next batch when more than this share of a batch failed.",
)
@click.option("--timeout", default=10.0, show_default=True, help="Seconds per agent call.")
@click.option(
    "--canary",
    type=int,
    default=None,
    metavar="N",
    help="Apply to N hosts first, then the rest in --serial batches, each behind health "
    "gates; a regression rolls every host changed so far back to the plan it ran "
    "before (see --rollback-rev) and stops.",
)
@click.option(
    "--health-timeout",
    type=float,
    default=60.0,
    show_default=True,
    help="With --canary: seconds a batch gets to pass its health gate.",
)
@click.option(
    "--health-traffic/--no-health-traffic",
    default=None,
    help="The health gate also wants each tunnel to show it works: ESP packet counters "
    "moving, or, on an idle tunnel, an answer to a liveness check the agent sends "
    "(default: yes with --canary, no for a staged apply without it).",
)
@click.option(
    "--rollback-rev",
    default=None,
    metavar="REF",
    help="Revision whose plans are taken as those in force: a staged change starts from "
    "them and a regression restores them. Default: what the agents report, set against "
    "the new plans, REV^ (with --rev), HEAD and an interrupted staged apply's journal.",
)
@click.option(
    "--no-stage",
    is_flag=True,
    help="Push the new plans as they are, even where both ends of a tunnel change "
    "(key, proposals, addresses), instead of in three steps.",
)
@pass_ctx
def apply_cmd(
    ctx: Ctx,
    inventory: Path,
    limit: str | None,
    vault_password_file: Path | None,
    vault_key_file: Path | None,
    output: str,
    check: bool,
    diff: bool,
    forks: int,
    serial: str | None,
    max_fail_percentage: float | None,
    timeout: float,
    rev: str | None,
    force: bool,
    canary: int | None,
    health_timeout: float,
    health_traffic: bool | None,
    rollback_rev: str | None,
    no_stage: bool,
) -> None:
    """Push the compiled plans to the agents and print a per-host recap.

    A change both ends of a tunnel must agree on (key, proposals, addresses) is staged:
    every host first accepts the old and the new, then uses the new, then drops the old,
    each step behind health gates (see README). Exit codes: 0 all good, 1 bad input
    (nothing contacted), 2 a host failed or the run was stopped (a regression too),
    4 hosts unreachable.
    """
    if canary is not None:
        if check:
            fail("--canary and --check do not go together: a dry run has no health to gate")
        apply_canary(
            ctx,
            inventory,
            limit,
            open_vault(vault_password_file, vault_key_file),
            output,
            rev,
            force,
            RolloutOptions(
                forks=forks, serial=parse_serial(serial), max_fail_percentage=max_fail_percentage
            ),
            canary,
            (health_timeout, True if health_traffic is None else health_traffic),
            rollback_rev,
            timeout,
            not no_stage,
        )
    with input_errors():
        options = RolloutOptions(
            forks=forks, serial=parse_serial(serial), max_fail_percentage=max_fail_percentage
        )
        vault = open_vault(vault_password_file, vault_key_file)
        fleet = operations.compile_fleet_at(
            inventory, ctx.state, rev, limit=limit, vault=vault, planner=ctx.planner
        )
        enforce_rails(fleet, force)
        require_ca(ctx, inventory)
        if not check:
            ctx.hold_lock("apply")
        if not check and not no_stage:
            try:
                gate = HealthGate(timeout=health_timeout, require_traffic=bool(health_traffic))
            except CanaryError as exc:
                fail(str(exc))
            decision = decide_in_force(ctx, inventory, fleet, rev, rollback_rev, limit, vault,
                                       timeout)  # fmt: skip
            if output != "json":
                for note in decision.notes:
                    err.print(note, markup=False)
            staging = decision.staging(fleet)
            if staging is not None and decision.start < len(staging.steps):
                apply_staged(ctx, fleet, decision, staging, options, gate, output, rollback_rev,
                             timeout)  # fmt: skip
            if decision.journal is not None:  # its run had ended on the final plans
                ApplyJournal.remove(ctx.state)
            if output != "json":
                for line in staging_lines(staging) if staging else ():
                    err.print(line, markup=False)
        with progress_bar(len(fleet.selected), "check" if check else "apply") as hook:
            result = asyncio.run(
                operations.push_plans(
                    fleet, ctx.state, dry_run=check, options=options, progress=hook, timeout=timeout
                )
            )
    if output == "json":
        click.echo(json.dumps(result.to_json()))
    else:
        render_changes(result, show_diff=diff or check)
        render_recap(result)
    sys.exit(result.exit_code)


def apply_canary(
    ctx: Ctx,
    inventory: Path,
    limit: str | None,
    vault: Vault | None,
    output: str,
    rev: str | None,
    force: bool,
    options: RolloutOptions,
    count: int,
    health: tuple[float, bool],
    rollback_rev: str | None,
    timeout: float,
    staged: bool = True,
) -> NoReturn:
    """`apply --canary`: batches behind health gates, rollback on a regression; pair
    changes go in three steps, each rolled out that way, journaled as a staged apply
    without --canary is. What is in force (staged from, restored by a rollback) is
    decided as for that apply."""
    try:
        gate = HealthGate(timeout=health[0], require_traffic=health[1])
        canary_batches([], count, options.serial)
    except CanaryError as exc:
        fail(str(exc))
    with input_errors():
        fleet = operations.compile_fleet_at(
            inventory, ctx.state, rev, limit=limit, vault=vault, planner=ctx.planner
        )
        enforce_rails(fleet, force)
        ctx.hold_lock("apply")
        require_ca(ctx, inventory)
        decision = decide_in_force(ctx, inventory, fleet, rev, rollback_rev, limit, vault,
                                   timeout, canary=True)  # fmt: skip
    if output != "json":
        for note in decision.notes:
            err.print(note, markup=False)
    plan = canary_batches(fleet.selected, count, options.serial)
    staging = decision.staging(fleet) if staged else None
    if staging is not None and staging.staged and decision.start < len(staging.steps):
        apply_staged(ctx, fleet, decision, staging, options, gate, output, rollback_rev,
                     timeout, plan)  # fmt: skip
    if decision.journal is not None and staging is not None:  # it ended on the final plans
        ApplyJournal.remove(ctx.state)
        staging = None
    report = None if output == "json" else (lambda line: out.print(line, markup=False))
    result = asyncio.run(
        run_canary(
            fleet,
            decision.restores(fleet),
            AgentAccess(ctx.state, options, timeout),
            canary=count,
            serial=options.serial,
            gate=gate,
            report=report,
            staging=staging,
        )
    )
    render_canary(result, output, restored_label(decision, rollback_rev))


def decide_in_force(
    ctx: Ctx,
    inventory: Path,
    fleet: operations.CompiledFleet,
    rev: str | None,
    rollback_rev: str | None,
    limit: str | None,
    vault: Vault | None,
    timeout: float,
    *,
    canary: bool = False,
) -> staged_apply.Decision:
    """The plans in force: those of --rollback-rev when given, else what the agents
    report set against the new plans, REV^ (with --rev), HEAD and an interrupted staged
    apply's journal. Exit 1 with advice when the agents run something else (with
    ``canary`` also when no revision can be compiled: a rollback needs one)."""

    def compile_revision(ref: str) -> operations.CompiledFleet:
        return operations.compile_fleet_at(
            inventory, ctx.state, ref, limit=limit, vault=vault, planner=ctx.planner
        )

    if rollback_rev is not None:
        given = compile_revision(rollback_rev)
        return staged_apply.from_revision(
            fleet, staged_apply.Known(staged_apply.target_of(given), given)
        )
    known: list[staged_apply.Known] = []
    why: list[str] = []
    for ref in [f"{rev}^", "HEAD"] if rev else ["HEAD"]:
        previous, reason = operations.previous_fleet(
            inventory, ctx.state, ref, limit=limit, vault=vault, planner=ctx.planner
        )
        if previous is None:
            why.append(reason)
        elif all(k.revision != staged_apply.target_of(previous) for k in known):
            known.append(staged_apply.Known(staged_apply.target_of(previous), previous))
    journal = ApplyJournal.load(ctx.state)
    status = asyncio.run(operations.fleet_status(fleet, ctx.state, timeout=timeout))
    try:
        decision = staged_apply.decide(
            fleet, observed_hashes(status), known, journal, compile_revision, canary=canary
        )
    except InForceError as exc:
        if known or journal is not None:
            fail(str(exc))
        if canary:
            fail(f"{exc} ({why[-1]})")
        # No revision to set the agents against (no git history): unstaged, as said.
        decision = staged_apply.Decision(None)
    if decision.previous is None and why and not decision.notes:
        decision.notes.append(f"(changes not staged: no plans in force known: {why[-1]})")
    return decision


def apply_staged(
    ctx: Ctx,
    fleet: operations.CompiledFleet,
    decision: staged_apply.Decision,
    staging: Staging,
    options: RolloutOptions,
    gate: HealthGate,
    output: str,
    rollback_rev: str | None,
    timeout: float,
    canary_plan: list[list[str]] | None = None,
) -> NoReturn:
    """`apply` of pair changes: the steps in --serial batches (the canary batch first
    with ``canary_plan``), each batch behind the health gate, rollback on a regression;
    journaled, resumed after an interruption (staged_apply)."""
    report = None if output == "json" else (lambda line: out.print(line, markup=False))
    result = asyncio.run(
        staged_apply.run(
            fleet,
            decision,
            staging,
            AgentAccess(ctx.state, options, timeout),
            batches(fleet.selected, options.serial) if canary_plan is None else canary_plan,
            state=ctx.state,
            gate=gate,
            report=report,
            canary=canary_plan is not None,
        )
    )
    render_canary(result, output, restored_label(decision, rollback_rev))


def restored_label(
    decision: staged_apply.Decision, rollback_rev: str | None
) -> Callable[[str], str]:
    """What a rollback gave a host back, for people: --rollback-rev as given, else the
    revision the agent ran when the run began."""

    def label(host: str) -> str:
        if rollback_rev is not None:
            return f"the plan of {rollback_rev}"
        source = decision.sources.get(host, staged_apply.NEW_PLANS)
        if source == staged_apply.NEW_PLANS:
            return "the new plan it already ran"
        return f"the plan of {source[:12]}"

    return label


def render_canary(
    result: CanaryResult, output: str, restored: Callable[[str], str], show_diff: bool = False
) -> NoReturn:
    if output == "json":
        click.echo(json.dumps(result.to_json()))
    else:
        render_changes(result.result, show_diff=show_diff)
        render_recap(result.result)
        if result.regression:
            err.print(f"[bold red]regression:[/] {escape(result.regression)}")
            for host in result.rolled_back:
                err.print(f"{host}: rolled back to {restored(host)}", markup=False)
            for line in result.rollback_failed:
                err.print(f"[bold red]rollback failed:[/] {escape(line)}")
    sys.exit(result.exit_code)


@main.command("rekey")
@inventory_option
@limit_option
@vault_option
@output_option
@click.option("--ike", "target", flag_value="ike", help="Rekey IKE SAs only.")
@click.option("--child", "target", flag_value="child", help="Rekey child SAs only.")
@click.option("--peer", default="", metavar="GLOB", help="Only peers whose name matches.")
@click.option("-f", "--forks", default=10, show_default=True, help="Agents contacted at once.")
@click.option("--serial", default=None, metavar="N|N%[,...]", help="Rekey in batches of hosts.")
@click.option("--timeout", default=30.0, show_default=True, help="Seconds per agent call.")
@pass_ctx
def rekey_cmd(
    ctx: Ctx,
    inventory: Path,
    limit: str | None,
    vault_password_file: Path | None,
    vault_key_file: Path | None,
    output: str,
    target: str | None,
    peer: str,
    forks: int,
    serial: str | None,
    timeout: float,
) -> None:
    """Rekey every matching SA, make-before-break (both IKE and child SAs by default)."""
    with input_errors():
        options = RolloutOptions(forks=forks, serial=parse_serial(serial))
        fleet = operations.compile_fleet(
            inventory, ctx.state, limit=limit, vault=open_vault(vault_password_file, vault_key_file)
        )
        require_ca(ctx, inventory)
        # No state lock: a rekey changes no plan and no credential, and rekeys of both
        # ends of a tunnel at once are a case the agents handle (RFC 7296 section 2.8.1).
        with progress_bar(len(fleet.selected), "rekey") as hook:
            result = asyncio.run(
                operations.rekey_fleet(
                    fleet,
                    ctx.state,
                    target=target or "both",
                    peer_pattern=peer,
                    options=options,
                    progress=hook,
                    timeout=timeout,
                )
            )
    if output == "json":
        click.echo(json.dumps(result.to_json()))
    else:
        render_changes(result, show_diff=True)
        render_recap(result)
    sys.exit(result.exit_code)


@main.command("status")
@inventory_option
@limit_option
@vault_option
@output_option
@rev_option
@click.option("--sas/--no-sas", default=True, help="Also list each SA.")
@click.option("--timeout", default=5.0, show_default=True, help="Seconds per agent call.")
@click.option(
    "--watch",
    type=float,
    default=None,
    metavar="SECONDS",
    help="Take the status every SECONDS until SIGINT or SIGTERM: a live view on a "
    "terminal, each frame in turn to a pipe (one JSON line each with -o json); the exit "
    "code is that of the last frame.",
)
@pass_ctx
def status_cmd(
    ctx: Ctx,
    inventory: Path,
    limit: str | None,
    vault_password_file: Path | None,
    vault_key_file: Path | None,
    output: str,
    sas: bool,
    timeout: float,
    watch: float | None,
    rev: str | None,
) -> None:
    """Show what every agent runs against what the inventory wants.

    Per host: the plan generation and hash in force against the desired one, and peers
    up; per SA: state, SPIs, algorithms, age, time to the next rekey, bytes and packets
    each way, replay and integrity drops, last liveness; the problems each agent reports
    (a route the kernel refused …). With --rev the desired plans are those of that
    revision.

    \b
    Exit code: 0 when every host is in sync with all its tunnels up, 1 bad input;
    otherwise the sum of what was found (several combine, e.g. 18 = 2 + 16):
       2  drift: a plan in force is not the desired one (or an agent has none)
       4  an agent could not be reached
       8  tunnels down: fewer peers up than the plan in force has
      16  plan only: an agent runs no data plane
      32  problems: an agent does not do what its plan asks (a route, rule or TUN refused)
    """
    if watch is not None and watch <= 0:
        fail("--watch takes a positive number of seconds")
    with input_errors():
        fleet = operations.compile_fleet_at(
            inventory,
            ctx.state,
            rev,
            limit=limit,
            vault=open_vault(vault_password_file, vault_key_file),
        )
        require_ca(ctx, inventory)
    if watch is not None:
        watch_status(
            lambda: operations.fleet_status(fleet, ctx.state, timeout=timeout), watch, output, sas
        )
    status = asyncio.run(operations.fleet_status(fleet, ctx.state, timeout=timeout))
    if output == "json":
        click.echo(json.dumps(status.to_json()))
    else:
        render_status(status, sas)
    sys.exit(int(fleet_conditions(status)))


class _StopWatching(Exception):
    """SIGINT or SIGTERM arrived while the watch waited for its next frame."""


class _WatchSignals:
    """SIGINT and SIGTERM end a watch after the frame being taken (or at once between
    frames), so that the exit code is that of a whole frame."""

    def __init__(self) -> None:
        self.requested = 0
        self.waiting = False

    def __call__(self, signum: int, frame: object) -> None:
        self.requested = signum
        if self.waiting:
            raise _StopWatching

    def pause(self, seconds: float) -> None:
        self.waiting = True
        try:
            if not self.requested:
                time.sleep(seconds)
        finally:
            self.waiting = False


def watch_status(
    take: Callable[[], Coroutine[Any, Any, FleetStatus]], interval: float, output: str, sas: bool
) -> NoReturn:
    """`status --watch`: one frame every ``interval`` seconds until a signal."""
    signals = _WatchSignals()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signals)
    live = Live(console=out, auto_refresh=False) if output == "text" and out.is_terminal else None
    code: int | None = None
    try:
        with live or contextlib.nullcontext():
            while not signals.requested:
                status = asyncio.run(take())
                code = int(fleet_conditions(status))
                if live is not None:
                    live.update(status_renderable(status, sas), refresh=True)
                else:
                    sys.stdout.write(status_frame(status, output, sas))
                    sys.stdout.flush()
                signals.pause(interval)
    except _StopWatching:
        pass
    except BrokenPipeError:
        # The reader went away (`| head`): nothing more to say, and nothing to flush.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    # Stopped before the first frame was taken: the shell's convention for a signal.
    sys.exit(code if code is not None else 128 + (signals.requested or signal.SIGTERM))


def status_frame(status: FleetStatus, output: str, sas: bool) -> str:
    """One frame of `status --watch` for a pipe: the text view and a blank line, or one
    line of JSON."""
    if output == "json":
        return json.dumps(status.to_json()) + "\n"
    with out.capture() as captured:
        render_status(status, sas)
        out.print()
    return captured.get()


def status_renderable(status: FleetStatus, sas: bool) -> Group:
    conditions = fleet_conditions(status)
    taken = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(status.taken_at))
    verdict = (
        f"{conditions.label} (exit code {int(conditions)})"
        if conditions
        else "in sync, all tunnels up"
    )
    headline = Text(f"status at {taken}: {verdict}", style="bold")
    table = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
    for col in FLEET_COLUMNS:
        table.add_column(col)
    for host, row in zip(status.hosts, fleet_rows(status), strict=True):
        style = "green" if row[1] == "in sync" else "red" if row[1] == "unreachable" else "yellow"
        style = "red" if host.faults else style
        table.add_row(*row, style=style)
    parts: list[Any] = [headline, table]
    rows = sa_rows(status)
    if sas and rows:
        sa_table = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
        for col in SA_COLUMNS:
            sa_table.add_column(col)
        for row in rows:
            sa_table.add_row(*row)
        parts += ["", sa_table]
    return Group(*parts)


def render_status(status: FleetStatus, sas: bool) -> None:
    out.print(status_renderable(status, sas))
