"""The README's Quick start, as a new user runs it: `scripts/demo`, then the follow-up
commands exactly as the README writes them, each in a new shell with the virtualenv's
commands on PATH and nothing else set up (no VPNFLEET_STATE, a home of its own). A
second user (another home, so another state directory) runs `scripts/demo` at the same
time, and each demo keeps running through the other's commands.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.netns

REPO = Path(__file__).resolve().parents[2]


def follow_up_commands() -> list[str]:
    """The shell block of the Quick start that uses the demo lab."""
    readme = (REPO / "README.md").read_text()
    quick = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```sh\n(.*?)```", quick, re.S)
    lines = [ln.strip() for b in blocks if "lab status --name demo" in b for ln in b.splitlines()]
    return [ln for ln in lines if ln and not ln.startswith("#")]


def test_demo_then_the_readme_commands_in_a_new_shell(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to create network namespaces")
    commands = follow_up_commands()
    assert commands[0] == "vpnfleet lab status --name demo"
    assert commands[-1] == "vpnfleet lab down --name demo"

    def user(home: Path) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("VPNFLEET")}
        env["HOME"] = str(home)
        env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '/usr/bin:/bin')}"
        return env

    def demo(env: dict[str, str]) -> None:
        run = subprocess.run(
            [str(REPO / "scripts" / "demo")], cwd=REPO, env=env, capture_output=True, text=True
        )
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
        assert "12 site pairs" in run.stdout and " fail " not in run.stdout, run.stdout[-3000:]

    def shell(command: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", "-c", command], cwd=REPO, env=env, capture_output=True, text=True
        )

    env, other = user(tmp_path / "first"), user(tmp_path / "second")
    state = tmp_path / "first" / ".vpnfleet"
    try:
        demo(env)
        assert (state / "labs" / "demo" / "controller" / "pki").is_dir()
        demo(other)
        for command in commands:
            run = shell(command, env)
            assert run.returncode == 0, f"{command}: {run.stdout[-2000:]}{run.stderr[-2000:]}"
            if command.startswith("vpnfleet lab status"):
                assert "demo" in run.stdout and "up" in run.stdout, run.stdout
            if " status -i inventories/lab" in command:
                for host in ("a1", "a2", "a3", "a4"):
                    assert host in run.stdout, run.stdout
        assert not (state / "labs" / "demo").exists()
        # The second user's demo ran beside the first all along, and still does.
        for command in commands[:3]:
            run = shell(command, other)
            assert run.returncode == 0, f"{command}: {run.stdout[-2000:]}{run.stderr[-2000:]}"
        assert shell(commands[-1], other).returncode == 0
    finally:
        for home in (tmp_path / "first", tmp_path / "second"):
            cli = [sys.executable, "-m", "vpnfleet.controller.cli"]
            subprocess.run(
                [*cli, "--state", str(home / ".vpnfleet"), "lab", "down", "--name", "demo"],
                env=user(home),
                capture_output=True,
            )
