"""`vpnfleet inventory`, `vpnfleet vault` and `vpnfleet plan --emit` as an operator runs them."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

REPO = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "vpnfleet.controller.cli"]
AGENT = [sys.executable, "-m", "vpnfleet.agent.cli"]


def run(*args: str, state: Path, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, "--state", str(state), *args],
        capture_output=True,
        text=True,
        timeout=60,
        input=stdin,
    )


def test_graph_like_ansible_inventory(tmp_path: Path) -> None:
    res = run("inventory", "-i", str(REPO / "inventories/hub-spoke"), "--graph", state=tmp_path)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0] == "@all:"
    assert "  |  |--@hubs:" in lines
    assert "  |  |  |--hub1" in lines


def _ansible_inventory(*args: str) -> str:
    """ansible-inventory's standard output (the one installed beside this Python)."""
    res = subprocess.run(
        [str(Path(sys.executable).with_name("ansible-inventory")), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "ANSIBLE_NOCOLOR": "1"},
    )
    assert res.returncode == 0, res.stderr
    return res.stdout


@pytest.mark.parametrize("name", ["lab", "hub-spoke", "external-peer", "nat"])
def test_inventory_prints_what_ansible_inventory_prints(name: str, tmp_path: Path) -> None:
    # Byte for byte: --list, --list with a limit, --graph and every host's --host.
    hosts_file = str(REPO / "inventories" / name / "hosts.yaml")
    directory = str(REPO / "inventories" / name)
    views = [["--list"], ["--graph"], ["--list", "--limit", "all:!ungrouped"]]
    listed = json.loads(_ansible_inventory("-i", hosts_file, "--list"))
    hosts = list(listed["_meta"]["hostvars"])
    views += [["--host", host] for host in hosts]
    views.append(["--host", hosts[0], "--limit", hosts[-1]])  # --host ignores --limit
    for view in views:
        ours = run("inventory", "-i", directory, *view, state=tmp_path)
        assert ours.returncode == 0, ours.stderr
        assert ours.stdout == _ansible_inventory("-i", hosts_file, *view), view


def test_host_shows_resolved_vars_and_limit(tmp_path: Path) -> None:
    res = run("inventory", "-i", str(REPO / "inventories/lab"), "--host", "a2", state=tmp_path)
    assert res.returncode == 0, res.stderr
    got = json.loads(res.stdout)
    assert got["address"] == "10.99.0.12"
    assert got["subnets"] == ["10.1.2.0/24"]
    res = run("inventory", "-i", str(REPO / "inventories/lab"), "--host", "a9", state=tmp_path)
    assert res.returncode == 1
    assert "no host named 'a9'" in res.stderr


def test_limit_unknown_name_is_an_error(tmp_path: Path) -> None:
    res = run(
        "inventory",
        "-i",
        str(REPO / "inventories/lab"),
        "--limit",
        "mehs",
        "--list",
        state=tmp_path,
    )
    assert res.returncode == 1
    assert "did you mean 'mesh'" in res.stderr


def test_vault_round_trip_and_wrong_password(tmp_path: Path) -> None:
    pw = tmp_path / "pw"
    pw.write_text("correct horse\n")
    res = run(
        "vault",
        "encrypt-string",
        "--vault-password-file",
        str(pw),
        "--name",
        "psk",
        "-",
        state=tmp_path,
        stdin="s3cret value\n",
    )
    assert res.returncode == 0, res.stderr
    assert "s3cret" not in res.stdout
    doc = tmp_path / "secret.yaml"
    doc.write_text(res.stdout)
    view = run("vault", "view", "--vault-password-file", str(pw), str(doc), state=tmp_path)
    assert view.returncode == 0, view.stderr
    assert view.stdout.strip().endswith("psk: s3cret value")
    wrong = tmp_path / "wrong"
    wrong.write_text("battery staple\n")
    bad = run("vault", "view", "--vault-password-file", str(wrong), str(doc), state=tmp_path)
    assert bad.returncode == 1
    assert "cannot decrypt vault value at" in bad.stderr and "secret.yaml:1" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_emit_writes_private_plans_an_agent_can_run(tmp_path: Path) -> None:
    out = tmp_path / "plans"
    res = run("plan", "-i", str(REPO / "inventories/lab"), "--emit", str(out), state=tmp_path)
    assert res.returncode == 0, res.stderr
    files = sorted(p.name for p in out.iterdir())
    assert files == ["a1.plan", "a2.plan", "a3.plan", "a4.plan"]
    mode = stat.S_IMODE(os.stat(out / "a1.plan").st_mode)
    assert mode == 0o600
    # The master secret was made on first use, private.
    assert stat.S_IMODE(os.stat(tmp_path / "secrets" / "psk-master").st_mode) == 0o600
    ran = subprocess.run(
        [*AGENT, "run", "--plan", str(out / "a1.plan")], capture_output=True, text=True, timeout=60
    )
    assert ran.returncode == 0, ran.stderr
    assert "plan for a1" in ran.stdout
    # Same inventory, same plans, byte for byte.
    again = tmp_path / "again"
    assert (
        run(
            "plan", "-i", str(REPO / "inventories/lab"), "--emit", str(again), state=tmp_path
        ).returncode
        == 0
    )
    assert (out / "a3.plan").read_bytes() == (again / "a3.plan").read_bytes()
    # A truncated plan file is refused by the agent with a clear message.
    cut = tmp_path / "cut.plan"
    cut.write_bytes((out / "a1.plan").read_bytes()[:-7])
    bad = subprocess.run(
        [*AGENT, "run", "--plan", str(cut)], capture_output=True, text=True, timeout=60
    )
    assert bad.returncode == 2
    assert "Traceback" not in bad.stderr


def test_plan_without_ca_shows_plans_and_says_why_no_agent_was_asked(tmp_path: Path) -> None:
    res = run("plan", "-i", str(REPO / "inventories/hub-spoke"), "-o", "json", state=tmp_path)
    assert res.returncode == 0, res.stderr
    got = json.loads(res.stdout)
    assert got["agents_contacted"] is False
    hub1 = next(p for p in got["plans"] if p["host"] == "hub1")
    assert {p["name"] for p in hub1["peers"]} >= {"hub2", "spoke1"}
    # Credentials appear by reference only.
    for peer in hub1["peers"]:
        low, high = sorted(["hub1", peer["name"]])
        assert peer["auth"] == f"psk:{low}+{high}/epoch-1"


def test_plan_says_which_end_starts_the_tunnel_to_an_external_peer(tmp_path: Path) -> None:
    inv = tmp_path / "inv"
    shutil.copytree(REPO / "inventories/external-peer", inv)
    (inv / "host_vars" / "gw1.yaml").write_text(
        (inv / "host_vars" / "gw1.yaml").read_text() + "start_action: none\n"
    )
    res = run("plan", "-i", str(inv), state=tmp_path)
    assert res.returncode == 0, res.stderr
    lines = [line.strip() for line in res.stdout.splitlines()]
    # gw1 only answers; gw2 starts its own tunnel.
    assert (
        "peer partner: 10.99.2.100, responder, external, psk:partner/static, tunnel, start=none"
        in lines
    )
    assert (
        "peer partner: 10.99.2.100, initiator, external, psk:partner/static, tunnel, start=start"
        in lines
    )
    topology = inv / "topology.yaml"
    topology.write_text(topology.read_text().replace("address: 10.99.2.100", "address: any"))
    res = run("plan", "-i", str(inv), "-o", "json", state=tmp_path)
    assert res.returncode == 0, res.stderr
    for plan in json.loads(res.stdout)["plans"]:
        (partner,) = (p for p in plan["peers"] if p["name"] == "partner")
        assert (partner["address"], partner["dynamic_address"]) == ("any", True)
        assert (partner["initiator"], partner["start"]) == (False, "none")


def test_documented_bootstrap_end_to_end(tmp_path: Path) -> None:
    """README's trust model, step by step: keys made on the host, CSRs signed by the
    controller, certificates installed, then the controller applies a plan."""
    import contextlib

    from tests.support.agent_harness import running_agent

    state = tmp_path / "controller"
    assert run("ca", "init", state=state).returncode == 0
    host_dir = tmp_path / "host-a1"
    init = subprocess.run(
        [*AGENT, "init", "--name", "a1", "--state-dir", str(host_dir)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert init.returncode == 0, init.stderr
    keys_before = {p.name: p.read_bytes() for p in host_dir.glob("*.key")}
    assert keys_before and all(
        stat.S_IMODE(os.stat(host_dir / k).st_mode) == 0o600 for k in keys_before
    )
    certs = tmp_path / "certs"
    signed = run(
        "ca",
        "sign",
        "a1",
        "--tls-csr",
        str(host_dir / "tls.csr"),
        "--ike-csr",
        str(host_dir / "ike.csr"),
        "--out",
        str(certs),
        state=state,
    )
    assert signed.returncode == 0, signed.stderr
    # A CSR for another name is refused.
    wrong = run(
        "ca",
        "sign",
        "b2",
        "--tls-csr",
        str(host_dir / "tls.csr"),
        "--ike-csr",
        str(host_dir / "ike.csr"),
        "--out",
        str(tmp_path / "x"),
        state=state,
    )
    assert wrong.returncode == 1 and "b2" in wrong.stderr
    inst = subprocess.run(
        [
            *AGENT,
            "install-certs",
            "--state-dir",
            str(host_dir),
            "--tls-cert",
            str(certs / "tls.pem"),
            "--ike-cert",
            str(certs / "ike.pem"),
            "--ca",
            str(certs / "ca.pem"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert inst.returncode == 0, inst.stderr
    # The private keys never changed hands: still the ones made on the host.
    assert {p.name: p.read_bytes() for p in host_dir.glob("*.key")} == keys_before

    inv = tmp_path / "inv"
    inv.mkdir()
    with contextlib.ExitStack() as stack:
        agent = stack.enter_context(running_agent("a1", host_dir))
        (inv / "hosts.yaml").write_text(
            "all:\n  hosts:\n"
            "    a1: {address: 10.5.0.1, subnets: [10.6.1.0/24], "
            f"agent_address: '{agent.target}'}}\n"
            "    a2: {address: 10.5.0.2, subnets: [10.6.2.0/24], agent_address: '127.0.0.1:9'}\n"
        )
        (inv / "topology.yaml").write_text("meshes: [{name: m, group: all}]\n")
        res = run("apply", "-i", str(inv), "--limit", "a1", state=state)
        assert res.returncode == 0, res.stdout + res.stderr
        assert "a1 : ok=1   changed=1" in res.stdout


@pytest.mark.parametrize(
    ("algorithm", "key_type"),
    [("ecdsa-p256", ec.EllipticCurvePrivateKey), ("ed25519", ed25519.Ed25519PrivateKey)],
)
def test_ca_init_with_each_algorithm_keeps_private_keys_0600(
    tmp_path: Path, algorithm: str, key_type: type
) -> None:
    state = tmp_path / "controller"
    res = run("ca", "init", "--algorithm", algorithm, state=state)
    assert res.returncode == 0, res.stderr
    pki_dir = state / "pki"
    ca_key = serialization.load_pem_private_key((pki_dir / "ca.key").read_bytes(), None)
    assert isinstance(ca_key, key_type)
    if isinstance(ca_key, ec.EllipticCurvePrivateKey):
        assert isinstance(ca_key.curve, ec.SECP256R1)
    ca_cert = x509.load_pem_x509_certificate((pki_dir / "ca.pem").read_bytes())
    assert ca_cert.public_key() == ca_key.public_key()
    assert ca_cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    # The controller's client certificate is made with the CA and issued by it.
    controller = x509.load_pem_x509_certificate((pki_dir / "controller.pem").read_bytes())
    assert controller.issuer == ca_cert.subject
    for key in ("ca.key", "controller.key"):
        assert stat.S_IMODE(os.stat(pki_dir / key).st_mode) == 0o600, key
    # A second init would orphan every agent certificate: refused without --force.
    again = run("ca", "init", "--algorithm", algorithm, state=state)
    assert again.returncode != 0 and "already exists" in again.stderr


def test_emit_refuses_a_directory_others_can_write(tmp_path: Path) -> None:
    out = tmp_path / "shared"
    out.mkdir()
    out.chmod(0o777)
    res = run("plan", "-i", str(REPO / "inventories/lab"), "--emit", str(out), state=tmp_path)
    assert res.returncode == 1
    assert f"refusing to write a private file in {out}: it has mode 0777" in res.stderr
    assert f"chmod 700 {out}" in res.stderr
    assert "Traceback" not in res.stderr
    assert list(out.iterdir()) == []


def test_vault_rekey_brings_version_1_values_to_the_current_format(tmp_path: Path) -> None:
    pw = tmp_path / "pw"
    pw.write_text("correct horse battery staple\n")
    doc = tmp_path / "secret.yaml"
    doc.write_text(  # "psk made by the version-1 vault", sealed by the version 1 code
        "psk: !vault |\n"
        "  VlBORkxFRVQtVkFVTFQxMGQ2g7rqD8JzEjk8cy4ggnGFo6ZIa41l3D1IquXLSUiL83vpvQuP2N7/\n"
        "  shbgNDJEE2mg3yEmqux7XQAmNuzQZ8fNU103Z6ptN6jT0RaLj8OlIysJlFcx\n"
    )
    before = run("vault", "view", "--vault-password-file", str(pw), str(doc), state=tmp_path)
    assert before.returncode == 0, before.stderr
    assert before.stdout.strip().endswith("psk: psk made by the version-1 vault")
    assert "1 value is in vault format 1" in before.stderr
    assert f"`vpnfleet vault rekey {doc}` re-seals" in before.stderr
    res = run("vault", "rekey", "--vault-password-file", str(pw), str(doc), state=tmp_path)
    assert res.returncode == 0, res.stderr
    assert f"{doc}: 1 value re-sealed" in res.stdout
    assert doc.read_text().startswith("psk: !vault |\n  VlBORkxFRVQtVkFVTFQy")  # VAULT2
    view = run("vault", "view", "--vault-password-file", str(pw), str(doc), state=tmp_path)
    assert view.returncode == 0, view.stderr
    assert view.stdout.strip().endswith("psk: psk made by the version-1 vault")
    assert "vault format 1" not in view.stderr
