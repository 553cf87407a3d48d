"""Fleet CA, CSR signing and agent enrolment, including the agent CLI's init and
install-certs, and an Ed25519 fleet CA used by real mTLS."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from tests.support.agent_harness import make_fleet, running_agent
from vpnfleet.agent.cli import main as agent_cli
from vpnfleet.agent.enroll import EnrollError, init_agent, install_certs, make_csr, new_key
from vpnfleet.controller.statedir.pki import (
    PkiError,
    ensure_controller_cert,
    fingerprint,
    init_ca,
    sign_agent_csrs,
)
from vpnfleet.controller.transport.client import AgentClient
from vpnfleet.protos.identity import CONTROLLER_ROLE_OID


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_init_ca_refuses_overwrite_and_force_replaces(tmp_path: Path) -> None:
    first = init_ca(tmp_path)
    assert mode(tmp_path / "pki" / "ca.key") == 0o600
    with pytest.raises(PkiError, match="already exists"):
        init_ca(tmp_path)
    second = init_ca(tmp_path, force=True)
    assert second.fingerprint != first.fingerprint
    assert second.fingerprint == fingerprint((tmp_path / "pki" / "ca.pem").read_bytes())


def test_controller_cert_reissued_after_new_ca(tmp_path: Path) -> None:
    init_ca(tmp_path)
    one = ensure_controller_cert(tmp_path)
    assert ensure_controller_cert(tmp_path) == one  # reused while the CA stays
    init_ca(tmp_path, force=True)
    two = ensure_controller_cert(tmp_path)
    assert two.cert_pem != one.cert_pem
    cert = x509.load_pem_x509_certificate(two.cert_pem)
    assert cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value == (
        x509.ExtendedKeyUsage(
            [ExtendedKeyUsageOID.CLIENT_AUTH, x509.ObjectIdentifier(CONTROLLER_ROLE_OID)]
        )
    )
    assert mode(tmp_path / "pki" / "controller.key") == 0o600


def test_sign_issues_tls_and_ike_certs(tmp_path: Path) -> None:
    init_ca(tmp_path / "ctl")
    files = init_agent(tmp_path / "a1", "a1")
    assert mode(files.tls_key) == 0o600 and mode(files.ike_key) == 0o600
    tls_pem, ike_pem, ca_pem = sign_agent_csrs(
        tmp_path / "ctl", "a1", files.tls_csr.read_bytes(), files.ike_csr.read_bytes(), "10.0.0.1"
    )
    tls = x509.load_pem_x509_certificate(tls_pem)
    ike = x509.load_pem_x509_certificate(ike_pem)
    ca = x509.load_pem_x509_certificate(ca_pem)
    tls.verify_directly_issued_by(ca)
    ike.verify_directly_issued_by(ca)
    tls_san = tls.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert tls_san.get_values_for_type(x509.DNSName) == ["a1"]
    assert list(tls.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.SERVER_AUTH,
        ExtendedKeyUsageOID.CLIENT_AUTH,
    ]
    ike_san = ike.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert ike_san.get_values_for_type(x509.DNSName) == ["a1"]
    assert [str(a) for a in ike_san.get_values_for_type(x509.IPAddress)] == ["10.0.0.1"]
    assert ike.extensions.get_extension_for_class(x509.KeyUsage).value.digital_signature
    install_certs(tmp_path / "a1", tls_pem, ike_pem, ca_pem)
    assert (tmp_path / "a1" / "ike.pem").read_bytes() == ike_pem


def test_sign_refusals(tmp_path: Path) -> None:
    init_ca(tmp_path / "ctl")
    a1 = init_agent(tmp_path / "a1", "a1")
    b1 = init_agent(tmp_path / "b1", "b1")
    tls, ike = a1.tls_csr.read_bytes(), a1.ike_csr.read_bytes()
    with pytest.raises(PkiError, match="names b1, not 'a1'"):
        sign_agent_csrs(tmp_path / "ctl", "a1", b1.tls_csr.read_bytes(), ike)
    with pytest.raises(PkiError, match="same key"):
        sign_agent_csrs(tmp_path / "ctl", "a1", tls, tls)
    with pytest.raises(PkiError, match="not an IP address"):
        sign_agent_csrs(tmp_path / "ctl", "a1", tls, ike, "10.0.0.999")
    with pytest.raises(PkiError, match="not a PEM certificate request"):
        sign_agent_csrs(tmp_path / "ctl", "a1", b"junk", ike)
    with pytest.raises(PkiError, match="not a valid host name"):
        sign_agent_csrs(tmp_path / "ctl", "a 1", tls, ike)
    with pytest.raises(PkiError, match="no fleet CA"):
        sign_agent_csrs(tmp_path / "nowhere", "a1", tls, ike)


def test_sign_refuses_csr_with_bad_signature(tmp_path: Path) -> None:
    init_ca(tmp_path / "ctl")
    good = x509.load_pem_x509_csr(make_csr(new_key("ecdsa-p256"), "a1"))
    from cryptography.hazmat.primitives.serialization import Encoding

    der = bytearray(good.public_bytes(Encoding.DER))
    der[-3] ^= 0x01  # flip a bit inside the signature
    import base64

    pem = (
        b"-----BEGIN CERTIFICATE REQUEST-----\n"
        + base64.encodebytes(bytes(der))
        + b"-----END CERTIFICATE REQUEST-----\n"
    )
    ike = make_csr(new_key("ed25519"), "a1")
    with pytest.raises(PkiError, match="invalid signature"):
        sign_agent_csrs(tmp_path / "ctl", "a1", pem, ike)


def test_install_certs_refuses_cert_for_another_key(tmp_path: Path) -> None:
    init_ca(tmp_path / "ctl")
    a1 = init_agent(tmp_path / "a1", "a1")
    tls_pem, ike_pem, ca_pem = sign_agent_csrs(
        tmp_path / "ctl", "a1", a1.tls_csr.read_bytes(), a1.ike_csr.read_bytes()
    )
    with pytest.raises(EnrollError, match="not for the key"):
        install_certs(tmp_path / "a1", ike_pem, tls_pem, ca_pem)
    other_ca = init_ca(tmp_path / "other")
    with pytest.raises(EnrollError, match="not issued by the given CA"):
        install_certs(tmp_path / "a1", tls_pem, ike_pem, other_ca.cert_path.read_bytes())
    assert not (tmp_path / "a1" / "tls.pem").exists()


def test_agent_cli_init_and_install_certs(tmp_path: Path) -> None:
    runner = CliRunner()
    state = tmp_path / "a1"
    result = runner.invoke(
        agent_cli, ["init", "--name", "a1", "--state-dir", str(state), "--ike-key-type", "ed25519"]
    )
    assert result.exit_code == 0, result.output
    assert "vpnfleet ca sign a1" in result.output
    again = runner.invoke(agent_cli, ["init", "--name", "a1", "--state-dir", str(state)])
    assert again.exit_code == 1 and "already holds agent keys" in again.output
    init_ca(tmp_path / "ctl")
    tls_pem, ike_pem, ca_pem = sign_agent_csrs(
        tmp_path / "ctl", "a1", (state / "tls.csr").read_bytes(), (state / "ike.csr").read_bytes()
    )
    out = tmp_path / "signed"
    out.mkdir()
    for name, data in (("tls.pem", tls_pem), ("ike.pem", ike_pem), ("ca.pem", ca_pem)):
        (out / name).write_bytes(data)
    result = runner.invoke(
        agent_cli,
        [
            *("install-certs", "--state-dir", str(state), "--tls-cert", str(out / "tls.pem")),
            *("--ike-cert", str(out / "ike.pem"), "--ca", str(out / "ca.pem")),
        ],
    )
    assert result.exit_code == 0, result.output
    assert (state / "tls.pem").read_bytes() == tls_pem


@pytest.mark.parametrize("algorithm", ["ecdsa-p256", "ed25519"])
async def test_mtls_works_with_each_ca_algorithm(tmp_path: Path, algorithm: str) -> None:
    fleet = make_fleet(tmp_path, algorithm)
    with running_agent("a1", fleet.enroll("a1")) as agent:
        async with AgentClient("a1", agent.target, fleet.controller_tls(), timeout=10) as c:
            assert (await c.get_status()).host == "a1"


def test_agent_cli_init_refuses_a_state_directory_others_can_write(tmp_path: Path) -> None:
    state = tmp_path / "shared"
    state.mkdir()
    state.chmod(0o777)
    result = CliRunner().invoke(agent_cli, ["init", "--name", "a1", "--state-dir", str(state)])
    assert result.exit_code == 1
    assert f"cannot write keys in {state}: refusing to write a private file in {state}" in (
        result.output
    )
    assert "it has mode 0777 (writable by group and others)" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert list(state.iterdir()) == []


def test_ca_init_refuses_a_state_directory_others_can_write(tmp_path: Path) -> None:
    from vpnfleet.controller.cli import main

    state = tmp_path / "shared"
    state.mkdir()
    state.chmod(0o1777)
    result = CliRunner().invoke(main, ["--state", str(state), "ca", "init"])
    assert result.exit_code == 1
    assert f"refusing to write a private file in {state}: it has mode 1777" in result.output
    assert list(state.iterdir()) == []


@pytest.mark.parametrize("algorithm", ["ecdsa-p256", "ed25519"])
def test_ca_init_and_show_say_what_was_made(tmp_path: Path, algorithm: str) -> None:
    from vpnfleet.controller.cli import main

    state = tmp_path / "state"
    made = CliRunner().invoke(main, ["--state", str(state), "ca", "init", "--algorithm", algorithm])
    assert made.exit_code == 0, made.output
    pki = state / "pki"
    ca_pem = (pki / "ca.pem").read_bytes()
    fp = fingerprint(ca_pem)
    assert "CaInfo" not in made.output and "PosixPath" not in made.output, made.output
    assert made.output.splitlines() == [
        f"fleet CA created ({algorithm})",
        f"  certificate: {pki / 'ca.pem'}",
        f"  key:         {pki / 'ca.key'} (0600)",
        f"  fingerprint (sha256): {fp}",
        "controller certificate (controller role), issued by it",
        f"  certificate: {pki / 'controller.pem'}",
        f"  key:         {pki / 'controller.key'} (0600)",
    ]
    assert mode(pki / "ca.key") == mode(pki / "controller.key") == 0o600

    json_state = str(tmp_path / "json")
    again = CliRunner().invoke(
        main, ["--state", json_state, "ca", "init", "--algorithm", algorithm, "-o", "json"]
    )
    assert again.exit_code == 0, again.output
    doc = json.loads(again.output)
    other = tmp_path / "json" / "pki"
    assert doc == {
        "ca": {
            "cert": str(other / "ca.pem"),
            "key": str(other / "ca.key"),
            "algorithm": algorithm,
            "fingerprint_sha256": fingerprint((other / "ca.pem").read_bytes()),
        },
        "controller": {"cert": str(other / "controller.pem"), "key": str(other / "controller.key")},
    }

    shown = CliRunner().invoke(main, ["--state", str(state), "ca", "show", "-o", "json"])
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.output) == {
        "cert": str(pki / "ca.pem"),
        "key": str(pki / "ca.key"),
        "algorithm": algorithm,
        "fingerprint_sha256": fp,
        "subject": "CN=vpnfleet fleet CA,O=vpnfleet",
        "valid_until": x509.load_pem_x509_certificate(ca_pem).not_valid_after_utc.strftime(
            "%Y-%m-%d"
        ),
    }
    text = CliRunner().invoke(main, ["--state", str(state), "ca", "show"])
    assert f"algorithm: {algorithm}\nfingerprint (sha256): {fp}\n" in text.output
