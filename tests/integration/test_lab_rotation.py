"""PSK rotation and canary rollout in the lab, with real agents and a continuous ping.

Each test builds a 4-host mesh from a copy of inventories/lab under a lab name of its
own and removes it in a finally (also on failure), checking that nothing remains.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_lab_netns import LabRun, _require_root, new_lab, removed_after
from test_lab_rekey import fleet_status, ike_sas, lab_up, losses

from tests.support.pings import PingStream, start_pings, stop_pings, tunnel_pairs, wait_replying

pytestmark = pytest.mark.netns

PING_INTERVAL = 0.02
# Dense enough that the few milliseconds of a data-plane switch are always sampled.
FAST_PING_INTERVAL = 0.005


def own_underlay(lab: LabRun) -> None:
    """Move the copy's underlay off 10.99.0.0/24 to a /24 of its own, so that these labs
    can run beside other labs of the same machine (each lab refuses an overlap)."""
    hosts = lab.inventory / "hosts.yaml"
    octet = 100 + secrets.randbelow(150)
    hosts.write_text(hosts.read_text().replace("10.99.0.", f"10.99.{octet}."))


@pytest.fixture
def mesh(tmp_path: Path) -> Iterator[tuple[LabRun, dict[str, Any]]]:
    _require_root()
    lab = new_lab(tmp_path, "lab")
    own_underlay(lab)
    with removed_after(lab):
        yield lab, lab_up(lab)


def controller(lab: LabRun, *args: str) -> subprocess.CompletedProcess[str]:
    return lab.vpnfleet("--state", str(lab.lab_dir / "controller"), *args)


def run_json(lab: LabRun, *args: str) -> tuple[int, dict[str, Any]]:
    res = controller(lab, *args, "-i", str(lab.inventory), "-o", "json")
    assert res.stdout, res.stderr
    data: dict[str, Any] = json.loads(res.stdout)
    return res.returncode, data


def pinging(up: dict[str, Any], interval: float = PING_INTERVAL) -> list[PingStream]:
    streams = start_pings(tunnel_pairs(up["reachability"], up["layout"]["hosts"]), interval)
    if not wait_replying(streams, 10):
        stop_pings(streams)
        raise AssertionError([s.describe() for s in streams])
    return streams


def journal(lab: LabRun) -> dict[str, Any]:
    path = lab.lab_dir / "controller" / "rotation" / "psk.json"
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def assert_all_up_without_auth_errors(lab: LabRun, since: float) -> None:
    status = fleet_status(lab)
    sas = ike_sas(status)
    assert len(sas) == 12
    for host, sa in sas:
        assert sa["state"] == "established", (host, sa)
        assert sa["established_at"] >= since, (host, sa["peer"], "not re-established")
        assert "AUTHENTICATION_FAILED" not in sa["last_error"], (host, sa)
        assert [c["state"] for c in sa["children"]] == ["installed"], (host, sa)
    assert status["all_in_sync"], status


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
        time.sleep(0.5)
    finally:
        stop_pings(streams)
    assert code == 0, result
    assert all(s.sent >= 20 and s.replies for s in streams), [s.describe() for s in streams]
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
        time.sleep(0.5)
    finally:
        stop_pings(streams)
    assert code == 0, result
    assert all(s.sent >= 100 for s in streams), [s.describe() for s in streams]
    assert losses(streams) == []


def agent_pid(lab: LabRun, host: str) -> int:
    data = json.loads((lab.lab_dir / "supervisor.json").read_text())
    return int(data["agents"][host]["pid"])


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


def commit_inventory(lab: LabRun) -> None:
    git = ["git", "-C", str(lab.inventory), "-c", "user.name=t", "-c", "user.email=t@t"]
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "lab"]):
        subprocess.run([*git, *args], check=True, capture_output=True)


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
        time.sleep(0.5)
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
