"""The `vpnfleet` command group; its subcommands register from the sibling modules."""

from __future__ import annotations

from pathlib import Path

import click

from ..state import default_state_dir
from .common import Ctx


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
