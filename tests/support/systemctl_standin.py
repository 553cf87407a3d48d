#!/usr/bin/python3
"""A stand-in for ``systemctl`` in the SSH test bed (tests/support/ssh_hosts.py), because
systemd is not PID 1 on this machine: there is no service manager to talk to.

The test bed bind-mounts this file over ``/usr/bin/systemctl`` in each host's own mount
namespace only, so what ``vpnfleet bootstrap`` runs over SSH reaches it. It knows only
the verbs bootstrap uses, and does for them what systemd would, as far as the agent
can tell:

- ``daemon-reload`` reads every unit file of /etc/systemd/system again: ``start`` and
  ``restart`` run the unit as systemd last read it, so a unit written and not reloaded
  runs the old one, and ``show`` says ``NeedDaemonReload=yes`` for it.
- ``start`` runs the unit's ``ExecStart`` exactly as the unit file writes it (split as a
  shell would, no variables), with the unit's ``Environment=`` and ``$NOTIFY_SOCKET``
  naming a datagram socket it listens on, and returns once the process says
  ``READY=1`` (``Type=notify``); it fails, with the output, when the process exits
  first or ``TimeoutStartSec`` (90 s) passes. The process runs in a session of its own
  with its output in ``/run/systemctl-standin/UNIT.log`` (the journal, here).
- ``stop`` sends SIGTERM and waits ``TimeoutStopSec`` (default 90 s) for the process to
  end, then SIGKILL; ``restart`` is stop then start.
- ``enable`` / ``disable`` make / remove the ``WantedBy=`` symlink, as systemctl does.
- ``is-active``, ``is-enabled`` and ``show --property=...`` (ActiveState, UnitFileState,
  NeedDaemonReload) answer as systemctl does, exit codes included.

What it does not do: the hardening settings (capabilities, ProtectSystem …) are not
applied — the test checks the unit with ``systemd-analyze verify`` instead — and
``Restart=always`` is not honoured (nothing supervises the process after ``start``).
The test bed kills what it started when it closes (every process of the host's network
namespace).
"""

from __future__ import annotations

import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

UNIT_DIR = Path("/etc/systemd/system")
STATE = Path("/run/systemctl-standin")
LOADED = STATE / "loaded"
START_TIMEOUT = 90.0
DEFAULT_STOP_TIMEOUT = 90.0


def parse_unit(text: str) -> dict[tuple[str, str], list[str]]:
    section = ""
    out: dict[tuple[str, str], list[str]] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        out.setdefault((section, key.strip()), []).append(value.strip())
    return out


def loaded(unit: str) -> dict[tuple[str, str], list[str]] | None:
    path = LOADED / unit
    return parse_unit(path.read_text()) if path.exists() else None


def pid_of(unit: str) -> int | None:
    path = STATE / f"{unit}.pid"
    try:
        pid = int(path.read_text())
    except (FileNotFoundError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        path.unlink(missing_ok=True)
        return None
    if Path(f"/proc/{pid}/stat").read_text().split(") ")[-1].startswith("Z"):
        return None  # exited, not reaped by its parent yet
    return pid


def wants_link(unit: str) -> list[Path]:
    settings = loaded(unit) or {}
    return [UNIT_DIR / f"{t}.wants" / unit for t in settings.get(("Install", "WantedBy"), [])]


def enabled(unit: str) -> bool:
    return any(p.is_symlink() for p in wants_link(unit)) if loaded(unit) else False


def seconds(value: str, default: float) -> float:
    if not value:
        return default
    if value.endswith("min"):
        return float(value[:-3]) * 60
    return float(value.rstrip("s"))


def daemon_reload() -> int:
    LOADED.mkdir(parents=True, exist_ok=True)
    for old in LOADED.iterdir():
        old.unlink()
    for path in UNIT_DIR.glob("*.service"):
        (LOADED / path.name).write_bytes(path.read_bytes())
    return 0


def not_loaded(unit: str) -> int:
    print(f"Failed to start {unit}: Unit {unit} not found.", file=sys.stderr)
    return 5


def start(unit: str) -> int:
    settings = loaded(unit)
    if settings is None:
        return not_loaded(unit)
    if pid_of(unit) is not None:
        return 0
    argv = shlex.split(settings[("Service", "ExecStart")][-1])
    env = dict(os.environ)
    for assignment in settings.get(("Service", "Environment"), []):
        for pair in shlex.split(assignment):
            key, _, value = pair.partition("=")
            env[key] = value
    for key in ("StateDirectory", "RuntimeDirectory"):
        for name in settings.get(("Service", key), []):
            base = Path("/var/lib" if key == "StateDirectory" else "/run")
            (base / name).mkdir(mode=0o700, parents=True, exist_ok=True)
    STATE.mkdir(parents=True, exist_ok=True)
    notify_path = STATE / f"{unit}.notify"
    notify_path.unlink(missing_ok=True)
    log = STATE / f"{unit}.log"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        notify.bind(str(notify_path))
        env["NOTIFY_SOCKET"] = str(notify_path)
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                argv,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                cwd="/",
            )
        (STATE / f"{unit}.pid").write_text(str(proc.pid))
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            notify.settimeout(0.2)
            try:
                message = notify.recv(4096).decode(errors="replace")
            except TimeoutError:
                message = ""
            if "READY=1" in message.splitlines():
                return 0
            if proc.poll() is not None:
                tail = log.read_text(errors="replace").splitlines()[-5:]
                print(
                    f"Job for {unit} failed because the control process exited with error "
                    f"code (status {proc.returncode}):\n" + "\n".join(tail),
                    file=sys.stderr,
                )
                return 1
        proc.kill()
        print(f"Job for {unit} failed because a timeout was exceeded.", file=sys.stderr)
        return 1


def stop(unit: str) -> int:
    pid = pid_of(unit)
    if pid is None:
        return 0
    settings = loaded(unit) or {}
    timeout = seconds(
        (settings.get(("Service", "TimeoutStopSec")) or [""])[-1], DEFAULT_STOP_TIMEOUT
    )
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while pid_of(unit) is not None:
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
        time.sleep(0.05)
    (STATE / f"{unit}.pid").unlink(missing_ok=True)
    return 0


def enable(unit: str) -> int:
    if loaded(unit) is None:
        print(f"Failed to enable unit: Unit file {unit} does not exist.", file=sys.stderr)
        return 1
    for link in wants_link(unit):
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.is_symlink():
            link.symlink_to(UNIT_DIR / unit)
            print(f"Created symlink {link} → {UNIT_DIR / unit}.", file=sys.stderr)
    return 0


def disable(unit: str) -> int:
    for link in wants_link(unit):
        if link.is_symlink():
            link.unlink()
            print(f"Removed {link}.", file=sys.stderr)
    return 0


def show(unit: str, properties: list[str]) -> int:
    on_disk = UNIT_DIR / unit
    in_memory = LOADED / unit
    values = {
        "ActiveState": "active" if pid_of(unit) is not None else "inactive",
        "UnitFileState": ("enabled" if enabled(unit) else "disabled") if loaded(unit) else "",
        "NeedDaemonReload": "yes"
        if in_memory.exists()
        and (not on_disk.exists() or on_disk.read_bytes() != in_memory.read_bytes())
        else "no",
    }
    for name in properties or list(values):
        print(f"{name}={values.get(name, '')}")
    return 0


def main(argv: list[str]) -> int:
    args = [a for a in argv if not a.startswith("-")]
    properties = [
        p for a in argv if a.startswith("--property=") for p in a.split("=", 1)[1].split(",")
    ]
    if not args:
        print("systemctl stand-in: give a verb", file=sys.stderr)
        return 1
    verb, units = args[0], args[1:]
    if verb == "daemon-reload":
        return daemon_reload()
    if verb == "show":
        return max((show(u, properties) for u in units), default=0)
    actions = {
        "start": start,
        "stop": stop,
        "restart": lambda u: stop(u) or start(u),
        "enable": enable,
        "disable": disable,
    }
    if verb in actions:
        return max((actions[verb](u) for u in units), default=0)
    if verb == "is-active":
        active = all(pid_of(u) is not None for u in units)
        for u in units:
            print("active" if pid_of(u) is not None else "inactive")
        return 0 if active else 3
    if verb == "is-enabled":
        on = all(enabled(u) for u in units)
        for u in units:
            print("enabled" if enabled(u) else "disabled")
        return 0 if on else 1
    print(f"systemctl stand-in: {verb!r} is not one of the verbs it knows", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
