"""Revoked certificates over real mTLS: an agent whose plan carries the fleet CRL refuses
a revoked client certificate on every call, the controller refuses an agent that
presents a revoked certificate, and a CRL the fleet CA did not sign is refused whole."""

from __future__ import annotations

import datetime
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.agent_harness import AgentProcess, Fleet, make_fleet, running_agent
from vpnfleet.agent.hollow import sample_plan
from vpnfleet.controller.fleet import operations
from vpnfleet.controller.statedir import pki
from vpnfleet.controller.statedir.pki import TlsCredentials
from vpnfleet.controller.statedir.state import StateDir
from vpnfleet.controller.transport.client import AgentCallFailed, AgentClient, AgentUnreachable
from vpnfleet.controller.transport.convert import apply_request
from vpnfleet.protos import agent_pb2, plan_pb2
from vpnfleet.protos.hashing import plan_content_hash

PEERS = [("b1", "10.0.0.2", "10.2.0.0/24")]


def plan(fleet: Fleet, crls: tuple[bytes, ...], generation: int) -> agent_pb2.ApplyPlanRequest:
    msg: plan_pb2.NodePlan = sample_plan("a1", "10.0.0.1", "10.1.0.0/24", PEERS, generation)
    msg.trust_anchors.append(pki.load_ca(fleet.controller_state)[2])
    msg.crls.extend(crls)
    msg.content_hash = plan_content_hash(msg)
    return apply_request(msg, dry_run=False)


def tls_of(agent_dir: Path) -> TlsCredentials:
    return TlsCredentials(
        (agent_dir / "tls.pem").read_bytes(),
        (agent_dir / "tls.key").read_bytes(),
        (agent_dir / "ca.pem").read_bytes(),
    )


@pytest.fixture
def fleet(tmp_path: Path) -> Fleet:
    return make_fleet(tmp_path)


@pytest.fixture
def agent(fleet: Fleet) -> Iterator[AgentProcess]:
    with running_agent("a1", fleet.enroll("a1", "10.0.0.1")) as proc:
        yield proc


def controller(fleet: Fleet, agent: AgentProcess, host: str = "a1") -> AgentClient:
    creds = operations.client_credentials(StateDir(fleet.controller_state))
    return AgentClient(host, agent.target, creds, timeout=10)


async def test_agent_refuses_a_revoked_client_certificate(
    fleet: Fleet, agent: AgentProcess
) -> None:
    b1 = tls_of(fleet.enroll("b1", "10.0.0.2"))
    async with controller(fleet, agent) as c:
        await c.apply_plan(plan(fleet, (), 1))
    async with AgentClient("a1", agent.target, b1, timeout=10) as c:
        assert await c.health() == "SERVING"  # any fleet certificate, before

    pki.revoke_host(fleet.controller_state, "b1")
    async with controller(fleet, agent) as c:
        answer = await c.apply_plan(plan(fleet, pki.fleet_crls(fleet.controller_state), 2))
        assert answer.changed
        assert [(ch.section, list(ch.details)) for ch in answer.changes] == [
            ("crl", ["+vpnfleet fleet CA CRL #1: 2 revoked"])
        ]
    async with AgentClient("a1", agent.target, b1, timeout=10) as c:
        for call in (c.health(), c.get_status()):
            with pytest.raises(AgentCallFailed) as info:
                await call
            assert info.value.code == "PERMISSION_DENIED"
            assert info.value.details == (
                "caller b1 presents a revoked certificate (listed in the fleet CRL): it was "
                "decommissioned or its certificate replaced"
            )
    assert "refused a call from b1" in agent.log()
    async with controller(fleet, agent) as c:  # the controller is not affected
        assert (await c.get_status()).generation == 2


async def test_controller_refuses_an_agent_with_a_revoked_certificate(
    fleet: Fleet, agent: AgentProcess
) -> None:
    async with controller(fleet, agent) as c:
        await c.get_status()
    pki.revoke_host(fleet.controller_state, "a1")
    async with controller(fleet, agent) as c:
        with pytest.raises(AgentUnreachable) as info:
            await c.get_status()
    assert "presented a revoked certificate for 'a1'" in info.value.details


async def test_a_crl_not_signed_by_the_fleet_ca_refuses_the_plan(
    fleet: Fleet, agent: AgentProcess, tmp_path: Path
) -> None:
    async with controller(fleet, agent) as c:
        good = (await c.apply_plan(plan(fleet, (), 1))).content_hash
    # A CRL under the fleet CA's name, signed by another key.
    ca_cert = pki.load_ca(fleet.controller_state)[0]
    forger = make_fleet(tmp_path / "forger")
    _cert, forged_key, _ = pki.load_ca(forger.controller_state)
    now = datetime.datetime.now(datetime.UTC)
    forged = pki.issue_crl(ca_cert, forged_key, [], 1, now)
    async with controller(fleet, agent) as c:
        with pytest.raises(AgentCallFailed) as info:
            await c.apply_plan(plan(fleet, (forged,), 2))
        assert info.value.code == "INVALID_ARGUMENT"
        assert "crls[0]: refused: the signature of this CRL does not verify" in info.value.details
        assert "it was not issued by the fleet CA" in info.value.details
        assert (await c.get_status()).content_hash == good
