"""The `vpnfleet` command group; its subcommands register from the sibling modules."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from ..statedir.state import default_state_dir
from .common import EXIT_BAD_INPUT, Ctx


class BadUsage(click.UsageError):
    """A usage error that exits 1: click's own exit 2 is `apply`'s "a host failed", and
    bad options are bad input like a bad inventory."""

    exit_code = EXIT_BAD_INPUT


@contextmanager
def _usage_is_bad_input() -> Iterator[None]:
    try:
        yield
    except BadUsage:
        raise
    except click.UsageError as exc:
        raise BadUsage(exc.format_message(), exc.ctx) from None


class FleetGroup(click.Group):
    """The root group: a usage error of any command (unknown option or command, missing
    or invalid value) exits 1."""

    def make_context(
        self,
        info_name: str | None,
        args: list[str],
        parent: click.Context | None = None,
        **extra: Any,
    ) -> click.Context:
        with _usage_is_bad_input():
            return super().make_context(info_name, args, parent, **extra)

    def invoke(self, ctx: click.Context) -> Any:
        # Subcommands (and nested groups) parse their arguments in here.
        with _usage_is_bad_input():
            return super().invoke(ctx)


@click.group(
    cls=FleetGroup,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
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
