"""The controller's certificate carries a role no agent certificate can get
(protos/identity.py): every path that issues the controller's certificate adds it, a
certificate made before it existed is re-issued, and every path that signs an agent's
CSRs refuses the controller's name in any letter case."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from vpnfleet.controller.cli import main
from vpnfleet.controller.statedir import pki
from vpnfleet.controller.statedir.pki import PkiError
from vpnfleet.protos.identity import (
    CONTROLLER_NAME,
    CONTROLLER_ROLE_OID,
    CONTROLLER_ROLE_UUID,
    is_controller_name,
)

ROLE = x509.ObjectIdentifier(CONTROLLER_ROLE_OID)
CONTROLLER_NAMES = ["vpnfleet-controller", "VPNFLEET-CONTROLLER", "Vpnfleet-Controller"]


def usages(cert_pem: bytes) -> list[x509.ObjectIdentifier]:
    cert = x509.load_pem_x509_certificate(cert_pem)
    try:
        return list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    except x509.ExtensionNotFound:
        return []


def csr(host: str) -> bytes:
    return pki._make_csr(ec.generate_private_key(ec.SECP256R1()), host)


def legacy_controller_cert(state: Path, ca: str = pki.CURRENT) -> bytes:
    """A controller certificate as the fleet CA issued it before the role existed."""
    ca_cert, ca_key, _ = pki.load_ca(state, ca)
    key = ec.generate_private_key(ec.SECP256R1())
    cert_pem = pki._issue(
        ca_cert,
        ca_key,
        CONTROLLER_NAME,
        key.public_key(),
        [x509.DNSName(CONTROLLER_NAME)],
        [ExtendedKeyUsageOID.CLIENT_AUTH],
    )
    (state / "pki" / pki.CONTROLLER_KEY).write_bytes(pki._key_pem(key))
    (state / "pki" / pki.CONTROLLER_CERT).write_bytes(cert_pem)
    return cert_pem


@pytest.fixture
def state(tmp_path: Path) -> Path:
    pki.init_ca(tmp_path)
    return tmp_path


def test_role_oid_is_the_uuid_under_the_2_25_arc() -> None:
    # ITU-T X.667: 2.25 followed by the UUID read as one unsigned 128-bit integer.
    assert f"2.25.{uuid.UUID(CONTROLLER_ROLE_UUID).int}" == CONTROLLER_ROLE_OID
    assert all(is_controller_name(n) for n in CONTROLLER_NAMES)
    assert not is_controller_name("vpnfleet-controller2")


def test_ca_init_and_rotation_issue_the_controller_cert_with_the_role(state: Path) -> None:
    result = CliRunner().invoke(main, ["--state", str(state / "fresh"), "ca", "init"])
    assert result.exit_code == 0, result.output
    fresh = (state / "fresh" / "pki" / pki.CONTROLLER_CERT).read_bytes()
    assert usages(fresh) == [ExtendedKeyUsageOID.CLIENT_AUTH, ROLE]

    pki.init_next_ca(state)
    reissued = pki.reissue_controller_cert(state, pki.NEXT)  # rotate ca, phase reissue
    assert usages(reissued.cert_pem) == [ExtendedKeyUsageOID.CLIENT_AUTH, ROLE]


def test_agent_certs_never_carry_the_role(state: Path) -> None:
    tls, ike, _ = pki.sign_agent_csrs(state, "a1", csr("a1"), csr("a1"), "10.0.0.1")
    assert ROLE not in usages(tls) and ROLE not in usages(ike)


def test_controller_cert_without_the_role_is_reissued_by_the_current_ca(state: Path) -> None:
    legacy = legacy_controller_cert(state)
    creds = pki.ensure_controller_cert(state)
    assert creds.cert_pem != legacy
    assert ROLE in usages(creds.cert_pem)
    assert pki.controller_issuer(state) == pki.fingerprint(pki.load_ca(state)[2])
    assert pki.ensure_controller_cert(state) == creds  # kept from then on


def test_controller_cert_without_the_role_stays_with_the_next_ca_mid_rotation(
    state: Path,
) -> None:
    # A rotation had moved the controller to the next CA already: it must stay there, or
    # the rotation would find it on the old CA again.
    pki.init_next_ca(state)
    legacy_controller_cert(state, pki.NEXT)
    creds = pki.ensure_controller_cert(state)
    assert ROLE in usages(creds.cert_pem)
    assert pki.controller_issuer(state) == pki.fingerprint(pki.next_ca_pem(state) or b"")


@pytest.mark.parametrize("name", CONTROLLER_NAMES)
def test_signing_refuses_the_controller_name_for_an_agent(state: Path, name: str) -> None:
    expected = f"{name!r} is the controller's name"
    with pytest.raises(PkiError, match=expected):  # ca sign, rotate certs
        pki.sign_agent_csrs(state, name, csr(name), csr(name))
    pki.init_next_ca(state)
    with pytest.raises(PkiError, match=expected):  # rotate ca, phase reissue
        pki.sign_agent_csrs(state, name, csr(name), csr(name), ca=pki.NEXT)
    with pytest.raises(PkiError, match=expected):  # the lab, hollow agents
        pki.enroll_local(state, state / "agent", name)
    assert not (state / "agent" / "tls.pem").exists()


def test_ca_sign_command_refuses_the_controller_name(state: Path, tmp_path: Path) -> None:
    (tmp_path / "tls.csr").write_bytes(csr(CONTROLLER_NAME))
    (tmp_path / "ike.csr").write_bytes(csr(CONTROLLER_NAME))
    out = tmp_path / "out"
    result = CliRunner().invoke(
        main,
        [
            "--state",
            str(state),
            "ca",
            "sign",
            CONTROLLER_NAME,
            "--tls-csr",
            str(tmp_path / "tls.csr"),
            "--ike-csr",
            str(tmp_path / "ike.csr"),
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 1
    assert "is the controller's name" in result.output
    assert not out.exists()
