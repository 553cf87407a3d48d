"""The join service (``vpnfleet join-server``): gRPC over server-authenticated TLS.

gRPC because the agent and the controller already speak it (the same library, TLS
stack, deadlines and status codes, and generated code from protos/join.proto), so the
service adds no HTTP server or JSON schema of its own. It listens apart from anything
else the controller serves: the only thing it can do is :class:`JoinAuthority.join`,
which signs CSRs for the host a valid token names, and nothing it answers depends on
which agents exist.

The server presents the join-server certificate followed by the fleet CA
(:func:`pki.ensure_join_server_cert`); the host, knowing only the CA's hash from its
token, finds the CA in that chain and then trusts nothing else. No client certificate
is asked for: the host has none yet; the token is its credential.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import grpc

from vpnfleet.protos import join_pb2, join_pb2_grpc

from ..statedir import pki
from .join import JoinAuthority, JoinRefused, Refusal

log = logging.getLogger(__name__)

_STATUS = {
    Refusal.RATE_LIMITED: grpc.StatusCode.RESOURCE_EXHAUSTED,
    Refusal.MALFORMED: grpc.StatusCode.INVALID_ARGUMENT,
    Refusal.BAD_CSR: grpc.StatusCode.INVALID_ARGUMENT,
}
MAX_REQUEST_BYTES = 64 * 1024
"""Two CSRs and a token fit in a few kilobytes; nothing bigger is read."""


class JoinServerError(Exception):
    """The service cannot start (no CA, address in use …)."""


def source_address(peer: str) -> str:
    """The address of gRPC's peer string (``ipv4:192.0.2.1:5000``, ``ipv6:[::1]:5000``)."""
    kind, _, rest = peer.partition(":")
    if kind == "ipv4":
        return rest.rpartition(":")[0]
    if kind == "ipv6":
        return rest.rpartition(":")[0].strip("[]")
    return peer


class JoinServicer(join_pb2_grpc.JoinServicer):
    def __init__(self, authority: JoinAuthority) -> None:
        self.authority = authority

    async def Join(
        self, request: join_pb2.JoinRequest, context: grpc.aio.ServicerContext
    ) -> join_pb2.JoinResponse:
        source = source_address(context.peer())
        try:
            grant = await asyncio.to_thread(
                self.authority.join,
                source,
                request.token_id,
                request.secret,
                request.host,
                request.tls_csr,
                request.ike_csr,
            )
        except JoinRefused as refused:
            log.warning("refused the join of %r from %s: %s", request.host, source, refused.message)
            code = _STATUS.get(refused.refusal, grpc.StatusCode.PERMISSION_DENIED)
            await context.abort(code, f"{refused.refusal.value}: {refused.message}")
            raise  # abort raises; this is for the type checker
        log.info("%s joined from %s with token %s", grant.host, source, grant.token_id)
        return join_pb2.JoinResponse(
            tls_cert=grant.tls_cert, ike_cert=grant.ike_cert, ca_cert=grant.ca_cert
        )


@dataclass(slots=True)
class RunningJoinServer:
    server: grpc.aio.Server
    port: int
    ca_sha256: str

    async def stop(self, grace: float = 5.0) -> None:
        await self.server.stop(grace)


async def start_join_server(authority: JoinAuthority, listen: str) -> RunningJoinServer:
    """Bind ``listen`` (host:port; port 0 for any) and serve joins."""
    try:
        tls = pki.ensure_join_server_cert(authority.state_root)
    except pki.PkiError as exc:
        raise JoinServerError(str(exc)) from None
    server = grpc.aio.server(options=[("grpc.max_receive_message_length", MAX_REQUEST_BYTES)])
    join_pb2_grpc.add_JoinServicer_to_server(JoinServicer(authority), server)
    credentials = grpc.ssl_server_credentials([(tls.key_pem, tls.cert_pem)])
    try:
        port = server.add_secure_port(listen, credentials)
    except RuntimeError as exc:
        raise JoinServerError(f"cannot listen on {listen}: {exc}") from None
    if port == 0:
        raise JoinServerError(f"cannot listen on {listen} (address in use or not local)")
    await server.start()
    return RunningJoinServer(server, port, pki.fingerprint(tls.ca_pem))
