"""Two network namespaces joined by a veth underlay, each with a site subnet, for the
data plane's integration tests and the throughput benchmark.

Layout (``<id>`` is random, so parallel runs do not collide)::

    ns vft-<id>-a                                     ns vft-<id>-b
    site 10.1.0.1/24 (veth kept inside)               site 10.2.0.1/24 (veth kept inside)
    underlay 10.77.0.1/24  <------- veth ------->     underlay 10.77.0.2/24

The kernel here has no ``dummy`` links, so each site subnet sits on one end of a veth
pair whose both ends stay in the namespace. Everything made here is removed by
:meth:`SitePair.close` (the context manager calls it, also on failure): processes are
killed, namespaces deleted (which deletes their links) and the work directory removed.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import select
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

UNDERLAY_A = "10.77.0.1"
UNDERLAY_B = "10.77.0.2"
SITE_A = "10.1.0.1"
SITE_B = "10.2.0.1"
PREFIX_A = "10.1.0.0/24"
PREFIX_B = "10.2.0.0/24"
READY_TIMEOUT = 20.0

# Fixed test keys (AES-128-GCM-16: 16 key octets and a 4-octet salt); never used for
# anything but namespaces this harness makes.
KEY_A_TO_B = "000102030405060708090a0b0c0d0e0f10111213"
KEY_B_TO_A = "f0e0d0c0b0a090807060504030201000aabbccdd"
SPI_A_TO_B = 0xA0000B01
SPI_B_TO_A = 0xB0000A01


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if check and done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)} failed: {done.stderr.strip()}")
    return done


@dataclass
class NodeProcess:
    """A process inside a namespace that speaks JSON lines on stdout."""

    name: str
    proc: subprocess.Popen[bytes]
    buffer: bytes = b""

    def line(self, timeout: float = READY_TIMEOUT) -> dict[str, Any]:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buffer:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([fd], [], [], max(left, 0))
            if not ready:
                raise RuntimeError(f"{self.name}: no output within {timeout} s")
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                raise RuntimeError(f"{self.name} exited: {self.stderr()}")
            self.buffer += chunk
        raw, self.buffer = self.buffer.split(b"\n", 1)
        message: dict[str, Any] = json.loads(raw)
        return message

    def command(self, text: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text.encode() + b"\n")
        self.proc.stdin.flush()

    def stats(self) -> dict[str, Any]:
        self.command("stats")
        return self.line()

    def finish(self, timeout: float = 10.0) -> dict[str, Any]:
        """Close stdin (the node stops) and return its closing report."""
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        report = self.line(timeout)
        self.proc.wait(timeout)
        return report

    def stderr(self) -> str:
        if self.proc.poll() is None or self.proc.stderr is None:
            return "(still running)"
        return self.proc.stderr.read().decode(errors="replace")[-3000:]


@dataclass
class SitePair:
    """Two namespaces, their underlay and site subnets; see the module docstring."""

    tag: str = field(default_factory=lambda: secrets.token_hex(3))
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="vft-")))
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    made: list[str] = field(default_factory=list)

    @property
    def a(self) -> str:
        return f"vft-{self.tag}-a"

    @property
    def b(self) -> str:
        return f"vft-{self.tag}-b"

    def __enter__(self) -> SitePair:
        try:
            self.build()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def build(self) -> None:
        for ns in (self.a, self.b):
            ip("netns", "add", ns)
            self.made.append(ns)
        # Both ends are made inside the namespaces: nothing lands in the root namespace.
        ip("link", "add", f"vfu{self.tag}a", "netns", self.a, "type", "veth",
           "peer", "name", f"vfu{self.tag}b", "netns", self.b)  # fmt: skip
        for ns, side, underlay, site in (
            (self.a, "a", UNDERLAY_A, SITE_A),
            (self.b, "b", UNDERLAY_B, SITE_B),
        ):
            ip("-n", ns, "link", "set", "lo", "up")
            ip("-n", ns, "addr", "add", f"{underlay}/24", "dev", f"vfu{self.tag}{side}")
            ip("-n", ns, "link", "set", f"vfu{self.tag}{side}", "up")
            s0, s1 = f"vfs{self.tag}{side}0", f"vfs{self.tag}{side}1"
            ip("-n", ns, "link", "add", s0, "type", "veth", "peer", "name", s1)
            ip("-n", ns, "addr", "add", f"{site}/24", "dev", s0)
            ip("-n", ns, "link", "set", s0, "up")
            ip("-n", ns, "link", "set", s1, "up")

    def close(self) -> None:
        for proc in self.processes:
            if proc.poll() is None:
                proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(10)
            for stream in (proc.stdin, proc.stdout, proc.stderr):
                if stream is not None:
                    with contextlib.suppress(OSError):
                        stream.close()
        self.processes.clear()
        for ns in self.made:
            _kill_namespace_pids(ns)
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)
        self.made.clear()
        shutil.rmtree(self.workdir, ignore_errors=True)

    # -- processes -----------------------------------------------------------------------

    def spawn(self, ns: str, argv: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(["ip", "netns", "exec", ns, *argv], **kwargs)
        self.processes.append(proc)
        return proc

    def run(self, ns: str, *argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["ip", "netns", "exec", ns, *argv],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def start_data_planes(
        self, *, encap: str = "udp", offload: bool = True, profile: bool = False
    ) -> tuple[NodeProcess, NodeProcess]:
        """A manually keyed data plane in each namespace, ready to carry traffic."""
        nodes = []
        for ns, local, peer, lp, rp, key_in, key_out, spi_in, spi_out in (
            (self.a, UNDERLAY_A, UNDERLAY_B, PREFIX_A, PREFIX_B,
             KEY_B_TO_A, KEY_A_TO_B, SPI_B_TO_A, SPI_A_TO_B),
            (self.b, UNDERLAY_B, UNDERLAY_A, PREFIX_B, PREFIX_A,
             KEY_A_TO_B, KEY_B_TO_A, SPI_A_TO_B, SPI_B_TO_A),
        ):  # fmt: skip
            config = {
                "tun": f"vft{self.tag}t",
                "local": local,
                "peer": peer,
                "local_prefix": lp,
                "remote_prefix": rp,
                "encap": encap,
                "offload": offload,
                "inbound": {"spi": spi_in, "encryption": "aes128gcm16", "key": key_in},
                "outbound": {"spi": spi_out, "encryption": "aes128gcm16", "key": key_out},
            }
            argv = [sys.executable, "-m", "vpnfleet.agent.io.manual_keying", json.dumps(config)]
            if profile:
                argv += ["--profile", str(self.workdir / f"{ns}.prof")]
            proc = self.spawn(
                ns, argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
            )
            nodes.append(NodeProcess(ns, proc))
        for node in nodes:
            ready = node.line()
            if not ready.get("ready"):
                raise RuntimeError(f"data plane in {node.name} failed: {ready}")
        return nodes[0], nodes[1]

    # -- traffic -------------------------------------------------------------------------

    def ping(self, count: int = 3) -> subprocess.CompletedProcess[str]:
        return self.run(
            self.a, "ping", "-c", str(count), "-i", "0.2", "-W", "2", "-I", SITE_A, SITE_B
        )

    def iperf3(
        self,
        seconds: float,
        *,
        reverse: bool = False,
        udp_length: int | None = None,
        bitrate: str | None = None,
    ) -> dict[str, Any]:
        """iperf3 from site A to site B (B to A with ``reverse``); the client's JSON."""
        server = self.spawn(
            self.b,
            ["iperf3", "-s", "-1", "-B", SITE_B, "-p", "5201"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            _wait_listening(self, self.b, 5201)
            argv = ["iperf3", "-c", SITE_B, "-B", SITE_A, "-p", "5201", "-J"]
            argv += ["-t", f"{seconds:g}"]
            if reverse:
                argv.append("-R")
            if udp_length is not None:
                argv += ["-u", "-l", str(udp_length), "-b", bitrate or "0"]
            done = self.run(self.a, *argv, timeout=seconds + 30)
            result: dict[str, Any] = json.loads(done.stdout or "{}")
            if done.returncode != 0 or "error" in result:
                raise RuntimeError(f"iperf3 failed: {result.get('error') or done.stderr}")
            return result
        finally:
            if server.poll() is None:
                server.kill()
            server.wait(10)


def _wait_listening(pair: SitePair, ns: str, port: int, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = pair.run(ns, "ss", "-Hltn", f"sport = :{port}")
        if done.stdout.strip():
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port} in {ns}")


def _kill_namespace_pids(ns: str) -> None:
    # Anything still running inside (an iperf3 or charon a failed run left) would keep
    # the namespace's links alive.
    done = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True)
    for pid in done.stdout.split():
        with contextlib.suppress(ProcessLookupError, ValueError, PermissionError):
            os.kill(int(pid), 9)


def tcp_mbps(result: dict[str, Any]) -> float:
    """Received TCP throughput of an iperf3 client's JSON, in Mbit/s."""
    return float(result["end"]["sum_received"]["bits_per_second"]) / 1e6


def udp_pps(result: dict[str, Any]) -> float:
    """Datagrams per second that arrived, from an iperf3 UDP client's JSON."""
    total = result["end"]["sum"]
    received = int(total["packets"]) - int(total.get("lost_packets", 0))
    return received / float(total["seconds"])
