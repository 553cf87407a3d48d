"""Packets lost during a fleet-wide rekey of an N-host full mesh under continuous ping.

    sudo .venv/bin/python bench/rekey_loss.py --hosts 10

Builds the mesh with bench/make_inventory.py as a lab of its own, starts one ``ping -i
INTERVAL`` per tunnel (site address to site address, inside the source host's
namespace), runs ``vpnfleet rekey --child`` then ``vpnfleet rekey --ike`` (every SA,
both ends: each tunnel is rekeyed from both sides, so simultaneous rekeys happen too),
stops the pings and counts the echo requests that got no reply. Always removes the lab.
Prints one JSON line:

    {"tunnels": 45, "lost": 0, "sent": ..., "interval_s": 0.05, "rekey_child_s": ...,
     "rekey_ike_s": ..., "spis_changed": 180, "sas": 180, "peers_down": 0,
     "rekey_errors": []}

``sas`` counts IKE and child SAs per host and peer; ``peers_down`` the (host, peer)
tunnels not up in the status read after the rekey; exit code 4 when anything was lost,
a rekey failed or a tunnel is down.

The ping helpers here (:class:`PingStream`, :func:`tunnel_pairs`) are shared with the
lab fault tests (tests/integration/test_lab_rekey.py, test_lab_faults.py) and
bench/recovery.py.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import tempfile
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
    def lost(self) -> list[int]:
        """Sequence numbers sent (all but the last ``IN_FLIGHT``) that got no reply."""
        return [seq for seq in range(1, self.sent - IN_FLIGHT + 1) if seq not in self.replies]

    def replied_after(self, when: float) -> float | None:
        """Receive time of the first reply after wall-clock ``when``."""
        times = [t for t in self.replies.values() if t > when]
        return min(times) if times else None

    def describe(self) -> str:
        p = self.path
        tail = "".join(self.output[-3:]).strip()
        return (
            f"{p.src_host}->{p.dst_host} ({p.src}->{p.dst}): sent {self.sent}, "
            f"{len(self.replies)} replies, lost seq {self.lost[:20]}; ping said: {tail}"
        )


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


def vpnfleet(state: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, "--state", str(state), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "COLUMNS": "200"},
    )


def sa_spis(status: Mapping[str, Any]) -> dict[tuple[str, str, str], tuple[int, int]]:
    """(host, peer, "ike" | "child") -> SPIs, from ``vpnfleet status -o json``."""
    out: dict[tuple[str, str, str], tuple[int, int]] = {}
    for h in status["hosts"]:
        for ike in (h.get("observed") or {}).get("ike_sas", []):
            if ike["state"] != "established":
                continue
            out[(h["host"], ike["peer"], "ike")] = (ike["spi_i"], ike["spi_r"])
            for child in ike["children"]:
                out[(h["host"], ike["peer"], "child")] = (child["spi_in"], child["spi_out"])
    return out


def rekey_under_ping(
    controller: Path, inventory: Path, paths: Sequence[SitePath], interval: float
) -> dict[str, Any]:
    """Ping every path, rekey child then IKE SAs fleet-wide, stop; the figures."""
    before = json.loads(vpnfleet(controller, "status", "-i", str(inventory), "-o", "json").stdout)
    streams = start_pings(paths, interval)
    try:
        if not wait_replying(streams, 10):
            raise RuntimeError("pings never passed: " + "; ".join(s.describe() for s in streams))
        time.sleep(0.5)
        seconds = {}
        errors: list[str] = []
        for what in ("child", "ike"):
            mark = time.monotonic()
            res = vpnfleet(controller, "rekey", "-i", str(inventory), f"--{what}", "-o", "json")
            seconds[what] = time.monotonic() - mark
            if res.returncode != 0:
                errors += [
                    f"rekey --{what} {h['host']}: {h['error']}"
                    for h in json.loads(res.stdout or '{"hosts": []}')["hosts"]
                    if h["outcome"] not in ("ok", "changed")
                ] or [f"rekey --{what} exit {res.returncode}: {res.stderr.strip()}"]
            time.sleep(1.0)
        time.sleep(1.0)
    finally:
        stop_pings(streams)
    after = json.loads(vpnfleet(controller, "status", "-i", str(inventory), "-o", "json").stdout)
    old, new = sa_spis(before), sa_spis(after)
    return {
        "lost": sum(len(s.lost) for s in streams),
        "sent": sum(s.sent for s in streams),
        "rekey_child_s": round(seconds["child"], 3),
        "rekey_ike_s": round(seconds["ike"], 3),
        "sas": len(old),
        "spis_changed": sum(1 for k, v in old.items() if k in new and new[k] != v),
        "peers_down": sum(
            (h.get("observed") or {}).get("peers_total", 0)
            - (h.get("observed") or {}).get("peers_up", 0)
            for h in after["hosts"]
        ),
        "rekey_errors": errors,
        "losses": [s.describe() for s in streams if s.lost],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hosts", type=int, default=10)
    parser.add_argument("--interval", type=float, default=0.05, help="ping interval, seconds")
    parser.add_argument("--timeout", type=float, default=120.0)
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("rekey_loss: needs root (network namespaces)", file=sys.stderr)
        return 1
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from make_inventory import write_inventory

    from vpnfleet.controller import lab
    from vpnfleet.controller.state import StateDir

    name = "br" + secrets.token_hex(3)
    with tempfile.TemporaryDirectory(prefix="vpnfleet-rekey-loss-") as tmp:
        inventory, state = Path(tmp) / "inventory", StateDir(Path(tmp) / "state")
        write_inventory(inventory, args.hosts, "mesh")
        try:
            result = asyncio.run(lab.up(inventory, state, name, timeout=args.timeout))
            if not result.converged:
                print(f"rekey_loss: the {args.hosts}-host lab did not converge", file=sys.stderr)
                return 3
            up = result.to_json()
            paths = tunnel_pairs(up["reachability"], up["layout"]["hosts"])
            figures = rekey_under_ping(
                result.lab_dir / "controller", inventory, paths, args.interval
            )
        finally:
            lab.down(state, name)
    for line in figures.pop("losses") + figures["rekey_errors"]:
        print(f"rekey_loss: {line}", file=sys.stderr)
    print(json.dumps({"tunnels": len(paths), **figures, "interval_s": args.interval}))
    ok = figures["lost"] == 0 and not figures["rekey_errors"] and figures["peers_down"] == 0
    return 0 if ok else 4


if __name__ == "__main__":
    sys.exit(main())
