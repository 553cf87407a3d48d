"""`vpnfleet bootstrap` takes empty SSH hosts (tests.support.ssh_hosts) to a converged
full mesh: each host gets its agent's configuration and hardened unit (which
`systemd-analyze verify` accepts), the agent runs through systemctl (the test bed's
stand-in, since systemd is not PID 1 here) and answers gRPC health, and the plans go
out as `vpnfleet apply` sends them. Pings between the hosts' site subnets cross in ESP
(tcpdump on the underlay bridge sees ESP and no cleartext ICMP; the SAs count the
packets). A second run changes nothing and restarts no agent; a changed configuration
shows as a diff with --check --diff, changes nothing then, and is put back (restarting
that agent only) by the next run."""

from __future__ import annotations

import itertools
import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.support.ssh_hosts import (
    HostSpec,
    SshTestbed,
    add_site,
    ping_once,
    site_address,
    write_mesh_inventory,
)

pytestmark = pytest.mark.netns

Make = Callable[[Sequence[HostSpec]], SshTestbed]
VPNFLEET = [sys.executable, "-m", "vpnfleet.controller.cli"]
UNIT = "/etc/systemd/system/vpnfleet-agent.service"
CONFIG = "/etc/vpnfleet/agent.yaml"
CONVERGE = 60.0
UNDERLAY_FILTER = "esp or udp port 4500 or (icmp and net 10.1.0.0/16)"


def vpnfleet(bed: SshTestbed, *args: str) -> subprocess.CompletedProcess[str]:
    return bed.run_controller([*VPNFLEET, "--state", str(bed.root / "state"), *args], 300)


def agent_pids(bed: SshTestbed) -> dict[str, str]:
    """The pid the systemctl stand-in recorded for each host's agent."""
    return {
        name: (h.root / "run" / "systemctl-standin" / "vpnfleet-agent.service.pid").read_text()
        for name, h in bed.hosts.items()
    }


@contextmanager
def capture(bed: SshTestbed, out: Path) -> Iterator[Path]:
    """tcpdump on the underlay bridge: ESP, NAT-T and ICMP between the sites."""
    argv = ["tcpdump", "-i", "br0", "-n", "-l", "--immediate-mode", UNDERLAY_FILTER]
    with out.open("w") as printed:
        proc = subprocess.Popen(
            bed.controller_command(argv), stdout=printed, stderr=subprocess.PIPE, text=True
        )
    try:
        assert proc.stderr is not None
        said = ""
        while "listening on br0" not in said:
            line = proc.stderr.readline()
            assert line, f"tcpdump ended: {said}"
            said += line
        yield out
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(10)


def verify_unit(bed: SshTestbed, host: str) -> str:
    """systemd-analyze verify on the unit bootstrap wrote, as the host sees it."""
    res = subprocess.run(
        ["nsenter", "-t", str(bed.hosts[host].pid), "-m", "-n", "--",
         "systemd-analyze", "verify", "--man=no", UNIT],
        capture_output=True,
        text=True,
    )  # fmt: skip
    return f"rc={res.returncode} {res.stdout}{res.stderr}".strip()


def test_bootstrap_brings_empty_hosts_to_a_mesh_then_changes_nothing(
    ssh_hosts: Make, tmp_path: Path
) -> None:
    bed = ssh_hosts([HostSpec("a1"), HostSpec("a2", port=2222), HostSpec("a3")])
    bed.write_known_hosts()
    hosts = list(bed.hosts.values())
    for index, host in enumerate(hosts):
        add_site(host, index)
    inventory = write_mesh_inventory(bed, tmp_path / "inv")
    assert vpnfleet(bed, "ca", "init").returncode == 0

    first = vpnfleet(bed, "bootstrap", "-i", str(inventory), "--known-hosts",
                     str(bed.known_hosts), "--diff")  # fmt: skip
    assert first.returncode == 0, first.stdout + first.stderr
    for host in hosts:
        line = next(ln for ln in first.stdout.splitlines() if f"[{host.name}]" in ln)
        assert line.startswith(f"changed: [{host.name}] "), first.stdout
        assert line.endswith(
            f"; config {CONFIG}; vpnfleet-agent.service enabled and started; plan applied"
        ), line
    text = first.stdout
    assert f"    + agent config {CONFIG}\n" in text
    assert f"        +listen: {hosts[1].address}:50051\n" in text
    assert f"    + agent unit {UNIT}\n" in text
    assert (
        "        +ExecStart=/opt/vpnfleet/venv/bin/vpnfleet-agent serve --config "
        f"{CONFIG}\n" in text
    )
    assert "    + service vpnfleet-agent.service: enabled; started\n" in text
    assert "    + peer a2" in text  # apply's lines for the plan

    for host in hosts:
        config = (host.etc_vpnfleet / "agent.yaml").read_text()
        assert config == (
            f"name: {host.name}\nlisten: {host.address}:50051\n"
            "state_dir: /var/lib/vpnfleet-agent\ncontroller_identity: vpnfleet-controller\n"
            "data_plane: true\n"
        )
        assert verify_unit(bed, host.name) == "rc=0"
        enabled = host.root / "etc.upper" / "systemd" / "system" / "multi-user.target.wants"
        assert (enabled / "vpnfleet-agent.service").is_symlink()

    # Every pair of sites reaches the other through the tunnels, in ESP only.
    pairs = list(itertools.combinations(range(3), 2))
    with capture(bed, tmp_path / "underlay.txt") as seen:
        deadline = time.monotonic() + CONVERGE
        pending = list(pairs)
        while pending and time.monotonic() < deadline:
            pending = [
                (a, b)
                for a, b in pending
                if not ping_once(hosts[a], site_address(a), site_address(b))
            ]
        assert not pending, f"no answer across {pending}"
        for a, b in pairs:  # and once more, both ways, now that they are up
            assert ping_once(hosts[a], site_address(a), site_address(b))
            assert ping_once(hosts[b], site_address(b), site_address(a))

        def esp_between(a: int, b: int) -> int:
            between = {hosts[a].address, hosts[b].address}
            lines = seen.read_text().splitlines()
            return sum(1 for p in lines if ": ESP(spi=" in p and all(x in p for x in between))

        # Every answered ping crossed the bridge as ESP; until tcpdump has printed it all.
        printed = time.monotonic() + 10
        while any(esp_between(a, b) < 4 for a, b in pairs) and time.monotonic() < printed:
            time.sleep(0.05)
    packets = seen.read_text().splitlines()
    assert [p for p in packets if "ICMP" in p] == []
    assert all(esp_between(a, b) >= 4 for a, b in pairs), packets

    status = vpnfleet(bed, "status", "-i", str(inventory), "-o", "json")
    doc = json.loads(status.stdout)
    for h in doc["hosts"]:
        sas = h["observed"]["ike_sas"]
        assert {sa["peer"] for sa in sas} == {x.name for x in hosts} - {h["host"]}
        for sa in sas:
            assert sa["state"] == "established"
            assert all(c["packets_out"] >= 1 and c["packets_in"] >= 1 for c in sa["children"])

    pids = agent_pids(bed)
    again = vpnfleet(bed, "bootstrap", "-i", str(inventory), "--known-hosts",
                     str(bed.known_hosts), "-o", "json")  # fmt: skip
    assert again.returncode == 0, again.stdout + again.stderr
    assert [(h["host"], h["outcome"], h["changes"]) for h in json.loads(again.stdout)["hosts"]] == [
        (h.name, "ok", []) for h in hosts
    ]
    assert agent_pids(bed) == pids  # no agent restarted

    # A configuration changed by hand: --check --diff shows it and changes nothing.
    edited = hosts[0].etc_vpnfleet / "agent.yaml"
    by_hand = edited.read_text().replace("data_plane: true", "data_plane: false")
    edited.write_text(by_hand)
    check = vpnfleet(bed, "bootstrap", "-i", str(inventory), "--known-hosts",
                     str(bed.known_hosts), "--check", "--diff")  # fmt: skip
    assert check.returncode == 0, check.stdout + check.stderr
    assert f"    ~ agent config {CONFIG}\n" in check.stdout
    assert "        -data_plane: false\n        +data_plane: true\n" in check.stdout
    assert "    ~ service vpnfleet-agent.service: restarted for its new config\n" in check.stdout
    assert "a2 : ok=1   changed=0" in check.stdout and "a1 : ok=1   changed=1" in check.stdout
    as_json = vpnfleet(bed, "bootstrap", "-i", str(inventory), "--known-hosts",
                       str(bed.known_hosts), "--check", "-o", "json")  # fmt: skip
    assert as_json.returncode == 0, as_json.stdout + as_json.stderr
    diffs = json.loads(as_json.stdout)["diffs"]
    assert list(diffs) == ["a1"] and list(diffs["a1"]) == [f"agent config {CONFIG}"]
    assert "-data_plane: false\n+data_plane: true\n" in diffs["a1"][f"agent config {CONFIG}"]
    assert edited.read_text() == by_hand
    assert agent_pids(bed) == pids

    fixed = vpnfleet(bed, "bootstrap", "-i", str(inventory), "--known-hosts",
                     str(bed.known_hosts))  # fmt: skip
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    assert "a1 : ok=1   changed=1" in fixed.stdout and "a3 : ok=1   changed=0" in fixed.stdout
    assert "data_plane: true" in edited.read_text()
    now = agent_pids(bed)
    assert now["a1"] != pids["a1"] and now["a2"] == pids["a2"] and now["a3"] == pids["a3"]


SERVICE_STEPS = """
import asyncio, sys
from pathlib import Path
from vpnfleet.controller.deploy import service
from vpnfleet.controller.deploy.hostkeys import HostKeyPolicy
from vpnfleet.controller.deploy.install import AgentLayout
from vpnfleet.controller.deploy.run import host_plans
from vpnfleet.controller.deploy.session import open_session
from vpnfleet.controller.inventory import load_inventory

inventory, known_hosts, step = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]

async def main():
    plan = host_plans(load_inventory(inventory), ["a1"])[0]
    policy = HostKeyPolicy.make(known_hosts, False)
    async with open_session(plan.settings, policy, 10.0) as session:
        print(await getattr(service, step)(session, AgentLayout()))

asyncio.run(main())
"""


def service_step(bed: SshTestbed, inventory: Path, step: str) -> str:
    argv = [sys.executable, "-c", SERVICE_STEPS, str(inventory), str(bed.known_hosts), step]
    res = bed.run_controller(argv)
    assert res.returncode == 0, res.stdout + res.stderr
    return res.stdout.strip()


def is_active(bed: SshTestbed, host: str) -> str:
    res = subprocess.run(
        ["nsenter", "-t", str(bed.hosts[host].pid), "-m", "-n", "--",
         "systemctl", "is-active", "vpnfleet-agent.service"],
        capture_output=True,
        text=True,
    )  # fmt: skip
    return f"{res.returncode} {res.stdout.strip()}"


def alive(pid: str) -> bool:
    return Path(f"/proc/{pid}").exists() and not (
        Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[-1].startswith("Z")
    )


def test_the_service_coroutines_stop_start_and_remove_the_agent(
    ssh_hosts: Make, tmp_path: Path
) -> None:
    bed = ssh_hosts([HostSpec("a1")])
    bed.write_known_hosts()
    add_site(bed.hosts["a1"], 0)
    inventory = write_mesh_inventory(bed, tmp_path / "inv")
    assert vpnfleet(bed, "ca", "init").returncode == 0
    res = vpnfleet(bed, "bootstrap", "-i", str(inventory), "--known-hosts", str(bed.known_hosts))
    assert res.returncode == 0, res.stdout + res.stderr
    first = agent_pids(bed)["a1"]
    assert alive(first) and is_active(bed, "a1") == "0 active"

    service_step(bed, inventory, "stop_agent")  # SIGTERM, waited for
    assert not alive(first) and is_active(bed, "a1") == "3 inactive"
    service_step(bed, inventory, "start_agent")  # back once it said READY=1
    second = agent_pids(bed)["a1"]
    assert second != first and alive(second) and is_active(bed, "a1") == "0 active"
    service_step(bed, inventory, "restart_agent")
    third = agent_pids(bed)["a1"]
    assert not alive(second) and alive(third)

    assert service_step(bed, inventory, "remove_agent_service") == "True"
    assert not alive(third) and is_active(bed, "a1") == "3 inactive"
    host = bed.hosts["a1"]
    units = host.root / "etc.upper" / "systemd" / "system"
    assert not (units / "vpnfleet-agent.service").exists()
    assert not (units / "multi-user.target.wants" / "vpnfleet-agent.service").exists()
    assert service_step(bed, inventory, "remove_agent_service") == "False"
    # A bootstrap puts it all back.
    again = vpnfleet(bed, "bootstrap", "-i", str(inventory), "--known-hosts",
                     str(bed.known_hosts))  # fmt: skip
    assert again.returncode == 0, again.stdout + again.stderr
    assert "vpnfleet-agent.service enabled and started" in again.stdout
    assert is_active(bed, "a1") == "0 active"
