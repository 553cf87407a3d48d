"""Convergence in the lab: time from `apply` to every agent running its plan with every
SA up (an established IKE SA and an installed child SA per peer, both ends) for an
N-host full mesh. Needs root.

    sudo .venv/bin/python bench/convergence.py --hosts 10
    sudo .venv/bin/python bench/convergence.py --hosts 25

Builds the mesh with bench/make_inventory.py, runs ``lab up`` through the lab API under a
lab name of its own, and always removes the lab. Prints one JSON line:

    {"hosts": 10, "seconds": ..., "apply_s": ..., "converge_s": ..., "network_s": ...,
     "agents_s": ..., "reachability_s": ..., "converged": true, "data_plane": true,
     "sas": 90, "sas_up": 90, "pairs": 90, "pairs_pass": 90}

``seconds`` is apply + converge: from the first ApplyPlan to the status poll that found
every peer of every agent up (polled every 0.25 s). ``sas`` counts one per host and peer
(each tunnel twice); exit code 3 when the lab did not converge or has no data plane.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import sys
import tempfile
from pathlib import Path

from vpnfleet.controller import lab
from vpnfleet.controller.state import StateDir

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_inventory import write_inventory


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hosts", type=int, default=10)
    parser.add_argument("--timeout", type=float, default=120.0)
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("convergence: needs root (network namespaces)", file=sys.stderr)
        return 1
    name = "bc" + secrets.token_hex(3)
    with tempfile.TemporaryDirectory(prefix="vpnfleet-convergence-") as tmp:
        inventory, state = Path(tmp) / "inventory", StateDir(Path(tmp) / "state")
        write_inventory(inventory, args.hosts, "mesh")
        try:
            result = asyncio.run(lab.up(inventory, state, name, timeout=args.timeout))
        finally:
            lab.down(state, name)
    s = result.seconds
    observed = [h.observed for h in result.status.hosts if h.observed is not None]
    sas = sum(o.peers_total for o in observed)
    sas_up = sum(
        1
        for o in observed
        for sa in o.ike_sas
        if sa.state == "established" and any(c.state == "installed" for c in sa.children)
    )
    print(
        json.dumps(
            {
                "hosts": args.hosts,
                "seconds": round(s["apply"] + s["converge"], 3),
                "apply_s": round(s["apply"], 3),
                "converge_s": round(s["converge"], 3),
                "network_s": round(s["network"], 3),
                "agents_s": round(s["agents"], 3),
                "reachability_s": round(s["reachability"], 3),
                "converged": result.converged,
                "data_plane": result.data_plane,
                "sas": sas,
                "sas_up": sas_up,
                "pairs": len(result.pairs),
                "pairs_pass": sum(p.result == "pass" for p in result.pairs),
            }
        )
    )
    return 0 if result.converged and result.data_plane and sas_up == sas else 3


if __name__ == "__main__":
    sys.exit(main())
