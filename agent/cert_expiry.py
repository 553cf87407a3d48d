"""When the agent's own certificates expire: its TLS certificate (the controller
authenticates it by that one) and its IKE certificate (certificate peers do), read
from the files in use each time they are asked for, so a rotation shows at once."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from .enroll import CredentialFiles


class CertificateKind(enum.Enum):
    """Which certificate (the ``CertificateExpiry.Kind`` of the status proto)."""

    TLS = "tls"
    IKE = "ike"


@dataclass(frozen=True, slots=True)
class CertificateExpiry:
    kind: CertificateKind
    not_after: float
    """Unix seconds: the certificate's notAfter."""
    subject: str
    """RFC 4514 form."""
    not_before: float = 0.0
    """Unix seconds: the certificate's notBefore (the controller renews by lifetime)."""


def read_expiry(kind: CertificateKind, path: Path) -> CertificateExpiry | None:
    """The expiry of the PEM certificate at ``path``; None when there is none there or
    it cannot be read (status then shows no certificate of that kind)."""
    try:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError):
        return None
    return CertificateExpiry(
        kind,
        cert.not_valid_after_utc.timestamp(),
        cert.subject.rfc4514_string(),
        cert.not_valid_before_utc.timestamp(),
    )


def certificate_expiries(files: CredentialFiles | None) -> list[CertificateExpiry]:
    """The TLS and IKE certificates in use, those that exist."""
    if files is None:
        return []
    found = (
        read_expiry(CertificateKind.TLS, files.tls_cert),
        read_expiry(CertificateKind.IKE, files.ike_cert),
    )
    return [c for c in found if c is not None]
