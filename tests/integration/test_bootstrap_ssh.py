"""`vpnfleet bootstrap` against SSH hosts in namespaces (tests.support.ssh_hosts): each
host reached with its Ansible connection variables, its prerequisites reported by name,
host keys checked against known_hosts as ssh checks them, the agent installed from the
controller's wheels into a venv under /opt/vpnfleet, and a second run changing nothing."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from cryptography import x509

from tests.support.ssh_hosts import HostSpec, SshTestbed

pytestmark = pytest.mark.netns

Make = Callable[[Sequence[HostSpec]], SshTestbed]
VPNFLEET = [sys.executable, "-m", "vpnfleet.controller.cli"]


def write_inventory(bed: SshTestbed, path: Path, extra: dict[str, list[str]] | None = None) -> Path:
    lines = [
        "all:",
        "  vars:",
        "    ansible_user: root",
        f"    ansible_ssh_private_key_file: {bed.client_key}",
        "  hosts:",
    ]
    for host in bed.hosts.values():
        lines += [
            f"    {host.name}:",
            f"      address: {host.address}",
            f"      ansible_host: {host.address}",
            f"      ansible_port: {host.port}",
            *(f"      {line}" for line in (extra or {}).get(host.name, [])),
        ]
    path.mkdir(parents=True, exist_ok=True)
    (path / "hosts.yaml").write_text("\n".join(lines) + "\n")
    return path


def bootstrap(bed: SshTestbed, inventory: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return bed.run_controller(
        [
            *VPNFLEET,
            "--state",
            str(bed.root / "state"),
            "bootstrap",
            "-i",
            str(inventory),
            "--known-hosts",
            str(bed.known_hosts),
            *args,
        ]
    )


def ca_init(bed: SshTestbed) -> None:
    res = subprocess.run(
        [*VPNFLEET, "--state", str(bed.root / "state"), "ca", "init"],
        capture_output=True,
        text=True,
    )
    assert res.returncode == 0, res.stdout + res.stderr


def fingerprint(bed: SshTestbed, host: str) -> str:
    pub = bed.root / f"{host}.pub"
    pub.write_text(bed.hosts[host].host_key + "\n")
    out = subprocess.run(["ssh-keygen", "-lf", str(pub)], capture_output=True, text=True)
    return out.stdout.split()[1]


def test_check_reports_each_hosts_prerequisites_by_name(ssh_hosts: Make, tmp_path: Path) -> None:
    bed = ssh_hosts([HostSpec("a1"), HostSpec("a2", port=2222, tun=False), HostSpec("a3")])
    bed.write_known_hosts()
    bed.hold_udp_port("a2", 500)
    bed.run_on_host(
        "a3", ["useradd", "--no-create-home", "--password", "*", "--shell", "/bin/sh", "deploy"]
    )
    inventory = write_inventory(
        bed,
        tmp_path / "inv",
        {
            "a1": ["ansible_python_interpreter: /usr/bin/python3"],
            "a3": ["ansible_user: deploy"],
        },
    )

    res = bootstrap(bed, inventory, "--check", "-o", "json")
    assert res.returncode == 2, res.stdout + res.stderr
    doc = json.loads(res.stdout)
    outcomes = {h["host"]: h["outcome"] for h in doc["hosts"]}
    assert outcomes == {"a1": "changed", "a2": "failed", "a3": "failed"}, res.stdout
    prereqs = doc["prerequisites"]
    assert prereqs["a1"]["missing"] == []
    assert prereqs["a1"]["python"] == "/usr/bin/python3"
    missing_a2 = {m["name"]: m["detail"] for m in prereqs["a2"]["missing"]}
    assert set(missing_a2) == {"/dev/net/tun", "udp/500"}
    assert missing_a2["udp/500"].startswith("in use by 0.0.0.0:500 (pid ")
    assert "python3 -c import socket" in missing_a2["udp/500"]
    missing_a3 = {m["name"]: m["detail"] for m in prereqs["a3"]["missing"]}
    assert set(missing_a3) == {"root"}
    assert "deploy" in missing_a3["root"] and "ansible_become" in missing_a3["root"]

    text = bootstrap(bed, inventory, "--check")
    assert text.returncode == 2
    lines = text.stdout.splitlines()
    assert lines[0].startswith("changed: [a1] /usr/bin/python3 ")
    assert lines[0].endswith(
        "; would install vpnfleet 0.1.0 in /opt/vpnfleet/venv; would enrol as a1 (no fleet CA "
        "yet); config and unit to write; vpnfleet-agent.service would be enabled and started; "
        "plan pushed once the agent runs"
    )
    assert lines[1] == "    + agent vpnfleet 0.1.0: venv /opt/vpnfleet/venv"
    assert lines[2] == "    + agent certificates: no fleet CA yet"
    assert lines[3] == (
        "    + agent config /etc/vpnfleet/agent.yaml and unit "
        "/etc/systemd/system/vpnfleet-agent.service: written by vpnfleet-agent 0.1.0 once "
        "installed"
    )
    assert lines[4] == "    + service vpnfleet-agent.service: enabled; started"
    assert lines[5] == "    + plan a1: pushed once the agent runs"
    assert lines[6].startswith("failed: [a2] missing /dev/net/tun (")
    assert "udp/500 (in use by 0.0.0.0:500" in lines[6]
    assert lines[7].startswith("failed: [a3] missing root (logged in as deploy")
    assert any(ln.startswith("a2 : ok=0   changed=0   unreachable=0   failed=1") for ln in lines)

    # A check changes nothing on the hosts.
    for host in bed.hosts.values():
        assert list(host.opt.iterdir()) == []
        assert list(host.etc_vpnfleet.iterdir()) == []
        assert list(host.state_dir.iterdir()) == []


def test_unknown_host_key_is_refused_unless_new_keys_are_accepted(
    ssh_hosts: Make, tmp_path: Path
) -> None:
    bed = ssh_hosts([HostSpec("a1"), HostSpec("a2", port=2222)])
    bed.write_known_hosts(["a1"])
    before = bed.known_hosts.read_text()
    inventory = write_inventory(bed, tmp_path / "inv")

    res = bootstrap(bed, inventory, "--check")
    assert res.returncode == 4, res.stdout + res.stderr
    assert "changed: [a1]" in res.stdout
    refusal = next(ln for ln in res.stdout.splitlines() if ln.startswith("unreachable: [a2]"))
    assert "host key verification failed: [198.18.22.11]:2222 is not in" in refusal
    assert fingerprint(bed, "a2") in refusal
    assert "--accept-new-host-keys" in refusal
    assert bed.known_hosts.read_text() == before
    assert "Accepted publickey" not in bed.hosts["a2"].log()

    res = bootstrap(bed, inventory, "--check", "--accept-new-host-keys")
    assert res.returncode == 0, res.stdout + res.stderr
    assert bed.known_hosts.read_text() == before + bed.hosts["a2"].known_hosts_line()
    # Recorded once: the next run finds it without being told to accept.
    assert bootstrap(bed, inventory, "--check").returncode == 0
    assert bed.known_hosts.read_text() == before + bed.hosts["a2"].known_hosts_line()


def test_a_changed_host_key_is_refused_even_when_accepting_new_ones(
    ssh_hosts: Make, tmp_path: Path
) -> None:
    bed = ssh_hosts([HostSpec("a1")])
    other = tmp_path / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    stale = " ".join(other.with_suffix(".pub").read_text().split()[:2])
    bed.known_hosts.write_text(f"{bed.hosts['a1'].address} {stale}\n")
    inventory = write_inventory(bed, tmp_path / "inv")

    res = bootstrap(bed, inventory, "--check", "--accept-new-host-keys")
    assert res.returncode == 4, res.stdout + res.stderr
    assert "offered ssh-ed25519 " + fingerprint(bed, "a1") in res.stdout
    assert "someone is in the middle" in res.stdout
    assert "ssh-keygen -R '198.18.22.10'" in res.stdout
    assert bed.known_hosts.read_text() == f"{bed.hosts['a1'].address} {stale}\n"


def test_bad_connection_variables_stop_before_any_host_is_contacted(
    ssh_hosts: Make, tmp_path: Path
) -> None:
    bed = ssh_hosts([HostSpec("a1"), HostSpec("a2")])
    bed.write_known_hosts()
    inventory = write_inventory(
        bed, tmp_path / "inv", {"a2": ["ansible_become: true", "ansible_become_method: su"]}
    )
    res = bootstrap(bed, inventory, "--check")
    assert res.returncode == 1
    assert "host a2: ansible_become_method is 'su'" in res.stderr
    assert "Accepted publickey" not in bed.hosts["a1"].log()


def test_bootstrap_installs_the_agent_from_shipped_wheels_then_changes_nothing(
    ssh_hosts: Make, tmp_path: Path
) -> None:
    bed = ssh_hosts([HostSpec("a1"), HostSpec("a2", port=2222)])
    bed.write_known_hosts()
    inventory = write_inventory(bed, tmp_path / "inv")
    machine_opt = sorted(p.name for p in Path("/opt").iterdir())
    no_ca = bootstrap(bed, inventory)
    assert no_ca.returncode == 1 and "vpnfleet ca init" in no_ca.stderr, no_ca.stderr
    assert all(list(h.opt.iterdir()) == [] for h in bed.hosts.values())
    ca_init(bed)

    first = bootstrap(bed, inventory, "--forks", "1", "--diff")
    assert first.returncode == 0, first.stdout + first.stderr
    assert "a1 : ok=1   changed=1   unreachable=0   failed=0" in first.stdout
    assert "a2 : ok=1   changed=1   unreachable=0   failed=0" in first.stdout
    assert "installed vpnfleet 0.1.0 in /opt/vpnfleet/venv; enrolled as a1" in first.stdout
    assert "    + agent certificates: TLS and IKE certificates for a2 from the fleet CA; " in (
        first.stdout
    )
    ca_pem = (bed.root / "state" / "pki" / "ca.pem").read_bytes()
    for name, host in bed.hosts.items():
        assert (host.opt / "vpnfleet" / "venv" / "bin" / "vpnfleet-agent").is_file()
        assert list((host.root / "tmp").iterdir()) == []  # the upload directory is gone
        shipped = host.opt / "vpnfleet" / "wheels" / "0.1.0"
        wheels = {p.name.split("-")[0].lower() for p in shipped.iterdir()}
        assert {"vpnfleet", "grpcio", "cryptography", "pip"} <= wheels
        # The agent runs there: installed with its dependencies, from no index.
        usage = bed.run_on_host(name, ["/opt/vpnfleet/venv/bin/vpnfleet-agent", "--help"])
        assert "vpnfleet agent" in usage
        version = bed.run_on_host(
            name,
            ["/opt/vpnfleet/venv/bin/python", "-c",
             "import importlib.metadata as m; print(m.version('vpnfleet'))"],
        )  # fmt: skip
        assert version.strip() == "0.1.0"
        # Enrolled: keys made on the host, certificates of the fleet CA for its name (the
        # IKE one with its address), the private keys nowhere else.
        assert {"tls.key", "ike.key", "tls.pem", "ike.pem", "ca.pem"} <= {
            p.name for p in host.state_dir.iterdir()
        }
        assert (host.state_dir / "ca.pem").read_bytes() == ca_pem
        ike = x509.load_pem_x509_certificate((host.state_dir / "ike.pem").read_bytes())
        sans = ike.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert sans.get_values_for_type(x509.DNSName) == [name]
        assert [str(a) for a in sans.get_values_for_type(x509.IPAddress)] == [host.address]
        key = (host.state_dir / "tls.key").read_bytes()
        assert not [p for p in bed.root.rglob("*") if p.is_file() and p.suffix == ".key"
                    and p.read_bytes() == key and host.root not in p.parents]  # fmt: skip
    assert sorted(p.name for p in Path("/opt").iterdir()) == machine_opt
    cache = bed.root / "state" / "wheels"
    built = {p: p.stat().st_mtime_ns for p in cache.rglob("*.whl")}
    assert built

    again = bootstrap(bed, inventory, "-o", "json")
    assert again.returncode == 0, again.stdout + again.stderr
    doc = json.loads(again.stdout)
    assert [(h["host"], h["outcome"], h["changes"]) for h in doc["hosts"]] == [
        ("a1", "ok", []),
        ("a2", "ok", []),
    ]
    assert {p: p.stat().st_mtime_ns for p in cache.rglob("*.whl")} == built

    # The agent bootstrap started holds its ports: they are not in the way of a new run.
    held = bootstrap(bed, inventory, "-l", "a1")
    assert held.returncode == 0, held.stdout + held.stderr
    assert "udp/500, udp/4500 and tcp/50051 free or the agent's" in held.stdout
    check = bootstrap(bed, inventory, "--check")
    assert check.returncode == 0, check.stdout + check.stderr
    assert "changed=1" not in check.stdout
    assert "ok: [a1] " in check.stdout and "vpnfleet 0.1.0 in /opt/vpnfleet/venv" in check.stdout


def test_become_installs_through_sudo_and_names_sudo_that_asks_for_a_password(
    ssh_hosts: Make, tmp_path: Path
) -> None:
    bed = ssh_hosts([HostSpec("a1"), HostSpec("a2")])
    bed.write_known_hosts()
    for name in bed.hosts:
        bed.run_on_host(
            name,
            ["useradd", "--no-create-home", "--password", "*", "--shell", "/bin/sh", "deploy"],
        )
    # Passwordless sudo on a1 only (each host's /etc is its own).
    bed.run_on_host(
        "a1",
        ["sh", "-c", "echo 'deploy ALL=(ALL) NOPASSWD: ALL' > /etc/sudoers.d/deploy && "
         "chmod 0440 /etc/sudoers.d/deploy"],
    )  # fmt: skip
    inventory = write_inventory(bed, tmp_path / "inv")
    ca_init(bed)
    (inventory / "group_vars").mkdir()
    (inventory / "group_vars" / "all.yaml").write_text(
        "ansible_user: deploy\nansible_become: yes\n"
    )

    res = bootstrap(bed, inventory)
    assert res.returncode == 2, res.stdout + res.stderr
    lines = res.stdout.splitlines()
    assert not [ln for ln in lines if ln.startswith("    + ")]  # changes shown with --diff
    assert lines[0].startswith("changed: [a1] ")
    assert lines[0].endswith(
        "installed vpnfleet 0.1.0 in /opt/vpnfleet/venv; enrolled as a1; config "
        "/etc/vpnfleet/agent.yaml; vpnfleet-agent.service enabled and started; plan applied"
    )
    failed = next(ln for ln in lines if ln.startswith("failed: [a2]"))
    assert failed.startswith("failed: [a2] missing root (sudo -n -u root failed: sudo: ")
    assert "password is required" in failed
    assert "give deploy passwordless sudo" in failed
    # Installed by root through sudo; nothing on a2.
    venv = bed.hosts["a1"].opt / "vpnfleet" / "venv"
    assert (venv / "bin" / "vpnfleet-agent").is_file()
    assert venv.stat().st_uid == 0
    assert list(bed.hosts["a2"].opt.iterdir()) == []
    assert "Accepted publickey for deploy" in bed.hosts["a1"].log()
