"""PlanRoutes: the routes and policy-routing rules a plan asks for, on a recording fake of
the netlink layer.

With the agent's firewall mark, routes into the TUN live in a table of their own behind
rules: the mark's rule first (our own IKE and ESP by the main table), then one rule per
SPD entry up to the last BYPASS entry in SPD order (RFC 4301 section 4.4.1: first match
wins; bypass to the main table, protect and discard to the tunnel table), then the
protected prefixes to the tunnel table. Each prefix there has an ``unreachable`` route
behind its TUN route, so nothing leaves in the clear once the TUN is gone. Transport mode
(RFC 4303 section 3.1.1) routes the peer's own address the same way, with our address as
the source.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import logging

import pytest

from tests.support.recording_routes import Call, RecordingRoutes
from vpnfleet.agent.convert import plan_from_proto
from vpnfleet.agent.engine.plan_routes import (
    FALLBACK_METRIC,
    MAIN_TABLE,
    ORDERED_PRIORITY,
    OWN_MARK_PRIORITY,
    THROW_METRIC,
    TUNNEL_PRIORITY,
    TUNNEL_TABLE,
    PlanRoutes,
    policy_routing,
    selector_rule,
    transport_prefixes,
)
from vpnfleet.agent.hollow import sample_plan
from vpnfleet.agent.io.policy_rules import PolicyRule
from vpnfleet.agent.io.routes import RouteEntry, RouteType
from vpnfleet.agent.plan import AgentPlan, SpdAction, SpdEntry, TrafficSelector
from vpnfleet.protos import plan_pb2
from vpnfleet.protos.hashing import plan_content_hash

MARK = 0x4500
TUN = "tun-a"


def plan(mode: int = plan_pb2.MODE_TUNNEL, address: str = "192.0.2.1") -> AgentPlan:
    """Host a protecting everything between its address and b's (192.0.2.2)."""
    msg = sample_plan("a", address, f"{address}/32", [("b", "192.0.2.2", "192.0.2.2/32")])
    msg.peers[0].mode = mode
    msg.content_hash = plan_content_hash(msg)
    return plan_from_proto(msg)


def site_plan(*spd: SpdEntry, subnet: str = "10.1.1.0/24") -> AgentPlan:
    """Host a with site ``subnet`` and peer b (site 10.1.2.0/24), with the given SPD."""
    msg = sample_plan("a", "192.0.2.1", subnet, [("b", "192.0.2.2", "10.1.2.0/24")])
    msg.content_hash = plan_content_hash(msg)
    return dataclasses.replace(plan_from_proto(msg), spd=spd)


def entry(
    name: str,
    action: SpdAction,
    local: str,
    remote: str,
    protocol: int = 0,
    local_ports: tuple[int, int] = (0, 65535),
    remote_ports: tuple[int, int] = (0, 65535),
) -> SpdEntry:
    selector = TrafficSelector(
        ipaddress.ip_network(local),
        ipaddress.ip_network(remote),
        protocol,
        local_ports,
        remote_ports,
    )
    return SpdEntry(name, selector, action, "b" if action is SpdAction.PROTECT else "")


PROTECT_B = entry("b", SpdAction.PROTECT, "10.1.1.0/24", "10.1.2.0/24")
ECHO_OUT = entry("echo", SpdAction.BYPASS, "10.1.0.0/16", "10.1.0.0/16", 17, remote_ports=(7, 7))
ECHO_IN = entry("echo-in", SpdAction.BYPASS, "10.1.0.0/16", "10.1.0.0/16", 17, local_ports=(7, 7))

TRANSPORT = plan_pb2.MODE_TRANSPORT
TUNNEL = plan_pb2.MODE_TUNNEL
MARK_RULES: list[Call] = [
    ("add_rule", f"{OWN_MARK_PRIORITY}: from all fwmark 0x4500 lookup main"),
    ("add_rule", f"-6 {OWN_MARK_PRIORITY}: from all fwmark 0x4500 lookup main"),
]
UNMARK_RULES: list[Call] = [("remove_rule", c[1]) for c in MARK_RULES]


def routed(prefix: str, source: str | None = None) -> list[Call]:
    """The fallback, the TUN route and the rule to the tunnel table, in that order."""
    return [
        ("add_typed_route", prefix, "unreachable", TUNNEL_TABLE, FALLBACK_METRIC),
        ("add_route", prefix, TUN, TUNNEL_TABLE, source),
    ]


def tunnel_rule(prefix: str, family: int = 4) -> str:
    six = "-6 " if family == 6 else ""
    return f"{six}{TUNNEL_PRIORITY}: from all to {prefix} lookup {TUNNEL_TABLE}"


def unrouted(prefix: str) -> list[Call]:
    return [
        ("remove_route", prefix, TUN, TUNNEL_TABLE),
        ("remove_typed_route", prefix, "unreachable", TUNNEL_TABLE, FALLBACK_METRIC),
    ]


def test_transport_prefixes_are_the_protected_peer_addresses_with_our_source() -> None:
    assert transport_prefixes(plan(TRANSPORT)) == {"192.0.2.2/32": "192.0.2.1"}
    assert transport_prefixes(plan(TUNNEL)) == {}


def test_priorities_keep_the_mark_first_and_the_main_table_last() -> None:
    assert OWN_MARK_PRIORITY < ORDERED_PRIORITY < TUNNEL_PRIORITY < 32766


async def test_transport_mode_mark_rule_first_then_fallback_route_and_rule() -> None:
    fake = RecordingRoutes()
    routes = PlanRoutes(fake, TUN, MARK)
    await routes.apply(plan(TRANSPORT))
    assert fake.calls[0] == ("link_up", TUN, 1438)
    assert fake.take() == [
        *MARK_RULES,
        *routed("192.0.2.2/32", "192.0.2.1"),
        ("add_rule", tunnel_rule("192.0.2.2/32")),
    ]
    # The same plan again changes nothing, and does not look for leftovers again.
    await routes.apply(plan(TRANSPORT))
    assert fake.calls == [("link_up", TUN, 1438)]
    fake.take()
    await routes.remove_all()
    assert fake.take() == [
        ("remove_rule", tunnel_rule("192.0.2.2/32")),
        *unrouted("192.0.2.2/32"),
        *UNMARK_RULES,
    ]


async def test_tunnel_mode_with_the_mark_routes_through_the_tunnel_table() -> None:
    fake = RecordingRoutes()
    routes = PlanRoutes(fake, TUN, MARK)
    await routes.apply(plan(TUNNEL))
    assert fake.take() == [
        *MARK_RULES,
        *routed("192.0.2.2/32"),
        ("add_rule", tunnel_rule("192.0.2.2/32")),
    ]
    # No route of ours in the main table: the host's own routes stay in charge there.
    assert all(c[3] == TUNNEL_TABLE for c in fake.calls if c[0] == "add_route")


async def test_tunnel_mode_without_a_mark_routes_in_the_main_table_without_rules() -> None:
    fake = RecordingRoutes()
    routes = PlanRoutes(fake, TUN, None)
    await routes.apply(plan(TUNNEL))
    assert fake.take() == [("add_route", "192.0.2.2/32", TUN, None, None)]
    await routes.remove_all()
    assert fake.take() == [("remove_route", "192.0.2.2/32", TUN, None)]


async def test_changing_mode_changes_only_the_source() -> None:
    fake = RecordingRoutes()
    routes = PlanRoutes(fake, TUN, MARK)
    await routes.apply(plan(TRANSPORT))
    fake.take()
    await routes.apply(plan(TUNNEL))
    assert fake.take() == [
        ("remove_route", "192.0.2.2/32", TUN, TUNNEL_TABLE),
        ("add_route", "192.0.2.2/32", TUN, TUNNEL_TABLE, None),
    ]


async def test_a_new_source_address_replaces_the_transport_route() -> None:
    fake = RecordingRoutes()
    routes = PlanRoutes(fake, TUN, MARK)
    await routes.apply(plan(TRANSPORT))
    fake.take()
    await routes.apply(plan(TRANSPORT, address="192.0.2.9"))
    assert fake.take() == [
        ("remove_route", "192.0.2.2/32", TUN, TUNNEL_TABLE),
        ("add_route", "192.0.2.2/32", TUN, TUNNEL_TABLE, "192.0.2.9"),
    ]


async def test_transport_mode_without_a_mark_routes_nothing_and_says_why(
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake = RecordingRoutes()
    with caplog.at_level(logging.ERROR):
        await PlanRoutes(fake, TUN, None).apply(plan(TRANSPORT))
    assert fake.take() == []
    assert "transport mode needs a firewall mark" in caplog.text
    assert "192.0.2.2/32 is not routed into tun-a" in caplog.text


def test_bypass_rules_follow_spd_order_up_to_the_last_bypass() -> None:
    discard = entry("no-3", SpdAction.DISCARD, "10.1.1.0/24", "10.1.3.0/24")
    later = entry("c", SpdAction.PROTECT, "10.1.1.0/24", "10.1.4.0/24")
    want = policy_routing(site_plan(PROTECT_B, ECHO_OUT, discard, ECHO_IN, later), MARK, TUN)
    ordered = sorted(
        (r for r in want.rules if ORDERED_PRIORITY <= r.priority < TUNNEL_PRIORITY),
        key=lambda r: r.priority,
    )
    assert [str(r) for r in ordered] == [
        f"{ORDERED_PRIORITY}: from 10.1.1.0/24 to 10.1.2.0/24 lookup {TUNNEL_TABLE}",
        f"{ORDERED_PRIORITY + 1}: from 10.1.0.0/16 to 10.1.0.0/16 ipproto 17 dport 7-7 lookup main",
        f"{ORDERED_PRIORITY + 2}: from 10.1.1.0/24 to 10.1.3.0/24 lookup {TUNNEL_TABLE}",
        f"{ORDERED_PRIORITY + 3}: from 10.1.0.0/16 to 10.1.0.0/16 ipproto 17 sport 7-7 lookup main",
    ]
    # Protect and discard prefixes alike go to the TUN (the data plane drops discards),
    # each behind its own rule; entries after the last bypass need no rule of their own.
    tunnel = sorted(str(r) for r in want.rules if r.priority == TUNNEL_PRIORITY)
    assert tunnel == sorted(tunnel_rule(p) for p in ("10.1.2.0/24", "10.1.3.0/24", "10.1.4.0/24"))
    assert {(r.prefix, r.kind) for r in want.typed_routes} == {
        (p, "unreachable") for p in ("10.1.2.0/24", "10.1.3.0/24", "10.1.4.0/24")
    }
    assert want.problems == ()


def test_ipv6_and_tcp_port_ranges_become_rules_of_their_family() -> None:
    ssh = entry("ssh", SpdAction.BYPASS, "::/0", "2001:db8:2::/48", 6, remote_ports=(22, 22))
    web = entry("web", SpdAction.BYPASS, "2001:db8:1::/48", "::/0", 6, (8000, 8080), (1024, 65535))
    v6 = entry("b6", SpdAction.PROTECT, "2001:db8:1::/48", "2001:db8:2::/48")
    want = policy_routing(site_plan(ssh, web, v6), MARK, TUN)
    assert sorted(str(r) for r in want.rules) == sorted(
        [
            f"{OWN_MARK_PRIORITY}: from all fwmark 0x4500 lookup main",
            f"-6 {OWN_MARK_PRIORITY}: from all fwmark 0x4500 lookup main",
            f"-6 {ORDERED_PRIORITY}: from all to 2001:db8:2::/48 ipproto 6 dport 22-22 lookup main",
            f"-6 {ORDERED_PRIORITY + 1}: from 2001:db8:1::/48 ipproto 6 sport 8000-8080 "
            "dport 1024-65535 lookup main",
            tunnel_rule("2001:db8:2::/48", family=6),
        ]
    )


def test_a_bypass_a_rule_cannot_say_exactly_is_left_out_and_said() -> None:
    # ICMP type and code sit in the port fields (RFC 4301 section 4.4.1.3); a rule cannot
    # match them, and a wider bypass would let other ICMP out in the clear.
    echo = entry("ping", SpdAction.BYPASS, "10.1.0.0/16", "10.1.0.0/16", 1, (8, 8), (0, 0))
    assert selector_rule(echo, 1, MAIN_TABLE) is None
    want = policy_routing(site_plan(echo, PROTECT_B), MARK, TUN)
    assert not [r for r in want.rules if ORDERED_PRIORITY <= r.priority < TUNNEL_PRIORITY]
    assert len(want.problems) == 1 and "'ping'" in want.problems[0].message
    assert want.problems[0].subject == "ping"
    # A protect entry before a bypass gets the wider rule: the data plane checks the rest.
    icmp = entry("icmp", SpdAction.PROTECT, "10.1.1.0/24", "10.1.2.0/24", 1, (8, 8), (0, 0))
    rule = selector_rule(icmp, 7, TUNNEL_TABLE)
    assert str(rule) == f"7: from 10.1.1.0/24 to 10.1.2.0/24 ipproto 1 lookup {TUNNEL_TABLE}"


def test_own_site_inside_a_protected_prefix_is_thrown_back_to_the_main_table() -> None:
    wide = entry("b", SpdAction.PROTECT, "10.1.1.0/24", "10.1.0.0/16")
    want = policy_routing(site_plan(wide), MARK, TUN)
    assert ("10.1.1.0/24", "throw", THROW_METRIC) in {
        (r.prefix, r.kind, r.metric) for r in want.typed_routes
    }
    # Not when the site is not inside a routed prefix.
    narrow = policy_routing(site_plan(PROTECT_B), MARK, TUN)
    assert all(r.kind == "unreachable" for r in narrow.typed_routes)


async def test_bypass_without_a_mark_is_said_once(caplog: pytest.LogCaptureFixture) -> None:
    fake = RecordingRoutes()
    routes = PlanRoutes(fake, TUN, None)
    with caplog.at_level(logging.ERROR):
        await routes.apply(site_plan(ECHO_OUT, PROTECT_B))
        await routes.apply(site_plan(ECHO_OUT, ECHO_IN, PROTECT_B))
    assert caplog.text.count("need a firewall mark") == 1
    assert "SPD bypass entries (echo)" in caplog.text
    assert fake.take() == [("add_route", "10.1.2.0/24", TUN, None, None)]


async def test_a_new_bypass_adds_rules_without_touching_the_routes() -> None:
    fake = RecordingRoutes()
    routes = PlanRoutes(fake, TUN, MARK)
    await routes.apply(site_plan(PROTECT_B))
    fake.take()
    await routes.apply(site_plan(ECHO_OUT, PROTECT_B))
    assert fake.take() == [
        (
            "add_rule",
            f"{ORDERED_PRIORITY}: from 10.1.0.0/16 to 10.1.0.0/16 ipproto 17 dport 7-7 lookup main",
        )
    ]
    # Moved one place down by a new first entry: the new rule goes in before the old goes.
    await routes.apply(site_plan(PROTECT_B, ECHO_OUT))
    assert fake.take() == [
        ("add_rule", f"{ORDERED_PRIORITY}: from 10.1.1.0/24 to 10.1.2.0/24 lookup 4500"),
        (
            "add_rule",
            f"{ORDERED_PRIORITY + 1}: from 10.1.0.0/16 to 10.1.0.0/16 ipproto 17 dport 7-7 "
            "lookup main",
        ),
        (
            "remove_rule",
            f"{ORDERED_PRIORITY}: from 10.1.0.0/16 to 10.1.0.0/16 ipproto 17 dport 7-7 lookup main",
        ),
    ]


async def test_first_apply_keeps_what_a_killed_predecessor_left_and_removes_the_rest() -> None:
    fake = RecordingRoutes()
    wanted_rule = PolicyRule(TUNNEL_PRIORITY, TUNNEL_TABLE, destination="10.1.2.0/24")
    stale_rule = PolicyRule(TUNNEL_PRIORITY, TUNNEL_TABLE, destination="10.1.9.0/24")
    stale_bypass = PolicyRule(ORDERED_PRIORITY, MAIN_TABLE, destination="10.1.0.0/16")
    mark = PolicyRule(OWN_MARK_PRIORITY, MAIN_TABLE, fwmark=MARK)
    # Not ours: another table, or a priority outside our range.
    foreign = [
        PolicyRule(ORDERED_PRIORITY, 100, destination="10.1.0.0/16"),
        PolicyRule(100, MAIN_TABLE, destination="10.1.0.0/16"),
        PolicyRule(32766, MAIN_TABLE),
    ]
    fake.present_rules = [wanted_rule, stale_rule, stale_bypass, mark, *foreign]
    fake.present_routes = [
        # The TUN's own routes went with the killed agent's device; the fallbacks stayed.
        RouteEntry("10.1.2.0/24", None, TUNNEL_TABLE, FALLBACK_METRIC, RouteType.UNREACHABLE),
        RouteEntry("10.1.9.0/24", None, TUNNEL_TABLE, FALLBACK_METRIC, RouteType.UNREACHABLE),
        RouteEntry("10.1.8.0/24", "eth0", TUNNEL_TABLE, None),
    ]
    routes = PlanRoutes(fake, TUN, MARK)
    await routes.apply(site_plan(PROTECT_B))
    assert ("rules",) in fake.calls and ("routes", TUNNEL_TABLE) in fake.calls
    assert fake.take() == [
        ("add_rule", f"-6 {OWN_MARK_PRIORITY}: from all fwmark 0x4500 lookup main"),
        ("add_route", "10.1.2.0/24", TUN, TUNNEL_TABLE, None),
        ("remove_rule", str(stale_bypass)),
        ("remove_rule", str(stale_rule)),
        ("remove_typed_route", "10.1.9.0/24", "unreachable", TUNNEL_TABLE, FALLBACK_METRIC),
    ]
    await routes.remove_all()
    removed = fake.take()
    assert ("remove_rule", str(wanted_rule)) in removed and ("remove_rule", str(mark)) in removed
    assert all(("remove_rule", str(r)) not in removed for r in foreign)


async def test_leftovers_unreadable_are_looked_for_again_next_time(
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake = RecordingRoutes()
    fake.fail = {"rules"}
    routes = PlanRoutes(fake, TUN, MARK)
    with caplog.at_level(logging.ERROR):
        await routes.apply(site_plan(PROTECT_B))
    assert "cannot read the rules and table 4500 left from before" in caplog.text
    assert not routes.adopted and routes.rules  # the plan's own still went in
    fake.fail = set()
    fake.calls = []
    await routes.apply(site_plan(PROTECT_B))
    assert ("rules",) in fake.calls and routes.adopted


async def test_a_failed_request_is_logged_and_tried_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake = RecordingRoutes()
    fake.fail = {"add_rule"}
    routes = PlanRoutes(fake, TUN, MARK)
    with caplog.at_level(logging.ERROR):
        await routes.apply(plan(TUNNEL))
    # Every request was made once; none of the failed rules is recorded as in place.
    assert fake.take() == [
        *MARK_RULES,
        *routed("192.0.2.2/32"),
        ("add_rule", tunnel_rule("192.0.2.2/32")),
    ]
    assert "add rule 4500: from all fwmark 0x4500 lookup main: [Errno 1]" in caplog.text
    assert routes.rules == set()
    fake.fail = set()
    await routes.apply(plan(TUNNEL))
    assert fake.take() == [*MARK_RULES, ("add_rule", tunnel_rule("192.0.2.2/32"))]


async def test_a_failed_removal_stays_recorded_for_the_next_try() -> None:
    fake = RecordingRoutes()
    routes = PlanRoutes(fake, TUN, MARK)
    await routes.apply(plan(TUNNEL))
    fake.take()
    fake.fail = {"remove_typed_route"}
    await routes.remove_all()
    assert len(routes.typed_routes) == 1 and not routes.rules and not routes.tun_routes
    fake.fail = set()
    fake.take()
    await routes.remove_all()
    assert fake.take() == [
        ("remove_typed_route", "192.0.2.2/32", "unreachable", TUNNEL_TABLE, FALLBACK_METRIC)
    ]


async def test_a_configured_table_holds_the_routes_and_decommission_removes_leftovers() -> None:
    fake = RecordingRoutes()
    routes = PlanRoutes(fake, TUN, 0x2A, table=120)
    await routes.apply(plan(TUNNEL))
    assert fake.take() == [
        ("add_rule", f"{OWN_MARK_PRIORITY}: from all fwmark 0x2a lookup main"),
        ("add_rule", f"-6 {OWN_MARK_PRIORITY}: from all fwmark 0x2a lookup main"),
        ("add_typed_route", "192.0.2.2/32", "unreachable", 120, FALLBACK_METRIC),
        ("add_route", "192.0.2.2/32", TUN, 120, None),
        ("add_rule", f"{TUNNEL_PRIORITY}: from all to 192.0.2.2/32 lookup 120"),
    ]
    # A later process (the agent stopped) finds what is left and removes all of it.
    left = PlanRoutes(fake, TUN, 0x2A, table=120)
    fake.present_rules = [
        PolicyRule(OWN_MARK_PRIORITY, 254, fwmark=0x2A),
        PolicyRule(TUNNEL_PRIORITY, 120, destination="192.0.2.2/32"),
        PolicyRule(TUNNEL_PRIORITY, 4500, destination="10.0.0.0/8"),  # another table's
    ]
    fake.present_routes = [
        RouteEntry("192.0.2.2/32", None, 120, FALLBACK_METRIC, RouteType.UNREACHABLE)
    ]
    assert await left.decommission() == []
    assert fake.take() == [
        ("remove_rule", f"{TUNNEL_PRIORITY}: from all to 192.0.2.2/32 lookup 120"),
        ("remove_typed_route", "192.0.2.2/32", "unreachable", 120, FALLBACK_METRIC),
        ("remove_rule", f"{OWN_MARK_PRIORITY}: from all fwmark 0x2a lookup main"),
    ]
