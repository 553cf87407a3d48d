"""`vpnfleet rotate psk|certs|ca`: credential rotation as one resumable operation."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from rich.markup import escape

from ..delivery.health import AgentAccess
from ..fleet import operations
from ..fleet.rollout import RolloutOptions
from ..rotate import cert_rotation, rotation
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
    require_ca,
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
        require_ca(ctx, inventory)
        ctx.hold_lock("rotate psk")
        vault = open_vault(vault_password_file, vault_key_file)
        try:
            journal, fleet, resumed = rotation.prepare_psk_rotation(
                inventory,
                ctx.state,
                lambda: operations.compile_fleet(
                    inventory, ctx.state, vault=vault, planner=ctx.planner
                ),
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
    _finish(
        result,
        output,
        f"PSK epoch {result.epoch} in force on every host ({result.seconds:.1f}s)",
    )


def _finish(result: rotation.RotationResult, output: str, done: str) -> None:
    """Print the outcome (one JSON object, or the recap and ``done`` or why it stopped)
    and exit with the rotation's code."""
    if output == "json":
        click.echo(json.dumps(result.to_json()))
    else:
        render_recap(result.result)
        if result.error:
            err.print(f"[bold red]rotation stopped:[/] {escape(result.error)}")
            err.print("run the same command again to continue once the cause is fixed")
        else:
            out.print(done, markup=False)
    sys.exit(result.exit_code)


def _rotate_certificates(
    kind: rotation.RotationKind,
    ctx: Ctx,
    inventory: Path,
    vault_password_file: Path | None,
    vault_key_file: Path | None,
    output: str,
    forks: int,
    timeout: float,
    peer_timeout: float,
) -> None:
    report = None if output == "json" else (lambda line: out.print(line, markup=False))
    with input_errors():
        require_ca(ctx, inventory)
        ctx.hold_lock(f"rotate {kind}")
        vault = open_vault(vault_password_file, vault_key_file)

        def compile_fleet() -> operations.CompiledFleet:
            return operations.compile_fleet(inventory, ctx.state, vault=vault, planner=ctx.planner)

        try:
            journal, resumed = cert_rotation.prepare_cert_rotation(kind, ctx.state, compile_fleet())
        except rotation.RotationError as exc:
            fail(str(exc))
        if report and not resumed:
            phases = cert_rotation.PHASES[kind]
            what = "the fleet CA" if kind is rotation.RotationKind.CA else "agent certificates"
            report(
                f"rotating {what} of "
                f"{len(journal.hosts)} hosts in {len(phases)} phase(s): {', '.join(phases)}"
            )
        options = RolloutOptions(forks=forks)
        access = cert_rotation.AgentCredentialAccess(ctx.state, options, timeout)
        try:
            result = asyncio.run(
                cert_rotation.run_cert_rotation(
                    journal,
                    ctx.state,
                    compile_fleet,
                    access,
                    resumed=resumed,
                    options=options,
                    timeout=peer_timeout,
                    report=report,
                )
            )
        except KeyboardInterrupt:
            err.print(
                f"[bold red]interrupted[/] in phase {escape(journal.phase)}: what was "
                f"acknowledged is in {rotation.journal_path(ctx.state, kind)}; run "
                f"`vpnfleet rotate {kind}` again to continue"
            )
            sys.exit(130)
    if kind is rotation.RotationKind.CA and not result.error:
        done = (
            f"fleet CA {result.extra['ca'][:16]}… in force on every host, the old one "
            f"retired ({result.seconds:.1f}s)"
        )
    else:
        done = f"new certificates in force on every host ({result.seconds:.1f}s)"
    _finish(result, output, done)


def _certificate_options(f: Callable[..., Any]) -> Callable[..., Any]:
    for option in reversed(
        (
            inventory_option,
            vault_option,
            output_option,
            click.option(
                "-f", "--forks", default=10, show_default=True, help="Agents rotated at once."
            ),
            click.option(
                "--timeout", default=10.0, show_default=True, help="Seconds per agent call."
            ),
            click.option(
                "--peer-timeout",
                default=60.0,
                show_default=True,
                help="Seconds an agent's certificate peers get to re-establish.",
            ),
        )
    ):
        f = option(f)
    return f


@rotate_group.command("certs")
@_certificate_options
@pass_ctx
def rotate_certs_cmd(ctx: Ctx, **options: Any) -> None:
    """New TLS and IKE certificates for every agent from the fleet CA, no tunnel lost.

    For each agent (--forks at a time, never both ends of a certificate tunnel at
    once): it makes new key pairs and sends their CSRs (keys never leave the host), the
    controller signs them, the agent installs the certificates and re-establishes each
    of its certificate (auth: pubkey) peers with the new IKE certificate,
    make-before-break; the agent counts as done once every such peer has a newer IKE
    SA. In a PSK fleet the certificates are rotated all the
    same and nothing is re-established. Progress is journaled in the state directory
    (rotation/certs.json); run the command again after an interruption to continue.
    Exit codes as for apply.
    """
    _rotate_certificates(rotation.RotationKind.CERTS, ctx, **options)


@rotate_group.command("ca")
@_certificate_options
@pass_ctx
def rotate_ca_cmd(ctx: Ctx, **options: Any) -> None:
    """Replace the fleet CA and every certificate it issued, no tunnel lost.

    \b
    Three phases; every agent finishes one before any starts the next:
    1 trust    a next CA is made; every agent gets plans that accept IKE certificates
               of both CAs and trusts both for TLS; so does the controller.
    2 reissue  the controller's certificate, then every agent's TLS and IKE
               certificates are re-issued by the next CA (as in `rotate certs`).
    3 retire   the next CA becomes the fleet CA; plans and TLS trust hold only it;
               the old CA is forgotten and nothing it signed is accepted any more.

    Each agent's acknowledgement is journaled in the state directory (rotation/ca.json);
    after an interruption or a failed agent, run the command again to continue where it
    stopped. Back up STATE/pki while it runs. Exit codes as for apply.
    """
    _rotate_certificates(rotation.RotationKind.CA, ctx, **options)
