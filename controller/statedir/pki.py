"""The fleet CA: agent and controller certificates for gRPC mTLS and IKE authentication.

Files (in STATE/pki, see controller.statedir.state):

    ca.key  ca.pem                  the fleet CA (key 0600)
    controller.key  controller.pem  the controller's TLS client certificate: CN and SAN
                                    vpnfleet-controller, ExtendedKeyUsage clientAuth and
                                    the controller role (protos/identity.py), which no
                                    agent certificate gets
    join-server.key join-server.pem the join service's TLS server certificate (same
                                    name, serverAuth; controller/deploy/join_server.py)
    ca-next.key  ca-next.pem        while a CA rotation runs: the CA being rolled in
    ca-previous.pem                 after its promotion: the CA being rolled out
    issued.json                     every agent certificate issued: host, kind (tls or
                                    ike), serial, issuing CA (fingerprint), expiry
    revoked.json                    the certificates revoked (``vpnfleet decommission``)
    crl-<CA fingerprint>.pem        the CRL each CA of the plans signed, re-issued when
                                    the revoked list changes or half its life is gone

Revocation (RFC 5280 section 5): :func:`revoke_host` revokes every certificate the
ledger lists for a host and still valid (and any the caller found on the host itself);
:func:`fleet_crls` gives the CRLs that go into every plan, one per CA of
:func:`plan_anchors` that issued a revoked certificate. A revoked host's name is
retired: no certificate is issued for it again.

A CA rotation (controller.rotate.cert_rotation) makes the next CA (:func:`init_next_ca`), has
everyone trust both (:func:`trust_bundle`, :func:`plan_anchors`), re-issues every
certificate under the next CA (:func:`sign_agent_csrs` with ``ca=NEXT``,
:func:`reissue_controller_cert`), promotes it (:func:`promote_next_ca`: the old one is
kept as ca-previous) and finally forgets the old one (:func:`drop_previous_ca`).

Bootstrap of a new host (private keys never leave the host):

1. On the host: ``vpnfleet-agent init --name a1 --state-dir DIR`` makes the TLS and IKE
   key pairs (0600) and writes ``tls.csr`` and ``ike.csr``.
2. On the controller: ``vpnfleet ca sign a1 --tls-csr tls.csr --ike-csr ike.csr
   [--address 192.0.2.1]`` (:func:`sign_agent_csrs`) refuses the controller's name,
   checks each CSR's signature and that it names the host, and issues a TLS certificate
   (SAN DNS:a1, serverAuth and clientAuth) and an IKE certificate (SAN DNS:a1 and the
   address, digitalSignature).
3. Copy ``tls.pem``, ``ike.pem`` and ``ca.pem`` back; ``vpnfleet-agent install-certs``
   checks them against the local keys and the CA.

:func:`enroll_local` runs the same steps in one process for the lab and tests, where the
agent's directory is on the controller's machine (keys still made in the agent's dir).
"""

from __future__ import annotations

import argparse
import datetime
import enum
import hashlib
import ipaddress
import json
import logging
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from vpnfleet.protos.files import make_private_directory, write_atomically
from vpnfleet.protos.identity import CONTROLLER_NAME, CONTROLLER_ROLE_OID, is_controller_name

from .state import StateDir

CA_KEY, CA_CERT = "ca.key", "ca.pem"
CA_NEXT_KEY, CA_NEXT_CERT = "ca-next.key", "ca-next.pem"
CA_PREVIOUS_CERT = "ca-previous.pem"
CURRENT, NEXT = "current", "next"
_CA_FILES = {CURRENT: (CA_KEY, CA_CERT), NEXT: (CA_NEXT_KEY, CA_NEXT_CERT)}
CONTROLLER_KEY, CONTROLLER_CERT = "controller.key", "controller.pem"
JOIN_SERVER_KEY, JOIN_SERVER_CERT = "join-server.key", "join-server.pem"
CONTROLLER_ROLE = x509.ObjectIdentifier(CONTROLLER_ROLE_OID)
ALGORITHMS = ("ecdsa-p256", "ed25519")
CA_DAYS = 3650
LEAF_DAYS = 397
ISSUED, REVOKED = "issued.json", "revoked.json"
CRL_DAYS = 30
"""A CRL's life (thisUpdate to nextUpdate). Plans carry it; an apply re-issues it once
less than half of that is left, so an agent given plans at least every two weeks never
holds a stale one."""

_HOST_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9_.-]{0,251}[A-Za-z0-9])?$")
PrivateKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey

log = logging.getLogger(__name__)


class PkiError(Exception):
    """A CA operation cannot be done; the message says why and what to do."""


@dataclass(frozen=True, slots=True)
class TlsCredentials:
    """PEM material for one end of an mTLS connection."""

    cert_pem: bytes
    key_pem: bytes
    ca_pem: bytes
    revoked: frozenset[tuple[bytes, int]] = frozenset()
    """Peer certificates refused although a CA of ``ca_pem`` issued them, as (DER issuer
    name, serial) (:func:`revoked_keys`)."""


@dataclass(frozen=True, slots=True)
class CaInfo:
    """A fleet CA as made or found: its files, key algorithm and fingerprint."""

    cert_path: Path
    key_path: Path
    algorithm: str
    fingerprint: str
    """Hex SHA-256 of the certificate's DER encoding."""

    def to_json(self) -> dict[str, str]:
        return {
            "cert": str(self.cert_path),
            "key": str(self.key_path),
            "algorithm": self.algorithm,
            "fingerprint_sha256": self.fingerprint,
        }


def fingerprint(cert_pem: bytes) -> str:
    """Hex SHA-256 of the certificate's DER encoding (what plans carry as ca_fingerprint)."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def _new_key(algorithm: str) -> PrivateKey:
    if algorithm == "ecdsa-p256":
        return ec.generate_private_key(ec.SECP256R1())
    if algorithm == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    raise PkiError(f"unknown key algorithm {algorithm!r}; choose one of {', '.join(ALGORITHMS)}")


def _key_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _hash_for(key: PrivateKey) -> hashes.SHA256 | None:
    return None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()


def _spki(key: object) -> bytes:
    return key.public_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _pki_dir(state_dir: Path) -> Path:
    return StateDir(state_dir).pki


def _new_ca(algorithm: str, common_name: str) -> tuple[bytes, bytes]:
    """A self-signed CA certificate and its key, both PEM."""
    key = _new_key(algorithm)
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "vpnfleet"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, _hash_for(key))
    )
    return cert.public_bytes(serialization.Encoding.PEM), _key_pem(key)


def init_ca(state_dir: Path, algorithm: str = "ecdsa-p256", force: bool = False) -> CaInfo:
    """Create the fleet CA; refuse to replace an existing one unless ``force``."""
    StateDir(state_dir).ensure()
    pki = make_private_directory(_pki_dir(state_dir))
    if (pki / CA_KEY).exists() and not force:
        raise PkiError(
            f"a fleet CA already exists in {pki}; replacing it invalidates every agent "
            "certificate (use --force if that is what you want)"
        )
    cert_pem, key_pem = _new_ca(algorithm, "vpnfleet fleet CA")
    write_atomically(pki / CA_KEY, key_pem)
    write_atomically(pki / CA_CERT, cert_pem)
    # A new CA makes the old controller certificate useless; drop it so it is reissued,
    # and with it whatever a rotation of the replaced CA left behind.
    for name in (CONTROLLER_CERT, CONTROLLER_KEY, CA_NEXT_KEY, CA_NEXT_CERT, CA_PREVIOUS_CERT):
        (pki / name).unlink(missing_ok=True)
    return CaInfo(pki / CA_CERT, pki / CA_KEY, algorithm, fingerprint(cert_pem))


def _algorithm_of(key: PrivateKey) -> str:
    return "ed25519" if isinstance(key, ed25519.Ed25519PrivateKey) else "ecdsa-p256"


def init_next_ca(state_dir: Path, algorithm: str | None = None) -> CaInfo:
    """The CA a rotation rolls in (``ca-next``), made with the current CA's algorithm
    unless told otherwise; an existing one is kept, so a resumed rotation goes on with
    the CA it started."""
    pki = _pki_dir(state_dir)
    _cert, key, _pem = load_ca(state_dir)
    if (pki / CA_NEXT_CERT).exists():
        _next, next_key, next_pem = load_ca(state_dir, NEXT)
        return CaInfo(
            pki / CA_NEXT_CERT, pki / CA_NEXT_KEY, _algorithm_of(next_key), fingerprint(next_pem)
        )
    algorithm = algorithm or _algorithm_of(key)
    # A name of its own: TLS stacks look up issuers by name, two CAs sharing one would
    # make them try the wrong key.
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    cert_pem, key_pem = _new_ca(algorithm, f"vpnfleet fleet CA {stamp}")
    write_atomically(pki / CA_NEXT_KEY, key_pem)
    write_atomically(pki / CA_NEXT_CERT, cert_pem)
    return CaInfo(pki / CA_NEXT_CERT, pki / CA_NEXT_KEY, algorithm, fingerprint(cert_pem))


def next_ca_pem(state_dir: Path) -> bytes | None:
    """The next CA's certificate while a rotation runs, else None."""
    try:
        return (_pki_dir(state_dir) / CA_NEXT_CERT).read_bytes()
    except FileNotFoundError:
        return None


def previous_ca_pem(state_dir: Path) -> bytes | None:
    """The promoted-away CA's certificate until the rotation drops it, else None."""
    try:
        return (_pki_dir(state_dir) / CA_PREVIOUS_CERT).read_bytes()
    except FileNotFoundError:
        return None


def plan_anchors(state_dir: Path) -> tuple[bytes, ...]:
    """The fleet's trust anchors for plans: the current CA, and the next one while a
    rotation runs (so IKE accepts certificates of either). The previous CA is not
    among them: by its promotion every certificate has been re-issued."""
    current = load_ca(state_dir)[2]
    following = next_ca_pem(state_dir)
    return (current,) if following is None else (current, following)


def trust_bundle(state_dir: Path) -> bytes:
    """Every CA whose certificates the controller accepts right now, one PEM after
    another: the current CA, the next one and the previous one while they exist."""
    pems = [load_ca(state_dir)[2], next_ca_pem(state_dir), previous_ca_pem(state_dir)]
    return b"".join(_with_newline(p) for p in dict.fromkeys(pems) if p)


def _with_newline(pem: bytes) -> bytes:
    return pem if pem.endswith(b"\n") else pem + b"\n"


def bundle_fingerprints(bundle_pem: bytes) -> list[str]:
    """Fingerprints of each certificate of a PEM bundle, in order."""
    try:
        certs = x509.load_pem_x509_certificates(bundle_pem)
    except ValueError as exc:
        raise PkiError(f"not a PEM certificate bundle: {exc}") from None
    return [fingerprint(c.public_bytes(serialization.Encoding.PEM)) for c in certs]


def promote_next_ca(state_dir: Path) -> CaInfo:
    """Make the next CA the current one; the old one stays as ca-previous (certificate
    only: nothing is signed with it any more). Safe to call again after a crash
    part-way, and after it completed."""
    pki = _pki_dir(state_dir)
    following = next_ca_pem(state_dir)
    if following is None:
        if previous_ca_pem(state_dir) is not None:  # promoted already
            return ca_info(state_dir)
        raise PkiError(f"no next CA in {pki} to promote: start with `vpnfleet rotate ca`")
    _cert, next_key, _pem = load_ca(state_dir, NEXT)
    current = (pki / CA_CERT).read_bytes()
    if current != following:
        write_atomically(pki / CA_PREVIOUS_CERT, current)
        write_atomically(pki / CA_KEY, (pki / CA_NEXT_KEY).read_bytes())
        write_atomically(pki / CA_CERT, following)
    (pki / CA_NEXT_KEY).unlink(missing_ok=True)
    (pki / CA_NEXT_CERT).unlink(missing_ok=True)
    return CaInfo(pki / CA_CERT, pki / CA_KEY, _algorithm_of(next_key), fingerprint(following))


def drop_previous_ca(state_dir: Path) -> None:
    """Forget the rolled-out CA: from now on the controller trusts only the current."""
    (_pki_dir(state_dir) / CA_PREVIOUS_CERT).unlink(missing_ok=True)


def ca_info(state_dir: Path) -> CaInfo:
    """The fleet CA in force: its files, algorithm and fingerprint."""
    pki = _pki_dir(state_dir)
    _cert, key, pem = load_ca(state_dir)
    return CaInfo(pki / CA_CERT, pki / CA_KEY, _algorithm_of(key), fingerprint(pem))


def load_ca(state_dir: Path, which: str = CURRENT) -> tuple[x509.Certificate, PrivateKey, bytes]:
    """The current (or, with ``which=NEXT``, the next) CA: certificate, key and PEM."""
    pki = _pki_dir(state_dir)
    if which not in _CA_FILES:
        raise PkiError(f"unknown CA {which!r}: choose {CURRENT} or {NEXT}")
    key_name, cert_name = _CA_FILES[which]
    try:
        cert_pem = (pki / cert_name).read_bytes()
        key_pem = (pki / key_name).read_bytes()
    except FileNotFoundError:
        if which == NEXT:
            raise PkiError(f"no next CA in {pki}: no CA rotation is running") from None
        raise PkiError(f"no fleet CA in {pki}: run `vpnfleet ca init` first") from None
    try:
        key = serialization.load_pem_private_key(key_pem, None)
        cert = x509.load_pem_x509_certificate(cert_pem)
    except ValueError as exc:
        raise PkiError(f"{pki / key_name} or {pki / cert_name} is unreadable: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey):
        raise PkiError(f"{pki / key_name} holds an unsupported key type")
    if _spki(key.public_key()) != _spki(cert.public_key()):
        raise PkiError(f"{pki / key_name} does not belong to {pki / cert_name}")
    return cert, key, cert_pem


def _issue(
    ca_cert: x509.Certificate,
    ca_key: PrivateKey,
    subject_cn: str,
    public_key: object,
    sans: list[x509.GeneralName],
    usages: list[x509.ObjectIdentifier],
) -> bytes:
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject_cn)]))
        .issuer_name(ca_cert.subject)
        .public_key(public_key)  # type: ignore[arg-type]
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=LEAF_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
    )
    if usages:
        builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    cert = builder.sign(ca_key, _hash_for(ca_key))
    return cert.public_bytes(serialization.Encoding.PEM)


def _issued_by_any(cert: x509.Certificate, bundle_pem: bytes) -> bool:
    for ca in x509.load_pem_x509_certificates(bundle_pem):
        if cert.issuer != ca.subject:
            continue
        try:
            cert.verify_directly_issued_by(ca)
            return True
        except Exception:  # another CA of the same name (an older one): try the next
            continue
    return False


def has_controller_role(cert: x509.Certificate) -> bool:
    """True when the certificate carries the controller's ExtendedKeyUsage purpose."""
    try:
        usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return False
    return CONTROLLER_ROLE in usages


def ensure_controller_cert(state_dir: Path) -> TlsCredentials:
    """The controller's TLS client certificate and the bundle it trusts agents' server
    certificates with (:func:`trust_bundle`). Kept while a CA of that bundle issued it
    (during a CA rotation: the old or the new one) and it carries the controller role;
    issued anew (key made locally) when missing or from another CA, and when it lacks
    the role (made before agents asked for it): then by the CA that issued it if that is
    the next CA of a running rotation, else by the current CA."""
    pki = _pki_dir(state_dir)
    bundle = trust_bundle(state_dir)
    cert_path, key_path = pki / CONTROLLER_CERT, pki / CONTROLLER_KEY
    if cert_path.exists() and key_path.exists():
        cert_pem, key_pem = cert_path.read_bytes(), key_path.read_bytes()
        cert = x509.load_pem_x509_certificate(cert_pem)
        key = serialization.load_pem_private_key(key_pem, None)
        if _spki(key.public_key()) == _spki(cert.public_key()) and _issued_by_any(cert, bundle):
            if has_controller_role(cert):
                return TlsCredentials(cert_pem, key_pem, bundle)
            following = next_ca_pem(state_dir)
            by_next = following is not None and _issued_by_any(cert, following)
            log.warning(
                "%s lacks the controller role (ExtendedKeyUsage %s) that agents require: "
                "re-issuing it from the %s fleet CA",
                cert_path,
                CONTROLLER_ROLE_OID,
                "next" if by_next else "current",
            )
            return reissue_controller_cert(state_dir, NEXT if by_next else CURRENT)
    return reissue_controller_cert(state_dir, CURRENT)


def reissue_controller_cert(state_dir: Path, ca: str = CURRENT) -> TlsCredentials:
    """A new key and client certificate for the controller, issued by the ``ca`` CA,
    with the controller role (:data:`CONTROLLER_ROLE`) beside clientAuth: the one
    place such a certificate is made."""
    pki = _pki_dir(state_dir)
    ca_cert, ca_key, _pem = load_ca(state_dir, ca)
    key = ec.generate_private_key(ec.SECP256R1())
    cert_pem = _issue(
        ca_cert,
        ca_key,
        CONTROLLER_NAME,
        key.public_key(),
        [x509.DNSName(CONTROLLER_NAME)],
        [ExtendedKeyUsageOID.CLIENT_AUTH, CONTROLLER_ROLE],
    )
    key_pem = _key_pem(key)
    # A crash between the two writes leaves a pair that does not match, which
    # ensure_controller_cert notices and re-issues.
    write_atomically(pki / CONTROLLER_KEY, key_pem)
    write_atomically(pki / CONTROLLER_CERT, cert_pem)
    return TlsCredentials(cert_pem, key_pem, trust_bundle(state_dir))


def ensure_join_server_cert(state_dir: Path) -> TlsCredentials:
    """The join service's TLS server certificate (CN and SAN vpnfleet-controller,
    serverAuth only) from the current CA, made when missing or from another CA. Its
    ``cert_pem`` is the chain the service presents: the certificate, then the CA, so a
    host that holds only the CA's hash (its join token) can find the CA and pin it."""
    pki = _pki_dir(state_dir)
    ca_cert, ca_key, ca_pem = load_ca(state_dir)
    cert_path, key_path = pki / JOIN_SERVER_CERT, pki / JOIN_SERVER_KEY
    try:
        cert_pem, key_pem = cert_path.read_bytes(), key_path.read_bytes()
        cert = x509.load_pem_x509_certificate(cert_pem)
        key = serialization.load_pem_private_key(key_pem, None)
        current = _spki(key.public_key()) == _spki(cert.public_key()) and _issued_by_any(
            cert, ca_pem
        )
    except (FileNotFoundError, ValueError):
        current = False
    if not current:
        new_key = ec.generate_private_key(ec.SECP256R1())
        cert_pem = _issue(
            ca_cert,
            ca_key,
            CONTROLLER_NAME,
            new_key.public_key(),
            [x509.DNSName(CONTROLLER_NAME)],
            [ExtendedKeyUsageOID.SERVER_AUTH],
        )
        key_pem = _key_pem(new_key)
        write_atomically(key_path, key_pem)
        write_atomically(cert_path, cert_pem)
    return TlsCredentials(_with_newline(cert_pem) + ca_pem, key_pem, ca_pem)


def controller_issuer(state_dir: Path) -> str:
    """Fingerprint of the CA that issued the controller's certificate ('' if none)."""
    pki = _pki_dir(state_dir)
    try:
        cert = x509.load_pem_x509_certificate((pki / CONTROLLER_CERT).read_bytes())
    except (FileNotFoundError, ValueError):
        return ""
    for pem in (load_ca(state_dir)[2], next_ca_pem(state_dir), previous_ca_pem(state_dir)):
        if pem and _issued_by_any(cert, pem):
            return fingerprint(pem)
    return ""


def _check_csr(what: str, host: str, pem: bytes) -> x509.CertificateSigningRequest:
    try:
        csr = x509.load_pem_x509_csr(pem)
    except ValueError:
        raise PkiError(f"the {what} CSR for {host} is not a PEM certificate request") from None
    if not csr.is_signature_valid:
        raise PkiError(f"the {what} CSR for {host} has an invalid signature")
    cns = [str(a.value) for a in csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    try:
        san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        dns = san.get_values_for_type(x509.DNSName)
    except x509.ExtensionNotFound:
        dns = []
    if host not in cns and host not in dns:
        named = ", ".join(dict.fromkeys(cns + dns)) or "no name"
        raise PkiError(f"the {what} CSR names {named}, not {host!r}: is it another host's?")
    return csr


def check_agent_name(host: str) -> None:
    """Raise :class:`PkiError` unless ``host`` may name an agent certificate."""
    if not _HOST_RE.match(host):
        raise PkiError(f"{host!r} is not a valid host name")
    if is_controller_name(host):
        raise PkiError(
            f"{host!r} is the controller's name ({CONTROLLER_NAME}, in any letter case): "
            "no agent certificate may bear it; give the host another name"
        )


def sign_agent_csrs(
    state_dir: Path,
    host: str,
    tls_csr_pem: bytes,
    ike_csr_pem: bytes,
    address: str | None = None,
    ca: str = CURRENT,
) -> tuple[bytes, bytes, bytes]:
    """Issue an agent's TLS and IKE certificates from its CSRs with the ``ca`` CA
    (current, or next during a CA rotation); return (tls, ike, ca) PEM."""
    check_agent_name(host)
    sans: list[x509.GeneralName] = [x509.DNSName(host)]
    if address:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(address)))
        except ValueError:
            raise PkiError(f"--address {address!r} is not an IP address") from None
    tls_csr = _check_csr("TLS", host, tls_csr_pem)
    ike_csr = _check_csr("IKE", host, ike_csr_pem)
    if _spki(tls_csr.public_key()) == _spki(ike_csr.public_key()):
        raise PkiError("the TLS and IKE CSRs carry the same key; each needs its own key pair")
    retired = StateDir(state_dir).retired_hosts()
    if host in retired:
        raise PkiError(
            f"{host!r} was decommissioned at {retired[host]} and its certificates revoked; "
            "a retired name is not issued certificates again: give the machine a new name"
        )
    ca_cert, ca_key, ca_pem = load_ca(state_dir, ca)
    tls_pem = _issue(
        ca_cert,
        ca_key,
        host,
        tls_csr.public_key(),
        [x509.DNSName(host)],
        [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
    )
    ike_pem = _issue(ca_cert, ca_key, host, ike_csr.public_key(), sans, [])
    issuer = fingerprint(ca_pem)
    _record_issued(
        state_dir,
        [
            IssuedCertificate.of(host, CertKind.TLS, tls_pem, issuer),
            IssuedCertificate.of(host, CertKind.IKE, ike_pem, issuer),
        ],
    )
    return tls_pem, ike_pem, ca_pem


# -- revocation ------------------------------------------------------------------------


class CertKind(enum.Enum):
    """What an agent certificate is for."""

    TLS = "tls"
    IKE = "ike"


def _stamp(moment: datetime.datetime) -> str:
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_stamp(text: str) -> datetime.datetime:
    return datetime.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC)


@dataclass(frozen=True, slots=True)
class IssuedCertificate:
    """One agent certificate the fleet CA issued (a line of issued.json, or of revoked.json
    with the time it was revoked)."""

    host: str
    kind: CertKind
    serial: int
    issuer: str
    """Fingerprint of the issuing CA's certificate."""
    not_after: datetime.datetime
    revoked_at: datetime.datetime | None = None

    @classmethod
    def of(cls, host: str, kind: CertKind, cert_pem: bytes, issuer: str) -> IssuedCertificate:
        cert = x509.load_pem_x509_certificate(cert_pem)
        return cls(host, kind, cert.serial_number, issuer, cert.not_valid_after_utc)

    def to_json(self) -> dict[str, str]:
        out = {
            "host": self.host,
            "kind": self.kind.value,
            "serial": f"{self.serial:x}",
            "issuer": self.issuer,
            "not_after": _stamp(self.not_after),
        }
        if self.revoked_at is not None:
            out["revoked_at"] = _stamp(self.revoked_at)
        return out

    @classmethod
    def from_json(cls, data: object) -> IssuedCertificate:
        if not isinstance(data, dict):
            raise ValueError("an entry is not a mapping")
        revoked = data.get("revoked_at")
        return cls(
            str(data["host"]),
            CertKind(data["kind"]),
            int(str(data["serial"]), 16),
            str(data["issuer"]),
            _parse_stamp(str(data["not_after"])),
            _parse_stamp(str(revoked)) if revoked else None,
        )


def _load_ledger(path: Path) -> list[IssuedCertificate]:
    try:
        data = json.loads(path.read_text())
        if not isinstance(data, list):
            raise ValueError("not a list")
        return [IssuedCertificate.from_json(item) for item in data]
    except FileNotFoundError:
        return []
    except (OSError, ValueError, KeyError) as exc:
        raise PkiError(f"{path} cannot be read ({exc}): restore it from backup") from None


def _save_ledger(path: Path, entries: list[IssuedCertificate]) -> None:
    make_private_directory(path.parent)
    write_atomically(path, json.dumps([e.to_json() for e in entries], indent=1).encode())


def _record_issued(state_dir: Path, entries: list[IssuedCertificate]) -> None:
    path = _pki_dir(state_dir) / ISSUED
    now = datetime.datetime.now(datetime.UTC)
    # Expired certificates need no revocation any more: the ledger forgets them.
    kept = [e for e in _load_ledger(path) if e.not_after > now]
    _save_ledger(path, kept + entries)


def issued_certificates(state_dir: Path, host: str | None = None) -> list[IssuedCertificate]:
    """The agent certificates issued (to ``host`` only, when given)."""
    entries = _load_ledger(_pki_dir(state_dir) / ISSUED)
    return [e for e in entries if host is None or e.host == host]


def revoked_certificates(state_dir: Path) -> list[IssuedCertificate]:
    """Every certificate revoked, in the order revoked."""
    return _load_ledger(_pki_dir(state_dir) / REVOKED)


def _fleet_issuer(cert: x509.Certificate, state_dir: Path) -> str | None:
    """Fingerprint of the fleet CA (current, next or previous) that issued ``cert``."""
    for pem in (load_ca(state_dir)[2], next_ca_pem(state_dir), previous_ca_pem(state_dir)):
        if pem and _issued_by_any(cert, pem):
            return fingerprint(pem)
    return None


def pending_revocations(
    state_dir: Path,
    host: str,
    found: tuple[tuple[CertKind, bytes], ...] = (),
    now: datetime.datetime | None = None,
) -> list[IssuedCertificate]:
    """What :func:`revoke_host` would revoke now: every unexpired certificate issued to
    ``host`` (the ledger's, and those ``found`` on the host: certificates issued before
    the ledger existed) that is not revoked yet, stamped ``now``."""
    check_agent_name(host)
    now = now or datetime.datetime.now(datetime.UTC)
    candidates = [e for e in issued_certificates(state_dir, host) if e.not_after > now]
    for kind, pem in found:
        try:
            cert = x509.load_pem_x509_certificate(pem)
        except ValueError:
            raise PkiError(f"the {kind.value} certificate found on {host} is not PEM") from None
        issuer = _fleet_issuer(cert, state_dir)
        if issuer is None:
            log.warning("%s's %s certificate is not the fleet CA's: not revoked", host, kind.value)
            continue
        candidates.append(IssuedCertificate.of(host, kind, pem, issuer))
    known = {(e.issuer, e.serial) for e in revoked_certificates(state_dir)}
    pending: list[IssuedCertificate] = []
    for entry in candidates:
        if (entry.issuer, entry.serial) in known or entry.not_after <= now:
            continue
        known.add((entry.issuer, entry.serial))
        pending.append(
            IssuedCertificate(
                entry.host, entry.kind, entry.serial, entry.issuer, entry.not_after, now
            )
        )
    return pending


def revoke_host(
    state_dir: Path,
    host: str,
    found: tuple[tuple[CertKind, bytes], ...] = (),
    now: datetime.datetime | None = None,
) -> list[IssuedCertificate]:
    """Revoke what :func:`pending_revocations` lists and retire the host's name. Returns
    the certificates revoked by this call (none when done before)."""
    now = now or datetime.datetime.now(datetime.UTC)
    added = pending_revocations(state_dir, host, found, now)
    if added:
        path = _pki_dir(state_dir) / REVOKED
        _save_ledger(path, _load_ledger(path) + added)
    StateDir(state_dir).record_retired(host, _stamp(now))
    return added


def revoked_keys(state_dir: Path) -> frozenset[tuple[bytes, int]]:
    """Every revoked certificate of a CA the controller still trusts, as (DER issuer
    name, serial), the way TLS peers are checked against them."""
    names = {}
    for pem in (load_ca(state_dir)[2], next_ca_pem(state_dir), previous_ca_pem(state_dir)):
        if pem:
            names[fingerprint(pem)] = x509.load_pem_x509_certificate(pem).subject.public_bytes()
    return frozenset(
        (names[e.issuer], e.serial) for e in revoked_certificates(state_dir) if e.issuer in names
    )


def is_revoked(state_dir: Path, cert: x509.Certificate) -> IssuedCertificate | None:
    """The revocation of ``cert`` (by its issuing fleet CA and serial), or None."""
    for entry in revoked_certificates(state_dir):
        if entry.serial == cert.serial_number:
            issuer = _fleet_issuer(cert, state_dir)
            if issuer == entry.issuer:
                return entry
    return None


def _crl_path(state_dir: Path, ca_fingerprint: str) -> Path:
    return _pki_dir(state_dir) / f"crl-{ca_fingerprint[:16]}.pem"


def _current_crl(
    path: Path, ca_cert: x509.Certificate, serials: set[int], now: datetime.datetime
) -> tuple[bytes | None, int]:
    """The CRL kept at ``path`` if it is still good for ``serials`` (else None), and
    the CRL number the next one gets."""
    try:
        pem = path.read_bytes()
        crl = x509.load_pem_x509_crl(pem)
    except (FileNotFoundError, ValueError):
        return None, 1
    try:
        number = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number + 1
    except x509.ExtensionNotFound:
        number = 1
    next_update = crl.next_update_utc
    fresh = next_update is not None and next_update - now > datetime.timedelta(days=CRL_DAYS / 2)
    listed = {r.serial_number for r in crl}
    if fresh and listed == serials and crl.is_signature_valid(ca_cert.public_key()):  # type: ignore[arg-type]
        return pem, number
    return None, number


def issue_crl(
    ca_cert: x509.Certificate,
    ca_key: PrivateKey,
    revoked: list[IssuedCertificate],
    number: int,
    now: datetime.datetime,
    days: float = CRL_DAYS,
) -> bytes:
    """An X.509 v2 CRL (RFC 5280 section 5) of ``revoked``, signed by the CA: thisUpdate
    now, nextUpdate ``days`` later, the CRL number and the CA's key identifier."""
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca_cert.subject)
        .last_update(now)
        .next_update(now + datetime.timedelta(days=days))
        .add_extension(x509.CRLNumber(number), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )
    for entry in revoked:
        assert entry.revoked_at is not None
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder()
            .serial_number(entry.serial)
            .revocation_date(entry.revoked_at)
            .add_extension(x509.CRLReason(x509.ReasonFlags.cessation_of_operation), critical=False)
            .build()
        )
    return builder.sign(ca_key, _hash_for(ca_key)).public_bytes(serialization.Encoding.PEM)


def fleet_crls(state_dir: Path, now: datetime.datetime | None = None) -> tuple[bytes, ...]:
    """The CRLs plans carry: one for each CA of :func:`plan_anchors` (the current one,
    and the next one while a CA rotation runs) that issued a revoked certificate not yet
    expired. Each is kept in STATE/pki and re-issued only when its list changes or half
    of its life is gone, so plans stay the same from one apply to the next."""
    now = now or datetime.datetime.now(datetime.UTC)
    revoked = [e for e in revoked_certificates(state_dir) if e.not_after > now]
    out: list[bytes] = []
    cas = [(CURRENT, load_ca(state_dir)[2])]
    following = next_ca_pem(state_dir)
    if following is not None:
        cas.append((NEXT, following))
    for which, ca_pem in cas:
        issuer = fingerprint(ca_pem)
        listed = [e for e in revoked if e.issuer == issuer]
        if not listed:
            continue
        ca_cert, ca_key, _pem = load_ca(state_dir, which)
        path = _crl_path(state_dir, issuer)
        pem, number = _current_crl(path, ca_cert, {e.serial for e in listed}, now)
        if pem is None:
            pem = issue_crl(ca_cert, ca_key, listed, number, now)
            write_atomically(path, pem)
        out.append(pem)
    return tuple(out)


# File names the agent uses in its state dir (agent/enroll.py); the controller never
# imports the agent, so the names are repeated here for the local helpers.
_AGENT_FILES = {
    "tls_key": "tls.key",
    "tls_csr": "tls.csr",
    "tls_cert": "tls.pem",
    "ike_key": "ike.key",
    "ike_csr": "ike.csr",
    "ike_cert": "ike.pem",
    "ca": "ca.pem",
}


def _make_csr(key: PrivateKey, host: str) -> bytes:
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
        .sign(key, _hash_for(key))
    )
    return csr.public_bytes(serialization.Encoding.PEM)


def sign_agent_dir(state_dir: Path, agent_dir: Path, host: str, address: str | None = None) -> None:
    """Sign the CSRs an agent left in ``agent_dir`` and put the certificates beside them."""
    f = _AGENT_FILES
    try:
        tls_csr = (agent_dir / f["tls_csr"]).read_bytes()
        ike_csr = (agent_dir / f["ike_csr"]).read_bytes()
    except FileNotFoundError as exc:
        raise PkiError(f"{exc.filename} is missing: run `vpnfleet-agent init` there") from None
    tls_pem, ike_pem, ca_pem = sign_agent_csrs(state_dir, host, tls_csr, ike_csr, address)
    for name, data in (("tls_cert", tls_pem), ("ike_cert", ike_pem), ("ca", ca_pem)):
        write_atomically(agent_dir / f[name], data)


def enroll_local(state_dir: Path, agent_dir: Path, host: str, address: str | None = None) -> None:
    """Lab and tests: make the agent's keys and CSRs in ``agent_dir``, sign them through
    the CSR path, and install the certificates there."""
    f = _AGENT_FILES
    make_private_directory(agent_dir)
    for key_name, csr_name in (("tls_key", "tls_csr"), ("ike_key", "ike_csr")):
        key = ec.generate_private_key(ec.SECP256R1())
        write_atomically(agent_dir / f[key_name], _key_pem(key))
        write_atomically(agent_dir / f[csr_name], _make_csr(key, host))
    sign_agent_dir(state_dir, agent_dir, host, address)


def main(argv: list[str] | None = None) -> int:
    """``python -m vpnfleet.controller.statedir.pki sign-dir --state S ROOT``: sign the CSRs
    of every agent directory ROOT/<host>/ that has no certificate yet (hollow agents, the lab)."""
    parser = argparse.ArgumentParser(prog="python -m vpnfleet.controller.statedir.pki")
    sub = parser.add_subparsers(dest="command", required=True)
    sign_dir = sub.add_parser("sign-dir", help="sign ROOT/<host>/{tls,ike}.csr for each host")
    sign_dir.add_argument("--state", required=True, type=Path, help="controller state dir")
    sign_dir.add_argument("root", type=Path)
    args = parser.parse_args(argv)
    count = 0
    try:
        for agent_dir in sorted(p for p in args.root.iterdir() if p.is_dir()):
            if (agent_dir / _AGENT_FILES["tls_csr"]).exists() and not (
                agent_dir / _AGENT_FILES["tls_cert"]
            ).exists():
                sign_agent_dir(args.state, agent_dir, agent_dir.name)
                count += 1
    except PkiError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"signed {count} agents")
    return 0


if __name__ == "__main__":
    sys.exit(main())
