"""The engine on a host (engine/host.py): CAP_NET_ADMIN read from the process status,
and a routing table or firewall mark someone else's rules or routes use refused before
anything is changed (a recording fake of netlink)."""

from __future__ import annotations

import pytest

from tests.support.recording_routes import RecordingRoutes
from vpnfleet.agent.engine.host import (
    DEFAULT_OWN_MARK,
    HostConflict,
    check_host,
    data_plane_choice,
    has_net_admin,
)
from vpnfleet.agent.engine.plan_routes import (
    FALLBACK_METRIC,
    OWN_MARK_PRIORITY,
    TUNNEL_PRIORITY,
    TUNNEL_TABLE,
)
from vpnfleet.agent.io.policy_rules import PolicyRule
from vpnfleet.agent.io.routes import RouteEntry, RouteType

TUN = "vpnfleet0"


def test_cap_net_admin_is_read_from_the_effective_set() -> None:
    assert has_net_admin("Name:\tx\nCapEff:\t0000000000001000\n")  # bit 12 only
    assert has_net_admin("CapEff:\t000001ffffffffff\n")  # root
    assert not has_net_admin("CapEff:\t0000000000000400\n")  # CAP_NET_BIND_SERVICE only


def test_data_plane_off_in_the_config_says_where() -> None:
    choice = data_plane_choice(False, "data_plane: false in /etc/vpnfleet/agent.yaml")
    assert not choice.enabled and choice.wanted is False
    assert choice.reason == "plan only (data_plane: false in /etc/vpnfleet/agent.yaml)"


async def test_what_a_previous_agent_left_is_no_conflict() -> None:
    netlink = RecordingRoutes()
    netlink.present_rules = [
        PolicyRule(OWN_MARK_PRIORITY, 254, fwmark=DEFAULT_OWN_MARK),
        PolicyRule(TUNNEL_PRIORITY, TUNNEL_TABLE, destination="10.2.0.0/24"),
        PolicyRule(32766, 254),
    ]
    netlink.present_routes = [
        RouteEntry("10.2.0.0/24", None, TUNNEL_TABLE, FALLBACK_METRIC, RouteType.UNREACHABLE),
    ]
    await check_host(netlink, TUNNEL_TABLE, DEFAULT_OWN_MARK, TUN)


@pytest.mark.parametrize(
    ("rule", "route", "message"),
    [
        (PolicyRule(100, TUNNEL_TABLE, fwmark=0x1), None, "looks up table 4500"),
        (PolicyRule(100, 200, fwmark=DEFAULT_OWN_MARK), None, "matches firewall mark 0x1045"),
        (None, RouteEntry("10.9.0.0/24", "eth0", TUNNEL_TABLE, None), "route unicast 10.9.0.0/24"),
        (
            None,
            RouteEntry("10.9.0.0/24", None, TUNNEL_TABLE, 10, RouteType.UNREACHABLE),
            "unreachable",
        ),
    ],
)
async def test_a_table_or_mark_in_use_by_others_is_refused(
    rule: PolicyRule | None, route: RouteEntry | None, message: str
) -> None:
    netlink = RecordingRoutes()
    netlink.present_rules = [rule] if rule is not None else []
    netlink.present_routes = [route] if route is not None else []
    with pytest.raises(HostConflict) as caught:
        await check_host(netlink, TUNNEL_TABLE, DEFAULT_OWN_MARK, TUN)
    text = str(caught.value)
    assert message in text and "set routing_table and firewall_mark" in text
    assert not [c for c in netlink.calls if c[0] not in ("rules", "routes")]
