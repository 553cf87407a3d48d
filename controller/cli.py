"""The ``vpnfleet`` command: parse arguments, call controller modules, render.

Logic lives in controller.operations, controller.inventory, controller.pki …; this
module only turns options into calls and results into text or JSON.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

import click
from rich.console import Console, Group
from rich.live import Live
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from . import operations, pki, rails, revisions
from .inventory import InventoryError, InventoryErrors, load_inventory
from .inventory import vault as vault_mod
from .results import AggregateResult, HostResult, Outcome
from .rollout import RolloutOptionError, RolloutOptions
from .state import StateDir, StateError, default_state_dir
from .status import FLEET_COLUMNS, SA_COLUMNS, FleetStatus, fleet_rows, sa_rows


def _width(stream: Any) -> int | None:
    # Tables piped to a file or a pager keep their columns instead of being cut to 80.
    return None if stream.isatty() else int(os.environ.get("COLUMNS", "160"))


out = Console(highlight=False, soft_wrap=True, width=_width(sys.stdout))
err = Console(stderr=True, highlight=False, soft_wrap=True, width=_width(sys.stderr))

EXIT_BAD_INPUT = 1


def fail(message: str, code: int = EXIT_BAD_INPUT) -> NoReturn:
    err.print(f"[bold red]error:[/] {escape(message)}")
    sys.exit(code)


@contextmanager
def input_errors() -> Iterator[None]:
    """Turn bad-input exceptions into a clear message and exit code 1, no traceback."""
    try:
        yield
    except InventoryErrors as exc:
        err.print(str(exc), markup=False)
        sys.exit(EXIT_BAD_INPUT)
    except (
        InventoryError,
        StateError,
        pki.PkiError,
        vault_mod.VaultError,
        RolloutOptionError,
        revisions.RevisionError,
    ) as exc:
        fail(str(exc))


# ---------------------------------------------------------------- shared options


def inventory_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "-i",
        "--inventory",
        "inventory",
        required=True,
        type=click.Path(path_type=Path),
        help="Inventory directory (hosts.yaml, group_vars/, host_vars/, topology.yaml).",
    )(f)


def limit_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "-l",
        "--limit",
        default=None,
        metavar="PATTERN",
        help="Only these hosts: host, group, glob, 'a:b' union, 'a:&b' intersection, "
        "'a:!b' exclusion.",
    )(f)


def output_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "-o",
        "--output",
        type=click.Choice(["text", "json"]),
        default="text",
        show_default=True,
        help="text for people, json for scripts.",
    )(f)


def rev_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--rev",
        default=None,
        metavar="REF",
        help="Read the inventory as it is at this git revision (commit, branch, tag), "
        "not the working tree.",
    )(f)


def force_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--force",
        is_flag=True,
        help="Push plans the safety rails refuse (SPD entries that protect or discard "
        "the controller's gRPC or SSH path to a host).",
    )(f)


def enforce_rails(fleet: operations.CompiledFleet, force: bool) -> None:
    """Refuse (exit 1, nothing contacted) plans that would cut the controller off."""
    violations = operations.rail_violations(fleet)
    if not violations:
        return
    if force:
        for v in violations:
            err.print(f"[yellow]warning (--force):[/] {escape(str(v))}")
        return
    err.print(str(rails.RailError(violations)), markup=False)
    sys.exit(EXIT_BAD_INPUT)


def vault_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--vault-password-file",
        type=click.Path(path_type=Path, exists=True, dir_okay=False),
        envvar="VPNFLEET_VAULT_PASSWORD_FILE",
        help="File with the vault password (or a 32-byte key file with --vault-key-file).",
    )(
        click.option(
            "--vault-key-file",
            type=click.Path(path_type=Path, exists=True, dir_okay=False),
            envvar="VPNFLEET_VAULT_KEY_FILE",
            help="Raw 32-byte vault key file instead of a password.",
        )(f)
    )


def open_vault(password_file: Path | None, key_file: Path | None) -> vault_mod.Vault | None:
    if key_file:
        return vault_mod.Vault.from_key_file(key_file)
    if password_file:
        return vault_mod.Vault.from_password_file(password_file)
    return None


class Ctx:
    def __init__(self, state: Path) -> None:
        self.state = StateDir(state)


pass_ctx = click.make_pass_decorator(Ctx)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option(
    "--state",
    type=click.Path(path_type=Path),
    default=None,
    help="Controller state directory (fleet CA, master secret). "
    "Default: $VPNFLEET_STATE or ~/.vpnfleet.",
)
@click.version_option(package_name="vpnfleet")
@click.pass_context
def main(ctx: click.Context, state: Path | None) -> None:
    """vpnfleet: declarative IPsec for a fleet of hosts.

    Keep the VPN in an inventory in git; `plan` shows what would change, `apply` pushes
    one plan per host to its agent over mutual TLS, `status` shows what the agents run.
    """
    ctx.obj = Ctx(state or default_state_dir())


# ---------------------------------------------------------------- inventory


@main.command("inventory")
@inventory_option
@limit_option
@vault_option
@click.option("--graph", is_flag=True, help="Show the group tree, like ansible-inventory --graph.")
@click.option("--host", "host", default=None, help="Show one host's resolved variables.")
@click.option("--list", "list_", is_flag=True, help="Everything as JSON.")
@click.option("--show-secrets", is_flag=True, help="Decrypt vault values in the output.")
def inventory_cmd(
    inventory: Path,
    limit: str | None,
    vault_password_file: Path | None,
    vault_key_file: Path | None,
    graph: bool,
    host: str | None,
    list_: bool,
    show_secrets: bool,
) -> None:
    """Show an inventory: the group tree, one host's variables, or all of it as JSON."""
    from .inventory import render

    with input_errors():
        inv = load_inventory(inventory, vault=open_vault(vault_password_file, vault_key_file))
        if limit:
            inv = inv.filter(limit)
        if host:
            click.echo(json.dumps(render.host_vars(inv, host, show_secrets), indent=2))
        elif list_:
            click.echo(json.dumps(render.inventory_list(inv, show_secrets), indent=2))
        else:
            click.echo(render.graph(inv))


# ---------------------------------------------------------------- vault


@main.group("vault")
def vault_group() -> None:
    """Encrypt and read `!vault` values (PyNaCl SecretBox, Argon2id-derived key)."""


@vault_group.command("encrypt-string")
@vault_option
@click.option("--name", default=None, help="Print as 'NAME: !vault |' ready to paste into YAML.")
@click.argument("text", required=False)
def vault_encrypt_string(
    vault_password_file: Path | None,
    vault_key_file: Path | None,
    name: str | None,
    text: str | None,
) -> None:
    """Encrypt TEXT (or standard input when TEXT is '-' or missing)."""
    with input_errors():
        v = open_vault(vault_password_file, vault_key_file)
        if v is None:
            fail("give --vault-password-file or --vault-key-file")
        if text is None or text == "-":
            text = sys.stdin.read().rstrip("\n")
        token = v.encrypt_string(text)
        lines = [token[i : i + 64] for i in range(0, len(token), 64)]
        indent = "  " if name else ""
        head = f"{name}: !vault |" if name else "!vault |"
        click.echo("\n".join([head, *(indent + "  " + ln for ln in lines)]))


@vault_group.command("view")
@vault_option
@click.argument("source", type=click.Path(path_type=Path, exists=True))
def vault_view(vault_password_file: Path | None, vault_key_file: Path | None, source: Path) -> None:
    """Show every `!vault` value of a YAML file (or inventory directory) decrypted."""
    with input_errors():
        v = open_vault(vault_password_file, vault_key_file)
        if v is None:
            fail("give --vault-password-file or --vault-key-file")
        for where, value in vault_mod.view(source, v):
            click.echo(f"{where}: {value}")


# ---------------------------------------------------------------- plan / apply / status


def render_changes(result: AggregateResult, show_diff: bool) -> None:
    for r in result:
        style = {
            Outcome.OK: "green",
            Outcome.CHANGED: "yellow",
            Outcome.FAILED: "red",
            Outcome.UNREACHABLE: "red",
            Outcome.SKIPPED: "cyan",
        }[r.outcome]
        label = r.outcome.value
        detail = escape(f"[{r.host}]" + (f" {r.error}" if r.error else ""))
        out.print(f"[{style}]{label}[/]: {detail}")
        if show_diff:
            for c in r.changes:
                out.print(f"    {c}", markup=False)


def render_recap(result: AggregateResult) -> None:
    out.print("\n[bold]RECAP[/] " + "*" * 60)
    for line in result.recap_lines():
        out.print(line, markup=False)
    if result.aborted:
        err.print(f"[bold red]stopped:[/] {escape(result.aborted)}")


@contextmanager
def progress_bar(total: int, what: str) -> Iterator[Callable[[HostResult], None]]:
    if not err.is_terminal or total < 2:
        yield lambda _r: None
        return
    with Progress(
        TextColumn(what),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=True,
    ) as bar:
        task = bar.add_task(what, total=total)
        yield lambda _r: bar.advance(task)


def parse_serial(serial: str | None) -> tuple[str, ...]:
    return tuple(s for s in (serial or "").split(",") if s.strip())


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
            out.print(
                f"  peer {p['name']}: {p['address']}, {role}{managed}, {p['auth']}, "
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
    help="Roll out in batches of N hosts or N%% of them; the last size repeats.",
)
@click.option(
    "--max-fail-percentage",
    type=float,
    default=None,
    help="Stop before the next batch when more than this share of a batch failed.",
)
@click.option("--timeout", default=10.0, show_default=True, help="Seconds per agent call.")
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
) -> None:
    """Push the compiled plans to the agents and print a per-host recap.

    Exit codes: 0 all good, 1 bad input (nothing contacted), 2 a host failed or the run
    was stopped, 4 hosts unreachable.
    """
    with input_errors():
        options = RolloutOptions(
            forks=forks, serial=parse_serial(serial), max_fail_percentage=max_fail_percentage
        )
        fleet = operations.compile_fleet_at(
            inventory,
            ctx.state,
            rev,
            limit=limit,
            vault=open_vault(vault_password_file, vault_key_file),
        )
        enforce_rails(fleet, force)
        if not operations.ca_exists(ctx.state):
            fail(f"no fleet CA in {ctx.state.root}: run `vpnfleet ca init` and enrol the agents")
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
        if not operations.ca_exists(ctx.state):
            fail(f"no fleet CA in {ctx.state.root}: run `vpnfleet ca init` and enrol the agents")
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
    help="Live view: refresh every SECONDS until interrupted (text output only).",
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
    each way, replay and integrity drops, last liveness. Exit code 4 when an agent
    could not be reached. With --rev the desired plans are those of that revision.
    """
    with input_errors():
        fleet = operations.compile_fleet_at(
            inventory,
            ctx.state,
            rev,
            limit=limit,
            vault=open_vault(vault_password_file, vault_key_file),
        )
        if not operations.ca_exists(ctx.state):
            fail(f"no fleet CA in {ctx.state.root}: run `vpnfleet ca init` and enrol the agents")
        if watch is not None and output == "text":
            if watch <= 0:
                fail("--watch takes a positive number of seconds")
            with Live(console=out, auto_refresh=False) as live:
                try:
                    while True:
                        status = asyncio.run(
                            operations.fleet_status(fleet, ctx.state, timeout=timeout)
                        )
                        live.update(status_renderable(status, sas), refresh=True)
                        time.sleep(watch)
                except KeyboardInterrupt:
                    return
        status = asyncio.run(operations.fleet_status(fleet, ctx.state, timeout=timeout))
    if output == "json":
        click.echo(json.dumps(status.to_json()))
    else:
        render_status(status, sas)
    unreachable = any(h.observed is None for h in status.hosts)
    sys.exit(4 if unreachable else 0)


def status_renderable(status: FleetStatus, sas: bool) -> Group:
    table = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
    for col in FLEET_COLUMNS:
        table.add_column(col)
    for row in fleet_rows(status):
        style = "green" if row[1] == "in sync" else "red" if row[1] == "unreachable" else "yellow"
        table.add_row(*row, style=style)
    parts: list[Any] = [table]
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


# ---------------------------------------------------------------- diff / serve


@main.command("diff")
@inventory_option
@limit_option
@vault_option
@output_option
@click.option("--from", "from_rev", required=True, metavar="REF", help="The old revision.")
@click.option(
    "--to",
    "to_rev",
    default=None,
    metavar="REF",
    help="The new revision (default: the working tree).",
)
@pass_ctx
def diff_cmd(
    ctx: Ctx,
    inventory: Path,
    limit: str | None,
    vault_password_file: Path | None,
    vault_key_file: Path | None,
    output: str,
    from_rev: str,
    to_rev: str | None,
) -> None:
    """Show the data-plane change per host between two revisions; contact no agent.

    SPD entries, peers (with the fields that changed), proposals and credentials
    rotated, by reference (never secret values). Both sides use the same master secret.
    """
    from .diff import diff_plans

    with input_errors():
        vault = open_vault(vault_password_file, vault_key_file)
        old = operations.compile_fleet_at(inventory, ctx.state, from_rev, limit=limit, vault=vault)
        new = operations.compile_fleet_at(inventory, ctx.state, to_rev, limit=limit, vault=vault)
    result = diff_plans(
        old.plans,
        new.plans,
        from_revision=_revision_of(old, from_rev),
        to_revision=_revision_of(new, to_rev),
    )
    if output == "json":
        click.echo(json.dumps(result.to_json()))
        return
    out.print(f"diff {result.from_revision[:12]} -> {result.to_revision[:12]}", markup=False)
    for h in result.hosts:
        style = {"added": "green", "removed": "red"}.get(h.kind, "yellow")
        out.print(f"[{style}]{h.kind}[/]: " + escape(f"[{h.host}]"))
        for c in h.changes:
            out.print(f"    {c}", markup=False)
    if result.unchanged:
        out.print(f"unchanged: {', '.join(result.unchanged)}", markup=False)


def _revision_of(fleet: operations.CompiledFleet, ref: str | None) -> str:
    plans = list(fleet.plans.values())
    return plans[0].source_revision if plans else (ref or "worktree")


@main.command("serve")
@click.option(
    "-i",
    "--inventory",
    "inventory",
    required=True,
    type=click.Path(path_type=Path),
    help="Inventory directory inside a git repository's working tree (REPO/INV).",
)
@vault_option
@click.option("--branch", default="main", show_default=True, help="The branch to follow.")
@click.option(
    "--interval", default=30.0, show_default=True, help="Seconds between polls of the branch."
)
@click.option(
    "--listen",
    default="127.0.0.1:8080",
    show_default=True,
    help="HOST:PORT for /status, /audit, /metrics and POST /webhook (port 0: any free one).",
)
@click.option(
    "--correct-drift", is_flag=True, help="Re-apply the desired plan on hosts that drift."
)
@force_option
@click.option("-f", "--forks", default=10, show_default=True, help="Agents contacted at once.")
@click.option("--serial", default=None, metavar="N|N%[,...]", help="Roll out in batches of hosts.")
@click.option("--timeout", default=10.0, show_default=True, help="Seconds per agent call.")
@pass_ctx
def serve_cmd(
    ctx: Ctx,
    inventory: Path,
    vault_password_file: Path | None,
    vault_key_file: Path | None,
    branch: str,
    interval: float,
    listen: str,
    correct_drift: bool,
    force: bool,
    forks: int,
    serial: str | None,
    timeout: float,
) -> None:
    """Follow BRANCH and roll out each new commit; serve status, audit and metrics.

    A commit whose inventory does not compile (or that the safety rails refuse) is
    recorded as failed in the audit log and nothing is pushed: the last good revision
    stays in force. Stops cleanly on SIGTERM or Ctrl-C.
    """
    import signal

    from . import reconcile
    from .audit import AuditError, AuditLog

    with input_errors():
        if interval <= 0:
            fail("--interval takes a positive number of seconds")
        try:
            reconcile.parse_listen(listen)
        except ValueError as exc:
            fail(str(exc))
        if not operations.ca_exists(ctx.state):
            fail(f"no fleet CA in {ctx.state.root}: run `vpnfleet ca init` and enrol the agents")
        options = reconcile.ServeOptions(
            inventory=inventory,
            branch=branch,
            interval=interval,
            correct_drift=correct_drift,
            force=force,
            rollout=RolloutOptions(forks=forks, serial=parse_serial(serial)),
            timeout=timeout,
            vault=open_vault(vault_password_file, vault_key_file),
        )
        revisions.repo_root(inventory)
        try:
            AuditLog.in_state(ctx.state.root)
        except AuditError as exc:
            fail(str(exc))

    def log(message: str) -> None:
        err.print(f"[dim]{time.strftime('%H:%M:%S')}[/] {escape(message)}")

    def listening(address: str) -> None:
        click.echo(f"vpnfleet serve: listening on http://{address}")
        sys.stdout.flush()

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await reconcile.serve(
            ctx.state, options, listen, stop=stop, log=log, on_listening=listening
        )

    try:
        asyncio.run(run())
    except OSError as exc:
        fail(f"cannot listen on {listen}: {exc.strerror or exc}")
    log("stopped")


# ---------------------------------------------------------------- ca


@main.group("ca")
def ca_group() -> None:
    """The fleet CA: create it, sign agents' CSRs, show it."""


@ca_group.command("init")
@click.option(
    "--algorithm",
    type=click.Choice(["ecdsa-p256", "ed25519"]),
    default="ecdsa-p256",
    show_default=True,
)
@click.option("--force", is_flag=True, help="Replace an existing CA (every agent must re-enrol).")
@pass_ctx
def ca_init(ctx: Ctx, algorithm: str, force: bool) -> None:
    """Create the fleet CA and the controller's client certificate."""
    with input_errors():
        info = pki.init_ca(ctx.state.root, algorithm=algorithm, force=force)
        pki.ensure_controller_cert(ctx.state.root)
    out.print(f"fleet CA created in {ctx.state.pki}: {info}")


@ca_group.command("sign")
@click.argument("host")
@click.option("--tls-csr", type=click.Path(path_type=Path, exists=True), required=True)
@click.option("--ike-csr", type=click.Path(path_type=Path, exists=True), required=True)
@click.option("--address", default=None, help="Underlay address to add to the IKE certificate.")
@click.option(
    "--out",
    "out_dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path("."),
    show_default=True,
    help="Where to write tls.pem, ike.pem and ca.pem.",
)
@pass_ctx
def ca_sign(
    ctx: Ctx, host: str, tls_csr: Path, ike_csr: Path, address: str | None, out_dir: Path
) -> None:
    """Sign HOST's TLS and IKE CSRs (made on the host by `vpnfleet-agent init`).

    Each CSR must be signed by its key and name HOST. Copy the three files back to the
    host and run `vpnfleet-agent install-certs`.
    """
    with input_errors():
        tls_pem, ike_pem, ca_pem = pki.sign_agent_csrs(
            ctx.state.root, host, tls_csr.read_bytes(), ike_csr.read_bytes(), address=address
        )
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "tls.pem").write_bytes(tls_pem)
        (out_dir / "ike.pem").write_bytes(ike_pem)
        (out_dir / "ca.pem").write_bytes(ca_pem)
    out.print(f"signed certificates for {escape(host)} in {out_dir}: tls.pem ike.pem ca.pem")


@ca_group.command("show")
@pass_ctx
def ca_show(ctx: Ctx) -> None:
    """Show the fleet CA's subject, algorithm and SHA-256 fingerprint."""
    with input_errors():
        cert, _key, pem = pki.load_ca(ctx.state.root)
    out.print(f"subject: {cert.subject.rfc4514_string()}", markup=False)
    out.print(f"fingerprint (sha256): {pki.fingerprint(pem)}", markup=False)
    out.print(f"valid until: {cert.not_valid_after_utc:%Y-%m-%d}", markup=False)
    out.print(f"file: {ctx.state.pki / pki.CA_CERT}", markup=False)


# ---------------------------------------------------------------- lab


def lab_name_option(f: Callable[..., Any]) -> Callable[..., Any]:
    from .lab import DEFAULT_NAME

    return click.option(
        "--name",
        default=DEFAULT_NAME,
        show_default=True,
        help="Lab name (1-12 of a-z, 0-9, _); namespaces are vf-NAME-HOST.",
    )(f)


@contextmanager
def lab_errors() -> Iterator[None]:
    from .lab import LabError

    with input_errors():
        try:
            yield
        except LabError as exc:
            fail(str(exc))


def lab_progress() -> Callable[[str], None]:
    return lambda message: err.print(f"[dim]lab:[/] {escape(message)}")


@main.group("lab")
def lab_group() -> None:
    """Build the inventory as network namespaces on this machine, with one agent per host.

    \b
      vpnfleet lab up -i inventories/lab     build, apply, wait, show status and reachability
      vpnfleet lab status                    what runs, agent restarts, fleet status
      vpnfleet lab exec a1 -- ping 10.1.2.1  run a command inside a host
      vpnfleet lab down                      remove everything the lab made
    """


@lab_group.command("up")
@inventory_option
@lab_name_option
@output_option
@click.option(
    "--timeout",
    default=60.0,
    show_default=True,
    help="Seconds to wait for every agent to run its plan (and bring its peers up).",
)
@click.option("--keep-on-failure", is_flag=True, help="Leave a half-built lab for inspection.")
@pass_ctx
def lab_up(
    ctx: Ctx, inventory: Path, name: str, output: str, timeout: float, keep_on_failure: bool
) -> None:
    """Build the lab, start and enrol the agents, apply the inventory, check reachability.

    Exit codes: 0 converged (and, with a data plane, every pair as its policy says),
    1 bad input (nothing created), 3 not converged within --timeout, 5 a pair failed.
    """
    from . import lab

    with lab_errors():
        result = asyncio.run(
            lab.up(
                inventory,
                ctx.state,
                name,
                timeout=timeout,
                keep_on_failure=keep_on_failure,
                progress=lab_progress(),
            )
        )
    if output == "json":
        click.echo(json.dumps(result.to_json()))
    else:
        render_status(result.status, sas=True)
        out.print()
        render_reachability(result.pairs, result.data_plane)
        seconds = ", ".join(f"{k} {v:.1f}s" for k, v in result.seconds.items())
        verdict = "converged" if result.converged else f"NOT converged within {timeout:g}s"
        out.print(f"\nlab {escape(name)} up, {verdict} ({seconds})")
        out.print(
            f"next: `vpnfleet lab status --name {name}`, `vpnfleet lab exec --name {name} HOST "
            f"-- CMD`, or any command with `--state {result.lab_dir / 'controller'}`; "
            f"`vpnfleet lab down --name {name}` removes it all",
            markup=False,
        )
    sys.exit(result.exit_code)


def render_reachability(pairs: list[Any], data_plane: bool) -> None:
    table = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
    for col in ("from", "to", "source", "destination", "policy", "expect", "result", "detail"):
        table.add_column(col)
    styles = {"pass": "green", "blocked-by-policy": "cyan", "fail": "red"}
    for p in pairs:
        table.add_row(
            p.src_host, p.dst_host, p.src, p.dst, p.policy, p.expect, p.result, p.detail,
            style=styles.get(p.result, ""),
        )  # fmt: skip
    out.print(f"[bold]reachability[/] ({len(pairs)} site pairs)")
    out.print(table)
    if not data_plane:
        out.print("(the agents have no data plane yet: protected pairs cannot pass)")


@lab_group.command("down")
@lab_name_option
@output_option
@pass_ctx
def lab_down(ctx: Ctx, name: str, output: str) -> None:
    """Remove the lab: agents, supervisor, namespaces, links, nftables tables, files.

    Works after a crash or a half-done `up`, and finds leftovers by name; running it
    again changes nothing.
    """
    from . import lab

    with lab_errors():
        result = lab.down(ctx.state, name, progress=lab_progress())
    if output == "json":
        click.echo(json.dumps(result.to_json()))
    elif result.anything:
        out.print(
            f"lab {escape(name)} removed: {len(result.namespaces)} namespaces, "
            f"{len(result.links)} links, {result.processes} processes"
        )
    else:
        out.print(f"no lab {escape(name)} here: nothing to remove")


@lab_group.command("status")
@lab_name_option
@output_option
@pass_ctx
def lab_status(ctx: Ctx, name: str, output: str) -> None:
    """What runs: namespaces, the supervisor, agent pids and restarts, fleet status."""
    from . import lab

    with lab_errors():
        st = asyncio.run(lab.status(ctx.state, name))
    if output == "json":
        click.echo(json.dumps(st.to_json()))
        return
    sup = "running" if st.supervisor_alive else "NOT running"
    out.print(f"lab {escape(st.name)} ({escape(st.state)}) in {escape(str(st.lab_dir))}")
    missing = [n for n, ok in st.namespaces.items() if not ok]
    out.print(
        f"namespaces: {len(st.namespaces) - len(missing)}/{len(st.namespaces)} present"
        + (f" (missing: {', '.join(missing)})" if missing else ""),
        markup=False,
    )
    out.print(f"supervisor: {st.supervisor_pid or '-'} {sup}", markup=False)
    table = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
    for col in ("host", "namespace", "agent pid", "alive", "restarts", "last exit"):
        table.add_column(col)
    for host, a in st.agents.items():
        table.add_row(
            host, str(a.get("netns", "")), str(a.get("pid") or "-"),
            "yes" if a.get("alive") else "no", str(a.get("restarts", 0)),
            "-" if a.get("last_exit") is None else str(a.get("last_exit")),
        )  # fmt: skip
    out.print(table)
    out.print()
    if st.fleet is not None:
        render_status(st.fleet, sas=True)
    else:
        err.print(f"[red]fleet status unavailable:[/] {escape(st.fleet_error)}")


@lab_group.command(
    "exec", context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False}
)
@lab_name_option
@click.argument("host")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@pass_ctx
def lab_exec(ctx: Ctx, name: str, host: str, command: tuple[str, ...]) -> None:
    """Run COMMAND inside HOST's namespace (`lab exec a1 -- ip addr`); its exit code is ours."""
    from . import lab

    argv = list(command)
    if argv[:1] == ["--"]:  # options stop at HOST, so click hands the `--` on
        argv = argv[1:]
    with lab_errors():
        rc = lab.run_exec(ctx.state, name, host, argv)
    sys.exit(rc)


if __name__ == "__main__":  # pragma: no cover
    main()
