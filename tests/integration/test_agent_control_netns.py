"""`vpnfleet-agent sas`, `terminate`, `initiate`, `log --follow` and `--version` against
two real agents (`vpnfleet-agent run --plan --state-dir`, each serving its control
socket in its state dir) in two network namespaces: the SA listed with its SPIs, taken
down and brought back by the operator, the events streamed; and the socket refused to
anyone but root. Every namespace, process and file is removed at the end."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from importlib.metadata import version
from pathlib import Path
from typing import IO, Any

import pytest

from tests.support.engine_lab import Lab, built

pytestmark = pytest.mark.netns

AGENT = [sys.executable, "-m", "vpnfleet.agent.cli"]
DEADLINE = 20.0


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    with built(Lab(tmp_path)) as lab:
        yield lab


def ctl(
    lab: Lab, host: str, *args: str, prefix: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    sock = lab.directory / f"{host}-state" / "agent.sock"
    return subprocess.run(
        [*prefix, *AGENT, *args, "--socket", str(sock)],
        capture_output=True,
        text=True,
        timeout=30,
    )


def sas(lab: Lab, host: str) -> list[dict[str, Any]]:
    done = ctl(lab, host, "sas", "-o", "json")
    assert done.returncode == 0, done.stderr
    listed = json.loads(done.stdout)
    assert isinstance(listed, list)
    return listed


def until(what: str, check: Callable[[], Any]) -> Any:
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"not within {DEADLINE:g} s: {what}")


def established(lab: Lab, host: str) -> dict[str, Any] | None:
    (ike,) = sas(lab, host)
    return ike if ike["state"] == "established" and ike["children"] else None


class LineReader:
    """The lines a process prints, read by a thread so that waiting for one can time out."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        self.lines: queue.Queue[str] = queue.Queue()
        stream = proc.stdout
        self.thread = threading.Thread(target=self._pump, args=(stream,), daemon=True)
        self.thread.start()

    def _pump(self, stream: IO[str]) -> None:
        for line in stream:
            self.lines.put(line.rstrip("\n"))

    def until(self, wanted: list[str]) -> list[str]:
        """Lines until each of ``wanted`` appeared in one, in that order."""
        seen: list[str] = []
        left = list(wanted)
        deadline = time.monotonic() + DEADLINE
        while left:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            seen.append(line)
            if left[0] in line:
                left.pop(0)
        assert not left, f"missing {left} in:\n" + "\n".join(seen)
        return seen


def test_version_without_an_agent() -> None:
    done = subprocess.run([*AGENT, "--version"], capture_output=True, text=True, timeout=30)
    assert (done.returncode, done.stdout) == (0, f"vpnfleet-agent {version('vpnfleet')}\n")


def test_sas_terminate_initiate_and_the_event_stream(lab: Lab) -> None:
    lab.start("b")
    lab.start("a")
    for host in ("a", "b"):
        until(f"{host} serves its socket", lambda h=host: ctl(lab, h, "sas").returncode == 0)
    first = until("a lists its IKE SA with b established", lambda: established(lab, "a"))
    assert first["peer"] == "b" and first["initiator"] is True
    assert len(first["spi_i"]) == 16 and int(first["spi_i"], 16)
    (child,) = first["children"]
    assert len(child["spi_in"]) == 8 and child["state"] == "installed"
    # strongSwan's notation, as the plan (and a swanctl.conf) writes the proposals
    assert (first["proposal"], child["proposal"]) == ("aes256gcm16-prfsha384-x25519", "aes256gcm16")
    text = ctl(lab, "a", "sas")
    assert text.returncode == 0, text.stderr
    assert text.stdout.startswith(f"b: ESTABLISHED, IKEv2, {first['spi_i']}_i* {first['spi_r']}_r")
    assert f"SPIs: {child['spi_in']}_i {child['spi_out']}_o" in text.stdout

    sock = lab.directory / "a-state" / "agent.sock"
    follow = subprocess.Popen(
        [*AGENT, "log", "--follow", "--socket", str(sock)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        events = LineReader(follow)
        events.until(["child_up b"])  # the recent events come first
        down = ctl(lab, "a", "terminate", "b")
        assert down.returncode == 0, down.stderr
        assert down.stdout == "b: deleting 1 IKE SA(s); not started again until initiate\n"
        gone = until(
            "the SA with b gone on both agents",
            lambda: sas(lab, "a")[0]["state"] == "idle" and not sas(lab, "b")[0]["children"],
        )
        assert gone and sas(lab, "a")[0]["children"] == []
        assert lab.ping(1).returncode != 0  # no tunnel: the site behind b is not reached

        up = ctl(lab, "a", "initiate", "b")
        assert (up.returncode, up.stdout) == (0, "b: initiating\n"), up.stderr
        again = until("the SA with b back", lambda: established(lab, "a"))
        assert again["spi_i"] != first["spi_i"]
        assert lab.ping(3).returncode == 0
        lines = events.until(
            ["terminate b: by the operator", "ike_down b", "initiate b", "child_up b"]
        )
        assert all(line[:4].isdigit() and line[10] == "T" for line in lines)
    finally:
        follow.send_signal(signal.SIGINT)
        assert follow.wait(10) == 0
        assert follow.stderr is not None
        follow.stderr.close()


def test_the_socket_is_for_root_only(lab: Lab) -> None:
    lab.start("a")
    sock = lab.directory / "a-state" / "agent.sock"
    until(
        "a serves its control socket",
        lambda: sock.exists() and ctl(lab, "a", "sas").returncode == 0,
    )
    assert os.stat(sock).st_mode & 0o777 == 0o600
    nobody = ("setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups")
    done = ctl(lab, "a", "sas", prefix=nobody)
    assert done.returncode == 1
    assert done.stderr == (
        f"error: is vpnfleet-agent running? socket {sock}: permission denied — run as root\n"
    )
