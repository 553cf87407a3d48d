"""Seconds and packets lost for a full credential rotation of an N-host mesh under
continuous ping: PSKs (``rotate psk``), the fleet CA (``rotate ca``) or the agents'
certificates (``rotate certs``).

    sudo .venv/bin/python bench/rotation.py --hosts 10            # psk, then ca
    sudo .venv/bin/python bench/rotation.py --hosts 10 --kind ca

For each kind, builds the mesh with bench/make_inventory.py as a lab of its own (``auth:
pubkey`` for ca and certs, PSKs for psk), starts one ``ping -i INTERVAL`` per tunnel
(site to site, from the source host's namespace), runs ``vpnfleet rotate KIND``, stops
the pings and counts echo requests without a reply. Always removes the lab. Prints one
JSON line per kind:

    {"kind": "ca", "seconds": ..., "lost": 0, "hosts": 10, "tunnels": 45, "sent": ...}

Exit code 4 when a packet was lost or a rotation failed.
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
from typing import Any

# The repository root, for the lab helpers the tests share (tests/support).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.support.pings import start_pings, stop_pings, tunnel_pairs, vpnfleet, wait_replying

KINDS = ("psk", "ca", "certs")
FIELDS = ("kind", "seconds", "lost", "hosts", "tunnels", "sent")


def rotate_under_ping(kind: str, hosts: int, interval: float, timeout: float) -> dict[str, Any]:
    """One lab, one rotation: the figures, with "error" set when it went wrong."""
    from make_inventory import write_inventory

    from vpnfleet.controller import lab
    from vpnfleet.controller.statedir.state import StateDir

    name = "bp" + secrets.token_hex(3)
    figures: dict[str, Any] = {"kind": kind, "hosts": hosts}
    with tempfile.TemporaryDirectory(prefix="vpnfleet-rotation-") as tmp:
        inventory, state = Path(tmp) / "inventory", StateDir(Path(tmp) / "state")
        write_inventory(inventory, hosts, "mesh")
        if kind != "psk":
            with (inventory / "group_vars" / "all.yaml").open("a") as f:
                f.write("auth: pubkey\n")
        try:
            result = asyncio.run(lab.up(inventory, state, name, timeout=timeout))
            if not result.converged:
                return {**figures, "error": f"the {hosts}-host lab did not converge"}
            up = result.to_json()
            paths = tunnel_pairs(up["reachability"], up["layout"]["hosts"])
            streams = start_pings(paths, interval)
            try:
                if not wait_replying(streams, 10):
                    return {**figures, "error": "pings never passed"}
                time.sleep(0.5)
                mark = time.monotonic()
                res = vpnfleet(
                    result.lab_dir / "controller",
                    "rotate", kind, "-i", str(inventory), "-o", "json",
                    timeout=timeout * 4,
                )  # fmt: skip
                seconds = time.monotonic() - mark
                time.sleep(1.0)
            finally:
                stop_pings(streams)
        finally:
            lab.down(state, name)
    for s in streams:
        if s.lost:
            print(f"rotation {kind}: {s.describe()}", file=sys.stderr)
    figures.update(
        seconds=round(seconds, 3),
        lost=sum(len(s.lost) for s in streams),
        tunnels=len(paths),
        sent=sum(s.sent for s in streams),
    )
    if res.returncode != 0:
        figures["error"] = f"rotate {kind} exit {res.returncode}: {res.stdout[-2000:]}"
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hosts", type=int, default=10)
    parser.add_argument(
        "--kind",
        choices=KINDS,
        action="append",
        help="rotation to measure (repeat for several; default: psk and ca)",
    )
    parser.add_argument("--interval", type=float, default=0.05, help="ping interval, seconds")
    parser.add_argument("--timeout", type=float, default=120.0)
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("rotation: needs root (network namespaces)", file=sys.stderr)
        return 1
    failed = False
    for kind in args.kind or ["psk", "ca"]:
        figures = rotate_under_ping(kind, args.hosts, args.interval, args.timeout)
        error = figures.pop("error", "")
        if error:
            print(f"rotation {kind}: {error}", file=sys.stderr)
            if "seconds" not in figures:
                return 3
        failed = failed or bool(error) or figures["lost"] != 0
        print(json.dumps({k: figures[k] for k in FIELDS}), flush=True)
    return 4 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
