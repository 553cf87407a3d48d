"""Seconds and packets lost for a full PSK rotation of an N-host mesh under continuous ping.

    sudo .venv/bin/python bench/rotation.py --hosts 10

Builds the mesh with bench/make_inventory.py as a lab of its own, starts one ``ping -i
INTERVAL`` per tunnel (site to site, from the source host's namespace), runs ``vpnfleet
rotate psk`` (every pair to a new epoch, staged responder first), stops the pings and
counts echo requests without a reply. Always removes the lab. Prints one JSON line:

    {"kind": "psk", "seconds": ..., "lost": 0, "hosts": 10, "tunnels": 45, "sent": ...}

Exit code 4 when a packet was lost or the rotation failed.
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
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from rekey_loss import start_pings, stop_pings, tunnel_pairs, vpnfleet, wait_replying


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hosts", type=int, default=10)
    parser.add_argument("--interval", type=float, default=0.05, help="ping interval, seconds")
    parser.add_argument("--timeout", type=float, default=120.0)
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("rotation: needs root (network namespaces)", file=sys.stderr)
        return 1
    from make_inventory import write_inventory

    from vpnfleet.controller import lab
    from vpnfleet.controller.state import StateDir

    name = "bp" + secrets.token_hex(3)
    with tempfile.TemporaryDirectory(prefix="vpnfleet-rotation-") as tmp:
        inventory, state = Path(tmp) / "inventory", StateDir(Path(tmp) / "state")
        write_inventory(inventory, args.hosts, "mesh")
        try:
            result = asyncio.run(lab.up(inventory, state, name, timeout=args.timeout))
            if not result.converged:
                print(f"rotation: the {args.hosts}-host lab did not converge", file=sys.stderr)
                return 3
            up = result.to_json()
            paths = tunnel_pairs(up["reachability"], up["layout"]["hosts"])
            streams = start_pings(paths, args.interval)
            try:
                if not wait_replying(streams, 10):
                    print("rotation: pings never passed", file=sys.stderr)
                    return 3
                time.sleep(0.5)
                mark = time.monotonic()
                res = vpnfleet(
                    result.lab_dir / "controller",
                    "rotate", "psk", "-i", str(inventory), "-o", "json",
                    timeout=args.timeout * 4,
                )  # fmt: skip
                seconds = time.monotonic() - mark
                time.sleep(1.0)
            finally:
                stop_pings(streams)
        finally:
            lab.down(state, name)
    lost = sum(len(s.lost) for s in streams)
    for s in streams:
        if s.lost:
            print(f"rotation: {s.describe()}", file=sys.stderr)
    if res.returncode != 0:
        print(f"rotation: rotate psk exit {res.returncode}: {res.stdout[-2000:]}", file=sys.stderr)
    figures = {
        "kind": "psk",
        "seconds": round(seconds, 3),
        "lost": lost,
        "hosts": args.hosts,
        "tunnels": len(paths),
        "sent": sum(s.sent for s in streams),
    }
    print(json.dumps(figures))
    return 0 if lost == 0 and res.returncode == 0 else 4


if __name__ == "__main__":
    sys.exit(main())
