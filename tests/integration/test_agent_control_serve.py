"""`vpnfleet-agent serve` serves its control socket (agent.sock in its state dir, or
the config's control_socket) while it runs, and removes it when it stops."""

from __future__ import annotations

import stat
import subprocess
import sys
from pathlib import Path

from tests.support.agent_harness import make_fleet, running_agent

AGENT = [sys.executable, "-m", "vpnfleet.agent.cli"]


def test_serve_answers_on_its_socket_and_removes_it_on_stop(tmp_path: Path) -> None:
    fleet = make_fleet(tmp_path)
    agent_dir = fleet.enroll("a1")
    sock = agent_dir / "agent.sock"
    with running_agent("a1", agent_dir, "") as agent:
        assert stat.S_IMODE(sock.lstat().st_mode) == 0o600
        config = ["--config", str(agent_dir / "agent.yaml")]
        listed = subprocess.run(
            [*AGENT, "sas", "-o", "json", *config], capture_output=True, text=True, timeout=30
        )
        assert (listed.returncode, listed.stdout) == (0, "[]\n"), listed.stderr
        refused = subprocess.run(
            [*AGENT, "initiate", "b", *config], capture_output=True, text=True, timeout=30
        )
        assert refused.returncode == 1
        assert refused.stderr == (
            "error: the agent refused: this agent runs no data plane: there are no SAs to "
            "initiate or terminate\n"
        )
        assert agent.terminate() == 0
    assert not sock.exists()
