"""`vpnfleet lab`: the network-namespace lab."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
from rich.markup import escape
from rich.table import Table

from .common import (
    Ctx,
    err,
    fail,
    input_errors,
    inventory_option,
    out,
    output_option,
    pass_ctx,
)
from .fleet import render_status
from .root import main

# ---------------------------------------------------------------- lab


def lab_name_option(f: Callable[..., Any]) -> Callable[..., Any]:
    from ..lab import DEFAULT_NAME

    return click.option(
        "--name",
        default=DEFAULT_NAME,
        show_default=True,
        help="Lab name (1-12 of a-z, 0-9, _); namespaces are vf-NAME-HOST.",
    )(f)


@contextmanager
def lab_errors() -> Iterator[None]:
    from ..lab import LabError

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
@click.option(
    "--keylog",
    is_flag=True,
    help="Debugging: every agent appends its SA keys (Wireshark's esp_sa and "
    "ikev2_decryption_table records) to agents/HOST/keys.log in the lab directory (0600). "
    "Anyone who reads them can decrypt the lab's tunnels.",
)
@pass_ctx
def lab_up(
    ctx: Ctx,
    inventory: Path,
    name: str,
    output: str,
    timeout: float,
    keep_on_failure: bool,
    keylog: bool,
) -> None:
    """Build the lab, start and enrol the agents, apply the inventory, check reachability.

    Exit codes: 0 converged (and, with a data plane, every pair as its policy says),
    1 bad input (nothing created), 3 not converged within --timeout, 5 a pair failed.
    """
    from .. import lab

    with lab_errors():
        result = asyncio.run(
            lab.up(
                inventory,
                ctx.state,
                name,
                timeout=timeout,
                keep_on_failure=keep_on_failure,
                keylog=keylog,
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
        if result.keylogs:
            out.print(
                f"key logs (secret: delete them when done): "
                f"{result.lab_dir / 'agents' / '*' / 'keys.log'}; Wireshark: Preferences > "
                "Protocols > ESP (and ISAKMP) tables, or tshark `-o uat:LINE` per record",
                markup=False,
            )
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
    styles = {"pass": "green", "pass-clear": "green", "blocked-by-policy": "cyan", "fail": "red"}
    for p in pairs:
        table.add_row(
            p.src_host, p.dst_host, p.src, p.dst, p.policy, p.expect, p.result, p.detail,
            style=styles.get(p.result, ""),
        )  # fmt: skip
    bypass = sum(p.expect == "bypass" for p in pairs)
    probes = f", {bypass} bypass probes" if bypass else ""
    out.print(f"[bold]reachability[/] ({len(pairs) - bypass} site pairs{probes})")
    out.print(table)
    if not data_plane:
        out.print("(the agents have no data plane yet: protected pairs cannot pass)")


@lab_group.command("down")
@lab_name_option
@output_option
@click.option(
    "--force",
    is_flag=True,
    help="Remove the lab's namespaces, links and processes even when another state "
    "directory owns the lab, or nobody does (leftovers).",
)
@pass_ctx
def lab_down(ctx: Ctx, name: str, output: str, force: bool) -> None:
    """Remove the lab: agents, supervisor, namespaces, links, nftables tables, files.

    Works after a crash or a half-done `up`, and finds leftovers by name; running it
    again changes nothing. Labs of the same name made with other state directories are
    left alone; when this state directory has none, it is refused (the error names
    theirs): --force removes them anyway, or leftovers nobody owns.
    """
    from .. import lab

    with lab_errors():
        result = lab.down(ctx.state, name, progress=lab_progress(), force=force)
    if output == "json":
        click.echo(json.dumps(result.to_json()))
    elif result.anything:
        removed = ", ".join(
            f"{n} {one if n == 1 else many}"
            for n, one, many in (
                (len(result.namespaces), "namespace", "namespaces"),
                (len(result.links), "link", "links"),
                (result.processes, "process", "processes"),
            )
        )
        forced = (
            f" (it belonged to {' and '.join(result.forced_from)})" if result.forced_from else ""
        )
        out.print(f"lab {escape(name)} removed: {removed}{escape(forced)}")
    else:
        out.print(f"no lab {escape(name)} here: nothing to remove")


EXIT_LAB_NOT_PRESENT = 4


@lab_group.command("status")
@lab_name_option
@output_option
@pass_ctx
def lab_status(ctx: Ctx, name: str, output: str) -> None:
    """What runs: namespaces, the supervisor, agent pids and restarts, fleet status.

    Exit codes: 0 the lab's namespaces are all there, 1 bad input (no such lab),
    4 some or all of them are gone, or another state directory's lab has the name now.
    """
    from .. import lab

    with lab_errors():
        st = asyncio.run(lab.status(ctx.state, name))
    code = 0 if st.health is lab.LabHealth.PRESENT else EXIT_LAB_NOT_PRESENT
    if output == "json":
        click.echo(json.dumps(st.to_json()))
        sys.exit(code)
    sup = "running" if st.supervisor_alive else "NOT running"
    health = "" if code == 0 else f", [red]{st.health.value.upper()}[/]"
    out.print(f"lab {escape(st.name)} ({escape(st.state)}{health}) in {escape(str(st.lab_dir))}")
    if st.problem:
        out.print(f"[red]{escape(st.problem)}[/]")
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
    elif st.fleet_error != st.problem:
        err.print(f"[red]fleet status unavailable:[/] {escape(st.fleet_error)}")
    sys.exit(code)


@lab_group.command(
    "exec", context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False}
)
@lab_name_option
@click.argument("host")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@pass_ctx
def lab_exec(ctx: Ctx, name: str, host: str, command: tuple[str, ...]) -> None:
    """Run COMMAND inside HOST's namespace (`lab exec a1 -- ip addr`); its exit code is ours."""
    from .. import lab

    argv = list(command)
    if argv[:1] == ["--"]:  # options stop at HOST, so click hands the `--` on
        argv = argv[1:]
    with lab_errors():
        rc = lab.run_exec(ctx.state, name, host, argv)
    sys.exit(rc)
