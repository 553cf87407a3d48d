"""The data plane's parts on their own, each with only the inputs it is handed: the
child SA table without sockets or event delivery, the outbound path without a SAD."""

from __future__ import annotations

import pytest

from tests.support.dataplane_pair import POLICY, SITE_A, SITE_B, sa, udp4
from vpnfleet.agent.esp.sa import Mode
from vpnfleet.agent.esp.sad import InboundRemoved, Sad
from vpnfleet.agent.esp.spd import Action, Selector, Spd, SpdEntry, TrafficSelector
from vpnfleet.agent.io.child_sa_install import ChildSaTable
from vpnfleet.agent.io.dataplane_model import Acquire, DataPlaneCounters
from vpnfleet.agent.io.outbound_path import OutboundPath, Route
from vpnfleet.agent.io.tun import MemoryTun

PEER = "192.0.2.2"
A1, B1 = "10.1.0.5", "10.2.0.7"


def table() -> tuple[ChildSaTable, list[str]]:
    """A table whose events stay queued in its SAD (the tests read them)."""
    bound: list[str] = []

    def keep_queued() -> None:
        pass

    sas = ChildSaTable(
        Sad(), bind_send=lambda route: bound.append(route.policy), deliver_events=keep_queued
    )
    return sas, bound


def test_table_install_binds_the_route_and_owns_the_spis() -> None:
    sas, bound = table()
    ts_a, ts_b = TrafficSelector.from_network(SITE_A), TrafficSelector.from_network(SITE_B)
    sas.install(
        POLICY, sa(0x2002, 2), sa(0x1001, 1), PEER, local_ts=(ts_a,), remote_ts=(ts_b,), now=1.0
    )
    route = sas.route(POLICY)
    assert bound == [POLICY] and route.encap is not None and route.dest == (PEER, 4500)
    assert sas.policies() == [POLICY]
    assert sas.inbound_policy(0x2002) == sas.outbound_policy(0x1001) == POLICY
    assert sas.inbound_route(0x2002) is route and sas.inbound_route(0x9999) is None
    # Tunnel mode with selectors: the inbound path's check is in place, keyed by SPI.
    assert list(sas.checks) == [(0x2002).to_bytes(4, "big")]
    # The SAD's InboundRemoved leads to forget_inbound, which drops what the table kept.
    sas.remove(POLICY)
    event = sas.sad.next_event()
    assert isinstance(event, InboundRemoved) and event.spi == 0x2002
    assert sas.forget_inbound(0x2002) == POLICY
    assert sas.checks == {} and route.inbound_spis == [] and route.encap is None
    assert sas.policies() == []


def test_table_waiting_outbound_sa_is_switched_by_activate() -> None:
    sas, _ = table()
    sas.install(POLICY, sa(0x2002, 2), sa(0x1001, 1), PEER, now=1.0)
    sas.rekey(POLICY, sa(0x2102, 12), sa(0x1101, 11), switch_outbound=False, now=2.0)
    route = sas.route(POLICY)
    assert route.outbound is not None and route.outbound.spi == 0x1001
    assert sas.activate_on == {(0x2102).to_bytes(4, "big"): POLICY}
    sas.activate(POLICY)
    assert route.outbound is not None and route.outbound.spi == 0x1101
    assert sas.activate_on == {} and route.pending is None
    with pytest.raises(ValueError, match="no outbound SA waiting"):
        sas.activate(POLICY)


def test_table_refuses_a_transport_install_without_the_local_address() -> None:
    sas, bound = table()
    with pytest.raises(ValueError, match="needs the local address"):
        sas.install(
            POLICY, sa(0x2002, 2, Mode.TRANSPORT), sa(0x1001, 1, Mode.TRANSPORT), PEER, now=1.0
        )
    assert bound == [] and sas.policies() == [] and list(sas.sad.inbound_sas()) == []


def test_outbound_path_traps_through_the_route_it_is_handed() -> None:
    tun = MemoryTun()
    spd = Spd()
    spd.replace([SpdEntry(Selector.parse(SITE_A, SITE_B), Action.PROTECT, POLICY)])
    routes: dict[str, Route] = {}
    acquires: list[Acquire] = []
    errors: list[tuple[str, Exception]] = []
    counters = DataPlaneCounters()
    path = OutboundPath(
        tun,
        spd,
        counters,
        route_for=lambda policy: routes.setdefault(policy, Route(policy)),
        report_error=lambda where, exc: errors.append((where, exc)),
        on_acquire=acquires.append,
        acquire_interval=1.0,
    )
    for _ in range(2):
        tun.inject(udp4(A1, B1))
    assert path.read(now=5.0) == (2, 0)
    # No SA on the route: a trap, one acquire per interval, and the flow is cached.
    assert [a.policy for a in acquires] == [POLICY] and counters.no_sa == 2
    assert routes[POLICY].acquire_after == 6.0 and path.cached_flows() == 1
    assert errors == []
    path.clear_flows()
    assert path.cached_flows() == 0
