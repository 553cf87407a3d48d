"""One operation at a time on a state directory: an flock on ``STATE/lock``.

``apply``, ``rotate`` and ``rekey`` hold it for their whole run; ``serve`` holds it for
each rollout and drift correction, so a manual run and the serve loop never push plans
to the same agents at once. The holder writes who it is (pid,
command, since) into the file, so the one refused can name it. The lock is the kernel's:
it goes with the process, also when the process is killed.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from vpnfleet.protos.files import make_private_directory

from .state import StateDir

LOCK_FILE = "lock"


@dataclass(frozen=True, slots=True)
class Holder:
    """Who holds the lock."""

    pid: int
    command: str
    since: float

    def describe(self) -> str:
        when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(self.since))
        return f"pid {self.pid} ({self.command}) since {when}"


class LockHeld(Exception):
    """The state directory is locked by another process."""

    def __init__(self, path: Path, holder: Holder | None) -> None:
        self.path = path
        self.holder = holder
        who = holder.describe() if holder else "another process (holder not recorded)"
        super().__init__(f"the state directory is in use by {who} ({path})")


def _read_holder(fd: int) -> Holder | None:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        data = json.loads(os.read(fd, 4096) or b"null")
        return Holder(int(data["pid"]), str(data["command"]), float(data["since"]))
    except (OSError, ValueError, TypeError, KeyError):
        return None


class StateLock:
    """``with StateLock(state, "apply"):`` — raises :class:`LockHeld` at once when
    another process holds the lock (never waits)."""

    def __init__(self, state: StateDir, command: str) -> None:
        self.path = state.root / LOCK_FILE
        self.command = command
        self._fd: int | None = None

    def acquire(self) -> None:
        make_private_directory(self.path.parent)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise LockHeld(self.path, holder) from None
        except BaseException:
            os.close(fd)
            raise
        record = json.dumps({"pid": os.getpid(), "command": self.command, "since": time.time()})
        os.ftruncate(fd, 0)
        os.pwrite(fd, record.encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            os.ftruncate(fd, 0)
        finally:
            os.close(fd)  # closing the only descriptor drops the flock

    def __enter__(self) -> StateLock:
        self.acquire()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()
