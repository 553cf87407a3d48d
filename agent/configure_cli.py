"""``vpnfleet-agent configure``: the command line of agent/configure.py."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from vpnfleet.protos.host_setup import UNIT_NAME, dump_report

from .config import DEFAULT_STATE_DIR, ConfigError
from .configure import ConfigureError, configure
from .unit import DEFAULT_CONFIG, UnitError


@click.command("configure")
@click.option("--name", required=True, help="This host's name, as in the inventory.")
@click.option(
    "--listen",
    required=True,
    metavar="HOST:PORT",
    help="Where the agent serves the controller: the address and agent_port it dials.",
)
@click.option(
    "--state-dir",
    default=DEFAULT_STATE_DIR,
    show_default=True,
    type=click.Path(path_type=Path, file_okay=False),
)
@click.option(
    "--config",
    "config_path",
    default=DEFAULT_CONFIG,
    show_default=True,
    type=click.Path(path_type=Path, dir_okay=False),
    help="Where the agent configuration goes.",
)
@click.option(
    "--unit-dir",
    default=Path("/etc/systemd/system"),
    show_default=True,
    type=click.Path(path_type=Path, file_okay=False),
    help=f"Where {UNIT_NAME} goes.",
)
@click.option(
    "--venv",
    default=lambda: Path(sys.prefix),
    show_default="this installation",
    type=click.Path(path_type=Path, file_okay=False),
    help="The virtual environment whose vpnfleet-agent the unit runs.",
)
@click.option("--check", is_flag=True, help="Report what would change; write nothing.")
@click.option(
    "--json", "as_json", is_flag=True, help="Print the report as JSON, with each file's diff."
)
def configure_cmd(
    name: str,
    listen: str,
    state_dir: Path,
    config_path: Path,
    unit_dir: Path,
    venv: Path,
    check: bool,
    as_json: bool,
) -> None:
    """Write the agent configuration (data plane on) and its systemd unit, each only
    when it differs from what is there; report each file as added, changed or
    unchanged. The caller reloads systemd and restarts the agent when one changed."""
    try:
        report = configure(name, listen, state_dir.absolute(), config_path, unit_dir, venv, check)
    except (ConfigError, UnitError, ConfigureError) as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    if as_json:
        click.echo(dump_report(report))
        return
    would = "would be " if check else ""
    for f in report:
        click.echo(f"{f.path}: {would if f.changed else ''}{f.state.value}")
