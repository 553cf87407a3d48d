"""Main mode with ECDSA signatures and X.509 certificates (RFC 2409 section 5.1,
RFC 4754 section 8) between two IkeV1Sa on fake time, and our SIG convention checked
against charon 5.9.8's logged message 5."""

from __future__ import annotations

from dataclasses import replace

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from tests.support.certs import CA, dns, make_ca, make_leaf
from tests.support.ike_v1_peers import Peers, left_right
from tests.unit.ike_v1.test_v1_keys import VECTORS, _cipher, _open
from vpnfleet.agent.ike.errors import LocalError, UnsupportedTransform
from vpnfleet.agent.ike.events import ChildSaEstablished, IkeSaEstablished, IkeSaFailed
from vpnfleet.agent.ike.signatures import CertificateAuth
from vpnfleet.agent.ike.v1 import auth
from vpnfleet.agent.ike.v1.config import ExchangeMode, IkeV1Config
from vpnfleet.agent.ike.v1.constants import AuthMethod, NotifyType, PayloadType
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


def test_untrusted_certificate_fails_authentication() -> None:
    left, right = _signed()
    stranger = make_ca("Stranger CA")
    key = ec.generate_private_key(ec.SECP256R1())
    cert = make_leaf(stranger, "left.example", key, dns("left.example"))
    left = replace(left, certificates=CertificateAuth(cert, key, (CA[0],)))
    peers = Peers(left, replace(right, half_open_timeout=20.0))
    peers.start()
    peers.run()
    _until_quiet(peers)
    (failed,) = peers.right.of(IkeSaFailed)
    assert failed.notify == NotifyType.AUTHENTICATION_FAILED
    assert "is not trusted" in failed.reason
    assert peers.left.of(IkeSaFailed)


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


def test_rsa_keys_and_aggressive_signatures_are_refused() -> None:
    left, _ = left_right()
    key = rsa.generate_private_key(65537, 2048)
    cert = make_leaf(CA, "left.example", key, dns("left.example"))
    with pytest.raises(LocalError, match="ECDSA"):
        replace(left, psk=b"", certificates=CertificateAuth(cert, key, (CA[0],)))
    signed, _ = _signed()
    with pytest.raises(UnsupportedTransform, match="Main mode only"):
        replace(signed, phase1_mode=ExchangeMode.AGGRESSIVE)


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
