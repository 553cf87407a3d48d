"""A real agent process over real mTLS: apply, dry run, idempotence, status, watch,
rekey, health, restart, and every way a caller or a plan is refused."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from tests.support.agent_harness import AgentProcess, Fleet, make_fleet, running_agent
from vpnfleet.agent.hollow import sample_plan
from vpnfleet.controller.statedir.pki import TlsCredentials
from vpnfleet.controller.transport.client import AgentCallFailed, AgentClient, AgentUnreachable
from vpnfleet.controller.transport.convert import apply_request
from vpnfleet.protos import agent_pb2, agent_pb2_grpc, plan_pb2
from vpnfleet.protos.identity import CONTROLLER_ROLE_OID

PEERS = [("b1", "10.0.0.2", "10.2.0.0/24"), ("c1", "10.0.0.3", "10.3.0.0/24")]


def plan(generation: int = 1, epoch: int = 1, host: str = "a1") -> plan_pb2.NodePlan:
    return sample_plan(host, "10.0.0.1", "10.1.0.0/24", PEERS, generation, epoch)


def apply(p: plan_pb2.NodePlan, dry_run: bool = False) -> agent_pb2.ApplyPlanRequest:
    return apply_request(p, dry_run)


@pytest.fixture
def fleet(tmp_path: Path) -> Fleet:
    return make_fleet(tmp_path)


@pytest.fixture
def agent(fleet: Fleet) -> Iterator[AgentProcess]:
    with running_agent("a1", fleet.enroll("a1", "10.0.0.1")) as proc:
        yield proc


def client(fleet: Fleet, agent: AgentProcess, name: str = "a1") -> AgentClient:
    return AgentClient(name, agent.target, fleet.controller_tls(), timeout=10)


async def test_apply_idempotent_dry_run_and_status(fleet: Fleet, agent: AgentProcess) -> None:
    async with client(fleet, agent) as c:
        status = await c.get_status()
        assert (status.host, status.content_hash, status.data_plane) == ("a1", "", False)

        first = await c.apply_plan(apply(plan(generation=1)))
        assert first.changed and first.generation == 1
        assert {(ch.section, ch.name) for ch in first.changes} >= {("peer", "b1"), ("peer", "c1")}

        again = await c.apply_plan(apply(plan(generation=2)))
        assert not again.changed and list(again.changes) == []

        dry = await c.apply_plan(apply(plan(generation=3, epoch=2), dry_run=True))
        assert dry.changed and dry.content_hash == first.content_hash
        details = [d for ch in dry.changes for d in ch.details]
        assert "auth psk:a1/b1/epoch-1 -> epoch-2" in details

        status = await c.get_status()
        assert status.content_hash == first.content_hash
        assert (status.generation, status.peers_total) == (1, 2)
        assert status.plan_applied_at > 0 and status.uptime_seconds > 0
        assert await c.health() == "SERVING"
    secret = plan().peers[0].auth.psk
    assert secret.hex() not in agent.log() and repr(secret) not in agent.log()


async def test_watch_status_streams_events_and_periodic_status(
    fleet: Fleet, agent: AgentProcess
) -> None:
    async with client(fleet, agent) as watcher, client(fleet, agent) as pusher:
        events: list[agent_pb2.StatusEvent] = []

        async def watch() -> None:
            async for event in watcher.watch_status(interval_seconds=0.3, duration=10):
                events.append(event)
                kinds = [e.WhichOneof("event") for e in events]
                if "sa_event" in kinds and kinds[-1] == "status" and kinds.count("status") >= 2:
                    return

        task = asyncio.create_task(watch())
        while not events:  # the first full status arrives at once
            await asyncio.sleep(0.05)
        await pusher.apply_plan(apply(plan(generation=5)))
        await asyncio.wait_for(task, 10)
    sa = [e.sa_event for e in events if e.WhichOneof("event") == "sa_event"]
    assert sa[0].kind == "plan_applied" and "generation 0 -> 5" in sa[0].detail
    assert events[-1].status.generation == 5


async def test_rekey_without_data_plane(fleet: Fleet, agent: AgentProcess) -> None:
    async with client(fleet, agent) as c:
        await c.apply_plan(apply(plan()))
        resp = await c.rekey(agent_pb2.RekeyRequest(peer_pattern="b*"))
        assert [(r.peer, r.ok, r.detail) for r in resp.results] == [
            ("b1", False, "no data plane in this agent")
        ]
        with pytest.raises(AgentCallFailed) as info:
            await c.rekey(agent_pb2.RekeyRequest(peer_pattern="zz*"))
        assert info.value.code == "NOT_FOUND"


async def test_corrupt_plan_refused_last_good_stays(fleet: Fleet, agent: AgentProcess) -> None:
    async with client(fleet, agent) as c:
        good = await c.apply_plan(apply(plan()))
        corrupt = plan(generation=2, epoch=2)
        del corrupt.peers[1:]  # dropped in transit: the hash no longer matches
        with pytest.raises(AgentCallFailed) as info:
            await c.apply_plan(apply(corrupt))
        assert info.value.code == "INVALID_ARGUMENT"
        assert "content hash mismatch: plan is corrupt or truncated" in info.value.details
        status = await c.get_status()
        assert (status.content_hash, status.generation) == (good.content_hash, 1)


async def test_invalid_plan_lists_every_reason(fleet: Fleet, agent: AgentProcess) -> None:
    from vpnfleet.protos.hashing import plan_content_hash

    bad = plan()
    bad.peers[0].auth.psk = b""
    bad.spd[1].peer = "nobody"
    bad.content_hash = plan_content_hash(bad)
    async with client(fleet, agent) as c:
        with pytest.raises(AgentCallFailed) as info:
            await c.apply_plan(apply(bad))
    assert info.value.code == "INVALID_ARGUMENT"
    assert "PSK authentication but no PSK" in info.value.details
    assert "names peer 'nobody'" in info.value.details


async def test_plan_for_another_host(fleet: Fleet, agent: AgentProcess) -> None:
    async with client(fleet, agent) as c:
        with pytest.raises(AgentCallFailed) as info:
            await c.apply_plan(apply(plan(host="b1")))
        assert info.value.code == "FAILED_PRECONDITION"
        assert "plan is for host 'b1', this agent is 'a1'" in info.value.details
        assert (await c.get_status()).content_hash == ""


async def test_restart_restores_persisted_plan(fleet: Fleet, agent: AgentProcess) -> None:
    async with client(fleet, agent) as c:
        applied = await c.apply_plan(apply(plan(generation=9)))
    assert agent.terminate() == 0  # SIGTERM: graceful stop
    with running_agent("a1", agent.agent_dir) as restarted:
        async with client(fleet, restarted) as c:
            status = await c.get_status()
    assert (status.content_hash, status.generation) == (applied.content_hash, 9)


async def applied_good_plan(fleet: Fleet, agent: AgentProcess) -> str:
    """Put a plan in force with the real controller; return its content hash."""
    async with client(fleet, agent) as c:
        return (await c.apply_plan(apply(plan()))).content_hash


async def assert_plan_unchanged(fleet: Fleet, agent: AgentProcess, content_hash: str) -> None:
    async with client(fleet, agent) as c:
        status = await c.get_status()
    assert (status.content_hash, status.generation) == (content_hash, 1)


async def test_client_cert_from_another_ca_is_refused(
    fleet: Fleet, agent: AgentProcess, tmp_path: Path
) -> None:
    good = await applied_good_plan(fleet, agent)
    other = make_fleet(tmp_path / "other").controller_tls()
    # The caller trusts the agent (fleet CA) but presents a controller certificate of
    # another CA: only the agent's own check of the client certificate can refuse it.
    tls = TlsCredentials(other.cert_pem, other.key_pem, fleet.controller_tls().ca_pem)
    async with AgentClient("a1", agent.target, tls, timeout=5) as c:
        with pytest.raises(AgentUnreachable) as info:
            await c.apply_plan(apply(plan(generation=2, epoch=2)))
    assert info.value.code == "UNAVAILABLE"
    await assert_plan_unchanged(fleet, agent, good)
    # The agent says why it refused the handshake.
    assert "CERTIFICATE_VERIFY_FAILED" in agent.log()


async def test_no_client_certificate_is_refused(fleet: Fleet, agent: AgentProcess) -> None:
    good = await applied_good_plan(fleet, agent)
    creds = grpc.ssl_channel_credentials(root_certificates=fleet.controller_tls().ca_pem)
    options = [("grpc.ssl_target_name_override", "a1")]
    async with grpc.aio.secure_channel(agent.target, creds, options=options) as channel:
        stub = agent_pb2_grpc.AgentStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.ApplyPlan(apply(plan(generation=2, epoch=2)), timeout=5)
    assert info.value.code() is grpc.StatusCode.UNAVAILABLE
    await assert_plan_unchanged(fleet, agent, good)
    assert "PEER_DID_NOT_RETURN_A_CERTIFICATE" in agent.log()


async def test_fleet_cert_that_is_not_the_controller_is_refused(
    fleet: Fleet, agent: AgentProcess
) -> None:
    good = await applied_good_plan(fleet, agent)
    intruder_dir = fleet.enroll("intruder")
    tls = TlsCredentials(
        (intruder_dir / "tls.pem").read_bytes(),
        (intruder_dir / "tls.key").read_bytes(),
        (intruder_dir / "ca.pem").read_bytes(),
    )
    async with AgentClient("a1", agent.target, tls, timeout=5) as c:
        with pytest.raises(AgentCallFailed) as info:
            await c.apply_plan(apply(plan(generation=2, epoch=2)))
        assert info.value.code == "PERMISSION_DENIED"
        assert "intruder" in info.value.details
        assert "not the controller" in info.value.details
        # The health service stays open to any fleet certificate.
        assert await c.health() == "SERVING"
    await assert_plan_unchanged(fleet, agent, good)


async def test_agent_cert_named_like_the_controller_is_refused_everywhere(
    fleet: Fleet, agent: AgentProcess
) -> None:
    # A fleet certificate that bears the controller's name but not the controller role:
    # what `ca sign vpnfleet-controller` used to issue. Every Agent-service call refuses it.
    good = await applied_good_plan(fleet, agent)
    cert_pem, key_pem = fleet.forge_agent_tls("vpnfleet-controller")
    tls = TlsCredentials(cert_pem, key_pem, fleet.controller_tls().ca_pem)
    async with AgentClient("a1", agent.target, tls, timeout=5) as c:
        calls = {
            "ApplyPlan": c.apply_plan(apply(plan(generation=2, epoch=2))),
            "Rekey": c.rekey(agent_pb2.RekeyRequest(target=agent_pb2.RekeyRequest.IKE)),
            "GetStatus": c.get_status(),
            "PrepareEnrollment": c.prepare_enrollment(tls=True, ike=True),
            "InstallCredentials": c.install_credentials(ca_bundle=tls.ca_pem),
            "WatchStatus": anext(c.watch_status(interval_seconds=1, duration=5)),
        }
        for name, call in calls.items():
            with pytest.raises(AgentCallFailed) as info:
                await call
            assert info.value.code == "PERMISSION_DENIED", name
            assert info.value.details == (
                "caller vpnfleet-controller is not the controller: its certificate lacks the "
                f"controller role (ExtendedKeyUsage {CONTROLLER_ROLE_OID}) that only the "
                "controller's own certificate carries (a controller of an earlier version: "
                "upgrade it, it re-issues its certificate by itself)"
            ), name
        assert await c.health() == "SERVING"
    await assert_plan_unchanged(fleet, agent, good)
    assert sorted(p.name for p in agent.agent_dir.glob("*.next")) == []


async def test_controller_checks_the_agent_name(fleet: Fleet, agent: AgentProcess) -> None:
    # a1's certificate does not name b1: the controller must not talk to it as b1.
    async with client(fleet, agent, name="b1") as c:
        with pytest.raises(AgentUnreachable):
            await c.get_status()


async def test_controller_wants_the_agent_name_in_its_exact_case(fleet: Fleet) -> None:
    # TLS lets a certificate for A1 pass for a1; the controller looks at the certificate
    # after the handshake and refuses it before anything is sent.
    with running_agent("A1", fleet.enroll("A1", "10.0.0.1")) as agent:
        async with client(fleet, agent, name="a1") as c:
            expected = (
                f"the agent at {agent.target} presented a certificate for 'A1', not for 'a1': "
                "the names must match exactly, letter case included"
            )
            calls = {
                "ApplyPlan": c.apply_plan(apply(plan(host="a1"))),
                "GetStatus": c.get_status(),
                "WatchStatus": anext(c.watch_status(interval_seconds=1, duration=5)),
            }
            for name, call in calls.items():
                with pytest.raises(AgentUnreachable) as info:
                    await call
                assert (info.value.code, info.value.details) == ("UNAVAILABLE", expected), name
        async with client(fleet, agent, name="A1") as exact:
            status = await exact.get_status()
        assert (status.host, status.generation, status.content_hash) == ("A1", 0, "")
        # Nothing reached it: a plan for a1 would have been refused and logged.
        assert "refused a plan" not in agent.log()


async def test_unreachable_agent(fleet: Fleet) -> None:
    async with AgentClient("a1", "127.0.0.1:1", fleet.controller_tls(), timeout=5) as c:
        with pytest.raises(AgentUnreachable):
            await c.get_status()


async def test_corrupt_stored_plan_is_set_aside_at_start(fleet: Fleet) -> None:
    agent_dir = fleet.enroll("a1")
    with running_agent("a1", agent_dir) as first:
        async with client(fleet, first) as c:
            await c.apply_plan(apply(plan()))
    stored = (agent_dir / "plan.pb").read_bytes()
    (agent_dir / "plan.pb").write_bytes(stored[:-10])
    with running_agent("a1", agent_dir) as second:
        async with client(fleet, second) as c:
            status = await c.get_status()
        assert (status.content_hash, status.generation) == ("", 0)
        assert "unusable and was moved to" in second.log()
    assert (agent_dir / "plan.pb.corrupt").read_bytes() == stored[:-10]
