"""IKEv1 signature authentication with X.509 certificates (RFC 2409 section 5.1):
Main mode messages 5 and 6 (Aggressive mode messages 2 and 3) carry ID, CERT and SIG,
where SIG signs HASH_I / HASH_R.

ECDSA (RFC 4754 section 8): the authentication method names the curve (ECDSA-256,
-384, -521), HASH_I and HASH_R are made with the HMAC of the curve's hash
(keys.auth_prf), and the SIG payload is r | s, each as long as the curve's order,
over HASH_I taken as the digest itself (no second hash; charon logs the scheme as
ECDSA_WITH_NULL): measured against charon 5.9.8's message 5, whose SIG verifies only
so (test_v1_sa_signatures.py), and interoperating with it (test_interop_ikev1.py).

RSA (RFC 2409 section 5.1, method RSA_SIG): SIG is the PKCS #1 v1.5 type 1 block of
HASH_I / HASH_R itself, with no DigestInfo (strongSwan's SIGN_RSA_EMSA_PKCS1_NULL), made
by OpenSSL through rsa_raw.py (the cryptography library adds a DigestInfo); HASH_I and
HASH_R use the negotiated prf. Verified with recover_data_from_signature, which
returns the signed octets for comparison with ours.

The peer's certificate path and identity are checked as for IKEv2 (chain.py,
signatures.identity_in_certificate); CERTREQ names each trust anchor by its subject
DN (RFC 2408 section 3.10, Certificate Authority field), which makes charon send its
certificate (its default ``send_cert = ifasked``).
"""

from __future__ import annotations

import datetime
import hmac
from collections.abc import Sequence

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils

from .. import chain, rsa_raw, signatures
from ..config import Identity
from ..errors import LocalError, ProtocolError
from ..signatures import CertificateAuth
from .constants import AuthMethod, CertEncoding, NotifyType
from .payloads import CertPayload, CertReqPayload, Payload

_CURVES: dict[str, tuple[AuthMethod, hashes.HashAlgorithm, int]] = {
    "secp256r1": (AuthMethod.ECDSA_256, hashes.SHA256(), 32),
    "secp384r1": (AuthMethod.ECDSA_384, hashes.SHA384(), 48),
    "secp521r1": (AuthMethod.ECDSA_521, hashes.SHA512(), 66),
}


def auth_method(credentials: CertificateAuth) -> AuthMethod:
    """The phase 1 Authentication Method our key signs with."""
    key = credentials.private_key
    if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name in _CURVES:
        return _CURVES[key.curve.name][0]
    if isinstance(key, rsa.RSAPrivateKey):
        return AuthMethod.RSA_SIG
    raise LocalError(
        f"IKEv1 signatures here are RSA (RFC 2409 section 5.1) or ECDSA on P-256, P-384 "
        f"or P-521 (RFC 4754), not {type(key).__name__}"
    )


def _curve(method: int) -> tuple[hashes.HashAlgorithm, int]:
    for known, hash_algorithm, size in _CURVES.values():
        if known == method:
            return hash_algorithm, size
    raise LocalError(f"authentication method {method} is not ECDSA")


def sign(credentials: CertificateAuth, digest: bytes) -> bytes:
    """SIG_I / SIG_R over HASH_I / HASH_R: with RSA the PKCS #1 v1.5 type 1 signature
    of the hash itself; with ECDSA r | s over the hash as the digest."""
    key = credentials.private_key
    if isinstance(key, rsa.RSAPrivateKey):
        der = key.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        return rsa_raw.sign_pkcs1_null(der, digest)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    hash_algorithm, size = _curve(auth_method(credentials))
    der = key.sign(digest, ec.ECDSA(utils.Prehashed(hash_algorithm)))
    r, s = utils.decode_dss_signature(der)
    return r.to_bytes(size, "big") + s.to_bytes(size, "big")


def certificate_payloads(credentials: CertificateAuth) -> list[Payload]:
    """Our certificate, then the intermediates to a trust anchor."""
    certs = (credentials.certificate, *credentials.intermediates)
    return [
        CertPayload(CertEncoding.X509_SIGNATURE, c.public_bytes(serialization.Encoding.DER))
        for c in certs
    ]


def certificate_requests(credentials: CertificateAuth) -> list[Payload]:
    return [
        CertReqPayload(CertEncoding.X509_SIGNATURE, anchor.subject.public_bytes())
        for anchor in credentials.trust_anchors
    ]


def _failed(reason: str) -> ProtocolError:
    return ProtocolError(
        f"AUTHENTICATION_FAILED: {reason}", notify=NotifyType.AUTHENTICATION_FAILED
    )


def verify_peer(
    credentials: CertificateAuth,
    method: int,
    payloads: Sequence[Payload],
    peer: Identity,
    digest: bytes,
    signature: bytes,
    wall: float,
) -> None:
    """The peer's certificate path, that it names ``peer``, and its SIG over ``digest``
    (HASH_I or HASH_R); any fault raises AUTHENTICATION_FAILED naming it."""
    certs = [
        p for p in payloads
        if isinstance(p, CertPayload) and p.encoding == CertEncoding.X509_SIGNATURE
    ]  # fmt: skip
    if not certs:
        raise _failed(f"{peer} sent no X.509 certificate")
    try:
        presented = [x509.load_der_x509_certificate(c.data) for c in certs]
    except ValueError as exc:
        raise _failed(f"certificate of {peer} does not parse: {exc}") from None
    now = datetime.datetime.fromtimestamp(wall, datetime.UTC)
    try:
        path = chain.validate(presented[0], presented[1:], credentials.trust_anchors, now)
    except chain.ChainError as exc:
        raise _failed(
            f"certificate {presented[0].subject.rfc4514_string()} is not trusted: {exc}"
        ) from None
    for cert in path[:-1]:
        if (cert.issuer.public_bytes(), cert.serial_number) in credentials.revoked:
            raise _failed(f"certificate {cert.subject.rfc4514_string()} is revoked")
    if not signatures.identity_in_certificate(peer.id_type, peer.data, presented[0]):
        raise _failed(
            f"identity {peer} is not in certificate {presented[0].subject.rfc4514_string()}"
        )
    if not verify_signature(presented[0].public_key(), method, digest, signature):
        raise _failed(f"SIG of {peer} does not verify with {AuthMethod(method).name}")


def verify_signature(public: object, method: int, digest: bytes, signature: bytes) -> bool:
    """Whether ``signature`` is the RSA_SIG or ECDSA (r | s) signature of ``digest`` by
    ``public``."""
    if method == AuthMethod.RSA_SIG:
        return _verify_rsa(public, digest, signature)
    hash_algorithm, size = _curve(method)
    if not isinstance(public, ec.EllipticCurvePublicKey) or len(signature) != 2 * size:
        return False
    der = utils.encode_dss_signature(
        int.from_bytes(signature[:size], "big"), int.from_bytes(signature[size:], "big")
    )
    try:
        public.verify(der, digest, ec.ECDSA(utils.Prehashed(hash_algorithm)))
    except InvalidSignature:
        return False
    return True


def _verify_rsa(public: object, digest: bytes, signature: bytes) -> bool:
    """PKCS #1 v1.5 with no DigestInfo: the octets the signature carries are ``digest``."""
    if not isinstance(public, rsa.RSAPublicKey):
        return False
    try:
        signed = public.recover_data_from_signature(signature, padding.PKCS1v15(), None)
    except (InvalidSignature, ValueError):
        return False
    return hmac.compare_digest(signed, digest)
