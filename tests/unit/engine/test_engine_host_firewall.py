"""The host-firewall check (engine/host_firewall.py) over real ``nft -j list ruleset``
output: each ``host_firewall/NAME.json`` was captured from ``NAME.nft`` loaded in a
network namespace (nftables 1.0.6). Common host firewalls pass; a policy drop without
an accept for UDP 500/4500, or an explicit drop or reject of them, is named with the
rule to add."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vpnfleet.agent.engine.host_firewall import Direction, Probe, check_ruleset

SAMPLES = Path(__file__).parent / "host_firewall"


def probes(family: int = 4) -> list[Probe]:
    return [Probe(d, family, port) for d in Direction for port in (500, 4500)]


def findings(name: str, family: int = 4) -> list[str]:
    document = json.loads((SAMPLES / f"{name}.json").read_text())
    return [f.message() for f in check_ruleset(document, probes(family))]


@pytest.mark.parametrize(
    "name",
    ["accept_all", "typical_host", "vmap_host", "source_limited", "ipv6_only_drop", "zones_ipsec"],
)
def test_common_host_firewalls_pass(name: str) -> None:
    assert findings(name) == []


def test_an_empty_ruleset_passes() -> None:
    assert check_ruleset({"nftables": [{"metainfo": {"version": "1.0.6"}}]}, probes()) == []


def test_a_policy_drop_without_an_accept_for_ike_is_named_with_the_rule_to_add() -> None:
    assert findings("ssh_only") == [
        "chain inet filter input (input hook) ends in policy drop drops IKE received on "
        "UDP 500 and 4500 (IPv4); add `udp dport { 500, 4500 } accept` to it "
        "(`nft add rule inet filter input udp dport { 500, 4500 } accept`, and the same "
        "in the host's firewall configuration)"
    ]


def test_an_ipv6_policy_drop_counts_for_an_agent_on_ipv6() -> None:
    (message,) = findings("ipv6_only_drop", family=6)
    assert message.startswith("chain ip6 filter input (input hook) ends in policy drop")
    assert "UDP 500 and 4500 (IPv6)" in message


def test_an_explicit_reject_is_named_by_rule_and_handle() -> None:
    assert findings("explicit_drop") == [
        "rule 'udp dport 4500 counter reject' (handle 3) in chain ip filter input drops IKE "
        "received on UDP 4500 (IPv4); add `udp dport { 4500 } accept` before it "
        "(`nft insert rule ip filter input position 3 udp dport { 4500 } accept`, and the "
        "same in the host's firewall configuration)"
    ]


def test_an_output_policy_drop_is_named() -> None:
    (message,) = findings("output_drop")
    assert message.startswith(
        "chain inet filter output (output hook) ends in policy drop drops IKE sent on "
        "UDP 500 and 4500 (IPv4); add `udp sport { 500, 4500 } accept` to it"
    )


def test_the_agents_own_table_is_not_held_against_the_host() -> None:
    document = json.loads((SAMPLES / "ssh_only.json").read_text())
    for item in document["nftables"]:
        for kind in ("table", "chain", "rule"):
            if kind in item:
                item[kind]["table" if kind != "table" else "name"] = "vpnfleet_agent"
    assert check_ruleset(document, probes()) == []


def test_a_zone_layout_that_falls_through_to_its_reject_is_named() -> None:
    # Zones reached by goto, an interface-bound goto that may match, an allow chain
    # without IKE, and a final reject (a firewalld-like layout).
    assert findings("zones_reject") == [
        "rule 'reject' (handle 11) in chain inet zones filter_INPUT drops IKE received on "
        "UDP 500 and 4500 (IPv4); add `udp dport { 500, 4500 } accept` before it (`nft "
        "insert rule inet zones filter_INPUT position 11 udp dport { 500, 4500 } accept`, "
        "and the same in the host's firewall configuration)"
    ]
