"""A lab belongs to the state directory that made it. Two state directories (two
checkouts, a test run beside a demo) each run a lab of the same name on the same
inventory at once: each gets namespaces of its own key and a management subnet of its
own, where its controller state reaches its agents. `lab down` and `lab exec` of a
state directory without that lab touch neither (refused, naming both owners), `--force`
removes a lab or leftovers anyway, and the owner's `lab status` says when its namespaces
were taken away. And `lab up --keylog`: every agent's key log holds the keys of the SAs
it runs."""

from __future__ import annotations

import ipaddress
import json
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.support.lab import (
    LabRun,
    fleet_status,
    lab_up,
    netns_with_prefix,
    new_lab,
    removed_after,
    require_root,
)
from tests.support.tshark_lab import _wait_for, esp_verdicts
from vpnfleet.agent.engine.keylog import tshark_options

pytestmark = pytest.mark.netns

PINGS = 3
A1_SITE, A2_SITE = "10.1.1.1", "10.1.2.1"


def _site_ping(lab: LabRun) -> int:
    return lab.exec("a1", "ping", "-n", "-c1", "-W3", "-I", A1_SITE, A2_SITE).returncode


def _layout(lab: LabRun) -> dict[str, Any]:
    layout: dict[str, Any] = json.loads((lab.lab_dir / "lab.json").read_text())["layout"]
    return layout


def test_two_state_directories_run_a_lab_of_one_name_and_inventory_at_once(
    tmp_path: Path,
) -> None:
    require_root()
    mine = new_lab(tmp_path / "a", "lab")
    beside = LabRun(tmp_path / "b" / "state", mine.name, mine.inventory)
    third = LabRun(tmp_path / "c" / "state", mine.name, mine.inventory)
    with removed_after(mine):
        lab_up(mine)
        spaces = netns_with_prefix(f"vf-{mine.name}-")
        assert len(spaces) == 5
        with removed_after(beside):
            up = beside.up("-o", "json", "--timeout", "30")
            assert up.returncode == 0, up.stderr[-2000:]
            assert f"another lab named {mine.name!r} runs on this machine" in up.stderr
            ours, theirs = _layout(mine), _layout(beside)
            assert theirs["key"] == f"{mine.name}_2" != ours["key"] == mine.name
            assert len(netns_with_prefix(f"vf-{mine.name}_2-")) == 5
            assert netns_with_prefix(f"vf-{mine.name}-") == spaces
            # The same underlay in both; the management subnets apart, and the
            # underlay routed nowhere in this machine's own namespace.
            assert ours["underlay"] == theirs["underlay"] == "10.99.0.0/24"
            nets = [ipaddress.ip_network(x["mgmt_network"]) for x in (ours, theirs)]
            assert not nets[0].overlaps(nets[1])
            routes = subprocess.run(["ip", "-4", "route"], capture_output=True, text=True)
            assert "10.99.0." not in routes.stdout
            for lab, layout in ((mine, ours), (beside, theirs)):
                assert lab.status()["health"] == "present"
                assert _site_ping(lab) == 0
                # Each controller state reaches its own lab's agents, and only them.
                status = fleet_status(lab)
                assert [h["state"] for h in status["hosts"]] == ["in sync"] * 4
                endpoints = {h["host"]: h["endpoint"] for h in status["hosts"]}
                assert endpoints == {n: h["endpoint"] for n, h in layout["hosts"].items()}
                assert all(
                    ipaddress.ip_address(e.rsplit(":", 1)[0])
                    in ipaddress.ip_network(layout["mgmt_network"])
                    for e in endpoints.values()
                )

            # A third state directory has no such lab: it touches neither, names both.
            down = third.down()
            assert down.returncode == 1, down.stdout
            for lab in (mine, beside):
                assert f"vpnfleet --state {lab.state.absolute()} lab down --name {lab.name}" in (
                    down.stderr
                )
            assert "--force" in down.stderr
            exec_ = third.exec("a1", "true")
            assert exec_.returncode == 1 and "no lab named" in exec_.stderr
            assert not (third.state / "labs").exists()
        # Taking one down leaves the other running.
        assert netns_with_prefix(f"vf-{mine.name}_2-") == []
        assert netns_with_prefix(f"vf-{mine.name}-") == spaces
        assert mine.status()["health"] == "present" and _site_ping(mine) == 0

        # --force removes it from the other state directory all the same...
        forced = third.down("--force")
        assert forced.returncode == 0, forced.stderr
        assert f"(it belonged to {mine.state.absolute()})" in forced.stdout
        assert netns_with_prefix(f"vf-{mine.name}-") == []
        assert mine.lab_dir.is_dir()

        # ...and the owner's status says its lab is gone, not "up, 0/5 present".
        gone = mine.status(exit_code=4)
        assert gone["health"] == "gone"
        assert "every namespace of this lab is gone" in gone["problem"]
        assert gone["fleet"] is None
        text = mine.vpnfleet("lab", "status", "--name", mine.name)
        assert text.returncode == 4
        assert "GONE" in text.stdout and "0/5 present" in text.stdout
        assert f"vpnfleet lab down --name {mine.name}` clears its record" in text.stdout

        # Once another lab holds the freed namespace names, the first one's record is
        # stale: status says whose they are, exec leaves that lab alone, and down clears
        # the record only.
        with removed_after(beside):
            assert lab_up(beside)["layout"]["key"] == mine.name
            taken = mine.status(exit_code=4)
            assert taken["health"] == "taken"
            assert f"now belong to state directory {beside.state.absolute()}" in (taken["problem"])
            assert not any(taken["namespaces"].values())
            refused = mine.exec("a1", "true")
            assert refused.returncode == 1
            assert f"belongs to state directory {beside.state.absolute()}" in refused.stderr
            stale = mine.down()
            assert stale.returncode == 0, stale.stderr
            assert "left alone" in stale.stderr
            assert not mine.lab_dir.exists()
            assert beside.status()["health"] == "present"
            assert _site_ping(beside) == 0


def test_leftovers_nobody_owns_are_removed_only_with_force(tmp_path: Path) -> None:
    require_root()
    lab = new_lab(tmp_path, "lab")
    stray = f"vf-{lab.name}-a1"
    subprocess.run(["ip", "netns", "add", stray], check=True)
    try:
        res = lab.down()
        assert res.returncode == 1, res.stdout
        assert f"{stray} exist" in res.stderr and "--force" in res.stderr
        assert netns_with_prefix(f"vf-{lab.name}-") == [stray]
        # lab up names them too instead of building beside them.
        up = lab.up()
        assert up.returncode == 1 and "--force" in up.stderr, up.stderr
        forced = lab.down("--force")
        assert forced.returncode == 0, forced.stderr
        assert "removed: 1 namespace, 0 links, 0 processes" in forced.stdout
    finally:
        subprocess.run(["ip", "netns", "delete", stray], capture_output=True)
    lab.assert_gone()


def test_up_keylog_writes_every_agent_s_sa_keys(tmp_path: Path) -> None:
    require_root()
    lab = new_lab(tmp_path, "lab")
    with removed_after(lab):
        result = lab_up(lab, "--keylog")
        keylogs = {host: Path(path) for host, path in result["keylogs"].items()}
        assert sorted(keylogs) == ["a1", "a2", "a3", "a4"]
        status = fleet_status(lab)
        for h in status["hosts"]:
            path = keylogs[h["host"]]
            assert path == lab.lab_dir.absolute() / "agents" / h["host"] / "keys.log"
            assert stat.S_IMODE(path.stat().st_mode) == 0o600
            records = path.read_text().splitlines()
            esp = [ln for ln in records if ln.startswith("esp_sa:")]
            children = [
                c
                for sa in h["observed"]["ike_sas"]
                for c in sa["children"]
                if c["state"] == "installed"
            ]
            assert len(children) == 3, h
            for child in children:
                for spi in (child["spi_in"], child["spi_out"]):
                    assert any(f'"0x{spi}"' in ln for ln in esp), (h["host"], spi)  # hex in JSON
            assert any(ln.startswith("ikev2_decryption_table:") for ln in records)

        # Wireshark's own code opens a1's tunnel to a2 with a1's key log alone.
        pcap = lab.lab_dir / "a1.pcapng"
        a2 = result["layout"]["hosts"]["a2"]["address"]
        # ESP only (raw, or UDP-encapsulated without the non-ESP marker of IKE).
        capture_filter = f"host {a2} and (ip proto 50 or (udp port 4500 and udp[8:4] != 0))"
        dumpcap = subprocess.Popen(
            ["ip", "netns", "exec", f"vf-{lab.name}-a1", "dumpcap", "-i", "eth0", "-s", "0",
             "-f", capture_filter, "-c", str(2 * PINGS), "-w", str(pcap)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        try:
            assert dumpcap.stderr is not None
            _wait_for(dumpcap, dumpcap.stderr.fileno(), b"File: ")
            ping = lab.exec("a1", "ping", "-n", f"-c{PINGS}", "-i0.2", "-I", A1_SITE, A2_SITE)
            assert ping.returncode == 0, ping.stdout
            assert dumpcap.wait(10) == 0
        finally:
            if dumpcap.poll() is None:
                dumpcap.kill()
                dumpcap.wait()
            if dumpcap.stderr is not None:
                dumpcap.stderr.close()
        assert [v for v in esp_verdicts(pcap, []) if v.icv_good is not None] == []
        esp = esp_verdicts(pcap, tshark_options(keylogs["a1"].read_text()))
        assert len(esp) == 2 * PINGS
        assert all(v.icv_good is True and not v.malformed for v in esp), esp
        assert sum(v.inner_addresses == (A1_SITE, A2_SITE) for v in esp) == PINGS
        assert sum(v.inner_addresses == (A2_SITE, A1_SITE) for v in esp) == PINGS
