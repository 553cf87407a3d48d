"""A real `vpnfleet-agent serve` process with its Prometheus endpoint on 127.0.0.1:
scraped over HTTP, the text parses, and the agent's own series are there."""

from __future__ import annotations

import os
import select
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.agent_harness import START_TIMEOUT, make_fleet


def _read_lines(proc: subprocess.Popen[bytes], wanted: tuple[str, ...], log: Path) -> list[str]:
    """stdout lines until one containing each of ``wanted`` was seen."""
    assert proc.stdout is not None
    deadline = time.monotonic() + START_TIMEOUT
    buffer = b""
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout.fileno()], [], [], 0.1)
        if ready:
            chunk = os.read(proc.stdout.fileno(), 4096)
            if not chunk:
                break
            buffer += chunk
            lines = buffer.decode(errors="replace").splitlines()
            if all(any(w in line for line in lines) for w in wanted):
                return lines
        elif proc.poll() is not None:
            break
    raise AssertionError(f"agent did not start: stdout={buffer!r} log={log.read_text()!r}")


@pytest.fixture
def agent_with_metrics(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    fleet = make_fleet(tmp_path)
    agent_dir = fleet.enroll("m1")
    config = agent_dir / "agent.yaml"
    config.write_text("name: m1\nlisten: 127.0.0.1:0\nstate_dir: .\n")
    log = agent_dir / "agent.log"
    argv = [sys.executable, "-m", "vpnfleet.agent.cli", "serve", "--config", str(config)]
    argv += ["--no-data-plane", "--metrics-listen", "127.0.0.1:0"]
    with open(log, "ab") as err:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=err)
    try:
        lines = _read_lines(proc, (" listening on ", " metrics on "), log)
        url = next(line for line in lines if " metrics on " in line).rsplit(" ", 1)[1]
        yield proc, url
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()


def test_scrape_real_agent(agent_with_metrics: tuple[subprocess.Popen[bytes], str]) -> None:
    proc, url = agent_with_metrics
    assert url.startswith("http://127.0.0.1:") and url.endswith("/metrics")
    with urllib.request.urlopen(url, timeout=5) as reply:
        assert reply.status == 200
        assert reply.headers["Content-Type"].startswith("text/plain")
        text = reply.read().decode()
    got = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    build = [k for k in got if k[0] == "vpnfleet_agent_build_info"]
    assert len(build) == 1 and ("host", "m1") in build[0][1]
    assert got[("vpnfleet_agent_plan_generation", ())] == 0
    assert got[("vpnfleet_agent_data_plane", ())] == 0
    assert got[("vpnfleet_agent_peers_up", ())] == 0
    # The agent is still serving after the scrape, and stops cleanly on SIGTERM.
    assert proc.poll() is None
    proc.terminate()
    assert proc.wait(10) == 0


def test_bad_metrics_listen_refused(tmp_path: Path) -> None:
    fleet = make_fleet(tmp_path)
    agent_dir = fleet.enroll("m2")
    config = agent_dir / "agent.yaml"
    config.write_text("name: m2\nlisten: 127.0.0.1:0\nstate_dir: .\nmetrics_listen: nonsense\n")
    argv = [sys.executable, "-m", "vpnfleet.agent.cli", "serve", "--config", str(config)]
    res = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    assert res.returncode == 1
    assert "metrics_listen 'nonsense' must be host:port" in res.stderr
