"""CheckLiveness in the engine: an empty INFORMATIONAL request (RFC 7296 section 1.4) sent
on the IKE SA in force at once, answered per peer; engines on the in-memory network and
fake time, so a peer that stops answering is declared dead without waiting."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest

from tests.support.engine_pair import SITES, Fleet, node_plan
from vpnfleet.agent.hollow import sample_plan
from vpnfleet.agent.io.memory import Datagram
from vpnfleet.agent.service import AgentService
from vpnfleet.agent.store import PlanStore
from vpnfleet.protos import agent_pb2


async def test_a_peer_that_holds_the_sa_answers_at_once() -> None:
    fleet = Fleet("a", "b")
    await fleet.start()
    await fleet.mesh()
    delivered = fleet.net.delivered
    check = asyncio.create_task(fleet["a"].engine.check_liveness(["b"], 5))
    await asyncio.sleep(0)  # the request is sent before the call waits
    assert fleet.net.in_flight == 1
    fleet.pump()
    (outcome,) = await check
    assert outcome.peer == "b" and outcome.answered, outcome
    assert outcome.round_trip >= 0 and outcome.detail == ""
    assert fleet.net.delivered - delivered == 2  # the request and its answer, nothing more
    assert fleet["a"].engine.peers["b"].is_up


async def test_a_peer_that_stopped_answering_is_reported_with_the_reason() -> None:
    fleet = Fleet("a", "b")
    await fleet.start()
    await fleet.mesh()
    to_b = SITES["b"][0]

    def lost(datagram: Datagram) -> bool:
        return datagram.dst[0] == to_b

    fleet.net.drop = lost
    check = asyncio.create_task(fleet["a"].engine.check_liveness(["b"], 30))
    await asyncio.sleep(0)
    fleet.advance(600)  # every retransmission of the check goes unanswered
    (outcome,) = await check
    assert not outcome.answered
    assert outcome.detail.startswith("IKE SA gone: peer dead"), outcome.detail


async def test_peers_with_no_tunnel_are_refused_by_name() -> None:
    fleet = Fleet("a", "b")
    await fleet.start()
    await fleet.mesh()
    outcomes = await fleet["a"].engine.check_liveness(["d"], 5)
    assert [(o.peer, o.answered, o.detail) for o in outcomes] == [
        ("d", False, "peer is not up (not in the plan in force)")
    ]


class Refused(Exception):
    pass


class Context:
    """What CheckLiveness uses of a grpc.aio.ServicerContext."""

    async def abort(self, code: grpc.StatusCode, details: str) -> None:
        raise Refused(f"{code.name}: {details}")


async def test_the_service_asks_the_engine_and_refuses_bad_requests(tmp_path: Path) -> None:
    fleet = Fleet("a", "b")
    await fleet.start()
    service = AgentService("a", PlanStore(tmp_path), fleet["a"].engine, fleet["a"].hub)
    await service.apply(sample_plan("a", *SITES["a"], [("b", *SITES["b"])]), dry_run=False)
    await fleet["b"].engine.put_in_force(node_plan("b", ["a"]))
    fleet.advance(2)
    call = service.CheckLiveness(agent_pb2.CheckLivenessRequest(), Context())  # type: ignore[arg-type]
    check = asyncio.create_task(call)
    await asyncio.sleep(0)
    fleet.pump()
    response = await check
    assert [(r.peer, r.answered) for r in response.results] == [("b", True)]
    for request, refusal in [
        (agent_pb2.CheckLivenessRequest(peer_pattern="z*"), "NOT_FOUND: no peer matches 'z\\*'"),
        (agent_pb2.CheckLivenessRequest(wait_seconds=31), "INVALID_ARGUMENT: wait_seconds must"),
        (agent_pb2.CheckLivenessRequest(wait_seconds=-1), "INVALID_ARGUMENT: wait_seconds must"),
    ]:
        with pytest.raises(Refused, match=refusal):
            await service.CheckLiveness(request, Context())  # type: ignore[arg-type]
