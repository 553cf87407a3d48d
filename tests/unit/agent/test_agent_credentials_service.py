"""PrepareEnrollment and InstallCredentials in AgentService without the network: status
codes, what is put in use (the TLS watchers, the sink's IKE credentials) and when
nothing is, and the refusal of an IKE certificate that would break a plan peer."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
from cryptography import x509

from vpnfleet.agent.engine.translate import IkeCredentials
from vpnfleet.agent.enroll import CredentialFiles, fingerprint, make_csr, new_key
from vpnfleet.agent.hollow import sample_plan
from vpnfleet.agent.plan import AgentPlan
from vpnfleet.agent.service import AgentService
from vpnfleet.agent.sink import (
    AdmissionReport,
    DropCount,
    IkeSaReport,
    PlanReport,
    Problem,
    RekeyOutcome,
    RekeyTarget,
)
from vpnfleet.agent.store import PlanStore
from vpnfleet.controller.statedir import pki
from vpnfleet.protos import agent_pb2, plan_pb2
from vpnfleet.protos.hashing import plan_content_hash


class Aborted(Exception):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{code.name}: {details}")
        self.code, self.details = code, details


class Context:
    """What the service uses of a grpc.aio.ServicerContext."""

    def __init__(self, caller_pem: bytes | None = None) -> None:
        self.caller_pem = caller_pem

    def auth_context(self) -> dict[str, list[bytes]]:
        return {"x509_pem_cert": [self.caller_pem]} if self.caller_pem else {}

    async def abort(self, code: grpc.StatusCode, details: str) -> None:
        raise Aborted(code, details)


@dataclass
class EngineSink:
    """A plan sink with a data plane: records the IKE credentials it is given."""

    plans: list[AgentPlan] = field(default_factory=list)
    given: list[IkeCredentials] = field(default_factory=list)

    @property
    def data_plane(self) -> bool:
        return True

    async def put_in_force(self, plan: AgentPlan) -> PlanReport:
        self.plans.append(plan)
        return PlanReport()

    def ike_sas(self) -> Sequence[IkeSaReport]:
        return ()

    def ike_counters(self) -> Mapping[str, int]:
        return {}

    def peers_up(self) -> int:
        return 0

    def admission(self) -> AdmissionReport | None:
        return None

    def problems(self) -> Sequence[Problem]:
        return ()

    def drops(self) -> Sequence[DropCount]:
        return ()

    async def rekey(self, peers: Sequence[str], target: RekeyTarget) -> list[RekeyOutcome]:
        return []

    def replace_ike_credentials(self, credentials: IkeCredentials) -> int:
        self.given.append(credentials)
        return sum(1 for p in self.plans[-1].peers if p.auth.method.name == "PUBKEY")


@dataclass
class Setup:
    service: AgentService
    sink: EngineSink
    files: CredentialFiles
    ca_state: Path
    tls_seen: list[tuple[bytes, bytes, bytes]]

    async def prepare(self, tls: bool = True, ike: bool = True) -> tuple[bytes, bytes]:
        got = await self.service.PrepareEnrollment(
            agent_pb2.PrepareEnrollmentRequest(tls=tls, ike=ike),
            Context(),  # type: ignore[arg-type]
        )
        return got.tls_csr, got.ike_csr

    async def install(
        self, caller: bytes | None = None, **fields: bytes
    ) -> agent_pb2.InstallCredentialsResponse:
        return await self.service.InstallCredentials(
            agent_pb2.InstallCredentialsRequest(**fields),
            Context(caller),  # type: ignore[arg-type]
        )


def pubkey_plan(ca_pem: bytes) -> plan_pb2.NodePlan:
    """a1 with one certificate peer that knows a1 by its address 10.0.0.1."""
    msg = sample_plan("a1", "10.0.0.1", "10.1.0.0/24", [("b1", "10.0.0.2", "10.2.0.0/24")])
    msg.trust_anchors.append(ca_pem)
    (peer,) = msg.peers
    peer.local_id.CopyFrom(plan_pb2.Identity(type=plan_pb2.ID_IPV4_ADDR, value="10.0.0.1"))
    peer.auth.CopyFrom(
        plan_pb2.Credential(
            method=plan_pb2.AUTH_METHOD_PUBKEY,
            reference="cert:fleet-ca",
            ca_fingerprint=pki.fingerprint(ca_pem),
        )
    )
    msg.content_hash = plan_content_hash(msg)
    return msg


@pytest.fixture
async def setup(tmp_path: Path) -> Setup:
    """a1 enrolled (IKE certificate with its address) and a certificate plan in force."""
    ca_state, state = tmp_path / "controller", tmp_path / "a1"
    ca_pem = pki.init_ca(ca_state).cert_path.read_bytes()
    pki.enroll_local(ca_state, state, "a1", "10.0.0.1")
    sink = EngineSink()
    files = CredentialFiles.in_state_dir(state)
    service = AgentService("a1", PlanStore(state), sink, credentials=files)
    seen: list[tuple[bytes, bytes, bytes]] = []
    service.tls_watchers.append(lambda cert, key, ca: seen.append((cert, key, ca)))
    await service.apply(pubkey_plan(ca_pem), dry_run=False)
    return Setup(service, sink, files, ca_state, seen)


def csr() -> bytes:
    return make_csr(new_key("ecdsa-p256"), "a1")


def fp(pem: bytes) -> str:
    return fingerprint(x509.load_pem_x509_certificate(pem))


async def test_install_puts_both_in_use_once(setup: Setup) -> None:
    tls_csr, ike_csr = await setup.prepare()
    tls, ike, ca = pki.sign_agent_csrs(setup.ca_state, "a1", tls_csr, ike_csr, "10.0.0.1")
    first = await setup.install(tls_cert=tls, ike_cert=ike)
    assert (first.tls_fingerprint, first.ike_fingerprint) == (fp(tls), fp(ike))
    assert first.ca_fingerprints == fp(ca) and first.peers_reestablished == 1
    assert setup.tls_seen == [(tls, setup.files.tls_key.read_bytes(), ca)]
    (given,) = setup.sink.given
    assert given.certificate == x509.load_pem_x509_certificate(ike)
    # Again: the same answer, nothing put in use again.
    again = await setup.install(tls_cert=tls, ike_cert=ike, ca_bundle=ca)
    assert again.peers_reestablished == 0
    again.peers_reestablished = first.peers_reestablished
    assert again == first
    assert len(setup.tls_seen) == 1 and len(setup.sink.given) == 1


async def test_bundle_alone_changes_only_tls_trust(setup: Setup, tmp_path: Path) -> None:
    other = pki.init_ca(tmp_path / "other").cert_path.read_bytes()
    ca = setup.files.ca.read_bytes()
    got = await setup.install(ca_bundle=ca + other)
    assert got.ca_fingerprints == f"{fp(ca)},{fp(other)}" and got.peers_reestablished == 0
    ((_, _, trusted),) = setup.tls_seen
    assert trusted == ca + other
    assert setup.sink.given == []


async def test_ike_certificate_without_the_identity_a_peer_uses(setup: Setup) -> None:
    tls_csr, ike_csr = await setup.prepare(tls=False)
    assert tls_csr == b""
    # Signed without the address: peer b1 knows a1 as 10.0.0.1.
    _, ike, _ = pki.sign_agent_csrs(
        setup.ca_state, "a1", (setup.files.state_dir / "tls.csr").read_bytes(), ike_csr
    )
    before = setup.files.ike_cert.read_bytes()
    with pytest.raises(Aborted) as info:
        await setup.install(ike_cert=ike)
    assert info.value.code is grpc.StatusCode.FAILED_PRECONDITION
    assert "does not carry the identity 10.0.0.1 that peer b1" in info.value.details, (
        info.value.details
    )
    assert setup.files.ike_cert.read_bytes() == before and setup.sink.given == []


async def test_status_codes(setup: Setup, tmp_path: Path) -> None:
    async def code_of(**fields: bytes) -> tuple[grpc.StatusCode, str]:
        with pytest.raises(Aborted) as info:
            await setup.install(**fields)
        return info.value.code, info.value.details

    assert (await code_of(ca_bundle=b"junk"))[0] is grpc.StatusCode.INVALID_ARGUMENT
    # A certificate for a key a1 never made, with nothing staged.
    stranger_tls, _, _ = pki.sign_agent_csrs(setup.ca_state, "a1", csr(), csr())
    assert (await code_of(tls_cert=stranger_tls))[0] is grpc.StatusCode.FAILED_PRECONDITION
    # A bundle without the CA of the caller's certificate.
    other = pki.init_ca(tmp_path / "other").cert_path.read_bytes()
    controller = pki.ensure_controller_cert(setup.ca_state)
    with pytest.raises(Aborted) as locked:
        await setup.install(controller.cert_pem, ca_bundle=other)
    assert locked.value.code is grpc.StatusCode.FAILED_PRECONDITION
    assert "would lock the controller out" in locked.value.details
    await setup.install(controller.cert_pem, ca_bundle=other + controller.ca_pem)
    with pytest.raises(Aborted) as info:
        await setup.service.PrepareEnrollment(
            agent_pb2.PrepareEnrollmentRequest(ike=True, key_type="dsa"),
            Context(),  # type: ignore[arg-type]
        )
    assert info.value.code is grpc.StatusCode.INVALID_ARGUMENT


async def test_without_a_state_dir_both_calls_are_refused(tmp_path: Path) -> None:
    service = AgentService("a1", PlanStore(tmp_path), EngineSink())
    for call, request in (
        (service.PrepareEnrollment, agent_pb2.PrepareEnrollmentRequest(tls=True)),
        (service.InstallCredentials, agent_pb2.InstallCredentialsRequest()),
    ):
        with pytest.raises(Aborted) as info:
            await call(request, Context())  # type: ignore[operator]
        assert info.value.code is grpc.StatusCode.FAILED_PRECONDITION
        assert "without a state dir" in info.value.details
