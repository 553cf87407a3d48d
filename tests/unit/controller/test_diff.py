"""diff_plans(): the data-plane change between two planner outputs, secrets never shown."""

from __future__ import annotations

import textwrap
from pathlib import Path

from vpnfleet.controller.delivery.staging import stage
from vpnfleet.controller.gitops.diff import FleetDiff, HostDiff, diff_plans
from vpnfleet.controller.inventory import load_inventory
from vpnfleet.controller.planner import NodePlan, build_plans
from vpnfleet.controller.reports.results import ChangeLine
from vpnfleet.protos.plan_diff import ChangeKind

SECRET = b"0123456789abcdef0123456789abcdef"

HOSTS = """\
all:
  children:
    mesh:
      hosts:
        a1: {address: 10.99.0.1, subnets: [10.1.1.0/24]}
        a2: {address: 10.99.0.2, subnets: [10.1.2.0/24]}
        a3: {address: 10.99.0.3, subnets: [10.1.3.0/24]}
"""
ALL = "ike_proposals: [aes256gcm16-prfsha384-x25519]\nesp_proposals: [aes256gcm16]\n"
TOPOLOGY = "meshes:\n  - {name: lab, group: mesh}\n"


def plans(
    root: Path, hosts: str = HOSTS, all_vars: str = ALL, topology: str = TOPOLOGY
) -> dict[str, NodePlan]:
    root.mkdir(parents=True, exist_ok=True)
    (root / "hosts.yaml").write_text(hosts)
    (root / "group_vars").mkdir(exist_ok=True)
    (root / "group_vars" / "all.yaml").write_text(all_vars)
    (root / "topology.yaml").write_text(textwrap.dedent(topology))
    return build_plans(load_inventory(root), master_secret=SECRET, revision=root.name)


def host(diff: FleetDiff, name: str) -> HostDiff:
    (found,) = [h for h in diff.hosts if h.host == name]
    return found


def change(h: HostDiff, section: str, name: str) -> ChangeLine:
    (found,) = [c for c in h.changes if c.section == section and c.name == name]
    return found


def test_same_inventory_at_two_revisions_is_no_change(tmp_path: Path) -> None:
    old, new = plans(tmp_path / "r1"), plans(tmp_path / "r2")
    # Different source revisions make different hashes, but no data-plane change.
    assert old["a1"].source_revision != new["a1"].source_revision
    diff = diff_plans(old, new)
    assert diff.hosts == [] and not diff.changed
    assert diff.unchanged == ["a1", "a2", "a3"]


def test_proposals_and_psk_rotation_by_reference(tmp_path: Path) -> None:
    old = plans(tmp_path / "r1")
    new = plans(
        tmp_path / "r2",
        all_vars="ike_proposals: [aes128-sha256-modp2048]\nesp_proposals: [aes128gcm16]\n"
        "psk_epoch: 2\n",
    )
    diff = diff_plans(old, new)
    assert [h.host for h in diff.hosts] == ["a1", "a2", "a3"]
    line = change(host(diff, "a1"), "peer", "a2")
    assert line.kind == "changed"
    assert line.details == (
        "auth psk:a1+a2/epoch-1 -> epoch-2",
        "ike aes256gcm16-prfsha384-x25519 -> aes128-sha256-modp2048",
        "esp aes256gcm16 -> aes128gcm16",
    )
    text = str(diff.to_json())
    for plan_set in (old, new):
        for peer in plan_set["a1"].peers:
            assert peer.auth.psk.hex() not in text
            assert repr(peer.auth.psk) not in text


def test_added_and_removed_host_and_peers(tmp_path: Path) -> None:
    old = plans(tmp_path / "r1")
    hosts = HOSTS.replace(
        "        a3: {address: 10.99.0.3, subnets: [10.1.3.0/24]}\n",
        "        a4: {address: 10.99.0.4, subnets: [10.1.4.0/24]}\n",
    )
    new = plans(tmp_path / "r2", hosts=hosts)
    diff = diff_plans(old, new)
    assert host(diff, "a3").kind is ChangeKind.REMOVED
    added = host(diff, "a4")
    assert added.kind is ChangeKind.ADDED
    assert change(added, "peer", "a1").kind == "added"
    a1 = host(diff, "a1")
    assert change(a1, "peer", "a3").kind == "removed"
    assert change(a1, "peer", "a4").details[0] == "address 10.99.0.4"
    assert change(a1, "spd", "a3").kind == "removed"
    assert change(a1, "spd", "a4").kind == "added"
    assert "10.1.1.0/24[any] -> 10.1.4.0/24[any]" in change(a1, "spd", "a4").details[0]


def test_spd_policy_added_changed_and_reordered(tmp_path: Path) -> None:
    web = (
        "  - {name: web, action: discard, local: 10.1.1.0/24, protocol: tcp, "
        "local_ports: 80, hosts: a1}\n"
    )
    ssh = "  - {name: ssh, action: bypass, remote_ports: 22, protocol: tcp, hosts: a1}\n"
    old = plans(tmp_path / "r1")
    mid = plans(tmp_path / "r2", topology=TOPOLOGY + "policies:\n" + web + ssh)
    a1 = host(diff_plans(old, mid), "a1")
    assert change(a1, "spd", "policy:web").kind == "added"
    assert "discard 10.1.1.0/24[80]" in change(a1, "spd", "policy:web").details[0]
    assert "a2" not in {h.host for h in diff_plans(old, mid).hosts}

    changed = plans(
        tmp_path / "r3", topology=TOPOLOGY + "policies:\n" + web.replace("80", "443") + ssh
    )
    line = change(host(diff_plans(mid, changed), "a1"), "spd", "policy:web")
    assert line.kind == "changed"
    assert "[80]" in line.details[0] and "[443]" in line.details[0]

    reordered = plans(tmp_path / "r4", topology=TOPOLOGY + "policies:\n" + ssh + web)
    order = change(host(diff_plans(mid, reordered), "a1"), "spd-order", "a1")
    assert order.details == ("policy:ssh > policy:ssh/v6 > policy:web > a2 > a3",)


def test_peer_field_changes_are_named(tmp_path: Path) -> None:
    old = plans(tmp_path / "r1")
    new = plans(
        tmp_path / "r2", all_vars=ALL + "mode: transport\ndpd_delay: 10\nchild_lifetime: 1800\n"
    )
    details = change(host(diff_plans(old, new), "a2"), "peer", "a3").details
    assert "mode tunnel -> transport" in details
    assert "dpd.delay_seconds 30 -> 10" in details
    assert "lifetimes.child_rekey_seconds 3600 -> 1800" in details


def test_fragment_size_shows_the_default_it_stands_for(tmp_path: Path) -> None:
    """A plan stores RFC 7383's default datagram size (1280) as 0; the diff says 1280."""
    old = plans(tmp_path / "r1")
    new = plans(tmp_path / "r2", all_vars=ALL + "ike_fragment_size: 1400\n")
    details = change(host(diff_plans(old, new), "a2"), "peer", "a3").details
    assert "ike_fragment_size 1280 -> 1400" in details
    back = change(host(diff_plans(new, old), "a2"), "peer", "a3").details
    assert "ike_fragment_size 1400 -> 1280" in back


def test_address_change_shows_on_both_ends(tmp_path: Path) -> None:
    old = plans(tmp_path / "r1")
    new = plans(tmp_path / "r2", hosts=HOSTS.replace("10.99.0.3", "10.99.0.33"))
    diff = diff_plans(old, new)
    assert "addresses" in {c.section for c in host(diff, "a3").changes}
    assert (
        "remote_addresses 10.99.0.3 -> 10.99.0.33" in change(host(diff, "a1"), "peer", "a3").details
    )


def test_staged_key_steps_show_accepted_keys_by_reference(tmp_path: Path) -> None:
    old = plans(tmp_path / "r1")
    new = plans(tmp_path / "r2", all_vars=ALL + "psk_epoch: 2\n")
    accept, use, final = (s.plans for s in stage(old, new, ["a1", "a2", "a3"]).steps)
    first = change(host(diff_plans(old, accept), "a1"), "peer", "a2")
    assert first.details == ("auth psk:a1+a2/epoch-1 also accepts psk:a1+a2/epoch-2",)
    second = change(host(diff_plans(accept, use), "a1"), "peer", "a2")
    assert second.details == (
        "auth psk:a1+a2/epoch-1 -> epoch-2; auth psk:a1+a2/epoch-2 also accepts psk:a1+a2/epoch-1",
    )
    last = change(host(diff_plans(use, final), "a1"), "peer", "a2")
    assert last.details == ("auth psk:a1+a2/epoch-2 accepts no other key",)
    shown = repr([diff_plans(old, accept).to_json(), diff_plans(accept, use).to_json()])
    for plan in (old, new):
        for p in plan["a1"].peers:
            assert p.auth.psk.hex() not in shown and repr(p.auth.psk) not in shown
