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

Later rotations go through the Agent API with the same two steps (PrepareEnrollment
stages new keys and returns CSRs, InstallCredentials swaps in the signed certificates);
see :func:`prepare_enrollment` and :func:`check_install` below.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from vpnfleet.protos.files import (
    PRIVATE,
    PUBLIC,
    fsync_directory,
    make_private_directory,
    write_atomically,
)

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
    make_private_directory(state_dir)
    # TLS stays on P-256: every gRPC TLS stack speaks it.
    for key_path, csr_path, key_type in (
        (files.tls_key, files.tls_csr, "ecdsa-p256"),
        (files.ike_key, files.ike_csr, ike_key_type),
    ):
        key = new_key(key_type)
        write_atomically(key_path, key_pem(key), PRIVATE)
        write_atomically(csr_path, make_csr(key, host), PUBLIC)
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
    write_atomically(state_dir / TLS_CERT, tls_cert, PUBLIC)
    write_atomically(state_dir / IKE_CERT, ike_cert, PUBLIC)
    write_atomically(state_dir / CA_CERT, ca_cert, PUBLIC)


# -- re-enrolment over the Agent API (credential rotation) ------------------------------
#
# PrepareEnrollment stages new keys beside the ones in use (``tls.key.next``,
# ``ike.key.next``, 0600); InstallCredentials checks the signed certificates, then swaps
# the whole set in as one transaction. The files are several, so a crash could leave
# some renamed and some not; a redo journal makes the swap all or nothing:
#
# 1. every new file is written and fsynced beside its target (``.tls.pem.install``; the
#    staged key is already such a file);
# 2. ``credentials.journal`` (the list of renames) is written atomically: the commit;
# 3. each rename is done, the journal removed.
#
# At start, :func:`recover_credentials` redoes the renames of a journal it finds (a
# rename already done has no source left) and removes pending files no journal names,
# so the agent loads the old set or the new one, never a mix.

STAGED_SUFFIX = ".next"
JOURNAL = "credentials.journal"
CLOCK_SKEW = datetime.timedelta(minutes=5)
"""How far in the future a certificate's notBefore may be (the CA's clock may run ahead)."""
_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----\r?\n(.*?)-----END \1-----", re.DOTALL)


class CredentialRefused(EnrollError):
    """The certificates or the bundle given are wrong (not PEM, wrong key, wrong CA …)."""


class CredentialPrecondition(EnrollError):
    """The request cannot apply to this agent's state (nothing staged, would lock out the
    caller, would break certificate peers of the plan)."""


@dataclass(frozen=True, slots=True)
class CredentialFiles:
    """Where an agent keeps its credentials: the TLS files of its configuration and the
    IKE files of its state dir."""

    state_dir: Path
    tls_key: Path
    tls_cert: Path
    ca: Path
    ike_key: Path
    ike_cert: Path

    @classmethod
    def in_state_dir(
        cls,
        state_dir: Path,
        tls_cert: Path | None = None,
        tls_key: Path | None = None,
        ca: Path | None = None,
    ) -> CredentialFiles:
        return cls(
            state_dir,
            tls_key or state_dir / TLS_KEY,
            tls_cert or state_dir / TLS_CERT,
            ca or state_dir / CA_CERT,
            state_dir / IKE_KEY,
            state_dir / IKE_CERT,
        )

    @property
    def journal(self) -> Path:
        return self.state_dir / JOURNAL

    @property
    def targets(self) -> tuple[Path, ...]:
        return (self.tls_key, self.tls_cert, self.ca, self.ike_key, self.ike_cert)


def staged(key_path: Path) -> Path:
    return key_path.with_name(key_path.name + STAGED_SUFFIX)


def _pending(target: Path) -> Path:
    return target.with_name(f".{target.name}.install")


def fingerprint(cert: x509.Certificate) -> str:
    """Hex SHA-256 of the DER encoding."""
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def prepare_enrollment(
    files: CredentialFiles, host: str, tls: bool, ike: bool, key_type: str = ""
) -> tuple[bytes, bytes]:
    """Stage new key pairs (0600) for the kinds asked for; return (TLS CSR, IKE CSR), PEM,
    empty for a kind not asked for. ``key_type`` is the IKE key's; the TLS key is always
    ECDSA P-256, as at ``init`` (gRPC's TLS offers no Ed25519 signatures)."""
    key_type = key_type or "ecdsa-p256"
    if key_type not in KEY_TYPES:
        raise CredentialRefused(
            f"unknown key type {key_type!r}; choose one of {', '.join(KEY_TYPES)}"
        )
    if not tls and not ike:
        raise CredentialRefused("nothing to prepare: ask for a TLS and/or an IKE key pair")
    make_private_directory(files.state_dir)
    csrs = {"tls": b"", "ike": b""}
    for kind, wanted, key_path, kind_type in (
        ("tls", tls, files.tls_key, "ecdsa-p256"),
        ("ike", ike, files.ike_key, key_type),
    ):
        if wanted:
            key = new_key(kind_type)
            write_atomically(staged(key_path), key_pem(key), PRIVATE)
            csrs[kind] = make_csr(key, host)
    return csrs["tls"], csrs["ike"]


def parse_ca_bundle(data: bytes, what: str = "CA bundle") -> list[x509.Certificate]:
    """One or more PEM CA certificates; text between the blocks is ignored."""
    blocks = _PEM_BLOCK.findall(data)
    if not blocks:
        raise CredentialRefused(f"the {what} holds no PEM certificate")
    out = []
    for index, (label, _) in enumerate(blocks, 1):
        if label != b"CERTIFICATE":
            raise CredentialRefused(
                f"the {what}: block {index} is a {label.decode()}, not a CERTIFICATE"
            )
    for index, match in enumerate(_PEM_BLOCK.finditer(data), 1):
        try:
            cert = x509.load_pem_x509_certificate(match.group(0))
        except ValueError as exc:
            raise CredentialRefused(
                f"the {what}: certificate {index} does not parse: {exc}"
            ) from None
        try:
            constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
            is_ca = constraints.ca
        except x509.ExtensionNotFound:
            is_ca = False
        if not is_ca:
            raise CredentialRefused(
                f"the {what}: certificate {index} ({cert.subject.rfc4514_string()}) is not a "
                "CA (no basicConstraints CA:TRUE)"
            )
        out.append(cert)
    return out


def _names(cert: x509.Certificate) -> list[str]:
    cns = [str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        dns = [str(n) for n in san.get_values_for_type(x509.DNSName)]
    except x509.ExtensionNotFound:
        dns = []
    return list(dict.fromkeys(dns + cns))


def issued_by_any(cert: x509.Certificate, cas: list[x509.Certificate]) -> x509.Certificate | None:
    """The CA of ``cas`` that issued ``cert`` directly (the fleet CA issues leaves)."""
    for ca in cas:
        try:
            cert.verify_directly_issued_by(ca)
        except (ValueError, TypeError, InvalidSignature):
            continue
        return ca
    return None


def _check_leaf(
    what: str, pem: bytes, host: str, cas: list[x509.Certificate], now: datetime.datetime
) -> x509.Certificate:
    try:
        cert = x509.load_pem_x509_certificate(pem)
    except ValueError:
        raise CredentialRefused(f"the {what} certificate is not a PEM certificate") from None
    names = _names(cert)
    if host not in names:
        raise CredentialRefused(
            f"the {what} certificate names {', '.join(names) or 'nothing'}, not this host {host!r}"
        )
    if cert.not_valid_after_utc <= now:
        raise CredentialRefused(
            f"the {what} certificate expired at {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC"
        )
    if cert.not_valid_before_utc > now + CLOCK_SKEW:
        raise CredentialRefused(
            f"the {what} certificate is not valid before "
            f"{cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC (is a clock wrong?)"
        )
    if issued_by_any(cert, cas) is None:
        raise CredentialRefused(
            f"the {what} certificate (issuer {cert.issuer.rfc4514_string()}) was not issued by "
            f"a CA of the bundle ({len(cas)} CAs)"
        )
    return cert


def _server_auth(cert: x509.Certificate) -> bool:
    try:
        usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return True  # no EKU: any use (RFC 5280 section 4.2.1.12)
    return ExtendedKeyUsageOID.SERVER_AUTH in usages


def _read_optional(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def _key_of(path: Path) -> PrivateKey | None:
    data = _read_optional(path)
    if data is None:
        return None
    try:
        key = serialization.load_pem_private_key(data, None)
    except (ValueError, TypeError):
        raise CredentialPrecondition(f"{path} is not an unencrypted PEM private key") from None
    if not isinstance(key, PrivateKey):
        raise CredentialPrecondition(f"{path}: unsupported key type {type(key).__name__}")
    return key


def _der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


@dataclass(frozen=True, slots=True)
class CredentialChange:
    """A checked InstallCredentials: what to write, and what changes in use."""

    writes: tuple[tuple[Path, bytes, int], ...] = ()
    """(target, content, mode) for certificates and the bundle."""
    promotions: tuple[tuple[Path, Path], ...] = ()
    """(staged key, target): staged keys that become the ones in use."""
    tls_changed: bool = False
    ike_pem: tuple[bytes, bytes] | None = None
    """The IKE certificate and key (PEM) that will be in use, when they change."""

    @property
    def empty(self) -> bool:
        return not self.writes and not self.promotions


def _leaf_change(
    what: str,
    pem: bytes,
    host: str,
    cas: list[x509.Certificate],
    now: datetime.datetime,
    key_path: Path,
    cert_path: Path,
) -> tuple[x509.Certificate, tuple[Path, bytes, int] | None, tuple[Path, Path] | None]:
    """Check one certificate; a certificate for the staged key promotes that key, one
    for the key in use (the same certificate again, or a re-issue) replaces only the
    certificate."""
    cert = _check_leaf(what, pem, host, cas, now)
    spki = _public(cert.public_key())
    staged_key = _key_of(staged(key_path))
    current_key = _key_of(key_path)
    if staged_key is not None and _public(staged_key.public_key()) == spki:
        return cert, (cert_path, pem, PUBLIC), (staged(key_path), key_path)
    if current_key is not None and _public(current_key.public_key()) == spki:
        current = _read_optional(cert_path)
        try:
            same = current is not None and _der(x509.load_pem_x509_certificate(current)) == _der(
                cert
            )
        except ValueError:
            same = False
        return cert, None if same else (cert_path, pem, PUBLIC), None
    if staged_key is None:
        raise CredentialPrecondition(
            f"no {what} key is staged and the {what} certificate is not for the key in use: "
            f"call PrepareEnrollment with {what.lower()} first"
        )
    raise CredentialRefused(
        f"the {what} certificate is not for the staged {what} key (signed from another "
        "host's request, or from an older PrepareEnrollment?)"
    )


def check_install(
    files: CredentialFiles,
    host: str,
    tls_cert: bytes,
    ike_cert: bytes,
    ca_bundle: bytes,
    caller_cert: bytes | None = None,
    now: datetime.datetime | None = None,
) -> CredentialChange:
    """Check an InstallCredentials request against the staged and current files; change
    nothing. An empty ``ca_bundle`` keeps the bundle in use. ``caller_cert`` (PEM) is
    the certificate of whoever asks: a bundle that would not trust it is refused, as
    the controller would lock itself out."""
    now = now or datetime.datetime.now(datetime.UTC)
    writes: list[tuple[Path, bytes, int]] = []
    promotions: list[tuple[Path, Path]] = []
    if ca_bundle:
        cas = parse_ca_bundle(ca_bundle)
        current = _read_optional(files.ca)
        try:
            current_ders = {_der(c) for c in parse_ca_bundle(current)} if current else set()
        except CredentialRefused:
            current_ders = set()
        if {_der(c) for c in cas} != current_ders:
            writes.append((files.ca, ca_bundle, PUBLIC))
            try:
                caller = x509.load_pem_x509_certificate(caller_cert) if caller_cert else None
            except ValueError:
                caller = None  # TLS verified it; nothing to judge the bundle by
            if caller is not None and issued_by_any(caller, cas) is None:
                raise CredentialPrecondition(
                    "the CA bundle does not hold the CA of the caller's own certificate "
                    f"(issuer {caller.issuer.rfc4514_string()}): installing it would lock "
                    "the controller out; switch the controller to a certificate from a CA "
                    "of the bundle first"
                )
    else:
        current = _read_optional(files.ca)
        if current is None:
            raise CredentialPrecondition(f"{files.ca} is missing and no ca_bundle was given")
        cas = parse_ca_bundle(current, f"CA bundle in use ({files.ca})")
    tls_changed = bool(writes)
    ike_pem = None
    if tls_cert:
        cert, write, promote = _leaf_change(
            "TLS", tls_cert, host, cas, now, files.tls_key, files.tls_cert
        )
        if not _server_auth(cert):
            raise CredentialRefused("the TLS certificate does not allow serverAuth use")
        writes += [write] if write else []
        promotions += [promote] if promote else []
        tls_changed = tls_changed or write is not None
    if ike_cert:
        cert, write, promote = _leaf_change(
            "IKE", ike_cert, host, cas, now, files.ike_key, files.ike_cert
        )
        writes += [write] if write else []
        promotions += [promote] if promote else []
        if write is not None:
            key_path = promote[0] if promote else files.ike_key
            ike_pem = (ike_cert, key_path.read_bytes())
    return CredentialChange(tuple(writes), tuple(promotions), tls_changed, ike_pem)


def commit_install(files: CredentialFiles, change: CredentialChange) -> None:
    """Put a checked change in place as one transaction (see the journal above)."""
    if change.empty:
        return
    moves: list[tuple[Path, Path]] = list(change.promotions)
    for target, data, mode in change.writes:
        write_atomically(_pending(target), data, mode)
        moves.append((_pending(target), target))
    journal = {"moves": [[str(src), str(dst)] for src, dst in moves]}
    write_atomically(files.journal, (json.dumps(journal) + "\n").encode(), PRIVATE)
    _roll_forward(files, moves)


def _roll_forward(files: CredentialFiles, moves: list[tuple[Path, Path]]) -> None:
    for src, dst in moves:
        if src.exists():
            os.replace(src, dst)
    for directory in {dst.parent for _, dst in moves}:
        fsync_directory(directory)
    files.journal.unlink()
    fsync_directory(files.state_dir)


def recover_credentials(files: CredentialFiles) -> list[str]:
    """Finish or forget an install a crash interrupted; return what was done, for the
    log. Call before loading any credential file."""
    done: list[str] = []
    try:
        text = files.journal.read_text()
    except FileNotFoundError:
        text = None
    if text is not None:
        try:
            moves = [(Path(src), Path(dst)) for src, dst in json.loads(text)["moves"]]
        except (ValueError, KeyError, TypeError) as exc:
            # Written atomically, so only a damaged disk gets here; the renames cannot
            # be known, leave the files as they are.
            aside = files.journal.with_name(JOURNAL + ".corrupt")
            os.replace(files.journal, aside)
            return [f"{files.journal} is unreadable ({exc}); moved to {aside}"]
        _roll_forward(files, moves)
        done.append(f"finished an interrupted credential install ({len(moves)} files)")
    for target in files.targets:
        pending = _pending(target)
        if pending.exists():
            pending.unlink()
            done.append(f"removed {pending} of an install that did not commit")
    return done


def current_fingerprints(files: CredentialFiles) -> tuple[str, str, list[str]]:
    """Fingerprints of the TLS certificate, IKE certificate and CA bundle on disk ("" or
    [] for what is missing or unreadable)."""
    out: list[str] = []
    for path in (files.tls_cert, files.ike_cert):
        data = _read_optional(path)
        try:
            out.append(fingerprint(x509.load_pem_x509_certificate(data)) if data else "")
        except ValueError:
            out.append("")
    data = _read_optional(files.ca)
    try:
        cas = [fingerprint(c) for c in parse_ca_bundle(data)] if data else []
    except CredentialRefused:
        cas = []
    return out[0], out[1], cas
