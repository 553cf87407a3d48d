"""`vpnfleet upgrade` on SSH hosts in namespaces (tests.support.ssh_hosts): three hosts
bootstrapped at this tree's version (0.1.0) into a mesh, then upgraded by controllers of
other versions built from copies of the tree (tests.support.bumped).

A 0.2.1 whose agent refuses every IKE peer fails its canary's health gate: the canary
gets 0.1.0 back from the wheels kept on it, the other hosts are not touched, and the
tunnels come back. 0.2.0 then goes through, batch by batch, the pings still cross, and a
second run finds every host at 0.2.0 and changes nothing.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from tests.support.bumped import Venv
from tests.support.ssh_hosts import (
    HostSpec,
    SshHost,
    SshTestbed,
    add_site,
    ping_once,
    site_address,
    write_mesh_inventory,
)

pytestmark = pytest.mark.netns

Make = Callable[[Sequence[HostSpec]], SshTestbed]
THIS_CONTROLLER = [sys.executable, "-m", "vpnfleet.controller.cli"]
CONVERGE = 60.0


def assert_mesh_pings(hosts: list[SshHost]) -> None:
    pairs = [(a, b) for a in range(len(hosts)) for b in range(len(hosts)) if a != b]
    deadline = time.monotonic() + CONVERGE
    pending = list(pairs)
    while pending and time.monotonic() < deadline:
        pending = [
            (a, b) for a, b in pending if not ping_once(hosts[a], site_address(a), site_address(b))
        ]
    assert not pending, f"no answer across {pending}"


def installed(host: SshHost) -> str:
    """The vpnfleet version in the host's /opt/vpnfleet/venv, read from its files."""
    site_packages = host.opt / "vpnfleet" / "venv" / "lib"
    found = sorted(p.name for p in site_packages.glob("python3*/site-packages/vpnfleet-*"))
    assert len(found) == 1, found
    return found[0].removeprefix("vpnfleet-").removesuffix(".dist-info")


def refuse_every_peer(root: Path) -> None:
    """A regression for the copy at ``root``: its agents refuse every IKE peer's AUTH."""
    path = root / "agent" / "ike" / "tasks" / "ike_auth.py"
    text = path.read_text()
    anchor = "    peer = Identity.from_payload(id_payload)\n"
    assert text.count(anchor) == 1
    path.write_text(
        text.replace(anchor, anchor + '    raise _auth_failed("this build refuses every peer")\n')
    )


# Three hosts bootstrapped, then two upgrades over SSH (pip into each host's venv):
# 117 s alone on 2 cores, 228 s beside another test worker and a loaded machine.
@pytest.mark.timeout(600)
def test_upgrade_rolls_back_a_failing_canary_then_upgrades_the_mesh(
    ssh_hosts: Make, tmp_path: Path, other_version: Callable[..., Venv]
) -> None:
    broken = other_version("0.2.1", refuse_every_peer, "refuses-peers")
    good = other_version("0.2.0")
    bed = ssh_hosts([HostSpec("a1"), HostSpec("a2"), HostSpec("a3")])
    bed.write_known_hosts()
    hosts = list(bed.hosts.values())
    for index, host in enumerate(hosts):
        add_site(host, index)
    inventory = write_mesh_inventory(bed, tmp_path / "inv")
    state = str(bed.root / "state")

    def vpnfleet(controller: Sequence[str], *args: str) -> subprocess.CompletedProcess[str]:
        return bed.run_controller([*controller, "--state", state, *args], 600)

    def upgrade(controller: Venv, *args: str) -> tuple[int, dict[str, Any]]:
        res = vpnfleet(
            controller.controller(), "upgrade", "-i", str(inventory), "--known-hosts",
            str(bed.known_hosts), "-o", "json", *args,
        )  # fmt: skip
        assert res.stdout.strip(), res.stderr
        return res.returncode, json.loads(res.stdout)

    assert vpnfleet(THIS_CONTROLLER, "ca", "init").returncode == 0
    first = vpnfleet(
        THIS_CONTROLLER, "bootstrap", "-i", str(inventory), "--known-hosts", str(bed.known_hosts)
    )
    assert first.returncode == 0, first.stdout + first.stderr
    assert_mesh_pings(hosts)
    assert {h.name: installed(h) for h in hosts} == {"a1": "0.1.0", "a2": "0.1.0", "a3": "0.1.0"}

    # A version whose agents fail the gate: the canary goes back, the rest is not touched.
    code, doc = upgrade(broken, "--canary", "1", "--health-timeout", "30")
    assert code == 2, doc
    outcomes = {h["host"]: h["outcome"] for h in doc["hosts"]}
    assert outcomes == {"a1": "failed", "a2": "skipped", "a3": "skipped"}, doc
    assert doc["rolled_back"] == ["a1"] and doc["rollback_failed"] == []
    assert doc["regression"].startswith("canary (a1): authentication failed: a1: peer ")
    assert "this build refuses every peer" in doc["regression"]
    a1 = next(h for h in doc["hosts"] if h["host"] == "a1")
    assert a1["error"].startswith("rolled back to vpnfleet 0.1.0: authentication failed")
    assert {h.name: installed(h) for h in hosts} == {"a1": "0.1.0", "a2": "0.1.0", "a3": "0.1.0"}
    assert (hosts[0].opt / "vpnfleet" / "wheels" / "0.2.1").is_dir()  # kept beside 0.1.0
    assert_mesh_pings(hosts)

    # --check says who would be upgraded, from which version, and changes nothing.
    check = vpnfleet(
        good.controller(), "upgrade", "-i", str(inventory), "--known-hosts",
        str(bed.known_hosts), "--check",
    )  # fmt: skip
    assert check.returncode == 0, check.stdout + check.stderr
    assert "changed: [a2]\n    ~ agent vpnfleet 0.2.0: was 0.1.0\n" in check.stdout
    assert "a3 : ok=1   changed=1" in check.stdout
    assert {h.name: installed(h) for h in hosts} == {"a1": "0.1.0", "a2": "0.1.0", "a3": "0.1.0"}

    # A good version: canary, then the other two, each batch behind its gate.
    code, doc = upgrade(good, "--canary", "1")
    assert code == 0, doc
    assert doc["batches"] == [["a1"], ["a2", "a3"]]
    assert {h["host"]: h["outcome"] for h in doc["hosts"]} == {
        "a1": "changed",
        "a2": "changed",
        "a3": "changed",
    }
    assert doc["hosts"][0]["changes"] == [
        {"section": "agent", "name": "vpnfleet 0.2.0", "kind": "changed", "details": ["was 0.1.0"]}
    ]
    assert {h.name: installed(h) for h in hosts} == {"a1": "0.2.0", "a2": "0.2.0", "a3": "0.2.0"}
    assert_mesh_pings(hosts)
    status = vpnfleet(good.controller(), "status", "-i", str(inventory), "-o", "json")
    versions = {
        h["host"]: h["observed"]["agent_version"] for h in json.loads(status.stdout)["hosts"]
    }
    assert versions == {"a1": "0.2.0", "a2": "0.2.0", "a3": "0.2.0"}

    code, doc = upgrade(good)
    assert code == 0, doc
    assert [(h["host"], h["outcome"]) for h in doc["hosts"]] == [
        ("a1", "ok"),
        ("a2", "ok"),
        ("a3", "ok"),
    ]
