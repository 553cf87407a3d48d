"""`vpnfleet bootstrap`: reach the inventory's hosts over SSH and check them."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import click
from rich.markup import escape

from ..bootstrap.connection import ConnectionVarError
from ..bootstrap.hostkeys import HostKeyPolicy
from ..bootstrap.run import DEFAULT_TIMEOUT, BootstrapOptions, CheckRun, check_hosts, host_plans
from ..inventory import limit_hosts, load_inventory
from ..results import Outcome
from .common import (
    err,
    fail,
    input_errors,
    inventory_option,
    limit_option,
    open_vault,
    out,
    output_option,
    progress_bar,
    render_recap,
    vault_option,
)
from .root import main


@main.command("bootstrap")
@inventory_option
@limit_option
@vault_option
@output_option
@click.option("-f", "--forks", default=10, show_default=True, help="Hosts contacted at once.")
@click.option(
    "--check",
    is_flag=True,
    help="Connect and check each host's prerequisites; change nothing.",
)
@click.option(
    "--known-hosts",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    metavar="FILE",
    help="Check host keys against FILE only. Default: ~/.ssh/known_hosts and "
    "/etc/ssh/ssh_known_hosts.",
)
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
def bootstrap_cmd(
    inventory: Path,
    limit: str | None,
    vault_password_file: Path | None,
    vault_key_file: Path | None,
    output: str,
    forks: int,
    check: bool,
    known_hosts: Path | None,
    accept_new_host_keys: bool,
    timeout: float,
) -> None:
    """Reach each host over SSH as Ansible would (ansible_host, ansible_port,
    ansible_user, ansible_ssh_private_key_file, ansible_become, ansible_python_interpreter)
    and check what an agent needs there: /dev/net/tun, Python, nft, free UDP 500 and 4500
    and agent port, root.

    Exit codes: 0 every host ready, 1 bad input (nothing contacted), 2 a host lacks a
    prerequisite, 4 hosts unreachable (a host key refused is one).
    """
    if not check:
        fail(
            "vpnfleet bootstrap only checks hosts so far: run it with --check; install "
            "the agent as README's 'Deploying to real hosts' says"
        )
    with input_errors():
        inv = load_inventory(inventory, vault=open_vault(vault_password_file, vault_key_file))
        selected = limit_hosts(inv, limit) if limit else list(inv.hosts)
        try:
            options = BootstrapOptions(
                HostKeyPolicy.make(known_hosts, accept_new_host_keys), forks, timeout
            )
            plans = host_plans(inv, selected)
        except (ValueError, ConnectionVarError) as exc:
            fail(str(exc))
    if output != "json":
        for plan in plans:
            for note in plan.settings.ignored:
                err.print(
                    f"[yellow]warning:[/] {escape(plan.settings.host)}: ignored {escape(note)}"
                )
    with progress_bar(len(plans), "check") as hook:
        run = asyncio.run(check_hosts(plans, options, hook))
    if output == "json":
        doc = run.result.to_json()
        doc["prerequisites"] = {
            r.host: run.reports[r.host].to_json() for r in run.result if r.host in run.reports
        }
        click.echo(json.dumps(doc))
    else:
        render_check(run)
        render_recap(run.result)
    sys.exit(run.result.exit_code)


def render_check(run: CheckRun) -> None:
    for r in run.result:
        if r.outcome is Outcome.OK:
            out.print(
                f"[green]ok[/]: {escape(f'[{r.host}]')} {escape(run.reports[r.host].summary())}"
            )
        else:
            out.print(f"[red]{r.outcome.value}[/]: {escape(f'[{r.host}]')} {escape(r.error)}")
