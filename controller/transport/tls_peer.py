"""The certificates an agent presented on a gRPC channel's TLS connections.

gRPC checks an agent's server certificate against the fleet CA and against the name the
controller asks for (``grpc.ssl_target_name_override``), but compares names the way TLS
does, without letter case (RFC 6125 section 6.4.1): a certificate for ``A1`` passes for
host ``a1``. The controller wants the exact name, so it looks at the certificate itself
once the handshake is done. gRPC Python shows a client no auth context; its channelz
registry does: every connection (socket) of a channel carries the certificate the peer
presented (``security.tls.remote_certificate``). This module reads it from there.

Channelz knows channels by number only, and numbers them when it is first asked about
them (closed channels linger a while), so a new channel is found by asking before and
after making it: :func:`open_channel`.
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from cryptography import x509
from grpc._cython import cygrpc  # channelz's registry, as grpcio-channelz reads it

T = TypeVar("T")

_lock = threading.Lock()
_watermark = 0  # above every channelz number given so far


class PeerCertificateError(Exception):
    """Channelz does not tell what certificate a connection's peer presented."""


def _channelz(call: Any, *args: int) -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads(call(*args))
    except ValueError as exc:  # a channel or socket gone since it was listed
        raise PeerCertificateError(str(exc)) from None
    return data


def _channels_from(start: int) -> tuple[list[tuple[int, str]], int]:
    """(number and target of every top channel numbered ``start`` or above, the highest
    number seen or ``start - 1``). Asking numbers every channel not numbered yet, above
    every number given before."""
    found: list[tuple[int, str]] = []
    highest = start - 1
    while True:
        page = _channelz(cygrpc.channelz_get_top_channels, start)
        channels = page.get("channel", [])
        for channel in channels:
            number = int(channel["ref"]["channelId"])
            highest = max(highest, number)
            found.append((number, str(channel.get("data", {}).get("target", ""))))
        if page.get("end") or not channels:
            return found, highest
        start = highest + 1


def open_channel(target: str, make: Callable[[], T]) -> tuple[T, int | None]:
    """``make()`` a channel to ``target``; return it with its channelz number (None when
    channelz shows not exactly one new channel to ``target``: channelz disabled, or
    another thread made one to the same target at the same moment)."""
    global _watermark
    names = {target, f"dns:///{target}"}
    with _lock:
        _, before = _channels_from(_watermark)  # every channel made so far gets its number
        channel = make()
        after, highest = _channels_from(before + 1)
        _watermark = highest + 1
    ours = [number for number, name in after if name in names]
    return channel, ours[0] if len(ours) == 1 else None


def connection_certificates(channel: int) -> dict[int, bytes]:
    """The certificate each open connection of ``channel`` was presented, by socket
    number; empty while the channel has no connection."""
    top = _channelz(cygrpc.channelz_get_channel, channel).get("channel", {})
    out: dict[int, bytes] = {}
    for sub_ref in top.get("subchannelRef", []):
        sub = _channelz(cygrpc.channelz_get_subchannel, int(sub_ref["subchannelId"]))
        for socket_ref in sub.get("subchannel", {}).get("socketRef", []):
            number = int(socket_ref["socketId"])
            socket = _channelz(cygrpc.channelz_get_socket, number).get("socket", {})
            encoded = socket.get("security", {}).get("tls", {}).get("remoteCertificate", "")
            if not encoded:
                raise PeerCertificateError(f"connection {number} shows no TLS peer certificate")
            out[number] = base64.b64decode(encoded)
    return out


def _parse(cert: bytes) -> x509.Certificate:
    try:
        if cert.lstrip().startswith(b"-----BEGIN"):
            return x509.load_pem_x509_certificate(cert)
        return x509.load_der_x509_certificate(cert)
    except ValueError as exc:
        raise PeerCertificateError(f"the peer certificate cannot be read: {exc}") from None


def issuer_and_serial(cert: bytes) -> tuple[bytes, int]:
    """The certificate's (DER issuer name, serial): how a CRL names it (RFC 5280 5.3)."""
    parsed = _parse(cert)
    return parsed.issuer.public_bytes(), parsed.serial_number


def dns_names(cert: bytes) -> list[str]:
    """The DNS names of the certificate's subjectAltName, as written in it (gRPC gives
    the certificate as PEM; DER is read too)."""
    parsed = _parse(cert)
    try:
        san = parsed.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return list(san.get_values_for_type(x509.DNSName))
