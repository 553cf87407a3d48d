"""The agent under systemd: the unit `vpnfleet-agent unit` writes passes
`systemd-analyze verify` and says what it must, and the agent run exactly as its
ExecStart says reports READY=1 (and STOPPING=1) on $NOTIFY_SOCKET.

systemd is not PID 1 here, so the notify socket is one the test listens on."""

from __future__ import annotations

import contextlib
import os
import secrets
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.agent_harness import Fleet, make_fleet
from vpnfleet.controller.transport.client import AgentClient

AGENT = [sys.executable, "-m", "vpnfleet.agent.cli"]
PREFIX = Path(sys.prefix)  # this venv: its bin/vpnfleet-agent is a real executable
WAIT = 30.0


def agent_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*AGENT, *args], capture_output=True, text=True, timeout=60)


def unit_settings(text: str) -> dict[tuple[str, str], list[str]]:
    """(section, key) -> values, as systemd reads a unit (comments and blanks skipped)."""
    section = ""
    out: dict[tuple[str, str], list[str]] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        out.setdefault((section, key), []).append(value)
    return out


def verify(unit: Path) -> str:
    """systemd-analyze verify's complaints about ``unit`` (it exits 0 on many of them,
    e.g. an unknown key or a bad Type=, and only warns)."""
    result = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return f"rc={result.returncode} {result.stdout}{result.stderr}".strip()


def make_unit(tmp_path: Path, *args: str) -> Path:
    out = tmp_path / "units"
    out.mkdir(exist_ok=True)
    result = agent_cli("unit", "--venv", str(PREFIX), "--write", str(out), *args)
    assert result.returncode == 0, result.stderr
    return out / "vpnfleet-agent.service"


def test_unit_is_valid_and_hardened(tmp_path: Path) -> None:
    unit = make_unit(tmp_path, "--config", "/etc/vpnfleet/agent.yaml")
    assert verify(unit) == "rc=0"
    text = unit.read_text()
    assert text.startswith("# vpnfleet-agent.service: ")
    s = unit_settings(text)
    exec_start = shlex.split(s["Service", "ExecStart"][0])
    assert exec_start == [
        str(PREFIX / "bin" / "vpnfleet-agent"),
        "serve",
        "--config",
        "/etc/vpnfleet/agent.yaml",
    ]
    assert os.access(exec_start[0], os.X_OK)
    caps = ["CAP_NET_ADMIN CAP_NET_RAW CAP_NET_BIND_SERVICE"]
    expected = {
        "Type": ["notify"],
        "Restart": ["always"],
        "CapabilityBoundingSet": caps,
        "AmbientCapabilities": caps,
        "ProtectSystem": ["strict"],
        "ProtectHome": ["yes"],
        "PrivateTmp": ["yes"],
        "NoNewPrivileges": ["yes"],
        "StateDirectory": ["vpnfleet-agent"],
        "RuntimeDirectory": ["vpnfleet-agent"],
        "DeviceAllow": ["/dev/net/tun rw"],
        "RestrictAddressFamilies": ["AF_INET AF_INET6 AF_NETLINK AF_UNIX"],
        "ReadWritePaths": ["/proc/sys/net"],
    }
    assert {k: s.get(("Service", k)) for k in expected} == expected
    assert int(s["Service", "RestartSec"][0]) > 0
    assert int(s["Service", "LimitNOFILE"][0]) >= 4096
    assert s["Install", "WantedBy"] == ["multi-user.target"]


def test_verify_catches_a_malformed_unit(tmp_path: Path) -> None:
    """The check above is not blind: systemd-analyze names each fault of a spoiled copy."""
    unit = make_unit(tmp_path)
    good = unit.read_text()
    for spoil, complaint in (
        (("Type=notify", "Type=notfy"), "Failed to parse service type"),
        (("Restart=always", "Restart=allways"), "Failed to parse service restart"),
        (("ProtectSystem=strict", "ProtectSystm=strict"), "Unknown key"),
        ((f"ExecStart={PREFIX}", "ExecStart=/nonexistent"), "is not executable"),
    ):
        unit.write_text(good.replace(*spoil))
        assert complaint in verify(unit), spoil


def test_unit_makes_the_configured_state_dir_writable(tmp_path: Path) -> None:
    state = tmp_path / "state"
    config = tmp_path / "agent.yaml"
    config.write_text(f"name: a1\nstate_dir: {state}\nkeylog: {tmp_path / 'keys' / 'k.log'}\n")
    unit = make_unit(tmp_path, "--config", str(config))
    assert verify(unit) == "rc=0"
    rw = unit_settings(unit.read_text())["Service", "ReadWritePaths"]
    assert rw == [f"{state} {tmp_path / 'keys'} /proc/sys/net"]


def test_unit_refuses_relative_paths_and_bad_config(tmp_path: Path) -> None:
    result = agent_cli("unit", "--venv", "opt/vpnfleet", "--write", str(tmp_path))
    assert result.returncode == 1
    assert "--venv opt/vpnfleet must be an absolute path" in result.stderr
    config = tmp_path / "agent.yaml"
    config.write_text("name: a1\nlisten: nowhere\n")
    result = agent_cli("unit", "--config", str(config), "--write", str(tmp_path))
    assert result.returncode == 1 and "listen 'nowhere' must be host:port" in result.stderr
    assert sorted(tmp_path.iterdir()) == [config]


# ------------------------------------------------------------------ sd_notify READY


@pytest.fixture
def fleet(tmp_path: Path) -> Fleet:
    return make_fleet(tmp_path)


def notify_socket(tmp_path: Path, abstract: bool) -> tuple[socket.socket, str]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    if abstract:
        name = f"vpnfleet-test-{secrets.token_hex(8)}"
        sock.bind("\0" + name)
        return sock, "@" + name
    path = str(tmp_path / "notify")
    sock.bind(path)
    return sock, path


def receive(sock: socket.socket, key: str) -> dict[str, str]:
    """The next notification that sets ``key``, as a mapping."""
    deadline = time.monotonic() + WAIT
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            data = sock.recv(4096)
        except TimeoutError:
            break
        fields = dict(line.split("=", 1) for line in data.decode().splitlines())
        if key in fields:
            return fields
    raise AssertionError(f"no {key} notification within {WAIT:g}s")


@pytest.fixture
def exec_start(fleet: Fleet, tmp_path: Path) -> list[str]:
    agent_dir = fleet.enroll("a1")
    config = agent_dir / "agent.yaml"
    config.write_text(f"name: a1\nlisten: 127.0.0.1:0\nstate_dir: {agent_dir}\n")
    unit = make_unit(tmp_path, "--config", str(config))
    return shlex.split(unit_settings(unit.read_text())["Service", "ExecStart"][0])


@contextlib.contextmanager
def started(argv: list[str], notify: str, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            argv, env={**os.environ, "NOTIFY_SOCKET": notify}, stdout=out, stderr=out
        )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)


@pytest.mark.parametrize("abstract", [False, True], ids=["path", "abstract"])
async def test_ready_once_grpc_serves_and_stopping_on_sigterm(
    fleet: Fleet, tmp_path: Path, exec_start: list[str], abstract: bool
) -> None:
    sock, notify = notify_socket(tmp_path, abstract)
    log = tmp_path / "agent.log"
    with sock, started(exec_start, notify, log) as proc:
        ready = receive(sock, "READY")
        assert ready["READY"] == "1", ready
        assert ready["STATUS"].startswith("vpnfleet-agent a1 listening on 127.0.0.1:")
        port = int(ready["STATUS"].rsplit(":", 1)[1])
        # Ready means serving: the port takes connections and answers at once, no retry.
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
        async with AgentClient("a1", f"127.0.0.1:{port}", fleet.controller_tls()) as c:
            assert (await c.get_status()).host == "a1"
            assert await c.health() == "SERVING"
        proc.send_signal(signal.SIGTERM)
        stopping = receive(sock, "STOPPING")
        assert stopping["STOPPING"] == "1"
        assert proc.wait(WAIT) == 0, log.read_text()
