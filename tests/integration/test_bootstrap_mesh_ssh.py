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

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.support.ssh_hosts import HostSpec, SshHost, SshTestbed

pytestmark = pytest.mark.netns

Make = Callable[[Sequence[HostSpec]], SshTestbed]
VPNFLEET = [sys.executable, "-m", "vpnfleet.controller.cli"]
UNIT = "/etc/systemd/system/vpnfleet-agent.service"
CONFIG = "/etc/vpnfleet/agent.yaml"
CONVERGE = 60.0
UNDERLAY_FILTER = "esp or udp port 4500 or (icmp and net 10.1.0.0/16)"


def site(index: int) -> str:
    """The first address of host ``index``'s site subnet 10.1.N.0/24."""
    return f"10.1.{index + 1}.1"


def write_inventory(bed: SshTestbed, path: Path) -> Path:
    lines = [
        "all:",
        "  vars:",
        "    ansible_user: root",
        f"    ansible_ssh_private_key_file: {bed.client_key}",
        "  children:",
        "    mesh:",
        "      hosts:",
    ]
    for index, host in enumerate(bed.hosts.values()):
        lines += [
            f"        {host.name}:",
            f"          address: {host.address}",
            f"          subnets: [10.1.{index + 1}.0/24]",
            f"          ansible_host: {host.address}",
            f"          ansible_port: {host.port}",
        ]
    path.mkdir(parents=True, exist_ok=True)
    (path / "hosts.yaml").write_text("\n".join(lines) + "\n")
    (path / "topology.yaml").write_text("meshes:\n  - name: mesh\n    group: mesh\n")
    return path


def add_site(host: SshHost, index: int) -> None:
    """A site subnet behind the host, on a veth pair kept inside its namespace."""
    for argv in (
        ["link", "add", "site0", "type", "veth", "peer", "name", "site0p"],
        ["link", "set", "site0p", "up"],
        ["link", "set", "site0", "up"],
        ["addr", "add", f"{site(index)}/24", "dev", "site0"],
    ):
        subprocess.run(["ip", "-n", host.netns, *argv], check=True)


def vpnfleet(bed: SshTestbed, *args: str) -> subprocess.CompletedProcess[str]:
    return bed.run_controller([*VPNFLEET, "--state", str(bed.root / "state"), *args], 300)


def agent_pids(bed: SshTestbed) -> dict[str, str]:
    """The pid the systemctl stand-in recorded for each host's agent."""
    return {
        name: (h.root / "run" / "systemctl-standin" / "vpnfleet-agent.service.pid").read_text()
        for name, h in bed.hosts.items()
    }


def ping_once(host: SshHost, src: str, dst: str) -> bool:
    res = subprocess.run(
        ["ip", "netns", "exec", host.netns, "ping", "-n", "-c", "1", "-W", "1", "-I", src, dst],
        capture_output=True,
    )
    return res.returncode == 0


@contextmanager
def capture(bed: SshTestbed, out: Path) -> Iterator[Path]:
    """tcpdump on the underlay bridge: ESP, NAT-T and ICMP between the sites."""
    argv = ["tcpdump", "-i", "br0", "-n", "-l", "-U", UNDERLAY_FILTER]
    proc = subprocess.Popen(
        bed.controller_command(argv),
        stdout=out.open("w"),
        stderr=subprocess.PIPE,
        text=True,
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
    inventory = write_inventory(bed, tmp_path / "inv")
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
    pairs = [(a, b) for i, a in enumerate(range(3)) for b in range(i + 1, 3)]
    with capture(bed, tmp_path / "underlay.txt") as seen:
        deadline = time.monotonic() + CONVERGE
        pending = list(pairs)
        while pending and time.monotonic() < deadline:
            pending = [(a, b) for a, b in pending if not ping_once(hosts[a], site(a), site(b))]
        assert not pending, f"no answer across {pending}"
        for a, b in pairs:  # and once more, both ways, now that they are up
            assert ping_once(hosts[a], site(a), site(b))
            assert ping_once(hosts[b], site(b), site(a))
    packets = seen.read_text().splitlines()
    assert [p for p in packets if "ICMP" in p] == []
    esp = [p for p in packets if ": ESP(spi=" in p]
    for a, b in pairs:
        between = {hosts[a].address, hosts[b].address}
        assert sum(1 for p in esp if all(addr in p for addr in between)) >= 4, packets

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
    assert edited.read_text() == by_hand
    assert agent_pids(bed) == pids

    fixed = vpnfleet(bed, "bootstrap", "-i", str(inventory), "--known-hosts",
                     str(bed.known_hosts))  # fmt: skip
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    assert "a1 : ok=1   changed=1" in fixed.stdout and "a3 : ok=1   changed=0" in fixed.stdout
    assert "data_plane: true" in edited.read_text()
    now = agent_pids(bed)
    assert now["a1"] != pids["a1"] and now["a2"] == pids["a2"] and now["a3"] == pids["a3"]
