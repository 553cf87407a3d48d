"""Shared harness for the tshark tests (no tests here): two network namespaces on a
veth pair, Python child processes inside them, dumpcap captures and tshark's JSON view.

Each lab is two namespaces ``vft-<random>-a`` / ``-b`` joined by a veth pair
(10.78.0.1/24 and 10.78.0.2/24). The pytest process never changes namespace: children
run under ``ip netns exec`` and talk JSON lines. Processes, namespaces and the scratch
directory are removed when the lab closes, also when a test fails.
"""

from __future__ import annotations

import json
import os
import secrets
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

ADDR_A = "10.78.0.1"
ADDR_B = "10.78.0.2"
STEP_TIMEOUT = 10.0

# -- namespaces, child processes and captures ------------------------------------------------


def _ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)} failed: {done.stderr.strip()}")


def _wait_for(proc: subprocess.Popen[bytes], fd: int, want: bytes) -> None:
    """Read ``fd`` (the process's stderr) until ``want`` has appeared."""
    buffer = b""
    deadline = time.monotonic() + STEP_TIMEOUT
    while want not in buffer:
        left = deadline - time.monotonic()
        ready, _, _ = select.select([fd], [], [], max(left, 0))
        if not ready:
            raise AssertionError(f"waited {STEP_TIMEOUT} s for {want!r}; got {buffer[-2000:]!r}")
        chunk = os.read(fd, 65536)
        if not chunk:
            raise AssertionError(f"process {proc.args!r} ended; output {buffer[-2000:]!r}")
        buffer += chunk


@dataclass
class Child:
    """A Python process inside a namespace: JSON commands on stdin, JSON lines out."""

    proc: subprocess.Popen[bytes]
    buffer: bytes = b""

    def line(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + STEP_TIMEOUT
        while b"\n" not in self.buffer:
            ready, _, _ = select.select([fd], [], [], max(deadline - time.monotonic(), 0))
            if not ready:
                raise AssertionError(f"no line from child within {STEP_TIMEOUT} s")
            chunk = os.read(fd, 65536)
            if not chunk:
                raise AssertionError(f"child exited: {self._stderr()}")
            self.buffer += chunk
        raw, self.buffer = self.buffer.split(b"\n", 1)
        message: dict[str, Any] = json.loads(raw)
        return message

    def ask(self, **command: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(command).encode() + b"\n")
        self.proc.stdin.flush()
        return self.line()

    def _stderr(self) -> str:
        if self.proc.poll() is None or self.proc.stderr is None:
            return "(still running)"
        return self.proc.stderr.read().decode(errors="replace")[-3000:]


@dataclass
class Lab:
    """Two namespaces on a veth pair, a scratch directory, and what runs in them."""

    a: str
    b: str
    veth_a: str
    veth_b: str
    workdir: Path
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def run(self, ns: str, script: str, **params: Any) -> Child:
        """Start ``script`` (Python source; ``PARAMS`` holds ``params``) inside ``ns``."""
        source = "import json, sys\nPARAMS = json.loads(sys.argv[1])\n" + textwrap.dedent(script)
        proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, sys.executable, "-c", source, json.dumps(params)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self.processes.append(proc)
        return Child(proc)

    def start_capture(self, name: str, capture_filter: str, count: int) -> Capture:
        """dumpcap on b's veth, full snaplen, stopping by itself after ``count`` packets.

        Returns once dumpcap names its output file: it prints that after the capture
        filter is set and the interface is live, so nothing sent later is missed. Its
        earlier "Capturing on" line comes before the interface is opened (measured: a
        packet sent right after it was missed 20 times out of 20).
        """
        path = self.workdir / f"{name}.pcapng"
        # Full snaplen (-s 0): tshark does not decrypt truncated packets.
        dumpcap = ["dumpcap", "-i", self.veth_b, "-f", capture_filter, "-s", "0"]
        proc = subprocess.Popen(
            ["ip", "netns", "exec", self.b, *dumpcap, "-c", str(count), "-w", str(path)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        self.processes.append(proc)
        assert proc.stderr is not None
        _wait_for(proc, proc.stderr.fileno(), b"File: ")
        return Capture(proc, path, count)


@dataclass
class Capture:
    proc: subprocess.Popen[bytes]
    path: Path
    count: int

    def wait(self) -> Path:
        """The pcap, once dumpcap has its ``count`` packets (fails if they never come)."""
        try:
            self.proc.wait(STEP_TIMEOUT)
        except subprocess.TimeoutExpired:
            # SIGINT: dumpcap closes the file, so the failure can show what it did see.
            self.proc.send_signal(signal.SIGINT)
            self.proc.wait(STEP_TIMEOUT)
            seen = subprocess.run(
                ["tshark", "-n", "-r", str(self.path)], capture_output=True, text=True, check=False
            ).stdout
            raise AssertionError(
                f"dumpcap did not see {self.count} packets; saw:\n{seen}"
            ) from None
        assert self.proc.returncode == 0, f"dumpcap failed with {self.proc.returncode}"
        return self.path


@contextmanager
def make_lab() -> Iterator[Lab]:
    """Two namespaces on a veth pair; skips the test when the tools or rights are missing."""
    if os.geteuid() != 0:
        pytest.skip("needs root to create network namespaces")
    for tool in ("tshark", "dumpcap"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed")
    suffix = secrets.token_hex(3)
    workdir = Path(tempfile.mkdtemp(prefix="vft-tshark-"))
    made: list[str] = []
    lab = Lab(f"vft-{suffix}-a", f"vft-{suffix}-b", f"vft{suffix}a", f"vft{suffix}b", workdir)
    try:
        for ns in (lab.a, lab.b):
            _ip("netns", "add", ns)
            made.append(ns)
        # Both ends are made inside the namespaces: deleting them deletes the pair.
        _ip(
            "link", "add", lab.veth_a, "netns", lab.a, "type", "veth",
            "peer", "name", lab.veth_b, "netns", lab.b,
        )  # fmt: skip
        for ns, dev, addr in ((lab.a, lab.veth_a, ADDR_A), (lab.b, lab.veth_b, ADDR_B)):
            _ip("-n", ns, "addr", "add", f"{addr}/24", "dev", dev)
            _ip("-n", ns, "link", "set", dev, "up")
            _ip("-n", ns, "link", "set", "lo", "up")
        yield lab
    finally:
        for proc in lab.processes:
            if proc.poll() is None:
                proc.kill()
            proc.wait(10)
            for stream in (proc.stdin, proc.stdout, proc.stderr):
                if stream is not None:
                    stream.close()
        for ns in made:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)
        shutil.rmtree(workdir, ignore_errors=True)


def tshark_json(pcap: Path, options: list[str]) -> list[dict[str, Any]]:
    """tshark's tree of every packet (``-T json``; repeated fields as lists)."""
    done = subprocess.run(
        ["tshark", "-n", "-r", str(pcap), *options, "-T", "json", "--no-duplicate-keys"],
        capture_output=True,
        text=True,
        timeout=STEP_TIMEOUT,
        check=False,
    )
    assert done.returncode == 0, f"tshark failed: {done.stderr[-2000:]}"
    return [packet["_source"]["layers"] for packet in json.loads(done.stdout)]


def flatten(layers: dict[str, Any]) -> dict[str, list[Any]]:
    """Every field of a packet: name -> values in tree order (None for a subtree)."""
    out: dict[str, list[Any]] = {}
    _flatten(layers, out)
    return out


def _flatten(node: Any, out: dict[str, list[Any]]) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            for item in value if isinstance(value, list) else [value]:
                if isinstance(item, dict):
                    out.setdefault(key, []).append(None)
                    _flatten(item, out)
                else:
                    out.setdefault(key, []).append(item)


def hex_bytes(value: str) -> bytes:
    return bytes.fromhex(value.replace(":", ""))


def first_value(packet: dict[str, list[Any]], name: str) -> Any:
    """The outermost occurrence: with a wrong key, tshark may dissect the garbage it
    decrypted as further protocols, even another ESP header."""
    values = packet.get(name, [])
    return values[0] if values else None


@dataclass(frozen=True)
class EspVerdict:
    """What tshark made of one ESP packet, in UDP or straight over IP."""

    ports: tuple[int, int] | None
    """UDP source and destination ports; None for ESP over IP (protocol 50)."""
    udp_encap: bool
    spi: int
    seq: int
    icv_good: bool | None
    """None: tshark checked no ICV (no matching SA, or it could not decrypt)."""
    contained: bytes | None
    """The decrypted payload without padding and trailer (the inner IP packet)."""
    next_header: int | None
    inner_addresses: tuple[str, str] | None
    malformed: bool
    """tshark flagged the packet (or what it decrypted) as malformed."""


def esp_verdicts(pcap: Path, options: list[str]) -> list[EspVerdict]:
    """One verdict per packet; ``options`` carry the keys (``tshark_esp_options``)."""
    verdicts = []
    for layers in tshark_json(pcap, options):
        packet = flatten(layers)
        good = first_value(packet, "esp.icv_good")
        contained = first_value(packet, "esp.contained_data")
        next_header = first_value(packet, "esp.protocol")
        sources, destinations = packet.get("ip.src", []), packet.get("ip.dst", [])
        verdicts.append(
            EspVerdict(
                ports=(
                    (int(packet["udp.srcport"][0]), int(packet["udp.dstport"][0]))
                    if "udp.srcport" in packet
                    else None
                ),
                udp_encap="udpencap" in packet,
                spi=int(packet["esp.spi"][0], 16),
                seq=int(packet["esp.sequence"][0]),
                icv_good=None if good is None else good == "1",
                contained=None if contained is None else hex_bytes(contained),
                next_header=None if next_header is None else int(next_header, 16),
                inner_addresses=(sources[1], destinations[1]) if len(sources) >= 2 else None,
                malformed="_ws.malformed" in packet,
            )
        )
    return verdicts


@dataclass(frozen=True)
class IkeVerdict:
    """What tshark made of one IKEv2 message."""

    spi_i: bytes
    spi_r: bytes
    exchange: int
    response: bool
    decrypted: bool
    """``isakmp.enc.decrypted`` is present."""
    integrity_failed: bool
    """The ``isakmp.ikev2.integrity_checksum`` expert item is present."""
    inner_payloads: tuple[int, ...] | None
    """Payload types inside the decrypted SK payload, in order."""
    outer_payloads: tuple[int, ...]
    malformed: bool


def _find(node: Any, key: str) -> Any:
    """The first subtree named ``key``, depth first."""
    if isinstance(node, dict):
        for name, value in node.items():
            if name == key:
                return value
            found = _find(value, key)
            if found is not None:
                return found
    elif isinstance(node, list):
        for item in node:
            found = _find(item, key)
            if found is not None:
                return found
    return None


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def ike_verdicts(pcap: Path, options: list[str]) -> list[IkeVerdict]:
    verdicts = []
    for layers in tshark_json(pcap, options):
        packet = flatten(layers)
        isakmp = layers["isakmp"]
        contained = _find(isakmp, "isakmp.enc.contained")
        inner = None
        if isinstance(contained, dict):
            inner = tuple(int(t) for t in _as_list(contained.get("isakmp.typepayload", [])))
        verdicts.append(
            IkeVerdict(
                spi_i=hex_bytes(isakmp["isakmp.ispi"]),
                spi_r=hex_bytes(isakmp["isakmp.rspi"]),
                exchange=int(isakmp["isakmp.exchangetype"]),
                response=isakmp["isakmp.flags_tree"]["isakmp.flag_r"] == "1",
                decrypted="isakmp.enc.decrypted" in packet,
                integrity_failed="isakmp.ikev2.integrity_checksum" in packet,
                inner_payloads=inner,
                outer_payloads=tuple(int(t) for t in _as_list(isakmp["isakmp.typepayload"])),
                malformed="_ws.malformed" in packet,
            )
        )
    return verdicts
