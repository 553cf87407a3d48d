"""`vpnfleet diff` and `vpnfleet serve`: inventories at git revisions."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

import click
from rich.markup import escape

from ..delivery.health import HealthGate
from ..fleet import operations, revisions
from ..fleet.rollout import RolloutOptions
from ..gitops import serve_http
from .common import (
    Ctx,
    err,
    fail,
    force_option,
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
from .renew import renewal_window, renewal_window_options
from .root import main

# ---------------------------------------------------------------- diff / serve


@main.command("diff")
@inventory_option
@limit_option
@vault_option
@output_option
@click.option("--from", "from_rev", required=True, metavar="REF", help="The old revision.")
@click.option(
    "--to",
    "to_rev",
    default=None,
    metavar="REF",
    help="The new revision (default: the working tree).",
)
@pass_ctx
def diff_cmd(
    ctx: Ctx,
    inventory: Path,
    limit: str | None,
    vault_password_file: Path | None,
    vault_key_file: Path | None,
    output: str,
    from_rev: str,
    to_rev: str | None,
) -> None:
    """Show the data-plane change per host between two revisions; contact no agent.

    SPD entries, peers (with the fields that changed), proposals and credentials
    rotated, by reference (never secret values). Both sides use the same master secret.
    """
    from vpnfleet.protos.plan_diff import ChangeKind

    from ..gitops.diff import diff_plans

    with input_errors():
        vault = open_vault(vault_password_file, vault_key_file)
        old, new = (
            operations.compile_fleet_at(
                inventory, ctx.state, ref, limit=limit, vault=vault, planner=ctx.planner
            )
            for ref in (from_rev, to_rev)
        )
    result = diff_plans(
        old.plans,
        new.plans,
        from_revision=_revision_of(old, from_rev),
        to_revision=_revision_of(new, to_rev),
    )
    if output == "json":
        click.echo(json.dumps(result.to_json()))
        return
    out.print(f"diff {result.from_revision[:12]} -> {result.to_revision[:12]}", markup=False)
    for h in result.hosts:
        style = {ChangeKind.ADDED: "green", ChangeKind.REMOVED: "red"}.get(h.kind, "yellow")
        out.print(f"[{style}]{h.kind.value}[/]: " + escape(f"[{h.host}]"))
        for c in h.changes:
            out.print(f"    {c}", markup=False)
    if result.unchanged:
        out.print(f"unchanged: {', '.join(result.unchanged)}", markup=False)


def _revision_of(fleet: operations.CompiledFleet, ref: str | None) -> str:
    plans = list(fleet.plans.values())
    return plans[0].source_revision if plans else (ref or "worktree")


@main.command("serve")
@click.option(
    "-i",
    "--inventory",
    "inventory",
    required=True,
    type=click.Path(path_type=Path),
    help="Inventory directory inside a git repository's working tree (REPO/INV).",
)
@vault_option
@click.option("--branch", default="main", show_default=True, help="The branch to follow.")
@click.option(
    "--interval", default=30.0, show_default=True, help="Seconds between polls of the branch."
)
@click.option(
    "--listen",
    default="127.0.0.1:8080",
    show_default=True,
    help="HOST:PORT for /status, /audit, /metrics and POST /webhook (port 0: any free one).",
)
@click.option(
    "--webhook-secret-file",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    metavar="FILE",
    help="Shared secret of POST /webhook (GitHub X-Hub-Signature-256 or GitLab "
    "X-Gitlab-Token), readable by its owner only. Without it the webhook is refused (403) "
    "and only the polls follow the branch.",
)
@click.option(
    "--api-token-file",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    metavar="FILE",
    help="Require 'Authorization: Bearer TOKEN' on /status, /audit and /metrics, TOKEN "
    "being this file's content (readable by its owner only). Default: those endpoints "
    "are open.",
)
@click.option(
    "--allowed-host",
    "allowed_host",
    multiple=True,
    metavar="NAME",
    help="A name or address clients may give in the Host header, besides the --listen "
    "address and localhost (repeatable). Other Host headers get 421 (DNS rebinding).",
)
@click.option(
    "--http-timeout",
    default=serve_http.DEFAULT_REQUEST_TIMEOUT,
    show_default=True,
    help="Seconds a client has to send a whole HTTP request; slower ones get 408.",
)
@click.option(
    "--http-max-connections",
    default=serve_http.DEFAULT_MAX_CONNECTIONS,
    show_default=True,
    help="HTTP connections served at once; more are answered 503 at once.",
)
@click.option(
    "--correct-drift", is_flag=True, help="Re-apply the desired plan on hosts that drift."
)
@click.option(
    "--allow-rollback",
    is_flag=True,
    help="Push a commit that does not descend from the revision in force (a branch reset "
    "or force-pushed to an older commit). Without it such a commit is refused.",
)
@click.option(
    "--health-timeout",
    type=float,
    default=60.0,
    show_default=True,
    help="Seconds each batch of a staged pair change gets to pass its health gate.",
)
@force_option
@click.option("-f", "--forks", default=10, show_default=True, help="Agents contacted at once.")
@click.option("--serial", default=None, metavar="N|N%[,...]", help="Roll out in batches of hosts.")
@click.option("--timeout", default=10.0, show_default=True, help="Seconds per agent call.")
@click.option(
    "--renew-certs/--no-renew-certs",
    default=True,
    show_default=True,
    help="Renew agents' certificates when due, as `vpnfleet renew` does.",
)
@renewal_window_options
@pass_ctx
def serve_cmd(
    ctx: Ctx,
    inventory: Path,
    vault_password_file: Path | None,
    vault_key_file: Path | None,
    branch: str,
    interval: float,
    listen: str,
    webhook_secret_file: Path | None,
    api_token_file: Path | None,
    allowed_host: tuple[str, ...],
    http_timeout: float,
    http_max_connections: int,
    correct_drift: bool,
    allow_rollback: bool,
    health_timeout: float,
    force: bool,
    forks: int,
    serial: str | None,
    timeout: float,
    renew_certs: bool,
    renew_fraction: float,
    renew_days: float,
) -> None:
    """Follow BRANCH and roll out each new commit; serve status, audit and metrics.

    With a remote, the ref followed is refs/remotes/REMOTE/BRANCH (fetched each poll),
    else refs/heads/BRANCH; it is named with its commit at start and in every line
    about a rollout, and a local branch ahead of it is named, not followed. A commit
    whose inventory does not compile (or that the safety rails refuse) is recorded as
    failed in the audit log and nothing is pushed: the last good revision stays in
    force. A commit that does not descend from the revision in force is refused
    unless --allow-rollback. Pair changes (keys, proposals, addresses) go in the three
    steps of `apply`. A rollout holds the state directory's lock: while `apply`,
    `rotate` or `rekey` holds it, the push waits for the next poll and says so. Stops
    cleanly on SIGTERM or Ctrl-C. After each poll, agents' certificates that are due
    are renewed as `vpnfleet renew` does (--no-renew-certs: not).

    POST /webhook polls at once; it needs --webhook-secret-file (GitHub's
    X-Hub-Signature-256 or GitLab's X-Gitlab-Token) and is refused without it. Every
    endpoint checks the Host header against the --listen address, localhost and
    --allowed-host; --api-token-file puts a bearer token on the read endpoints.
    """
    import signal

    from ..gitops import reconcile
    from ..statedir.audit import AuditError, AuditLog

    with input_errors():
        if interval <= 0:
            fail("--interval takes a positive number of seconds")
        if http_timeout <= 0:
            fail("--http-timeout takes a positive number of seconds")
        if health_timeout <= 0:
            fail("--health-timeout takes a positive number of seconds")
        if http_max_connections < 1:
            fail("--http-max-connections takes a number of connections, 1 or more")
        try:
            listen_host, _port = serve_http.parse_listen(listen)
            http_options = serve_http.HttpOptions(
                allowed_hosts=serve_http.allowed_hosts(listen_host, allowed_host),
                webhook_secret=_secret(webhook_secret_file, "webhook secret file"),
                api_token=_secret(api_token_file, "API token file"),
                request_timeout=http_timeout,
                max_connections=http_max_connections,
            )
        except ValueError as exc:  # SecretFileError included
            fail(str(exc))
        require_ca(ctx, inventory)
        options = reconcile.ServeOptions(
            inventory=inventory,
            branch=branch,
            interval=interval,
            correct_drift=correct_drift,
            force=force,
            rollout=RolloutOptions(forks=forks, serial=parse_serial(serial)),
            timeout=timeout,
            vault=open_vault(vault_password_file, vault_key_file),
            allow_rollback=allow_rollback,
            gate=HealthGate(timeout=health_timeout, require_traffic=False),
            renewal=renewal_window(renew_fraction, renew_days) if renew_certs else None,
        )
        revisions.repo_root(inventory)
        try:
            AuditLog.in_state(ctx.state.root)
        except AuditError as exc:
            fail(str(exc))

    def log(message: str) -> None:
        err.print(f"[dim]{time.strftime('%H:%M:%S')}[/] {escape(message)}")

    for warning in serve_http.exposure_warnings(listen_host, http_options):
        log(f"warning: {warning}")

    def listening(address: str) -> None:
        click.echo(f"vpnfleet serve: listening on http://{address}")
        sys.stdout.flush()

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await reconcile.serve(
            ctx.state, options, listen, http_options, stop=stop, log=log, on_listening=listening
        )

    try:
        asyncio.run(run())
    except OSError as exc:
        fail(f"cannot listen on {listen}: {exc.strerror or exc}")
    log("stopped")


def _secret(path: Path | None, what: str) -> bytes | None:
    return None if path is None else serve_http.read_secret_file(path, what)
