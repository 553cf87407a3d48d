"""Ping streams across a lab's tunnels, and the SPIs a status shows: what the lab tests
and the lab benchmarks (bench/rekey_loss.py, recovery.py, rotation.py) measure loss with.
"""

from __future__ import annotations

import math
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CLI = [sys.executable, "-m", "vpnfleet.controller.cli"]
# A reply line of ``ping -D -n``: "[1795752533.492460] 64 bytes from 10.1.2.1: icmp_seq=1 …".
REPLY_RE = re.compile(r"^\[(\d+\.\d+)\] \d+ bytes from [^ ]+: icmp_seq=(\d+) ")
SUMMARY_RE = re.compile(r"(\d+) packets transmitted, (\d+) received")
# The round-trip time of a reply line: "64 bytes from 10.1.2.1: icmp_seq=7 ttl=64 time=0.118 ms".
RTT_RE = re.compile(r"bytes from [^ ]+: icmp_seq=(\d+) .*\btime=(\d+(?:\.\d+)?) ms")
# Echo requests sent in the last moment before SIGINT may still be in flight: not lost.
IN_FLIGHT = 2


@dataclass(frozen=True, slots=True)
class SitePath:
    """One tunnel to ping across: from ``src`` inside ``netns`` to ``dst``."""

    src_host: str
    dst_host: str
    netns: str
    src: str
    dst: str


@dataclass
class PingStream:
    """``ping -D -n -i INTERVAL`` running inside a namespace; replies read as they come."""

    path: SitePath
    interval: float
    proc: subprocess.Popen[str]
    replies: dict[int, float] = field(default_factory=dict)  # icmp_seq -> receive time
    transmitted: int | None = None
    output: list[str] = field(default_factory=list)
    reader: threading.Thread | None = None

    @classmethod
    def start(cls, path: SitePath, interval: float) -> PingStream:
        argv = ["ip", "netns", "exec", path.netns, "ping", "-D", "-n", "-i", f"{interval:g}"]
        argv += ["-I", path.src, path.dst]
        proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
        )
        stream = cls(path, interval, proc)
        stream.reader = threading.Thread(target=stream._read, daemon=True)
        stream.reader.start()
        return stream

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.output.append(line)
            m = REPLY_RE.match(line)
            if m:
                self.replies.setdefault(int(m.group(2)), float(m.group(1)))
                continue
            s = SUMMARY_RE.search(line)
            if s:
                self.transmitted = int(s.group(1))

    def stop(self) -> None:
        """SIGINT (ping prints its summary), then wait for the output to be read."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.reader is not None:
            self.reader.join(5)

    @property
    def sent(self) -> int:
        return self.transmitted if self.transmitted is not None else max(self.replies, default=0)

    @property
    def in_flight(self) -> int:
        """Echo requests that may still have been on their way when ping stopped: the
        last ``IN_FLIGHT``, or as many as ping sent in two of the slowest round trips it
        saw (on a loaded machine a reply can take longer than many intervals)."""
        slowest = max(echo_rtts("".join(self.output)).values(), default=0.0) / 1000
        return max(IN_FLIGHT, math.ceil(2 * slowest / self.interval))

    @property
    def lost(self) -> list[int]:
        """Sequence numbers sent (all but those :attr:`in_flight`) that got no reply."""
        last = self.sent - self.in_flight
        return [seq for seq in range(1, last + 1) if seq not in self.replies]

    def reply_times(self) -> tuple[float, ...]:
        """The receive times of the replies so far, copied at once: the reader thread
        adds to :attr:`replies` while ping runs (iterating it meanwhile fails)."""
        return tuple(self.replies.values())

    def replied_after(self, when: float) -> float | None:
        """Receive time of the first reply after wall-clock ``when``."""
        times = [t for t in self.reply_times() if t > when]
        return min(times) if times else None

    def describe(self) -> str:
        p = self.path
        tail = "".join(self.output[-3:]).strip()
        return (
            f"{p.src_host}->{p.dst_host} ({p.src}->{p.dst}): sent {self.sent}, "
            f"{len(self.replies)} replies, lost seq {self.lost[:20]}; ping said: {tail}"
        )


def echo_rtts(output: str) -> dict[int, float]:
    """icmp_seq -> round-trip time in ms of every echo reply in ``ping``'s output (the
    first of duplicates)."""
    rtts: dict[int, float] = {}
    for m in RTT_RE.finditer(output):
        rtts.setdefault(int(m.group(1)), float(m.group(2)))
    return rtts


def tunnel_pairs(
    reachability: Iterable[Mapping[str, Any]],
    hosts: Mapping[str, Mapping[str, Any]],
    *,
    involving: str | None = None,
) -> list[SitePath]:
    """One path per protected host pair (the lower-named host pings the higher), from the
    lab's reachability list (``lab up -o json``) and layout hosts; only pairs with
    ``involving`` when given."""
    seen: set[tuple[str, str]] = set()
    paths = []
    for p in reachability:
        if p["expect"] != "protect":
            continue
        a, b = sorted((str(p["src_host"]), str(p["dst_host"])))
        if (a, b) in seen or p["src_host"] != a:
            continue
        if involving is not None and involving not in (a, b):
            continue
        seen.add((a, b))
        paths.append(SitePath(a, b, str(hosts[a]["netns"]), str(p["src"]), str(p["dst"])))
    return paths


def start_pings(paths: Sequence[SitePath], interval: float) -> list[PingStream]:
    streams: list[PingStream] = []
    try:
        for path in paths:
            streams.append(PingStream.start(path, interval))
    except BaseException:
        stop_pings(streams)
        raise
    return streams


def stop_pings(streams: Iterable[PingStream]) -> None:
    for s in streams:
        s.stop()


def wait_replying(streams: Sequence[PingStream], timeout: float) -> bool:
    """Until every stream has had a reply (the tunnels carry traffic)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(s.replies for s in streams):
            return True
        time.sleep(0.05)
    return False


def wait_fresh_replies(streams: Sequence[PingStream], count: int, timeout: float) -> bool:
    """Until every stream has ``count`` replies received from now on: traffic crosses
    again after an operation, so a loss in its last moments shows as a gap before them."""
    since = time.time()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(sum(1 for at in s.reply_times() if at > since) >= count for s in streams):
            return True
        time.sleep(0.05)
    return False


def vpnfleet(state: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, "--state", str(state), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "COLUMNS": "200"},
    )


def sa_spis(status: Mapping[str, Any]) -> dict[tuple[str, str, str], tuple[str, str]]:
    """(host, peer, "ike" | "child") -> SPIs, from ``vpnfleet status -o json``, where they
    are hex as swanctl shows them: 16 digits for IKE, 8 for ESP."""
    out: dict[tuple[str, str, str], tuple[str, str]] = {}
    for h in status["hosts"]:
        for ike in (h.get("observed") or {}).get("ike_sas", []):
            if ike["state"] != "established":
                continue
            out[(h["host"], ike["peer"], "ike")] = _hex_spis(ike["spi_i"], ike["spi_r"], 16)
            for child in ike["children"]:
                spis = _hex_spis(child["spi_in"], child["spi_out"], 8)
                out[(h["host"], ike["peer"], "child")] = spis
    return out


def _hex_spis(a: str, b: str, digits: int) -> tuple[str, str]:
    for spi in (a, b):
        assert isinstance(spi, str) and len(spi) == digits, (a, b)
        int(spi, 16)  # raises unless hex
    return a, b
