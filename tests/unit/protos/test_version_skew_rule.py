"""The version-skew rule (protos/versions.py) as a table, and the agent enforcing it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc
import pytest

from vpnfleet.agent.hollow import sample_plan
from vpnfleet.agent.service import AgentService
from vpnfleet.agent.sink import PlanOnlySink
from vpnfleet.agent.store import PlanStore
from vpnfleet.controller.transport.convert import apply_request
from vpnfleet.protos import agent_pb2
from vpnfleet.protos.versions import Skew, installed_version, plan_skew, skew_refusal

TABLE = [
    # agent, controller, verdict
    ("0.1.0", "0.1.0", Skew.SAME),
    ("0.1.0", "0.1.7", Skew.SAME),
    ("0.1.7", "0.1.0", Skew.SAME),  # patch releases never matter
    ("0.1.0", "0.2.0", Skew.CONTROLLER_AHEAD),
    ("0.1.3", "0.2.11", Skew.CONTROLLER_AHEAD),
    ("1.4.0", "1.5.0rc1", Skew.CONTROLLER_AHEAD),
    ("0.1.0", "0.3.0", Skew.AGENT_TOO_OLD),
    ("0.9.0", "0.11.0", Skew.AGENT_TOO_OLD),  # minors compare as numbers, not text
    ("0.9.0", "1.0.0", Skew.AGENT_TOO_OLD),  # a new major is never "one minor ahead"
    ("1.9.0", "2.0.0", Skew.AGENT_TOO_OLD),
    ("0.2.0", "0.1.0", Skew.CONTROLLER_TOO_OLD),
    ("1.0.0", "0.9.0", Skew.CONTROLLER_TOO_OLD),
    ("0.1.0", "", Skew.CONTROLLER_TOO_OLD),  # sends no version: predates the rule
    ("unknown", "0.1.0", Skew.UNREADABLE),
    ("0.1.0", "banana", Skew.UNREADABLE),
]


@pytest.mark.parametrize(("agent", "controller", "verdict"), TABLE)
def test_rule_table(agent: str, controller: str, verdict: Skew) -> None:
    assert plan_skew(agent, controller) is verdict
    assert (skew_refusal(agent, controller) == "") is verdict.accepted


def test_only_same_and_next_minor_are_accepted() -> None:
    assert {s for s in Skew if s.accepted} == {Skew.SAME, Skew.CONTROLLER_AHEAD}


def test_refusals_name_both_versions_and_what_to_do() -> None:
    assert skew_refusal("0.1.0", "0.3.0") == (
        "agent 0.1.0 refuses plans from controller 0.3.0: an agent takes plans from a "
        "controller of its own minor version or the next one; upgrade this agent to 0.3.0 "
        "with `vpnfleet upgrade -i INVENTORY -l HOST`"
    )
    assert skew_refusal("0.2.0", "0.1.0").endswith(
        "upgrade the controller to 0.2.0 or the next minor version"
    )
    assert "controller no version" in skew_refusal("0.1.0", "")
    assert skew_refusal("0.1.0", "banana").endswith(
        "run released versions of both (MAJOR.MINOR.PATCH)"
    )


def test_the_controller_sends_its_version() -> None:
    request = apply_request(sample_plan("a1", "10.0.0.1", "10.1.0.0/24", []), dry_run=False)
    assert request.controller_version == installed_version() != ""


class Aborted(Exception):
    pass


class Context:
    def __init__(self) -> None:
        self.code: grpc.StatusCode | None = None

    async def abort(self, code: grpc.StatusCode, details: str) -> None:
        self.code = code
        raise Aborted(details)


def request(controller: str, dry_run: bool = False) -> agent_pb2.ApplyPlanRequest:
    plan = sample_plan("a1", "10.0.0.1", "10.1.0.0/24", [("b1", "10.0.0.2", "10.2.0.0/24")])
    return agent_pb2.ApplyPlanRequest(plan=plan, dry_run=dry_run, controller_version=controller)


@pytest.mark.parametrize("dry_run", [False, True])
async def test_agent_refuses_a_plan_across_a_forbidden_skew(tmp_path: Path, dry_run: bool) -> None:
    sink = PlanOnlySink()
    service = AgentService("a1", PlanStore(tmp_path), sink, version="0.1.0")
    context = Context()
    with pytest.raises(Aborted, match=r"agent 0\.1\.0 refuses plans from controller 0\.3\.0"):
        await service.ApplyPlan(request("0.3.0", dry_run), context)  # type: ignore[arg-type]
    assert context.code is grpc.StatusCode.FAILED_PRECONDITION
    assert service.plan is None and sink.plan is None
    assert not (tmp_path / "plan.pb").exists()


async def test_agent_takes_a_plan_from_the_next_minor(tmp_path: Path) -> None:
    service = AgentService("a1", PlanStore(tmp_path), PlanOnlySink(), version="0.1.4")
    context: Any = Context()
    response = await service.ApplyPlan(request("0.2.0"), context)
    assert response.changed and service.plan is not None
    assert service.status().agent_version == "0.1.4"
