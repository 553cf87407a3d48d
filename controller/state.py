"""The controller's own small state directory.

Desired state lives in git and observed state in the agents; this directory holds only
what belongs to the controller itself:

    STATE/
      pki/                 fleet CA and the controller's certificate (controller.pki)
      secrets/psk-master   32 random bytes: the fleet master secret PSKs derive from
      generation           the last plan generation handed out (a counter)

Every secret file is created 0600 inside a 0700 directory.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path

ENV_STATE = "VPNFLEET_STATE"


class StateError(Exception):
    """The state directory cannot be used (permissions, corrupt files)."""


def default_state_dir() -> Path:
    env = os.environ.get(ENV_STATE)
    if env:
        return Path(env)
    return Path.home() / ".vpnfleet"


def write_private(path: Path, data: bytes) -> None:
    """Write a secret atomically: 0600 from the start, fsync, rename."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


@dataclass(frozen=True, slots=True)
class StateDir:
    root: Path

    @property
    def pki(self) -> Path:
        return self.root / "pki"

    @property
    def secrets(self) -> Path:
        return self.root / "secrets"

    def ensure(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
            self.secrets.mkdir(exist_ok=True, mode=0o700)
        except OSError as exc:
            raise StateError(f"cannot create state directory {self.root}: {exc.strerror}") from None

    def master_secret(self) -> bytes:
        """The fleet master secret, made on first use."""
        path = self.secrets / "psk-master"
        if path.exists():
            data = path.read_bytes()
            if len(data) != 32:
                raise StateError(
                    f"{path} holds {len(data)} bytes, expected 32: restore it from backup; "
                    "a new secret would change every PSK of the fleet"
                )
            return data
        self.ensure()
        data = secrets.token_bytes(32)
        write_private(path, data)
        return data

    def current_generation(self) -> int:
        path = self.root / "generation"
        try:
            return int(path.read_text().strip() or 0)
        except FileNotFoundError:
            return 0
        except ValueError:
            raise StateError(f"{path} is not a number") from None

    def record_generation(self, generation: int) -> None:
        self.ensure()
        tmp = self.root / ".generation.tmp"
        tmp.write_text(f"{generation}\n")
        os.replace(tmp, self.root / "generation")
