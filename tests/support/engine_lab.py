"""Two agents in two namespaces joined by a veth pair, each running a plan file with its
data plane (real TUN, real sockets): the engine netns tests and the tshark key-log test."""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import pytest

from vpnfleet.agent.hollow import sample_plan
from vpnfleet.protos.hashing import plan_content_hash

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

    def start(self, host: str, agent: Sequence[str] = AGENT, extra: Sequence[str] = ()) -> None:
        """Run ``host``'s agent (``agent``: its command, another version's for one;
        ``extra``: more options of ``run``)."""
        state = self.directory / f"{host}-state"
        with self.log(host).open("ab") as out:
            plan, ns = self.plan_file(host), self.namespaces[host]
            options = f"--plan {plan} --state-dir {state} --status-interval 0.5"
            self.agents[host] = subprocess.Popen(
                ["ip", "netns", "exec", ns, *agent, "run", *options.split(), *extra],
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


L = TypeVar("L", bound=Lab)


@contextmanager
def built(lab: L, *tools: str) -> Iterator[L]:
    """``lab`` built and, when the block ends (also on failure), torn down with nothing of
    it left; skipped without root or without one of ``tools``."""
    if os.geteuid() != 0:
        pytest.skip("needs root to create network namespaces")
    for tool in tools:
        if shutil.which(tool) is None:
            pytest.skip(f"needs {tool}")
    try:
        lab.build()
        yield lab
    finally:
        lab.teardown()
    assert f"vft-{lab.tag}" not in sh("ip netns list").stdout
