"""What is in force, told from the agents, in the lab: `serve` stages a PSK epoch commit as
`apply` does; a plain `apply` or `apply --canary` after `rotate psk` stages nothing again;
an `apply` killed between two steps is resumed from its journal by the next one.

Each test builds a 4-host mesh (the ``mesh`` fixture) from a copy of inventories/lab,
commits it, and removes the lab in a finally, also on failure. Every process started
here is killed in a finally too.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
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
    wait_for,
)
from tests.support.pings import stop_pings, wait_fresh_replies

pytestmark = pytest.mark.netns

CLI = [sys.executable, "-m", "vpnfleet.controller.cli"]
STEPS = ("1/3 accept", "2/3 use", "3/3 final")


def git(lab: LabRun, *args: str) -> str:
    res = subprocess.run(
        ["git", "-C", str(lab.inventory), "-c", "user.name=t", "-c", "user.email=t@t", *args],
        capture_output=True, text=True, check=True, timeout=30,
    )  # fmt: skip
    return res.stdout.strip()


def add_psk_epoch(lab: LabRun, epoch: int) -> None:
    with (lab.inventory / "group_vars" / "all.yaml").open("a") as f:
        f.write(f"psk_epoch: {epoch}\n")


def assert_up_on_one_key(lab: LabRun) -> None:
    """Every host runs its desired plan and every tunnel is up, without an
    authentication failure on record."""
    status = fleet_status(lab)
    assert status["all_in_sync"], status
    sas = ike_sas(status)
    assert len(sas) == 12
    for host, sa in sas:
        assert sa["state"] == "established", (host, sa)
        assert "AUTHENTICATION_FAILED" not in sa["last_error"], (host, sa)
        assert [c["state"] for c in sa["children"]] == ["installed"], (host, sa)


def logged(log: Path, revision: str, text: str) -> bool:
    """Whether a line of ``log`` names ``revision`` and says ``text``."""
    return any(revision[:12] in x and text in x for x in log.read_text().splitlines())


@contextlib.contextmanager
def controller_process(lab: LabRun, log: Path, *args: str) -> Iterator[subprocess.Popen[bytes]]:
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [*CLI, "--state", str(lab.lab_dir / "controller"), *args],
            stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "COLUMNS": "200"},
        )  # fmt: skip
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)


def test_serve_stages_a_psk_epoch_commit_in_three_steps(
    mesh: tuple[LabRun, dict[str, Any]], tmp_path: Path
) -> None:
    lab, up = mesh
    commit_inventory(lab)
    first = git(lab, "rev-parse", "HEAD")
    branch = git(lab, "rev-parse", "--abbrev-ref", "HEAD")
    ref = f"refs/heads/{branch}"
    log = tmp_path / "serve.log"
    with controller_process(
        lab, log, "serve", "-i", str(lab.inventory), "--branch", branch, "--interval", "1",
        "--listen", "127.0.0.1:0", "--serial", "2",
    ):  # fmt: skip
        wait_for("the first rollout", lambda: logged(log, first, ": ok in"), 60)
        streams = pinging(up, FAST_PING_INTERVAL)
        try:
            add_psk_epoch(lab, 2)
            git(lab, "commit", "-qam", "psk epoch 2")
            second = git(lab, "rev-parse", "HEAD")
            wait_for("the second rollout", lambda: logged(log, second, ": changed in"), 240)
            wait_fresh_replies(streams, 20, 10)
        finally:
            stop_pings(streams)
    lines = log.read_text().splitlines()
    name = f"{ref} {second[:12]}"
    for step in STEPS:
        assert any(f"{name}: step {step}, batch 2: healthy" in x for x in lines), lines
    assert any(f"{name}: staged: a1 -> a2: psk" in x for x in lines), lines
    assert f"in force on the agents: {ref} {first[:12]} (a1, a2, a3, a4)" in log.read_text()
    assert losses(streams) == []
    assert_up_on_one_key(lab)
    assert not (lab.lab_dir / "controller" / "staged" / "apply.json").exists()


def test_plain_apply_after_rotate_psk_stages_nothing_again(
    mesh: tuple[LabRun, dict[str, Any]],
) -> None:
    lab, _ = mesh
    commit_inventory(lab)
    code, rotated = run_json(lab, "rotate", "psk")
    assert code == 0 and rotated["epoch"] == 2, rotated
    # Not committed yet: HEAD still says epoch 1, the agents run epoch 2.
    res = controller(lab, "apply", "-i", str(lab.inventory))
    assert res.returncode == 0, res.stdout + res.stderr
    assert "the agents already run these plans: nothing to stage" in res.stderr, res.stderr
    assert "step 1/3" not in res.stdout and "staged:" not in res.stdout + res.stderr
    code, again = run_json(lab, "apply")
    assert code == 0 and [h["outcome"] for h in again["hosts"]] == ["ok"] * 4, again
    assert "staging" not in again
    assert_up_on_one_key(lab)


def test_canary_apply_after_rotate_psk_stages_nothing_again(
    mesh: tuple[LabRun, dict[str, Any]],
) -> None:
    """`apply --canary` tells what is in force as plain `apply` does: not HEAD's epoch 1
    but the epoch 2 the agents run; the canary and its batch push those plans again."""
    lab, _ = mesh
    commit_inventory(lab)
    code, rotated = run_json(lab, "rotate", "psk")
    assert code == 0 and rotated["epoch"] == 2, rotated
    res = controller(
        lab, "apply", "-i", str(lab.inventory), "--canary", "1", "--health-timeout", "30"
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert "the agents already run these plans: nothing to stage" in res.stderr, res.stderr
    assert "step 1/3" not in res.stdout and "staged:" not in res.stdout + res.stderr
    assert "canary: healthy" in res.stdout and "batch 1: healthy" in res.stdout, res.stdout
    assert not (lab.lab_dir / "controller" / "staged" / "apply.json").exists()
    assert_up_on_one_key(lab)


def read_until(proc: subprocess.Popen[str], text: str, timeout: float) -> list[str]:
    """Lines the process prints until one holds ``text`` (fails after ``timeout``)."""
    assert proc.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 0.5)
        if not ready:
            continue
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line.rstrip("\n"))
        if text in line:
            return lines
    pytest.fail(f"{text!r} not printed within {timeout:g}s: {lines}")


def test_interrupted_staged_apply_is_resumed_from_its_journal(
    mesh: tuple[LabRun, dict[str, Any]],
) -> None:
    lab, _ = mesh
    commit_inventory(lab)
    add_psk_epoch(lab, 2)
    journal = lab.lab_dir / "controller" / "staged" / "apply.json"
    proc = subprocess.Popen(
        [*CLI, "--state", str(lab.lab_dir / "controller"), "apply", "-i", str(lab.inventory),
         "--serial", "2"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip
    try:
        read_until(proc, "step 2/3 use, batch 1: healthy", 120)
        proc.send_signal(signal.SIGKILL)  # between the two batches of step 2
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()
    assert journal.exists()
    status = fleet_status(lab)
    assert not status["all_in_sync"]  # a3, a4 still on step 1: drift on every host

    res = controller(lab, "apply", "-i", str(lab.inventory), "--serial", "2")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "resuming the interrupted staged apply of worktree" in res.stderr, res.stderr
    assert "at step 2/3 use" in res.stderr, res.stderr
    lines = res.stdout.splitlines()
    assert not any("step 1/3" in x for x in lines), lines
    for step in STEPS[1:]:
        assert f"step {step}, batch 2: healthy" in lines, res.stdout
    assert not journal.exists()
    assert_up_on_one_key(lab)
    # Nothing left to do: the next apply changes nothing and stages nothing.
    code, again = run_json(lab, "apply")
    assert code == 0 and [h["outcome"] for h in again["hosts"]] == ["ok"] * 4, again
