"""Digital signature authentication (RFC 7427) with X.509 certificates.

AUTH method 14 data is: one octet with the length of an ASN.1 AlgorithmIdentifier,
that AlgorithmIdentifier (DER), then the signature over the section 2.15 octets.
ECDSA signatures are DER Ecdsa-Sig-Value (RFC 7427 section 3); Ed25519 and Ed448 sign
the octets themselves (RFC 8420, "identity" hash); RSA uses RSASSA-PSS. The peer's
certificate path is checked in chain.py.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa

from .constants import HashAlgorithm, IdType, NotifyType
from .errors import LocalError, ProtocolError
from .transforms import sha1

SigningKey = (
    ec.EllipticCurvePrivateKey
    | ed25519.Ed25519PrivateKey
    | ed448.Ed448PrivateKey
    | rsa.RSAPrivateKey
)


def _der(tag: int, body: bytes) -> bytes:
    if len(body) < 0x80:
        return bytes([tag, len(body)]) + body
    size = len(body).to_bytes((len(body).bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(size)]) + size + body


def _oid(dotted: str) -> bytes:
    parts = [int(p) for p in dotted.split(".")]
    body = bytearray([40 * parts[0] + parts[1]])
    for value in parts[2:]:
        chunk = [value & 0x7F]
        value >>= 7
        while value:
            chunk.append(0x80 | (value & 0x7F))
            value >>= 7
        body += bytes(reversed(chunk))
    return _der(0x06, bytes(body))


def _algorithm(oid: str, params: bytes | None = None) -> bytes:
    return _der(0x30, _oid(oid) + (params or b""))


_NULL = b"\x05\x00"
_HASH_OIDS = {"sha256": "2.16.840.1.101.3.4.2.1", "sha384": "2.16.840.1.101.3.4.2.2",
              "sha512": "2.16.840.1.101.3.4.2.3"}  # fmt: skip
_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}


def _pss(hash_name: str) -> bytes:
    """RSASSA-PSS-params (RFC 4055 section 3.1): hash, MGF1 with the same hash, salt = hash
    length; the trailer field keeps its default."""
    hash_alg = _algorithm(_HASH_OIDS[hash_name], _NULL)
    mgf = _algorithm("1.2.840.113549.1.1.8", hash_alg)
    salt = _der(0x02, bytes([_HASHES[hash_name]().digest_size]))
    params = _der(0x30, _der(0xA0, hash_alg) + _der(0xA1, mgf) + _der(0xA2, salt))
    return _algorithm("1.2.840.113549.1.1.10", params)


class SignatureKind(Enum):
    """The signature algorithm a scheme uses, whatever its hash (RFC 7427 appendix A)."""

    ECDSA = "ecdsa"
    ED25519 = "ed25519"
    ED448 = "ed448"
    RSA_PSS = "rsa-pss"
    RSA_PKCS1 = "rsa-pkcs1"


_PUBLIC_KEY_TYPES: dict[SignatureKind, type] = {
    SignatureKind.ECDSA: ec.EllipticCurvePublicKey,
    SignatureKind.ED25519: ed25519.Ed25519PublicKey,
    SignatureKind.ED448: ed448.Ed448PublicKey,
    SignatureKind.RSA_PSS: rsa.RSAPublicKey,
    SignatureKind.RSA_PKCS1: rsa.RSAPublicKey,
}
"""The certificate key each kind of signature verifies with."""


@dataclass(frozen=True)
class SignatureScheme:
    name: str
    algorithm_identifier: bytes
    hash_name: str | None
    """None for Ed25519 and Ed448 (RFC 8420: no pre-hash)."""
    kind: SignatureKind

    @property
    def hash_algorithm(self) -> int:
        return {
            None: HashAlgorithm.IDENTITY,
            "sha256": HashAlgorithm.SHA2_256,
            "sha384": HashAlgorithm.SHA2_384,
            "sha512": HashAlgorithm.SHA2_512,
        }[self.hash_name]


_ECDSA, _RSA_PSS = SignatureKind.ECDSA, SignatureKind.RSA_PSS
SCHEMES = [
    SignatureScheme("ecdsa-with-sha256", _algorithm("1.2.840.10045.4.3.2"), "sha256", _ECDSA),
    SignatureScheme("ecdsa-with-sha384", _algorithm("1.2.840.10045.4.3.3"), "sha384", _ECDSA),
    SignatureScheme("ecdsa-with-sha512", _algorithm("1.2.840.10045.4.3.4"), "sha512", _ECDSA),
    SignatureScheme("ed25519", _algorithm("1.3.101.112"), None, SignatureKind.ED25519),
    SignatureScheme("ed448", _algorithm("1.3.101.113"), None, SignatureKind.ED448),
    SignatureScheme("rsassa-pss-sha256", _pss("sha256"), "sha256", _RSA_PSS),
    SignatureScheme("rsassa-pss-sha384", _pss("sha384"), "sha384", _RSA_PSS),
    SignatureScheme("rsassa-pss-sha512", _pss("sha512"), "sha512", _RSA_PSS),
    SignatureScheme(
        "sha256WithRSAEncryption",
        _algorithm("1.2.840.113549.1.1.11", _NULL),
        "sha256",
        SignatureKind.RSA_PKCS1,
    ),
]
_BY_IDENTIFIER = {s.algorithm_identifier: s for s in SCHEMES}


@dataclass(frozen=True)
class CertificateAuth:
    """Our certificate credentials and the trust anchors for the peer's chain."""

    certificate: x509.Certificate
    private_key: SigningKey = field(repr=False)
    trust_anchors: tuple[x509.Certificate, ...]
    intermediates: tuple[x509.Certificate, ...] = ()
    revoked: frozenset[tuple[bytes, int]] = frozenset()
    """Certificates the CRLs in force revoke, as (DER issuer name, serial): a peer whose
    path holds one fails authentication."""

    def __post_init__(self) -> None:
        if not self.trust_anchors:
            raise LocalError("certificate authentication needs at least one trust anchor")
        ours = self.certificate.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        theirs = self.private_key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        if ours != theirs:
            raise LocalError("the private key does not belong to the certificate")
        scheme_for(self.private_key, ())

    def ca_hashes(self) -> bytes:
        """CERTREQ data: SHA-1 of each trust anchor's SubjectPublicKeyInfo (section 3.7)."""
        return b"".join(ca_key_hash(ca) for ca in self.trust_anchors)


def ca_key_hash(certificate: x509.Certificate) -> bytes:
    spki = certificate.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return sha1(spki)


def scheme_for(key: SigningKey, peer_hashes: Sequence[int]) -> SignatureScheme:
    """Our scheme for this key; the hash follows the peer's SIGNATURE_HASH_ALGORITHMS."""
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return _scheme(SignatureKind.ED25519, None)
    if isinstance(key, ed448.Ed448PrivateKey):
        return _scheme(SignatureKind.ED448, None)
    if isinstance(key, ec.EllipticCurvePrivateKey):
        # RFC 7427 leaves the hash free; match the curve's strength as strongSwan does.
        bits = {"secp256r1": "sha256", "secp384r1": "sha384", "secp521r1": "sha512"}
        if key.curve.name not in bits:
            raise LocalError(f"ECDSA curve {key.curve.name} is not supported")
        return _scheme(SignatureKind.ECDSA, bits[key.curve.name])
    if isinstance(key, rsa.RSAPrivateKey):
        for name, value in (
            ("sha256", HashAlgorithm.SHA2_256),
            ("sha384", HashAlgorithm.SHA2_384),
            ("sha512", HashAlgorithm.SHA2_512),
        ):
            if not peer_hashes or value in peer_hashes:
                return _scheme(SignatureKind.RSA_PSS, name)
        return _scheme(SignatureKind.RSA_PSS, "sha256")
    raise LocalError(f"unsupported private key type {type(key).__name__}")


def _scheme(kind: SignatureKind, hash_name: str | None) -> SignatureScheme:
    return next(s for s in SCHEMES if s.kind is kind and s.hash_name == hash_name)


def sign(key: SigningKey, octets: bytes, peer_hashes: Sequence[int] = ()) -> bytes:
    """AUTH payload data for method 14 (RFC 7427 section 3)."""
    scheme = scheme_for(key, peer_hashes)
    if isinstance(key, ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey):
        signature = key.sign(octets)
    elif isinstance(key, ec.EllipticCurvePrivateKey):
        assert scheme.hash_name is not None
        signature = key.sign(octets, ec.ECDSA(_HASHES[scheme.hash_name]()))
    else:
        assert scheme.hash_name is not None
        hash_alg = _HASHES[scheme.hash_name]()
        pss = padding.PSS(padding.MGF1(hash_alg), hash_alg.digest_size)
        signature = key.sign(octets, pss, hash_alg)
    identifier = scheme.algorithm_identifier
    return bytes([len(identifier)]) + identifier + signature


def _fail(reason: str) -> ProtocolError:
    return ProtocolError(
        f"AUTHENTICATION_FAILED: {reason}", notify=NotifyType.AUTHENTICATION_FAILED
    )


def verify(certificate: x509.Certificate, octets: bytes, auth_data: bytes) -> str:
    """Check method 14 AUTH data against the certificate's key; return the scheme name."""
    if not auth_data or len(auth_data) < 1 + auth_data[0]:
        raise _fail("AUTH data shorter than its AlgorithmIdentifier")
    identifier = auth_data[1 : 1 + auth_data[0]]
    signature = auth_data[1 + auth_data[0] :]
    scheme = _BY_IDENTIFIER.get(identifier)
    if scheme is None:
        raise _fail(f"unsupported signature AlgorithmIdentifier {identifier.hex()}")
    key = certificate.public_key()
    if not isinstance(key, _PUBLIC_KEY_TYPES[scheme.kind]):
        raise _fail(f"{scheme.name} signature does not fit a {type(key).__name__}")
    try:
        if isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
            key.verify(signature, octets)
        elif isinstance(key, ec.EllipticCurvePublicKey):
            assert scheme.hash_name is not None
            key.verify(signature, octets, ec.ECDSA(_HASHES[scheme.hash_name]()))
        else:
            assert isinstance(key, rsa.RSAPublicKey) and scheme.hash_name is not None
            hash_alg = _HASHES[scheme.hash_name]()
            pad: padding.AsymmetricPadding = (
                padding.PSS(padding.MGF1(hash_alg), hash_alg.digest_size)
                if scheme.kind is SignatureKind.RSA_PSS
                else padding.PKCS1v15()
            )
            key.verify(signature, octets, pad, hash_alg)
    except InvalidSignature:
        raise _fail(f"{scheme.name} signature does not verify") from None
    return scheme.name


def identity_in_certificate(id_type: int, data: bytes, certificate: x509.Certificate) -> bool:
    """Is this IKE identity one the certificate vouches for (SAN or subject DN)?"""
    if id_type == IdType.ID_DER_ASN1_DN:
        return data == certificate.subject.public_bytes()
    try:
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    if id_type in (IdType.ID_IPV4_ADDR, IdType.ID_IPV6_ADDR):
        return ipaddress.ip_address(data) in san.get_values_for_type(x509.IPAddress)
    text = data.decode(errors="replace").lower()
    if id_type == IdType.ID_FQDN:
        return text in (n.lower() for n in san.get_values_for_type(x509.DNSName))
    if id_type == IdType.ID_RFC822_ADDR:
        return text in (n.lower() for n in san.get_values_for_type(x509.RFC822Name))
    return False
