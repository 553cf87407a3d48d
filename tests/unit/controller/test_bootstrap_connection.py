"""Ansible's connection variables as `vpnfleet bootstrap` reads them, the host-key
policy, the prerequisites read from a host's probe output, and the shipped wheels."""

from __future__ import annotations

import importlib.metadata
import os
import socket
import subprocess
import zipfile
from pathlib import Path, PurePosixPath

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from vpnfleet.controller.deploy.connection import (
    ConnectionSettings,
    ConnectionVarError,
    settings_for,
)
from vpnfleet.controller.deploy.enrol import enrolled, parse_files, read_script
from vpnfleet.controller.deploy.hostkeys import HostKeyPolicy, Verdict, lookup_name
from vpnfleet.controller.deploy.install import compatible
from vpnfleet.controller.deploy.prerequisites import (
    Prerequisite,
    Privilege,
    Python,
    assess,
    owner_script,
    parse_owners,
    parse_probe,
    probe_script,
)
from vpnfleet.controller.deploy.wheels import WheelSet, compressed_tags, repack
from vpnfleet.controller.inventory import VaultText
from vpnfleet.controller.statedir import pki

# ---------------------------------------------------------------- connection variables


def test_defaults_are_ssh_defaults() -> None:
    s = settings_for("web1", {})
    assert (s.address, s.port, s.user, s.key_file) == ("web1", 22, None, None)
    assert (s.become, s.become_user, s.python) == (False, "root", None)


def test_ansible_host_port_user_and_key(tmp_path: Path) -> None:
    key = tmp_path / "id"
    key.write_text("k")
    s = settings_for(
        "web1",
        {
            "ansible_host": "192.0.2.7",
            "ansible_port": 2222,
            "ansible_user": "deploy",
            "ansible_ssh_private_key_file": str(key),
        },
    )
    assert (s.address, s.port, s.user, s.key_file) == ("192.0.2.7", 2222, "deploy", key)


def test_the_later_alias_wins_as_in_the_ssh_plugin() -> None:
    s = settings_for(
        "h",
        {
            "ansible_host": "192.0.2.1",
            "ansible_ssh_host": "192.0.2.2",
            "ansible_user": "a",
            "ansible_ssh_user": "b",
            "ansible_port": 22,
            "ansible_ssh_port": "2200",
        },
    )
    assert (s.address, s.user, s.port) == ("192.0.2.2", "b", 2200)


def test_key_file_path_expands_home_and_is_relative_to_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / ".ssh").mkdir()
    (tmp_path / ".ssh" / "fleet").write_text("k")
    (tmp_path / "rel").write_text("k")
    monkeypatch.setenv("HOME", str(tmp_path))
    s = settings_for("h", {"ansible_private_key_file": "~/.ssh/fleet"})
    assert s.key_file == tmp_path / ".ssh" / "fleet"
    s = settings_for("h", {"ansible_ssh_private_key_file": "rel"}, cwd=tmp_path)
    assert s.key_file == tmp_path / "rel"


@pytest.mark.parametrize(
    ("written", "become"),
    [(True, True), ("yes", True), ("True", True), ("on", True), (1, True), ("1", True),
     (False, False), ("no", False), ("false", False), ("off", False), (0, False)],
)  # fmt: skip
def test_become_takes_ansible_booleans(written: object, become: bool) -> None:
    assert settings_for("h", {"ansible_become": written}).become is become


def test_become_wraps_privileged_commands_in_sudo_n() -> None:
    s = settings_for("h", {"ansible_become": "yes", "ansible_become_user": "ops admin"})
    assert s.wrap("id -u", privileged=True) == "sudo -n -H -u 'ops admin' -- /bin/sh -c 'id -u'"
    assert s.wrap("id -u", privileged=False) == "id -u"
    assert ConnectionSettings("h", "h").wrap("id -u", privileged=True) == "id -u"


def test_python_interpreter_auto_means_discover() -> None:
    assert settings_for("h", {"ansible_python_interpreter": "auto_silent"}).python is None
    assert settings_for("h", {"ansible_python_interpreter": "/opt/py/bin/python3"}).python == (
        "/opt/py/bin/python3"
    )


@pytest.mark.parametrize(
    ("vars", "names"),
    [
        ({"ansible_port": "ssh"}, ["ansible_port", "port number"]),
        ({"ansible_port": 70000}, ["ansible_port", "1-65535"]),
        ({"ansible_ssh_port": 0}, ["ansible_ssh_port", "1-65535"]),
        ({"ansible_become": "maybe"}, ["ansible_become", "boolean"]),
        ({"ansible_become": True, "ansible_become_method": "su"}, ["ansible_become_method"]),
        ({"ansible_connection": "local"}, ["ansible_connection", "SSH only"]),
        ({"ansible_host": "{{ inventory_hostname }}.lan"}, ["ansible_host", "template"]),
        ({"ansible_user": VaultText("$VAULT")}, ["ansible_user", "--vault-password-file"]),
        ({"ansible_host": ""}, ["ansible_host", "empty"]),
        ({"ansible_ssh_private_key_file": "/nonexistent/key"}, ["no such file"]),
    ],
)
def test_unusable_values_are_refused_naming_host_and_variable(
    vars: dict[str, object], names: list[str]
) -> None:
    with pytest.raises(ConnectionVarError) as exc:
        settings_for("web1", vars)
    assert "host web1" in str(exc.value)
    for name in names:
        assert name in str(exc.value)


def test_openssh_arguments_are_reported_as_ignored() -> None:
    s = settings_for("h", {"ansible_ssh_common_args": "-o ProxyJump=bastion"})
    assert len(s.ignored) == 1 and "ansible_ssh_common_args" in s.ignored[0]


# ---------------------------------------------------------------- host keys


def _host_key(tmp_path: Path, name: str) -> str:
    key = tmp_path / name
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    return " ".join(key.with_suffix(".pub").read_text().split()[:2])


def test_lookup_name_carries_the_port_unless_22() -> None:
    assert lookup_name("192.0.2.1", 22) == "192.0.2.1"
    assert lookup_name("192.0.2.1", 2222) == "[192.0.2.1]:2222"


def test_an_entry_for_port_22_does_not_vouch_for_another_port(tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    known.write_text(f"192.0.2.1 {_host_key(tmp_path, 'a')}\n")
    policy = HostKeyPolicy.make(known, accept_new=False)
    assert policy.trust("192.0.2.1", 22).verdict is Verdict.KNOWN
    assert policy.trust("192.0.2.1", 2222).verdict is Verdict.UNKNOWN
    assert policy.trust("192.0.2.2", 22).verdict is Verdict.UNKNOWN


def test_hashed_and_port_entries_are_matched(tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    known.write_text(f"[192.0.2.1]:2222 {_host_key(tmp_path, 'a')}\n")
    subprocess.run(["ssh-keygen", "-q", "-H", "-f", str(known)], check=True, capture_output=True)
    assert "192.0.2.1" not in known.read_text()
    trust = HostKeyPolicy.make(known, accept_new=False).trust("192.0.2.1", 2222)
    assert trust.verdict is Verdict.KNOWN and len(trust.host_keys) == 1


def test_default_files_are_the_users_and_the_global_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    policy = HostKeyPolicy.make(None, accept_new=False)
    assert policy.files == (tmp_path / ".ssh" / "known_hosts", Path("/etc/ssh/ssh_known_hosts"))
    assert policy.user_file == tmp_path / ".ssh" / "known_hosts"


def test_recorded_key_is_found_next_time(tmp_path: Path) -> None:
    from vpnfleet.controller.deploy.sshlib import asyncssh

    policy = HostKeyPolicy.make(tmp_path / "new" / "known_hosts", accept_new=True)
    trust = policy.trust("192.0.2.1", 2222)
    assert trust.verdict is Verdict.UNKNOWN
    key = asyncssh.import_public_key(_host_key(tmp_path, "a"))
    policy.record(trust, key)
    assert (
        (tmp_path / "new" / "known_hosts").read_text().startswith("[192.0.2.1]:2222 ssh-ed25519 ")
    )
    assert policy.trust("192.0.2.1", 2222).host_keys == (key,)


# ---------------------------------------------------------------- prerequisites

PROBE = """\
uid 0 root
tun yes
nft /usr/sbin/nft
python python3.13 - -
python python3.11 3.11.2 venv
python /usr/bin/python3 3.11.2 venv
udp    sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid
udp    0: 0100007F:0035 00000000:0000 07 00000000:00000000 00:00000000 00000000     0
tcp    0: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0
tcp6   0: 0000000000000000FFFF0000010012C6:C383 0000000000000000FFFF0000040012C6:CA5E 01 0
"""


def test_a_ready_host_misses_nothing() -> None:
    report = assess(parse_probe(PROBE), Privilege(True), 50051)
    assert report.ok
    assert report.python is not None and report.python.path == "python3.11"
    assert "udp/500, udp/4500 and tcp/50051 free" in report.present


def test_each_missing_prerequisite_is_named() -> None:
    probe = (
        PROBE.replace("tun yes", "tun no")
        .replace("nft /usr/sbin/nft", "nft -")
        .replace("3.11.2 venv", "3.9.2 venv")
        + "udp    1: 00000000:01F4 00000000:0000 07 0\n"
        + "udp6   1: 00000000000000000000000001000000:1194 00000000:0000 07 0\n"
        + "tcp    1: 0A00000A:C383 00000000:0000 0A 0\n"
    )
    report = assess(parse_probe(probe), Privilege(False, "sudo: a password is required"), 50051)
    named = {m.prerequisite: m.detail for m in report.missing}
    assert set(named) == {
        Prerequisite.TUN,
        Prerequisite.NFTABLES,
        Prerequisite.PYTHON,
        Prerequisite.IKE_PORT,
        Prerequisite.NAT_T_PORT,
        Prerequisite.AGENT_PORT,
        Prerequisite.ROOT,
    }
    assert (
        ">= 3.11" in named[Prerequisite.PYTHON]
        and "/usr/bin/python3 3.9.2" in named[Prerequisite.PYTHON]
    )
    assert "0.0.0.0:500" in named[Prerequisite.IKE_PORT]
    assert "[::1]:4500" in named[Prerequisite.NAT_T_PORT]
    assert "10.0.0.10:50051" in named[Prerequisite.AGENT_PORT]
    assert named[Prerequisite.ROOT] == "sudo: a password is required"


def test_a_connected_tcp_socket_on_the_agent_port_is_no_listener() -> None:
    probe = PROBE + "tcp    2: 0A00000A:C383 0A00000B:D000 01 0\n"
    assert assess(parse_probe(probe), Privilege(True), 50051).ok


def test_python_without_venv_is_not_enough() -> None:
    probe = PROBE.replace("3.11.2 venv", "3.11.2 -")
    report = assess(parse_probe(probe), Privilege(True), 50051)
    assert [m.prerequisite for m in report.missing] == [Prerequisite.PYTHON]
    assert "without venv" in report.missing[0].detail


def test_probe_script_runs_here_and_reads_back(tmp_path: Path) -> None:
    """The probe is plain sh: run it on this machine and read its own answer."""
    script = probe_script(("/nonexistent/python3", "python3"))
    out = subprocess.run(["sh", "-c", script], capture_output=True, text=True, check=True).stdout
    facts = parse_probe(out)
    assert facts.uid is not None
    assert [p.path for p in facts.pythons] == ["/nonexistent/python3", "python3"]
    assert facts.pythons[0].version is None and facts.pythons[1].version is not None


def test_probe_reports_the_machine() -> None:
    assert parse_probe("machine aarch64\n" + PROBE).machine == "aarch64"


# ---------------------------------------------------------------- shipped wheels


def test_wheel_name_carries_the_installed_tags_compressed() -> None:
    text = (
        "Wheel-Version: 1.0\nTag: cp311-cp311-manylinux_2_17_x86_64\n"
        "Tag: cp311-cp311-manylinux2014_x86_64\n"
    )
    assert compressed_tags(text) == "cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64"


def test_repacked_wheel_holds_the_package_and_a_fresh_record(tmp_path: Path) -> None:
    dist = importlib.metadata.distribution("mdurl")
    wheel = repack(dist, tmp_path)
    assert wheel.name == f"mdurl-{dist.version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        record = zf.read(f"mdurl-{dist.version}.dist-info/RECORD").decode()
    assert "mdurl/__init__.py" in names
    assert not [n for n in names if n.endswith((".pyc", "/INSTALLER", "/direct_url.json"))]
    rows = [r.split(",") for r in record.splitlines()]
    assert {r[0] for r in rows} == set(names)
    assert all(r[1].startswith("sha256=") for r in rows if not r[0].endswith("RECORD"))


def test_wheels_for_another_python_or_machine_are_refused() -> None:
    wheels = WheelSet("0.1.0", (3, 11), "x86_64", Path("/nonexistent"))
    assert compatible(wheels, Python("/usr/bin/python3", (3, 11, 2), True), "x86_64") == ""
    why = compatible(wheels, Python("/usr/bin/python3", (3, 12, 1), True), "x86_64")
    assert "Python 3.12" in why and "3.11" in why and "ansible_python_interpreter" in why
    assert "aarch64" in compatible(wheels, Python("python3", (3, 11, 9), True), "aarch64")


BUSY = PROBE + (
    "udp    1: 00000000:01F4 00000000:0000 07 00000000:00000000 00:00000000 00000000 0 0 4101\n"
    "udp    2: 00000000:1194 00000000:0000 07 00000000:00000000 00:00000000 00000000 0 0 4102\n"
)


def test_a_port_held_by_the_agents_own_venv_is_not_missing() -> None:
    facts = parse_probe(BUSY)
    agent = "pid 77: /opt/vpnfleet/venv/bin/python /opt/vpnfleet/venv/bin/vpnfleet-agent serve"
    report = assess(facts, Privilege(True), 50051, {4101: agent, 4102: agent}, "/opt/vpnfleet/venv")
    assert report.ok
    assert "udp/500, udp/4500 and tcp/50051 free or the agent's" in report.present


def test_a_port_held_by_another_program_names_it() -> None:
    facts = parse_probe(BUSY)
    owners = {4101: "pid 12: /usr/lib/ipsec/charon"}
    report = assess(facts, Privilege(True), 50051, owners, "/opt/vpnfleet/venv")
    named = {m.prerequisite: m.detail for m in report.missing}
    assert named[Prerequisite.IKE_PORT] == (
        "in use by 0.0.0.0:500 (pid 12: /usr/lib/ipsec/charon); IKE needs it"
    )
    # Whose socket could not be told (no owner found): ss can say.
    assert "ss -ulpn 'sport = 4500'" in named[Prerequisite.NAT_T_PORT]


def test_owner_script_finds_the_process_holding_a_socket() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        inode = os.stat(f"/proc/self/fd/{s.fileno()}").st_ino
        out = subprocess.run(
            ["sh", "-c", owner_script([inode])], capture_output=True, text=True, check=True
        ).stdout
    owners = parse_owners(out)
    assert owners[inode].startswith(f"pid {os.getpid()}: ")
    assert "python" in owners[inode]


def test_the_controllers_python_version_is_preferred_when_discovering() -> None:
    probe = PROBE.replace("python python3.13 - -", "python python3.13 3.13.1 venv")
    facts = parse_probe(probe)
    assert assess(facts, Privilege(True), 50051).python == Python("python3.13", (3, 13, 1), True)
    chosen = assess(facts, Privilege(True), 50051, prefer=(3, 11)).python
    assert chosen == Python("python3.11", (3, 11, 2), True)
    assert assess(facts, Privilege(True), 50051, prefer=(3, 12)).python == Python(
        "python3.13", (3, 13, 1), True
    )


# ---------------------------------------------------------------- enrolment


def _enrolled_files(tmp_path: Path, host: str) -> tuple[dict[str, bytes], bytes]:
    """A host's files as `vpnfleet-agent init` and a signing would leave them."""
    state = tmp_path / "controller"
    pki.init_ca(state)
    files: dict[str, bytes] = {}
    for kind in ("tls", "ike"):
        key = ec.generate_private_key(ec.SECP256R1())
        csr = (
            x509.CertificateSigningRequestBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
            .sign(key, hashes.SHA256())
        )
        files[f"{kind}.csr"] = csr.public_bytes(serialization.Encoding.PEM)
    tls, ike, ca = pki.sign_agent_csrs(state, host, files["tls.csr"], files["ike.csr"])
    files.update({"tls.pem": tls, "ike.pem": ike, "ca.pem": ca})
    return files, ca


def test_read_script_output_parses_back_and_never_carries_keys(tmp_path: Path) -> None:
    state = tmp_path / "agent"
    state.mkdir()
    (state / "tls.csr").write_text("-----BEGIN CERTIFICATE REQUEST-----\nabc\n")
    (state / "tls.key").write_text("SECRET KEY MATERIAL\n")
    script = read_script(PurePosixPath(str(state)))
    out = subprocess.run(["sh", "-c", script], capture_output=True, text=True, check=True).stdout
    assert "SECRET" not in out
    files = parse_files(out)
    assert files == {"tls.csr": b"-----BEGIN CERTIFICATE REQUEST-----\nabc\n", "tls.key": b""}


def test_a_host_is_enrolled_only_with_the_fleet_cas_certificates_for_its_name_and_keys(
    tmp_path: Path,
) -> None:
    files, ca = _enrolled_files(tmp_path, "a1")
    assert enrolled(files, "a1", ca)
    assert not enrolled(files, "a2", ca)  # another host's certificates
    other, other_ca = _enrolled_files(tmp_path / "other", "a1")
    assert not enrolled(files, "a1", other_ca)  # another fleet CA
    assert not enrolled({**files, "ike.csr": other["ike.csr"]}, "a1", ca)  # new keys since
    assert not enrolled({k: v for k, v in files.items() if k != "tls.pem"}, "a1", ca)
