"""Main and Aggressive mode with RSA and ECDSA signatures and X.509 certificates (RFC 2409
section 5.1, RFC 4754 section 8) between two IkeV1Sa on fake time, and our ECDSA SIG
convention checked against charon 5.9.8's logged message 5."""

from __future__ import annotations

from dataclasses import replace

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from tests.support.certs import CA, dns, make_ca, make_leaf
from tests.support.ike_v1_peers import Peers, left_right
from tests.unit.ike_v1.test_v1_keys import VECTORS, _cipher, _open
from vpnfleet.agent.ike.errors import LocalError
from vpnfleet.agent.ike.events import (
    ChildSaEstablished,
    ChildSaFailed,
    IkeSaEstablished,
    IkeSaFailed,
)
from vpnfleet.agent.ike.signatures import CertificateAuth
from vpnfleet.agent.ike.v1 import auth
from vpnfleet.agent.ike.v1.config import ExchangeMode, IkeV1Config
from vpnfleet.agent.ike.v1.constants import AuthMethod, ExchangeType, NotifyType, PayloadType
from vpnfleet.agent.ike.v1.payloads import (
    CertPayload,
    CertReqPayload,
    SigPayload,
    parse_message,
)
from vpnfleet.agent.ike.v1.sa import V1State


def _creds(host: str, curve: ec.EllipticCurve, ca: object = CA) -> CertificateAuth:
    key = ec.generate_private_key(curve)
    cert = make_leaf(ca, host, key, dns(host))  # type: ignore[arg-type]
    return CertificateAuth(cert, key, (CA[0],))


P256 = ec.SECP256R1()


def _signed(curve: ec.EllipticCurve = P256) -> tuple[IkeV1Config, IkeV1Config]:
    left, right = left_right()
    return (
        replace(left, psk=b"", certificates=_creds("left.example", curve)),
        replace(right, psk=b"", certificates=_creds("right.example", curve)),
    )


def _until_quiet(peers: Peers, seconds: float = 120.0) -> None:
    end = peers.now + seconds
    while peers.now < end:
        peers.advance(1.0)
        peers.run()


@pytest.mark.parametrize(
    ("curve", "method"),
    [(ec.SECP256R1(), AuthMethod.ECDSA_256), (ec.SECP384R1(), AuthMethod.ECDSA_384)],
)
def test_ecdsa_main_mode_establishes(curve: ec.EllipticCurve, method: AuthMethod) -> None:
    left, right = _signed(curve)
    assert left.auth is method
    peers = Peers(left, right)
    peers.start()
    peers.run()
    assert peers.left.sa.state is peers.right.sa.state is V1State.ESTABLISHED
    assert peers.left.of(IkeSaEstablished)[0].remote_id == "right.example"
    left_child = peers.left.of(ChildSaEstablished)[0]
    right_child = peers.right.of(ChildSaEstablished)[0]
    assert left_child.encr_key_out == right_child.encr_key_in
    assert peers.left.sa.dropped == peers.right.sa.dropped == 0


def _stranger(config: IkeV1Config, host: str) -> IkeV1Config:
    """``config`` with a certificate for ``host`` that another CA issued."""
    stranger = make_ca("Stranger CA")
    key = ec.generate_private_key(ec.SECP256R1())
    cert = make_leaf(stranger, host, key, dns(host))
    return replace(config, certificates=CertificateAuth(cert, key, (CA[0],)))


def test_untrusted_certificate_fails_authentication() -> None:
    left, right = _signed()
    left = _stranger(left, "left.example")
    peers = Peers(left, replace(right, half_open_timeout=20.0))
    peers.start()
    peers.run()
    _until_quiet(peers)
    (failed,) = peers.right.of(IkeSaFailed)
    assert failed.notify == NotifyType.AUTHENTICATION_FAILED
    assert "is not trusted" in failed.reason
    assert peers.left.of(IkeSaFailed)


def _payloads(data: bytes) -> list[object]:
    return parse_message(data)[1]


def test_ecdsa_aggressive_mode_establishes_with_certreq() -> None:
    """RFC 2409 section 5.1 in Aggressive mode: SA KE Ni IDii CERTREQ / SA KE Nr IDir
    CERT SIG_R CERTREQ / CERT SIG_I (encrypted); CERTREQ names our CA by its subject
    DN (RFC 2408 section 3.10)."""
    left, right = _signed()
    left, right = (replace(c, phase1_mode=ExchangeMode.AGGRESSIVE) for c in (left, right))
    peers = Peers(left, right)
    peers.start()
    peers.run()
    assert peers.left.sa.state is peers.right.sa.state is V1State.ESTABLISHED
    first, second, third = (d for _, d in peers.sent[:3])
    assert all(d[18] == ExchangeType.AGGRESSIVE for d in (first, second, third))
    ca_dn = CA[0].subject.public_bytes()
    (request,) = [p for p in _payloads(first) if isinstance(p, CertReqPayload)]
    assert request.authority == ca_dn
    reply = _payloads(second)
    assert [type(p) for p in reply if isinstance(p, CertPayload | SigPayload)] == [
        CertPayload,
        SigPayload,
    ]
    assert any(isinstance(p, CertReqPayload) and p.authority == ca_dn for p in reply)
    assert third[19] & 1  # message 3 (CERT SIG_I) is encrypted
    assert peers.left.of(IkeSaEstablished)[0].remote_id == "right.example"
    assert peers.right.of(IkeSaEstablished)[0].remote_id == "left.example"
    assert peers.left.of(ChildSaEstablished)[0].encr_key_out == (
        peers.right.of(ChildSaEstablished)[0].encr_key_in
    )
    assert peers.left.sa.dropped == peers.right.sa.dropped == 0


def test_aggressive_initiator_from_another_ca_fails_at_the_responder() -> None:
    left, right = _signed()
    left, right = (replace(c, phase1_mode=ExchangeMode.AGGRESSIVE) for c in (left, right))
    left = _stranger(left, "left.example")
    peers = Peers(left, replace(right, half_open_timeout=20.0))
    peers.start()
    peers.run()
    _until_quiet(peers)
    (failed,) = peers.right.of(IkeSaFailed)
    assert failed.notify == NotifyType.AUTHENTICATION_FAILED
    assert failed.reason.startswith("AUTHENTICATION_FAILED: Aggressive mode message 3: ")
    assert "certificate CN=left.example,O=vpnfleet test is not trusted" in failed.reason
    # The initiator is up after message 2 (RFC 2409 section 5.4); its Quick mode
    # goes unanswered.
    assert peers.left.of(ChildSaFailed)


def test_aggressive_responder_from_another_ca_fails_at_the_initiator() -> None:
    left, right = _signed()
    left, right = (replace(c, phase1_mode=ExchangeMode.AGGRESSIVE) for c in (left, right))
    right = _stranger(right, "right.example")
    peers = Peers(left, replace(right, half_open_timeout=20.0))
    peers.start()
    peers.run()
    assert peers.left.sa.dropped >= 1
    assert "is not trusted" in (peers.left.sa.last_drop or "")
    _until_quiet(peers)
    (failed,) = peers.left.of(IkeSaFailed)
    assert failed.notify == NotifyType.AUTHENTICATION_FAILED
    assert failed.reason.startswith("AUTHENTICATION_FAILED: Aggressive mode message 2: ")
    assert "certificate CN=right.example,O=vpnfleet test is not trusted" in failed.reason
    assert peers.right.of(IkeSaFailed)
    assert not peers.left.of(IkeSaEstablished)


def test_identity_must_be_in_the_certificate() -> None:
    left, right = _signed()
    key = ec.generate_private_key(ec.SECP256R1())
    cert = make_leaf(CA, "other", key, dns("other.example"))
    left = replace(left, certificates=CertificateAuth(cert, key, (CA[0],)))
    peers = Peers(left, replace(right, half_open_timeout=20.0))
    peers.start()
    peers.run()
    _until_quiet(peers)
    (failed,) = peers.right.of(IkeSaFailed)
    assert "identity left.example is not in certificate" in failed.reason


def test_psk_against_signatures_is_no_proposal_chosen() -> None:
    left, _ = _signed()
    _, psk_right = left_right()
    peers = Peers(left, psk_right)
    peers.start()
    peers.run()
    (failed,) = peers.right.of(IkeSaFailed)
    assert "theirs [aes256-sha256-modp2048-ECDSA_256]" in failed.reason


def _rsa(config: IkeV1Config, host: str, bits: int = 2048) -> IkeV1Config:
    key = rsa.generate_private_key(65537, bits)
    cert = make_leaf(CA, host, key, dns(host))
    return replace(config, psk=b"", certificates=CertificateAuth(cert, key, (CA[0],)))


def _rsa_pair() -> tuple[IkeV1Config, IkeV1Config]:
    left, right = left_right()
    return _rsa(left, "left.example"), _rsa(right, "right.example", 3072)


def test_rsa_main_mode_establishes() -> None:
    """RFC 2409 section 5.1 with RSA_SIG: each SIG is the PKCS #1 v1.5 type 1 signature
    of HASH_I / HASH_R itself (rsa_raw.py), verified by the other end. The two keys are
    of different sizes, so each end checks a signature as long as the other's modulus."""
    left, right = _rsa_pair()
    assert left.auth is right.auth is AuthMethod.RSA_SIG
    peers = Peers(left, right)
    peers.start()
    peers.run()
    assert peers.left.sa.state is peers.right.sa.state is V1State.ESTABLISHED
    assert peers.left.of(IkeSaEstablished)[0].remote_id == "right.example"
    assert peers.right.of(IkeSaEstablished)[0].remote_id == "left.example"
    assert peers.left.of(ChildSaEstablished)[0].encr_key_out == (
        peers.right.of(ChildSaEstablished)[0].encr_key_in
    )
    assert peers.left.sa.dropped == peers.right.sa.dropped == 0


def test_rsa_aggressive_mode_sig_r_carries_the_bare_hash() -> None:
    """Aggressive mode message 2 sends SIG_R in the clear: it is as long as the
    responder's modulus, and under its public key it opens to the 32 octets of an
    HMAC-SHA-256 HASH_R, no DigestInfo (RFC 2409 section 5.1)."""
    left, right = (replace(c, phase1_mode=ExchangeMode.AGGRESSIVE) for c in _rsa_pair())
    peers = Peers(left, right)
    peers.start()
    peers.run()
    assert peers.left.sa.state is peers.right.sa.state is V1State.ESTABLISHED
    second = peers.sent[1][1]
    (sig,) = [p for p in _payloads(second) if isinstance(p, SigPayload)]
    assert right.certificates is not None
    public = right.certificates.certificate.public_key()
    assert isinstance(public, rsa.RSAPublicKey) and len(sig.data) == 3072 // 8
    hash_r = public.recover_data_from_signature(sig.data, padding.PKCS1v15(), None)
    assert len(hash_r) == 32
    assert auth.verify_signature(public, AuthMethod.RSA_SIG, hash_r, sig.data)
    assert peers.left.sa.dropped == peers.right.sa.dropped == 0


def test_rsa_signature_checks() -> None:
    """verify_signature with RSA_SIG: the hash must be the signed octets exactly, the
    signature unaltered, and the key an RSA one."""
    key = rsa.generate_private_key(65537, 2048)
    cert = make_leaf(CA, "left.example", key, dns("left.example"))
    creds = CertificateAuth(cert, key, (CA[0],))
    digest = bytes(range(32))
    signature = auth.sign(creds, digest)
    public = key.public_key()
    assert auth.verify_signature(public, AuthMethod.RSA_SIG, digest, signature)
    assert not auth.verify_signature(public, AuthMethod.RSA_SIG, digest[:-1], signature)
    assert not auth.verify_signature(public, AuthMethod.RSA_SIG, bytes(32), signature)
    flipped = signature[:-1] + bytes([signature[-1] ^ 1])
    assert not auth.verify_signature(public, AuthMethod.RSA_SIG, digest, flipped)
    assert not auth.verify_signature(public, AuthMethod.RSA_SIG, digest, signature[1:])
    other = ec.generate_private_key(P256).public_key()
    assert not auth.verify_signature(other, AuthMethod.RSA_SIG, digest, signature)


def test_rsa_against_ecdsa_is_no_proposal_chosen() -> None:
    """IKEv1 carries the authentication method in the phase 1 transform (RFC 2409
    appendix A): RSA_SIG and ECDSA_256 do not match."""
    left, _ = _rsa_pair()
    _, right = _signed()
    peers = Peers(left, right)
    peers.start()
    peers.run()
    (failed,) = peers.right.of(IkeSaFailed)
    assert "theirs [aes256-sha256-modp2048-RSA_SIG]" in failed.reason


def test_an_rsa_responder_from_another_ca_fails_main_mode() -> None:
    left, right = _rsa_pair()
    stranger = make_ca("Stranger CA")
    key = rsa.generate_private_key(65537, 2048)
    cert = make_leaf(stranger, "right.example", key, dns("right.example"))
    right = replace(right, certificates=CertificateAuth(cert, key, (CA[0],)))
    peers = Peers(left, replace(right, half_open_timeout=20.0))
    peers.start()
    peers.run()
    _until_quiet(peers)
    (failed,) = peers.left.of(IkeSaFailed)
    assert failed.notify == NotifyType.AUTHENTICATION_FAILED
    assert "certificate CN=right.example,O=vpnfleet test is not trusted" in failed.reason


def test_wall_time_is_required_with_certificates() -> None:
    left, _ = _signed()
    from vpnfleet.agent.ike.states import Role
    from vpnfleet.agent.ike.v1.sa import IkeV1Sa

    with pytest.raises(LocalError, match="wall"):
        IkeV1Sa(left, Role.RESPONDER).receive_datagram(b"", ("192.0.2.1", 500), 0.0)


def test_our_sig_convention_verifies_charons_message_5() -> None:
    """RFC 4754 section 8 with charon 5.9.8: SIG_I is r | s over HASH_I taken as the
    digest (ECDSA-256, so HMAC-SHA-256 made HASH_I). Verified with the certificate
    charon sent in the same message."""
    vector = next(v for v in VECTORS if v.auth_method == AuthMethod.ECDSA_256)
    five = _open(_cipher(vector), vector.main_mode_5)
    cert = next(
        x509.load_der_x509_certificate(p[5:]) for t, p in five.payloads if t == PayloadType.CERT
    )
    sig = next(p[4:] for t, p in five.payloads if t == PayloadType.SIG)
    public = cert.public_key()
    assert auth.verify_signature(public, AuthMethod.ECDSA_256, vector.hash_i, sig)
    assert not auth.verify_signature(public, AuthMethod.ECDSA_256, bytes(32), sig)
