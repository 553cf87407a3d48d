"""``vpnfleet-agent join``: get this host's certificates with a join token.

1. Read the token (protos/join_token.py): its id, its secret, the fleet CA's hash.
2. Find the CA: a TLS handshake with the join service that checks nothing yet, only to
   read the chain it presents, and the certificate of that chain whose SHA-256 is the
   token's. None there: stop, nothing sent, nothing written.
3. Make the TLS and IKE key pairs here (agent/enroll.py); only the CSRs leave the host.
4. Call Join over gRPC trusting that CA alone and wanting the join service's name, so
   the secret reaches only a server the fleet CA vouches for.
5. Write the keys, check the certificates against them and the CA and install them
   (:func:`enroll.install_certs`), then write the agent's configuration.

A refused join (token used, expired, for another host …) writes nothing.
"""

from __future__ import annotations

import socket
import ssl
from dataclasses import dataclass
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization

from vpnfleet.protos import join_pb2, join_pb2_grpc
from vpnfleet.protos.files import (
    PRIVATE,
    PUBLIC,
    make_private_directory,
    write_atomically,
)
from vpnfleet.protos.identity import CONTROLLER_NAME
from vpnfleet.protos.join_token import JoinToken, TokenFormatError

from .config import ConfigError, config_text
from .enroll import (
    IKE_CSR,
    IKE_KEY,
    TLS_CSR,
    TLS_KEY,
    EnrollError,
    fingerprint,
    install_certs,
    key_pem,
    make_csr,
    new_key,
)

TIMEOUT = 15.0


class JoinError(Exception):
    """The join did not happen; the message says why and what to do."""


def _der_chain(sock: ssl.SSLSocket) -> list[bytes]:
    """The certificates the server presented, unverified, leaf first."""
    public = getattr(sock, "get_unverified_chain", None)  # Python 3.13
    if public is not None:
        return list(public())
    # Before 3.13 the same method lives on the underlying _ssl object.
    chain = sock._sslobj.get_unverified_chain() or []  # type: ignore[attr-defined]
    return [c.public_bytes(ssl._ssl.ENCODING_DER) for c in chain]  # type: ignore[attr-defined]


def split_address(controller: str) -> tuple[str, int]:
    host, sep, port = controller.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise JoinError(f"--controller {controller!r} must be HOST:PORT of the join service")
    return host, int(port)


def pinned_ca(controller: str, ca_sha256: str, timeout: float = TIMEOUT) -> bytes:
    """The PEM of the CA with hash ``ca_sha256`` from the chain the join service at
    ``controller`` presents, once it is shown to have issued that service's certificate."""
    host, port = split_address(controller)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the chain is only read here, and checked below
    context.set_alpn_protocols(["h2"])
    try:
        with (
            socket.create_connection((host, port), timeout=timeout) as raw,
            context.wrap_socket(raw, server_hostname=CONTROLLER_NAME) as tls,
        ):
            ders = _der_chain(tls)
    except (OSError, ssl.SSLError) as exc:
        raise JoinError(f"cannot reach the join service at {controller}: {exc}") from None
    certs = [x509.load_der_x509_certificate(d) for d in ders]
    if not certs:
        raise JoinError(f"the join service at {controller} presented no certificate")
    for ca in certs:
        if fingerprint(ca) != ca_sha256:
            continue
        try:
            certs[0].verify_directly_issued_by(ca)
        except (ValueError, TypeError, InvalidSignature):
            break
        return ca.public_bytes(serialization.Encoding.PEM)
    presented = ", ".join(fingerprint(c)[:16] for c in certs)
    raise JoinError(
        f"the join service at {controller} is not vouched for by the CA of the token "
        f"(sha256 {ca_sha256[:16]}…; it presented {presented}): it is not this fleet's "
        "controller, or the token is from another fleet. Nothing was sent; check the "
        "address, or ask for a token of this controller"
    )


@dataclass(frozen=True, slots=True)
class Joined:
    host: str
    state_dir: Path
    config: Path


def join(
    controller: str,
    token_text: str,
    host: str,
    state_dir: Path,
    config_path: Path,
    listen: str,
    ike_key_type: str = "ecdsa-p256",
    force: bool = False,
    timeout: float = TIMEOUT,
) -> Joined:
    try:
        token = JoinToken.parse(token_text)
    except TokenFormatError as exc:
        raise JoinError(str(exc)) from None
    state_dir = state_dir.absolute()
    try:
        config = config_text(host, listen, state_dir)
    except ConfigError as exc:
        raise JoinError(str(exc)) from None
    if not force:
        present = [p for p in (state_dir / TLS_KEY, state_dir / IKE_KEY, config_path) if p.exists()]
        if present:
            raise JoinError(
                f"{', '.join(map(str, present))} exist already: this host has joined or "
                "been set up; give --force to replace its keys and configuration"
            )
    ca_pem = pinned_ca(controller, token.ca_sha256, timeout)
    tls_key, ike_key = new_key("ecdsa-p256"), new_key(ike_key_type)
    tls_csr, ike_csr = make_csr(tls_key, host), make_csr(ike_key, host)
    request = join_pb2.JoinRequest(
        token_id=token.token_id, secret=token.secret, host=host, tls_csr=tls_csr, ike_csr=ike_csr
    )
    credentials = grpc.ssl_channel_credentials(root_certificates=ca_pem)
    options = [("grpc.ssl_target_name_override", CONTROLLER_NAME)]
    with grpc.secure_channel(controller, credentials, options=options) as channel:
        try:
            response = join_pb2_grpc.JoinStub(channel).Join(request, timeout=timeout)
        except grpc.RpcError as exc:
            code, details = exc.code(), exc.details()
            if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                raise JoinError(
                    f"cannot reach the join service at {controller}: {details}"
                ) from None
            raise JoinError(f"the controller refused the join: {details}") from None
    if response.ca_cert.strip() != ca_pem.strip():
        raise JoinError("the join service answered with another CA than the one pinned")
    make_private_directory(state_dir)
    for key_name, csr_name, key, csr in (
        (TLS_KEY, TLS_CSR, tls_key, tls_csr),
        (IKE_KEY, IKE_CSR, ike_key, ike_csr),
    ):
        write_atomically(state_dir / key_name, key_pem(key), PRIVATE)
        write_atomically(state_dir / csr_name, csr, PUBLIC)
    try:
        install_certs(state_dir, response.tls_cert, response.ike_cert, response.ca_cert)
    except EnrollError as exc:
        raise JoinError(f"the certificates the controller sent do not check out: {exc}") from None
    config_path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
    write_atomically(config_path, config.encode(), PUBLIC)
    return Joined(host, state_dir, config_path)
