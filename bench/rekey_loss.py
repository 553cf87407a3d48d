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

The ping helpers (:class:`PingStream`, :func:`tunnel_pairs`) are in tests/support/pings.py,
shared with the lab tests and the other lab benchmarks.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# The repository root, for the lab helpers the tests share (tests/support).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.support.pings import (
    SitePath,
    sa_spis,
    start_pings,
    stop_pings,
    tunnel_pairs,
    vpnfleet,
    wait_replying,
)


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
    from make_inventory import write_inventory

    from vpnfleet.controller import lab
    from vpnfleet.controller.statedir.state import StateDir

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
