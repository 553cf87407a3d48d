"""The `vpnfleet` command against real agents: plan, apply, status, limits and bad input.

Agents are real `vpnfleet-agent serve` processes on 127.0.0.1 with mutual TLS from a
fleet CA; the controller is the real CLI in a subprocess. Each host's `agent_address`
points the controller at its agent's ephemeral port.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.agent_harness import AgentProcess, Fleet, make_fleet, running_agent
from tests.support.status_output import (
    DRIFT,
    PLAN_ONLY,
    UNREACHABLE,
    status_document,
)

CLI = [sys.executable, "-m", "vpnfleet.controller.cli"]
HOSTS = ("h1", "h2", "h3")


@dataclass
class Lab:
    fleet: Fleet
    inventory: Path
    agents: dict[str, AgentProcess]

    def vpnfleet(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*CLI, "--state", str(self.fleet.controller_state), *args],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "COLUMNS": "200"},
        )

    def status_json(self) -> dict[str, dict[str, object]]:
        res = self.vpnfleet("status", "-i", str(self.inventory), "-o", "json")
        return {h["host"]: h for h in status_document(res)["hosts"]}


def write_inventory(root: Path, ports: dict[str, int], extra_hosts: str = "") -> None:
    hosts = "".join(
        f"        {h}: {{address: 10.77.0.{i}, subnets: [10.7{i}.0.0/24], "
        f"agent_address: '127.0.0.1:{ports[h]}'}}\n"
        for i, h in enumerate(HOSTS, 1)
    )
    (root / "hosts.yaml").write_text(
        "all:\n  children:\n    mesh:\n      hosts:\n" + hosts + extra_hosts
    )
    (root / "group_vars").mkdir(exist_ok=True)
    (root / "group_vars" / "all.yaml").write_text(
        "ike_proposals: [aes256gcm16-prfsha384-x25519]\nesp_proposals: [aes256gcm16]\n"
    )
    (root / "topology.yaml").write_text("meshes:\n  - {name: core, group: mesh}\n")


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    fleet = make_fleet(tmp_path)
    inventory = tmp_path / "inventory"
    inventory.mkdir()
    with contextlib.ExitStack() as stack:
        agents = {h: stack.enter_context(running_agent(h, fleet.enroll(h))) for h in HOSTS}
        write_inventory(inventory, {h: a.port for h, a in agents.items()})
        yield Lab(fleet, inventory, agents)


def test_plan_is_a_dry_run_listing_changes(lab: Lab) -> None:
    res = lab.vpnfleet("plan", "-i", str(lab.inventory))
    assert res.returncode == 0, res.stderr
    assert "changed: [h1]" in res.stdout
    assert "+ peer h2" in res.stdout and "+ peer h3" in res.stdout
    # Nothing was applied: the agents still have no plan.
    assert all(h["state"] == "no plan" for h in lab.status_json().values())


def test_apply_then_idempotent_and_status_in_sync(lab: Lab) -> None:
    first = lab.vpnfleet("apply", "-i", str(lab.inventory), "-o", "json")
    assert first.returncode == 0, first.stderr
    result = json.loads(first.stdout)
    assert result["counts"]["changed"] == 3
    assert {h["host"] for h in result["hosts"]} == set(HOSTS)

    second = lab.vpnfleet("apply", "-i", str(lab.inventory))
    assert second.returncode == 0, second.stderr
    assert "RECAP" in second.stdout
    for h in HOSTS:
        assert f"{h} : ok=1   changed=0" in second.stdout

    status = lab.status_json()
    assert all(s["state"] == "in sync" for s in status.values()), status
    observed = status["h1"]["observed"]
    assert isinstance(observed, dict) and observed["peers_total"] == 2


def test_secrets_never_in_output(lab: Lab) -> None:
    res = lab.vpnfleet("apply", "-i", str(lab.inventory), "--diff")
    assert res.returncode == 0, res.stderr
    assert "psk:h1+h2/epoch-1" in res.stdout
    emit = lab.inventory.parent / "plans"
    lab.vpnfleet("plan", "-i", str(lab.inventory), "--emit", str(emit))
    from vpnfleet.protos import plan_pb2

    plan = plan_pb2.NodePlan.FromString((emit / "h1.plan").read_bytes())
    psk = plan.peers[0].auth.psk
    assert len(psk) == 32
    assert psk.hex() not in res.stdout and psk.hex() not in res.stderr


def test_changed_inventory_shows_drift_until_applied(lab: Lab) -> None:
    assert lab.vpnfleet("apply", "-i", str(lab.inventory)).returncode == 0
    (lab.inventory / "group_vars" / "all.yaml").write_text(
        "ike_proposals: [aes128-sha256-modp2048]\nesp_proposals: [aes128gcm16]\n"
    )
    check = lab.vpnfleet("apply", "-i", str(lab.inventory), "--check")
    assert check.returncode == 0, check.stderr
    assert "~ peer h2" in check.stdout
    assert all(s["state"] == "drift" for s in lab.status_json().values())
    assert lab.vpnfleet("apply", "-i", str(lab.inventory)).returncode == 0
    assert all(s["state"] == "in sync" for s in lab.status_json().values())


def test_limit_applies_to_selected_hosts_only(lab: Lab) -> None:
    res = lab.vpnfleet("apply", "-i", str(lab.inventory), "--limit", "mesh:!h2:!h3")
    assert res.returncode == 0, res.stderr
    status = lab.status_json()
    assert status["h1"]["state"] == "in sync"
    assert status["h2"]["state"] == "no plan" and status["h3"]["state"] == "no plan"


def test_unreachable_host_exit_code_and_others_applied(lab: Lab) -> None:
    write_inventory(
        lab.inventory,
        {h: a.port for h, a in lab.agents.items()},
        extra_hosts="        h4: {address: 10.77.0.4, subnets: [10.74.0.0/24], "
        "agent_address: '127.0.0.1:9'}\n",
    )
    res = lab.vpnfleet("apply", "-i", str(lab.inventory), "--timeout", "3")
    assert res.returncode == 4, res.stdout + res.stderr
    assert "unreachable: [h4]" in res.stdout
    assert "h1 : ok=1   changed=1" in res.stdout


def test_wrong_agent_name_is_a_failure(lab: Lab) -> None:
    # h2's inventory entry points at h3's agent: the controller must refuse to talk to
    # an agent whose certificate names another host.
    ports = {h: a.port for h, a in lab.agents.items()}
    ports["h2"] = ports["h3"]
    write_inventory(lab.inventory, ports)
    res = lab.vpnfleet("apply", "-i", str(lab.inventory), "--timeout", "3")
    assert res.returncode in (2, 4), res.stdout
    assert "h2" in res.stdout and "changed: [h2]" not in res.stdout
    # h3's agent got h3's plan only, and h2's agent nothing.
    write_inventory(lab.inventory, {h: a.port for h, a in lab.agents.items()})
    status = lab.status_json()
    assert status["h3"]["state"] == "in sync"
    assert status["h2"]["state"] == "no plan"


BAD_INVENTORIES = {
    "malformed YAML": ("hosts.yaml", "all:\n  hosts: [unclosed\n", "hosts.yaml:3:1: invalid YAML"),
    "unknown variable": (
        "group_vars/all.yaml",
        "ike_proposal: [aes256gcm16-prfsha384-x25519]\n",
        "did you mean 'ike_proposals'",
    ),
    "invalid proposal": (
        "group_vars/all.yaml",
        "ike_proposals: [aes256gcm16-prfsha384-x2551]\n",
        "unknown algorithm 'x2551'",
    ),
    "unknown topology key": (
        "topology.yaml",
        "meshs:\n  - {name: core, group: mesh}\n",
        "did you mean 'meshes'",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_INVENTORIES))
def test_bad_inventory_changes_nothing(lab: Lab, case: str) -> None:
    assert lab.vpnfleet("apply", "-i", str(lab.inventory)).returncode == 0
    before = {h: s["observed"] for h, s in lab.status_json().items()}
    name, text, expected = BAD_INVENTORIES[case]
    (lab.inventory / name).write_text(text)
    res = lab.vpnfleet("apply", "-i", str(lab.inventory))
    assert res.returncode == 1, res.stdout + res.stderr
    assert expected in res.stderr, res.stderr
    assert name.split("/")[-1] in res.stderr
    assert "Traceback" not in res.stderr
    assert_nothing_changed(lab, before)


def assert_nothing_changed(lab: Lab, before: dict[str, object]) -> None:
    """Restore a valid inventory to read status: nothing changed on any agent."""
    write_inventory(lab.inventory, {h: a.port for h, a in lab.agents.items()})
    after = lab.status_json()
    for h in HOSTS:
        obs = after[h]["observed"]
        prev = before[h]
        assert isinstance(obs, dict) and isinstance(prev, dict)
        assert obs["content_hash"] == prev["content_hash"]
        assert obs["plan_applied_at"] == prev["plan_applied_at"]


# Appended under `mesh:` in an otherwise valid hosts.yaml whose hosts point at the
# running agents, so a validation that let the file through would reach them.
BAD_HOSTS = {
    "group cycle": (
        "      children:\n        sub:\n          children:\n            mesh: {}\n",
        ("cycle", "mesh", "sub"),
    ),
    "duplicate address": (
        "        h4: {address: 10.77.0.1, agent_address: '127.0.0.1:1'}\n",
        ("10.77.0.1", "h1", "h4"),
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_HOSTS))
def test_bad_hosts_file_changes_nothing(lab: Lab, case: str) -> None:
    assert lab.vpnfleet("apply", "-i", str(lab.inventory)).returncode == 0
    before = {h: s["observed"] for h, s in lab.status_json().items()}
    extra, expected = BAD_HOSTS[case]
    write_inventory(lab.inventory, {h: a.port for h, a in lab.agents.items()}, extra)
    res = lab.vpnfleet("apply", "-i", str(lab.inventory))
    assert res.returncode == 1, res.stdout + res.stderr
    for word in expected:
        assert word in res.stderr, res.stderr
    assert "hosts.yaml:" in res.stderr and "Traceback" not in res.stderr
    assert_nothing_changed(lab, before)


def test_group_cycle_and_duplicate_address_are_refused(tmp_path: Path) -> None:
    inv = tmp_path / "inv"
    inv.mkdir()
    (inv / "hosts.yaml").write_text(
        textwrap.dedent(
            """\
            all:
              children:
                a:
                  children: {b: {}}
                  hosts: {x1: {address: 10.0.0.1}}
                b:
                  children: {a: {}}
                  hosts: {x2: {address: 10.0.0.1}}
            """
        )
    )
    res = subprocess.run(
        [*CLI, "--state", str(tmp_path / "state"), "plan", "-i", str(inv)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 1
    assert "cycle" in res.stderr
    assert "10.0.0.1" in res.stderr and "x1" in res.stderr and "x2" in res.stderr
    assert "hosts.yaml:" in res.stderr


def test_failed_host_stops_later_batches_with_exit_code_2(tmp_path: Path) -> None:
    """--serial 1 --forks 1 --max-fail-percentage 0: the first batch fails (h1's agent
    refuses a plan that is not for its own name), so no later batch is pushed."""
    fleet = make_fleet(tmp_path)
    inventory = tmp_path / "inventory"
    inventory.mkdir()
    with contextlib.ExitStack() as stack:
        # h1's agent holds h1's certificate but calls itself h0: it refuses h1's plan.
        agents = {
            h: stack.enter_context(running_agent("h0" if h == "h1" else h, fleet.enroll(h)))
            for h in HOSTS
        }
        write_inventory(inventory, {h: a.port for h, a in agents.items()})
        lab = Lab(fleet, inventory, agents)
        res = lab.vpnfleet(
            "apply",
            "-i",
            str(inventory),
            "--serial",
            "1",
            "--forks",
            "1",
            "--max-fail-percentage",
            "0",
            "-o",
            "json",
        )
        assert res.returncode == 2, res.stdout + res.stderr
        result = json.loads(res.stdout)
        outcomes = {h["host"]: h["outcome"] for h in result["hosts"]}
        assert outcomes == {"h1": "failed", "h2": "skipped", "h3": "skipped"}
        h1 = next(h for h in result["hosts"] if h["host"] == "h1")
        assert "plan is for host 'h1', this agent is 'h0'" in h1["error"]
        assert "max-fail-percentage" in result["aborted"]
        assert result["exit_code"] == 2
        status = lab.status_json()
        assert status["h2"]["state"] == "no plan" and status["h3"]["state"] == "no plan"


# ---------------------------------------------------------------- status exit codes
# These agents run without a data plane (`serve` outside a named network namespace), so
# every reachable one is "plan only" (16); the lab tests see 0 with tunnels up.


def status_run(lab: Lab, *extra: str) -> tuple[int, dict[str, Any]]:
    res = lab.vpnfleet("status", "-i", str(lab.inventory), "-o", "json", *extra)
    return res.returncode, json.loads(res.stdout)


def test_status_exit_code_plan_only_agents_in_sync(lab: Lab) -> None:
    # apply says so too: the plans are in force, yet no tunnel will come up.
    applied = lab.vpnfleet("apply", "-i", str(lab.inventory), "-o", "json")
    assert applied.returncode == 0, applied.stderr
    for h in json.loads(applied.stdout)["hosts"]:
        assert [w.split(":")[0] for w in h["warnings"]] == ["plan only"], h
    text_apply = lab.vpnfleet("apply", "-i", str(lab.inventory))
    assert text_apply.stdout.count("warning: plan only: the agent runs no data plane") == 3
    code, doc = status_run(lab)
    assert code == PLAN_ONLY == doc["exit_code"], doc
    assert doc["conditions"] == ["plan_only"]
    assert {h["host"]: h["conditions"] for h in doc["hosts"]} == {h: ["plan_only"] for h in HOSTS}
    text = lab.vpnfleet("status", "-i", str(lab.inventory))
    assert text.returncode == PLAN_ONLY, text.stderr
    assert "plan only (exit code 16)" in text.stdout, text.stdout


def test_status_exit_code_drift(lab: Lab) -> None:
    # No plan on any agent yet: the plan in force (none) is not the desired one.
    code, doc = status_run(lab)
    assert code == DRIFT | PLAN_ONLY, doc
    assert all(h["conditions"] == ["drift", "plan_only"] for h in doc["hosts"]), doc
    assert lab.vpnfleet("apply", "-i", str(lab.inventory)).returncode == 0
    assert status_run(lab)[0] == PLAN_ONLY
    (lab.inventory / "group_vars" / "all.yaml").write_text(
        "ike_proposals: [aes128-sha256-modp2048]\nesp_proposals: [aes128gcm16]\n"
    )
    code, doc = status_run(lab)
    assert code == DRIFT | PLAN_ONLY, doc
    assert [h["state"] for h in doc["hosts"]] == ["drift"] * 3
    text = lab.vpnfleet("status", "-i", str(lab.inventory))
    assert text.returncode == DRIFT | PLAN_ONLY
    assert "drift, plan only (exit code 18)" in text.stdout, text.stdout


def test_status_exit_code_unreachable_agent(lab: Lab) -> None:
    assert lab.vpnfleet("apply", "-i", str(lab.inventory)).returncode == 0
    write_inventory(
        lab.inventory,
        {h: a.port for h, a in lab.agents.items()},
        extra_hosts="        h4: {address: 10.77.0.4, subnets: [10.74.0.0/24], "
        "agent_address: '127.0.0.1:9'}\n",
    )
    # h1..h3 now have a peer more in their desired plans: drift as well.
    code, doc = status_run(lab, "--timeout", "2")
    assert code == UNREACHABLE | DRIFT | PLAN_ONLY, doc
    conditions = {h["host"]: h["conditions"] for h in doc["hosts"]}
    assert conditions["h4"] == ["unreachable"], conditions
    code, doc = status_run(lab, "--timeout", "2", "--limit", "h4")
    assert (code, doc["conditions"]) == (UNREACHABLE, ["unreachable"]), doc


@pytest.mark.parametrize(
    "args",
    [
        ("status", "-i", "inv", "--bogus"),
        ("apply",),
        ("no-such-command",),
        ("ca", "init", "--algorithm", "rsa"),
        ("status", "-i", "inv", "--watch", "often"),
        ("vault", "encrypt-string", "--no-such-option"),
        ("lab", "up", "--nmae", "x"),
        ("rotate", "psk", "-i", "inv", "--epoch", "two"),
    ],
    ids=lambda a: "-".join(a),
)
def test_usage_error_exits_1(tmp_path: Path, args: tuple[str, ...]) -> None:
    res = subprocess.run(
        [*CLI, "--state", str(tmp_path / "state"), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 1, res.stdout + res.stderr
    assert "Error:" in res.stderr and "Traceback" not in res.stderr, res.stderr
    assert not (tmp_path / "state").exists()


def read_frames(proc: subprocess.Popen[str], marker: str, count: int) -> list[str]:
    """Lines from ``proc``'s stdout until ``count`` lines holding ``marker`` were seen."""
    assert proc.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + 60
    while sum(marker in line for line in lines) < count:
        assert time.monotonic() < deadline, lines
        ready, _, _ = select.select([proc.stdout], [], [], 1.0)
        if ready:
            line = proc.stdout.readline()
            assert line, f"status --watch ended: {lines} rc={proc.poll()}"
            lines.append(line)
    return lines


@pytest.mark.parametrize(
    ("output", "sig"),
    [("text", signal.SIGTERM), ("text", signal.SIGINT), ("json", signal.SIGTERM)],
    ids=["text-SIGTERM", "text-SIGINT", "json-SIGTERM"],
)
def test_status_watch_to_a_pipe_prints_frames_and_stops_cleanly(
    lab: Lab, output: str, sig: signal.Signals
) -> None:
    proc = subprocess.Popen(
        [*CLI, "--state", str(lab.fleet.controller_state), "status", "-i", str(lab.inventory),
         "--watch", "0.5", "-o", output],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip
    try:
        marker = "status at " if output == "text" else '"exit_code"'
        lines = read_frames(proc, marker, 2)
        if output == "json":
            frames = [json.loads(line) for line in lines]
            assert [f["exit_code"] for f in frames] == [DRIFT | PLAN_ONLY] * 2
        else:
            heads = [i for i, line in enumerate(lines) if marker in line]
            assert all("drift, plan only (exit code 18)" in lines[i] for i in heads), lines
            first = lines[heads[0] : heads[1]]
            assert all(any(line.startswith(f"{h} ") for line in first) for h in HOSTS), first
        proc.send_signal(sig)
        _, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == DRIFT | PLAN_ONLY, stderr
    assert "Traceback" not in stderr, stderr


def test_status_watch_ends_quietly_when_the_reader_goes_away(tmp_path: Path) -> None:
    """`status --watch 1 | head -n 1`: the next frame meets a closed pipe; the watch
    ends with the last frame's code (both agents unreachable: 4), no traceback."""
    fleet = make_fleet(tmp_path)
    inventory = tmp_path / "inventory"
    inventory.mkdir()
    write_inventory(inventory, dict.fromkeys(HOSTS, 9))
    proc = subprocess.Popen(
        [*CLI, "--state", str(fleet.controller_state), "status", "-i", str(inventory),
         "--watch", "0.2", "--timeout", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        read_frames(proc, "status at ", 1)
        assert proc.stdout is not None
        proc.stdout.close()
        _, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == UNREACHABLE, stderr
    assert stderr == "", stderr
