"""Planner at scale: build_plans on big synthetic inventories, and an incremental re-plan.

Writes inventories with bench/make_inventory.py into a temporary directory, loads them
with the real inventory loader (not timed), and times the planner alone with
time.perf_counter, median of 3 runs. Prints one JSON line:

    {"mesh_1000_s": ..., "hubspoke_10000_s": ..., "replan_one_host_ms": ...,
     "replan_pushed_hosts": ...}

- mesh_1000_s: build_plans for a 1,000-host full mesh (499,500 pairs); target <= 2 s.
- hubspoke_10000_s: 10,000 hosts, 20 hubs; target <= 2 s.
- replan_one_host_ms: Planner.plan after one mesh host's dpd_delay changed (the
  inventory is loaded beforehand); target <= 50 ms.
- replan_pushed_hosts: hosts changed_hosts() reports for that change (should be 1).
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from vpnfleet.controller.inventory import Inventory, load_inventory
from vpnfleet.controller.planner import Planner, build_plans

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_inventory import write_inventory

SECRET = b"bench master secret, 32 bytes.."


def median_time(run: Callable[[], object], repeat: int = 3) -> float:
    """Median wall time of ``run``; freeing its result is not part of the time."""
    times = []
    for _ in range(repeat):
        gc.collect()
        started = time.perf_counter()
        result = run()
        times.append(time.perf_counter() - started)
        del result
    return statistics.median(times)


def replan(root: Path, base: Inventory, host: str) -> tuple[float, int]:
    """Median time of Planner.plan after ``host``'s dpd_delay changes, and hosts changed."""
    planner = Planner(master_secret=SECRET)
    previous = planner.plan(base)
    variants = []
    host_vars = root / "host_vars"
    host_vars.mkdir(exist_ok=True)
    for delay in (41, 42, 43):
        (host_vars / f"{host}.yaml").write_text(f"dpd_delay: {delay}\n", encoding="utf-8")
        variants.append(load_inventory(root))
    times, pushed = [], []
    for inventory in variants:
        started = time.perf_counter()
        plans = planner.plan(inventory)
        times.append(time.perf_counter() - started)
        pushed.append(len(planner.changed_hosts(previous, plans)))
        previous = plans
    return statistics.median(times), max(pushed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mesh-hosts", type=int, default=1000)
    parser.add_argument("--hubspoke-hosts", type=int, default=10000)
    parser.add_argument("--hubs", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="vpnfleet-plan-bench-") as tmp:
        mesh_dir = Path(tmp) / "mesh"
        write_inventory(mesh_dir, args.mesh_hosts, "mesh")
        mesh = load_inventory(mesh_dir)
        mesh_s = median_time(lambda: build_plans(mesh, master_secret=SECRET))

        hs_dir = Path(tmp) / "hub-spoke"
        write_inventory(hs_dir, args.hubspoke_hosts, "hub-spoke", args.hubs)
        hub_spoke = load_inventory(hs_dir)
        hs_s = median_time(lambda: build_plans(hub_spoke, master_secret=SECRET))

        replan_s, pushed = replan(mesh_dir, mesh, sorted(mesh.hosts)[len(mesh.hosts) // 2])
    print(
        json.dumps(
            {
                "mesh_1000_s": round(mesh_s, 3),
                "hubspoke_10000_s": round(hs_s, 3),
                "replan_one_host_ms": round(replan_s * 1000, 1),
                "replan_pushed_hosts": pushed,
            }
        )
    )


if __name__ == "__main__":
    main()
