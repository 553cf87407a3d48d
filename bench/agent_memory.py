"""Memory per agent: resident set size of the agent processes of an N-host full-mesh lab
with every tunnel up and carrying a little traffic. Needs root.

    sudo .venv/bin/python bench/agent_memory.py [--hosts 10]

Builds the mesh with bench/make_inventory.py as a lab of its own, pings every site pair
once (``lab up`` does), waits a moment, then reads VmRSS of each agent process (its pid
from the lab's supervisor.json) from /proc. Always removes the lab. Prints one JSON line:

    {"rss_mib": ..., "rss_mib_max": ..., "rss_mib_min": ..., "agents": 10, "peers": 9}

``rss_mib`` is the mean over the agents.
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
from make_inventory import write_inventory

from vpnfleet.controller import lab
from vpnfleet.controller.lab import supervisor
from vpnfleet.controller.statedir.state import StateDir

SETTLE_SECONDS = 2.0


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hosts", type=int, default=10)
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("agent_memory: needs root (network namespaces)", file=sys.stderr)
        return 1
    name = "bm" + secrets.token_hex(3)
    with tempfile.TemporaryDirectory(prefix="vpnfleet-agent-memory-") as tmp:
        inventory, state = Path(tmp) / "inventory", StateDir(Path(tmp) / "state")
        write_inventory(inventory, args.hosts, "mesh")
        try:
            result = asyncio.run(lab.up(inventory, state, name, timeout=120))
            if not result.converged:
                print("agent_memory: the lab did not converge", file=sys.stderr)
                return 3
            time.sleep(SETTLE_SECONDS)
            agents = (supervisor.read_state(result.lab_dir) or {}).get("agents", {})
            pids = {h: a["pid"] for h, a in agents.items() if isinstance(a.get("pid"), int)}
            if len(pids) != args.hosts:
                print(f"agent_memory: only {len(pids)} agents running", file=sys.stderr)
                return 3
            rss = [rss_kib(pid) / 1024 for pid in pids.values()]
        finally:
            lab.down(state, name)
    print(
        json.dumps(
            {
                "rss_mib": round(sum(rss) / len(rss), 1),
                "rss_mib_max": round(max(rss), 1),
                "rss_mib_min": round(min(rss), 1),
                "agents": len(rss),
                "peers": args.hosts - 1,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
