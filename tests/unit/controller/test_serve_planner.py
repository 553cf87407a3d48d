"""serve plans every revision with one planner (controller.gitops.reconcile.Reconciler.compile):
a commit that changes one host rebuilds that host's pairs only, and the plans are
byte for byte those of a fresh compile of the same revision."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from vpnfleet.controller.fleet import operations
from vpnfleet.controller.gitops.reconcile import Reconciler, ServeOptions
from vpnfleet.controller.planner import Planner
from vpnfleet.controller.statedir.state import StateDir
from vpnfleet.controller.transport import convert

LAB = Path(__file__).parents[3] / "inventories" / "lab"


def commit(repo: Path, message: str) -> str:
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.org"]
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-q", "-m", message], check=True)
    head = subprocess.run([*git, "rev-parse", "HEAD"], check=True, capture_output=True)
    return head.stdout.decode().strip()


def serialised(fleet: operations.CompiledFleet) -> dict[str, bytes]:
    return {
        host: convert.plan_to_proto(plan).SerializeToString(deterministic=True)
        for host, plan in fleet.plans.items()
    }


def test_serve_replans_only_the_changed_host_and_matches_a_fresh_compile(
    tmp_path: Path,
) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(LAB, repo / "inv")
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    first_rev = commit(repo, "lab")
    (repo / "inv" / "host_vars").mkdir(exist_ok=True)
    (repo / "inv" / "host_vars" / "a3.yaml").write_text("dpd_delay: 45s\n")
    second_rev = commit(repo, "a3: dpd_delay 45s")
    state = StateDir(tmp_path / "state")
    reconciler = Reconciler(state, ServeOptions(inventory=repo / "inv"))

    first = reconciler.compile(first_rev)
    second = reconciler.compile(second_rev)

    hosts = set(second.plans)
    assert hosts == {"a1", "a2", "a3", "a4"}
    assert Planner.changed_hosts(first.plans, second.plans) == {"a3"}
    assert {p.source_revision for p in second.plans.values()} == {second_rev}
    # The planner was kept: the other hosts' peers and SPD are the very objects of the
    # first revision (a3's new DPD setting touches only a3's side of its pairs) ...
    for host in hosts - {"a3"}:
        assert second.plans[host].peers is first.plans[host].peers
        assert second.plans[host].spd is first.plans[host].spd
    assert second.plans["a3"].peers is not first.plans["a3"].peers
    # ... and the result is what a fresh compile of the second revision gives, which
    # shares nothing with the first.
    fresh = operations.compile_fleet_at(repo / "inv", state, second_rev)
    assert fresh.plans["a1"].peers is not first.plans["a1"].peers
    assert second.plans == fresh.plans
    assert serialised(second) == serialised(fresh)
    assert serialised(second) != serialised(first)
