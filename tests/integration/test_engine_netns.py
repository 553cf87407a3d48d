"""Two real agents (`vpnfleet-agent run --plan`) in two network namespaces joined by a
veth link: IKEv2 brings the tunnel up, ping crosses it between the site addresses, the
status lines show the SA's counters moving, and a killed agent comes back from its
persisted plan. Every namespace, process and file is removed at the end, also on failure.
"""

from __future__ import annotations

import os
import re
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from vpnfleet.agent.hollow import sample_plan
from vpnfleet.protos.hashing import plan_content_hash

pytestmark = pytest.mark.netns

AGENT = [sys.executable, "-m", "vpnfleet.agent.cli"]
UNDERLAY = {"a": "192.0.2.1", "b": "192.0.2.2"}
SITE = {"a": ("10.1.0.0/24", "10.1.0.1"), "b": ("10.2.0.0/24", "10.2.0.1")}


def sh(command: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a command line of words without spaces (no shell)."""
    return subprocess.run(command.split(), capture_output=True, text=True, timeout=30, check=check)


@dataclass
class Lab:
    directory: Path
    tag: str = field(default_factory=lambda: secrets.token_hex(3))
    namespaces: dict[str, str] = field(default_factory=dict)
    agents: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    force_encap: bool = False

    def build(self) -> None:
        for host in ("a", "b"):
            ns = f"vft-{self.tag}-{host}"
            sh(f"ip netns add {ns}")
            self.namespaces[host] = ns
            sh(f"ip -n {ns} link set lo up")
        a, b = self.namespaces["a"], self.namespaces["b"]
        # The underlay: one veth pair across the two namespaces.
        sh(f"ip link add vfa{self.tag} netns {a} type veth peer name vfb{self.tag} netns {b}")
        for host, ifname in (("a", f"vfa{self.tag}"), ("b", f"vfb{self.tag}")):
            ns = self.namespaces[host]
            sh(f"ip -n {ns} addr add {UNDERLAY[host]}/24 dev {ifname}")
            sh(f"ip -n {ns} link set {ifname} up")
            # The site subnet: a veth pair kept inside the namespace (no dummy links here).
            sh(f"ip -n {ns} link add site0 type veth peer name site1")
            sh(f"ip -n {ns} addr add {SITE[host][1]}/24 dev site0")
            sh(f"ip -n {ns} link set site0 up")
            sh(f"ip -n {ns} link set site1 up")

    def plan_file(self, host: str) -> Path:
        other = "b" if host == "a" else "a"
        msg = sample_plan(
            host, UNDERLAY[host], SITE[host][0], [(other, UNDERLAY[other], SITE[other][0])]
        )
        if self.force_encap:
            for peer in msg.peers:
                peer.nat.force_encap = True
            msg.content_hash = plan_content_hash(msg)
        path = self.directory / f"{host}.plan"
        path.write_bytes(msg.SerializeToString(deterministic=True))
        return path

    def log(self, host: str) -> Path:
        return self.directory / f"{host}.out"

    def start(self, host: str) -> None:
        state = self.directory / f"{host}-state"
        with self.log(host).open("ab") as out:
            plan, ns = self.plan_file(host), self.namespaces[host]
            options = f"--plan {plan} --state-dir {state} --status-interval 0.5"
            self.agents[host] = subprocess.Popen(
                ["ip", "netns", "exec", ns, *AGENT, "run", *options.split()],
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def output(self, host: str) -> str:
        return self.log(host).read_text(errors="replace")

    def wait_for(self, host: str, pattern: str, timeout: float = 20.0, after: int = 0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.output(host)[after:]
            match = re.search(pattern, text)
            if match:
                return match.group(0)
            proc = self.agents.get(host)
            if proc is not None and proc.poll() is not None:
                break
            time.sleep(0.1)
        raise AssertionError(f"{host}: no {pattern!r} in output:\n{self.output(host)}")

    def kill(self, host: str, sig: int = signal.SIGTERM) -> int:
        proc = self.agents.pop(host)
        if proc.poll() is None:
            os.kill(proc.pid, sig)
        try:
            return proc.wait(15)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            return proc.wait(10)

    def ping(self, count: int = 3) -> subprocess.CompletedProcess[str]:
        a, (_, source), (_, target) = self.namespaces["a"], SITE["a"], SITE["b"]
        return sh(f"ip netns exec {a} ping -n -c {count} -i 0.2 -W 2 -I {source} {target}", False)

    def teardown(self) -> None:
        for host in list(self.agents):
            self.kill(host, signal.SIGKILL)
        for ns in self.namespaces.values():
            sh(f"ip netns del {ns}", check=False)


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    if os.geteuid() != 0:
        pytest.skip("needs root to create network namespaces")
    lab = Lab(tmp_path)
    try:
        lab.build()
        yield lab
    finally:
        lab.teardown()
    leftover = sh("ip netns list").stdout
    assert f"vft-{lab.tag}" not in leftover


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
    started = time.monotonic()
    lab.start(victim)
    lab.wait_for(victim, rf"event child_up {other}", after=mark)
    recovery = time.monotonic() - started
    ping = lab.ping(3)
    assert ping.returncode == 0, ping.stdout + ping.stderr
    assert recovery < 10, f"took {recovery:.1f} s"
    assert "already in force" in lab.output(victim)[mark:]
