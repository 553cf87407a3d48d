"""`vpnfleet upgrade`: the agents to the controller's own version, batch by batch behind
the health gates of `apply --canary`, the previous version put back on a failing batch."""

from __future__ import annotations

import asyncio
from pathlib import Path

import click

from ..delivery.health import AgentAccess, HealthGate
from ..deploy.connection import ConnectionVarError
from ..deploy.hostkeys import HostKeyPolicy
from ..deploy.run import DEFAULT_TIMEOUT, host_plans
from ..deploy.service import HEALTH_TIMEOUT
from ..deploy.upgrade import UpgradeOptions, run_upgrade
from ..deploy.upgrade_ssh import SshAgentHosts
from ..deploy.wheels import WheelError, planned_wheel_set, wheel_set
from ..fleet import operations
from ..fleet.rollout import RolloutOptions
from .bootstrap import agent_layout, known_hosts_option, prefix_option
from .common import (
    Ctx,
    fail,
    input_errors,
    inventory_option,
    limit_option,
    open_vault,
    out,
    output_option,
    parse_serial,
    pass_ctx,
    require_ca,
    vault_option,
)
from .fleet import render_canary
from .root import main


@main.command("upgrade")
@inventory_option
@limit_option
@vault_option
@output_option
@click.option(
    "--canary",
    type=int,
    default=1,
    show_default=True,
    metavar="N",
    help="Upgrade N hosts first, then the rest in --serial batches, each behind the health gate.",
)
@click.option("--serial", default=None, metavar="N|N%[,...]", help="Batches after the canary.")
@click.option("-f", "--forks", default=10, show_default=True, help="Hosts worked on at once.")
@click.option("--check", is_flag=True, help="Say which hosts would be upgraded; change nothing.")
@prefix_option("Where the agent is on each host (as given to bootstrap).")
@known_hosts_option
@click.option(
    "--timeout",
    type=float,
    default=DEFAULT_TIMEOUT,
    show_default=True,
    help="Seconds to connect and log in to a host, and per agent call.",
)
@click.option(
    "--health-timeout",
    type=float,
    default=HEALTH_TIMEOUT,
    show_default=True,
    help="Seconds a restarted agent gets to answer gRPC health, and a batch to pass its "
    "health gate.",
)
@click.option(
    "--health-traffic/--no-health-traffic",
    default=True,
    help="The health gate also wants ESP packets moving on each tunnel, or an answer to a "
    "liveness check on an idle one.",
)
@pass_ctx
def upgrade_cmd(
    ctx: Ctx,
    inventory: Path,
    limit: str | None,
    vault_password_file: Path | None,
    vault_key_file: Path | None,
    output: str,
    canary: int,
    serial: str | None,
    forks: int,
    check: bool,
    prefix: str,
    known_hosts: Path | None,
    timeout: float,
    health_timeout: float,
    health_traffic: bool,
) -> None:
    """Install the controller's own version of the agent on each host over SSH (from
    wheels it ships; kept on the host under PREFIX/wheels/VERSION), restart the agent,
    put the host's plan in force and wait for the health gate of `apply --canary`: the
    canary batch first, then --serial batches. A host already at this version is ok.

    A batch that fails (a step on a host, or its gate) gets the previous version back
    on each of its hosts, from the wheels kept there, and the rollout stops. Exit codes
    are apply's: 0 done, 1 bad input (nothing contacted), 2 a host failed or the
    rollout stopped, 4 hosts unreachable.
    """
    layout = agent_layout(prefix)
    cache = ctx.state.root / "wheels"
    try:
        options = UpgradeOptions(
            planned_wheel_set(cache).version, canary, parse_serial(serial), forks, check
        )
        gate = HealthGate(timeout=health_timeout, require_traffic=health_traffic)
    except ValueError as exc:  # CanaryError among them
        fail(str(exc))
    with input_errors():
        vault = open_vault(vault_password_file, vault_key_file)
        fleet = operations.compile_fleet_at(inventory, ctx.state, None, limit=limit, vault=vault)
        require_ca(ctx, inventory)
        if not check:
            ctx.hold_lock("upgrade")
        try:
            plans = {p.settings.host: p for p in host_plans(fleet.inventory, fleet.selected)}
            hosts = SshAgentHosts(
                plans,
                fleet.endpoints,
                HostKeyPolicy.make(known_hosts, False),
                planned_wheel_set(cache) if check else wheel_set(cache),
                operations.client_credentials(ctx.state),
                layout,
                timeout,
                health_timeout,
            )
        except (ConnectionVarError, WheelError) as exc:
            fail(str(exc))
    report = None if output == "json" else (lambda line: out.print(line, markup=False))
    result = asyncio.run(
        run_upgrade(
            fleet,
            hosts,
            AgentAccess(ctx.state, RolloutOptions(forks=forks), timeout),
            options,
            gate=gate,
            report=report,
        )
    )
    # Each changed host's line says the version it had and the one it has (or would).
    render_canary(result, output, lambda host: "the version it ran before", show_diff=True)
