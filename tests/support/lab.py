"""Labs for the tests: `vpnfleet lab up` in a subprocess on a copy of an example inventory,
removed when the test ends (also on failure), and what the lab tests read from it."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.pings import (
    PingStream,
    start_pings,
    stop_pings,
    tunnel_pairs,
    wait_replying,
)
from tests.support.status_output import status_document

CLI = [sys.executable, "-m", "vpnfleet.controller.cli"]


INVENTORIES = Path(__file__).resolve().parents[2] / "inventories"


def require_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to create network namespaces")


def netns_with_prefix(prefix: str) -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return [ln.split()[0] for ln in out.splitlines() if ln.startswith(prefix)]


def netns_enterable(name: str) -> bool:
    """True once ``ip netns add`` has bound the namespace: its name is listed as soon as
    the file under /run/netns exists, and entering it fails with EINVAL until the mount."""
    res = subprocess.run(["ip", "netns", "exec", name, "true"], capture_output=True)
    return res.returncode == 0


def processes_mentioning(text: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        if text.encode() in cmdline:
            found.append(int(entry))
    return found


def link_exists(name: str) -> bool:
    res = subprocess.run(["ip", "link", "show", "dev", name], capture_output=True)
    return res.returncode == 0


@dataclass
class LabRun:
    state: Path
    name: str
    inventory: Path

    @property
    def lab_dir(self) -> Path:
        return self.state / "labs" / self.name

    def vpnfleet(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*CLI, "--state", str(self.state), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, "COLUMNS": "200"},
        )

    def up(self, *extra: str) -> subprocess.CompletedProcess[str]:
        return self.vpnfleet("lab", "up", "-i", str(self.inventory), "--name", self.name, *extra)

    def down(self, *extra: str) -> subprocess.CompletedProcess[str]:
        return self.vpnfleet("lab", "down", "--name", self.name, *extra)

    def status(self, exit_code: int = 0) -> dict[str, Any]:
        """``lab status -o json``; exit 0 unless told otherwise (4: namespaces gone)."""
        res = self.vpnfleet("lab", "status", "--name", self.name, "-o", "json")
        assert res.returncode == exit_code, res.stdout + res.stderr
        data: dict[str, Any] = json.loads(res.stdout)
        return data

    def exec(self, host: str, *command: str) -> subprocess.CompletedProcess[str]:
        return self.vpnfleet("lab", "exec", "--name", self.name, host, "--", *command)

    @property
    def key(self) -> str:
        """What its namespaces and link carry: the name, unless another lab had it."""
        try:
            return str(json.loads((self.lab_dir / "lab.json").read_text())["key"])
        except (OSError, KeyError, ValueError):
            return self.name

    def assert_gone(self, key: str | None = None) -> None:
        key = key or self.name
        assert netns_with_prefix(f"vf-{key}-") == []
        assert not link_exists(f"vf-{key}")
        assert processes_mentioning(str(self.lab_dir)) == []
        assert not self.lab_dir.exists()


def new_lab(root: Path, inventory: str) -> LabRun:
    copy = root / "inventory"
    shutil.copytree(INVENTORIES / inventory, copy)
    return LabRun(root / "state", "t" + secrets.token_hex(4), copy)


@contextlib.contextmanager
def removed_after(lab: LabRun) -> Iterator[LabRun]:
    """The lab is taken down when the block ends, also on failure; nothing may remain."""
    try:
        yield lab
    finally:
        key = lab.key
        res = lab.down()
        assert res.returncode == 0, res.stderr
        lab.assert_gone(key)


SHORT_LIFETIMES = {
    "ike_lifetime": "40s",
    "child_lifetime": "20s",
    "rekey_jitter": "2s",
    "dpd_delay": "2s",
    "dpd_timeout": "6s",
}


def set_group_vars(lab: LabRun, values: dict[str, str]) -> None:
    """Override variables for every host (appended to group_vars/all.yaml: the last key
    of a YAML mapping wins would be ambiguous, so existing keys are replaced)."""
    path = lab.inventory / "group_vars" / "all.yaml"
    lines = [
        ln for ln in path.read_text().splitlines() if ln.split(":", 1)[0].strip() not in values
    ]
    lines += [f"{key}: {value}" for key, value in values.items()]
    path.write_text("\n".join(lines) + "\n")


def lab_up(lab: LabRun, *extra: str) -> dict[str, Any]:
    res = lab.up("-o", "json", "--timeout", "30", *extra)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    result: dict[str, Any] = json.loads(res.stdout)
    assert result["converged"] and result["data_plane"], result["status"]
    # Protected pairs pass through the tunnels, bypass probes in the clear.
    assert all(
        p["result"] == ("pass-clear" if p["expect"] == "bypass" else "pass")
        for p in result["reachability"]
    ), result["reachability"]
    return result


def fleet_status(lab: LabRun, *, unreachable_ok: bool = False) -> dict[str, Any]:
    """``vpnfleet status -o json``; with ``unreachable_ok`` an agent may be out of reach
    (the exit code's bit 4), and is given up on after a second."""
    res = lab.vpnfleet(
        "--state", str(lab.lab_dir / "controller"), "status", "-i", str(lab.inventory),
        "-o", "json", *(("--timeout", "1") if unreachable_ok else ()),
    )  # fmt: skip
    return status_document(res, unreachable_ok=unreachable_ok)


def ike_sas(status: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [
        (h["host"], sa) for h in status["hosts"] for sa in (h["observed"] or {}).get("ike_sas", [])
    ]


def losses(streams: list[PingStream]) -> list[str]:
    return [s.describe() for s in streams if s.lost]


PING_INTERVAL = 0.02


# Dense enough that the few milliseconds of a data-plane switch are always sampled.
FAST_PING_INTERVAL = 0.005


def controller(lab: LabRun, *args: str) -> subprocess.CompletedProcess[str]:
    return lab.vpnfleet("--state", str(lab.lab_dir / "controller"), *args)


def run_json(lab: LabRun, *args: str) -> tuple[int, dict[str, Any]]:
    res = controller(lab, *args, "-i", str(lab.inventory), "-o", "json")
    assert res.stdout, res.stderr
    data: dict[str, Any] = json.loads(res.stdout)
    return res.returncode, data


def pinging(up: dict[str, Any], interval: float = PING_INTERVAL) -> list[PingStream]:
    streams = start_pings(tunnel_pairs(up["reachability"], up["layout"]["hosts"]), interval)
    if not wait_replying(streams, 10):
        stop_pings(streams)
        raise AssertionError([s.describe() for s in streams])
    return streams


def assert_all_up_without_auth_errors(lab: LabRun, since: float) -> None:
    status = fleet_status(lab)
    sas = ike_sas(status)
    assert len(sas) == 12
    for host, sa in sas:
        assert sa["state"] == "established", (host, sa)
        assert sa["established_at"] >= since, (host, sa["peer"], "not re-established")
        assert "AUTHENTICATION_FAILED" not in sa["last_error"], (host, sa)
        assert [c["state"] for c in sa["children"]] == ["installed"], (host, sa)
    assert status["all_in_sync"], status


def all_up_since(lab: LabRun, since: float) -> bool:
    """Whether :func:`assert_all_up_without_auth_errors` holds now."""
    try:
        assert_all_up_without_auth_errors(lab, since)
    except AssertionError:
        return False
    return True


def agent_pid(lab: LabRun, host: str) -> int:
    data = json.loads((lab.lab_dir / "supervisor.json").read_text())
    return int(data["agents"][host]["pid"])


def commit_inventory(lab: LabRun) -> None:
    git = ["git", "-C", str(lab.inventory), "-c", "user.name=t", "-c", "user.email=t@t"]
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "lab"]):
        subprocess.run([*git, *args], check=True, capture_output=True)


def wait_for(what: str, check: Callable[[], bool], timeout: float, every: float = 0.2) -> float:
    """Seconds until ``check()`` held; fails the test after ``timeout``."""
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > timeout:
            pytest.fail(f"{what}: not within {timeout:g}s")
        time.sleep(every)
    return time.monotonic() - started
