"""The lab's own record: what was made, written *before* each thing is made.

``STATE/labs/<name>/`` holds everything of one lab::

    lab.json          this record: state, inventory, layout, resources in creation order
    controller/       the lab's controller state (its own fleet CA and master secret)
    agents/<host>/    each agent's directory: keys, certificates, agent.yaml, agent.log
    supervisor.pid    the supervisor's pid (written by the supervisor)
    supervisor.json   agent pids and restarts so far (written by the supervisor)
    supervisor.log

Because a resource is recorded before it is created, ``lab down`` after a crash finds
everything the lab may have made; ``lab down`` also looks for leftovers by name. Which
state directory's lab owns the name on this machine is kept in /run (:mod:`.owner`).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vpnfleet.protos.files import write_atomically

from ..statedir.state import StateDir
from .layout import LabError

RECORD = "lab.json"
SUPERVISOR_PID = "supervisor.pid"
SUPERVISOR_STATE = "supervisor.json"
SUPERVISOR_LOG = "supervisor.log"


def labs_root(state: StateDir) -> Path:
    return state.root / "labs"


def lab_dir(state: StateDir, name: str) -> Path:
    return labs_root(state) / name


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Atomic: a crash leaves the old or the new file, never half of one (0600)."""
    write_atomically(path, json.dumps(data, indent=1, sort_keys=True).encode())


def read_json(path: Path) -> dict[str, Any] | None:
    """The file's mapping; None when missing or unreadable (a crash mid-write)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


@dataclass(slots=True)
class LabRecord:
    path: Path  # the lab directory
    data: dict[str, Any]

    @classmethod
    def create(cls, directory: Path, name: str, inventory: Path) -> LabRecord:
        directory.mkdir(parents=True, mode=0o700)
        record = cls(
            directory,
            {
                "name": name,
                "state": "building",
                "created_at": time.time(),
                "inventory": str(inventory.resolve()),
                "resources": [],
                "layout": None,
                "agents": [],
                "supervisor_pid": None,
            },
        )
        record.save()
        return record

    @classmethod
    def load(cls, directory: Path) -> LabRecord | None:
        data = read_json(directory / RECORD)
        return None if data is None else cls(directory, data)

    @property
    def name(self) -> str:
        return str(self.data["name"])

    @property
    def controller_state(self) -> StateDir:
        return StateDir(self.path / "controller")

    def agent_dir(self, host: str) -> Path:
        return self.path / "agents" / host

    def save(self) -> None:
        try:
            write_json(self.path / RECORD, self.data)
        except OSError as exc:
            raise LabError(f"cannot write the lab record {self.path / RECORD}: {exc}") from None

    def add(self, kind: str, **attrs: Any) -> None:
        """Record a resource that is about to be created."""
        self.data["resources"].append({"kind": kind, **attrs})
        self.save()

    def set(self, **fields: Any) -> None:
        self.data.update(fields)
        self.save()

    def resources(self, kind: str) -> list[dict[str, Any]]:
        return [r for r in self.data.get("resources", []) if r.get("kind") == kind]
