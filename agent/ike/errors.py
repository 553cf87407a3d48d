"""Error types of the IKE core.

Two families, as in h11: a peer's malformed or unacceptable input raises
``ParseError`` (or another ``ProtocolError``), which the core turns into an IKE
Notify or a counted drop; our own misuse of the API raises ``LocalError``.
"""

from __future__ import annotations


class IkeError(Exception):
    """Base of every error the IKE core raises on purpose."""


class ProtocolError(IkeError):
    """The peer sent something we must refuse.

    ``notify`` is the RFC 7296 section 3.10.1 error type to report (an int so this
    module needs no constants), ``notify_data`` its Notification Data.
    """

    def __init__(
        self, message: str, *, notify: int | None = None, notify_data: bytes = b""
    ) -> None:
        super().__init__(message)
        self.notify = notify
        self.notify_data = notify_data


class ParseError(ProtocolError):
    """A datagram or payload is malformed.

    ``payload`` names the payload (or header) being parsed and ``offset`` is the
    byte offset, from the start of the IKE message, where the fault was found.
    """

    def __init__(
        self,
        message: str,
        *,
        payload: str,
        offset: int,
        notify: int | None = None,
        notify_data: bytes = b"",
    ) -> None:
        super().__init__(
            f"{payload} at offset {offset}: {message}", notify=notify, notify_data=notify_data
        )
        self.reason = message
        self.payload = payload
        self.offset = offset


class CryptoError(ProtocolError):
    """Integrity check, decryption or key exchange input failed."""


class UnsupportedTransform(IkeError):
    """A transform ID (or key length) this stack does not implement was asked for."""


class LocalError(IkeError):
    """The caller used the API wrongly (our bug, never the peer's)."""
