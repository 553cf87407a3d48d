"""What the agent's host set-up and the controller's bootstrap agree on: the name of the
agent's systemd unit, and the report ``vpnfleet-agent configure --json`` prints (which
files it wrote or would write, with a unified diff of each), which ``vpnfleet
bootstrap`` reads over SSH.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass
from typing import Any

UNIT_NAME = "vpnfleet-agent.service"
"""The agent's systemd service unit."""


class FileRole(enum.Enum):
    CONFIG = "config"  # the agent's configuration (agent.yaml)
    UNIT = "unit"  # its systemd unit


class FileState(enum.Enum):
    ADDED = "added"  # the file was not there
    CHANGED = "changed"  # it was there with other content
    UNCHANGED = "unchanged"


@dataclass(frozen=True, slots=True)
class ConfiguredFile:
    """One file ``configure`` manages: where, what happened to it, and the unified diff
    from what was there (empty when unchanged)."""

    role: FileRole
    path: str
    state: FileState
    diff: str = ""

    @property
    def changed(self) -> bool:
        return self.state is not FileState.UNCHANGED

    def to_json(self) -> dict[str, Any]:
        return {
            "role": self.role.value,
            "path": self.path,
            "state": self.state.value,
            "diff": self.diff,
        }


class ReportError(ValueError):
    """Output that is not a ``configure --json`` report."""


def dump_report(files: list[ConfiguredFile]) -> str:
    return json.dumps({"files": [f.to_json() for f in files]})


def parse_report(text: str) -> list[ConfiguredFile]:
    """The files of a ``configure --json`` report; :class:`ReportError` if it is not one."""
    try:
        doc = json.loads(text)
        return [
            ConfiguredFile(
                FileRole(f["role"]), str(f["path"]), FileState(f["state"]), str(f["diff"])
            )
            for f in doc["files"]
        ]
    except (ValueError, KeyError, TypeError) as exc:
        raise ReportError(f"not a configure report ({exc}): {text[:200]!r}") from None
