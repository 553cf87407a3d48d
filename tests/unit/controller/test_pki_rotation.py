"""The fleet CA across a CA rotation (controller.statedir.pki): the next CA, the trust bundle, the
anchors plans carry, promotion and retirement, the controller's certificate, and signing
CSRs with a chosen CA."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from vpnfleet.controller.statedir import pki
from vpnfleet.controller.statedir.pki import PkiError
from vpnfleet.protos.files import write_atomically


def mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def issuer_of(cert_pem: bytes) -> str:
    return x509.load_pem_x509_certificate(cert_pem).issuer.rfc4514_string()


def csr(host: str) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    return pki._make_csr(key, host)


@pytest.fixture
def state(tmp_path: Path) -> Path:
    pki.init_ca(tmp_path)
    return tmp_path


def test_next_ca_is_new_kept_on_resume_and_private(state: Path) -> None:
    current = pki.fingerprint(pki.load_ca(state)[2])
    assert pki.next_ca_pem(state) is None
    info = pki.init_next_ca(state)
    assert info.fingerprint != current
    assert info.algorithm == "ecdsa-p256"
    assert mode(state / "pki" / pki.CA_NEXT_KEY) == 0o600
    assert pki.init_next_ca(state).fingerprint == info.fingerprint  # a resumed run keeps it
    # Its own name: TLS stacks look issuers up by name.
    assert issuer_of(pki.load_ca(state, pki.NEXT)[2]) != issuer_of(pki.load_ca(state)[2])


def test_next_ca_follows_the_current_algorithm(tmp_path: Path) -> None:
    pki.init_ca(tmp_path, "ed25519")
    assert pki.init_next_ca(tmp_path).algorithm == "ed25519"


def test_bundle_and_anchors_through_the_phases(state: Path) -> None:
    old = pki.load_ca(state)[2]
    assert pki.plan_anchors(state) == (old,)
    assert pki.bundle_fingerprints(pki.trust_bundle(state)) == [pki.fingerprint(old)]

    pki.init_next_ca(state)
    new = pki.next_ca_pem(state)
    assert new is not None
    assert pki.plan_anchors(state) == (old, new)
    assert pki.bundle_fingerprints(pki.trust_bundle(state)) == [
        pki.fingerprint(old),
        pki.fingerprint(new),
    ]

    info = pki.promote_next_ca(state)
    assert info.fingerprint == pki.fingerprint(new)
    assert pki.load_ca(state)[2] == new
    assert pki.previous_ca_pem(state) == old
    assert not (state / "pki" / pki.CA_NEXT_KEY).exists()
    assert pki.plan_anchors(state) == (new,)  # every certificate is from the new CA now
    # The controller still accepts the old CA until the rotation is finished.
    assert pki.bundle_fingerprints(pki.trust_bundle(state)) == [
        pki.fingerprint(new),
        pki.fingerprint(old),
    ]

    pki.drop_previous_ca(state)
    assert pki.bundle_fingerprints(pki.trust_bundle(state)) == [pki.fingerprint(new)]


def test_promotion_is_safe_to_repeat(state: Path) -> None:
    pki.init_next_ca(state)
    new = pki.next_ca_pem(state)
    first = pki.promote_next_ca(state)
    assert pki.promote_next_ca(state) == first  # after it completed
    # A crash after ca.pem was replaced but before ca-next was removed.
    pki.drop_previous_ca(state)
    pki.init_next_ca(state)
    newer = pki.next_ca_pem(state)
    assert newer is not None and newer != new
    write_atomically(state / "pki" / pki.CA_PREVIOUS_CERT, pki.load_ca(state)[2])
    write_atomically(state / "pki" / pki.CA_KEY, (state / "pki" / "ca-next.key").read_bytes())
    write_atomically(state / "pki" / pki.CA_CERT, newer)
    info = pki.promote_next_ca(state)
    assert info.fingerprint == pki.fingerprint(newer)
    assert pki.previous_ca_pem(state) == new  # not overwritten with the new CA itself
    assert pki.next_ca_pem(state) is None


def test_promote_without_next_is_a_clear_error(state: Path) -> None:
    with pytest.raises(PkiError, match=r"no next CA .* to promote"):
        pki.promote_next_ca(state)


def test_load_next_without_rotation_is_a_clear_error(state: Path) -> None:
    with pytest.raises(PkiError, match="no CA rotation is running"):
        pki.load_ca(state, pki.NEXT)
    with pytest.raises(PkiError, match="unknown CA 'old'"):
        pki.load_ca(state, "old")


def test_mismatched_ca_key_is_refused(state: Path) -> None:
    pki.init_next_ca(state)
    (state / "pki" / pki.CA_KEY).write_bytes((state / "pki" / pki.CA_NEXT_KEY).read_bytes())
    with pytest.raises(PkiError, match="does not belong to"):
        pki.load_ca(state)


def test_controller_cert_kept_across_the_rotation(state: Path) -> None:
    old_creds = pki.ensure_controller_cert(state)
    pki.init_next_ca(state)
    during = pki.ensure_controller_cert(state)
    assert during.cert_pem == old_creds.cert_pem  # issued by a CA of the bundle: kept
    assert pki.bundle_fingerprints(during.ca_pem) == pki.bundle_fingerprints(
        pki.trust_bundle(state)
    )
    next_fp = pki.fingerprint(pki.next_ca_pem(state) or b"")
    assert pki.controller_issuer(state) != next_fp
    reissued = pki.reissue_controller_cert(state, pki.NEXT)
    assert pki.controller_issuer(state) == next_fp
    assert pki.ensure_controller_cert(state).cert_pem == reissued.cert_pem
    pki.promote_next_ca(state)
    pki.drop_previous_ca(state)
    assert pki.ensure_controller_cert(state).cert_pem == reissued.cert_pem


def test_controller_cert_from_an_unknown_ca_is_reissued(state: Path) -> None:
    pki.init_next_ca(state)
    pki.reissue_controller_cert(state, pki.NEXT)
    (state / "pki" / pki.CA_NEXT_CERT).unlink()  # a rotation abandoned by hand
    (state / "pki" / pki.CA_NEXT_KEY).unlink()
    creds = pki.ensure_controller_cert(state)
    assert pki.controller_issuer(state) == pki.fingerprint(pki.load_ca(state)[2])
    assert issuer_of(creds.cert_pem) == issuer_of(pki.load_ca(state)[2])


def test_controller_key_not_matching_its_cert_is_reissued(state: Path) -> None:
    one = pki.ensure_controller_cert(state)
    other = ec.generate_private_key(ec.SECP256R1())
    (state / "pki" / pki.CONTROLLER_KEY).write_bytes(pki._key_pem(other))
    two = pki.ensure_controller_cert(state)
    assert two.cert_pem != one.cert_pem


def test_sign_with_the_next_ca(state: Path) -> None:
    pki.init_next_ca(state)
    tls, ike, ca = pki.sign_agent_csrs(state, "a1", csr("a1"), csr("a1"), "10.0.0.1", ca=pki.NEXT)
    assert ca == pki.next_ca_pem(state)
    next_cert = pki.load_ca(state, pki.NEXT)[0]
    for pem in (tls, ike):
        x509.load_pem_x509_certificate(pem).verify_directly_issued_by(next_cert)
    tls_cur, _ike, ca_cur = pki.sign_agent_csrs(state, "a1", csr("a1"), csr("a1"))
    assert ca_cur == pki.load_ca(state)[2]
    assert issuer_of(tls_cur) != issuer_of(tls)


def test_sign_with_next_keeps_the_csr_checks(state: Path) -> None:
    pki.init_next_ca(state)
    with pytest.raises(PkiError, match="names a2, not 'a1'"):
        pki.sign_agent_csrs(state, "a1", csr("a2"), csr("a1"), ca=pki.NEXT)
    with pytest.raises(PkiError, match="not a PEM certificate request"):
        pki.sign_agent_csrs(state, "a1", b"junk", csr("a1"), ca=pki.NEXT)


def test_bad_bundle_is_named(state: Path) -> None:
    with pytest.raises(PkiError, match="not a PEM certificate bundle"):
        pki.bundle_fingerprints(b"-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n")


def test_init_ca_force_forgets_a_running_rotation(state: Path) -> None:
    pki.init_next_ca(state)
    pki.promote_next_ca(state)
    pki.init_next_ca(state)
    pki.init_ca(state, force=True)
    assert pki.next_ca_pem(state) is None and pki.previous_ca_pem(state) is None
