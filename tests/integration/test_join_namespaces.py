"""Join tokens across namespaces, as a host the controller cannot reach by SSH joins.

The hosts of the SSH test bed (tests.support.ssh_hosts) play the machines: each a
network namespace behind a veth, with its own /etc, /var/lib/vpnfleet-agent and a
systemctl stand-in in a mount namespace of its own. `vpnfleet token create` and
`vpnfleet join-server` run in the controller's namespace; `vpnfleet-agent join` runs
inside the host with its default paths, as an operator would run it there. The host
then starts the agent through its unit, and the controller reaches it over mTLS.

What tests/integration/test_join.py shows on loopback (the token stored hashed, each
refusal's wording, a token that stays valid after a wrong-host try, a look-alike
service) is not repeated; here the point is the flow between machines: the source
address the service sees and audits, a refused join leaving the host's file system as
it was, and a token expiring on the wall clock of separate processes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tests.support.agent_harness import read_listening_port
from tests.support.ssh_hosts import CONTROLLER_ADDRESS, HostSpec, SshHost, SshTestbed
from vpnfleet.agent.config import load_config
from vpnfleet.controller.deploy.wheels import wheel_set
from vpnfleet.controller.statedir import pki
from vpnfleet.controller.statedir.audit import AuditLog

pytestmark = pytest.mark.netns

Make = Callable[[Sequence[HostSpec]], SshTestbed]
VPNFLEET = [sys.executable, "-m", "vpnfleet.controller.cli"]
VENV = "/opt/vpnfleet/venv"
AGENT = f"{VENV}/bin/vpnfleet-agent"
"""The agent as the operator installs it on a host that joins (see :func:`install_agent`)."""
UNIT = "vpnfleet-agent.service"
UNIT_DIR = "/etc/systemd/system"
STATE_FILES = ("ca.pem", "ike.csr", "ike.key", "ike.pem", "tls.csr", "tls.key", "tls.pem")
HOST_OUTPUT = ("sshd.log",)  # written by the host's sshd, not by a join


def vpnfleet(bed: SshTestbed, *args: str) -> subprocess.CompletedProcess[str]:
    """A controller command, run in the controller's namespace."""
    return bed.run_controller([*VPNFLEET, "--state", str(bed.root / "state"), *args], 60)


def create_token(bed: SshTestbed, host: str, ttl: str, *extra: str) -> dict[str, str | float]:
    res = vpnfleet(bed, "token", "create", "--host", host, "--ttl", ttl, *extra, "-o", "json")
    assert res.returncode == 0, res.stderr
    made: dict[str, str | float] = json.loads(res.stdout)
    return made


def install_agent(bed: SshTestbed, host: str) -> None:
    """Install vpnfleet on ``host`` by hand, as an operator does before ``join``: the
    wheels the controller ships (controller/deploy/wheels.py) copied into the host's
    /opt, a venv made there with the host's Python and pip from its wheel, no index."""
    wheels = wheel_set(bed.root / "state" / "wheels")
    shutil.copytree(wheels.directory, bed.hosts[host].opt / "wheels")
    bed.run_on_host(host, ["python3", "-m", "venv", "--without-pip", VENV])
    bed.run_on_host(
        host,
        [f"{VENV}/bin/python", f"/opt/wheels/{wheels.pip.name}/pip", "install", "--quiet",
         "--no-index", "--no-cache-dir", "--disable-pip-version-check",
         "--find-links", "/opt/wheels", f"vpnfleet=={wheels.version}"],
    )  # fmt: skip


def join_on(bed: SshTestbed, host: str, controller: str, token: str, name: str) -> tuple[int, str]:
    """`vpnfleet-agent join` run on ``host`` (its network and mount namespaces), with the
    default state dir, config and listen address, the token in the environment."""
    res = subprocess.run(
        [
            "nsenter",
            "-t",
            str(bed.hosts[host].pid),
            "-m",
            "-n",
            "--",
            AGENT,
            "join",
            "--controller",
            controller,
            "--name",
            name,
            "--unit-dir",
            UNIT_DIR,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "VPNFLEET_JOIN_TOKEN": token},
    )
    return res.returncode, res.stdout + res.stderr


def files_of(host: SshHost) -> dict[str, bytes | str]:
    """Everything of the host's own file system (its /opt, /etc/vpnfleet, /etc and
    /var/lib overlays, /run, /tmp): path -> content, link target or 'dir'."""
    found: dict[str, bytes | str] = {}
    for path in sorted(host.root.rglob("*")):
        rel = str(path.relative_to(host.root))
        if rel in HOST_OUTPUT:
            continue
        if path.is_symlink():
            found[rel] = f"-> {os.readlink(path)}"
        elif path.is_dir():
            found[rel] = "dir"
        elif path.is_file():
            found[rel] = path.read_bytes()
    return found


@contextmanager
def join_server(bed: SshTestbed) -> Iterator[str]:
    """`vpnfleet join-server` in the controller's namespace, on its bridge address."""
    log = bed.root / "join-server.log"
    with open(log, "ab") as err:
        proc = subprocess.Popen(
            bed.controller_command(
                [
                    *VPNFLEET,
                    "--state",
                    str(bed.root / "state"),
                    "join-server",
                    "--listen",
                    f"{CONTROLLER_ADDRESS}:0",
                ]
            ),
            stdout=subprocess.PIPE,
            stderr=err,
            env=bed.controller_env(),
        )
    try:
        yield f"{CONTROLLER_ADDRESS}:{read_listening_port(proc, log)}"
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()


def joins(state: Path) -> list[tuple[str, str, str, str]]:
    """(outcome, token id, subject, refusal code) of the audit log's join rows, oldest
    first; the subject names the host asked for and the address the request came from."""
    rows = [e for e in reversed(AuditLog.in_state(state).recent()) if e.kind == "join"]
    return [
        (e.outcome, e.revision, e.subject, e.errors[0].split(":", 1)[0] if e.errors else "")
        for e in rows
    ]


def wait_until(moment: float) -> None:
    """Sleep until the wall clock reaches ``moment`` (a token's expiry: it must come)."""
    while (left := moment - time.time()) > 0:
        time.sleep(left)


def test_a_host_in_its_own_namespace_joins_and_refused_joins_leave_it_untouched(
    ssh_hosts: Make,
) -> None:
    bed = ssh_hosts([HostSpec("h1"), HostSpec("h2")])
    h1, h2 = bed.hosts["h1"], bed.hosts["h2"]
    state = bed.root / "state"
    res = vpnfleet(bed, "ca", "init")
    assert res.returncode == 0, res.stderr
    for_h1 = create_token(bed, "h1", "10m", "--address", h1.address)
    for_h2 = create_token(bed, "h2", "10m")
    short = create_token(bed, "h1", "1s")
    for name in bed.hosts:
        install_agent(bed, name)

    with join_server(bed) as controller:
        pristine = files_of(h1)
        # h1 presents the token made for h2.
        rc, output = join_on(bed, "h1", controller, str(for_h2["token"]), "h1")
        assert rc == 1
        assert (
            f"the controller refused the join: wrong-host: token {for_h2['token_id']} is for "
            "host 'h2', not 'h1'"
        ) in output
        # h1 presents its own token once it has expired.
        wait_until(float(short["expires_at"]))
        rc, output = join_on(bed, "h1", controller, str(short["token"]), "h1")
        assert rc == 1
        assert f"refused the join: expired: token {short['token_id']} expired at" in output
        assert files_of(h1) == pristine

        rc, output = join_on(bed, "h1", controller, str(for_h1["token"]), "h1")
        assert rc == 0, output
        assert "joined as h1: keys and certificates in /var/lib/vpnfleet-agent" in output
        assert f"wrote {UNIT_DIR}/{UNIT}" in output
        joined = files_of(h1)
        assert pristine.keys() <= joined.keys()
        assert sorted(p for p in joined if joined[p] != pristine.get(p)) == [
            "etc-vpnfleet/agent.yaml",  # /etc/vpnfleet/agent.yaml
            "etc.upper/systemd",  # /etc/systemd/system/vpnfleet-agent.service
            "etc.upper/systemd/system",
            f"etc.upper/systemd/system/{UNIT}",
            *(f"var-lib-vpnfleet-agent/{f}" for f in STATE_FILES),
        ]

        # The same token again, from another machine that claims to be h1.
        h2_before = files_of(h2)
        rc, output = join_on(bed, "h2", controller, str(for_h1["token"]), "h1")
        assert rc == 1
        assert (
            f"refused the join: used: token {for_h1['token_id']} was already used at "
        ) in output
        assert f"from {h1.address}; tokens are single-use" in output
        assert files_of(h2) == h2_before

    # What the join wrote, each where the host's own paths lead.
    ca_pem = pki.ca_info(state).cert_path.read_bytes()
    ca = x509.load_pem_x509_certificate(ca_pem)
    assert (h1.state_dir / "ca.pem").read_bytes() == ca_pem
    for name in ("tls", "ike"):
        key = h1.state_dir / f"{name}.key"
        assert key.stat().st_mode & 0o777 == 0o600
        cert = x509.load_pem_x509_certificate((h1.state_dir / f"{name}.pem").read_bytes())
        cert.verify_directly_issued_by(ca)
        private = serialization.load_pem_private_key(key.read_bytes(), None)
        assert cert.public_key() == private.public_key()  # the key made on h1
    ike = x509.load_pem_x509_certificate((h1.state_dir / "ike.pem").read_bytes())
    addresses = ike.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert h1.address in {str(a) for a in addresses.get_values_for_type(x509.IPAddress)}
    config = load_config(h1.etc_vpnfleet / "agent.yaml")
    assert (config.name, config.data_plane) == ("h1", True)
    assert config.state_dir == Path("/var/lib/vpnfleet-agent")
    unit = (h1.root / "etc.upper" / "systemd" / "system" / UNIT).read_text()
    assert f"ExecStart={AGENT} serve --config /etc/vpnfleet/agent.yaml" in unit.splitlines()

    # h1 starts the agent as its unit says; the controller reaches it from its namespace.
    bed.run_on_host("h1", ["systemctl", "daemon-reload"])
    bed.run_on_host("h1", ["systemctl", "enable", UNIT])
    bed.run_on_host("h1", ["systemctl", "start", UNIT])  # returns once the agent says READY=1
    assert bed.run_on_host("h1", ["systemctl", "is-active", UNIT]).strip() == "active"
    assert bed.agent_health("h1", pki.ensure_controller_cert(state)) == "SERVING"

    listed = json.loads(vpnfleet(bed, "token", "list", "-o", "json").stdout)
    assert [(t["host"], t["state"], t["used_by"]) for t in listed] == [
        ("h1", "used", h1.address),
        ("h2", "valid", ""),
        ("h1", "expired", ""),
    ]
    assert joins(state) == [
        ("refused", for_h2["token_id"], f"join of 'h1' from {h1.address}", "wrong-host"),
        ("refused", short["token_id"], f"join of 'h1' from {h1.address}", "expired"),
        ("changed", for_h1["token_id"], f"join of 'h1' from {h1.address}", ""),
        ("refused", for_h1["token_id"], f"join of 'h1' from {h2.address}", "used"),
    ]
