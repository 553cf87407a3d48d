"""Drift in serve's log (controller.gitops.reconcile): each poll, but rate-limited: again when
the set of drifting hosts changes, else once per drift_log_interval; on fake time."""

from __future__ import annotations

import subprocess
from pathlib import Path

from vpnfleet.controller.fleet.revisions import BranchHead
from vpnfleet.controller.gitops.reconcile import Reconciler, ServeOptions
from vpnfleet.controller.reports.status import AgentStatusView, FleetStatus, HostStatus
from vpnfleet.controller.statedir.state import StateDir

IN_FORCE = "c" * 40


def status(running: dict[str, str]) -> FleetStatus:
    return FleetStatus(
        [HostStatus(h, "want", AgentStatusView(host=h, content_hash=digest))
         for h, digest in running.items()]
    )  # fmt: skip


def test_drift_is_logged_when_it_changes_and_at_most_once_per_interval(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    (repo / "inv").mkdir(parents=True)
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    lines: list[str] = []
    now = [1000.0]
    rec = Reconciler(
        StateDir(tmp_path / "state"),
        ServeOptions(inventory=repo / "inv", drift_log_interval=300),
        lines.append,
    )
    rec.clock = lambda: now[0]
    rec.in_force = IN_FORCE
    rec.followed = BranchHead("refs/remotes/origin/main", IN_FORCE)

    def poll(running: dict[str, str]) -> list[str]:
        before = len(lines)
        s = status(running)
        rec._log_drift(s, [h.host for h in s.hosts if not h.in_sync])
        now[0] += 30  # the poll interval
        return lines[before:]

    drift = {"h1": "want", "h2": "a" * 64}
    assert poll(drift) == [
        f"drift: 1 host(s) differ from refs/remotes/origin/main {IN_FORCE[:12]}'s plans: "
        f"h2 runs plan {'a' * 12}"
    ]
    assert [poll(drift) for _ in range(9)] == [[]] * 9  # 270 s: quiet
    assert len(poll(drift)) == 1  # 300 s after the first line: said again
    # Another host drifts too: said at once.
    (line,) = poll({**drift, "h3": "b" * 64})
    assert line.startswith("drift: 2 host(s) differ") and f"h3 runs plan {'b' * 12}" in line
    assert poll({"h1": "want", "h2": "want", "h3": "want"}) == [
        f"drift gone: every host runs refs/remotes/origin/main {IN_FORCE[:12]}'s plans"
    ]
    assert poll({"h1": "want"}) == []
