"""Convergence in the lab: time from `apply` to every agent running its plan with every
SA up (an established IKE SA and an installed child SA per peer, both ends) for an
N-host full mesh. Needs root.

    sudo .venv/bin/python bench/convergence.py --hosts 10
    sudo .venv/bin/python bench/convergence.py --hosts 25
    sudo .venv/bin/python bench/convergence.py --hosts 100 --timeout 300

Builds the mesh with bench/make_inventory.py, runs ``lab up`` through the lab API under a
lab name of its own, and always removes the lab. Prints one JSON line:

    {"hosts": 10, "seconds": ..., "apply_s": ..., "converge_s": ..., "network_s": ...,
     "agents_s": ..., "reachability_s": ..., "converged": true, "data_plane": true,
     "sas": 90, "sas_up": 90, "pairs": 90, "pairs_pass": 90,
     "rss_mib_mean": ..., "rss_mib_max": ..., "cpu_s_mean": ..., "idle_cpu_pct_mean": ...,
     "idle_cpu_pct_max": ..., "idle_s": 5.0}

``seconds`` is apply + converge: from the first ApplyPlan to the status poll that found
every peer of every agent up (polled every 0.25 s). ``sas`` counts one per host and peer
(each tunnel twice); exit code 3 when the lab did not converge or has no data plane.

``lab up``'s progress lines go to stderr. Once the lab is up, each agent's resident
memory (VmRSS of /proc/PID/status, in MiB) is read, and its CPU time (user + system,
/proc/PID/stat) over a quiet window of ``--idle`` seconds in which nothing is asked of
the agents, as a percentage of one core: the mean and the largest over the agents;
``cpu_s_mean`` is the CPU time an agent used from its start to that window (start-up,
its plan, its SAs), the mean over the agents.
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

from vpnfleet.controller import lab
from vpnfleet.controller.lab import supervisor
from vpnfleet.controller.statedir.state import StateDir

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_inventory import write_inventory


def agent_pids(lab_dir: Path) -> list[int]:
    """The pids of the lab's running agents, as its supervisor records them."""
    state = supervisor.read_state(lab_dir) or {}
    return [
        int(a["pid"]) for a in state.get("agents", {}).values() if isinstance(a.get("pid"), int)
    ]


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise ValueError(f"/proc/{pid}/status has no VmRSS")


def cpu_seconds(pid: int) -> float:
    # Fields after the command name: utime and stime are the 14th and 15th of the line.
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def agent_resources(lab_dir: Path, idle: float) -> dict[str, float]:
    """RSS per agent now, and CPU per agent over ``idle`` quiet seconds (% of one core)."""
    pids = agent_pids(lab_dir)
    if not pids:
        return {}
    rss = [rss_mib(p) for p in pids]
    before = {p: cpu_seconds(p) for p in pids}
    used = list(before.values())
    started = time.monotonic()
    time.sleep(idle)
    window = time.monotonic() - started
    cpu = [100 * (cpu_seconds(p) - before[p]) / window for p in pids]
    return {
        "agents": len(pids),
        "rss_mib_mean": round(sum(rss) / len(rss), 1),
        "rss_mib_max": round(max(rss), 1),
        "cpu_s_mean": round(sum(used) / len(used), 2),
        "idle_cpu_pct_mean": round(sum(cpu) / len(cpu), 2),
        "idle_cpu_pct_max": round(max(cpu), 2),
        "idle_s": round(window, 2),
    }


def progress(line: str) -> None:
    """``lab up``'s progress lines, on stderr, each with the seconds since the start."""
    print(f"{time.monotonic() - STARTED:7.2f} {line}", file=sys.stderr, flush=True)


STARTED = time.monotonic()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hosts", type=int, default=10)
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument(
        "--idle", type=float, default=5.0, help="quiet window for idle CPU, seconds"
    )
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("convergence: needs root (network namespaces)", file=sys.stderr)
        return 1
    name = "bc" + secrets.token_hex(3)
    with tempfile.TemporaryDirectory(prefix="vpnfleet-convergence-") as tmp:
        inventory, state = Path(tmp) / "inventory", StateDir(Path(tmp) / "state")
        write_inventory(inventory, args.hosts, "mesh")
        try:
            result = asyncio.run(
                lab.up(inventory, state, name, timeout=args.timeout, progress=progress)
            )
            resources = agent_resources(result.lab_dir, args.idle)
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
                **resources,
            }
        )
    )
    return 0 if result.converged and result.data_plane and sas_up == sas else 3


if __name__ == "__main__":
    sys.exit(main())
