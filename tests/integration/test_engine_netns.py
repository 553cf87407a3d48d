"""Two real agents (`vpnfleet-agent run --plan`) in two network namespaces joined by a
veth link: IKEv2 brings the tunnel up, ping crosses it between the site addresses, the
status lines show the SA's counters moving, and a killed agent comes back from its
persisted plan. Every namespace, process and file is removed at the end, also on failure.
"""

from __future__ import annotations

import re
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.engine_lab import SITE, Lab, built, sh

pytestmark = pytest.mark.netns


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    with built(Lab(tmp_path)) as lab:
        yield lab


CHILD_LINE = r"child b: installed in \w+ out \w+ packets_in=(\d+) packets_out=(\d+)"


def count_arrivals(netns: str) -> None:
    """nftables counters of what arrives in ``netns``: ESP over IP and ESP/IKE in UDP."""
    sh(f"ip netns exec {netns} nft add table inet vft")
    hook = "{ type filter hook input priority 0 ; }"
    subprocess.run(
        ["ip", "netns", "exec", netns, "nft", f"add chain inet vft in {hook}"], check=True
    )
    for match, name in (("udp dport 4500", "udp4500"), ("meta l4proto esp", "esp")):
        rule = f'add rule inet vft in {match} counter comment "{name}"'
        subprocess.run(["ip", "netns", "exec", netns, "nft", rule], check=True)


def arrivals(netns: str) -> dict[str, int]:
    listing = sh(f"ip netns exec {netns} nft list chain inet vft in").stdout
    found = re.findall(r"counter packets (\d+) bytes \d+ comment \"(\w+)\"", listing)
    return {name: int(packets) for packets, name in found}


@pytest.mark.parametrize("force_encap", [False, True], ids=["no-nat", "force-encap"])
def test_two_agents_ping_through_the_tunnel(lab: Lab, force_encap: bool) -> None:
    lab.force_encap = force_encap
    count_arrivals(lab.namespaces["b"])
    lab.start("b")
    lab.start("a")
    lab.wait_for("a", r"event child_up b")
    lab.wait_for("b", r"event child_up a")
    # Into the TUN through the agent's own table (the main table is the host's).
    route = sh(f"ip -n {lab.namespaces['a']} route show table 4500 {SITE['b'][0]}").stdout
    assert "dev vpnfleet0" in route
    mtu = sh(f"ip -n {lab.namespaces['a']} link show vpnfleet0").stdout
    assert "mtu 1438" in mtu  # AES-GCM-16 over UDP 4500 on a 1500-byte underlay
    ping = lab.ping(5)
    assert ping.returncode == 0, ping.stdout + ping.stderr
    assert " 0% packet loss" in ping.stdout
    # The status lines show the child SA's counters moving.
    mark = len(lab.output("a"))
    line = lab.wait_for(
        "a", r"child b: installed .* packets_in=[1-9]\d* packets_out=[1-9][^\n]*", after=mark
    )
    packets = re.search(CHILD_LINE, line)
    assert packets is not None
    assert int(packets.group(1)) >= 5 and int(packets.group(2)) >= 5
    assert "integrity_failures=0 replay_drops=0" in line
    # No NAT between them: ESP goes straight over IP (protocol 50, RFC 7296 section
    # 2.23); force_encap fakes a NAT (strongSwan's encap=yes), so it goes in UDP 4500.
    seen = arrivals(lab.namespaces["b"])
    if force_encap:
        assert seen["udp4500"] >= 5 and seen["esp"] == 0, seen
    else:
        assert seen["esp"] >= 5 and seen["udp4500"] == 0, seen
    assert lab.kill("a") == 0 and lab.kill("b") == 0
    # The TUN device and its routes go with the process.
    links = sh(f"ip -n {lab.namespaces['a']} link show").stdout
    assert "vpnfleet0" not in links


@pytest.mark.parametrize("victim", ["a", "b"])  # the initiator, then the responder
def test_killed_agent_comes_back_from_its_persisted_plan(lab: Lab, victim: str) -> None:
    other = "b" if victim == "a" else "a"
    lab.start("b")
    lab.start("a")
    lab.wait_for("a", r"event child_up b")
    assert lab.ping(2).returncode == 0
    lab.kill(victim, signal.SIGKILL)
    mark = len(lab.output(victim))
    lab.start(victim)
    lab.wait_for(victim, rf"event child_up {other}", after=mark)
    ping = lab.ping(3)
    assert ping.returncode == 0, ping.stdout + ping.stderr
    assert "already in force" in lab.output(victim)[mark:]
