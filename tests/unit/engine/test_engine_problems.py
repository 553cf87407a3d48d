"""Problems travel up as values: a route the kernel refuses, IKE that cannot be sent, a
peer whose IKE SA failed and a plan-only agent show in GetStatus and ApplyPlan's answer,
each while its condition lasts, and clear when it does (the in-memory network and a
fake of netlink that refuses what it is told to)."""

from __future__ import annotations

import random
from pathlib import Path

from tests.support.engine_pair import SITES, Fleet, agent_service, node_plan
from tests.support.recording_routes import RecordingRoutes
from vpnfleet.agent.engine import Engine
from vpnfleet.agent.hollow import sample_plan
from vpnfleet.agent.io.memory import MemoryEndpoint
from vpnfleet.agent.io.tun import MemoryTun
from vpnfleet.agent.io.udp import EspHandler, IkeHandler
from vpnfleet.agent.service import AgentService
from vpnfleet.agent.sink import PlanOnlySink, ProblemKind
from vpnfleet.agent.store import PlanStore
from vpnfleet.controller.fleet.operations import apply_result
from vpnfleet.controller.reports.results import Outcome
from vpnfleet.controller.reports.status import FleetStatus, HostStatus, fleet_rows
from vpnfleet.controller.reports.status import ProblemKind as ViewKind
from vpnfleet.controller.transport import convert
from vpnfleet.protos import agent_pb2, plan_pb2

ROUTE_B = "route 10.2.0.0/24 via tun-a"


def message(host: str, peer: str, epoch: int = 1) -> plan_pb2.NodePlan:
    return sample_plan(host, *SITES[host], [(peer, *SITES[peer])], psk_epoch=epoch)


def kinds(status: agent_pb2.AgentStatus | agent_pb2.ApplyPlanResponse) -> list[tuple[str, str]]:
    return [(agent_pb2.Problem.Kind.Name(p.kind), p.subject) for p in status.problems]


async def test_a_refused_route_is_a_problem_until_an_apply_puts_it_in_place(
    tmp_path: Path,
) -> None:
    netlink = RecordingRoutes()
    netlink.fail = {"add_route"}
    fleet = Fleet("a", "b", routing={"a": netlink})
    await fleet.start()
    a = agent_service(fleet["a"], tmp_path / "a")
    b = agent_service(fleet["b"], tmp_path / "b")
    await b.apply(message("b", "a"), dry_run=False)

    answer = await a.apply(message("a", "b"), dry_run=False)
    assert answer.changed  # the plan is in force ...
    assert kinds(answer) == [("ROUTE", ROUTE_B)]  # ... but its route is not in place
    (problem,) = answer.problems
    assert "cannot add it" in problem.message and "EPERM" in problem.message
    assert problem.since > 0
    status = a.status()
    assert kinds(status) == [("ROUTE", ROUTE_B)] and status.problems[0].since == problem.since

    # The operator removes the cause and applies the same plan again: tried again, gone.
    netlink.fail = set()
    again = await a.apply(message("a", "b"), dry_run=False)
    assert not again.changed and kinds(again) == []
    assert ("add_route", "10.2.0.0/24", "tun-a", None, None) in netlink.calls
    assert kinds(a.status()) == []


async def test_the_controller_reports_such_a_host_failed_and_shows_the_problem(
    tmp_path: Path,
) -> None:
    netlink = RecordingRoutes()
    netlink.fail = {"add_route"}
    fleet = Fleet("a", "b", routing={"a": netlink})
    await fleet.start()
    a = agent_service(fleet["a"], tmp_path)
    answer = await a.apply(message("a", "b"), dry_run=False)

    result = apply_result("a", convert.apply_answer(answer), dry_run=False, seconds=0.1)
    assert result.outcome is Outcome.FAILED
    assert result.error.startswith("the agent reports problems with the plan in force: ")
    assert f"route {ROUTE_B}: cannot add it: [Errno 1]" in result.error
    assert result.generation == 1 and result.changes  # it is in force all the same

    view = convert.status_from_proto(a.status())
    assert [(p.kind, p.subject) for p in view.faults] == [(ViewKind.ROUTE, ROUTE_B)]
    host = HostStatus("a", answer.content_hash, view)
    (row,) = fleet_rows(FleetStatus([host]))
    assert row[1] == "in sync" and f"route {ROUTE_B}: cannot add it" in row[-1]
    (shown,) = FleetStatus([host]).to_json()["hosts"]
    (problem,) = shown["observed"]["problems"]
    assert problem["kind"] == "route" and problem["subject"] == ROUTE_B

    # A plan-only agent is shown so but does not fail a push.
    plan_only = AgentService("c", PlanStore(tmp_path / "c"), PlanOnlySink())
    answer = await plan_only.apply(sample_plan("c", "192.0.2.3", "10.3.0.0/24"), dry_run=False)
    assert len(answer.problems) == 1
    result = apply_result("c", convert.apply_answer(answer), dry_run=False, seconds=0.1)
    assert result.outcome is Outcome.CHANGED and result.error == ""


async def test_a_tun_refused_then_set_up_by_the_next_plan_clears(tmp_path: Path) -> None:
    netlink = RecordingRoutes()
    fleet = Fleet("a", "b", routing={"a": netlink})
    await fleet.start()
    netlink.fail = {"link_up"}  # setting the MTU the plan needs is refused
    a = agent_service(fleet["a"], tmp_path)
    answer = await a.apply(message("a", "b"), dry_run=False)
    assert kinds(answer) == [("TUN", "tun-a")]
    netlink.fail = set()
    answer = await a.apply(message("a", "b", epoch=2), dry_run=False)
    assert answer.changed
    assert [k for k in kinds(answer) if k[0] != "IKE"] == []  # b itself is not up: no plan


async def test_a_peer_that_failed_is_a_problem_until_it_is_up(tmp_path: Path) -> None:
    fleet = Fleet("a", "b")
    await fleet.start()
    a = agent_service(fleet["a"], tmp_path)
    await a.apply(message("a", "b"), dry_run=False)
    fleet.advance(200)  # b has no plan: it drops a's IKE_SA_INIT; a gives up and backs off
    (problem,) = a.status().problems
    assert problem.kind == agent_pb2.Problem.IKE and problem.subject == "b"
    assert problem.message and problem.since > 0
    await fleet.apply("b", node_plan("b", ["a"]))
    fleet.advance(120)  # a's next attempt
    assert fleet["a"].engine.peers_up() == 1
    assert kinds(a.status()) == []


async def test_ike_that_cannot_be_sent_is_a_socket_problem_until_it_can(tmp_path: Path) -> None:
    fleet = Fleet("b")
    net = fleet.net
    endpoints: list[MemoryEndpoint] = []

    def endpoint(on_ike: IkeHandler, on_esp: EspHandler) -> MemoryEndpoint:
        # No port 500 socket: sending the IKE_SA_INIT fails as sendto would.
        ep = MemoryEndpoint(net, on_ike, on_esp, host=SITES["a"][0], ike_port=None)
        endpoints.append(ep)
        return ep

    engine = Engine(MemoryTun("tun-a"), endpoint, scheduler=fleet.clock, rng=random.Random(7))
    await engine.start()
    await fleet.start()
    await fleet.apply("b", node_plan("b", ["a"]))
    a = AgentService("a", PlanStore(tmp_path), engine)
    await a.apply(message("a", "b"), dry_run=False)
    (problem,) = [p for p in a.status().problems if p.kind == agent_pb2.Problem.SOCKET]
    assert problem.subject == "192.0.2.2:500" and "no IKE port 500 socket" in problem.message
    (ep,) = endpoints
    net.bind(ep, (ep.host, 500))
    ep.ike_port = 500
    fleet.advance(2)  # the retransmission goes out
    assert not [p for p in a.status().problems if p.kind == agent_pb2.Problem.SOCKET]


async def test_a_socket_problem_goes_with_the_peer_it_was_about(tmp_path: Path) -> None:
    fleet = Fleet("b")

    def endpoint(on_ike: IkeHandler, on_esp: EspHandler) -> MemoryEndpoint:
        return MemoryEndpoint(fleet.net, on_ike, on_esp, host=SITES["a"][0], ike_port=None)

    engine = Engine(MemoryTun("tun-a"), endpoint, scheduler=fleet.clock, rng=random.Random(7))
    await engine.start()
    a = AgentService("a", PlanStore(tmp_path), engine)
    await a.apply(message("a", "b"), dry_run=False)
    assert [p.subject for p in a.status().problems if p.kind == agent_pb2.Problem.SOCKET] == [
        "192.0.2.2:500"
    ]
    await a.apply(sample_plan("a", *SITES["a"], []), dry_run=False)  # b leaves the plan
    assert not [p for p in a.status().problems if p.kind == agent_pb2.Problem.SOCKET]


async def test_a_plan_only_agent_says_so_as_a_problem(tmp_path: Path) -> None:
    sink = PlanOnlySink(reason="plan only: not inside a named network namespace")
    service = AgentService("a", PlanStore(tmp_path), sink)
    (problem,) = service.status().problems
    assert problem.kind == agent_pb2.Problem.PLAN_ONLY
    assert problem.message == "plan only: not inside a named network namespace"
    assert [p.kind for p in sink.problems()] == [ProblemKind.PLAN_ONLY]
