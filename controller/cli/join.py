"""`vpnfleet token create|list|revoke` and `vpnfleet join-server`: join tokens."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys
import time

import click

from ..deploy.join import (
    DEFAULT_TTL,
    AuditKind,
    JoinAuthority,
    JoinError,
    TokenStore,
    audit_token,
    parse_ttl,
)
from ..deploy.join_server import JoinServerError, start_join_server
from ..gitops.serve_http import parse_listen
from ..statedir import pki
from .common import Ctx, fail, input_errors, out, output_option, pass_ctx, require_ca
from .root import main


@main.group("token")
def token_group() -> None:
    """Join tokens: single-use, expiring credentials a host joins the fleet with."""


@token_group.command("create")
@click.option("--host", required=True, help="The host (inventory name) the token is for.")
@click.option(
    "--ttl",
    default=f"{int(DEFAULT_TTL) // 3600}h",
    show_default=True,
    help="How long the token is valid: 30m, 1h, 2d (at most 7d).",
)
@click.option("--address", default=None, help="Underlay address to add to the IKE certificate.")
@output_option
@pass_ctx
def token_create(ctx: Ctx, host: str, ttl: str, address: str | None, output: str) -> None:
    """Make a single-use token for HOST; print it (it is shown once, keep it secret).

    On the host: vpnfleet-agent join --controller ADDR:PORT --token TOKEN --name HOST
    """
    require_ca(ctx, None)
    with input_errors():
        try:
            seconds = parse_ttl(ttl)
            ca_sha256 = pki.ca_info(ctx.state.root).fingerprint
            store = TokenStore(ctx.state.root)
            token = store.create(host, seconds, ca_sha256, address or "")
            record = next(r for r in store.list() if r.token_id == token.token_id)
            audit_token(ctx.state.root, AuditKind.TOKEN_CREATE, record, time.time())
        except JoinError as exc:
            fail(str(exc))
    if output == "json":
        click.echo(json.dumps({"token": str(token), **record.to_json(time.time())}))
        return
    click.echo(str(token))
    out.print(
        f"token {token.token_id} for {host}, single-use, valid for {ttl}; on {host}:\n"
        f"  vpnfleet-agent join --controller JOIN-SERVER:PORT --token TOKEN --name {host}",
        markup=False,
    )


@token_group.command("list")
@output_option
@pass_ctx
def token_list(ctx: Ctx, output: str) -> None:
    """List the tokens: host, expiry, and whether valid, used, expired or revoked."""
    try:
        records = TokenStore(ctx.state.root).list()
    except JoinError as exc:
        fail(str(exc))
    now = time.time()
    if output == "json":
        click.echo(json.dumps([r.to_json(now) for r in records]))
        return
    if not records:
        out.print("no join tokens", markup=False)
    for r in records:
        expires = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(r.expires_at))
        used = f" used from {r.used_by}" if r.used_at is not None else ""
        out.print(
            f"{r.token_id}  {r.host}  {r.state(now).value}  expires {expires}{used}", markup=False
        )


@token_group.command("revoke")
@click.argument("token_id")
@pass_ctx
def token_revoke(ctx: Ctx, token_id: str) -> None:
    """Revoke the token TOKEN_ID (its id, as `token list` shows it) so no host can use it."""
    try:
        record = TokenStore(ctx.state.root).revoke(token_id)
        audit_token(ctx.state.root, AuditKind.TOKEN_REVOKE, record, time.time())
    except JoinError as exc:
        fail(str(exc))
    out.print(f"revoked token {token_id} (for {record.host})", markup=False)


@main.command("join-server")
@click.option(
    "--listen",
    required=True,
    metavar="HOST:PORT",
    help="Where hosts reach the join service (port 0: any free port, printed).",
)
@pass_ctx
def join_server(ctx: Ctx, listen: str) -> None:
    """Serve joins: sign the CSRs of a host that holds a valid join token for its name.

    A separate TLS listener (the join-server certificate, issued by the fleet CA); every
    request is audited; each source address may ask 5 times at once, then once every
    12 seconds. Prints "vpnfleet join-server (fleet CA sha256 HASH) listening on
    HOST:PORT" once serving.
    """
    require_ca(ctx, None)
    try:
        parse_listen(listen)
    except ValueError as exc:
        fail(str(exc))
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(message)s"
    )
    authority = JoinAuthority(ctx.state.root)

    async def go() -> None:
        running = await start_join_server(authority, listen)
        host = listen.rpartition(":")[0]
        out.print(
            f"vpnfleet join-server (fleet CA sha256 {running.ca_sha256}) listening on "
            f"{host}:{running.port}",
            markup=False,
        )
        sys.stdout.flush()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await running.stop()

    try:
        asyncio.run(go())
    except JoinServerError as exc:
        fail(str(exc))
