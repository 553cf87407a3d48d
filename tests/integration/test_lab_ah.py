"""AH (RFC 4302, IP protocol 51) between real agents: a two-host lab from an inventory
whose only child proposal is ``ah_proposals: [sha256]``, in tunnel mode and in transport
mode over an IPv4 underlay, and in tunnel mode over an IPv6 underlay (IPv4 and IPv6 sites
inside; RFC 4302 section 3.1.2 over an RFC 8200 outer header). ``lab up`` converges and
its pings cross; status shows the AH child installed; then ping and an iperf3 TCP
transfer cross while tshark captures a1's underlay interface: every IP packet on it but
IKE, the lab's management traffic and IPv6 neighbour discovery is AH (IPv4 protocol or
IPv6 next header 51, dissected with SPI and sequence number): no ESP (50), no
ESP-in-UDP (4500), no cleartext; and the child SA counters moved. Each lab is removed
at the end, also on failure, and checked gone. Run under
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

HOSTS_V6 = """\
all:
  children:
    mesh:
      hosts:
        a1:
          address: fd99::11
          subnets: [10.1.1.0/24, fd01:1::/64]
        a2:
          address: fd99::12
          subnets: [10.1.2.0/24, fd01:2::/64]
"""

UNDERLAY_V6 = ("fd99::11", "fd99::12")

# Not captured: IKE, the lab's management network (MGMT_STAND_IN), and IPv6's own
# hop-by-hop (MLD) and ICMPv6 neighbour discovery (types 133-137) on the link.
CAPTURE_V4 = "ip and not udp port 500 and not net 198.18.0.0/16"
CAPTURE_V6 = (
    "(ip or ip6) and not udp port 500 and not net 2001:2::/64 and not ip6[6] == 0"
    " and not (ip6[6] == 58 and ip6[40] >= 133 and ip6[40] <= 137)"
)

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


def ah_lab(root: Path, mode: str, hosts: str = HOSTS) -> LabRun:
    lab = new_lab(root, "lab")
    (lab.inventory / "hosts.yaml").write_text(hosts)
    (lab.inventory / "group_vars" / "all.yaml").write_text(GROUP_VARS.format(mode=mode))
    (lab.inventory / "topology.yaml").write_text(TOPOLOGY)
    return lab


def children(lab: LabRun) -> list[dict[str, Any]]:
    return [c for _, sa in ike_sas(fleet_status(lab)) for c in sa["children"]]


class Capture:
    """tshark on a lab host's underlay interface (inside its namespace): every IP packet
    the capture filter keeps (``CAPTURE_V4``, ``CAPTURE_V6``), so cleartext leaking past
    the tunnel would show too."""

    def __init__(self, netns: str, pcap: Path, bpf: str = CAPTURE_V4) -> None:
        self.pcap = pcap
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", netns,
             "tshark", "-i", "eth0", "-w", str(pcap), "-s", "256", "-q",
             "-f", bpf],
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

    def fields(self, ip: str = "ip") -> list[list[str]]:
        """Per packet: the outer protocol (``ip.proto``, or ``ipv6.nxt`` with
        ``ip="ipv6"``), AH's SPI and sequence number, the outer source."""
        proto = "ip.proto" if ip == "ip" else "ipv6.nxt"
        out = subprocess.run(
            ["tshark", "-r", str(self.pcap), "-T", "fields",
             "-E", "separator=,", "-E", "occurrence=f",
             "-e", proto, "-e", "ah.spi", "-e", "ah.sequence", "-e", f"{ip}.src"],
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


def test_ah_tunnel_between_agents_over_an_ipv6_underlay(tmp_path: Path) -> None:
    require_root()
    if shutil.which("tshark") is None or shutil.which("iperf3") is None:
        pytest.fail("tshark and iperf3 are needed (scripts/setup --test installs them)")
    lab = ah_lab(tmp_path, "tunnel", HOSTS_V6)
    with removed_after(lab):
        up = lab_up(lab)
        pairs = [p for p in up["reachability"] if p["expect"] == "protect"]
        # lab up's own probes: each site to the other host's sites, both ways.
        assert len(pairs) >= 4 and {p["result"] for p in pairs} == {"pass"}, pairs
        from_a1 = [p for p in pairs if p["src_host"] == "a1"]
        v4 = next(p for p in from_a1 if ":" not in str(p["dst"]))
        v6 = next(p for p in from_a1 if ":" in str(p["dst"]))
        before = children(lab)
        assert before and all(
            c["state"] == "installed" and c["proposal"] == "AH:sha256" for c in before
        ), before
        assert all(c["mode"].lower() == "tunnel" for c in before), before

        capture = Capture(up["layout"]["hosts"]["a1"]["netns"], tmp_path / "ah6.pcap", CAPTURE_V6)
        try:
            for pair in (v4, v6):
                src, dst = str(pair["src"]), str(pair["dst"])
                ping = lab.exec("a1", "ping", "-c", "5", "-i", "0.2", "-W", "2", "-I", src, dst)
                assert ping.returncode == 0 and " 0% packet loss" in ping.stdout, ping.stdout
            for n, pair in enumerate((v4, v6)):
                src, dst, port = str(pair["src"]), str(pair["dst"]), str(5299 + n)
                server = lab.exec("a2", "iperf3", "-s", "-1", "-D", "-B", dst, "-p", port)
                assert server.returncode == 0, server.stderr
                time.sleep(0.5)
                client = lab.exec("a1", "iperf3", "-c", dst, "-B", src, "-p", port, "-t", "2", "-J")
                assert client.returncode == 0, client.stdout[-2000:] + client.stderr
                assert '"bytes":' in client.stdout
        finally:
            capture.stop()
        rows = capture.fields("ipv6")
        protocols = [row[0] for row in rows]
        assert protocols.count("51") >= 40, protocols[:20]
        # Only IPv6 with AH next: no ESP (50), no UDP (17), no IPv4 and no cleartext.
        assert set(protocols) == {"51"}, sorted(set(protocols))
        spis = {row[1] for row in rows}
        assert "" not in spis and len(spis) >= 2, spis
        assert all(row[2].isdigit() and int(row[2]) >= 1 for row in rows)
        assert {row[3] for row in rows} == set(UNDERLAY_V6)
        after = {c["spi_in"]: c for c in children(lab)}
        moved = [after[c["spi_in"]]["packets_in"] > c["packets_in"] for c in before]
        assert any(moved), after
        for child in after.values():
            assert child["integrity_failures"] == 0 and child["replay_drops"] == 0, child
    assert os.path.exists(tmp_path / "ah6.pcap")
