"""What every vpnfleet command shares: consoles, errors, options, results rendering."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

import click
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from vpnfleet.protos.files import UnsafeDirectoryError

from ..fleet import operations, rails, revisions
from ..fleet.rollout import RolloutOptionError
from ..inventory import InventoryError, InventoryErrors
from ..inventory import vault as vault_mod
from ..planner import Planner
from ..reports.results import AggregateResult, HostResult, Outcome
from ..statedir import pki
from ..statedir.state import StateDir, StateError
from ..statedir.state_lock import LockHeld, StateLock


def _width(stream: Any) -> int | None:
    # Tables piped to a file or a pager keep their columns instead of being cut to 80.
    return None if stream.isatty() else int(os.environ.get("COLUMNS", "160"))


out = Console(highlight=False, soft_wrap=True, width=_width(sys.stdout))
err = Console(stderr=True, highlight=False, soft_wrap=True, width=_width(sys.stderr))

EXIT_BAD_INPUT = 1


def fail(message: str, code: int = EXIT_BAD_INPUT) -> NoReturn:
    err.print(f"[bold red]error:[/] {escape(message)}")
    sys.exit(code)


def require_ca(ctx: Ctx, inventory: Path | None) -> None:
    """Exit 1 with advice when the state directory holds no fleet CA."""
    if not operations.ca_exists(ctx.state):
        fail(operations.missing_ca_advice(ctx.state, inventory))


@contextmanager
def input_errors() -> Iterator[None]:
    """Turn bad-input exceptions into a clear message and exit code 1, no traceback."""
    try:
        yield
    except InventoryErrors as exc:
        err.print(str(exc), markup=False)
        sys.exit(EXIT_BAD_INPUT)
    except (
        InventoryError,
        StateError,
        pki.PkiError,
        vault_mod.VaultError,
        RolloutOptionError,
        revisions.RevisionError,
        UnsafeDirectoryError,
    ) as exc:
        fail(str(exc))


# ---------------------------------------------------------------- shared options


def inventory_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "-i",
        "--inventory",
        "inventory",
        required=True,
        type=click.Path(path_type=Path),
        help="Inventory directory (hosts.yaml, group_vars/, host_vars/, topology.yaml).",
    )(f)


def limit_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "-l",
        "--limit",
        default=None,
        metavar="PATTERN",
        help="Only these hosts (an Ansible host pattern): host, group, glob, '~regex', "
        "'a,b' union, 'a,&b' intersection, 'a,!b' exclusion, 'group[0]', 'group[1:3]', "
        "'@retry-file'.",
    )(f)


def output_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "-o",
        "--output",
        type=click.Choice(["text", "json"]),
        default="text",
        show_default=True,
        help="text for people, json for scripts.",
    )(f)


def rev_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--rev",
        default=None,
        metavar="REF",
        help="Read the inventory as it is at this git revision (commit, branch, tag), "
        "not the working tree.",
    )(f)


def force_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--force",
        is_flag=True,
        help="Push plans the safety rails refuse (SPD entries that protect or discard "
        "the controller's gRPC or SSH path to a host).",
    )(f)


def enforce_rails(fleet: operations.CompiledFleet, force: bool) -> None:
    """Refuse (exit 1, nothing contacted) plans that would cut the controller off."""
    violations = operations.rail_violations(fleet)
    if not violations:
        return
    if force:
        for v in violations:
            err.print(f"[yellow]warning (--force):[/] {escape(str(v))}")
        return
    err.print(str(rails.RailError(violations)), markup=False)
    sys.exit(EXIT_BAD_INPUT)


def vault_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--vault-password-file",
        type=click.Path(path_type=Path, exists=True, dir_okay=False),
        envvar="VPNFLEET_VAULT_PASSWORD_FILE",
        help="File with the vault password (or a 32-byte key file with --vault-key-file).",
    )(
        click.option(
            "--vault-key-file",
            type=click.Path(path_type=Path, exists=True, dir_okay=False),
            envvar="VPNFLEET_VAULT_KEY_FILE",
            help="Raw 32-byte vault key file instead of a password.",
        )(f)
    )


def open_vault(
    password_file: Path | None,
    key_file: Path | None,
    max_derivations: int = vault_mod.MAX_DERIVATIONS,
) -> vault_mod.Vault | None:
    if key_file:
        return vault_mod.Vault.from_key_file(key_file)
    if password_file:
        return vault_mod.Vault.from_password_file(password_file, max_derivations=max_derivations)
    return None


class Ctx:
    def __init__(self, state: Path) -> None:
        self.state = StateDir(state)
        self.lock: StateLock | None = None
        # Shared by the compiles of one command (a diff's two revisions, apply's in-force
        # candidates, a rotation's phases): each re-plans only what changed.
        self.planner = Planner()

    def hold_lock(self, command: str) -> None:
        """Hold the state directory's lock until the process ends; exit 1 naming the
        holder when another process has it."""
        lock = StateLock(self.state, command)
        try:
            lock.acquire()
        except LockHeld as exc:
            fail(f"{exc}: wait for it to finish, or stop it, and run this again")
        except OSError as exc:
            fail(f"cannot lock the state directory {self.state.root}: {exc.strerror or exc}")
        self.lock = lock


pass_ctx = click.make_pass_decorator(Ctx)


def render_changes(result: AggregateResult, show_diff: bool) -> None:
    for r in result:
        style = {
            Outcome.OK: "green",
            Outcome.CHANGED: "yellow",
            Outcome.FAILED: "red",
            Outcome.UNREACHABLE: "red",
            Outcome.SKIPPED: "cyan",
        }[r.outcome]
        label = r.outcome.value
        detail = escape(f"[{r.host}]" + (f" {r.error}" if r.error else ""))
        out.print(f"[{style}]{label}[/]: {detail}")
        for warning in r.warnings:
            out.print(f"    [magenta]warning:[/] {escape(warning)}")
        if show_diff:
            for c in r.changes:
                out.print(f"    {c}", markup=False)


def render_recap(result: AggregateResult) -> None:
    out.print("\n[bold]RECAP[/] " + "*" * 60)
    for line in result.recap_lines():
        out.print(line, markup=False)
    if result.aborted:
        err.print(f"[bold red]stopped:[/] {escape(result.aborted)}")


@contextmanager
def progress_bar(total: int, what: str) -> Iterator[Callable[[HostResult], None]]:
    if not err.is_terminal or total < 2:
        yield lambda _r: None
        return
    with Progress(
        TextColumn(what),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=True,
    ) as bar:
        task = bar.add_task(what, total=total)
        yield lambda _r: bar.advance(task)


def parse_serial(serial: str | None) -> tuple[str, ...]:
    return tuple(s for s in (serial or "").split(",") if s.strip())
