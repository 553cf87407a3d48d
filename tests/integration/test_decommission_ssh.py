"""`vpnfleet decommission` on hosts that `vpnfleet bootstrap` set up over SSH (the test
bed of tests.support.ssh_hosts, with its systemctl stand-in): the retired host's agent
is stopped, its unit, config, state and PREFIX removed and its rules lifted (its
ruleset, policy rules and routes are as before bootstrap), its former peers run plans
without it, and their gRPC servers refuse its certificate, which they accepted before."""

from __future__ import annotations

import difflib
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from tests.support.ssh_hosts import HostSpec, SshTestbed, write_mesh_inventory
from vpnfleet.controller.statedir.pki import TlsCredentials

pytestmark = pytest.mark.netns

Make = Callable[[Sequence[HostSpec]], SshTestbed]
VPNFLEET = [sys.executable, "-m", "vpnfleet.controller.cli"]
UNIT = "/etc/systemd/system/vpnfleet-agent.service"
CONVERGE = 60.0


def vpnfleet(bed: SshTestbed, *args: str) -> dict[str, object] | str:
    res = bed.run_controller([*VPNFLEET, "--state", str(bed.root / "state"), *args], 300)
    assert res.returncode == 0, res.stdout + res.stderr
    return json.loads(res.stdout) if "-o" in args else res.stdout


def converged_status(bed: SshTestbed, inventory: Path) -> dict[str, set[str]]:
    """Each host's established IKE peers, once ``status`` says every tunnel is up."""
    argv = [*VPNFLEET, "--state", str(bed.root / "state"), "status", "-i", str(inventory)]
    deadline = time.monotonic() + CONVERGE
    while True:
        res = bed.run_controller([*argv, "-o", "json"], 60)
        if res.returncode == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr
    doc = json.loads(res.stdout)
    return {
        h["host"]: {sa["peer"] for sa in h["observed"]["ike_sas"] if sa["state"] == "established"}
        for h in doc["hosts"]
    }


def host_networking(bed: SshTestbed, host: str) -> list[str]:
    """Rules, routes and links of ``host`` as the kernel lists them, once its IPv6
    link-local addresses are past duplicate address detection (the kernel adds their
    local route then, whatever runs there)."""
    deadline = time.monotonic() + CONVERGE
    while bed.run_on_host(host, ["ip", "-6", "addr", "show", "tentative"]).strip():
        assert time.monotonic() < deadline, "IPv6 duplicate address detection never ended"
        time.sleep(0.2)
    return [
        bed.run_on_host(host, argv)
        for argv in (
            ["nft", "list", "ruleset"],
            ["ip", "rule", "show"],
            ["ip", "-6", "rule", "show"],
            ["ip", "route", "show", "table", "all"],
            ["ip", "link", "show"],
        )
    ]


def running(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie left to its parent does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return not stat.rsplit(") ", 1)[-1].startswith("Z")


def test_decommission_removes_the_agent_and_its_peers_refuse_it(
    ssh_hosts: Make, tmp_path: Path
) -> None:
    bed = ssh_hosts([HostSpec("a1"), HostSpec("a2"), HostSpec("a3")])
    bed.write_known_hosts()
    inventory = write_mesh_inventory(bed, tmp_path / "inv", {"auth": "pubkey"})
    before = host_networking(bed, "a3")
    vpnfleet(bed, "ca", "init")
    vpnfleet(bed, "bootstrap", "-i", str(inventory), "--known-hosts", str(bed.known_hosts))

    a3 = bed.hosts["a3"]
    a3_tls = TlsCredentials(
        (a3.state_dir / "tls.pem").read_bytes(),
        (a3.state_dir / "tls.key").read_bytes(),
        (a3.state_dir / "ca.pem").read_bytes(),
    )
    assert bed.agent_health("a1", a3_tls) == "SERVING"
    assert converged_status(bed, inventory)["a1"] == {"a2", "a3"}

    pid = int((a3.root / "run" / "systemctl-standin" / "vpnfleet-agent.service.pid").read_text())
    assert running(pid)
    run = vpnfleet(
        bed, "decommission", "a3", "-i", str(inventory), "--known-hosts", str(bed.known_hosts),
        "-o", "json",
    )  # fmt: skip
    assert isinstance(run, dict)
    removal = run["host_removal"]
    assert removal["outcome"] == "changed", removal  # type: ignore[index]
    removed = [d for c in removal["changes"] for d in c["details"]]  # type: ignore[index]
    assert removed == [
        f"stopped, disabled, removed {UNIT}",
        "removed /etc/vpnfleet/agent.yaml",
        "removed /var/lib/vpnfleet-agent",
        "removed /opt/vpnfleet",
    ]
    assert sorted(h["host"] for h in run["plans"]["hosts"]) == ["a1", "a2"]  # type: ignore[index]

    # Nothing of the agent is left on a3: no process, unit, files, rules or routes.
    gone = bed.run_on_host("a3", ["sh", "-c", f"ls {UNIT} /opt/vpnfleet 2>&1 || true"])
    assert gone.count("No such file") == 2, gone
    assert list(a3.state_dir.iterdir()) == [] and list(a3.etc_vpnfleet.iterdir()) == []
    assert not running(pid)
    after = host_networking(bed, "a3")
    assert after == before, "\n".join(
        difflib.unified_diff("\n".join(before).splitlines(), "\n".join(after).splitlines())
    )

    # Its former peers run without it and refuse its certificate.
    assert converged_status(bed, inventory) == {"a1": {"a2"}, "a2": {"a1"}}
    refused = bed.agent_health("a1", a3_tls)
    assert refused.startswith("PERMISSION_DENIED caller a3 presents a revoked certificate"), refused

    # Again: nothing left to revoke or remove, and nothing fails.
    again = vpnfleet(
        bed, "decommission", "a3", "-i", str(inventory), "--known-hosts", str(bed.known_hosts),
        "-o", "json",
    )  # fmt: skip
    assert isinstance(again, dict)
    assert again["revoked"] == [] and again["retired_before"] is True
    assert again["host_removal"]["outcome"] == "ok"  # type: ignore[index]
