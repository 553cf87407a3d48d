"""A fleet command run against a state directory with no fleet CA says what to do,
and names a lab's own controller state when labs live there (the demo's case)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

LAB_INVENTORY = Path(__file__).resolve().parents[3] / "inventories" / "lab"
CLI = [sys.executable, "-m", "vpnfleet.controller.cli"]


def record_lab(state: Path, name: str, inventory: Path) -> Path:
    directory = state / "labs" / name
    directory.mkdir(parents=True)
    (directory / "lab.json").write_text(
        json.dumps({"name": name, "state": "up", "inventory": str(inventory.resolve())})
    )
    return directory / "controller"


def vpnfleet(state: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, "--state", str(state), *args], capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize("command", ["status", "rekey"])
def test_a_lab_of_this_inventory_is_named_with_its_state(tmp_path: Path, command: str) -> None:
    controller = record_lab(tmp_path, "demo", LAB_INVENTORY)
    record_lab(tmp_path, "other", tmp_path)
    run = vpnfleet(tmp_path, command, "-i", str(LAB_INVENTORY))
    assert run.returncode == 1
    message = " ".join(run.stderr.split())
    assert f"no fleet CA in {tmp_path}" in message
    assert "the lab 'demo' runs this inventory" in message
    assert f"vpnfleet --state {controller} COMMAND" in message
    assert "ca init" not in message


def test_labs_of_other_inventories_are_listed(tmp_path: Path) -> None:
    controller = record_lab(tmp_path, "other", tmp_path)
    run = vpnfleet(tmp_path, "status", "-i", str(LAB_INVENTORY))
    assert run.returncode == 1
    message = " ".join(run.stderr.split())
    assert f"other (--state {controller})" in message
    assert "run `vpnfleet ca init` and enrol the agents" in message


def test_no_labs_no_ca(tmp_path: Path) -> None:
    run = vpnfleet(tmp_path, "status", "-i", str(LAB_INVENTORY))
    assert run.returncode == 1
    message = " ".join(run.stderr.split())
    assert f"no fleet CA in {tmp_path}: run `vpnfleet ca init` and enrol the agents" in message
