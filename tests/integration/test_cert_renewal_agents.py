"""Certificates renewed before expiry, with real agent processes over real mTLS (plan
only, on 127.0.0.1): a2's certificates are re-issued by the fleet CA to expire in 5 days
(40 days into their lifetime) before its agent starts, a1's are fresh. `vpnfleet renew`
and `vpnfleet serve` find a2's due from its status and renew them through the rotation
path (new keys made by the agent, CSRs signed); a1 is left as it is, and a second run
changes nothing. Every process is stopped at the end, also on failure."""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import select
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from tests.support.agent_harness import AgentProcess, Fleet, make_fleet, running_agent
from vpnfleet.controller.statedir import pki

CLI = [sys.executable, "-m", "vpnfleet.controller.cli"]
HOSTS = ("a1", "a2")
FILES = ("tls.pem", "tls.key", "ike.pem", "ike.key")


def near_expiry(fleet: Fleet, agent_dir: Path) -> None:
    """Re-issue the agent's certificates (same keys, names and extensions) as the fleet
    CA would have 40 days ago, for 45 days."""
    ca_cert, ca_key, _ = pki.load_ca(fleet.controller_state)
    now = datetime.datetime.now(datetime.UTC)
    for name in ("tls.pem", "ike.pem"):
        cert = x509.load_pem_x509_certificate((agent_dir / name).read_bytes())
        builder = (
            x509.CertificateBuilder()
            .subject_name(cert.subject)
            .issuer_name(ca_cert.subject)
            .public_key(cert.public_key())  # type: ignore[arg-type]
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=40))
            .not_valid_after(now + datetime.timedelta(days=5))
        )
        for ext in cert.extensions:
            builder = builder.add_extension(ext.value, ext.critical)
        signed = builder.sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
        (agent_dir / name).write_bytes(signed.public_bytes(serialization.Encoding.PEM))


def files(agent_dir: Path) -> dict[str, bytes]:
    return {name: (agent_dir / name).read_bytes() for name in FILES}


def not_after(agent_dir: Path, name: str) -> datetime.datetime:
    return x509.load_pem_x509_certificate((agent_dir / name).read_bytes()).not_valid_after_utc


def write_inventory(inv: Path, agents: dict[str, AgentProcess]) -> None:
    inv.mkdir(parents=True)
    lines = ["all:", "  children:", "    mesh:", "      hosts:"]
    for i, (host, agent) in enumerate(sorted(agents.items()), 1):
        lines.append(
            f"        {host}: {{address: 192.0.2.{i}, subnets: [10.9.{i}.0/24], "
            f"agent_address: '{agent.target}'}}"
        )
    (inv / "hosts.yaml").write_text("\n".join(lines) + "\n")
    (inv / "group_vars").mkdir()
    (inv / "group_vars" / "all.yaml").write_text(
        "ike_proposals: [aes256gcm16-prfsha384-x25519]\nesp_proposals: [aes256gcm16]\n"
        "auth: pubkey\n"
    )
    (inv / "topology.yaml").write_text("meshes:\n  - {name: m, group: mesh}\n")


def vpnfleet(fleet: Fleet, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, "--state", str(fleet.controller_state), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "200"},
    )


@pytest.fixture
def agents(tmp_path: Path) -> Iterator[tuple[Fleet, dict[str, Path], Path]]:
    fleet = make_fleet(tmp_path / "f")
    dirs = {h: fleet.enroll(h, f"192.0.2.{i}") for i, h in enumerate(HOSTS, 1)}
    near_expiry(fleet, dirs["a2"])
    repo = tmp_path / "repo"
    with contextlib.ExitStack() as stack:
        procs = {h: stack.enter_context(running_agent(h, d)) for h, d in dirs.items()}
        inv = repo / "inventory"
        write_inventory(inv, procs)
        applied = vpnfleet(fleet, "apply", "-i", str(inv), "-o", "json")
        assert applied.returncode == 0, applied.stdout + applied.stderr
        yield fleet, dirs, inv


def renew(fleet: Fleet, inv: Path, *extra: str) -> tuple[int, dict[str, Any]]:
    done = vpnfleet(fleet, "renew", "-i", str(inv), "-o", "json", *extra)
    assert done.stdout, done.stderr
    data: dict[str, Any] = json.loads(done.stdout)
    return done.returncode, data


def test_renew_replaces_only_the_certificates_that_are_due(
    agents: tuple[Fleet, dict[str, Path], Path],
) -> None:
    fleet, dirs, inv = agents
    before = {h: files(d) for h, d in dirs.items()}
    code, checked = renew(fleet, inv, "--check")
    assert code == 0, checked
    assert [(d["host"], d["kind"]) for d in checked["due"]] == [("a2", "tls"), ("a2", "ike")]
    assert checked["rotation"] is None
    assert {h: files(d) for h, d in dirs.items()} == before  # --check changes nothing

    code, renewed = renew(fleet, inv)
    assert code == 0, renewed
    rotation = renewed["rotation"]
    assert rotation["kind"] == "certs" and rotation["error"] == "", rotation
    assert [h["host"] for h in rotation["hosts"]] == ["a2"], rotation
    after = files(dirs["a2"])
    for name in FILES:  # new key pairs made by the agent, new certificates for them
        assert after[name] != before["a2"][name], name
    soon = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=300)
    assert not_after(dirs["a2"], "tls.pem") > soon and not_after(dirs["a2"], "ike.pem") > soon
    assert files(dirs["a1"]) == before["a1"]

    # The agent serves with its new certificate, and nothing is due any more.
    status = vpnfleet(fleet, "status", "-i", str(inv), "-o", "json")
    hosts = {h["host"]: h for h in json.loads(status.stdout)["hosts"]}
    certs = hosts["a2"]["observed"]["certificates"]
    assert [c["not_after"] for c in certs] == [
        not_after(dirs["a2"], "tls.pem").timestamp(),
        not_after(dirs["a2"], "ike.pem").timestamp(),
    ]
    assert hosts["a2"]["warnings"] == []
    code, again = renew(fleet, inv)
    assert (code, again["due"], again["rotation"]) == (0, [], None), again
    text = vpnfleet(fleet, "renew", "-i", str(inv))
    assert text.returncode == 0 and "no certificate is due (window: the last 33%" in text.stdout


def git(repo: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.org", *args],
        capture_output=True,
        timeout=30,
        check=True,
    )


def wait_for(what: str, check: Callable[[], Any], timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.2)


@contextlib.contextmanager
def serving(fleet: Fleet, inv: Path, log_path: Path) -> Iterator[str]:
    """``vpnfleet serve`` following the inventory's repository; yields its URL."""
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [*CLI, "--state", str(fleet.controller_state), "serve", "-i", str(inv),
             "--branch", "main", "--interval", "1", "--listen", "127.0.0.1:0"],
            stdout=subprocess.PIPE,
            stderr=log,
        )  # fmt: skip
    try:
        assert proc.stdout is not None
        buffer = b""
        deadline = time.monotonic() + 30
        while b"listening on " not in buffer and time.monotonic() < deadline:
            if select.select([proc.stdout.fileno()], [], [], 0.1)[0]:
                buffer += os.read(proc.stdout.fileno(), 4096)
        assert b"listening on " in buffer, log_path.read_text()
        line = buffer.decode().split("listening on ", 1)[1].splitlines()[0]
        yield line.strip()
    finally:
        proc.kill()
        proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()


def test_serve_renews_a_due_certificate_after_its_status_poll(
    agents: tuple[Fleet, dict[str, Path], Path], tmp_path: Path
) -> None:
    fleet, dirs, inv = agents
    repo = inv.parent
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "fleet")
    before = {h: files(d) for h, d in dirs.items()}
    log_path = tmp_path / "serve.log"
    with serving(fleet, inv, log_path) as url:

        def renewals() -> list[dict[str, Any]]:
            with urllib.request.urlopen(url + "/audit", timeout=10) as resp:
                rows = json.loads(resp.read())["rollouts"]
            return [r for r in rows if r["kind"] == "cert-renewal"]

        rows = wait_for("the renewal in the audit log", renewals)
    assert [(r["hosts"], r["outcome"]) for r in rows] == [(["a2"], "changed")], rows
    log = log_path.read_text()
    assert "a2: TLS certificate expires" in log, log
    assert "renewing the TLS and IKE certificates of a2" in log, log
    assert files(dirs["a1"]) == before["a1"]
    soon = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=300)
    assert not_after(dirs["a2"], "ike.pem") > soon
    assert files(dirs["a2"])["tls.pem"] != before["a2"]["tls.pem"]
