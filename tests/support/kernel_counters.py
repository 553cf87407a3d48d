"""What the kernel counted inside one network namespace, read from /proc/net: TCP
segments sent and retransmitted and UDP receive-buffer errors (``/proc/net/snmp``), the
datagrams dropped at each raw and UDP socket (the ``drops`` column of ``/proc/net/raw``,
``raw6``, ``udp`` and ``udp6``) and each device's byte and drop counters
(``/proc/net/dev``); and the CPU time of one process (``/proc/PID/stat``). These are the
kernel's own figures, independent of what a process in the namespace counts; /proc/net
shows the network namespace of the reader, so each file is read by ``cat`` run inside
the namespace.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

SNMP = "/proc/net/snmp"
DEV = "/proc/net/dev"
RAW_TABLES = ("/proc/net/raw", "/proc/net/raw6")
UDP_TABLES = ("/proc/net/udp", "/proc/net/udp6")


class CounterError(Exception):
    """A /proc/net file could not be read or has an unexpected shape."""


def parse_snmp(text: str) -> dict[str, dict[str, int]]:
    """``/proc/net/snmp``: pairs of lines, names then values, each line starting with
    its protocol (``Tcp: … OutSegs RetransSegs …`` / ``Tcp: … 1229774 2153 …``)."""
    out: dict[str, dict[str, int]] = {}
    lines = [line.split() for line in text.splitlines() if line.strip()]
    if len(lines) % 2:
        raise CounterError(f"{SNMP}: odd number of lines ({len(lines)})")
    for names, values in zip(lines[::2], lines[1::2], strict=True):
        if names[0] != values[0] or len(names) != len(values):
            raise CounterError(f"{SNMP}: {names[0]} names and values do not pair up")
        out[names[0].rstrip(":")] = {n: int(v) for n, v in zip(names[1:], values[1:], strict=True)}
    return out


def socket_drops(text: str) -> int:
    """The sum of the ``drops`` column of a socket table (``/proc/net/udp``, ``raw`` and
    their IPv6 twins): datagrams the kernel dropped at those sockets, mostly because
    their receive buffer was full."""
    lines = text.splitlines()
    if not lines or lines[0].split()[-1:] != ["drops"]:
        raise CounterError(f"no drops column in the socket table header {lines[:1]}")
    return sum(int(line.split()[-1]) for line in lines[1:] if line.strip())


@dataclass(frozen=True, slots=True)
class Device:
    """One device's counters from ``/proc/net/dev``. For a TUN device ``rx`` counts what
    the process behind it wrote (to the kernel, packets arrive on the device: for a
    tunnel, the decrypted traffic) and ``tx`` what the kernel gave it to read."""

    rx_bytes: int
    rx_packets: int
    rx_dropped: int
    tx_bytes: int
    tx_packets: int
    tx_dropped: int


def parse_dev(text: str) -> dict[str, Device]:
    """``/proc/net/dev``: two header lines, then ``name: 8 receive and 8 transmit
    columns`` (bytes, packets, errs, drop, … for each direction)."""
    out: dict[str, Device] = {}
    for line in text.splitlines()[2:]:
        name, sep, rest = line.partition(":")
        fields = rest.split()
        if not sep or len(fields) != 16:
            raise CounterError(f"{DEV}: unexpected line {line!r}")
        n = [int(f) for f in fields]
        out[name.strip()] = Device(n[0], n[1], n[3], n[8], n[9], n[11])
    return out


def retransmit_percent(out_segs: int, retrans_segs: int) -> float:
    """Retransmitted segments as a percentage of all segments sent. Linux counts a
    retransmission in RetransSegs only, not in OutSegs (RFC 4022's tcpOutSegs:
    "excluding those containing only retransmitted octets"), so all segments sent are
    the sum of both."""
    sent = out_segs + retrans_segs
    if sent <= 0:
        raise CounterError("no TCP segment was sent")
    return 100.0 * retrans_segs / sent


def parse_stat_cpu(text: str, ticks_per_second: int) -> float:
    """User plus system CPU seconds of every thread of a process, from its
    ``/proc/PID/stat`` (utime and stime, fields 14 and 15, in clock ticks). The command
    name in parentheses may hold blanks, so fields are counted after its ``)``."""
    _, sep, rest = text.rpartition(")")
    fields = rest.split()
    if not sep or len(fields) < 13:
        raise CounterError(f"/proc/PID/stat: unexpected text {text[:80]!r}")
    return (int(fields[11]) + int(fields[12])) / ticks_per_second


def process_cpu_seconds(pid: int) -> float:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError as exc:
        raise CounterError(f"cannot read the CPU time of process {pid}: {exc}") from None
    return parse_stat_cpu(text, os.sysconf("SC_CLK_TCK"))


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The counters of one namespace at one moment."""

    snmp: Mapping[str, Mapping[str, int]]
    raw_drops: int
    udp_drops: int
    devices: Mapping[str, Device]

    def tcp(self, name: str) -> int:
        return self.snmp["Tcp"][name]

    def udp(self, name: str) -> int:
        return self.snmp["Udp"][name]


def read_file(netns: str, path: str) -> str:
    done = subprocess.run(
        ["ip", "netns", "exec", netns, "cat", path],
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    if done.returncode != 0:
        raise CounterError(f"cannot read {path} in {netns}: {done.stderr.strip()}")
    return done.stdout


def snapshot(netns: str) -> Snapshot:
    """Read every counter of the namespace ``netns`` (needs root)."""
    return Snapshot(
        snmp=parse_snmp(read_file(netns, SNMP)),
        raw_drops=sum(socket_drops(read_file(netns, p)) for p in RAW_TABLES),
        udp_drops=sum(socket_drops(read_file(netns, p)) for p in UDP_TABLES),
        devices=parse_dev(read_file(netns, DEV)),
    )
