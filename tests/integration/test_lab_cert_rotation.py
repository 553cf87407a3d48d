"""Certificate and CA rotation in the lab: a 4-host mesh with `auth: pubkey`, real agents
and a continuous ping across every tunnel.

Each test builds its mesh from a copy of inventories/lab under a lab name of its own and
removes it in a finally (also on failure), checking that nothing remains.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from tests.support.lab import (
    FAST_PING_INTERVAL,
    LabRun,
    agent_pid,
    assert_all_up_without_auth_errors,
    losses,
    new_lab,
    pinging,
    removed_after,
    require_root,
    run_json,
)
from tests.support.pings import wait_fresh_replies
from vpnfleet.controller.fleet import operations
from vpnfleet.controller.statedir import pki
from vpnfleet.controller.statedir.state import StateDir
from vpnfleet.controller.transport.client import AgentClient, AgentUnreachable

HOSTS = ("a1", "a2", "a3", "a4")
pytestmark = pytest.mark.netns


@pytest.fixture
def cert_mesh(tmp_path: Path) -> Iterator[tuple[LabRun, dict[str, Any]]]:
    require_root()
    lab = new_lab(tmp_path, "lab")
    group_vars = lab.inventory / "group_vars" / "all.yaml"
    text = group_vars.read_text()
    assert "\nauth: psk" in text
    group_vars.write_text(text.replace("\nauth: psk", "\nauth: pubkey", 1))
    with removed_after(lab):
        res = lab.up("-o", "json", "--timeout", "90")
        assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
        up: dict[str, Any] = json.loads(res.stdout)
        assert up["converged"] and up["data_plane"], up["status"]
        tunnels = [p for p in up["reachability"] if p["expect"] == "protect"]
        assert len(tunnels) == 12, up["reachability"]
        assert all(p["result"] == "pass" for p in tunnels), tunnels
        yield lab, up


def controller_state(lab: LabRun) -> StateDir:
    return StateDir(lab.lab_dir / "controller")


def agent_files(lab: LabRun, host: str) -> dict[str, bytes]:
    folder = lab.lab_dir / "agents" / host
    return {name: (folder / f"{name}.pem").read_bytes() for name in ("tls", "ike", "ca")}


def issued_by(cert_pem: bytes, ca_pem: bytes) -> bool:
    try:
        x509.load_pem_x509_certificate(cert_pem).verify_directly_issued_by(
            x509.load_pem_x509_certificate(ca_pem)
        )
    except Exception:
        return False
    return True


def get_status_with(lab: LabRun, tls: pki.TlsCredentials) -> dict[str, str]:
    """GetStatus on every agent with these credentials: host -> '' or why it failed."""
    fleet = operations.compile_fleet(lab.inventory, controller_state(lab))

    async def one(host: str) -> str:
        try:
            async with AgentClient(host, fleet.endpoints[host], tls, timeout=5) as client:
                await client.get_status()
        except AgentUnreachable as exc:
            return f"unreachable: {exc.details}"
        return ""

    async def every() -> dict[str, str]:
        return {h: await one(h) for h in fleet.selected}

    return asyncio.run(every())


def journal(lab: LabRun, kind: str) -> dict[str, Any]:
    path = lab.lab_dir / "controller" / "rotation" / f"{kind}.json"
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def rotate_under_pings(lab: LabRun, up: dict[str, Any], kind: str) -> tuple[int, dict[str, Any]]:
    """``rotate KIND`` with a ping every few milliseconds across every tunnel, none of
    which may be lost."""
    streams = pinging(up, FAST_PING_INTERVAL)
    try:
        code, result = run_json(lab, "rotate", kind)
        fresh = wait_fresh_replies(streams, 20, 10)
    finally:
        for s in streams:
            s.stop()
    assert fresh, [s.describe() for s in streams]  # traffic crossed after the rotation
    assert losses(streams) == []
    return code, result


def test_ca_rotation_under_continuous_ping_loses_nothing(
    cert_mesh: tuple[LabRun, dict[str, Any]],
) -> None:
    lab, up = cert_mesh
    state = controller_state(lab)
    old_ca = pki.load_ca(state.root)[2]
    old_controller = pki.ensure_controller_cert(state.root)
    before = {h: agent_files(lab, h) for h in HOSTS}
    started = time.time()
    code, result = rotate_under_pings(lab, up, "ca")
    assert code == 0, result
    assert result["kind"] == "ca" and result["error"] == "" and result["phase"] == "retire"
    assert sorted(h["host"] for h in result["hosts"]) == list(HOSTS)
    assert all(h["outcome"] == "changed" for h in result["hosts"]), result["hosts"]
    saved = journal(lab, "ca")
    assert saved["finished_at"] > 0
    assert all(sorted(saved["done"][p]) == list(HOSTS) for p in ("trust", "reissue", "retire"))

    new_ca = pki.load_ca(state.root)[2]
    assert pki.fingerprint(new_ca) != pki.fingerprint(old_ca)
    assert result["ca"] == pki.fingerprint(new_ca)
    assert pki.next_ca_pem(state.root) is None and pki.previous_ca_pem(state.root) is None
    for host in HOSTS:
        files = agent_files(lab, host)
        assert files["tls"] != before[host]["tls"] and files["ike"] != before[host]["ike"]
        assert issued_by(files["tls"], new_ca) and issued_by(files["ike"], new_ca), host
        assert pki.bundle_fingerprints(files["ca"]) == [pki.fingerprint(new_ca)], host
    # Every tunnel came back with the new IKE certificates, without an auth failure.
    assert_all_up_without_auth_errors(lab, started)

    # Agents present certificates from the new CA: a client trusting only it gets in.
    new_controller = pki.ensure_controller_cert(state.root)
    assert issued_by(new_controller.cert_pem, new_ca)
    only_new = pki.TlsCredentials(new_controller.cert_pem, new_controller.key_pem, new_ca)
    assert get_status_with(lab, only_new) == dict.fromkeys(HOSTS, "")
    # The old CA is trusted no more: the old controller certificate is refused.
    old = pki.TlsCredentials(old_controller.cert_pem, old_controller.key_pem, new_ca)
    refused = get_status_with(lab, old)
    assert all(why.startswith("unreachable") for why in refused.values()), refused

    # The plans in force are the ones the inventory compiles to now (the new CA only).
    code, again = run_json(lab, "apply")
    assert code == 0 and [h["outcome"] for h in again["hosts"]] == ["ok"] * 4, again


def test_cert_rotation_under_continuous_ping_loses_nothing(
    cert_mesh: tuple[LabRun, dict[str, Any]],
) -> None:
    lab, up = cert_mesh
    state = controller_state(lab)
    ca = pki.load_ca(state.root)[2]
    before = {h: agent_files(lab, h) for h in HOSTS}
    started = time.time()
    code, result = rotate_under_pings(lab, up, "certs")
    assert code == 0, result
    assert result["kind"] == "certs" and result["error"] == ""
    assert all(h["outcome"] == "changed" for h in result["hosts"]), result["hosts"]
    assert journal(lab, "certs")["finished_at"] > 0
    for host in HOSTS:
        files = agent_files(lab, host)
        assert files["tls"] != before[host]["tls"] and files["ike"] != before[host]["ike"]
        assert issued_by(files["tls"], ca) and issued_by(files["ike"], ca), host
    assert_all_up_without_auth_errors(lab, started)
    assert pki.load_ca(state.root)[2] == ca  # the fleet CA stays


def test_interrupted_ca_rotation_names_the_agent_and_resumes(
    cert_mesh: tuple[LabRun, dict[str, Any]],
) -> None:
    lab, up = cert_mesh
    started = time.time()
    pid = agent_pid(lab, "a3")
    os.kill(pid, signal.SIGSTOP)  # a3 cannot answer: the trust phase stops at it
    try:
        code, first = run_json(lab, "rotate", "ca", "--timeout", "2")
    finally:
        os.kill(pid, signal.SIGCONT)
    assert code == 2, first
    assert first["error"].startswith("phase trust: a3: "), first
    saved = journal(lab, "ca")
    assert saved["phase"] == "trust" and saved["finished_at"] == 0
    assert "a3" not in saved["done"].get("trust", [])
    streams = pinging(up, FAST_PING_INTERVAL)
    try:
        code, second = run_json(lab, "rotate", "ca")
        wait_fresh_replies(streams, 20, 10)
    finally:
        for s in streams:
            s.stop()
    assert code == 0, second
    assert second["resumed"] and second["error"] == ""
    assert losses(streams) == []
    assert journal(lab, "ca")["finished_at"] > 0
    assert_all_up_without_auth_errors(lab, started)
