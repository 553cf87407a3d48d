"""What a route into the TUN device costs the agent: netlink requests and CPU per route
added and removed through :class:`~vpnfleet.agent.io.routes.Routing`, as at convergence
(one route per peer's prefix into the TUN, in the tunnel table). Needs root.

    sudo .venv/bin/python bench/route_installs.py [--routes 1000] [--rounds 3]

Creates a network namespace of its own with a TUN device in it, adds ``--routes`` /24
routes through the device and removes them again, ``--rounds`` times, and always removes
the namespace. Prints one JSON line:

    {"routes": 1000, "rounds": 3, "requests_per_add": 1.0, "requests_per_remove": 1.0,
     "add_cpu_us": ..., "remove_cpu_us": ...}

``requests_*`` count the netlink requests made (lookups included) per route;
``*_cpu_us`` is the CPU time (user + system) of the process per route, the median of
the rounds.
"""

from __future__ import annotations

import argparse
import secrets
import subprocess
import sys

CHILD = """
import asyncio, json, statistics, sys, time
from vpnfleet.agent.io.routes import Routing
from vpnfleet.agent.io.tun import LinuxTun

ROUTES, ROUNDS = int(sys.argv[1]), int(sys.argv[2])
PREFIXES = [f"10.{i // 250}.{i % 250}.0/24" for i in range(ROUTES)]

async def main():
    tun = LinuxTun("vfbench0")
    counts = {"n": 0}
    async with Routing() as routing:
        ipr = routing.ipr
        # link_lookup(ifname=...) is a link("get") request.
        for name in ("link", "route"):
            def counted(*args, _method=getattr(ipr, name), **kwargs):
                counts["n"] += 1
                return _method(*args, **kwargs)
            setattr(ipr, name, counted)
        await routing.link_up(tun.name)
        add, remove, requests = [], [], {"add": 0, "remove": 0}
        for _ in range(ROUNDS):
            for action, out in (("add", add), ("remove", remove)):
                step = routing.add_route if action == "add" else routing.remove_route
                before, start = counts["n"], time.process_time()
                for prefix in PREFIXES:
                    await step(prefix, tun.name, table=4500)
                out.append((time.process_time() - start) / ROUTES * 1e6)
                requests[action] += counts["n"] - before
    tun.close()
    print(json.dumps({
        "routes": ROUTES,
        "rounds": ROUNDS,
        "requests_per_add": round(requests["add"] / (ROUTES * ROUNDS), 3),
        "requests_per_remove": round(requests["remove"] / (ROUTES * ROUNDS), 3),
        "add_cpu_us": round(statistics.median(add), 1),
        "remove_cpu_us": round(statistics.median(remove), 1),
    }))

asyncio.run(main())
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--routes", type=int, default=1000, help="routes per round (<= 62500)")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if not 1 <= args.routes <= 62500 or args.rounds < 1:
        parser.error("--routes must be 1..62500 and --rounds at least 1")
    namespace = f"vfbench-{secrets.token_hex(3)}"
    subprocess.run(["ip", "netns", "add", namespace], check=True)
    try:
        child = [sys.executable, "-c", CHILD, str(args.routes), str(args.rounds)]
        done = subprocess.run(
            ["ip", "netns", "exec", namespace, *child],
            capture_output=True,
            text=True,
            check=False,
        )
    finally:
        subprocess.run(["ip", "netns", "del", namespace], check=False)
    if done.returncode != 0:
        sys.stderr.write(done.stderr)
        return done.returncode
    sys.stdout.write(done.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
