"""`vpnfleet rotate psk`: credential rotation as one resumable operation."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import click
from rich.markup import escape

from .. import operations, rotation
from ..canary import AgentAccess
from ..rollout import RolloutOptions
from .common import (
    Ctx,
    err,
    fail,
    input_errors,
    inventory_option,
    open_vault,
    out,
    output_option,
    pass_ctx,
    render_recap,
    vault_option,
)
from .root import main


@main.group("rotate")
def rotate_group() -> None:
    """Rotate fleet credentials without dropping a tunnel."""


@rotate_group.command("psk")
@inventory_option
@vault_option
@output_option
@click.option(
    "--epoch",
    type=int,
    default=None,
    help="Target PSK epoch (default: one more than the inventory's largest psk_epoch).",
)
@click.option("-f", "--forks", default=10, show_default=True, help="Agents contacted at once.")
@click.option("--timeout", default=10.0, show_default=True, help="Seconds per agent call.")
@click.option(
    "--wave-timeout",
    default=60.0,
    show_default=True,
    help="Seconds a wave's tunnels get to re-establish with the new keys.",
)
@pass_ctx
def rotate_psk_cmd(
    ctx: Ctx,
    inventory: Path,
    vault_password_file: Path | None,
    vault_key_file: Path | None,
    output: str,
    epoch: int | None,
    forks: int,
    timeout: float,
    wave_timeout: float,
) -> None:
    """Move every pair of the fleet to a new PSK epoch, staged so no tunnel drops.

    Sets psk_epoch in the inventory's group_vars/all.yaml (commit it), then pushes the
    new plans in waves: each pair's responder before its initiator, each wave waiting
    for its tunnels to re-establish. Progress is journaled in the state directory; run
    the command again after an interruption to continue. Exit codes as for apply.
    """
    report = None if output == "json" else (lambda line: out.print(line, markup=False))
    with input_errors():
        if not operations.ca_exists(ctx.state):
            fail(f"no fleet CA in {ctx.state.root}: run `vpnfleet ca init` and enrol the agents")
        vault = open_vault(vault_password_file, vault_key_file)
        try:
            journal, fleet, resumed = rotation.prepare_psk_rotation(
                inventory,
                ctx.state,
                lambda: operations.compile_fleet(inventory, ctx.state, vault=vault),
                epoch,
            )
        except rotation.RotationError as exc:
            fail(str(exc))
        if report and not resumed:
            report(
                f"rotating PSKs from epoch {journal.from_epoch} to {journal.epoch} "
                f"({len(fleet.selected)} hosts, {len(journal.waves)} waves); "
                "psk_epoch written to group_vars/all: commit it"
            )
        access = AgentAccess(ctx.state, RolloutOptions(forks=forks), timeout)
        result = asyncio.run(
            rotation.run_psk_rotation(
                journal,
                fleet,
                ctx.state,
                access,
                resumed=resumed,
                timeout=wave_timeout,
                report=report,
            )
        )
    if output == "json":
        click.echo(json.dumps(result.to_json()))
    else:
        render_recap(result.result)
        if result.error:
            err.print(f"[bold red]rotation stopped:[/] {escape(result.error)}")
            err.print("run the same command again to continue once the cause is fixed")
        else:
            out.print(f"PSK epoch {result.epoch} in force on every host ({result.seconds:.1f}s)")
    sys.exit(result.exit_code)
