"""An external strongSwan peer in the lab: `lab up` on a copy of inventories/external-peer
starts charon (kernel-libipsec) in the partner's namespace; both managed gateways bring
their tunnels to it up, pings cross between their sites and the partner's both ways,
and `lab down` leaves no namespace and no charon behind."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

pytestmark = [pytest.mark.netns, pytest.mark.interop]

CLI = [sys.executable, "-m", "vpnfleet.controller.cli"]
INVENTORY = Path(__file__).resolve().parents[2] / "inventories" / "external-peer"
CHARON = Path("/usr/lib/ipsec/charon")
MANAGED = {"gw1": "10.3.1.1", "gw2": "10.3.2.1"}
PARTNER_SITE = "10.30.0.1"


def vpnfleet(state: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, "--state", str(state), *args],
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, "COLUMNS": "200"},
    )


def charons_of(lab_dir: Path) -> list[int]:
    """Live charon processes whose strongswan.conf lies in ``lab_dir`` (zombies are dead)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            environ = Path(f"/proc/{entry}/environ").read_bytes()
            state = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        ours = f"STRONGSWAN_CONF={lab_dir}".encode() in environ
        if b"charon" in cmdline.split(b"\0")[0] and state != "Z" and ours:
            found.append(int(entry))
    return found


def namespaces(prefix: str) -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return [line.split()[0] for line in out.splitlines() if line.startswith(prefix)]


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[tuple[Path, str, Path]]:
    if os.geteuid() != 0:
        pytest.skip("needs root to create network namespaces")
    if not CHARON.exists() or shutil.which("swanctl") is None:
        pytest.skip("strongSwan charon/swanctl is not installed")
    inventory = tmp_path / "inventory"
    shutil.copytree(INVENTORY, inventory)
    state = tmp_path / "state"
    name = "x" + secrets.token_hex(4)
    lab_dir = state / "labs" / name
    try:
        yield state, name, inventory
    finally:
        res = vpnfleet(state, "lab", "down", "--name", name)
        assert res.returncode == 0, res.stderr
        assert namespaces(f"vf-{name}-") == []
        assert charons_of(lab_dir) == []
        assert not lab_dir.exists()


def test_external_strongswan_peer(lab: tuple[Path, str, Path]) -> None:
    state, name, inventory = lab
    res = vpnfleet(state, "lab", "up", "-i", str(inventory), "--name", name, "-o", "json")
    assert res.returncode == 0, f"lab up failed: {res.stdout[-3000:]} {res.stderr[-3000:]}"
    up: dict[str, Any] = json.loads(res.stdout)
    assert up["converged"] and up["data_plane"]
    assert up["layout"]["externals"]["partner"]["netns"] == f"vf-{name}-partner"
    lab_dir = state / "labs" / name
    assert len(charons_of(lab_dir)) == 1
    # The reachability matrix covers the partner's site, both ways, and all pass.
    partner_pairs = [p for p in up["reachability"] if "partner" in (p["src_host"], p["dst_host"])]
    assert len(partner_pairs) == 2 * len(MANAGED)
    assert {p["result"] for p in partner_pairs} == {"pass"}, partner_pairs

    res = vpnfleet(state, "lab", "status", "--name", name, "-o", "json")
    assert res.returncode == 0, res.stderr
    status: dict[str, Any] = json.loads(res.stdout)
    # Our side: each gateway's SA with the partner is up in UDP 4500, forced: kernel-
    # libipsec fakes its NAT-D hash (RFC 7296 section 2.23) while its datagrams come from
    # the address the plan knows it by, so no NAT is reported detected.
    for host in status["fleet"]["hosts"]:
        sas = {sa["peer"]: sa for sa in host["observed"]["ike_sas"]}
        assert sas["partner"]["state"] == "established", sas["partner"]
        assert sas["partner"]["nat"] == "forced", sas["partner"]
        assert sas["partner"]["nat_detected"] is False
    # charon's side: one established IKE SA with an installed child per gateway.
    charon = status["externals"]["partner"]
    assert charon["alive"] is True
    by_name = {sa["name"]: sa for sa in charon["sas"]}
    assert set(by_name) == set(MANAGED)
    for sa in by_name.values():
        assert sa["state"] == "ESTABLISHED"
        assert [c["state"] for c in sa["children"]] == ["INSTALLED"]

    # Pings of our own, not only the matrix: managed site -> partner site and back.
    for host, site in MANAGED.items():
        there = vpnfleet(
            state, "lab", "exec", "--name", name, host, "--",
            "ping", "-n", "-c2", "-W2", "-I", site, PARTNER_SITE,
        )  # fmt: skip
        assert there.returncode == 0, there.stdout + there.stderr
        back = vpnfleet(
            state, "lab", "exec", "--name", name, "partner", "--",
            "ping", "-n", "-c2", "-W2", "-I", PARTNER_SITE, site,
        )  # fmt: skip
        assert back.returncode == 0, back.stdout + back.stderr
    # The pings crossed the tunnels: the gateways' child SAs counted them.
    res = vpnfleet(state, "lab", "status", "--name", name, "-o", "json")
    status = json.loads(res.stdout)
    for host in status["fleet"]["hosts"]:
        sa = next(s for s in host["observed"]["ike_sas"] if s["peer"] == "partner")
        child = sa["children"][0]
        assert child["packets_in"] >= 2 and child["packets_out"] >= 2, child

    # Each lab agent serves Prometheus metrics on its namespace's loopback: the engine's
    # view of the same tunnel, read at scrape time.
    scrape = (
        "import urllib.request; "
        "print(urllib.request.urlopen('http://127.0.0.1:9477/metrics', timeout=5).read().decode())"
    )
    res = vpnfleet(state, "lab", "exec", "--name", name, "gw1", "--", sys.executable, "-c", scrape)
    assert res.returncode == 0, res.stderr
    got = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(res.stdout)
        for s in family.samples
    }
    assert got[("vpnfleet_ike_sa_state", (("peer", "partner"), ("state", "established")))] == 1
    key = (("child", "partner"), ("direction", "in"), ("peer", "partner"))
    assert got[("vpnfleet_child_sa_packets_total", key)] >= 2
    assert got[("vpnfleet_agent_peers_up", ())] == 2
    assert got[("vpnfleet_dataplane_packets_total", (("event", "tun_rx"),))] >= 2


def test_external_peer_with_address_any_is_answered(lab: tuple[Path, str, Path]) -> None:
    """charon plays a partner declared `address: any` (the lab puts it at a free underlay
    address no plan names): it starts the tunnel to gw1, which answers it from that
    source and knows it by its identity; gw2 only answers too, and is started by charon
    as well."""
    state, name, inventory = lab
    topology = inventory / "topology.yaml"
    text = topology.read_text()
    assert "    address: 10.99.2.100\n" in text
    topology.write_text(text.replace("    address: 10.99.2.100\n", "    address: any\n"))
    res = vpnfleet(state, "lab", "up", "-i", str(inventory), "--name", name, "-o", "json")
    assert res.returncode == 0, f"lab up failed: {res.stdout[-3000:]} {res.stderr[-3000:]}"
    up: dict[str, Any] = json.loads(res.stdout)
    assert up["converged"] and up["data_plane"]
    address = up["layout"]["externals"]["partner"]["address"]
    assert address == "10.99.2.254"  # the highest free one of the underlay
    partner_pairs = [p for p in up["reachability"] if "partner" in (p["src_host"], p["dst_host"])]
    assert len(partner_pairs) == 2 * len(MANAGED)
    assert {p["result"] for p in partner_pairs} == {"pass"}, partner_pairs

    res = vpnfleet(state, "lab", "status", "--name", name, "-o", "json")
    assert res.returncode == 0, res.stderr
    status: dict[str, Any] = json.loads(res.stdout)
    for host in status["fleet"]["hosts"]:
        sas = {sa["peer"]: sa for sa in host["observed"]["ike_sas"]}
        assert sas["partner"]["state"] == "established", sas["partner"]
        assert sas["partner"]["initiator"] is False
        assert sas["partner"]["remote_address"].startswith(f"{address}:")
