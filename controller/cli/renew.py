"""`vpnfleet renew`: agents' certificates renewed before they expire (for cron)."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import click
from rich.markup import escape

from ..fleet import operations
from ..fleet.rollout import RolloutOptions
from ..rotate import cert_renewal, cert_rotation
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


def renewal_window_options(f: click.decorators.FC) -> click.decorators.FC:
    """``--renew-fraction`` and ``--renew-days`` (also ``serve``'s)."""
    f = click.option(
        "--renew-days",
        type=float,
        default=cert_renewal.DEFAULT_DAYS,
        show_default=True,
        help="A certificate is due this many days before it expires, or earlier by "
        "--renew-fraction.",
    )(f)
    return click.option(
        "--renew-fraction",
        type=float,
        default=round(cert_renewal.DEFAULT_FRACTION, 3),
        show_default=True,
        help="A certificate is due in this last part of its lifetime, or earlier by "
        "--renew-days (never in the first half of its lifetime).",
    )(f)


def renewal_window(fraction: float, days: float) -> cert_renewal.RenewalWindow:
    try:
        return cert_renewal.RenewalWindow(fraction, days)
    except ValueError as exc:
        fail(str(exc))


@main.command("renew")
@inventory_option
@vault_option
@output_option
@renewal_window_options
@click.option("--check", is_flag=True, help="Only list the certificates that are due.")
@click.option("-f", "--forks", default=10, show_default=True, help="Agents renewed at once.")
@click.option("--timeout", default=10.0, show_default=True, help="Seconds per agent call.")
@click.option(
    "--peer-timeout",
    default=60.0,
    show_default=True,
    help="Seconds an agent's certificate peers get to re-establish.",
)
@pass_ctx
def renew_cmd(
    ctx: Ctx,
    inventory: Path,
    vault_password_file: Path | None,
    vault_key_file: Path | None,
    output: str,
    renew_fraction: float,
    renew_days: float,
    check: bool,
    forks: int,
    timeout: float,
    peer_timeout: float,
) -> None:
    """Renew the TLS and IKE certificates of the agents whose certificates are due.

    Reads each agent's certificates from its status; for the hosts with one due (see
    --renew-days and --renew-fraction) it runs what `vpnfleet rotate certs` runs, for
    those hosts only: new key pairs made on the host, CSRs signed by the fleet CA,
    certificate peers re-established make-before-break, no tunnel lost. Nothing due:
    nothing changes (exit 0). Safe to run from cron. Exit codes as for apply.
    """
    window = renewal_window(renew_fraction, renew_days)
    report = None if output == "json" else (lambda line: out.print(line, markup=False))
    with input_errors():
        require_ca(ctx, inventory)
        if not check:
            ctx.hold_lock("renew")
        vault = open_vault(vault_password_file, vault_key_file)

        def compile_fleet() -> operations.CompiledFleet:
            return operations.compile_fleet(inventory, ctx.state, vault=vault, planner=ctx.planner)

        options = RolloutOptions(forks=forks)
        access = cert_rotation.AgentCredentialAccess(ctx.state, options, timeout)
        result = asyncio.run(
            cert_renewal.renew_due_certificates(
                ctx.state,
                compile_fleet,
                access,
                window,
                check=check,
                options=options,
                timeout=peer_timeout,
                report=report,
            )
        )
    if output == "json":
        click.echo(json.dumps(result.to_json()))
    else:
        if result.rotation is not None:
            render_recap(result.rotation.result)
        if result.error or (result.rotation is not None and result.rotation.error):
            why = result.error or (result.rotation.error if result.rotation else "")
            err.print(f"[bold red]renewal stopped:[/] {escape(why)}")
        elif not result.due and result.rotation is None:
            out.print(f"no certificate is due (window: {window})", markup=False)
        elif check:
            out.print(f"{len(result.due)} certificate(s) due; run without --check to renew")
    sys.exit(result.exit_code)
