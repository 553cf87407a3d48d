"""PlanRoutes: the routes and policy-routing rules a plan asks for, on a recording fake of
the netlink layer. Transport mode (RFC 4303 section 3.1.1) routes the peer's own address
into the TUN through a table of its own, behind a rule that sends the agent's marked
sockets by the main table first."""

from __future__ import annotations

import logging

import pytest

from vpnfleet.agent.convert import plan_from_proto
from vpnfleet.agent.engine.plan_routes import (
    MAIN_TABLE,
    OWN_MARK_PRIORITY,
    TRANSPORT_PRIORITY,
    TRANSPORT_TABLE,
    PlanRoutes,
    transport_prefixes,
)
from vpnfleet.agent.hollow import sample_plan
from vpnfleet.agent.io.routes import RouteError
from vpnfleet.agent.plan import AgentPlan
from vpnfleet.protos import plan_pb2
from vpnfleet.protos.hashing import plan_content_hash

MARK = 0x4500
TUN = "tun-a"
Call = tuple[object, ...]


class RecordingRoutes:
    """Records every request; ``fail`` names methods that raise as netlink would."""

    def __init__(self) -> None:
        self.calls: list[Call] = []
        self.fail: set[str] = set()

    def _record(self, name: str, *args: object) -> None:
        self.calls.append((name, *args))
        if name in self.fail:
            raise RouteError(1, f"{name}: EPERM Operation not permitted")

    async def link_up(self, ifname: str, mtu: int | None = None) -> None:
        self._record("link_up", ifname, mtu)

    async def add_route(
        self, prefix: str, ifname: str, *, table: int | None = None, source: str | None = None
    ) -> None:
        self._record("add_route", prefix, ifname, table, source)

    async def remove_route(self, prefix: str, ifname: str, *, table: int | None = None) -> None:
        self._record("remove_route", prefix, ifname, table)

    async def add_fwmark_rule(self, mark: int, table: int, *, priority: int | None = None) -> None:
        self._record("add_fwmark_rule", mark, table, priority)

    async def remove_fwmark_rule(
        self, mark: int, table: int, *, priority: int | None = None
    ) -> None:
        self._record("remove_fwmark_rule", mark, table, priority)

    async def add_destination_rule(self, prefix: str, table: int, *, priority: int) -> None:
        self._record("add_destination_rule", prefix, table, priority)

    async def remove_destination_rule(self, prefix: str, table: int, *, priority: int) -> None:
        self._record("remove_destination_rule", prefix, table, priority)

    def take(self) -> list[Call]:
        calls, self.calls = self.calls, []
        return [c for c in calls if c[0] != "link_up"]


def plan(mode: int, address: str = "192.0.2.1") -> AgentPlan:
    """Host a protecting everything between its address and b's (192.0.2.2)."""
    msg = sample_plan("a", address, f"{address}/32", [("b", "192.0.2.2", "192.0.2.2/32")])
    msg.peers[0].mode = mode
    msg.content_hash = plan_content_hash(msg)
    return plan_from_proto(msg)


TRANSPORT = plan_pb2.MODE_TRANSPORT
TUNNEL = plan_pb2.MODE_TUNNEL
BYPASS = ("add_fwmark_rule", MARK, MAIN_TABLE, OWN_MARK_PRIORITY)
UNBYPASS = ("remove_fwmark_rule", MARK, MAIN_TABLE, OWN_MARK_PRIORITY)


def transport_added(source: str = "192.0.2.1") -> list[Call]:
    return [
        ("add_route", "192.0.2.2/32", TUN, TRANSPORT_TABLE, source),
        ("add_destination_rule", "192.0.2.2/32", TRANSPORT_TABLE, TRANSPORT_PRIORITY),
    ]


TRANSPORT_REMOVED: list[Call] = [
    ("remove_destination_rule", "192.0.2.2/32", TRANSPORT_TABLE, TRANSPORT_PRIORITY),
    ("remove_route", "192.0.2.2/32", TUN, TRANSPORT_TABLE),
]


def test_transport_prefixes_are_the_protected_peer_addresses_with_our_source() -> None:
    assert transport_prefixes(plan(TRANSPORT)) == {"192.0.2.2/32": "192.0.2.1"}
    assert transport_prefixes(plan(TUNNEL)) == {}


async def test_transport_mode_bypass_rule_comes_first_and_no_main_table_route() -> None:
    fake = RecordingRoutes()
    routes = PlanRoutes(fake, TUN, MARK)
    await routes.apply(plan(TRANSPORT))
    assert fake.calls[0] == ("link_up", TUN, 1438)
    assert fake.take() == [BYPASS, *transport_added()]
    assert OWN_MARK_PRIORITY < TRANSPORT_PRIORITY
    # The same plan again changes nothing.
    await routes.apply(plan(TRANSPORT))
    assert fake.take() == []
    await routes.remove_all()
    assert fake.take() == [*TRANSPORT_REMOVED, UNBYPASS]


async def test_tunnel_mode_routes_in_the_main_table_without_rules() -> None:
    fake = RecordingRoutes()
    routes = PlanRoutes(fake, TUN, MARK)
    await routes.apply(plan(TUNNEL))
    assert fake.take() == [("add_route", "192.0.2.2/32", TUN, None, None)]
    await routes.remove_all()
    assert fake.take() == [("remove_route", "192.0.2.2/32", TUN, None)]


async def test_changing_mode_swaps_the_routes_and_drops_the_bypass() -> None:
    fake = RecordingRoutes()
    routes = PlanRoutes(fake, TUN, MARK)
    await routes.apply(plan(TRANSPORT))
    fake.take()
    await routes.apply(plan(TUNNEL))
    assert fake.take() == [
        *TRANSPORT_REMOVED,
        ("add_route", "192.0.2.2/32", TUN, None, None),
        UNBYPASS,
    ]
    await routes.apply(plan(TRANSPORT))
    assert fake.take() == [
        ("remove_route", "192.0.2.2/32", TUN, None),
        BYPASS,
        *transport_added(),
    ]


async def test_a_new_source_address_replaces_the_transport_route() -> None:
    fake = RecordingRoutes()
    routes = PlanRoutes(fake, TUN, MARK)
    await routes.apply(plan(TRANSPORT))
    fake.take()
    await routes.apply(plan(TRANSPORT, address="192.0.2.9"))
    assert fake.take() == [
        ("remove_route", "192.0.2.2/32", TUN, TRANSPORT_TABLE),
        *transport_added("192.0.2.9"),
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


async def test_no_transport_route_without_the_bypass_rule(
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake = RecordingRoutes()
    fake.fail = {"add_fwmark_rule"}
    routes = PlanRoutes(fake, TUN, MARK)
    with caplog.at_level(logging.ERROR):
        await routes.apply(plan(TRANSPORT))
    # Without the bypass, routing the peer into the TUN would swallow our own IKE.
    assert fake.take() == [BYPASS]
    assert "add rule fwmark 0x4500 lookup main: [Errno 1] add_fwmark_rule: EPERM" in caplog.text
    assert "transport mode not routed" in caplog.text
    fake.fail = set()
    await routes.apply(plan(TRANSPORT))
    assert fake.take() == [BYPASS, *transport_added()]


async def test_a_failed_route_is_logged_and_tried_again(caplog: pytest.LogCaptureFixture) -> None:
    fake = RecordingRoutes()
    fake.fail = {"add_destination_rule"}
    routes = PlanRoutes(fake, TUN, MARK)
    with caplog.at_level(logging.ERROR):
        await routes.apply(plan(TRANSPORT))
    # The route goes again with the rule that failed; the bypass stays for the retry.
    assert fake.take() == [
        BYPASS,
        *transport_added(),
        ("remove_route", "192.0.2.2/32", TUN, TRANSPORT_TABLE),
    ]
    assert "add route 192.0.2.2/32 via tun-a in table 4500: [Errno 1]" in caplog.text
    assert routes.bypass_rule and routes.transport == {}
    fake.fail = set()
    await routes.apply(plan(TRANSPORT))
    assert fake.take() == transport_added()
