"""`vpnfleet decommission HOST`: revoke, re-plan the others, remove the agent from the host."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import click
from rich.markup import escape

from ..deploy.decommission import DecommissionError, DecommissionOptions, decommission
from ..deploy.hostkeys import HostKeyPolicy
from ..deploy.run import DEFAULT_TIMEOUT
from ..fleet.rollout import RolloutOptions
from .bootstrap import agent_layout, known_hosts_option, prefix_option
from .common import (
    Ctx,
    fail,
    input_errors,
    open_vault,
    out,
    output_option,
    pass_ctx,
    render_changes,
    render_recap,
    require_ca,
    vault_option,
)
from .root import main


@main.command("decommission")
@click.argument("host")
@click.option(
    "-i",
    "--inventory",
    "inventory",
    type=click.Path(path_type=Path),
    default=None,
    help="Inventory directory: the remaining hosts get their new plans (with the CRL) and "
    "the host is reached over SSH with its connection variables. Without it the "
    "certificates are only revoked; the next `apply` gives the peers the CRL.",
)
@vault_option
@output_option
@click.option(
    "--check", is_flag=True, help="Say what would be revoked, pushed and removed; change nothing."
)
@click.option("-f", "--forks", default=10, show_default=True, help="Agents contacted at once.")
@click.option("--timeout", default=10.0, show_default=True, help="Seconds per agent call.")
@prefix_option("Where bootstrap put the agent on the host (removed with it).")
@known_hosts_option
@click.option(
    "--ssh-timeout",
    type=float,
    default=DEFAULT_TIMEOUT,
    show_default=True,
    help="Seconds to connect and log in to the host.",
)
@pass_ctx
def decommission_cmd(
    ctx: Ctx,
    host: str,
    inventory: Path | None,
    vault_password_file: Path | None,
    vault_key_file: Path | None,
    output: str,
    check: bool,
    forks: int,
    timeout: float,
    prefix: str,
    known_hosts: Path | None,
    ssh_timeout: float,
) -> None:
    """Retire HOST: revoke its TLS and IKE certificates (the fleet CA's CRL goes into
    every plan, so its former peers refuse it in IKE and gRPC), leave it out of every
    plan, push the new plans to the remaining hosts, and, when it can be reached over
    SSH, stop and remove its agent, unit, kill switch and rules, config, state and
    PREFIX. An unreachable host is reported; the revocation holds without it.

    Exit codes: 0 done, 1 bad input (nothing changed), 2 a host failed (a remaining
    agent, or the removal on HOST left something), 4 remaining agents unreachable.
    """
    with input_errors():
        require_ca(ctx, inventory)
        layout = agent_layout(prefix)
        options = DecommissionOptions(
            HostKeyPolicy.make(known_hosts, False),
            layout,
            check,
            RolloutOptions(forks=forks),
            timeout,
            ssh_timeout,
        )
        vault = open_vault(vault_password_file, vault_key_file)
        if not check:
            ctx.hold_lock("decommission")
        try:
            run = asyncio.run(decommission(host, inventory, ctx.state, options, vault=vault))
        except DecommissionError as exc:
            fail(str(exc))
    if output == "json":
        click.echo(json.dumps(run.to_json()))
        sys.exit(run.exit_code)
    if run.retired_before:
        out.print(f"[cyan]note:[/] {escape(host)} was decommissioned before")
    for line in run.revoked_lines() or ["nothing left to revoke"]:
        out.print(f"{escape(host)}: {escape(line)}")
    if run.pushed:
        render_changes(run.plans, show_diff=True)
    else:
        out.print(
            "[yellow]warning:[/] no inventory: no plan was pushed; the former peers refuse "
            f"{escape(host)} once `vpnfleet apply` gives them the CRL"
        )
    removal = run.removal
    if removal is not None:
        style = {"ok": "green", "changed": "yellow"}.get(removal.outcome.value, "red")
        done = "would remove the agent" if check else "agent removed"
        what = f"[{host}] " + (removal.error or (done if removal.changes else "no agent there"))
        out.print(f"[{style}]{removal.outcome.value}[/]: {escape(what)}")
        for change in removal.changes:
            out.print(f"    {change}", markup=False)
    if run.pushed:
        render_recap(run.plans)
    sys.exit(run.exit_code)
