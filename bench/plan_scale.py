"""Planner at scale: build_plans on big synthetic inventories, and what ``serve`` does
with a commit that changes one host.

Writes inventories with bench/make_inventory.py into a temporary directory, loads them
with the real inventory loader (not timed), and times the planner alone with
time.perf_counter, median of 3 runs. Prints one JSON line:

    {"mesh_1000_s": ..., "hubspoke_10000_s": ..., "replan_one_host_ms": ...,
     "replan_pushed_hosts": ..., "serve_revision_ms": ...}

- mesh_1000_s: build_plans for a 1,000-host full mesh (499,500 pairs); target <= 2 s.
- hubspoke_10000_s: 10,000 hosts, 20 hubs; target <= 2 s.
- replan_one_host_ms: the planning step of serve's compile of a commit that changes one
  mesh host's dpd_delay (the mesh is in a git repository; ``Reconciler.compile``, with
  the planner serve keeps across revisions); target <= 50 ms.
- replan_pushed_hosts: hosts whose plans changed in content for that commit (should be 1).
- serve_revision_ms: the whole of that compile: reading the revision out of git,
  loading the inventory and planning.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vpnfleet.controller.gitops.reconcile import Reconciler, ServeOptions
from vpnfleet.controller.inventory import load_inventory
from vpnfleet.controller.planner import Planner, build_plans
from vpnfleet.controller.statedir.state import StateDir

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_inventory import write_inventory

SECRET = b"bench master secret, 32 bytes.."


def median_time(run: Callable[[], object], repeat: int = 3) -> float:
    """Median wall time of ``run``; freeing its result is not part of the time.

    The young-generation collection that follows a run is: while the planner pauses
    the cyclic collector, the objects it makes pile up in the youngest generation, and
    the first collection after it (at the next allocation, wherever that is) scans them.
    """
    times = []
    for _ in range(repeat):
        gc.collect()
        started = time.perf_counter()
        result = run()
        gc.collect(0)
        times.append(time.perf_counter() - started)
        del result
    return statistics.median(times)


def commit(repo: Path, message: str) -> str:
    git = ["git", "-C", str(repo), "-c", "user.name=bench", "-c", "user.email=bench@example.org"]
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", message], check=True)
    head = subprocess.run([*git, "rev-parse", "HEAD"], check=True, capture_output=True)
    return head.stdout.decode().strip()


def serve_replan(repo: Path, host: str, state: StateDir) -> tuple[float, float, int]:
    """Median times of serve's compile of a commit changing ``host``'s dpd_delay, and of
    the planning in it; and the hosts whose plans changed."""
    reconciler = Reconciler(state, ServeOptions(inventory=repo / "inv"))
    planner = reconciler.planner
    plan = planner.plan
    planning: list[float] = []

    def timed_plan(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return plan(*args, **kwargs)
        finally:
            planning.append(time.perf_counter() - started)

    planner.plan = timed_plan  # type: ignore[method-assign]
    previous = reconciler.compile(commit(repo, "fleet"))
    host_vars = repo / "inv" / "host_vars"
    host_vars.mkdir(exist_ok=True)
    revisions = []
    for delay in (41, 42, 43):
        (host_vars / f"{host}.yaml").write_text(f"dpd_delay: {delay}\n", encoding="utf-8")
        revisions.append(commit(repo, f"{host}: dpd_delay {delay}"))
    del planning[:]
    times, pushed = [], []
    for revision in revisions:
        started = time.perf_counter()
        fleet = reconciler.compile(revision)
        times.append(time.perf_counter() - started)
        pushed.append(len(Planner.changed_hosts(previous.plans, fleet.plans)))
        previous = fleet
    return statistics.median(times), statistics.median(planning), max(pushed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mesh-hosts", type=int, default=1000)
    parser.add_argument("--hubspoke-hosts", type=int, default=10000)
    parser.add_argument("--hubs", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="vpnfleet-plan-bench-") as tmp:
        repo = Path(tmp) / "repo"
        mesh_dir = repo / "inv"
        write_inventory(mesh_dir, args.mesh_hosts, "mesh")
        mesh = load_inventory(mesh_dir)
        mesh_s = median_time(lambda: build_plans(mesh, master_secret=SECRET))

        hs_dir = Path(tmp) / "hub-spoke"
        write_inventory(hs_dir, args.hubspoke_hosts, "hub-spoke", args.hubs)
        hub_spoke = load_inventory(hs_dir)
        hs_s = median_time(lambda: build_plans(hub_spoke, master_secret=SECRET))

        subprocess.run(["git", "init", "-q", str(repo)], check=True)
        host = sorted(mesh.hosts)[len(mesh.hosts) // 2]
        serve_s, replan_s, pushed = serve_replan(repo, host, StateDir(Path(tmp) / "state"))
    print(
        json.dumps(
            {
                "mesh_1000_s": round(mesh_s, 3),
                "hubspoke_10000_s": round(hs_s, 3),
                "replan_one_host_ms": round(replan_s * 1000, 1),
                "replan_pushed_hosts": pushed,
                "serve_revision_ms": round(serve_s * 1000, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
