"""Agent enrolment: key pairs and certificate requests made on the host itself.

Bootstrap of a new host (private keys never leave the host):

1. On the host: ``vpnfleet-agent init --name a1 --state-dir /var/lib/vpnfleet-agent``
   makes two key pairs (0600) — one for the gRPC server's TLS, one for IKE
   authentication — and writes ``tls.csr`` and ``ike.csr`` beside them.
2. Copy the two CSRs (public material only) to the controller and run
   ``vpnfleet ca sign a1 --tls-csr tls.csr --ike-csr ike.csr [--address 192.0.2.1]``.
   The controller checks each CSR's signature and that it names the host, then issues a
   TLS certificate (SAN DNS:a1, serverAuth + clientAuth) and an IKE certificate (SAN
   DNS:a1 and the host address, digitalSignature), and writes them with the CA certificate.
3. Copy ``tls.pem``, ``ike.pem`` and ``ca.pem`` back and run
   ``vpnfleet-agent install-certs --state-dir DIR --tls-cert tls.pem --ike-cert ike.pem
   --ca ca.pem``; it checks that each certificate matches its key and chains to the CA.
4. ``vpnfleet-agent serve --config /etc/vpnfleet/agent.yaml``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import NameOID

from .store import write_atomically

TLS_KEY, TLS_CSR, TLS_CERT = "tls.key", "tls.csr", "tls.pem"
IKE_KEY, IKE_CSR, IKE_CERT = "ike.key", "ike.csr", "ike.pem"
CA_CERT = "ca.pem"
KEY_TYPES = ("ecdsa-p256", "ed25519")

PrivateKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey


class EnrollError(Exception):
    """Enrolment cannot go on; the message says what to do."""


@dataclass(frozen=True, slots=True)
class EnrollFiles:
    tls_key: Path
    tls_csr: Path
    ike_key: Path
    ike_csr: Path


def new_key(key_type: str) -> PrivateKey:
    if key_type == "ecdsa-p256":
        return ec.generate_private_key(ec.SECP256R1())
    if key_type == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    raise EnrollError(f"unknown key type {key_type!r}; choose one of {', '.join(KEY_TYPES)}")


def key_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def make_csr(key: PrivateKey, host: str) -> bytes:
    """A CSR with CN=host and SAN DNS:host, signed by ``key``."""
    builder = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
    )
    algorithm = None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return builder.sign(key, algorithm).public_bytes(serialization.Encoding.PEM)


def init_agent(
    state_dir: Path, host: str, ike_key_type: str = "ecdsa-p256", force: bool = False
) -> EnrollFiles:
    """Make the TLS and IKE key pairs (0600) and their CSRs in ``state_dir``."""
    files = EnrollFiles(
        state_dir / TLS_KEY, state_dir / TLS_CSR, state_dir / IKE_KEY, state_dir / IKE_CSR
    )
    if not force and (files.tls_key.exists() or files.ike_key.exists()):
        raise EnrollError(
            f"{state_dir} already holds agent keys; use --force to make new ones "
            "(the certificates issued for the old keys stop working)"
        )
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    # TLS stays on P-256: every gRPC TLS stack speaks it.
    for key_path, csr_path, key_type in (
        (files.tls_key, files.tls_csr, "ecdsa-p256"),
        (files.ike_key, files.ike_csr, ike_key_type),
    ):
        key = new_key(key_type)
        write_atomically(key_path, key_pem(key), 0o600)
        write_atomically(csr_path, make_csr(key, host), 0o644)
    return files


def _load_cert(what: str, pem: bytes) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(pem)
    except ValueError:
        raise EnrollError(f"the {what} is not a PEM certificate") from None


def _public(key: object) -> bytes:
    return key.public_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def install_certs(state_dir: Path, tls_cert: bytes, ike_cert: bytes, ca_cert: bytes) -> None:
    """Check the signed certificates against the local keys and the CA, then install them."""
    ca = _load_cert("CA certificate", ca_cert)
    for what, key_name, pem in (("TLS", TLS_KEY, tls_cert), ("IKE", IKE_KEY, ike_cert)):
        cert = _load_cert(f"{what} certificate", pem)
        try:
            key = serialization.load_pem_private_key((state_dir / key_name).read_bytes(), None)
        except FileNotFoundError:
            raise EnrollError(
                f"{state_dir / key_name} is missing: run `vpnfleet-agent init` first"
            ) from None
        if _public(key.public_key()) != _public(cert.public_key()):
            raise EnrollError(
                f"the {what} certificate is not for the key in {state_dir / key_name} "
                "(was it signed from another host's CSR?)"
            )
        try:
            cert.verify_directly_issued_by(ca)
        except (ValueError, TypeError, InvalidSignature):
            raise EnrollError(f"the {what} certificate was not issued by the given CA") from None
    write_atomically(state_dir / TLS_CERT, tls_cert, 0o644)
    write_atomically(state_dir / IKE_CERT, ike_cert, 0o644)
    write_atomically(state_dir / CA_CERT, ca_cert, 0o644)


def ensure_private_dir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path, 0o700)
