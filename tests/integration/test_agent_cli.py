"""The vpnfleet-agent command line as operators run it: run --plan, serve errors, hollow."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.agent_harness import make_fleet
from vpnfleet.agent.hollow import sample_plan
from vpnfleet.controller.transport.client import AgentClient, AgentUnreachable
from vpnfleet.controller.transport.convert import apply_request

AGENT = [sys.executable, "-m", "vpnfleet.agent.cli"]


def agent_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*AGENT, *args], capture_output=True, text=True, timeout=60)


def write_plan(path: Path, host: str = "a1") -> bytes:
    msg = sample_plan(host, "10.0.0.1", "10.1.0.0/24", [("b1", "10.0.0.2", "10.2.0.0/24")])
    data = msg.SerializeToString(deterministic=True)
    path.write_bytes(data)
    return data


def test_run_prints_summary_without_persisting(tmp_path: Path) -> None:
    write_plan(tmp_path / "a1.plan")
    result = agent_cli("run", "--plan", str(tmp_path / "a1.plan"))
    assert result.returncode == 0, result.stderr
    assert "plan for a1: generation 1" in result.stdout
    assert "peer b1: 10.0.0.2 tunnel start auth psk:a1/b1/epoch-1" in result.stdout
    assert "spd protect-b1: protect 10.1.0.0/24[any] -> 10.2.0.0/24[any]" in result.stdout
    assert "not persisted" in result.stdout


def test_run_persists_into_state_dir(tmp_path: Path) -> None:
    data = write_plan(tmp_path / "a1.plan")
    state = tmp_path / "state"
    result = agent_cli("run", "--plan", str(tmp_path / "a1.plan"), "--state-dir", str(state))
    assert result.returncode == 0, result.stderr
    assert "persisted in" in result.stdout
    assert (state / "plan.pb").read_bytes() == data
    again = agent_cli("run", "--plan", str(tmp_path / "a1.plan"), "--state-dir", str(state))
    assert "already in force" in again.stdout


@pytest.mark.parametrize("cut", [0.5, 0.95])
def test_run_truncated_plan_exits_2(tmp_path: Path, cut: float) -> None:
    data = write_plan(tmp_path / "a1.plan")
    (tmp_path / "a1.plan").write_bytes(data[: int(len(data) * cut)])
    result = agent_cli("run", "--plan", str(tmp_path / "a1.plan"), "--state-dir", str(tmp_path))
    assert result.returncode == 2
    assert "corrupt or truncated" in result.stderr
    assert not (tmp_path / "plan.pb").exists()


def test_run_altered_plan_exits_2_and_keeps_the_last_good_plan(tmp_path: Path) -> None:
    good = write_plan(tmp_path / "a1.plan")
    state = tmp_path / "state"
    assert (
        agent_cli("run", "--plan", str(tmp_path / "a1.plan"), "--state-dir", str(state)).returncode
        == 0
    )
    # One byte changed: still a well-formed message, but no longer the plan that was hashed.
    assert good.count(b"10.0.0.2") == 1
    (tmp_path / "a1.plan").write_bytes(good.replace(b"10.0.0.2", b"10.0.0.9"))
    result = agent_cli("run", "--plan", str(tmp_path / "a1.plan"), "--state-dir", str(state))
    assert result.returncode == 2
    assert "content hash mismatch: plan is corrupt or truncated" in result.stderr
    assert (state / "plan.pb").read_bytes() == good


def test_run_missing_file_exits_2(tmp_path: Path) -> None:
    result = agent_cli("run", "--plan", str(tmp_path / "nope.plan"))
    assert result.returncode == 2
    assert "nope.plan" in result.stderr


def test_serve_bad_config_is_a_clear_error(tmp_path: Path) -> None:
    config = tmp_path / "agent.yaml"
    config.write_text("name: a1\nlistne: 127.0.0.1:0\n")
    result = agent_cli("serve", "--config", str(config))
    assert result.returncode == 1
    assert "unknown key 'listne' (did you mean 'listen'?)" in result.stderr
    config.write_text(f"name: a1\nstate_dir: {tmp_path / 'empty'}\n")
    result = agent_cli("serve", "--config", str(config))
    assert result.returncode == 1
    assert "cannot read the TLS certificate" in result.stderr


async def test_hollow_agents_accept_plans(tmp_path: Path) -> None:
    fleet = make_fleet(tmp_path / "fleet")
    proc = subprocess.Popen(
        [
            *(*AGENT, "hollow", "--count", "3", "--state-dir", str(tmp_path / "hollow")),
            *("--ca-state", str(fleet.controller_state)),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        ready = json.loads(proc.stdout.readline())
        assert ready["listening"] == 3
        tls = fleet.controller_tls()
        for name, port in ready["agents"].items():
            msg = sample_plan(name, "10.0.0.1", "10.1.0.0/24")
            async with AgentClient(name, f"127.0.0.1:{port}", tls) as c:
                resp = await c.apply_plan(apply_request(msg, dry_run=False))
                assert resp.changed and resp.content_hash == msg.content_hash
            assert (tmp_path / "hollow" / name / "plan.pb").exists()
        # Each hollow agent has its own certificate: one cannot be reached as another.
        first, second = list(ready["agents"].items())[:2]
        async with AgentClient(first[0], f"127.0.0.1:{second[1]}", tls, timeout=5) as c:
            with pytest.raises(AgentUnreachable):
                await c.get_status()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)


def free_port_run(count: int) -> tuple[int, list[socket.socket]]:
    """A first port P with P..P+count-1 free on 127.0.0.1, returned with sockets that
    still hold them (bound, not listening): close them just before starting the agents."""
    for _ in range(50):
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        base = probe.getsockname()[1]
        held = [probe]
        try:
            for port in range(base + 1, base + count):
                s = socket.socket()
                held.append(s)
                s.bind(("127.0.0.1", port))
        except OSError:
            for s in held:
                s.close()
            continue
        return base, held
    raise AssertionError(f"no run of {count} free ports on 127.0.0.1")


async def test_hollow_agents_listen_from_base_port(tmp_path: Path) -> None:
    fleet = make_fleet(tmp_path / "fleet")
    base, held = free_port_run(3)
    for s in held:
        s.close()
    proc = subprocess.Popen(
        [
            *(*AGENT, "hollow", "--count", "3", "--base-port", str(base)),
            *("--state-dir", str(tmp_path / "hollow"), "--ca-state", str(fleet.controller_state)),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stderr is not None
        line = proc.stdout.readline()
        assert line, proc.stderr.read()
        ready = json.loads(line)
        # Agent i listens on base + i.
        agents = ready["agents"]
        assert [agents[name] for name in sorted(agents)] == [base, base + 1, base + 2]
        tls = fleet.controller_tls()
        for name, port in ready["agents"].items():
            async with AgentClient(name, f"127.0.0.1:{port}", tls, timeout=10) as c:
                assert (await c.get_status()).host == name
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def test_hollow_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    fleet = make_fleet(tmp_path / "fleet")
    base, held = free_port_run(2)
    held[0].close()
    try:
        held[1].listen()  # the second agent's port is taken
        result = agent_cli(
            "hollow",
            "--count",
            "2",
            "--base-port",
            str(base),
            "--state-dir",
            str(tmp_path / "hollow"),
            "--ca-state",
            str(fleet.controller_state),
        )
    finally:
        for s in held:
            s.close()
    assert result.returncode != 0
    assert f"cannot listen on 127.0.0.1:{base + 1}" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_hollow_ports_past_65535_are_refused(tmp_path: Path) -> None:
    result = agent_cli(
        "hollow",
        "--count",
        "3",
        "--base-port",
        "65534",
        "--state-dir",
        str(tmp_path / "h"),
    )
    assert result.returncode != 0
    assert "ports 65534..65536 run past 65535" in result.stderr


async def test_run_serve_applies_then_serves(tmp_path: Path) -> None:
    fleet = make_fleet(tmp_path / "fleet")
    agent_dir = fleet.enroll("a1")
    data = write_plan(tmp_path / "a1.plan")
    config = agent_dir / "agent.yaml"
    config.write_text("name: a1\nlisten: 127.0.0.1:0\nstate_dir: .\n")
    proc = subprocess.Popen(
        [*AGENT, "run", "--plan", str(tmp_path / "a1.plan"), "--serve", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        port = 0
        for line in proc.stdout:
            if " listening on " in line:
                port = int(line.rsplit(":", 1)[1])
                break
        assert port, "run --serve never listened"
        assert (agent_dir / "plan.pb").read_bytes() == data
        async with AgentClient("a1", f"127.0.0.1:{port}", fleet.controller_tls()) as c:
            status = await c.get_status()
        assert status.generation == 1 and status.peers_total == 1
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)


def test_run_serve_refuses_plan_for_other_name(tmp_path: Path) -> None:
    fleet = make_fleet(tmp_path / "fleet")
    agent_dir = fleet.enroll("a1")
    write_plan(tmp_path / "b1.plan", host="b1")
    config = agent_dir / "agent.yaml"
    config.write_text("name: a1\nlisten: 127.0.0.1:0\nstate_dir: .\n")
    result = agent_cli("run", "--plan", str(tmp_path / "b1.plan"), "--serve", str(config))
    assert result.returncode == 1
    assert "is a plan for 'b1'" in result.stderr and "names 'a1'" in result.stderr
