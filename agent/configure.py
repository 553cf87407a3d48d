"""``vpnfleet-agent configure``: write this host's agent configuration and systemd unit.

The configuration is :func:`config.config_text` (name, listen, state_dir,
controller_identity, ``data_plane: true``) and the unit is :class:`unit.AgentUnit`
rendered for that configuration, so the files are those ``join`` and ``unit`` write.
A file whose content is already that is left untouched (not even rewritten); with
``check`` nothing is written. Each file is reported as added, changed or unchanged,
with a unified diff from what was there: ``vpnfleet bootstrap`` runs this on each host
and decides from the report whether systemd must reload the unit and the agent restart.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path

from vpnfleet.protos.files import PUBLIC, write_atomically
from vpnfleet.protos.host_setup import UNIT_NAME, ConfiguredFile, FileRole, FileState

from .config import config_text, parse_config
from .unit import AgentUnit


class ConfigureError(Exception):
    """The files cannot be made or written as asked; the message says why."""


@dataclass(frozen=True, slots=True)
class Wanted:
    role: FileRole
    path: Path
    text: str


def wanted_files(
    name: str, listen: str, state_dir: Path, config_path: Path, unit_dir: Path, venv: Path
) -> list[Wanted]:
    """The configuration and the unit this host's agent should have
    (:class:`ConfigError` or :class:`unit.UnitError` when the settings make none)."""
    config = config_text(name, listen, state_dir)
    unit = AgentUnit(venv, config_path, parse_config(config, config_path)).render()
    return [
        Wanted(FileRole.CONFIG, config_path, config),
        Wanted(FileRole.UNIT, unit_dir / UNIT_NAME, unit),
    ]


def _current(path: Path) -> str | None:
    try:
        return path.read_text()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not text"
        raise ConfigureError(f"cannot read {path}: {reason}") from None


def compare(wanted: Wanted) -> ConfiguredFile:
    current = _current(wanted.path)
    if current == wanted.text:
        return ConfiguredFile(wanted.role, str(wanted.path), FileState.UNCHANGED)
    diff = "".join(
        difflib.unified_diff(
            (current or "").splitlines(keepends=True),
            wanted.text.splitlines(keepends=True),
            "/dev/null" if current is None else str(wanted.path),
            str(wanted.path),
        )
    )
    state = FileState.ADDED if current is None else FileState.CHANGED
    return ConfiguredFile(wanted.role, str(wanted.path), state, diff)


def configure(
    name: str,
    listen: str,
    state_dir: Path,
    config_path: Path,
    unit_dir: Path,
    venv: Path,
    check: bool = False,
) -> list[ConfiguredFile]:
    """Write the files that differ from what they should be (none with ``check``);
    report every file. Bad settings raise :class:`ConfigError` before anything is
    written."""
    files = wanted_files(name, listen, state_dir, config_path, unit_dir, venv)
    report = [compare(w) for w in files]
    if check:
        return report
    for wanted, done in zip(files, report, strict=True):
        if not done.changed:
            continue
        try:
            wanted.path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
            write_atomically(wanted.path, wanted.text.encode(), PUBLIC)
        except OSError as exc:
            raise ConfigureError(f"cannot write {wanted.path}: {exc.strerror or exc}") from None
    return report
