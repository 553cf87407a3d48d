"""Certificate revocation lists that come with a plan (RFC 5280 section 5).

The controller puts into every plan one CRL per fleet CA that revoked something. Before
a plan is used, each CRL must be signed by one of the plan's trust anchors (the CA whose
name it carries as its issuer) and carry a nextUpdate; a plan handed in (ApplyPlan,
``run --plan``) must not hold one whose nextUpdate is past. A CRL that fails refuses the
whole plan, naming why. The plan stored on disk is put back at a restart even when its
CRL has since passed nextUpdate: a revocation does not become untrue with age, and the
controller's next apply brings a fresh CRL.

What comes out is a set of (issuer name, serial) pairs, RFC 5280's way of naming a
certificate, which IKE (peer certificates) and the gRPC server (client certificates)
look up.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Sequence

from cryptography import x509

RevokedSet = frozenset[tuple[bytes, int]]
"""Revoked certificates as (DER issuer name, serial number)."""


def certificate_key(cert: x509.Certificate) -> tuple[bytes, int]:
    """How a :data:`RevokedSet` names ``cert``."""
    return cert.issuer.public_bytes(), cert.serial_number


def _stamp(moment: datetime.datetime) -> str:
    return f"{moment:%Y-%m-%d %H:%M:%S} UTC"


def read_crl(
    pem: bytes, anchors: Sequence[x509.Certificate], now: datetime.datetime | None
) -> tuple[x509.CertificateRevocationList, str | None]:
    """Parse and check one CRL against the trust ``anchors``; with ``now``, also that it
    has not passed its nextUpdate. Returns the CRL and what is wrong with it (or None)."""
    try:
        crl = x509.load_pem_x509_crl(pem)
    except ValueError:
        raise ValueError("not a PEM X.509 CRL") from None
    issuer = crl.issuer.rfc4514_string() or "(empty issuer)"
    named = [a for a in anchors if a.subject == crl.issuer]
    if not named:
        return crl, f"issued by {issuer}, which is none of the plan's trust anchors"
    # Two anchors may share a name during a CA rotation: any of them signing it will do.
    if not any(_signed_by(crl, anchor) for anchor in named):
        return crl, (
            f"the signature of this CRL does not verify with the key of trust anchor {issuer}: "
            "it was not issued by the fleet CA"
        )
    if crl.next_update_utc is None:
        return crl, "has no nextUpdate (RFC 5280 section 5.1.2.5)"
    if now is not None and crl.next_update_utc < now:
        return crl, (
            f"the CRL of {issuer} is stale: its nextUpdate {_stamp(crl.next_update_utc)} "
            "is past (check the clocks; the controller issues a fresh one at its next apply)"
        )
    return crl, None


def _signed_by(crl: x509.CertificateRevocationList, anchor: x509.Certificate) -> bool:
    try:
        return crl.is_signature_valid(anchor.public_key())  # type: ignore[arg-type]
    except (TypeError, ValueError):  # a key type CRLs cannot be signed with
        return False


def revoked_set(crls: Iterable[x509.CertificateRevocationList]) -> RevokedSet:
    """Every (issuer, serial) the checked ``crls`` list."""
    return frozenset(
        (crl.issuer.public_bytes(), entry.serial_number) for crl in crls for entry in crl
    )
