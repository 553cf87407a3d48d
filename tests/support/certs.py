"""A small certificate authority for the IKE certificate tests: a CA, leaves of every key
type the agent signs with, and IKE configurations that carry them."""

from __future__ import annotations

import datetime
from dataclasses import replace

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.x509.oid import NameOID

from vpnfleet.agent.ike.config import IkeConfig
from vpnfleet.agent.ike.signatures import CertificateAuth, SigningKey

NOW = datetime.datetime.now(datetime.UTC)


def name(cn: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "vpnfleet test"),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


def _sign_hash(key: SigningKey) -> hashes.HashAlgorithm | None:
    edwards = ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey
    return None if isinstance(key, edwards) else hashes.SHA256()


def make_ca(cn: str = "Test CA", kind: str = "ecdsa") -> tuple[x509.Certificate, SigningKey]:
    key = new_key(kind)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name(cn))
        .issuer_name(name(cn))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - datetime.timedelta(days=1))
        .not_valid_after(NOW + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, _sign_hash(key))
    )
    return cert, key


def make_leaf(
    ca: tuple[x509.Certificate, SigningKey],
    cn: str,
    key: SigningKey,
    sans: list[x509.GeneralName],
    not_after: datetime.datetime = NOW + datetime.timedelta(days=30),
) -> x509.Certificate:
    ca_cert, ca_key = ca
    return (
        x509.CertificateBuilder()
        .subject_name(name(cn))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - datetime.timedelta(days=1))
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, _sign_hash(ca_key))
    )


def new_key(kind: str) -> SigningKey:
    if kind == "ecdsa":
        return ec.generate_private_key(ec.SECP256R1())
    if kind == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    if kind == "ed448":
        return ed448.Ed448PrivateKey.generate()
    return rsa.generate_private_key(65537, 2048)


CA = make_ca()


def with_certs(
    config: IkeConfig,
    kind: str,
    sans: list[x509.GeneralName],
    *,
    cn: str = "gw",
    ca: tuple[x509.Certificate, SigningKey] = CA,
    not_after: datetime.datetime = NOW + datetime.timedelta(days=30),
) -> IkeConfig:
    key = new_key(kind)
    cert = make_leaf(ca, cn, key, sans, not_after)
    anchors = (ca[0],)
    return replace(config, psk=b"", certificates=CertificateAuth(cert, key, anchors))


def dns(host: str) -> list[x509.GeneralName]:
    return [x509.DNSName(host)]
