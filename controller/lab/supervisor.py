"""The lab's supervisor: one small detached process that keeps every agent running.

``lab up`` starts it (``python -m vpnfleet.controller.lab.supervisor LAB_DIR``) in a
session of its own, so it outlives the CLI. It reads the agents to run from the lab
record, starts each as ``ip netns exec NS vpnfleet-agent serve --config FILE`` (``ip
netns exec`` execs, so the pid is the agent's), restarts an agent that exits with a
back-off, and keeps ``supervisor.json`` (pids, restarts) current. SIGTERM stops the
agents (SIGTERM, then SIGKILL after a grace period) and the supervisor.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from .record import (
    RECORD,
    SUPERVISOR_LOG,
    SUPERVISOR_PID,
    SUPERVISOR_STATE,
    read_json,
    write_json,
)

TICK = 0.1
BACKOFF_FIRST = 0.25
BACKOFF_MAX = 5.0
# An agent that ran at least this long before exiting is restarted without delay growth.
STABLE_SECONDS = 10.0
STOP_GRACE = 5.0


def agent_argv(netns: str, config: str) -> list[str]:
    return [
        "ip", "netns", "exec", netns,
        sys.executable, "-m", "vpnfleet.agent.cli", "serve", "--config", config,
    ]  # fmt: skip


def supervisor_argv(lab_dir: Path) -> list[str]:
    return [sys.executable, "-m", "vpnfleet.controller.lab.supervisor", str(lab_dir)]


def start_detached(lab_dir: Path) -> int:
    """Start the supervisor in a new session; it survives the caller. Returns its pid."""
    with open(lab_dir / SUPERVISOR_LOG, "ab") as log:
        proc = subprocess.Popen(
            supervisor_argv(lab_dir),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
            close_fds=True,
        )
    return proc.pid


@dataclass(slots=True)
class Supervised:
    host: str
    netns: str
    config: str
    log: str
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    starts: int = 0
    last_exit: int | None = None
    backoff: float = BACKOFF_FIRST
    next_start: float = 0.0

    @property
    def restarts(self) -> int:
        return max(0, self.starts - 1)

    def start(self, now: float) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                agent_argv(self.netns, self.config),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                close_fds=True,
            )
        self.started_at = now
        self.starts += 1

    def check(self, now: float) -> bool:
        """Reap a dead agent and schedule or do its restart; True when something changed."""
        if self.proc is not None:
            rc = self.proc.poll()
            if rc is None:
                return False
            self.last_exit = rc
            self.proc = None
            ran = now - self.started_at
            self.backoff = (
                BACKOFF_FIRST if ran >= STABLE_SECONDS else min(self.backoff * 2, BACKOFF_MAX)
            )
            self.next_start = now + self.backoff
            return True
        if now >= self.next_start:
            self.start(now)
            return True
        return False

    def to_json(self) -> dict[str, Any]:
        return {
            "pid": self.proc.pid if self.proc else None,
            "netns": self.netns,
            "starts": self.starts,
            "restarts": self.restarts,
            "started_at": self.started_at,
            "last_exit": self.last_exit,
        }


@dataclass(slots=True)
class Supervisor:
    lab_dir: Path
    agents: list[Supervised] = field(default_factory=list)
    stopping: bool = False

    def save(self) -> None:
        write_json(
            self.lab_dir / SUPERVISOR_STATE,
            {
                "pid": os.getpid(),
                "updated_at": time.time(),
                "agents": {a.host: a.to_json() for a in self.agents},
            },
        )

    def stop(self, signum: int, _frame: FrameType | None) -> None:
        self.stopping = True

    def run(self) -> int:
        record = read_json(self.lab_dir / RECORD)
        if record is None:
            print(f"no lab record in {self.lab_dir}", file=sys.stderr)
            return 1
        self.agents = [
            Supervised(a["host"], a["netns"], a["config"], a["log"]) for a in record["agents"]
        ]
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)
        pid_path = self.lab_dir / SUPERVISOR_PID
        pid_path.write_text(f"{os.getpid()}\n")
        try:
            self.save()
            while not self.stopping:
                now = time.monotonic()
                changed = [a.check(now) for a in self.agents]
                if any(changed):
                    self.save()
                time.sleep(TICK)
            self.stop_agents()
            self.save()
        finally:
            pid_path.unlink(missing_ok=True)
        return 0

    def stop_agents(self) -> None:
        running = [a.proc for a in self.agents if a.proc is not None]
        for p in running:
            p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE
        for p in running:
            try:
                p.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for a in self.agents:
            a.proc = None


def read_state(lab_dir: Path) -> dict[str, Any] | None:
    return read_json(lab_dir / SUPERVISOR_STATE)


def read_pid(lab_dir: Path) -> int | None:
    try:
        return int((lab_dir / SUPERVISOR_PID).read_text().strip())
    except (OSError, ValueError):
        return None


def _cmdline(pid: int) -> list[bytes]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return []


def is_supervisor_of(pid: int, lab_dir: Path) -> bool:
    """Whether ``pid`` is this lab's supervisor (and not a recycled pid)."""
    cmdline = _cmdline(pid)
    return b"vpnfleet.controller.lab.supervisor" in cmdline and str(lab_dir).encode() in cmdline


def find_supervisors(*, lab_dir: Path | None = None, name: str | None = None) -> list[int]:
    """Running supervisors found through /proc: of the lab directory ``lab_dir``, or of
    every lab called ``name`` whatever state directory it was started from."""
    found = []
    suffix = f"/labs/{name}".encode()
    exact = str(lab_dir).encode() if lab_dir is not None else None
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        cmdline = _cmdline(int(entry))
        if b"vpnfleet.controller.lab.supervisor" not in cmdline:
            continue
        args = [arg.rstrip(b"/") for arg in cmdline]
        if (exact is not None and exact in args) or (
            name is not None and any(arg.endswith(suffix) for arg in args)
        ):
            found.append(int(entry))
    return found


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m vpnfleet.controller.lab.supervisor LAB_DIR", file=sys.stderr)
        return 2
    return Supervisor(Path(args[0])).run()


if __name__ == "__main__":
    sys.exit(main())
