"""`vpnfleet rotate certs|ca` against real agent processes over real mTLS, without a data
plane (plan-only agents on 127.0.0.1, no namespaces): what the controller and the
agents trust at each end of a rotation, the CLI's output, a failed agent named and the
run resumed. Tunnels and pings under rotation: test_lab_cert_rotation.py."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from tests.support.agent_harness import AgentProcess, Fleet, make_fleet, running_agent
from vpnfleet.controller.statedir import pki
from vpnfleet.controller.transport.client import AgentClient, AgentUnreachable

CLI = [sys.executable, "-m", "vpnfleet.controller.cli"]
HOSTS = ("a1", "a2", "a3")


def write_inventory(root: Path, agents: dict[str, AgentProcess]) -> Path:
    inv = root / "inventory"
    (inv / "group_vars").mkdir(parents=True)
    lines = ["all:", "  children:", "    mesh:", "      hosts:"]
    for i, (host, agent) in enumerate(sorted(agents.items()), 1):
        lines += [
            f"        {host}:",
            f"          address: 192.0.2.{i}",  # never used: the agents have no data plane
            f"          subnets: [10.9.{i}.0/24]",
            f"          agent_address: {agent.target}",
        ]
    (inv / "hosts.yaml").write_text("\n".join(lines) + "\n")
    (inv / "group_vars" / "all.yaml").write_text(
        "ike_proposals: [aes256gcm16-prfsha384-x25519]\nesp_proposals: [aes256gcm16]\n"
        "auth: pubkey\n"
    )
    (inv / "topology.yaml").write_text("meshes:\n  - name: m\n    group: mesh\n")
    return inv


@pytest.fixture
def agents(tmp_path: Path) -> Iterator[tuple[Fleet, dict[str, AgentProcess], Path]]:
    fleet = make_fleet(tmp_path / "f")
    with contextlib.ExitStack() as stack:
        procs = {
            h: stack.enter_context(running_agent(h, fleet.enroll(h, f"192.0.2.{i}")))
            for i, h in enumerate(HOSTS, 1)
        }
        inv = write_inventory(tmp_path, procs)
        applied = vpnfleet(fleet, "apply", "-i", str(inv), "-o", "json")
        assert applied.returncode == 0, applied.stdout + applied.stderr
        yield fleet, procs, inv


def vpnfleet(fleet: Fleet, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, "--state", str(fleet.controller_state), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "200"},
    )


def rotate(fleet: Fleet, inv: Path, kind: str, *extra: str) -> tuple[int, dict[str, Any]]:
    res = vpnfleet(fleet, "rotate", kind, "-i", str(inv), "-o", "json", *extra)
    assert res.stdout, res.stderr
    data: dict[str, Any] = json.loads(res.stdout)
    return res.returncode, data


def status_with(agents: dict[str, AgentProcess], tls: pki.TlsCredentials) -> dict[str, str]:
    """GetStatus on each agent with these credentials: host -> '' or why not."""

    async def one(agent: AgentProcess) -> str:
        try:
            async with AgentClient(agent.host, agent.target, tls, timeout=5) as client:
                await client.get_status()
        except AgentUnreachable as exc:
            return f"unreachable: {exc.details}"
        return ""

    async def every() -> dict[str, str]:
        return {h: await one(a) for h, a in agents.items()}

    return asyncio.run(every())


def issued_by(pem: bytes, ca_pem: bytes) -> bool:
    try:
        x509.load_pem_x509_certificate(pem).verify_directly_issued_by(
            x509.load_pem_x509_certificate(ca_pem)
        )
    except Exception:
        return False
    return True


def test_rotate_ca_moves_every_trust_to_the_new_ca(
    agents: tuple[Fleet, dict[str, AgentProcess], Path],
) -> None:
    fleet, procs, inv = agents
    state = fleet.controller_state
    old_ca = pki.load_ca(state)[2]
    old_controller = pki.ensure_controller_cert(state)
    code, result = rotate(fleet, inv, "ca")
    assert code == 0, result
    assert result["kind"] == "ca" and result["error"] == "" and result["phase"] == "retire"
    assert [h["outcome"] for h in result["hosts"]] == ["changed"] * 3
    new_ca = pki.load_ca(state)[2]
    assert new_ca != old_ca and result["ca"] == pki.fingerprint(new_ca)
    for host, agent in procs.items():
        for name in ("tls.pem", "ike.pem"):
            assert issued_by((agent.agent_dir / name).read_bytes(), new_ca), (host, name)
        ca_file = (agent.agent_dir / "ca.pem").read_bytes()
        assert pki.bundle_fingerprints(ca_file) == [pki.fingerprint(new_ca)]
    # The agents present certificates of the new CA and accept the new controller's.
    new_controller = pki.ensure_controller_cert(state)
    only_new = pki.TlsCredentials(new_controller.cert_pem, new_controller.key_pem, new_ca)
    assert status_with(procs, only_new) == dict.fromkeys(HOSTS, "")
    # The old CA's certificate is refused; and an agent is not trusted on the old CA.
    old_cert = pki.TlsCredentials(old_controller.cert_pem, old_controller.key_pem, new_ca)
    assert all(why.startswith("unreachable") for why in status_with(procs, old_cert).values())
    old_trust = pki.TlsCredentials(new_controller.cert_pem, new_controller.key_pem, old_ca)
    assert all(why.startswith("unreachable") for why in status_with(procs, old_trust).values())
    # The plans in force carry only the new CA: a plain apply changes nothing.
    res = vpnfleet(fleet, "apply", "-i", str(inv), "-o", "json")
    assert res.returncode == 0, res.stdout + res.stderr
    assert [h["outcome"] for h in json.loads(res.stdout)["hosts"]] == ["ok"] * 3


def test_rotate_certs_text_output_and_new_certificates(
    agents: tuple[Fleet, dict[str, AgentProcess], Path],
) -> None:
    fleet, procs, inv = agents
    before = {h: (a.agent_dir / "tls.pem").read_bytes() for h, a in procs.items()}
    res = vpnfleet(fleet, "rotate", "certs", "-i", str(inv), "--forks", "2")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "rotating agent certificates of 3 hosts in 1 phase(s): reissue" in res.stdout
    assert "phase 1/1 reissue: re-issue TLS and IKE certificates" in res.stdout
    assert "new certificates in force on every host" in res.stdout
    ca = pki.load_ca(fleet.controller_state)[2]
    for host, agent in procs.items():
        tls = (agent.agent_dir / "tls.pem").read_bytes()
        assert tls != before[host] and issued_by(tls, ca)


def test_failed_agent_is_named_and_the_rotation_resumes(
    agents: tuple[Fleet, dict[str, AgentProcess], Path], tmp_path: Path
) -> None:
    fleet, procs, inv = agents
    procs["a2"].terminate()
    code, first = rotate(fleet, inv, "ca", "--timeout", "2")
    assert code == 2, first  # the rotation stopped, as `rotate psk` does
    assert first["error"].startswith("phase trust: a2: plan not acknowledged: "), first
    saved = json.loads((fleet.controller_state / "rotation" / "ca.json").read_text())
    assert saved["phase"] == "trust" and saved["finished_at"] == 0
    assert saved["done"].get("trust", []) == []
    assert pki.next_ca_pem(fleet.controller_state) is not None
    # Another certificate rotation waits for this one.
    res = vpnfleet(fleet, "rotate", "certs", "-i", str(inv))
    assert res.returncode == 1 and "an unfinished `rotate ca`" in res.stderr, res.stderr
    port = procs["a2"].port
    with running_agent("a2", procs["a2"].agent_dir, extra_config="") as again:
        procs["a2"] = again
        if again.port != port:  # the inventory names where it listens
            write_inventory(tmp_path / "moved", procs)
            inv = tmp_path / "moved" / "inventory"
        res = vpnfleet(fleet, "rotate", "ca", "-i", str(inv))
        assert res.returncode == 0, res.stdout + res.stderr
        # The phase's plans go to every agent before any changes its trust: none did.
        assert "resuming the ca rotation in phase trust: 0 of 3 host(s) done in it" in res.stdout
        assert "fleet CA" in res.stdout and "the old one retired" in res.stdout
