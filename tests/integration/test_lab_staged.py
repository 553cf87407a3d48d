"""Pair-aware staging in the lab: a change both ends of every tunnel must agree on (the
proposals of the whole mesh, the pair keys) goes in three steps behind the canary's
health gates, under a continuous ping on every tunnel, and loses nothing.

Each test builds a 4-host mesh (test_lab_rotation's ``mesh`` fixture) from a copy of
inventories/lab, commits it (the committed revision gives the plans in force), edits
the working tree and applies; the lab is removed in a finally, also on failure.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.lab import (
    FAST_PING_INTERVAL,
    LabRun,
    commit_inventory,
    controller,
    fleet_status,
    ike_sas,
    losses,
    pinging,
    run_json,
)
from tests.support.pings import stop_pings, wait_fresh_replies

pytestmark = pytest.mark.netns

NEW_IKE = "aes128gcm16-prfsha256-ecp256"  # another cipher and another DH group (19)
NEW_ESP = "aes128gcm16"
STEPS = ["accept", "use", "final"]
BATCHES = [["a1"], ["a2", "a3"], ["a4"]]


def staged_apply(lab: LabRun, up: dict[str, Any]) -> tuple[int, dict[str, Any], list[Any]]:
    # Dense enough that the few milliseconds of a data-plane switch are always sampled.
    streams = pinging(up, FAST_PING_INTERVAL)
    try:
        code, result = run_json(
            lab, "apply", "--canary", "1", "--serial", "2", "--health-timeout", "30"
        )
        wait_fresh_replies(streams, 20, 10)
    finally:
        stop_pings(streams)
    return code, result, streams


def assert_three_steps(result: dict[str, Any]) -> dict[str, Any]:
    staging: dict[str, Any] = result["staging"]
    assert [s["name"] for s in staging["steps"]] == STEPS, staging
    assert [s["state"] for s in staging["steps"]] == ["done"] * 3, staging
    assert all(s["batches"] == BATCHES for s in staging["steps"])
    # Every end of the six pairs (12 ends) is staged; nothing goes unstaged.
    assert len(staging["staged"]) == 12 and staging["unstaged"] == [], staging
    assert result["regression"] == "" and result["rolled_back"] == []
    assert [h["outcome"] for h in result["hosts"]] == ["changed"] * 4
    return staging


def assert_reestablished_in_final_step(status: dict[str, Any], final_started: float) -> None:
    """Each tunnel was set up again once the old values were gone (by its initiator, on
    its final plan), and both ends run that same IKE SA, with no authentication failure.

    The initiator's established_at is the one checked: a responder whose own plan changed
    while it held the SA reports none (the agent's changed-peer session does not carry
    the time over); the SPIs show it is the same SA."""
    assert status["all_in_sync"], status
    sas = ike_sas(status)
    assert len(sas) == 12
    initiated = {}
    for host, sa in sas:
        assert sa["state"] == "established", (host, sa)
        assert "AUTHENTICATION_FAILED" not in sa["last_error"], (host, sa)
        assert [c["state"] for c in sa["children"]] == ["installed"], (host, sa)
        if sa["initiator"]:
            assert sa["established_at"] >= final_started, (host, sa["peer"], "not set up again")
            initiated[(host, sa["peer"])] = (sa["spi_i"], sa["spi_r"])
    assert len(initiated) == 6
    for host, sa in sas:
        if not sa["initiator"]:
            assert initiated[(sa["peer"], host)] == (sa["spi_i"], sa["spi_r"]), (host, sa)


def test_mesh_proposal_change_is_staged_and_loses_nothing(
    mesh: tuple[LabRun, dict[str, Any]],
) -> None:
    lab, up = mesh
    commit_inventory(lab)
    path = lab.inventory / "group_vars" / "all.yaml"
    text = path.read_text()
    for old in ("  - aes256gcm16-prfsha384-x25519\n", "  - aes256-sha256-modp2048\n"):
        assert old in text
    text = text.replace("  - aes256gcm16-prfsha384-x25519\n", f"  - {NEW_IKE}\n")
    text = text.replace("  - aes256-sha256-modp2048\n", "")
    text = text.replace("  - aes256gcm16\n  - aes128gcm16\n", f"  - {NEW_ESP}\n")
    path.write_text(text)

    code, result, streams = staged_apply(lab, up)
    assert code == 0, result
    staging = assert_three_steps(result)
    assert {tuple(c["fields"]) for c in staging["staged"]} == {("ike_proposals", "esp_proposals")}
    assert all(s.sent >= 100 for s in streams), [s.describe() for s in streams]
    assert losses(streams) == []
    status = fleet_status(lab)
    assert_reestablished_in_final_step(status, staging["steps"][2]["started_at"])
    for host, sa in ike_sas(status):
        assert sa["proposal"] == NEW_IKE, (host, sa)
        assert [c["proposal"] for c in sa["children"]] == [NEW_ESP], (host, sa)


def test_psk_epoch_change_is_staged_and_loses_nothing(
    mesh: tuple[LabRun, dict[str, Any]],
) -> None:
    lab, up = mesh
    commit_inventory(lab)
    with (lab.inventory / "group_vars" / "all.yaml").open("a") as f:
        f.write("psk_epoch: 2\n")

    code, result, streams = staged_apply(lab, up)
    assert code == 0, result
    staging = assert_three_steps(result)
    assert {tuple(c["fields"]) for c in staging["staged"]} == {("psk",)}
    # The agents' diffs name keys by reference: "also accepts" in the first step.
    first = staging["steps"][0]["hosts"][0]
    details = [d for c in first["changes"] for d in c["details"]]
    assert any("also accepts psk:" in d and "/epoch-2" in d for d in details), details
    assert all(s.sent >= 100 for s in streams), [s.describe() for s in streams]
    assert losses(streams) == []
    assert_reestablished_in_final_step(fleet_status(lab), staging["steps"][2]["started_at"])
    # The agents run what the working tree compiles to: applying it again changes nothing.
    code, again = run_json(lab, "apply", "--no-stage")
    assert code == 0 and [h["outcome"] for h in again["hosts"]] == ["ok"] * 4, again


def test_plain_apply_stages_too_and_says_so(mesh: tuple[LabRun, dict[str, Any]]) -> None:
    """Without --canary the steps go in the --serial batches, behind the same gates (no
    traffic asked for: nothing may be flowing), and the progress names them."""
    lab, _ = mesh
    commit_inventory(lab)
    with (lab.inventory / "group_vars" / "all.yaml").open("a") as f:
        f.write("psk_epoch: 2\n")
    res = controller(lab, "apply", "-i", str(lab.inventory), "--serial", "2")
    assert res.returncode == 0, res.stdout + res.stderr
    lines = res.stdout.splitlines()
    assert "staged: a1 -> a2: psk" in lines, res.stdout
    for step in ("1/3 accept", "2/3 use", "3/3 final"):
        assert f"step {step}, batch 1: applying to a1, a2" in lines, res.stdout
        assert f"step {step}, batch 2: healthy" in lines, res.stdout
    status = fleet_status(lab)
    assert status["all_in_sync"], status
    assert all(sa["state"] == "established" for _, sa in ike_sas(status))
