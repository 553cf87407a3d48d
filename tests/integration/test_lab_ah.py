"""AH (RFC 4302, IP protocol 51) between real agents: a two-host lab from an inventory
whose only child proposal is ``ah_proposals: [sha256]``, in tunnel mode and in transport
mode. ``lab up`` converges and its pings cross; status shows the AH child installed;
then ping and an iperf3 TCP transfer cross while tshark captures a1's underlay interface:
every IP packet on it but IKE and the lab's management traffic is AH (protocol 51,
dissected with SPI and sequence number): no ESP (50), no ESP-in-UDP (4500), no
cleartext; and the child SA counters moved. Each lab is
removed at the end, also on failure, and checked gone. Run under
``flock /tmp/vpnfleet-lab.lock``."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.support.lab import (
    LabRun,
    fleet_status,
    ike_sas,
    lab_up,
    new_lab,
    removed_after,
    require_root,
)

pytestmark = pytest.mark.netns

HOSTS = """\
all:
  children:
    mesh:
      hosts:
        a1:
          address: 10.99.0.11
          subnets: [10.1.1.0/24]
        a2:
          address: 10.99.0.12
          subnets: [10.1.2.0/24]
"""

UNDERLAY = ("10.99.0.11", "10.99.0.12")

TOPOLOGY = """\
meshes:
  - name: lab
    group: mesh
"""

GROUP_VARS = """\
ike_proposals:
  - aes256gcm16-prfsha384-x25519
ah_proposals:
  - sha256
auth: psk
mode: {mode}
start_action: start
"""


def ah_lab(root: Path, mode: str) -> LabRun:
    lab = new_lab(root, "lab")
    (lab.inventory / "hosts.yaml").write_text(HOSTS)
    (lab.inventory / "group_vars" / "all.yaml").write_text(GROUP_VARS.format(mode=mode))
    (lab.inventory / "topology.yaml").write_text(TOPOLOGY)
    return lab


def children(lab: LabRun) -> list[dict[str, Any]]:
    return [c for _, sa in ike_sas(fleet_status(lab)) for c in sa["children"]]


class Capture:
    """tshark on a lab host's underlay interface (inside its namespace): every IP packet
    but IKE (UDP 500) and the controller's management traffic (198.18.0.0/16), so
    cleartext leaking past the tunnel would show too."""

    def __init__(self, netns: str, pcap: Path) -> None:
        self.pcap = pcap
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", netns,
             "tshark", "-i", "eth0", "-w", str(pcap), "-s", "256", "-q",
             "-f", "ip and not udp port 500 and not net 198.18.0.0/16"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        assert self.proc.stderr is not None
        deadline = time.monotonic() + 20
        seen = ""
        while "Capturing on" not in seen:
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.stop()
                raise AssertionError(f"tshark did not start: {seen}")
            seen += self.proc.stderr.readline()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def fields(self) -> list[list[str]]:
        out = subprocess.run(
            ["tshark", "-r", str(self.pcap), "-T", "fields",
             "-E", "separator=,", "-E", "occurrence=f",
             "-e", "ip.proto", "-e", "ah.spi", "-e", "ah.sequence", "-e", "ip.src"],
            capture_output=True, text=True, timeout=60, check=True,
        )  # fmt: skip
        return [line.split(",") for line in out.stdout.splitlines() if line]


@pytest.mark.parametrize("mode", ["tunnel", "transport"])
def test_ah_between_agents_and_on_the_wire(tmp_path: Path, mode: str) -> None:
    require_root()
    if shutil.which("tshark") is None or shutil.which("iperf3") is None:
        pytest.fail("tshark and iperf3 are needed (scripts/setup --test installs them)")
    lab = ah_lab(tmp_path, mode)
    with removed_after(lab):
        up = lab_up(lab)
        pairs = [p for p in up["reachability"] if p["expect"] == "protect"]
        if mode == "tunnel":
            # lab up's own probes: site to site, both ways, through the tunnel.
            assert len(pairs) == 2 and {p["result"] for p in pairs} == {"pass"}, pairs
            there = next(p for p in pairs if p["src_host"] == "a1")
            src, dst = str(there["src"]), str(there["dst"])
        else:
            # Transport mode protects the hosts' own addresses (the lab probes sites).
            assert pairs == [], pairs
            src, dst = UNDERLAY
        before = children(lab)
        assert len(before) == 2
        for child in before:
            assert child["state"] == "installed" and child["proposal"] == "AH:sha256", child
            assert child["mode"].lower() == mode, child

        capture = Capture(up["layout"]["hosts"]["a1"]["netns"], tmp_path / "ah.pcap")
        try:
            ping = lab.exec("a1", "ping", "-c", "5", "-i", "0.2", "-W", "2", "-I", src, dst)
            assert ping.returncode == 0 and " 0% packet loss" in ping.stdout, ping.stdout
            server = lab.exec("a2", "iperf3", "-s", "-1", "-D", "-B", dst, "-p", "5299")
            assert server.returncode == 0, server.stderr
            time.sleep(0.5)
            client = lab.exec("a1", "iperf3", "-c", dst, "-B", src, "-p", "5299", "-t", "2", "-J")
            assert client.returncode == 0, client.stdout[-2000:] + client.stderr
            assert '"bytes":' in client.stdout
        finally:
            capture.stop()
        rows = capture.fields()
        protocols = [row[0] for row in rows]
        assert protocols.count("51") >= 20, protocols[:20]
        # Nothing else: no ESP (50), no ESP-in-UDP (17), no cleartext ICMP or TCP.
        assert set(protocols) == {"51"}, sorted(set(protocols))
        # tshark dissects AH's header: its SPI and sequence number on every packet.
        spis = {row[1] for row in rows}
        assert "" not in spis and len(spis) == 2, spis
        assert all(row[2].isdigit() and int(row[2]) >= 1 for row in rows)
        assert {row[3] for row in rows} == set(UNDERLAY)
        after = {c["spi_in"]: c for c in children(lab)}
        for child in before:
            now = after[child["spi_in"]]
            assert now["packets_in"] > child["packets_in"], now
            assert now["integrity_failures"] == 0 and now["replay_drops"] == 0, now
    assert os.path.exists(tmp_path / "ah.pcap")
