"""Revocation in the fleet PKI: the ledger of issued certificates, revoke_host, the CRLs
plans carry (RFC 5280 section 5) and how they follow a CA rotation."""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from vpnfleet.controller.statedir import pki
from vpnfleet.controller.statedir.pki import CertKind, PkiError
from vpnfleet.controller.statedir.state import StateDir


def csr(host: str) -> bytes:
    return pki._make_csr(ec.generate_private_key(ec.SECP256R1()), host)


def sign(
    state: Path, host: str, ca: str = pki.CURRENT
) -> tuple[x509.Certificate, x509.Certificate]:
    tls, ike, _ca = pki.sign_agent_csrs(state, host, csr(host), csr(host), ca=ca)
    return x509.load_pem_x509_certificate(tls), x509.load_pem_x509_certificate(ike)


def serials(pem: bytes) -> set[int]:
    return {r.serial_number for r in x509.load_pem_x509_crl(pem)}


@pytest.fixture
def state(tmp_path: Path) -> Path:
    pki.init_ca(tmp_path)
    return tmp_path


def test_nothing_revoked_means_no_crl(state: Path) -> None:
    sign(state, "a1")
    assert pki.fleet_crls(state) == ()


def test_revoke_host_revokes_both_certificates_once_and_retires_the_name(state: Path) -> None:
    tls, ike = sign(state, "a1")
    other_tls, _ = sign(state, "a2")
    assert {(e.kind, e.serial) for e in pki.issued_certificates(state, "a1")} == {
        (CertKind.TLS, tls.serial_number),
        (CertKind.IKE, ike.serial_number),
    }
    revoked = pki.revoke_host(state, "a1")
    assert {e.serial for e in revoked} == {tls.serial_number, ike.serial_number}
    assert all(e.revoked_at is not None for e in revoked)
    assert pki.revoke_host(state, "a1") == []  # done before: nothing new
    assert "a1" in StateDir(state).retired_hosts()
    assert pki.is_revoked(state, tls) is not None
    assert pki.is_revoked(state, other_tls) is None
    with pytest.raises(
        PkiError, match=r"'a1' was decommissioned at .*: give the machine a new name"
    ):
        sign(state, "a1")


def test_crl_is_signed_by_the_ca_lists_the_serials_and_has_next_update(state: Path) -> None:
    tls, ike = sign(state, "a1")
    pki.revoke_host(state, "a1")
    (pem,) = pki.fleet_crls(state)
    crl = x509.load_pem_x509_crl(pem)
    ca_cert = pki.load_ca(state)[0]
    assert crl.is_signature_valid(ca_cert.public_key())  # type: ignore[arg-type]
    assert crl.issuer == ca_cert.subject
    assert serials(pem) == {tls.serial_number, ike.serial_number}
    assert crl.next_update_utc is not None
    assert crl.next_update_utc - crl.last_update_utc == datetime.timedelta(days=pki.CRL_DAYS)
    assert crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == 1
    assert crl.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier)
    entry = crl.get_revoked_certificate_by_serial_number(tls.serial_number)
    assert entry is not None
    reason = entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
    assert reason is x509.ReasonFlags.cessation_of_operation


def test_crl_is_kept_until_its_list_changes_or_half_its_life_is_gone(state: Path) -> None:
    sign(state, "a1")
    sign(state, "a2")
    pki.revoke_host(state, "a1")
    first = pki.fleet_crls(state)
    assert pki.fleet_crls(state) == first  # plans stay the same from apply to apply
    pki.revoke_host(state, "a2")
    (second,) = pki.fleet_crls(state)
    assert second != first[0] and len(serials(second)) == 4
    number = x509.load_pem_x509_crl(second).extensions.get_extension_for_class(x509.CRLNumber)
    assert number.value.crl_number == 2
    later = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=pki.CRL_DAYS / 2 + 1)
    (renewed,) = pki.fleet_crls(state, now=later)
    crl = x509.load_pem_x509_crl(renewed)
    assert crl.next_update_utc is not None and crl.next_update_utc > later
    assert serials(renewed) == serials(second)


def test_certificates_found_on_the_host_are_revoked_too(state: Path) -> None:
    # Issued before the ledger existed: not in issued.json.
    tls, _ike = sign(state, "a1")
    (Path(state) / "pki" / pki.ISSUED).unlink()
    pem = tls.public_bytes(pki.serialization.Encoding.PEM)
    revoked = pki.revoke_host(state, "a1", found=((CertKind.TLS, pem),))
    assert [e.serial for e in revoked] == [tls.serial_number]


def test_crls_follow_a_ca_rotation(state: Path) -> None:
    old_tls, _ = sign(state, "a1")
    pki.revoke_host(state, "a1")
    pki.init_next_ca(state)
    new_tls, new_ike = sign(state, "a2", ca=pki.NEXT)
    pki.revoke_host(state, "a2")
    current, following = pki.fleet_crls(state)
    assert old_tls.serial_number in serials(current)
    assert serials(following) == {new_tls.serial_number, new_ike.serial_number}
    next_cert = pki.load_ca(state, pki.NEXT)[0]
    assert x509.load_pem_x509_crl(following).is_signature_valid(next_cert.public_key())  # type: ignore[arg-type]
    pki.promote_next_ca(state)
    # The old CA is no plan's anchor any more: only the new CA's CRL goes out, and the
    # host re-issued after the rotation keeps working.
    (after,) = pki.fleet_crls(state)
    assert after == following
    tls, _ = sign(state, "a3")
    assert tls.issuer == next_cert.subject
    assert pki.is_revoked(state, tls) is None


def test_revoking_an_invalid_name_is_refused(state: Path) -> None:
    with pytest.raises(PkiError, match="not a valid host name"):
        pki.revoke_host(state, "../a1")
    assert StateDir(state).retired_hosts() == {}
