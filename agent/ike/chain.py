"""Certificate path validation for IKE peers: the parts of RFC 5280 section 6 that a
fleet's chains use, with the key and signature algorithms IKE signs with.

cryptography's own verifier applies the web PKI's policy, which admits only RSA and
ECDSA issuer keys: a chain under an Ed25519 or Ed448 CA (RFC 8410 keys, which IKE uses
per RFC 8420) is refused there, whatever the extension policy. This check walks from the
peer's certificate through the intermediates it sent to one of the configured trust
anchors and refuses the path, naming why, unless every link holds:

- the issuer's subject is the certificate's issuer name, and the certificate's signature
  verifies with the issuer's key (RSA PKCS#1 v1.5 or PSS, ECDSA, Ed25519, Ed448; hashes
  SHA-256 to SHA-512 only, the ones RFC 8247 keeps for IKE signatures);
- each certificate, the anchor included, is valid at ``now`` (passed in: this module
  reads no clock);
- each issuer is a CA (basicConstraints CA:TRUE), may sign certificates where it carries
  keyUsage (keyCertSign), and its pathLenConstraint admits the CAs below it;
- the peer's certificate may sign (keyUsage digitalSignature, where present: the AUTH
  payload is a signature, RFC 4945 section 5.1.3.2);
- no certificate carries a critical extension this check does not process (RFC 5280
  section 4.2): name constraints and policy constraints among them.

Revocation is not checked here.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.x509.oid import ExtensionOID, SignatureAlgorithmOID

MAX_INTERMEDIATES = 4
"""CA certificates the peer may send between its certificate and a trust anchor."""

MAX_ISSUER_CHECKS = 16
"""Candidate issuers (signature checks) tried for one certificate path at most."""

MIN_RSA_BITS = 2048
"""The smallest RSA issuer key accepted (RFC 8247 section 3.2: 2048 bits or more)."""

CURVES = ("secp256r1", "secp384r1", "secp521r1")
"""ECDSA issuer curves: those RFC 7427 signatures use (P-256, P-384, P-521)."""

SIGNATURE_ALGORITHMS = {
    SignatureAlgorithmOID.ECDSA_WITH_SHA256: "ecdsa-with-SHA256",
    SignatureAlgorithmOID.ECDSA_WITH_SHA384: "ecdsa-with-SHA384",
    SignatureAlgorithmOID.ECDSA_WITH_SHA512: "ecdsa-with-SHA512",
    SignatureAlgorithmOID.RSA_WITH_SHA256: "sha256WithRSAEncryption",
    SignatureAlgorithmOID.RSA_WITH_SHA384: "sha384WithRSAEncryption",
    SignatureAlgorithmOID.RSA_WITH_SHA512: "sha512WithRSAEncryption",
    SignatureAlgorithmOID.RSASSA_PSS: "RSASSA-PSS",
    SignatureAlgorithmOID.ED25519: "Ed25519",
    SignatureAlgorithmOID.ED448: "Ed448",
}
"""Certificate signature algorithms accepted, by OID."""

_PSS_HASHES = (hashes.SHA256, hashes.SHA384, hashes.SHA512)

PROCESSED_EXTENSIONS = frozenset(
    {
        ExtensionOID.BASIC_CONSTRAINTS,
        ExtensionOID.KEY_USAGE,
        ExtensionOID.SUBJECT_ALTERNATIVE_NAME,  # the IKE identity is matched against it
        ExtensionOID.EXTENDED_KEY_USAGE,  # IKE asks for no key purpose (RFC 4945 5.1.3.12)
    }
)
"""Extensions this check understands; any other marked critical refuses the path."""


class ChainError(Exception):
    """No path from the certificate to a trust anchor holds; the message says why."""


def _name(cert: x509.Certificate) -> str:
    return cert.subject.rfc4514_string() or "(empty subject)"


def _stamp(moment: datetime.datetime) -> str:
    return f"{moment:%Y-%m-%d %H:%M:%S} UTC"


def _validity(cert: x509.Certificate, now: datetime.datetime) -> str | None:
    if now < cert.not_valid_before_utc:
        return f"{_name(cert)} is not valid before {_stamp(cert.not_valid_before_utc)}"
    if now > cert.not_valid_after_utc:
        return f"{_name(cert)} expired at {_stamp(cert.not_valid_after_utc)}"
    return None


def _label(oid: x509.ObjectIdentifier) -> str:
    known = getattr(oid, "_name", "")  # cryptography's registry of OID names
    if not known or known == "Unknown OID":
        return oid.dotted_string
    return f"{known} ({oid.dotted_string})"


def _extensions(cert: x509.Certificate) -> x509.Extensions:
    try:
        return cert.extensions
    except ValueError as exc:  # duplicate or malformed extensions
        raise ChainError(f"{_name(cert)}: extensions do not parse ({exc})") from None


def _unprocessed_critical(cert: x509.Certificate) -> str | None:
    for ext in _extensions(cert):
        if ext.critical and ext.oid not in PROCESSED_EXTENSIONS:
            return (
                f"{_name(cert)} carries critical extension {_label(ext.oid)}, "
                "which is not supported"
            )
    return None


def _key_usage(cert: x509.Certificate) -> x509.KeyUsage | None:
    try:
        return _extensions(cert).get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return None


def _issuer_key_problem(issuer: x509.Certificate) -> str | None:
    try:
        key = issuer.public_key()
    except (ValueError, UnsupportedAlgorithm) as exc:
        return f"{_name(issuer)}: public key not supported ({exc})"
    if isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        return None
    if isinstance(key, ec.EllipticCurvePublicKey):
        if key.curve.name not in CURVES:
            return f"{_name(issuer)}: ECDSA curve {key.curve.name} is not supported"
        return None
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < MIN_RSA_BITS:
            return f"{_name(issuer)}: RSA key of {key.key_size} bits (at least {MIN_RSA_BITS})"
        return None
    return f"{_name(issuer)}: {type(key).__name__} keys are not supported"


def _signature_problem(cert: x509.Certificate, issuer: x509.Certificate) -> str | None:
    """Is ``cert`` signed by ``issuer``, with an accepted algorithm and key?"""
    algorithm = SIGNATURE_ALGORITHMS.get(cert.signature_algorithm_oid)
    if algorithm is None:
        return (
            f"{_name(cert)} is signed with {_label(cert.signature_algorithm_oid)}, "
            "which is not accepted"
        )
    if cert.signature_algorithm_oid == SignatureAlgorithmOID.RSASSA_PSS:
        try:
            digest = cert.signature_hash_algorithm
        except UnsupportedAlgorithm:
            digest = None
        if not isinstance(digest, _PSS_HASHES):
            return f"{_name(cert)} is signed with RSASSA-PSS over a hash other than SHA-2"
    problem = _issuer_key_problem(issuer)
    if problem is not None:
        return problem
    try:
        cert.verify_directly_issued_by(issuer)
    except InvalidSignature:
        return (
            f"the {algorithm} signature of {_name(cert)} does not verify with {_name(issuer)}'s key"
        )
    except (ValueError, TypeError) as exc:  # the key does not fit the algorithm
        return f"{_name(cert)} cannot be checked with {_name(issuer)}'s key: {exc}"
    return None


def _issuer_problem(
    cert: x509.Certificate, issuer: x509.Certificate, cas_below: int, now: datetime.datetime
) -> str | None:
    """Why ``issuer`` cannot vouch for ``cert`` (with ``cas_below`` intermediate CA
    certificates between ``cert`` and the peer's certificate), or None."""
    problem = _signature_problem(cert, issuer)
    if problem is not None:
        return problem
    problem = _validity(issuer, now)
    if problem is not None:
        return problem
    try:
        constraints = _extensions(issuer).get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        constraints = None
    if constraints is None or not constraints.ca:
        return f"{_name(issuer)} is not a CA (no basicConstraints CA:TRUE)"
    if constraints.path_length is not None and cas_below > constraints.path_length:
        return (
            f"{_name(issuer)} allows {constraints.path_length} CA certificates below it "
            f"(pathLenConstraint), the path has {cas_below}"
        )
    usage = _key_usage(issuer)
    if usage is not None and not usage.key_cert_sign:
        return f"{_name(issuer)} may not sign certificates (keyUsage without keyCertSign)"
    return _unprocessed_critical(issuer)


class _PathSearch:
    """Depth-first search for a path; every issuer of the right name is tried (during a
    CA rotation two anchors may share it), within a budget of issuer checks so that a
    peer sending many look-alike CA certificates cannot make us verify without end."""

    def __init__(
        self,
        intermediates: Sequence[x509.Certificate],
        anchors: Sequence[x509.Certificate],
        now: datetime.datetime,
    ) -> None:
        self.intermediates = intermediates
        self.anchors = anchors
        self.now = now
        self.checks_left = MAX_ISSUER_CHECKS

    def _link(self, cert: x509.Certificate, issuer: x509.Certificate, cas_below: int) -> str | None:
        if self.checks_left <= 0:
            raise ChainError(f"no path found within {MAX_ISSUER_CHECKS} candidate issuers")
        self.checks_left -= 1
        try:
            return _issuer_problem(cert, issuer, cas_below, self.now)
        except ChainError as exc:  # the issuer's extensions do not parse
            return str(exc)

    def extend(self, path: list[x509.Certificate]) -> list[x509.Certificate]:
        """A trusted path that starts with ``path``."""
        cert = path[-1]
        cas_below = len(path) - 1
        problems = []
        for anchor in self.anchors:
            if anchor.subject != cert.issuer:
                continue
            problem = self._link(cert, anchor, cas_below)
            if problem is None:
                return [*path, anchor]
            problems.append(problem)
        for ca in self.intermediates:
            if ca.subject != cert.issuer or ca in path:
                continue
            if cas_below >= MAX_INTERMEDIATES:
                problems.append(f"the path is longer than {MAX_INTERMEDIATES} intermediate CAs")
                break
            problem = self._link(cert, ca, cas_below)
            if problem is None:
                try:
                    return self.extend([*path, ca])
                except ChainError as exc:
                    problem = str(exc)
            problems.append(problem)
        if not problems:
            trusted = "; ".join(_name(a) for a in self.anchors) or "none"
            raise ChainError(
                f"issuer {cert.issuer.rfc4514_string()} of {_name(cert)} is not a trusted CA "
                f"(trust anchors: {trusted})"
            )
        raise ChainError("; ".join(dict.fromkeys(problems)))


def validate(
    certificate: x509.Certificate,
    intermediates: Sequence[x509.Certificate],
    anchors: Sequence[x509.Certificate],
    now: datetime.datetime,
) -> tuple[x509.Certificate, ...]:
    """The path from the peer's ``certificate`` to a trust anchor (the certificate first,
    the anchor last), through the ``intermediates`` it sent; ``now`` is a timezone-aware
    UTC time. Raises :class:`ChainError` naming what is wrong."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware (UTC)")
    problem = _validity(certificate, now) or _unprocessed_critical(certificate)
    if problem is not None:
        raise ChainError(problem)
    usage = _key_usage(certificate)
    if usage is not None and not usage.digital_signature:
        raise ChainError(f"{_name(certificate)} may not sign (keyUsage without digitalSignature)")
    return tuple(_PathSearch(intermediates, anchors, now).extend([certificate]))
