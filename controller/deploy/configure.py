"""The agent's configuration and systemd unit on a host, written by the agent installed
there (``vpnfleet-agent configure --json``, agent/configure.py), so one definition of
each file serves bootstrap, ``vpnfleet-agent join`` and ``vpnfleet-agent unit``. The
controller reads back which files changed, with a unified diff of each.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from vpnfleet.protos.host_setup import (
    ConfiguredFile,
    FileRole,
    FileState,
    ReportError,
    parse_report,
)

from ..reports.results import ChangeLine
from .enrol import AGENT_STATE_DIR
from .install import AgentLayout
from .session import HostSession


class ConfigureError(Exception):
    """The configuration or unit could not be written (the message says why)."""


@dataclass(frozen=True, slots=True)
class ConfigureOutcome:
    files: tuple[ConfiguredFile, ...]
    changes: tuple[ChangeLine, ...]
    diffs: dict[ChangeLine, str]  # the unified diff behind each change

    @classmethod
    def of(cls, files: list[ConfiguredFile]) -> ConfigureOutcome:
        changes: list[ChangeLine] = []
        diffs: dict[ChangeLine, str] = {}
        for f in files:
            if not f.changed:
                continue
            kind = "added" if f.state is FileState.ADDED else "changed"
            line = ChangeLine("agent", f"{f.role.value} {f.path}", kind)
            changes.append(line)
            diffs[line] = f.diff
        return cls(tuple(files), tuple(changes), diffs)

    @classmethod
    def pending(cls, layout: AgentLayout, version: str, kind: str) -> ConfigureOutcome:
        """With --check on a host without this version of the agent: the files are made
        by that agent once it is installed, so what they would hold is not shown
        (``kind``: added on a host without an agent, else changed)."""
        line = ChangeLine(
            "agent",
            f"config {layout.config} and unit {layout.unit_path}",
            kind,
            (f"written by vpnfleet-agent {version} once installed",),
        )
        return cls((), (line,), {})

    @property
    def unit_changed(self) -> bool:
        return any(f.changed and f.role is FileRole.UNIT for f in self.files)

    @property
    def summary(self) -> str:
        return f"config {self.files[0].path}" if self.files else "config and unit to write"


async def configure_agent(
    session: HostSession, layout: AgentLayout, host: str, listen: str, check: bool
) -> ConfigureOutcome:
    """Have the host's agent write (``check``: compare only) its configuration, serving
    the controller on ``listen``, and its unit."""
    argv = [
        str(layout.agent),
        "configure",
        "--name",
        host,
        "--listen",
        listen,
        "--state-dir",
        str(AGENT_STATE_DIR),
        "--config",
        str(layout.config),
        "--unit-dir",
        str(layout.unit_dir),
        "--venv",
        str(layout.venv),
        "--json",
        *(["--check"] if check else []),
    ]
    res = await session.run(shlex.join(argv), privileged=True)
    if not res.ok:
        raise ConfigureError(f"vpnfleet-agent configure failed: {res.error_line('error')}")
    try:
        return ConfigureOutcome.of(parse_report(res.stdout))
    except ReportError as exc:
        raise ConfigureError(f"vpnfleet-agent configure: {exc}") from None
