"""gRPC channels to agents: mutual TLS, deadlines and errors in the rollout's terms.

The controller presents its own certificate (CN/SAN vpnfleet-controller, with the
controller role of protos/identity.py) and checks that the agent's certificate is from
the fleet CA *and* names the host it meant to reach: TLS checks the name
(``ssl_target_name_override`` = host name, whatever address it dials) without letter
case, so before each call the client also reads the certificate of every connection of
its channel (controller/transport/tls_peer.py) and wants a DNS name in it equal to the host name,
case included; a channel with no connection yet is connected first by a health check,
which carries nothing the agent should not see. Every call has a deadline. gRPC errors
become :class:`AgentUnreachable` (the host could not be reached, TLS failed or the name
did not match: Ansible's "unreachable") or :class:`AgentCallFailed` (the agent answered
with an error: "failed"). Calls take and return protobuf messages; controller/transport/convert.py
builds and reads them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from vpnfleet.protos import agent_pb2, agent_pb2_grpc

from ..statedir.pki import TlsCredentials
from . import tls_peer

DEFAULT_TIMEOUT = 10.0
# Large plans (a hub with hundreds of peers) can pass gRPC's 4 MiB default.
MAX_MESSAGE_BYTES = 64 * 1024 * 1024


class AgentError(Exception):
    def __init__(self, host: str, code: str, details: str) -> None:
        self.host = host
        self.code = code
        self.details = details
        super().__init__(f"{host}: {details} ({code})")


@dataclass(frozen=True, slots=True)
class InstalledCredentials:
    """What an agent reports after InstallCredentials."""

    tls_fingerprint: str  # hex SHA-256 of the TLS certificate it now presents
    ike_fingerprint: str
    ca_fingerprints: tuple[str, ...]  # of the CA bundle it now trusts
    peers_reestablished: int


class AgentUnreachable(AgentError):
    """No answer from the agent: not listening, network down, TLS refused."""


class AgentCallFailed(AgentError):
    """The agent answered with an error (plan refused, not the controller, …)."""


def _error(host: str, exc: grpc.aio.AioRpcError, timeout: float) -> AgentError:
    code = exc.code()
    details = exc.details() or code.name.lower()
    if code is grpc.StatusCode.UNAVAILABLE:
        return AgentUnreachable(host, code.name, details)
    if code is grpc.StatusCode.DEADLINE_EXCEEDED:
        return AgentCallFailed(host, code.name, f"no answer within {timeout:g}s")
    return AgentCallFailed(host, code.name, details)


class AgentClient:
    """One agent. Use ``async with AgentClient(...) as c:`` or call :meth:`close`.

    ``tls.ca_pem`` may hold several CA certificates (during a CA rotation the old and
    the new one): the agent's server certificate may come from any of them.
    """

    def __init__(
        self,
        host: str,
        target: str,
        tls: TlsCredentials,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        self.host = host
        self.target = target
        self.timeout = timeout
        self.revoked = tls.revoked
        creds = grpc.ssl_channel_credentials(
            root_certificates=tls.ca_pem,
            private_key=tls.key_pem,
            certificate_chain=tls.cert_pem,
        )
        options = [
            ("grpc.ssl_target_name_override", host),
            ("grpc.default_authority", host),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            # Each agent gets its own connection even when the lab puts many behind
            # one address (hollow agents), so names are checked per agent.
            ("grpc.use_local_subchannel_pool", 1),
            ("grpc.enable_channelz", 1),  # where the agent's certificate is read
        ]
        self._channel, self._channelz = tls_peer.open_channel(
            target, lambda: grpc.aio.secure_channel(target, creds, options=options)
        )
        self._checked: set[int] = set()  # connections whose certificate names the host
        self._stub = agent_pb2_grpc.AgentStub(self._channel)

    async def __aenter__(self) -> AgentClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        await self._channel.close()

    def _unreachable(self, details: str) -> AgentUnreachable:
        return AgentUnreachable(self.host, grpc.StatusCode.UNAVAILABLE.name, details)

    def _connections_checked(self) -> bool:
        """Check the certificate of every connection not checked yet; True when there is
        at least one connection and every one was presented ``host``'s certificate."""
        if self._channelz is None:
            raise self._unreachable(
                f"cannot check the agent's certificate: its channel to {self.target} is not "
                "found in gRPC's channelz registry"
            )
        try:
            certificates = tls_peer.connection_certificates(self._channelz)
            for number, cert in certificates.items():
                if number in self._checked:
                    continue
                names = tls_peer.dns_names(cert)
                if tls_peer.issuer_and_serial(cert) in self.revoked:
                    raise self._unreachable(
                        f"the agent at {self.target} presented a revoked certificate for "
                        f"{self.host!r} (listed in the fleet CRL: the host was decommissioned)"
                    )
                if self.host not in names:
                    named = ", ".join(repr(n) for n in names) or "no DNS name"
                    raise self._unreachable(
                        f"the agent at {self.target} presented a certificate for {named}, not "
                        f"for {self.host!r}: the names must match exactly, letter case included"
                    )
                self._checked.add(number)
        except tls_peer.PeerCertificateError as exc:
            raise self._unreachable(f"cannot check the agent's certificate: {exc}") from None
        return bool(certificates)

    async def _check_identity(self) -> None:
        if self._connections_checked():
            return
        # No connection yet: the standard health check (open, no secrets) makes one.
        try:
            await health_pb2_grpc.HealthStub(self._channel).Check(
                health_pb2.HealthCheckRequest(), timeout=self.timeout
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                raise _error(self.host, exc, self.timeout) from None
        if not self._connections_checked():
            raise self._unreachable("the connection closed before its certificate was checked")

    async def _call(self, method: Callable[..., Awaitable[Any]], request: Any) -> Any:
        """One unary call, on connections whose certificate names the host exactly; a
        connection made during the call (a reconnect) is checked after it."""
        await self._check_identity()
        try:
            response = await method(request, timeout=self.timeout)
        except grpc.aio.AioRpcError as exc:
            raise _error(self.host, exc, self.timeout) from None
        self._connections_checked()
        return response

    async def apply_plan(self, request: agent_pb2.ApplyPlanRequest) -> agent_pb2.ApplyPlanResponse:
        response: agent_pb2.ApplyPlanResponse = await self._call(self._stub.ApplyPlan, request)
        return response

    async def get_status(self) -> agent_pb2.AgentStatus:
        request = agent_pb2.GetStatusRequest()
        response: agent_pb2.AgentStatus = await self._call(self._stub.GetStatus, request)
        return response

    async def rekey(self, request: agent_pb2.RekeyRequest) -> agent_pb2.RekeyResponse:
        response: agent_pb2.RekeyResponse = await self._call(self._stub.Rekey, request)
        return response

    async def check_liveness(
        self, request: agent_pb2.CheckLivenessRequest
    ) -> agent_pb2.CheckLivenessResponse:
        response: agent_pb2.CheckLivenessResponse = await self._call(
            self._stub.CheckLiveness, request
        )
        return response

    async def prepare_enrollment(
        self, *, tls: bool, ike: bool, key_type: str = ""
    ) -> tuple[bytes, bytes]:
        """New key pairs made and kept aside on the agent; their CSRs (tls, ike), PEM."""
        request = agent_pb2.PrepareEnrollmentRequest(tls=tls, ike=ike, key_type=key_type)
        resp: agent_pb2.PrepareEnrollmentResponse = await self._call(
            self._stub.PrepareEnrollment, request
        )
        return bytes(resp.tls_csr), bytes(resp.ike_csr)

    async def install_credentials(
        self, *, tls_cert: bytes = b"", ike_cert: bytes = b"", ca_bundle: bytes = b""
    ) -> InstalledCredentials:
        """Certificates for the staged keys and/or the CA bundle to trust, put in use."""
        request = agent_pb2.InstallCredentialsRequest(
            tls_cert=tls_cert, ike_cert=ike_cert, ca_bundle=ca_bundle
        )
        resp: agent_pb2.InstallCredentialsResponse = await self._call(
            self._stub.InstallCredentials, request
        )
        return InstalledCredentials(
            resp.tls_fingerprint.lower(),
            resp.ike_fingerprint.lower(),
            tuple(f.strip().lower() for f in resp.ca_fingerprints.split(",") if f.strip()),
            int(resp.peers_reestablished),
        )

    async def watch_status(
        self, interval_seconds: float = 5.0, duration: float | None = None
    ) -> AsyncIterator[agent_pb2.StatusEvent]:
        """Stream status events; ``duration`` bounds the whole stream (None: until closed)."""
        await self._check_identity()
        call = self._stub.WatchStatus(
            agent_pb2.WatchStatusRequest(interval_seconds=interval_seconds), timeout=duration
        )
        try:
            async for event in call:
                self._connections_checked()
                yield event
        except grpc.aio.AioRpcError as exc:
            if exc.code() is grpc.StatusCode.DEADLINE_EXCEEDED and duration is not None:
                return  # the caller's watch window ended
            raise _error(self.host, exc, duration or 0.0) from None
        finally:
            call.cancel()

    async def health(self, service: str = "") -> str:
        """The standard health check: "SERVING", "NOT_SERVING", …"""
        stub = health_pb2_grpc.HealthStub(self._channel)
        request = health_pb2.HealthCheckRequest(service=service)
        resp = await self._call(stub.Check, request)
        return str(health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status))
