"""PSK rotation and canary rollout in the lab, with real agents and a continuous ping.

Each test builds a 4-host mesh from a copy of inventories/lab under a lab name of its
own and removes it in a finally (also on failure), checking that nothing remains.
"""

from __future__ import annotations

import json
import os
import signal
import time
from typing import Any

import pytest

from tests.support.lab import (
    FAST_PING_INTERVAL,
    LabRun,
    agent_pid,
    assert_all_up_without_auth_errors,
    commit_inventory,
    fleet_status,
    ike_sas,
    losses,
    pinging,
    run_json,
)
from tests.support.pings import stop_pings, wait_fresh_replies

pytestmark = pytest.mark.netns


def journal(lab: LabRun) -> dict[str, Any]:
    path = lab.lab_dir / "controller" / "rotation" / "psk.json"
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def test_psk_rotation_is_acknowledged_and_reestablishes_every_tunnel(
    mesh: tuple[LabRun, dict[str, Any]],
) -> None:
    """Under traffic, every agent acknowledges, every tunnel comes back on the new key
    without one authentication failure (staging: responders first), and the inventory
    ends up saying what the agents run. Packet loss: see the next test."""
    lab, up = mesh
    started = time.time()
    streams = pinging(up)
    try:
        code, result = run_json(lab, "rotate", "psk")
        fresh = wait_fresh_replies(streams, 20, 10)
    finally:
        stop_pings(streams)
    assert code == 0, result
    assert fresh, [s.describe() for s in streams]  # traffic crossed after the rotation
    assert result["waves"] == [["a4"], ["a3"], ["a2"], ["a1"]]
    assert result["epoch"] == 2 and result["error"] == ""
    assert [h["outcome"] for h in result["hosts"]] == ["changed"] * 4  # every agent acked
    assert "psk_epoch: 2" in (lab.inventory / "group_vars" / "all.yaml").read_text()
    saved = journal(lab)
    assert saved["done"] == ["a4", "a3", "a2", "a1"] and saved["finished_at"] > 0
    assert_all_up_without_auth_errors(lab, started)
    # The inventory now says what the agents run: a plain apply changes nothing.
    code, again = run_json(lab, "apply")
    assert code == 0 and [h["outcome"] for h in again["hosts"]] == ["ok"] * 4, again


def test_psk_rotation_under_continuous_ping_loses_nothing(
    mesh: tuple[LabRun, dict[str, Any]],
) -> None:
    lab, up = mesh
    streams = pinging(up, FAST_PING_INTERVAL)
    try:
        code, result = run_json(lab, "rotate", "psk")
        fresh = wait_fresh_replies(streams, 20, 10)
    finally:
        stop_pings(streams)
    assert code == 0, result
    assert fresh, [s.describe() for s in streams]  # traffic crossed after the rotation
    assert losses(streams) == []


def test_interrupted_rotation_resumes_where_it_stopped(
    mesh: tuple[LabRun, dict[str, Any]],
) -> None:
    lab, _ = mesh
    started = time.time()
    pid = agent_pid(lab, "a2")
    os.kill(pid, signal.SIGSTOP)  # a2 cannot answer: the rotation stops at its wave
    try:
        code, first = run_json(lab, "rotate", "psk", "--timeout", "2")
    finally:
        os.kill(pid, signal.SIGCONT)
    assert code == 2, first
    # A stopped agent accepts the connection but never answers: a deadline, not a refusal.
    assert first["error"].startswith("no acknowledgement from a2: "), first
    assert "no answer within 2s" in first["error"], first
    assert journal(lab)["done"] == ["a4", "a3"]
    assert journal(lab)["finished_at"] == 0

    code, second = run_json(lab, "rotate", "psk")
    assert code == 0, second
    assert second["resumed"] and second["epoch"] == 2
    assert sorted(second["skipped"]) == ["a3", "a4"]
    assert [h["host"] for h in second["hosts"]] == ["a2", "a1"]  # only the rest pushed
    assert journal(lab)["done"] == ["a4", "a3", "a2", "a1"]
    assert_all_up_without_auth_errors(lab, started)


def test_canary_regression_rolls_back_and_stops(mesh: tuple[LabRun, dict[str, Any]]) -> None:
    """A PSK change pushed without staging (--no-stage): the canary's tunnels fail
    authentication (its peers hold only the old key), the canary gets its previous plan
    back and the other hosts are not touched. (Staged, the same change goes through:
    test_lab_staged.)"""
    lab, _ = mesh
    commit_inventory(lab)
    (lab.inventory / "host_vars").mkdir()
    (lab.inventory / "host_vars" / "a1.yaml").write_text("psk_epoch: 7\n")
    code, result = run_json(lab, "apply", "--canary", "1", "--health-timeout", "15", "--no-stage")
    assert code == 2, result
    assert result["regression"].startswith("canary (a1): authentication failed: a1: peer a2:")
    assert result["rolled_back"] == ["a1"] and result["rollback_failed"] == []
    assert [(h["host"], h["outcome"]) for h in result["hosts"]] == [
        ("a1", "changed"),
        ("a2", "skipped"),
        ("a3", "skipped"),
        ("a4", "skipped"),
    ]
    (lab.inventory / "host_vars" / "a1.yaml").unlink()
    status = fleet_status(lab)
    assert status["all_in_sync"], status  # a1 runs the committed plan again
    assert all(sa["state"] == "established" for _, sa in ike_sas(status))


def test_healthy_change_rolls_out_behind_health_gates(
    mesh: tuple[LabRun, dict[str, Any]],
) -> None:
    lab, up = mesh
    commit_inventory(lab)
    path = lab.inventory / "group_vars" / "all.yaml"
    path.write_text(path.read_text().replace("dpd_delay: 30s", "dpd_delay: 20s"))
    streams = pinging(up)
    started = time.time()
    try:
        code, result = run_json(
            lab, "apply", "--canary", "1", "--serial", "2", "--health-timeout", "20"
        )
        wait_fresh_replies(streams, 20, 10)
    finally:
        stop_pings(streams)
    assert code == 0, result
    assert result["batches"] == [["a1"], ["a2", "a3"], ["a4"]]
    assert result["regression"] == "" and result["rolled_back"] == []
    assert [h["outcome"] for h in result["hosts"]] == ["changed"] * 4
    # The pings are the traffic the gate wants moving. The liveness delay is this end's
    # own business (nothing negotiates it): the agents put it in force in place, and
    # every SA stays as it was, losing nothing.
    assert all(s.replies and not s.lost for s in streams), [s.describe() for s in streams]
    status = fleet_status(lab)
    assert status["all_in_sync"]
    sas = ike_sas(status)
    assert len(sas) == 12 and all(sa["established_at"] < started for _, sa in sas), sas
