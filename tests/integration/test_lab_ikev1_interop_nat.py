"""IKEv1 NAT traversal (RFC 3947 for IKE, RFC 3948 for ESP) through real agents: the
lab of inventories/nat planned with ``ike_version: 1`` puts n3 behind an nftables
masquerading router. n3 starts its Main modes; NAT-D shows the translation, IKE moves to
UDP 4500 with the non-ESP marker and ESP travels in UDP 4500 both ways, pings cross, and
both ends of each tunnel report the NAT. Then the same with strongSwan's charon
(``version = 1``) on the far end: gw1 of inventories/external-peer behind the router,
and charon's own view says the remote end is behind a NAT and the child SA is
UDP-encapsulated. Each lab is removed in a finally (also on failure) and checked gone.
Run under ``flock /tmp/vpnfleet-lab.lock``."""

from __future__ import annotations

import secrets
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.support.charon import skip_reason
from tests.support.lab import (
    INVENTORIES,
    LabRun,
    fleet_status,
    ike_sas,
    lab_up,
    removed_after,
    require_root,
)
from tests.support.lab_ikev1 import IKE_V1_PROPOSAL, ikev1_inventory
from tests.support.pings import tunnel_pairs
from vpnfleet.controller.lab import external

pytestmark = pytest.mark.netns

PINGS = 5


def nft(netns: str, *args: str) -> str:
    res = subprocess.run(
        ["ip", "netns", "exec", netns, "nft", *args], capture_output=True, text=True, timeout=10
    )
    assert res.returncode == 0, f"nft {' '.join(args)} in {netns}: {res.stderr}"
    return res.stdout


def count_arrivals(netns: str) -> None:
    """Counters in ``netns`` for what arrives from now on: IKE on 500 and on 4500
    (non-ESP marker: four zero octets, RFC 3948 section 2.2), ESP in UDP 4500, raw ESP."""
    nft(netns, "add", "table", "inet", "vft")
    nft(netns, "add", "chain", "inet", "vft", "in", "{type filter hook input priority 0;}")
    for match, name in (
        (["udp", "dport", "500"], "ike500"),
        (["udp", "dport", "4500", "@th,64,32", "0"], "ike4500"),
        (["udp", "dport", "4500", "@th,64,32", "!=", "0"], "esp4500"),
        (["meta", "l4proto", "esp"], "esp"),
    ):
        nft(netns, "add", "rule", "inet", "vft", "in", *match, "counter", "comment", f'"{name}"')


def counters(netns: str) -> dict[str, int]:
    out = {}
    for line in nft(netns, "list", "table", "inet", "vft").splitlines():
        if "counter packets" in line and 'comment "' in line:
            packets = int(line.split("counter packets ", 1)[1].split()[0])
            out[line.split('comment "', 1)[1].split('"', 1)[0]] = packets
    return out


def peer_sa(status: dict[str, Any], host: str, peer: str) -> dict[str, Any]:
    [sa] = [sa for h, sa in ike_sas(status) if h == host and sa["peer"] == peer]
    return sa


def test_an_ikev1_agent_behind_a_masquerading_router(tmp_path: Path) -> None:
    require_root()
    copy = ikev1_inventory(INVENTORIES / "nat", tmp_path / "inventory")
    lab = LabRun(tmp_path / "state", "t" + secrets.token_hex(4), copy)
    with removed_after(lab):
        up = lab_up(lab)
        hosts = up["layout"]["hosts"]
        n3 = hosts["n3"]["netns"]
        # The router really is there: n3's own address is private, not its inventory one.
        assert hosts["n3"]["local_address"] != hosts["n3"]["address"], hosts["n3"]
        count_arrivals(n3)
        for host in ("n1", "n2"):
            count_arrivals(hosts[host]["netns"])
        paths = tunnel_pairs(up["reachability"], hosts, involving="n3")
        assert {(p.src_host, p.dst_host) for p in paths} == {("n1", "n3"), ("n2", "n3")}
        for p in paths:
            ping = lab.exec(
                p.src_host, "ping", "-n", f"-c{PINGS}", "-i", "0.2", "-W2", "-I", p.src, p.dst
            )
            assert ping.returncode == 0, (p, ping.stdout)
        status = fleet_status(lab)
        for peer in ("n1", "n2"):
            mine, theirs = peer_sa(status, "n3", peer), peer_sa(status, peer, "n3")
            for sa in (mine, theirs):
                assert sa["state"] == "established" and sa["ike_version"] == "V1", sa
                assert sa["proposal"] == IKE_V1_PROPOSAL, sa
                # NAT-D (RFC 3947 section 3.2) found the translation, on both ends.
                assert sa["nat_detected"] is True and sa["nat"] == "detected", sa
                [child] = sa["children"]
                assert child["state"] == "installed", child
                assert child["packets_in"] >= PINGS and child["packets_out"] >= PINGS, child
            # n3 talks to its peers' port 4500; they see the router's public address.
            assert mine["initiator"] is True, mine
            assert mine["remote_address"] == f"{hosts[peer]['address']}:4500", mine
            assert mine["local_address"] != hosts["n3"]["address"], mine
            assert theirs["remote_address"].startswith(f"{hosts['n3']['address']}:"), theirs
        # ESP in UDP 4500 both ways, none raw; no IKE on port 500 once the NAT is found.
        seen = {h: counters(hosts[h]["netns"]) for h in ("n1", "n2", "n3")}
        for got in seen.values():
            assert got["esp"] == 0 and got["ike500"] == 0, seen
        assert seen["n3"]["esp4500"] >= 2 * PINGS, seen
        assert seen["n1"]["esp4500"] >= PINGS and seen["n2"]["esp4500"] >= PINGS, seen
        print(f"arrivals after lab up: {seen}")


def charon_raw_sas(directory: Path) -> dict[str, str]:
    """IKE SA name -> its ``swanctl --list-sas --raw`` text, for the ESTABLISHED ones."""
    res = external.run_swanctl(directory, "--list-sas", "--raw")
    assert res.returncode == 0, res.stdout + res.stderr
    out = {}
    for line in res.stdout.splitlines():
        for sa in line.split("list-sa event {", 1)[1:]:
            name = sa.split(None, 1)[0]
            if "state=ESTABLISHED" in sa:
                out[name] = sa
    return out


@pytest.mark.interop
@pytest.mark.skipif(skip_reason() is not None, reason=skip_reason() or "")
def test_an_ikev1_agent_behind_a_masquerading_router_with_charon(tmp_path: Path) -> None:
    require_root()
    copy = ikev1_inventory(INVENTORIES / "external-peer", tmp_path / "inventory")
    gw1_vars = copy / "host_vars" / "gw1.yaml"
    gw1_vars.write_text(gw1_vars.read_text() + "nat: true\n")
    lab = LabRun(tmp_path / "state", "t" + secrets.token_hex(4), copy)
    with removed_after(lab):
        up = lab_up(lab)
        hosts = up["layout"]["hosts"]
        assert hosts["gw1"]["local_address"] != hosts["gw1"]["address"], hosts["gw1"]
        partner = up["layout"]["externals"]["partner"]
        count_arrivals(hosts["gw1"]["netns"])
        site, partner_site = hosts["gw1"]["sites"][0], partner["sites"][0]
        ping = lab.exec("gw1", "ping", "-n", f"-c{PINGS}", "-i", "0.2", "-W2", "-I", site,
                        partner_site)  # fmt: skip
        assert ping.returncode == 0, ping.stdout
        sa = peer_sa(fleet_status(lab), "gw1", "partner")
        assert sa["state"] == "established" and sa["ike_version"] == "V1", sa
        assert sa["nat_detected"] is True and sa["nat"] == "detected", sa
        assert sa["remote_address"] == f"{partner['address']}:4500", sa
        assert sa["local_address"] != hosts["gw1"]["address"], sa
        [child] = sa["children"]
        assert child["packets_in"] >= PINGS and child["packets_out"] >= PINGS, child
        got = counters(hosts["gw1"]["netns"])
        assert got["esp4500"] >= PINGS and got["esp"] == 0 and got["ike500"] == 0, got
        # charon's view (it fakes a NAT of its own for kernel-libipsec, nat-local): gw1
        # is behind a real one, gw2 is not; ESP in UDP for both.
        raw = charon_raw_sas(lab.lab_dir / "external" / "partner")
        assert sorted(raw) == ["gw1", "gw2"], raw
        assert "nat-remote=yes" in raw["gw1"] and "nat-remote=yes" not in raw["gw2"], raw
        assert f"remote-host={hosts['gw1']['address']}" in raw["gw1"], raw["gw1"]
        for text in raw.values():
            assert "version=1" in text and "encap=yes" in text, text
