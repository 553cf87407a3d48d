"""The agent's gRPC server: mutual TLS, a check of the caller's identity, health, signals.

TLS already requires a client certificate from the fleet CA (``require_client_auth``).
That is not enough: every agent holds a fleet certificate too, so one compromised host
could push plans to all the others. :class:`ControllerOnly` therefore checks, on every
call of the Agent service, that the certificate carries the controller role (the
ExtendedKeyUsage purpose of protos/identity.py, which the fleet CA puts in no agent
certificate) and that its CN or a DNS SAN is the controller's identity, and refuses
anyone else with PERMISSION_DENIED naming who they are. A name alone would not do: it
is only what the CA was asked to sign. The standard health service stays open to any
fleet certificate (monitoring). A client certificate that a CRL of the plan in force
revokes (agent/crl.py) is refused on every call, health included: TLS checks only that
the fleet CA issued it.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import signal
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from vpnfleet.protos import agent_pb2_grpc
from vpnfleet.protos.identity import CONTROLLER_NAME, CONTROLLER_ROLE_OID

from .crl import RevokedSet, certificate_key
from .service import AgentService

log = logging.getLogger(__name__)

AGENT_SERVICE = "vpnfleet.v1.Agent"
_PROTECTED_PREFIX = f"/{AGENT_SERVICE}/"
# A hub's plan with hundreds of peers can pass gRPC's 4 MiB default.
MAX_MESSAGE_BYTES = 64 * 1024 * 1024


class ServerError(Exception):
    """The server cannot start (bad key files, port in use …)."""


@dataclass(frozen=True, slots=True)
class ServerTls:
    cert_pem: bytes
    key_pem: bytes
    ca_pem: bytes

    @classmethod
    def from_files(cls, cert: Path, key: Path, ca: Path) -> ServerTls:
        out: list[bytes] = []
        for what, path in (("certificate", cert), ("private key", key), ("CA certificate", ca)):
            try:
                out.append(path.read_bytes())
            except OSError as exc:
                raise ServerError(f"cannot read the TLS {what} {path}: {exc.strerror}") from None
        return cls(*out)


class TlsSource:
    """The TLS material new handshakes use, replaceable while the server runs.

    gRPC asks :meth:`fetch` at every new handshake (from one of its own threads) and
    keeps using the configuration it got last when the answer is None; connections
    already open, and calls in flight on them, keep theirs. So after :meth:`update`
    the next handshake presents the new certificate and trusts the new CA bundle,
    with no restart.
    """

    def __init__(self, tls: ServerTls) -> None:
        self._lock = threading.Lock()
        self._current = tls
        self._fetched: ServerTls | None = tls

    @property
    def current(self) -> ServerTls:
        with self._lock:
            return self._current

    def update(self, tls: ServerTls) -> None:
        with self._lock:
            self._current = tls

    def update_pems(self, cert_pem: bytes, key_pem: bytes, ca_pem: bytes) -> None:
        self.update(ServerTls(cert_pem, key_pem, ca_pem))

    def fetch(self) -> grpc.ServerCertificateConfiguration | None:
        with self._lock:
            if self._current is self._fetched:
                return None
            self._fetched = self._current
            return _configuration(self._current)

    def credentials(self) -> grpc.ServerCredentials:
        return grpc.dynamic_ssl_server_credentials(
            _configuration(self.current), self.fetch, require_client_authentication=True
        )


def _check_tls(tls: ServerTls) -> None:
    """Name what is wrong with the TLS material (gRPC only says it cannot bind)."""
    try:
        cert = x509.load_pem_x509_certificate(tls.cert_pem)
    except ValueError:
        raise ServerError("the TLS certificate is not a PEM certificate") from None
    try:
        key = serialization.load_pem_private_key(tls.key_pem, None)
    except (ValueError, TypeError):
        raise ServerError("the TLS private key is not an unencrypted PEM key") from None
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(*spki) != cert.public_key().public_bytes(*spki):
        raise ServerError("the TLS private key does not belong to the TLS certificate")
    try:
        x509.load_pem_x509_certificates(tls.ca_pem)
    except ValueError:
        raise ServerError("the TLS CA file holds no PEM certificate") from None


def _configuration(tls: ServerTls) -> grpc.ServerCertificateConfiguration:
    return grpc.ssl_server_certificate_configuration(
        [(tls.key_pem, tls.cert_pem)], root_certificates=tls.ca_pem
    )


def caller_identities(context: grpc.aio.ServicerContext) -> list[str]:
    """The CN and DNS SANs of the client certificate, as TLS verified them."""
    auth = context.auth_context()
    names: list[str] = []
    for key in ("x509_common_name", "x509_subject_alternative_name"):
        for value in auth.get(key, ()):
            text = value.decode(errors="replace")
            if text not in names:
                names.append(text)
    return names


_CONTROLLER_ROLE = x509.ObjectIdentifier(CONTROLLER_ROLE_OID)


@functools.lru_cache(maxsize=64)
def _holds_controller_role(cert_pem: bytes) -> bool:
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
        usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except (ValueError, x509.ExtensionNotFound):
        return False
    return _CONTROLLER_ROLE in usages


def caller_holds_controller_role(context: grpc.aio.ServicerContext) -> bool:
    """True when the client certificate, as TLS verified it, carries the controller role."""
    pems = context.auth_context().get("x509_pem_cert", ())
    return bool(pems) and _holds_controller_role(bytes(pems[0]))


@functools.lru_cache(maxsize=64)
def _certificate_key(cert_pem: bytes) -> tuple[bytes, int] | None:
    try:
        return certificate_key(x509.load_pem_x509_certificate(cert_pem))
    except ValueError:
        return None


def caller_revoked(context: grpc.aio.ServicerContext, revoked: RevokedSet) -> bool:
    """True when a CRL in force lists the client certificate TLS verified."""
    if not revoked:
        return False
    pems = context.auth_context().get("x509_pem_cert", ())
    return bool(pems) and _certificate_key(bytes(pems[0])) in revoked


def _nothing_revoked() -> RevokedSet:
    return frozenset()


class ControllerOnly(grpc.aio.ServerInterceptor):
    """Refuse Agent-service calls from any certificate but the controller's: it must
    carry the controller role and name ``controller_identity``; and refuse every call
    from a certificate ``revoked()`` lists (the CRLs of the plan in force)."""

    def __init__(
        self,
        controller_identity: str,
        revoked: Callable[[], RevokedSet] = _nothing_revoked,
    ) -> None:
        self.identity = controller_identity
        self.revoked = revoked

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        protected = handler_call_details.method.startswith(_PROTECTED_PREFIX)
        if not protected and handler.unary_unary is None and handler.unary_stream is None:
            return handler  # no such method is served beside the Agent service
        return self._guard(handler, functools.partial(self._check, protected=protected))

    async def _check(self, context: grpc.aio.ServicerContext, *, protected: bool) -> None:
        names = caller_identities(context)
        who = ", ".join(names) or "no certificate identity"
        if caller_revoked(context, self.revoked()):
            reason = (
                f"caller {who} presents a revoked certificate (listed in the fleet CRL): "
                "it was decommissioned or its certificate replaced"
            )
        elif not protected:
            return
        elif self.identity not in names:
            reason = f"caller {who} is not the controller ({self.identity})"
        elif not caller_holds_controller_role(context):
            reason = (
                f"caller {who} is not the controller: its certificate lacks the controller "
                f"role (ExtendedKeyUsage {CONTROLLER_ROLE_OID}) that only the controller's "
                "own certificate carries (a controller of an earlier version: upgrade it, "
                "it re-issues its certificate by itself)"
            )
        else:
            return
        log.warning("refused a call from %s (%s): %s", who, context.peer(), reason)
        await context.abort(grpc.StatusCode.PERMISSION_DENIED, reason)

    def _guard(
        self,
        handler: grpc.RpcMethodHandler,
        check: Callable[[grpc.aio.ServicerContext], Awaitable[None]],
    ) -> grpc.RpcMethodHandler:
        if handler.unary_unary is not None:
            inner_unary = handler.unary_unary

            async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
                await check(context)
                return await inner_unary(request, context)

            return grpc.unary_unary_rpc_method_handler(
                unary,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            inner_stream = handler.unary_stream

            async def stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
                await check(context)
                async for item in inner_stream(request, context):
                    yield item

            return grpc.unary_stream_rpc_method_handler(
                stream,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        raise ServerError("the Agent service only has unary and server-streaming methods")


@dataclass(slots=True)
class RunningServer:
    server: grpc.aio.Server
    port: int
    health: health.aio.HealthServicer
    tls: TlsSource

    async def stop(self, grace: float = 5.0) -> None:
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace)


async def start_server(
    service: AgentService,
    listen: str,
    tls: ServerTls,
    controller_identity: str = CONTROLLER_NAME,
) -> RunningServer:
    """Bind ``listen`` (host:port, port 0 for any) with mTLS and start serving; the TLS
    material follows the service's InstallCredentials (see :class:`TlsSource`)."""
    server = grpc.aio.server(
        interceptors=[ControllerOnly(controller_identity, service.revoked)],
        options=[("grpc.max_receive_message_length", MAX_MESSAGE_BYTES)],
    )
    agent_pb2_grpc.add_AgentServicer_to_server(service, server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    _check_tls(tls)
    source = TlsSource(tls)
    # InstallCredentials puts new TLS material in force for the next handshakes.
    service.tls_watchers.append(source.update_pems)
    try:
        port = server.add_secure_port(listen, source.credentials())
    except RuntimeError as exc:
        raise ServerError(f"cannot listen on {listen}: {exc}") from None
    if port == 0:
        raise ServerError(f"cannot listen on {listen} (address in use or not local)")
    try:
        await server.start()
    except Exception as exc:  # grpc reports bad key material only at start
        raise ServerError(f"cannot start the server on {listen}: {exc}") from None
    serving = health_pb2.HealthCheckResponse.SERVING
    await health_servicer.set("", serving)
    await health_servicer.set(AGENT_SERVICE, serving)
    return RunningServer(server, port, health_servicer, source)


async def wait_for_signal() -> int:
    """Wait for SIGTERM or SIGINT; return the signal number."""
    loop = asyncio.get_running_loop()
    got: asyncio.Future[int] = loop.create_future()

    def deliver(signum: int) -> None:
        if not got.done():
            got.set_result(signum)

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, deliver, sig)
    try:
        return await got
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
