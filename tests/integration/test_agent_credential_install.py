"""Credential rotation against a real agent process over real mTLS: PrepareEnrollment,
certificates from a new CA, InstallCredentials with the old and new CA, then the new
CA alone. New connections see the new TLS certificate and trust at once, the call in
flight survives, refusals change nothing, and a restarted agent keeps the new set."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Iterator
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ed25519

from tests.support.agent_harness import AgentProcess, Fleet, make_fleet, running_agent
from tests.support.lab import (
    FAST_PING_INTERVAL,
    all_up_since,
    assert_all_up_without_auth_errors,
    lab_up,
    losses,
    new_lab,
    pinging,
    removed_after,
    require_root,
    wait_for,
)
from tests.support.pings import stop_pings, wait_fresh_replies
from vpnfleet.agent import enroll
from vpnfleet.agent.enroll import (
    CredentialFiles,
    check_install,
    commit_install,
    fingerprint,
    make_csr,
    new_key,
    prepare_enrollment,
)
from vpnfleet.agent.hollow import start_hollow, stop_hollow
from vpnfleet.controller.statedir.pki import (
    TlsCredentials,
    ensure_controller_cert,
    init_ca,
    sign_agent_csrs,
)
from vpnfleet.protos import agent_pb2, agent_pb2_grpc

TIMEOUT = 10.0


@pytest.fixture
def fleet(tmp_path: Path) -> Fleet:
    return make_fleet(tmp_path)


@pytest.fixture
def agent(fleet: Fleet) -> Iterator[AgentProcess]:
    with running_agent("a1", fleet.enroll("a1", "10.0.0.1")) as proc:
        yield proc


@pytest.fixture
def new_ca(tmp_path: Path) -> Path:
    """A second fleet CA (its own controller state), the one the fleet rotates to."""
    state = tmp_path / "new-controller"
    init_ca(state)
    return state


def channel(
    target: str, controller: TlsCredentials, roots: bytes, host: str = "a1"
) -> grpc.aio.Channel:
    """A new connection as the controller with ``controller``'s certificate, accepting
    an agent certificate for ``host`` from the CAs in ``roots`` only."""
    creds = grpc.ssl_channel_credentials(
        root_certificates=roots,
        private_key=controller.key_pem,
        certificate_chain=controller.cert_pem,
    )
    return grpc.aio.secure_channel(
        target,
        creds,
        options=[("grpc.ssl_target_name_override", host), ("grpc.default_authority", host)],
    )


async def status_over(target: str, controller: TlsCredentials, roots: bytes) -> str:
    """ "ok", or the status code of a GetStatus on a new connection."""
    async with channel(target, controller, roots) as ch:
        try:
            status = await agent_pb2_grpc.AgentStub(ch).GetStatus(
                agent_pb2.GetStatusRequest(), timeout=TIMEOUT
            )
        except grpc.aio.AioRpcError as exc:
            return exc.code().name
        assert status.host == "a1"
        return "ok"


async def fails_with(call: Awaitable[object], code: grpc.StatusCode, match: str) -> str:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    assert info.value.code() is code, info.value
    details = info.value.details() or ""
    assert match in details, details
    return details


def fp(pem: bytes) -> str:
    return fingerprint(x509.load_pem_x509_certificate(pem))


def snapshot(directory: Path) -> dict[str, bytes]:
    return {
        p.name: p.read_bytes()
        for p in sorted(directory.iterdir())
        if p.is_file() and p.name != "agent.log"
    }


async def test_rotation_to_a_new_ca_over_mtls(
    fleet: Fleet, agent: AgentProcess, new_ca: Path
) -> None:
    old_controller = fleet.controller_tls()
    new_controller = ensure_controller_cert(new_ca)
    old_pem, new_pem = old_controller.ca_pem, new_controller.ca_pem
    target = agent.target
    async with channel(target, old_controller, old_pem) as ch:
        stub = agent_pb2_grpc.AgentStub(ch)
        # A call in flight across the swap: the status stream opened before it.
        events: list[agent_pb2.StatusEvent] = []
        watching = asyncio.Event()

        async def watch() -> None:
            async for event in stub.WatchStatus(agent_pb2.WatchStatusRequest(interval_seconds=30)):
                events.append(event)
                watching.set()

        watcher = asyncio.create_task(watch())
        try:
            await asyncio.wait_for(watching.wait(), TIMEOUT)
            prepared = await stub.PrepareEnrollment(
                agent_pb2.PrepareEnrollmentRequest(tls=True, ike=True), timeout=TIMEOUT
            )
            tls_pem, ike_pem, _ = sign_agent_csrs(
                new_ca, "a1", prepared.tls_csr, prepared.ike_csr, "10.0.0.1"
            )
            both = old_pem + new_pem
            installed = await stub.InstallCredentials(
                agent_pb2.InstallCredentialsRequest(
                    tls_cert=tls_pem, ike_cert=ike_pem, ca_bundle=both
                ),
                timeout=TIMEOUT,
            )
            assert installed.tls_fingerprint == fp(tls_pem)
            assert installed.ike_fingerprint == fp(ike_pem)
            assert installed.ca_fingerprints == f"{fp(old_pem)},{fp(new_pem)}"
            assert installed.peers_reestablished == 0  # no data plane, no peers
            for _ in range(100):
                if any(e.sa_event.kind == "credentials_installed" for e in events):
                    break
                await asyncio.sleep(0.05)
            assert [e.sa_event.kind for e in events if e.HasField("sa_event")] == [
                "credentials_installed"
            ]
            assert not watcher.done()  # the stream opened before the swap goes on

            # New connections: the agent presents the new certificate (a client that
            # trusts only the old CA refuses it) and trusts both controller certificates.
            assert await status_over(target, new_controller, new_pem) == "ok"
            assert await status_over(target, old_controller, new_pem) == "ok"
            assert await status_over(target, old_controller, old_pem) == "UNAVAILABLE"

            # Installing the same again is a no-op.
            again = await stub.InstallCredentials(
                agent_pb2.InstallCredentialsRequest(
                    tls_cert=tls_pem, ike_cert=ike_pem, ca_bundle=both
                ),
                timeout=TIMEOUT,
            )
            assert again == installed

            # The new CA alone would lock out the caller still on the old certificate.
            before = snapshot(agent.agent_dir)
            await fails_with(
                stub.InstallCredentials(
                    agent_pb2.InstallCredentialsRequest(ca_bundle=new_pem), timeout=TIMEOUT
                ),
                grpc.StatusCode.FAILED_PRECONDITION,
                "would lock the controller out",
            )
            assert snapshot(agent.agent_dir) == before
        finally:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)

    # The controller switched to its new certificate: now the old CA can go.
    async with channel(target, new_controller, new_pem) as ch:
        stub = agent_pb2_grpc.AgentStub(ch)
        final = await stub.InstallCredentials(
            agent_pb2.InstallCredentialsRequest(ca_bundle=new_pem), timeout=TIMEOUT
        )
        assert final.ca_fingerprints == fp(new_pem)
        assert final.tls_fingerprint == fp(tls_pem)
    assert await status_over(target, old_controller, new_pem) == "UNAVAILABLE"
    assert await status_over(target, new_controller, new_pem) == "ok"
    assert (agent.agent_dir / "ca.pem").read_bytes() == new_pem
    assert (agent.agent_dir / "ike.pem").read_bytes() == ike_pem

    # A restarted agent loads the new set.
    agent.terminate()
    with running_agent("a1", agent.agent_dir) as restarted:
        assert await status_over(restarted.target, new_controller, new_pem) == "ok"
        assert await status_over(restarted.target, old_controller, new_pem) == "UNAVAILABLE"
    assert "refused credentials" in agent.log()


async def test_refusals_name_the_problem_and_change_nothing(
    fleet: Fleet, agent: AgentProcess
) -> None:
    controller = fleet.controller_tls()
    # Certificates for a1 but for keys the agent never made.
    stray_tls, stray_ike, _ = sign_agent_csrs(
        fleet.controller_state,
        "a1",
        make_csr(new_key("ecdsa-p256"), "a1"),
        make_csr(new_key("ecdsa-p256"), "a1"),
    )
    async with channel(agent.target, controller, controller.ca_pem) as ch:
        stub = agent_pb2_grpc.AgentStub(ch)

        async def install(**fields: bytes) -> agent_pb2.InstallCredentialsResponse:
            return await stub.InstallCredentials(  # type: ignore[no-any-return]
                agent_pb2.InstallCredentialsRequest(**fields), timeout=TIMEOUT
            )

        before = snapshot(agent.agent_dir)
        await fails_with(
            stub.PrepareEnrollment(
                agent_pb2.PrepareEnrollmentRequest(tls=True, key_type="rsa-2048"),
                timeout=TIMEOUT,
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "unknown key type 'rsa-2048'; choose one of ecdsa-p256, ed25519",
        )
        await fails_with(
            stub.PrepareEnrollment(agent_pb2.PrepareEnrollmentRequest(), timeout=TIMEOUT),
            grpc.StatusCode.INVALID_ARGUMENT,
            "nothing to prepare",
        )
        await fails_with(
            install(tls_cert=stray_tls),
            grpc.StatusCode.FAILED_PRECONDITION,
            "no TLS key is staged",
        )
        assert snapshot(agent.agent_dir) == before

        prepared = await stub.PrepareEnrollment(
            agent_pb2.PrepareEnrollmentRequest(ike=True, key_type="ed25519"), timeout=TIMEOUT
        )
        assert prepared.tls_csr == b""
        csr = x509.load_pem_x509_csr(prepared.ike_csr)
        assert isinstance(csr.public_key(), ed25519.Ed25519PublicKey)
        staged = snapshot(agent.agent_dir)
        assert set(staged) - set(before) == {"ike.key.next"}

        await fails_with(
            install(ike_cert=stray_ike),
            grpc.StatusCode.INVALID_ARGUMENT,
            "the IKE certificate is not for the staged IKE key",
        )
        await fails_with(
            install(ca_bundle=b"not a certificate"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "the CA bundle holds no PEM certificate",
        )
        await fails_with(
            install(ca_bundle=controller.ca_pem + controller.cert_pem),
            grpc.StatusCode.INVALID_ARGUMENT,
            "certificate 2 (CN=vpnfleet-controller) is not a CA",
        )
        assert snapshot(agent.agent_dir) == staged

        # The staged Ed25519 key with its certificate, from the CA in use: the TLS
        # certificate and the trust stay as they were.
        _, ike_pem, _ = sign_agent_csrs(
            fleet.controller_state,
            "a1",
            make_csr(new_key("ecdsa-p256"), "a1"),
            prepared.ike_csr,
            "10.0.0.1",
        )
        installed = await install(ike_cert=ike_pem)
        assert installed.ike_fingerprint == fp(ike_pem)
        assert installed.tls_fingerprint == fp(before["tls.pem"])
        assert installed.ca_fingerprints == fp(controller.ca_pem)
        after = snapshot(agent.agent_dir)
        changed = {name for name in after if after[name] != staged.get(name)}
        assert changed == {"ike.pem", "ike.key"} and "ike.key.next" not in after
        assert after["ike.key"] == staged["ike.key.next"]
        # An empty request changes nothing and tells what is in use.
        assert await install() == installed


async def test_agent_finishes_an_install_a_crash_interrupted(
    fleet: Fleet, new_ca: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The journal was written (the install committed), the renames were not done: the
    agent started next serves the new set whole."""
    agent_dir = fleet.enroll("a1", "10.0.0.1")
    files = CredentialFiles.in_state_dir(agent_dir)
    tls_csr, ike_csr = prepare_enrollment(files, "a1", True, True)
    tls_pem, ike_pem, new_pem = sign_agent_csrs(new_ca, "a1", tls_csr, ike_csr)
    bundle = fleet.controller_tls().ca_pem + new_pem
    change = check_install(files, "a1", tls_pem, ike_pem, bundle)

    def power_cut(*_: object) -> None:
        raise KeyboardInterrupt("power cut")

    monkeypatch.setattr(enroll, "_roll_forward", power_cut)
    with pytest.raises(KeyboardInterrupt):
        commit_install(files, change)
    monkeypatch.undo()
    assert files.journal.exists() and files.tls_cert.read_bytes() != tls_pem
    new_controller = ensure_controller_cert(new_ca)
    with running_agent("a1", agent_dir) as agent:
        assert await status_over(agent.target, new_controller, new_pem) == "ok"
        assert "finished an interrupted credential install (5 files)" in agent.log()
    assert not files.journal.exists()
    assert (files.tls_cert.read_bytes(), files.ike_cert.read_bytes()) == (tls_pem, ike_pem)


async def test_hollow_agents_rotate_too(fleet: Fleet, tmp_path: Path) -> None:
    """Hollow agents answer both calls as a real agent does (no data plane: a new IKE
    certificate is stored, no peers are re-established)."""
    controller = fleet.controller_tls()
    agents = await start_hollow(1, 0, tmp_path / "hollow", fleet.controller_state, prefix="a")
    try:
        (hollow,) = agents
        target = f"127.0.0.1:{hollow.running.port}"
        async with channel(target, controller, controller.ca_pem, host=hollow.name) as ch:
            stub = agent_pb2_grpc.AgentStub(ch)
            prepared = await stub.PrepareEnrollment(
                agent_pb2.PrepareEnrollmentRequest(tls=True, ike=True), timeout=TIMEOUT
            )
            tls_pem, ike_pem, _ = sign_agent_csrs(
                fleet.controller_state, hollow.name, prepared.tls_csr, prepared.ike_csr
            )
            installed = await stub.InstallCredentials(
                agent_pb2.InstallCredentialsRequest(tls_cert=tls_pem, ike_cert=ike_pem),
                timeout=TIMEOUT,
            )
        assert (installed.tls_fingerprint, installed.ike_fingerprint) == (fp(tls_pem), fp(ike_pem))
        assert installed.peers_reestablished == 0
        assert hollow.running.tls.current.cert_pem == tls_pem
    finally:
        await stop_hollow(agents)


# -- in the lab: IKE certificates swapped under a continuous ping -------------------------


async def rotate_agent(
    host: str, target: str, address: str, controller: TlsCredentials, controller_state: Path
) -> agent_pb2.InstallCredentialsResponse:
    """What a controller does for one agent: new key pairs there, certificates from the
    fleet CA, installed."""
    async with channel(target, controller, controller.ca_pem, host=host) as ch:
        stub = agent_pb2_grpc.AgentStub(ch)
        prepared = await stub.PrepareEnrollment(
            agent_pb2.PrepareEnrollmentRequest(tls=True, ike=True), timeout=TIMEOUT
        )
        tls_pem, ike_pem, _ = sign_agent_csrs(
            controller_state, host, prepared.tls_csr, prepared.ike_csr, address
        )
        response: agent_pb2.InstallCredentialsResponse = await stub.InstallCredentials(
            agent_pb2.InstallCredentialsRequest(tls_cert=tls_pem, ike_cert=ike_pem),
            timeout=TIMEOUT,
        )
    assert response.ike_fingerprint == fp(ike_pem), host
    return response


@pytest.mark.netns
@pytest.mark.parametrize("together", [False, True], ids=["one-by-one", "all-at-once"])
def test_ike_certificates_swap_under_continuous_ping_loses_nothing(
    tmp_path: Path, together: bool
) -> None:
    """The lab mesh on certificates; every agent gets new TLS and IKE key pairs and
    certificates while every tunnel carries a ping every 5 ms: each agent re-establishes
    its three tunnels make-before-break, and not one ping is lost."""
    require_root()
    lab = new_lab(tmp_path, "lab")
    group_vars = lab.inventory / "group_vars" / "all.yaml"
    group_vars.write_text(group_vars.read_text().replace("\nauth: psk", "\nauth: pubkey", 1))
    with removed_after(lab):
        up = lab_up(lab)
        hosts = up["layout"]["hosts"]
        controller_state = lab.lab_dir / "controller"
        controller = ensure_controller_cert(controller_state)
        started = time.time()
        streams = pinging(up, FAST_PING_INTERVAL)
        try:

            async def rotate(host: str) -> agent_pb2.InstallCredentialsResponse:
                h = hosts[host]
                target = h["endpoint"]
                return await rotate_agent(host, target, h["address"], controller, controller_state)

            async def all_hosts() -> list[agent_pb2.InstallCredentialsResponse]:
                if together:
                    return list(await asyncio.gather(*(rotate(h) for h in sorted(hosts))))
                out = []
                for host in sorted(hosts):
                    out.append(await rotate(host))
                    await asyncio.sleep(1.0)
                return out

            responses = asyncio.run(all_hosts())
            # Until every tunnel runs on its new SAs alone (the old ones deleted), then a
            # few more replies: a loss in the responders' switch would show as a gap.
            wait_for("every tunnel on new SAs only", lambda: all_up_since(lab, started), 30, 0.5)
            fresh = wait_fresh_replies(streams, 20, 10)
        finally:
            stop_pings(streams)
        assert losses(streams) == []
        assert fresh, [s.describe() for s in streams]  # traffic crossed after the swap
        assert [r.peers_reestablished for r in responses] == [3] * len(hosts)
        assert_all_up_without_auth_errors(lab, started)
        for host in hosts:
            agent_dir = lab.lab_dir / "agents" / host
            installed = {r.ike_fingerprint for r in responses}
            ike_pem = (agent_dir / "ike.pem").read_bytes()
            assert fp(ike_pem) in installed, host
