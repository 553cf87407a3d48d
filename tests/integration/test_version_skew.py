"""The version-skew rule with two versions side by side, over real gRPC and mutual TLS.

Agents and controllers run from different venvs: the tree under test (0.1.0) and copies
of it built as 0.2.0 and 0.3.0 (tests.support.bumped). An agent takes plans from a
controller of its own minor version or the next one; the controller reports a refusal
as a failed host with the agent's message, and the refused agent keeps its plan.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.agent_harness import AGENT_CLI, AgentProcess, Fleet, make_fleet, running_agent
from tests.support.bumped import Venv

THIS_CONTROLLER = (sys.executable, "-m", "vpnfleet.controller.cli")


@dataclass
class Side:
    fleet: Fleet
    inventory: Path
    agents: dict[str, AgentProcess]

    def run(self, controller: Sequence[str], *args: str) -> tuple[int, dict[str, Any]]:
        res = subprocess.run(
            [*controller, "--state", str(self.fleet.controller_state), *args, "-o", "json"],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=self.fleet.root,  # not the source tree: its egg-info would name 0.1.0
            env={**os.environ, "COLUMNS": "200"},
        )
        assert res.stdout.strip(), res.stderr
        return res.returncode, json.loads(res.stdout)

    def apply(self, controller: Sequence[str]) -> tuple[int, dict[str, dict[str, Any]]]:
        code, doc = self.run(controller, "apply", "-i", str(self.inventory))
        return code, {h["host"]: h for h in doc["hosts"]}

    def status(self, controller: Sequence[str]) -> dict[str, dict[str, Any]]:
        _code, doc = self.run(controller, "status", "-i", str(self.inventory))
        return {h["host"]: h for h in doc["hosts"]}


def write_inventory(root: Path, ports: dict[str, int], epoch: int) -> None:
    hosts = "".join(
        f"        {h}: {{address: 10.77.0.{i}, subnets: [10.7{i}.0.0/24], "
        f"agent_address: '127.0.0.1:{port}'}}\n"
        for i, (h, port) in enumerate(sorted(ports.items()), 1)
    )
    (root / "hosts.yaml").write_text("all:\n  children:\n    mesh:\n      hosts:\n" + hosts)
    (root / "group_vars").mkdir(exist_ok=True)
    # The DPD delay changes each plan, so every apply after a change has work to do.
    (root / "group_vars" / "all.yaml").write_text(
        "ike_proposals: [aes256gcm16-prfsha384-x25519]\nesp_proposals: [aes256gcm16]\n"
        f"dpd_delay: {30 + epoch}\n"
    )
    (root / "topology.yaml").write_text("meshes:\n  - {name: core, group: mesh}\n")


@pytest.fixture
def side_by_side(
    tmp_path: Path, other_version: Callable[..., Venv]
) -> Iterator[tuple[Side, Venv, Venv]]:
    """Agent a1 runs 0.1.0 (this tree), a2 runs 0.2.0; controllers of 0.2.0 and 0.3.0."""
    v2, v3 = other_version("0.2.0"), other_version("0.3.0")
    fleet = make_fleet(tmp_path)
    inventory = tmp_path / "inventory"
    inventory.mkdir()
    with contextlib.ExitStack() as stack:
        agents = {
            "a1": stack.enter_context(running_agent("a1", fleet.enroll("a1"), agent=AGENT_CLI)),
            "a2": stack.enter_context(running_agent("a2", fleet.enroll("a2"), agent=v2.agent())),
        }
        write_inventory(inventory, {h: a.port for h, a in agents.items()}, epoch=1)
        yield Side(fleet, inventory, agents), v2, v3


def test_agents_report_their_own_versions(side_by_side: tuple[Side, Venv, Venv]) -> None:
    side, v2, _v3 = side_by_side
    hosts = side.status(v2.controller())
    versions = {h: hosts[h]["observed"]["agent_version"] for h in hosts}
    assert versions == {"a1": "0.1.0", "a2": "0.2.0"}


def test_controller_one_minor_ahead_is_accepted(side_by_side: tuple[Side, Venv, Venv]) -> None:
    side, v2, _v3 = side_by_side
    code, hosts = side.apply(v2.controller())
    assert code == 0, hosts
    assert {h: r["outcome"] for h, r in hosts.items()} == {"a1": "changed", "a2": "changed"}


def test_controller_two_minors_ahead_is_refused_with_advice(
    side_by_side: tuple[Side, Venv, Venv],
) -> None:
    side, v2, v3 = side_by_side
    side.apply(v2.controller())
    before = side.status(v2.controller())["a1"]["observed"]["content_hash"]
    write_inventory(side.inventory, {h: a.port for h, a in side.agents.items()}, epoch=2)

    code, hosts = side.apply(v3.controller())

    assert code == 2  # apply's "a host failed"
    assert hosts["a2"]["outcome"] == "changed"  # 0.2.0 takes plans from 0.3.0
    a1 = hosts["a1"]
    assert a1["outcome"] == "failed"
    assert "agent 0.1.0 refuses plans from controller 0.3.0" in a1["error"]
    advice = "upgrade this agent to 0.3.0 with `vpnfleet upgrade -i INVENTORY -l HOST`"
    assert advice in a1["error"]
    assert "Traceback" not in a1["error"]
    # The refused agent keeps the plan it had.
    after = side.status(v2.controller())["a1"]["observed"]["content_hash"]
    assert after == before
    assert "refuses plans from controller 0.3.0" in side.agents["a1"].log()


def test_controller_older_than_the_agent_is_refused(
    side_by_side: tuple[Side, Venv, Venv],
) -> None:
    side, _v2, _v3 = side_by_side
    code, hosts = side.apply(THIS_CONTROLLER)
    assert code == 2
    assert hosts["a1"]["outcome"] == "changed"
    assert hosts["a2"]["outcome"] == "failed"
    assert "agent 0.2.0 refuses plans from controller 0.1.0" in hosts["a2"]["error"]
    assert "upgrade the controller to 0.2.0 or the next minor version" in hosts["a2"]["error"]
