"""Bootstrap at scale: N empty SSH hosts (the test bed of tests/support/ssh_hosts.py:
sshd in a namespace per host, a systemctl stand-in since systemd is not PID 1 here) to a
converged full mesh with one ``vpnfleet bootstrap``, then a second run that must change
nothing. Needs root.

    sudo .venv/bin/python bench/bootstrap.py --hosts 4
    sudo .venv/bin/python bench/bootstrap.py --hosts 20 --forks 10

Each host gets a site subnet (10.1.N.0/24) the mesh protects. Prints one JSON line:

    {"hosts": 4, "forks": 10, "first_s": ..., "converge_s": ..., "second_s": ...,
     "first_changed": 4, "second_changed": 0, "converged": true, "sas": 12, "sas_up": 12,
     "python": "3.11.7", "vpnfleet": "0.1.0"}

``first_s`` is the first ``vpnfleet bootstrap`` (prerequisites, wheels shipped and
installed, enrolment, config and unit, agent started and healthy, plans applied), wall
time of the command; ``converge_s`` the time after it until ``vpnfleet status`` finds
every peer of every agent with an established IKE SA and an installed child SA (polled
every 0.5 s); ``second_s`` the second run, which changes nothing (``second_changed`` is
the number of hosts it reports changed: 0). The controller's wheels are built before
the first run and not counted. Exit code 3 when the mesh did not converge or the second
run changed something.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# The repository root, for the SSH test bed the tests share (tests/support).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.ssh_hosts import (
    HostSpec,
    SshTestbed,
    add_site,
    ssh_testbed,
    write_mesh_inventory,
)
from vpnfleet.protos.versions import installed_version

VPNFLEET = [sys.executable, "-m", "vpnfleet.controller.cli"]


def vpnfleet(bed: SshTestbed, *args: str) -> subprocess.CompletedProcess[str]:
    return bed.run_controller([*VPNFLEET, "--state", str(bed.root / "state"), *args], 1800)


def bootstrap(
    bed: SshTestbed, inventory: Path, forks: int
) -> tuple[float, subprocess.CompletedProcess[str]]:
    started = time.monotonic()
    res = vpnfleet(bed, "bootstrap", "-i", str(inventory), "--known-hosts",
                   str(bed.known_hosts), "--forks", str(forks), "-o", "json")  # fmt: skip
    return time.monotonic() - started, res


def sas_up(bed: SshTestbed, inventory: Path, hosts: int) -> tuple[int, int]:
    """(peers with an established IKE SA and an installed child SA, peers planned)."""
    res = vpnfleet(bed, "status", "-i", str(inventory), "-o", "json")
    up = 0
    for h in json.loads(res.stdout)["hosts"]:
        for sa in (h.get("observed") or {}).get("ike_sas", []):
            children = sa.get("children") or []
            if sa["state"] == "established" and any(c["state"] == "installed" for c in children):
                up += 1
    return up, hosts * (hosts - 1)


def changed_hosts(res: subprocess.CompletedProcess[str]) -> int:
    if res.returncode != 0:
        print(res.stdout[-2000:], res.stderr[-2000:], file=sys.stderr)
        return -1
    return sum(1 for h in json.loads(res.stdout)["hosts"] if h["outcome"] == "changed")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hosts", type=int, default=4)
    parser.add_argument("--forks", type=int, default=10)
    parser.add_argument("--timeout", type=float, default=300.0, help="Seconds to converge.")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bootstrap: needs root (network and mount namespaces)", file=sys.stderr)
        return 1
    with (
        tempfile.TemporaryDirectory(prefix="vpnfleet-bench-bootstrap-") as tmp,
        ssh_testbed(Path(tmp) / "bed", [HostSpec(f"h{i + 1}") for i in range(args.hosts)]) as bed,
    ):
        bed.write_known_hosts()
        for index, name in enumerate(bed.hosts):
            add_site(bed.hosts[name], index)
        inventory = write_mesh_inventory(bed, Path(tmp) / "inventory")
        for setup in (["ca", "init"], ["bootstrap", "-i", str(inventory), "--check",
                                       "--known-hosts", str(bed.known_hosts)]):  # fmt: skip
            vpnfleet(bed, *setup)  # the CA, and the wheels built into the controller's cache
        first_s, first = bootstrap(bed, inventory, args.forks)
        settled = time.monotonic()
        deadline = settled + args.timeout
        up, planned = sas_up(bed, inventory, args.hosts)
        while up < planned and time.monotonic() < deadline:
            time.sleep(0.5)
            up, planned = sas_up(bed, inventory, args.hosts)
        converge_s = time.monotonic() - settled
        second_s, second = bootstrap(bed, inventory, args.forks)
    result = {
        "hosts": args.hosts,
        "forks": args.forks,
        "first_s": round(first_s, 2),
        "converge_s": round(converge_s, 2),
        "second_s": round(second_s, 2),
        "first_changed": changed_hosts(first),
        "second_changed": changed_hosts(second),
        "converged": up == planned,
        "sas": planned,
        "sas_up": up,
        "python": platform.python_version(),
        "vpnfleet": installed_version(),
    }
    print(json.dumps(result))
    return 0 if result["converged"] and result["second_changed"] == 0 else 3


if __name__ == "__main__":
    sys.exit(main())
