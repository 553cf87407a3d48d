"""Agent recovery after SIGKILL: seconds from the kill until every tunnel of the killed
host carries traffic again (goal: 10 s or less). Needs root.

    sudo .venv/bin/python bench/recovery.py [--hosts 4] [--victim h3] [--rounds 3]

Builds an N-host mesh with bench/make_inventory.py (default lifetimes and liveness
settings: the restarted agent must not depend on its peers' liveness checks) as a lab of
its own, pings across every tunnel of the victim continuously (``ping -i 0.05``), kills
the victim's agent with SIGKILL, and takes the first reply received after the kill on
each tunnel; the slowest tunnel is the round's figure. The supervisor restarts the agent
and it comes back from its persisted plan, without the controller. Always removes the
lab. Prints one JSON line:

    {"seconds": ..., "rounds": [...], "hosts": 4, "victim": "h3", "tunnels": 3}

``seconds`` is the worst round. The victim defaults to the last host, the responder of
all its tunnels (its peers initiate them), the harder case.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import signal
import sys
import tempfile
import time
from pathlib import Path

# The repository root, for the lab helpers the tests share (tests/support).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from make_inventory import write_inventory

from tests.support.pings import start_pings, stop_pings, tunnel_pairs, wait_replying
from vpnfleet.controller import lab
from vpnfleet.controller.lab import supervisor
from vpnfleet.controller.statedir.state import StateDir

KILL_MARGIN = 0.1  # a reply received this soon after the kill was already in flight


def agent_pid(lab_dir: Path, host: str, timeout: float = 30.0) -> int:
    """The agent's pid as the supervisor records it, once it runs."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pid = ((supervisor.read_state(lab_dir) or {}).get("agents", {}).get(host) or {}).get("pid")
        if isinstance(pid, int):
            return pid
        time.sleep(0.05)
    raise RuntimeError(f"the supervisor reports no running agent for {host}")


def one_round(lab_dir: Path, up: dict[str, object], victim: str, timeout: float) -> float:
    layout = up["layout"]
    assert isinstance(layout, dict)
    reachability = up["reachability"]
    assert isinstance(reachability, list)
    paths = tunnel_pairs(reachability, layout["hosts"], involving=victim)
    streams = start_pings(paths, 0.05)
    try:
        if not wait_replying(streams, 10):
            raise RuntimeError("no ping passed before the kill")
        pid = agent_pid(lab_dir, victim)
        killed_at = time.time()
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(s.replied_after(killed_at + KILL_MARGIN) for s in streams):
                break
            time.sleep(0.05)
        else:
            raise RuntimeError(
                f"tunnels of {victim} did not recover within {timeout:g}s: "
                + "; ".join(s.describe() for s in streams)
            )
    finally:
        stop_pings(streams)
    return (
        max(t for s in streams if (t := s.replied_after(killed_at + KILL_MARGIN)) is not None)
        - killed_at
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hosts", type=int, default=4)
    parser.add_argument("--victim", default="", help="host to kill (default: the last)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=120.0)
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("recovery: needs root (network namespaces)", file=sys.stderr)
        return 1
    name = "bv" + secrets.token_hex(3)
    rounds: list[float] = []
    with tempfile.TemporaryDirectory(prefix="vpnfleet-recovery-") as tmp:
        inventory, state = Path(tmp) / "inventory", StateDir(Path(tmp) / "state")
        write_inventory(inventory, args.hosts, "mesh")
        try:
            result = asyncio.run(lab.up(inventory, state, name, timeout=60))
            if not result.converged:
                print("recovery: the lab did not converge", file=sys.stderr)
                return 3
            up = result.to_json()
            victim = args.victim or sorted(up["layout"]["hosts"])[-1]
            for _ in range(args.rounds):
                rounds.append(one_round(result.lab_dir, up, victim, args.timeout))
                time.sleep(1.0)
        finally:
            lab.down(state, name)
    print(
        json.dumps(
            {
                "seconds": round(max(rounds), 3),
                "rounds": [round(r, 3) for r in rounds],
                "hosts": args.hosts,
                "victim": victim,
                "tunnels": args.hosts - 1,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
