"""The status enums on both sides and in protos/agent.proto name the same values, and
every reason the ESP layer drops for has its one spelling among the status reasons."""

from __future__ import annotations

import enum

import pytest

from vpnfleet.agent import sink
from vpnfleet.agent.esp.sa import Drop
from vpnfleet.controller.reports import status
from vpnfleet.protos import agent_pb2

PAIRS = [
    (sink.ProblemKind, status.ProblemKind, agent_pb2.Problem.Kind),
    (sink.DropLayer, status.DropLayer, agent_pb2.DropCount.Layer),
    (sink.DropReason, status.DropReason, agent_pb2.DropCount.Reason),
    (sink.NatState, status.NatState, agent_pb2.IkeSaStatus.Nat),
]


@pytest.mark.parametrize(("agent", "view", "proto"), PAIRS, ids=[p[0].__name__ for p in PAIRS])
def test_agent_view_and_proto_name_the_same_values(
    agent: type[enum.Enum], view: type[enum.Enum], proto: object
) -> None:
    values = proto.DESCRIPTOR.values_by_name  # type: ignore[attr-defined]
    names = {n for n in values if not n.endswith("UNSPECIFIED")}
    assert {m.name for m in agent if m.name != "UNSPECIFIED"} == names
    assert {m.name for m in view if m.name != "UNSPECIFIED"} == names
    assert {m.value for m in view} >= {m.value for m in agent}


def test_every_esp_drop_is_a_status_reason_spelled_once() -> None:
    for drop in Drop:
        assert sink.DropReason(drop.value).name == drop.name
        assert "-" not in drop.value
