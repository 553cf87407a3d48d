"""What `vpnfleet status` makes of the agents' answers: the conditions behind its exit
code, and the JSON it prints (SPIs as swanctl shows them)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from vpnfleet.controller.reports.status import (
    AgentStatusView,
    ChildSaView,
    FleetStatus,
    HostStatus,
    IkeSaView,
    StatusCondition,
    fleet_conditions,
    host_conditions,
)

HASH = "ab" * 32


def host(name: str = "h1", **observed: Any) -> HostStatus:
    view = AgentStatusView(host=name, content_hash=HASH, data_plane=True, **observed)
    return HostStatus(name, HASH, view)


def test_in_sync_with_every_tunnel_up_is_no_condition() -> None:
    h = host(peers_total=3, peers_up=3)
    assert host_conditions(h) == StatusCondition(0)
    assert int(fleet_conditions(FleetStatus([h, host("h2")]))) == 0


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (host(peers_total=3, peers_up=2), StatusCondition.TUNNELS_DOWN),
        (host(peers_total=1, peers_up=0), StatusCondition.TUNNELS_DOWN),
        (HostStatus("h1", HASH, error="connection refused"), StatusCondition.UNREACHABLE),
        (HostStatus("h1", HASH, AgentStatusView(content_hash=HASH)), StatusCondition.PLAN_ONLY),
        (HostStatus("h1", "cd" * 32, AgentStatusView(content_hash=HASH, data_plane=True)),
         StatusCondition.DRIFT),
        # No plan in force: drift; a plan-only agent's tunnels are not judged.
        (HostStatus("h1", HASH, AgentStatusView(peers_total=2)),
         StatusCondition.DRIFT | StatusCondition.PLAN_ONLY),
        (HostStatus("h1", "cd" * 32,
                    AgentStatusView(content_hash=HASH, data_plane=True, peers_total=2)),
         StatusCondition.DRIFT | StatusCondition.TUNNELS_DOWN),
    ],
    ids=["one-down", "all-down", "unreachable", "plan-only", "drift", "no-plan-plan-only",
         "drift-and-down"],
)  # fmt: skip
def test_host_conditions(status: HostStatus, expected: StatusCondition) -> None:
    assert host_conditions(status) == expected


def test_fleet_exit_code_is_the_or_of_its_hosts_and_in_the_json() -> None:
    fleet = FleetStatus(
        [
            host("h1", peers_total=2, peers_up=1),
            HostStatus("h2", HASH, error="deadline exceeded"),
            host("h3", peers_total=1, peers_up=1),
        ]
    )
    conditions = fleet_conditions(fleet)
    assert int(conditions) == 8 + 4 == 12
    assert conditions.label == "unreachable, tunnels down"
    doc = fleet.to_json()
    assert (doc["exit_code"], doc["conditions"]) == (12, ["unreachable", "tunnels_down"])
    assert [h["conditions"] for h in doc["hosts"]] == [["tunnels_down"], ["unreachable"], []]


def test_exit_codes_stay_clear_of_bad_input_and_fit_a_byte() -> None:
    values = [int(c) for c in StatusCondition]
    assert all(v & (v - 1) == 0 and 2 <= v <= 128 for v in values), values
    assert int(StatusCondition.UNREACHABLE) == 4  # as in `apply`


def test_spis_in_json_are_hex_as_swanctl_shows_them() -> None:
    child = ChildSaView(spi_in=0xC3A5F1E2, spi_out=0x1A)
    ike = IkeSaView(spi_i=0x0123456789ABCDEF, spi_r=0xFF, children=(child,))
    fleet = FleetStatus([host(ike_sas=(ike,))])
    doc = json.loads(json.dumps(fleet.to_json()))
    [sa] = doc["hosts"][0]["observed"]["ike_sas"]
    assert (sa["spi_i"], sa["spi_r"]) == ("0123456789abcdef", "00000000000000ff")
    assert (sa["children"][0]["spi_in"], sa["children"][0]["spi_out"]) == ("c3a5f1e2", "0000001a")
