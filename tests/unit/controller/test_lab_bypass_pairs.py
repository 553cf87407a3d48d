"""Bypass in the lab without a lab: the cleartext routes between the sites, which pairs
get a bypass probe (RFC 4301 section 4.4.1: the first matching SPD entry decides, for the
probe and for its answer), and how a probe's report is judged."""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml

from vpnfleet.controller.inventory import load_inventory
from vpnfleet.controller.lab.layout import LabLayout, plan_layout
from vpnfleet.controller.lab.netns import cleartext_routes
from vpnfleet.controller.lab.reach import (
    FAIL,
    PASS_CLEAR,
    PROBE_PORT,
    PROBE_SOURCE_PORT,
    ReachPair,
    bypass_pairs,
    expected_pairs,
    first_udp_match,
    judge_bypass,
)
from vpnfleet.controller.planner import NodePlan, build_plans

INVENTORIES = Path(__file__).resolve().parents[3] / "inventories"


def lab_of(inventory: Path) -> tuple[dict[str, NodePlan], LabLayout]:
    inv = load_inventory(inventory)
    plans = build_plans(inv, master_secret=bytes(32))
    return dict(plans), plan_layout("t1", inv, plans)


def with_policies(tmp_path: Path, name: str, policies: list[dict[str, str]]) -> Path:
    copy = tmp_path / name
    shutil.copytree(INVENTORIES / name, copy)
    topology = yaml.safe_load((copy / "topology.yaml").read_text())
    topology["policies"] = policies
    (copy / "topology.yaml").write_text(yaml.safe_dump(topology))
    return copy


def test_every_mesh_host_routes_the_other_sites_via_their_underlay_address() -> None:
    _, layout = lab_of(INVENTORIES / "lab")
    routes = cleartext_routes(layout)
    assert routes["vf-t1-a1"] == [
        ("10.1.2.0/24", "10.99.0.12"),
        ("10.1.3.0/24", "10.99.0.13"),
        ("10.1.4.0/24", "10.99.0.14"),
    ]
    assert len(routes) == 4 and all(len(r) == 3 for r in routes.values())


def test_hosts_behind_nat_get_no_cleartext_routes_and_are_reached_by_none() -> None:
    _, layout = lab_of(INVENTORIES / "nat")
    routes = cleartext_routes(layout)
    behind = [h.netns for h in layout.hosts.values() if h.router is not None]
    assert behind and all(ns not in routes for ns in behind)
    nat_sites = {s.network for h in layout.hosts.values() if h.router for s in h.sites}
    assert all(net not in nat_sites for r in routes.values() for net, _ in r)


def test_the_lab_inventory_probes_every_ordered_pair_in_the_clear() -> None:
    plans, layout = lab_of(INVENTORIES / "lab")
    pairs = expected_pairs(plans, layout)
    assert sum(p.expect == "protect" for p in pairs) == 12
    bypass = [p for p in pairs if p.expect == "bypass"]
    assert {(p.src_host, p.dst_host) for p in bypass} == {
        (a, b) for a in ("a1", "a2", "a3", "a4") for b in ("a1", "a2", "a3", "a4") if a != b
    }
    # The echo policy names the destination port; the source port is the probe's own.
    # The answer, from port 7, meets the second bypass entry at the destination.
    assert all(
        p.policy == "policy:echo-clear"
        and (p.sport, p.dport) == (PROBE_SOURCE_PORT, PROBE_PORT)
        and p.reply_clear
        for p in bypass
    ), bypass


def test_a_bypass_behind_an_earlier_entry_or_of_tcp_gets_no_probe(tmp_path: Path) -> None:
    inventory = with_policies(
        tmp_path,
        "lab",
        [
            {"name": "keep", "action": "discard", "local": "10.1.1.0/24", "remote": "any",
             "protocol": "udp"},
            {"name": "ssh", "action": "bypass", "local": "10.1.0.0/16", "remote": "any",
             "protocol": "tcp", "remote_ports": "22"},
            {"name": "dns", "action": "bypass", "local": "10.1.0.0/16", "remote": "10.1.0.0/16",
             "protocol": "udp", "remote_ports": "53"},
        ],
    )  # fmt: skip
    plans, layout = lab_of(inventory)
    pairs = bypass_pairs(plans, layout)
    # a1 discards its UDP before the bypass; its peers' probes to it would get answers
    # discarded: no probe either way. The others probe port 53; the answers (from 53)
    # meet no bypass entry, so they may come back through the tunnel.
    assert pairs and all("a1" not in (p.src_host, p.dst_host) for p in pairs)
    assert {(p.policy, p.dport, p.reply_clear) for p in pairs} == {("policy:dns", 53, False)}
    assert len(pairs) == 6


def test_first_udp_match_walks_the_spd_in_order() -> None:
    plans, _ = lab_of(INVENTORIES / "lab")
    spd = plans["a1"].spd
    assert first_udp_match(spd, "10.1.1.1", "10.1.2.1", 40000, 7).name == "policy:echo-clear"
    answer = first_udp_match(spd, "10.1.1.1", "10.1.2.1", 7, 40000)
    assert answer is not None and answer.name == "policy:echo-clear-answers"
    other = first_udp_match(spd, "10.1.1.1", "10.1.2.1", 40000, 8)
    assert other is not None and other.name == "a2"
    assert first_udp_match(spd, "10.1.1.1", "10.9.9.9", 40000, 8) is None


PAIR = ReachPair(
    "a1", "a2", "10.1.1.1", "10.1.2.1", "bypass", "policy:echo-clear",
    probe="udp 40007->7", reply_clear=True, sport=40007, dport=7,
)  # fmt: skip


def test_a_probe_passes_only_when_it_crossed_on_the_underlay() -> None:
    ok = judge_bypass(PAIR, {"far": "eth0", "near": "eth0"})
    assert ok.result == PASS_CLEAR and ok.detail == "udp 40007->7 on eth0 both ways"
    tunnel = judge_bypass(PAIR, {"far": "vpnfleet0", "near": "vpnfleet0"})
    assert (
        tunnel.result == FAIL and tunnel.detail == "arrived on vpnfleet0, not in the clear on eth0"
    )
    back = judge_bypass(PAIR, {"far": "eth0", "near": "vpnfleet0"})
    assert back.result == FAIL and "the answer came back on vpnfleet0" in back.detail
    lost = judge_bypass(PAIR, {"error": "no answer within 2s"})
    assert lost.result == FAIL and lost.detail == "no answer within 2s"
    # An answer the destination's SPD protects may come back through the tunnel.
    one_way = judge_bypass(
        ReachPair(**{**PAIR.to_json(), "reply_clear": False}), {"far": "eth0", "near": "vpnfleet0"}
    )
    assert one_way.result == PASS_CLEAR and one_way.detail.endswith("answer on vpnfleet0")
