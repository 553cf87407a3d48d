"""SPD bypass in the lab: inventories/lab lets the UDP echo service (RFC 862) between the
sites cross in the clear, although the mesh protects the same subnets (RFC 4301 section
4.4.1: the bypass entries come first in every SPD).

On the wire of a host's underlay veth: the bypass datagrams and their answers cross with
the site addresses in the clear, while a ping between the same two sites crosses only as
ESP. With the agent killed (its supervisor held, so that it stays dead), the host's
protected traffic meets the ``unreachable`` fallback of the tunnel table and never
follows the lab's cleartext route; once the agent is back it crosses as ESP again.
The lab is removed at the end, also on failure, and nothing of it may remain.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.lab import (
    SHORT_LIFETIMES,
    LabRun,
    lab_up,
    new_lab,
    removed_after,
    require_root,
    set_group_vars,
)
from vpnfleet.agent.engine.host import DEFAULT_OWN_MARK
from vpnfleet.controller.lab.reach import CLIENT_SCRIPT, LISTENER_SCRIPT

pytestmark = pytest.mark.netns

SITE = {"a1": "10.1.1.1", "a2": "10.1.2.1"}
UNDERLAY = {"a1": "10.99.0.11", "a2": "10.99.0.12"}
ECHO_PORT = 7
SOURCE_PORT = 40123
TUNNEL_TABLE = "4500"


def netns(lab: LabRun, host: str) -> str:
    return f"vf-{lab.name}-{host}"


def in_netns(lab: LabRun, host: str, *argv: str, timeout: float = 30) -> str:
    res = subprocess.run(
        ["ip", "netns", "exec", netns(lab, host), *argv],
        capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip
    return res.stdout + res.stderr


def ping(lab: LabRun, src: str, dst: str, count: int = 3) -> subprocess.CompletedProcess[str]:
    return lab.exec(
        src, "ping", "-n", "-c", str(count), "-i", "0.2", "-W", "1", "-I", SITE[src], SITE[dst]
    )


def udp_echo(lab: LabRun, src: str, dst: str) -> dict[str, Any]:
    """One bypass probe, ``src`` site to ``dst`` site port 7: where the datagram and its
    answer arrived (``far`` / ``near``), or ``error``."""
    listener = subprocess.Popen(
        ["ip", "netns", "exec", netns(lab, dst), sys.executable, "-c", LISTENER_SCRIPT,
         SITE[dst], str(ECHO_PORT), "20"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert listener.stdout is not None and listener.stdout.readline().strip() == "ready"
        out = in_netns(
            lab, src, sys.executable, "-c", CLIENT_SCRIPT,
            SITE[src], str(SOURCE_PORT), SITE[dst], str(ECHO_PORT), "bypass-test",
        )  # fmt: skip
    finally:
        assert listener.stdin is not None
        listener.stdin.close()
        try:
            listener.wait(10)
        except subprocess.TimeoutExpired:
            listener.kill()
            listener.wait()
    answer: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return answer


class Capture:
    """tcpdump on a host's underlay veth (eth0) into a pcap file."""

    def __init__(self, lab: LabRun, host: str, pcap: Path) -> None:
        self.pcap = pcap
        self.log = pcap.with_suffix(".log")
        with self.log.open("wb") as sink:
            self.proc = subprocess.Popen(
                ["ip", "netns", "exec", netns(lab, host),
                 "tcpdump", "-i", "eth0", "-n", "-U", "-Z", "root", "-w", str(pcap)],
                stdout=sink, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + 10
        while "listening on" not in self.log.read_text(errors="replace"):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"tcpdump did not start: {self.log.read_text()}")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc.poll() is None:
            # tcpdump -U writes each packet as it reads it, but on a loaded machine it
            # may still be reading what was sent last: stopped now, those are lost (its
            # "received by filter" exceeds "captured"). Wait for the file to stop growing.
            deadline, size = time.monotonic() + 5, -1
            while time.monotonic() < deadline:
                current = self.pcap.stat().st_size if self.pcap.exists() else 0
                if current == size:
                    break
                size = current
                time.sleep(0.3)
            os.kill(self.proc.pid, signal.SIGINT)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def summary(self) -> Counter[str]:
        """One word per packet between a1's and a2's sites or underlay addresses:
        ``clear PROTO SPORT->DPORT`` (site addresses on the wire), ``esp``, ``ike``, or
        ``other``."""
        fields = ["ip.src", "ip.dst", "ip.proto", "udp.srcport", "udp.dstport", "esp.spi"]
        read = subprocess.run(
            ["tshark", "-r", str(self.pcap), "-n", "-T", "fields", "-E", "separator=,",
             "-E", "occurrence=f", *(w for f in fields for w in ("-e", f))],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert read.returncode == 0, read.stderr
        seen: Counter[str] = Counter()
        sites, underlay = set(SITE.values()), set(UNDERLAY.values())
        for line in read.stdout.splitlines():
            src, dst, proto, sport, dport, spi = line.split(",")
            if {src, dst} == sites:
                seen[f"clear {proto}" + (f" {sport}->{dport}" if sport else "")] += 1
            elif {src, dst} != underlay:
                continue
            elif spi:
                seen["esp"] += 1
            elif proto == "17" and {sport, dport} <= {"500", "4500"}:
                seen["ike"] += 1
            else:
                seen["other"] += 1
        return seen


@pytest.fixture
def mesh(tmp_path: Path) -> Iterator[tuple[LabRun, dict[str, Any]]]:
    require_root()
    for tool in ("tcpdump", "tshark"):
        if shutil.which(tool) is None:
            pytest.skip(f"needs {tool}")
    lab = new_lab(tmp_path, "lab")
    set_group_vars(lab, SHORT_LIFETIMES)
    with removed_after(lab):
        yield lab, lab_up(lab)


def test_bypass_crosses_in_the_clear_protected_as_esp_and_never_clear_when_the_agent_dies(
    mesh: tuple[LabRun, dict[str, Any]], tmp_path: Path
) -> None:
    lab, up = mesh
    # `lab up`'s matrix: every ordered pair protected through a tunnel, and probed in
    # the clear by the echo policy (lab_up checked every result).
    kinds = Counter((p["expect"], p["result"]) for p in up["reachability"])
    assert kinds == {("protect", "pass"): 12, ("bypass", "pass-clear"): 12}, kinds

    # The rules: the mark's, the bypass entries in SPD order, then the tunnel table.
    rules = in_netns(lab, "a2", "ip", "rule", "show")
    order = [ln.split(":", 1)[0] for ln in rules.splitlines()]
    own = next(ln for ln in rules.splitlines() if f"fwmark {DEFAULT_OWN_MARK:#x} lookup main" in ln)
    echo = next(ln for ln in rules.splitlines() if "ipproto udp dport 7 lookup main" in ln)
    tunnel = next(ln for ln in rules.splitlines() if f"to 10.1.1.0/24 lookup {TUNNEL_TABLE}" in ln)
    assert int(own.split(":")[0]) < int(echo.split(":")[0]) < int(tunnel.split(":")[0]), rules
    assert order == sorted(order, key=int), rules
    # The lab's cleartext way to a1's site is there in the main table all along.
    main = in_netns(lab, "a2", "ip", "route", "show", "10.1.1.0/24")
    assert "via 10.99.0.11 dev eth0" in main, main

    capture = Capture(lab, "a2", tmp_path / "a2-eth0.pcap")
    try:
        answer = udp_echo(lab, "a1", "a2")
        assert answer == {"far": "eth0", "near": "eth0"}, answer
        assert ping(lab, "a1", "a2").returncode == 0
        assert ping(lab, "a2", "a1").returncode == 0
    finally:
        capture.stop()
    seen = capture.summary()
    # The bypass probe and its answer, site addresses in the clear; the pings only as ESP.
    assert seen[f"clear 17 {SOURCE_PORT}->{ECHO_PORT}"] >= 1, seen
    assert seen[f"clear 17 {ECHO_PORT}->{SOURCE_PORT}"] >= 1, seen
    # 2 x 3 echo requests and their replies crossed (a UDP GSO send of the agent is
    # captured as one frame, so frames may undercount): ESP was there, cleartext ICMP not.
    assert seen["esp"] >= 3, seen
    assert set(seen) <= {
        f"clear 17 {SOURCE_PORT}->{ECHO_PORT}", f"clear 17 {ECHO_PORT}->{SOURCE_PORT}",
        "esp", "ike",
    }, seen  # fmt: skip

    # Kill a2's agent with its supervisor held, so that it stays dead for a while.
    status = lab.status()
    supervisor, agent = status["supervisor"]["pid"], status["agents"]["a2"]["pid"]
    capture = Capture(lab, "a2", tmp_path / "a2-eth0-killed.pcap")
    os.kill(supervisor, signal.SIGSTOP)
    try:
        os.kill(agent, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while "vpnfleet0" in in_netns(lab, "a2", "ip", "link", "show"):
            assert time.monotonic() < deadline, "the killed agent's TUN device stays"
            time.sleep(0.05)
        # The fallback, not the main table's cleartext route, answers for a1's site:
        # the kernel's EHOSTUNREACH of an unreachable route.
        table = in_netns(lab, "a2", "ip", "route", "show", "table", TUNNEL_TABLE)
        assert "unreachable 10.1.1.0/24" in table and "vpnfleet0" not in table, table
        route = in_netns(lab, "a2", "ip", "route", "get", SITE["a1"], "from", SITE["a2"])
        assert "No route to host" in route, route
        dead = ping(lab, "a2", "a1")
        assert dead.returncode != 0, dead.stdout
        # Bypass traffic does not depend on the agent: it still crosses in the clear.
        assert udp_echo(lab, "a1", "a2") == {"far": "eth0", "near": "eth0"}
    finally:
        os.kill(supervisor, signal.SIGCONT)
    try:
        deadline = time.monotonic() + 60
        while ping(lab, "a2", "a1", count=1).returncode != 0:
            assert time.monotonic() < deadline, "a2's tunnel to a1 did not come back"
        assert ping(lab, "a2", "a1").returncode == 0
    finally:
        capture.stop()
    seen = capture.summary()
    assert "clear 1" not in seen, seen  # no ping in the clear, ever
    assert seen["esp"] >= 2 and seen[f"clear 17 {SOURCE_PORT}->{ECHO_PORT}"] >= 1, seen
    after = lab.status()["agents"]["a2"]
    assert after["alive"] and after["pid"] != agent, after
