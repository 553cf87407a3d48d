"""Which state directory owns a lab name on this machine.

Namespace and link names (``vf-<lab>-<host>``, ``vf-<lab>``) are machine-wide; lab
records are per state directory, and two state directories may each hold a lab of the
same name. ``/run/vpnfleet-lab/<lab>.json`` says which lab directory made this
machine's ``vf-<lab>-*``: ``lab up`` writes it, exclusively, after the lab record and
before it creates anything on the machine (so a crash leaves it beside the namespaces,
and a second ``lab up`` of the name loses the race cleanly), ``lab down`` removes it
after everything else. It lives in /run like
/run/netns: a reboot clears both at once.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
from dataclasses import dataclass
from pathlib import Path

from .layout import LabError
from .record import RECORD

OWNERS_DIR = Path("/run/vpnfleet-lab")


@dataclass(frozen=True, slots=True)
class LabOwner:
    name: str
    lab_dir: Path  # absolute: STATE/labs/<name>
    state_dir: Path

    def owns(self, lab_dir: Path) -> bool:
        return _same(self.lab_dir, lab_dir)

    @property
    def recorded(self) -> bool:
        """Whether the owner's lab record still exists (else only leftovers can remain)."""
        return (self.lab_dir / RECORD).is_file()

    @property
    def down_command(self) -> str:
        return f"vpnfleet --state {shlex.quote(str(self.state_dir))} lab down --name {self.name}"

    def describe(self) -> str:
        gone = "" if self.recorded else ", whose lab record is gone"
        return f"state directory {self.state_dir} (lab directory {self.lab_dir}{gone})"


def _same(a: Path, b: Path) -> bool:
    return a.absolute().resolve() == b.absolute().resolve()


def owner_path(name: str) -> Path:
    return OWNERS_DIR / f"{name}.json"


def read_owner(name: str) -> LabOwner | None:
    """The recorded owner of lab ``name``; None when none is recorded (or unreadable)."""
    try:
        data = json.loads(owner_path(name).read_text())
        return LabOwner(name, Path(data["lab_dir"]), Path(data["state_dir"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def claim(name: str, lab_dir: Path, state_dir: Path) -> LabOwner | None:
    """Record ``lab_dir`` as the owner of ``name``; returns the other owner instead when
    one is recorded already (nothing is changed then)."""
    text = json.dumps(
        {"name": name, "lab_dir": str(lab_dir.absolute()), "state_dir": str(state_dir.absolute())},
        indent=1,
    )
    try:
        OWNERS_DIR.mkdir(mode=0o700, exist_ok=True)
        scratch = OWNERS_DIR / f".{name}.{os.getpid()}"
        scratch.write_text(text + "\n")
        try:
            # link(2) fails when the name exists: the owner file appears whole or not at all.
            os.link(scratch, owner_path(name))
        except FileExistsError:
            other = read_owner(name)
            if other is None:
                raise LabError(
                    f"{owner_path(name)} exists but cannot be read: remove the lab's "
                    f"leftovers with `vpnfleet lab down --name {name} --force`"
                ) from None
            return other
        finally:
            scratch.unlink(missing_ok=True)
    except OSError as exc:
        raise LabError(f"cannot record the owner of lab {name} in {OWNERS_DIR}: {exc}") from None
    return None


def release(name: str, lab_dir: Path | None) -> None:
    """Forget the owner of ``name``: only when it is ``lab_dir``, or whoever it is (None)."""
    current = read_owner(name)
    if lab_dir is not None and current is not None and not current.owns(lab_dir):
        return
    with contextlib.suppress(FileNotFoundError):
        owner_path(name).unlink()
