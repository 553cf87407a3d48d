"""plan_from_proto: the peer's RFC 7383 fragmentation fields, refusal of bad sizes, and how a
change of them reads in the plan differ."""

from __future__ import annotations

import pytest

from vpnfleet.agent.convert import plan_from_proto
from vpnfleet.agent.hollow import sample_plan
from vpnfleet.agent.plan import PlanRejected
from vpnfleet.protos import plan_pb2
from vpnfleet.protos.hashing import plan_content_hash
from vpnfleet.protos.plan_diff import Section, plan_changes


def plan_with(off: bool, size: int) -> plan_pb2.NodePlan:
    msg = sample_plan(
        "a1",
        "10.0.0.1",
        "10.1.0.0/24",
        [("b1", "10.0.0.2", "10.2.0.0/24"), ("c1", "10.0.0.3", "10.3.0.0/24")],
    )
    msg.peers[0].ike_fragmentation_off = off
    msg.peers[0].ike_fragment_size = size
    msg.content_hash = plan_content_hash(msg)
    return msg


def test_unset_fields_mean_fragmentation_on_at_1280() -> None:
    plan = plan_from_proto(plan_with(False, 0))
    assert [(p.ike_fragmentation, p.ike_fragment_size) for p in plan.peers] == [
        (True, 1280),
        (True, 1280),
    ]


@pytest.mark.parametrize("size", [576, 1400, 65535])
def test_sizes_in_range_are_kept(size: int) -> None:
    b1, c1 = plan_from_proto(plan_with(True, size)).peers
    assert (b1.ike_fragmentation, b1.ike_fragment_size) == (False, size)
    assert (c1.ike_fragmentation, c1.ike_fragment_size) == (True, 1280)


@pytest.mark.parametrize("size", [1, 575, 65536, 2**32 - 1])
def test_out_of_range_size_refuses_the_plan(size: int) -> None:
    with pytest.raises(PlanRejected) as info:
        plan_from_proto(plan_with(False, size))
    assert info.value.reasons == [
        f"peer 'b1': ike_fragment_size {size} is not within 576..65535 (0 for the default)"
    ]


def test_a_change_shows_in_the_plan_diff() -> None:
    [change] = plan_changes(plan_with(False, 0), plan_with(True, 1400))
    assert (change.section, change.name) == (Section.PEER, "b1")
    assert change.details == (
        "ike_fragmentation_off false -> true",
        "ike_fragment_size 1280 -> 1400",
    )
