"""The kill switch (engine/kill_switch.py): the nftables rules a plan asks for, installed
once per change and kept, with the routes and rules, when the engine stops (a fake table
and a recording fake of netlink)."""

from __future__ import annotations

import dataclasses
import ipaddress

from tests.support.recording_routes import RecordingRoutes
from vpnfleet.agent.convert import plan_from_proto
from vpnfleet.agent.engine import Engine
from vpnfleet.agent.engine.clock import ManualScheduler
from vpnfleet.agent.engine.kill_switch import (
    LINK_SCOPE,
    KillSwitch,
    KillSwitchSettings,
    kill_switch_ruleset,
)
from vpnfleet.agent.hollow import sample_plan
from vpnfleet.agent.io.memory import MemoryEndpoint, MemoryNetwork
from vpnfleet.agent.io.nftables import NftError
from vpnfleet.agent.io.tun import MemoryTun
from vpnfleet.agent.plan import AgentPlan, SpdAction, SpdEntry, TrafficSelector
from vpnfleet.agent.sink import ProblemKind
from vpnfleet.protos.hashing import plan_content_hash

SETTINGS = KillSwitchSettings("tun-a", 0x4500, (500, 4500))


def entry(
    name: str,
    action: SpdAction,
    local: str,
    remote: str,
    protocol: int = 0,
    remote_ports: tuple[int, int] = (0, 65535),
) -> SpdEntry:
    selector = TrafficSelector(
        ipaddress.ip_network(local),
        ipaddress.ip_network(remote),
        protocol,
        (0, 65535),
        remote_ports,
    )
    return SpdEntry(name, selector, action, "b" if action is SpdAction.PROTECT else "")


def site_plan(*spd: SpdEntry, subnet: str = "10.1.1.0/24") -> AgentPlan:
    msg = sample_plan("a", "192.0.2.1", subnet, [("b", "192.0.2.2", "10.2.0.0/24")])
    msg.content_hash = plan_content_hash(msg)
    plan = plan_from_proto(msg)
    return dataclasses.replace(plan, spd=spd) if spd else plan


def chain(body: str, name: str) -> list[str]:
    lines = body.split(f"\tchain {name} {{\n", 1)[1].splitlines()
    return [line.strip() for line in lines[: lines.index("\t}")]]


class FakeTable:
    def __init__(self) -> None:
        self.bodies: list[str] = []
        self.fail = False

    async def replace(self, body: str) -> None:
        if self.fail:
            raise NftError(1, "nft on table inet vpnfleet_agent: Operation not permitted")
        self.bodies.append(body)


def test_protected_selectors_are_dropped_off_the_tun_both_ways() -> None:
    body = kill_switch_ruleset(site_plan(), SETTINGS)
    out = chain(body, "protected_out")
    assert out == [
        "meta nfproto ipv4 ip saddr 10.1.1.0/24 ip daddr 10.2.0.0/24 counter drop",
    ]
    assert chain(body, "protected_in") == [
        "meta nfproto ipv4 ip saddr 10.2.0.0/24 ip daddr 10.1.1.0/24 counter drop",
    ]
    # The agent's own IKE and ESP (marked), loopback and the TUN itself pass.
    assert chain(body, "output") == [
        "type filter hook output priority filter; policy accept;",
        'oifname { "lo", "tun-a" } accept',
        "meta mark 0x4500 accept",
        *LINK_SCOPE,
        "jump protected_out",
    ]
    assert chain(body, "input")[1:4] == [
        'iifname { "lo", "tun-a" } accept',
        "meta l4proto esp accept",
        "udp dport { 500, 4500 } accept",
    ]
    assert chain(body, "forward")[1:] == [
        'iifname "tun-a" accept',
        'oifname "tun-a" accept',
        "jump protected_out",
        "jump protected_in",
    ]


def test_the_spd_order_decides_bypass_before_protect_and_own_sites_pass() -> None:
    echo = entry("echo", SpdAction.BYPASS, "10.1.0.0/16", "10.0.0.0/8", 17, (7, 7))
    full = entry("all", SpdAction.PROTECT, "10.1.1.0/24", "10.0.0.0/8")
    drop6 = entry("v6", SpdAction.DISCARD, "2001:db8:1::/48", "2001:db8::/32")
    body = kill_switch_ruleset(site_plan(echo, full, drop6), SETTINGS)
    assert chain(body, "protected_out") == [
        # 10.1.1.0/24 is this host's own site inside 10.0.0.0/8: routed in the clear.
        "ip daddr 10.1.1.0/24 accept",
        "meta nfproto ipv4 ip saddr 10.1.0.0/16 ip daddr 10.0.0.0/8 meta l4proto 17 "
        "th dport 7-7 accept",
        "meta nfproto ipv4 ip saddr 10.1.1.0/24 ip daddr 10.0.0.0/8 counter drop",
        "meta nfproto ipv6 ip6 saddr 2001:db8:1::/48 ip6 daddr 2001:db8::/32 counter drop",
    ]
    assert chain(body, "protected_in")[:2] == [
        "ip saddr 10.1.1.0/24 accept",
        "meta nfproto ipv4 ip saddr 10.0.0.0/8 ip daddr 10.1.0.0/16 meta l4proto 17 "
        "th sport 7-7 accept",
    ]


def test_a_plan_that_protects_nothing_drops_nothing() -> None:
    bypass = entry("lan", SpdAction.BYPASS, "10.1.1.0/24", "10.2.0.0/24")
    body = kill_switch_ruleset(site_plan(bypass), SETTINGS)
    assert chain(body, "protected_out") == [] and chain(body, "protected_in") == []


async def test_installed_once_per_change_and_a_refusal_is_a_problem_tried_again() -> None:
    table = FakeTable()
    switch = KillSwitch(table, SETTINGS)
    assert await switch.apply(site_plan()) == []
    assert await switch.apply(site_plan()) == []
    assert len(table.bodies) == 1
    other = site_plan(entry("c", SpdAction.PROTECT, "10.1.1.0/24", "10.3.0.0/24"))
    table.fail = True
    (problem,) = await switch.apply(other)
    assert problem.kind is ProblemKind.POLICY_RULE
    assert problem.subject == "nftables table inet vpnfleet_agent"
    assert "Operation not permitted" in problem.message
    table.fail = False
    assert await switch.apply(other) == []
    assert len(table.bodies) == 2 and "10.3.0.0/24" in table.bodies[1]


async def test_stopping_the_engine_keeps_the_kill_switch_rules_and_fallbacks() -> None:
    netlink, table = RecordingRoutes(), FakeTable()
    engine = Engine(
        MemoryTun("tun-a"),
        lambda on_ike, on_esp: MemoryEndpoint(MemoryNetwork(), on_ike, on_esp, host="192.0.2.1"),
        scheduler=ManualScheduler(),
        routing=netlink,
        own_mark=0x4500,
        kill_switch=KillSwitch(table, SETTINGS),
    )
    await engine.start()
    await engine.put_in_force(site_plan())
    installed = netlink.take()
    assert ("add_typed_route", "10.2.0.0/24", "unreachable", 4500, 0x7FFFFFFF) in installed
    assert len(table.bodies) == 1
    await engine.stop()
    assert netlink.take() == []  # nothing removed: no moment in the clear
    assert len(table.bodies) == 1
