"""`apply --canary` on an idle lab: no traffic crosses the tunnels (no pings run after
`lab up`), so the health gate cannot judge them by ESP packet counters; it asks each
agent for a liveness check on its idle tunnels (CheckLiveness: an IKE INFORMATIONAL
exchange on the SA in force) and passes on the answers, without --no-health-traffic.

The change is harmless but makes every tunnel new: a third ESP proposal on every host,
after the two in use, is a change of both ends of every pair, so it is staged and each
step sets the tunnels up again (new child SAs, whose counters start at zero). The lab is
a 4-host mesh (the ``mesh`` fixture), removed in a finally, also on failure.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.lab import LabRun, commit_inventory, fleet_status, ike_sas, run_json

pytestmark = pytest.mark.netns


def test_canary_on_an_idle_lab_passes_by_liveness(mesh: tuple[LabRun, dict[str, Any]]) -> None:
    lab, _ = mesh
    commit_inventory(lab)
    path = lab.inventory / "group_vars" / "all.yaml"
    text = path.read_text()
    old = "  - aes256gcm16\n  - aes128gcm16\n"
    assert old in text
    path.write_text(text.replace(old, old + "  - chacha20poly1305\n"))

    code, result = run_json(lab, "apply", "--canary", "1", "--health-timeout", "30")
    assert code == 0, result
    assert result["regression"] == "" and result["rolled_back"] == [], result
    assert [s["state"] for s in result["staging"]["steps"]] == ["done"] * 3, result
    assert [h["outcome"] for h in result["hosts"]] == ["changed"] * 4, result
    status = fleet_status(lab)
    assert status["all_in_sync"], status
    sas = ike_sas(status)
    assert len(sas) == 12
    for host, sa in sas:
        assert sa["state"] == "established", (host, sa)
        # Still the first proposal: the change was harmless.
        assert [c["proposal"] for c in sa["children"]] == ["aes256gcm16"], (host, sa)


def test_failed_batch_rolls_back_every_host_the_run_changed(
    mesh: tuple[LabRun, dict[str, Any]],
) -> None:
    """The canary passes, the next batch fails (a3's agent is asked on a port where
    nothing listens): a1, the canary, goes back to the committed plans with the failing
    batch, so no host is left on the new plans while the rest run the old ones."""
    lab, _ = mesh
    commit_inventory(lab)
    path = lab.inventory / "group_vars" / "all.yaml"
    text = path.read_text()
    path.write_text(text.replace("dpd_delay: 30s", "dpd_delay: 20s"))
    (lab.inventory / "host_vars").mkdir()
    (lab.inventory / "host_vars" / "a3.yaml").write_text("agent_port: 9\n")

    code, result = run_json(
        lab, "apply", "--canary", "1", "--serial", "2", "--health-timeout", "20"
    )
    assert code == 2, result
    assert result["batches"] == [["a1"], ["a2", "a3"], ["a4"]]
    assert result["regression"].startswith("batch 1 (a2, a3): apply failed: a3: unreachable"), (
        result
    )
    # Rolled back to the committed revision, whose plans say where a3's agent listens.
    assert result["rolled_back"] == ["a1", "a2", "a3"], result
    assert result["rollback_failed"] == [], result
    path.write_text(text)
    (lab.inventory / "host_vars" / "a3.yaml").unlink()
    status = fleet_status(lab)
    assert status["all_in_sync"], status  # every host runs the committed plan
