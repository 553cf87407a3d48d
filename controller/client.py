"""gRPC channels to agents: mutual TLS, deadlines and errors in the rollout's terms.

The controller presents its own certificate (CN/SAN vpnfleet-controller) and checks that
the agent's certificate is from the fleet CA *and* names the host it meant to reach
(``ssl_target_name_override`` = host name, whatever address it dials). Every call has a
deadline. gRPC errors become :class:`AgentUnreachable` (the host could not be reached or
TLS failed: Ansible's "unreachable") or :class:`AgentCallFailed` (the agent answered
with an error: "failed"). Calls take and return protobuf messages; controller/convert.py
builds and reads them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from types import TracebackType

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from vpnfleet.protos import agent_pb2, agent_pb2_grpc

from .pki import TlsCredentials

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
        creds = grpc.ssl_channel_credentials(
            root_certificates=tls.ca_pem,
            private_key=tls.key_pem,
            certificate_chain=tls.cert_pem,
        )
        self._channel = grpc.aio.secure_channel(
            target,
            creds,
            options=[
                ("grpc.ssl_target_name_override", host),
                ("grpc.default_authority", host),
                ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                # Each agent gets its own connection even when the lab puts many behind
                # one address (hollow agents), so names are checked per agent.
                ("grpc.use_local_subchannel_pool", 1),
            ],
        )
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

    async def apply_plan(self, request: agent_pb2.ApplyPlanRequest) -> agent_pb2.ApplyPlanResponse:
        try:
            response: agent_pb2.ApplyPlanResponse = await self._stub.ApplyPlan(
                request, timeout=self.timeout
            )
            return response
        except grpc.aio.AioRpcError as exc:
            raise _error(self.host, exc, self.timeout) from None

    async def get_status(self) -> agent_pb2.AgentStatus:
        try:
            response: agent_pb2.AgentStatus = await self._stub.GetStatus(
                agent_pb2.GetStatusRequest(), timeout=self.timeout
            )
            return response
        except grpc.aio.AioRpcError as exc:
            raise _error(self.host, exc, self.timeout) from None

    async def rekey(self, request: agent_pb2.RekeyRequest) -> agent_pb2.RekeyResponse:
        try:
            response: agent_pb2.RekeyResponse = await self._stub.Rekey(
                request, timeout=self.timeout
            )
            return response
        except grpc.aio.AioRpcError as exc:
            raise _error(self.host, exc, self.timeout) from None

    async def prepare_enrollment(
        self, *, tls: bool, ike: bool, key_type: str = ""
    ) -> tuple[bytes, bytes]:
        """New key pairs made and kept aside on the agent; their CSRs (tls, ike), PEM."""
        request = agent_pb2.PrepareEnrollmentRequest(tls=tls, ike=ike, key_type=key_type)
        try:
            resp: agent_pb2.PrepareEnrollmentResponse = await self._stub.PrepareEnrollment(
                request, timeout=self.timeout
            )
        except grpc.aio.AioRpcError as exc:
            raise _error(self.host, exc, self.timeout) from None
        return bytes(resp.tls_csr), bytes(resp.ike_csr)

    async def install_credentials(
        self, *, tls_cert: bytes = b"", ike_cert: bytes = b"", ca_bundle: bytes = b""
    ) -> InstalledCredentials:
        """Certificates for the staged keys and/or the CA bundle to trust, put in use."""
        request = agent_pb2.InstallCredentialsRequest(
            tls_cert=tls_cert, ike_cert=ike_cert, ca_bundle=ca_bundle
        )
        try:
            resp: agent_pb2.InstallCredentialsResponse = await self._stub.InstallCredentials(
                request, timeout=self.timeout
            )
        except grpc.aio.AioRpcError as exc:
            raise _error(self.host, exc, self.timeout) from None
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
        call = self._stub.WatchStatus(
            agent_pb2.WatchStatusRequest(interval_seconds=interval_seconds), timeout=duration
        )
        try:
            async for event in call:
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
        try:
            resp = await stub.Check(
                health_pb2.HealthCheckRequest(service=service), timeout=self.timeout
            )
        except grpc.aio.AioRpcError as exc:
            raise _error(self.host, exc, self.timeout) from None
        return str(health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status))
