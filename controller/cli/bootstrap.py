"""`vpnfleet bootstrap`: reach the inventory's hosts over SSH and bring each to a running
agent with its plan in force."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any, TypeVar

import click
from rich.markup import escape

from ..deploy.connection import ConnectionVarError
from ..deploy.hostkeys import HostKeyPolicy
from ..deploy.install import DEFAULT_PREFIX, AgentLayout
from ..deploy.run import (
    DEFAULT_TIMEOUT,
    BootstrapOptions,
    BootstrapRun,
    bootstrap_hosts,
    host_plans,
)
from ..deploy.wheels import WheelError, planned_wheel_set, wheel_set
from ..fleet import operations
from ..reports.results import Outcome
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
    pass_ctx,
    progress_bar,
    render_recap,
    require_ca,
    vault_option,
)
from .root import main

F = TypeVar("F", bound=Callable[..., Any])


def prefix_option(help: str) -> Callable[[F], F]:
    """--prefix: where the agent is on each host (bootstrap's PREFIX)."""
    return click.option("--prefix", default=str(DEFAULT_PREFIX), show_default=True, help=help)


known_hosts_option = click.option(
    "--known-hosts",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    metavar="FILE",
    help="Check host keys against FILE only. Default: ~/.ssh/known_hosts and "
    "/etc/ssh/ssh_known_hosts.",
)


def agent_layout(prefix: str) -> AgentLayout:
    """--prefix as the layout of the agent on the hosts; exits 1 when it is not absolute."""
    layout = AgentLayout(PurePosixPath(prefix))
    if not layout.prefix.is_absolute():
        fail(f"--prefix must be an absolute path on the hosts, got {prefix!r}")
    return layout


@main.command("bootstrap")
@inventory_option
@limit_option
@vault_option
@output_option
@force_option
@click.option("-f", "--forks", default=10, show_default=True, help="Hosts contacted at once.")
@click.option(
    "--check",
    is_flag=True,
    help="Connect, check each host's prerequisites and say what would change (agent, "
    "certificates, config and unit, service, plan); change nothing.",
)
@click.option("--diff", is_flag=True, help="Show what changed (or would) on each host.")
@prefix_option("Where the agent goes on each host: PREFIX/venv, PREFIX/wheels/VERSION.")
@known_hosts_option
@click.option(
    "--accept-new-host-keys",
    is_flag=True,
    help="Accept the key of a host known_hosts has no entry for and record it there "
    "(ssh's StrictHostKeyChecking=accept-new); a key that differs from a recorded one "
    "is still refused.",
)
@click.option(
    "--timeout",
    type=float,
    default=DEFAULT_TIMEOUT,
    show_default=True,
    help="Seconds to connect and log in to a host.",
)
@pass_ctx
def bootstrap_cmd(
    ctx: Ctx,
    inventory: Path,
    limit: str | None,
    vault_password_file: Path | None,
    vault_key_file: Path | None,
    output: str,
    force: bool,
    forks: int,
    check: bool,
    diff: bool,
    prefix: str,
    known_hosts: Path | None,
    accept_new_host_keys: bool,
    timeout: float,
) -> None:
    """Reach each host over SSH as Ansible would (ansible_host, ansible_port,
    ansible_user, ansible_ssh_private_key_file, ansible_become, ansible_python_interpreter),
    check what an agent needs there (/dev/net/tun, Python, nft, free UDP 500 and 4500 and
    agent port, root), install the agent at the controller's own version into a venv
    under --prefix from wheels the controller ships (the host needs no index), enrol
    it (keys made on the host, CSRs signed by the fleet CA, certificates installed),
    have it write its configuration and systemd unit, enable and start it through
    systemctl (restart it when its version, certificates, configuration or unit
    changed), wait for its gRPC health, and push the plans as `vpnfleet apply` does.

    A host that already has all of that is left as it is (ok).
    Exit codes: 0 every host ok or changed, 1 bad input or no fleet CA (nothing
    contacted), 2 a host lacks a prerequisite or a step failed there, 4 hosts unreachable
    (a refused host key is one).
    """
    with input_errors():
        vault = open_vault(vault_password_file, vault_key_file)
        fleet = operations.compile_fleet(inventory, ctx.state, limit=limit, vault=vault)
        enforce_rails(fleet, force)
        inv = fleet.inventory
        selected = fleet.selected
        if not check:
            require_ca(ctx, inventory)
            ctx.hold_lock("bootstrap")
        layout = agent_layout(prefix)
        try:
            plans = host_plans(inv, selected)
            cache = ctx.state.root / "wheels"
            options = BootstrapOptions(
                HostKeyPolicy.make(known_hosts, accept_new_host_keys),
                planned_wheel_set(cache) if check else wheel_set(cache),
                ctx.state.root,
                forks,
                timeout,
                check,
                layout,
                fleet,
            )
        except (ValueError, ConnectionVarError, WheelError) as exc:
            fail(str(exc))
    if output != "json":
        for plan in plans:
            for note in plan.settings.ignored:
                err.print(
                    f"[yellow]warning:[/] {escape(plan.settings.host)}: ignored {escape(note)}"
                )
    with progress_bar(len(plans), "check" if check else "bootstrap") as hook:
        run = asyncio.run(bootstrap_hosts(plans, options, hook))
    if output == "json":
        doc = run.result.to_json()
        doc["prerequisites"] = {
            r.host: run.reports[r.host].to_json() for r in run.result if r.host in run.reports
        }
        doc["diffs"] = {
            host: {f"{c.section} {c.name}": diff for c, diff in diffs.items()}
            for host, diffs in run.diffs.items()
            if diffs
        }
        click.echo(json.dumps(doc))
    else:
        render_run(run, show_diff=diff or check)
        render_recap(run.result)
    sys.exit(run.result.exit_code)


def render_run(run: BootstrapRun, show_diff: bool) -> None:
    """Ansible's per-host lines: what a host has, what changed, or why it failed."""
    for r in run.result:
        host = escape(f"[{r.host}]")
        if r.outcome in (Outcome.OK, Outcome.CHANGED):
            style = "green" if r.outcome is Outcome.OK else "yellow"
            out.print(f"[{style}]{r.outcome.value}[/]: {host} {escape(run.summaries[r.host])}")
            for c in r.changes if show_diff else ():
                out.print(f"    {c}", markup=False)
                for line in run.diffs.get(r.host, {}).get(c, "").splitlines():
                    out.print(f"        {line}", markup=False, highlight=False)
        else:
            out.print(f"[red]{r.outcome.value}[/]: {host} {escape(r.error)}")
