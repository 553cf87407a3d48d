"""`vpnfleet lab up|down|status|exec` for real: namespaces, a bridge, NAT routers,
supervised agents with mutual TLS, the inventory applied, a reachability matrix.

Every test uses a lab name of its own and removes its lab with `lab down` in a
finally/fixture, and checks that nothing of it is left. Labs are built from copies of
the example inventories. Until the agent engine exists the agents have no data plane,
so protected pairs must show "fail" (a pass would mean traffic crossed in the clear);
once they report a data plane, every protected pair must pass.
"""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.lab import CLI, LabRun, netns_with_prefix, new_lab, removed_after, require_root
from vpnfleet.controller.lab.netns import BRIDGE_NETFILTER_OFF

pytestmark = pytest.mark.netns


MESH_HOSTS = ("a1", "a2", "a3", "a4")


@dataclass
class MeshLab:
    lab: LabRun
    up: subprocess.CompletedProcess[str]


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MeshLab]:
    require_root()
    lab = new_lab(tmp_path_factory.mktemp("mesh"), "lab")
    with removed_after(lab):
        yield MeshLab(lab, lab.up("--timeout", "20"))


def test_up_applies_and_prints_status_and_every_protected_pair(mesh: MeshLab) -> None:
    res = mesh.up
    assert res.returncode == 0, res.stdout + res.stderr
    # Progress while it works, on stderr.
    assert "agents listening" in res.stderr and "apply a1: changed" in res.stderr
    # The fleet status table, every host in sync with its plan.
    for host in MESH_HOSTS:
        assert any(ln.split()[:2] == [host, "in"] for ln in res.stdout.splitlines()), host
    status = mesh.lab.status()
    fleet = {h["host"]: h for h in status["fleet"]["hosts"]}
    assert sorted(fleet) == list(MESH_HOSTS)
    assert all(h["state"] == "in sync" for h in fleet.values()), fleet
    data_plane = any(h["observed"]["data_plane"] for h in fleet.values())
    # The matrix: the mesh protects every ordered pair of the four sites, and its UDP echo
    # policy lets a probe of every pair through in the clear.
    assert "reachability (12 site pairs, 12 bypass probes)" in res.stdout
    rows = [ln.split() for ln in res.stdout.splitlines() if ln.startswith("a")]
    matrix = {(r[0], r[1]): r for r in rows if len(r) >= 7 and r[5] == "protect"}
    expected = {(a, b) for a in MESH_HOSTS for b in MESH_HOSTS if a != b}
    assert set(matrix) == expected
    for (a, b), row in matrix.items():
        assert row[2:4] == [f"10.1.{a[1]}.1", f"10.1.{b[1]}.1"]
        assert row[6] == ("pass" if data_plane else "fail"), row


def test_agents_run_inside_their_namespaces(mesh: MeshLab) -> None:
    status = mesh.lab.status()
    assert status["supervisor"]["alive"] is True
    assert all(ok for ok in status["namespaces"].values())
    for host in MESH_HOSTS:
        agent = status["agents"][host]
        assert agent["alive"] is True
        where = subprocess.run(
            ["ip", "netns", "identify", str(agent["pid"])], capture_output=True, text=True
        )
        assert where.stdout.strip() == f"vf-{mesh.lab.name}-{host}"


def test_host_namespace_has_underlay_management_and_site(mesh: MeshLab) -> None:
    layout = json.loads((mesh.lab.lab_dir / "lab.json").read_text())["layout"]
    mgmt = layout["hosts"]["a2"]["mgmt_address"]
    assert ipaddress.ip_address(mgmt) in ipaddress.ip_network(layout["mgmt_network"])
    res = mesh.lab.exec("a2", "ip", "-br", "addr")
    assert res.returncode == 0, res.stderr
    assert "10.99.0.12/24" in res.stdout and "10.1.2.1/24" in res.stdout
    assert f"{mgmt}/24" in res.stdout
    # The controller answers on the management subnet from inside the lab...
    ping = mesh.lab.exec("a2", "ping", "-n", "-c1", "-W2", layout["mgmt_address"])
    assert ping.returncode == 0, ping.stdout
    # ...where its agents are asked, and the underlay is routed nowhere outside the lab.
    recorded = json.loads((mesh.lab.lab_dir / "controller" / "agent-addresses.json").read_text())
    assert recorded == {h: x["mgmt_address"] for h, x in layout["hosts"].items()}
    assert layout["hosts"]["a2"]["endpoint"] == f"{mgmt}:50051"
    route = subprocess.run(["ip", "route", "get", "10.99.0.12"], capture_output=True, text=True)
    assert layout["root_link"] not in route.stdout
    # Nothing but the lab's own networks: no way out of the lab from a host.
    assert "default" not in mesh.lab.exec("a2", "ip", "route").stdout


def neighbours(argv: list[str]) -> dict[str, tuple[str, list[str]]]:
    """address -> (link-layer address, states) of ``ip -j neigh show ...``."""
    res = subprocess.run(argv, capture_output=True, text=True, check=True)
    return {n["dst"]: (n.get("lladdr", ""), n["state"]) for n in json.loads(res.stdout)}


def mac_of(netns: str | None, dev: str) -> str:
    where = ["-n", netns] if netns else []
    res = subprocess.run(
        ["ip", *where, "-j", "link", "show", "dev", dev], capture_output=True, text=True, check=True
    )
    return str(json.loads(res.stdout)[0]["address"])


def test_bridge_neighbours_are_permanent(mesh: MeshLab) -> None:
    # The kernel's neighbour table is shared by every namespace and its limits are the
    # machine's: the lab pins its neighbours, which those limits do not count.
    layout = json.loads((mesh.lab.lab_dir / "lab.json").read_text())["layout"]
    hosts = layout["hosts"]
    macs = {h: mac_of(x["netns"], "eth0") for h, x in hosts.items()}
    controller = mac_of(None, layout["root_link"])
    for host, x in hosts.items():
        # IPv4: the underlay and management addresses (the IPv6 link-local entries the
        # kernel makes from router solicitations are not the lab's and may be collected).
        found = neighbours(["ip", "-4", "-n", x["netns"], "-j", "neigh", "show", "dev", "eth0"])
        expected = {o["address"]: (macs[h], ["PERMANENT"]) for h, o in hosts.items() if h != host}
        expected[layout["mgmt_address"]] = (controller, ["PERMANENT"])
        assert found == expected, host
    on_root_link = neighbours(["ip", "-4", "-j", "neigh", "show", "dev", layout["root_link"]])
    assert on_root_link == {x["mgmt_address"]: (macs[h], ["PERMANENT"]) for h, x in hosts.items()}


def test_the_bridge_forwards_frames_without_netfilter(mesh: MeshLab) -> None:
    # Where the kernel has bridge netfilter (built in on this machine, on by default in
    # each namespace), the lab's wire turns it off: no per-frame hooks on the bridge.
    bridge = json.loads((mesh.lab.lab_dir / "lab.json").read_text())["layout"]["bridge_netns"]
    present = Path("/proc/sys/net/bridge/bridge-nf-call-iptables").exists()
    for setting in BRIDGE_NETFILTER_OFF:
        key, want = setting.split("=")
        got = subprocess.run(
            ["ip", "netns", "exec", bridge, "sysctl", "-n", key],
            capture_output=True, text=True, timeout=10, check=present,
        )  # fmt: skip
        if present:
            assert got.stdout.strip() == want, key
        else:
            assert got.returncode != 0, f"{key} exists in the lab but not in the root namespace"


def test_exec_passes_the_exit_code_through(mesh: MeshLab) -> None:
    assert mesh.lab.exec("a1", "sh", "-c", "exit 7").returncode == 7
    assert mesh.lab.exec("a1", "true").returncode == 0
    res = mesh.lab.exec("nohost", "true")
    assert res.returncode == 1
    assert "has no host 'nohost'" in res.stderr and "a1, a2, a3, a4" in res.stderr


def test_supervisor_restarts_a_killed_agent(mesh: MeshLab) -> None:
    before = mesh.lab.status()["agents"]["a3"]
    os.kill(before["pid"], signal.SIGKILL)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        status = mesh.lab.status()
        after = status["agents"]["a3"]
        a3 = next(h for h in status["fleet"]["hosts"] if h["host"] == "a3")
        if after["alive"] and after["pid"] != before["pid"] and a3["state"] == "in sync":
            break
        time.sleep(0.2)
    assert after["pid"] != before["pid"] and after["alive"], after
    assert after["restarts"] == before["restarts"] + 1
    assert after["last_exit"] == -signal.SIGKILL
    # It came back with its persisted plan: in sync without a new apply.
    assert a3["state"] == "in sync", a3


def test_second_lab_with_the_same_name_is_refused(mesh: MeshLab) -> None:
    spaces = netns_with_prefix(f"vf-{mesh.lab.name}-")
    res = mesh.lab.up()
    assert res.returncode == 1
    assert f"a lab named {mesh.lab.name!r} already exists" in res.stderr
    assert netns_with_prefix(f"vf-{mesh.lab.name}-") == spaces
    assert mesh.lab.status()["supervisor"]["alive"] is True


def test_nat_host_sits_behind_a_masquerading_router(tmp_path: Path) -> None:
    require_root()
    lab = new_lab(tmp_path, "nat")
    # An operator's discard rule: n1's site must never reach n2's.
    with open(lab.inventory / "topology.yaml", "a") as topology:
        topology.write(
            "policies:\n"
            "  - {name: keep-n1-from-n2, action: discard, local: 10.4.1.0/24, "
            "remote: 10.4.2.0/24}\n"
        )
    with removed_after(lab):
        res = lab.up("-o", "json", "--timeout", "20")
        assert res.returncode == 0, res.stderr
        result = json.loads(res.stdout)
        assert result["converged"] is True
        assert {h["host"]: h["state"] for h in result["status"]["hosts"]} == {
            "n1": "in sync",
            "n2": "in sync",
            "n3": "in sync",
        }
        n3 = result["layout"]["hosts"]["n3"]
        assert n3["router"] == f"vf-{lab.name}-nat1" and n3["address"] == "10.99.3.3"
        private = ipaddress.ip_address(n3["local_address"])
        assert private.is_private and private not in ipaddress.ip_network("10.99.3.0/24")
        addrs = lab.exec("n3", "ip", "-br", "-4", "addr", "show", "eth0")
        assert f"{private}/24" in addrs.stdout and "10.99.3.3" not in addrs.stdout
        table = subprocess.run(
            ["ip", "netns", "exec", n3["router"], "nft", "list", "table", "ip", "vpnfleet_lab"],
            capture_output=True,
            text=True,
        )
        assert table.returncode == 0, table.stderr
        assert "masquerade" in table.stdout and f"dnat to {private}" in table.stdout
        # The controller reaches n3's agent at its management address on the router.
        wan = subprocess.run(
            ["ip", "-n", n3["router"], "-br", "addr", "show", "wan"], capture_output=True, text=True
        )
        assert "10.99.3.3/24" in wan.stdout and f"{n3['mgmt_address']}/" in wan.stdout
        assert n3["endpoint"] == f"{n3['mgmt_address']}:50051"
        # What n1 sees of n3: the router's public address, not the private one.
        listener = subprocess.Popen(
            [*CLI, "--state", str(lab.state), "lab", "exec", "--name", lab.name, "n1", "--",
             sys.executable, "-c",
             "import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
             "s.bind(('10.99.3.1', 40000)); s.settimeout(10); print(s.recvfrom(64)[1][0])"],
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            for _ in range(50):
                lab.exec("n3", sys.executable, "-c",
                         "import socket; socket.socket(socket.AF_INET, socket.SOCK_DGRAM)"
                         ".sendto(b'hi', ('10.99.3.1', 40000))")  # fmt: skip
                if listener.poll() is not None:
                    break
                time.sleep(0.1)
            seen, _ = listener.communicate(timeout=15)
        finally:
            if listener.poll() is None:
                listener.kill()
                listener.wait()
        assert seen.strip() == "10.99.3.3"
        # The matrix in JSON: every ordered pair of the three sites; n1 -> n2 discarded,
        # and n2 -> n1 too, since n1's discard entry drops the echo reply.
        pairs = {(p["src_host"], p["dst_host"]): p for p in result["reachability"]}
        assert set(pairs) == {
            (a, b) for a in ("n1", "n2", "n3") for b in ("n1", "n2", "n3") if a != b
        }
        for way in (("n1", "n2"), ("n2", "n1")):
            blocked = pairs.pop(way)
            assert blocked["expect"] == "discard", blocked
            assert blocked["policy"] == "policy:keep-n1-from-n2"
            assert blocked["result"] == "blocked-by-policy"
        expected = "pass" if result["data_plane"] else "fail"
        assert all(p["expect"] == "protect" and p["result"] == expected for p in pairs.values())


def test_down_after_a_crash_mid_up_leaves_nothing(tmp_path: Path) -> None:
    require_root()
    lab = new_lab(tmp_path, "nat")
    lab.state.mkdir()
    cli = subprocess.Popen(
        [*CLI, "--state", str(lab.state), "lab", "up", "-i", str(lab.inventory),
         "--name", lab.name],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        pid_file = lab.lab_dir / "supervisor.pid"
        deadline = time.monotonic() + 30
        while not pid_file.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert pid_file.exists(), "the supervisor never started"
        # The CLI and the supervisor die at once, agents (maybe) still starting.
        cli.kill()
        os.kill(int(pid_file.read_text()), signal.SIGKILL)
        cli.wait(10)
        assert netns_with_prefix(f"vf-{lab.name}-")
    finally:
        if cli.poll() is None:
            cli.kill()
            cli.wait()
        res = lab.down()
    assert res.returncode == 0, res.stderr
    assert "removed" in res.stdout
    lab.assert_gone()
    again = lab.down()
    assert again.returncode == 0 and "nothing to remove" in again.stdout


def test_not_root_is_refused_and_creates_nothing(tmp_path: Path) -> None:
    require_root()  # to drop privileges we need them first
    lab = new_lab(tmp_path, "lab")
    res = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
         *CLI, "--state", str(lab.state), "lab", "up", "-i", str(lab.inventory),
         "--name", lab.name],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert res.returncode == 1
    assert "the lab needs root" in res.stderr
    lab.assert_gone()
    assert not lab.state.exists()


def test_bad_inventory_is_refused_before_anything_is_made(tmp_path: Path) -> None:
    require_root()
    lab = new_lab(tmp_path, "lab")
    hosts = lab.inventory / "hosts.yaml"
    hosts.write_text(hosts.read_text().replace("10.99.0.13", "10.99.0.300"))
    res = lab.up()
    assert res.returncode == 1
    assert "hosts.yaml" in res.stderr and "10.99.0.300" in res.stderr
    lab.assert_gone()
    assert not (lab.state / "labs").exists()


def test_lab_level_inventory_errors_are_refused(tmp_path: Path) -> None:
    require_root()
    lab = new_lab(tmp_path, "lab")
    hosts = lab.inventory / "hosts.yaml"
    # Valid for the planner, impossible for one lab bridge.
    hosts.write_text(hosts.read_text().replace("10.99.0.14", "192.0.2.14"))
    res = lab.up()
    assert res.returncode == 1
    assert "too far apart for one lab bridge" in res.stderr
    lab.assert_gone()
    bad_name = lab.vpnfleet("lab", "up", "-i", str(lab.inventory), "--name", "Bad-Name")
    assert bad_name.returncode == 1 and "lab name 'Bad-Name' is not usable" in bad_name.stderr
    missing = lab.vpnfleet("lab", "status", "--name", lab.name)
    assert missing.returncode == 1 and f"no lab named {lab.name!r}" in missing.stderr
