"""Error types of the IKE core: one root per side, as in h11.

- ``ProtocolError`` is the root of the peer's faults: a malformed datagram
  (``ParseError``), a failed integrity check or bad key exchange value
  (``CryptoError``), an unacceptable offer. The core turns these into an IKE Notify
  or a counted drop, and code that drops a peer's bad datagram catches this root and
  nothing wider.
- ``LocalError`` is the root of our own faults: the API used wrongly, or a
  configuration the core cannot honour (``UnsupportedTransform``), or a command the
  IKE SA cannot take in its state (``CommandRefused``). It is never the peer's doing,
  so nothing catches it to drop a datagram: it raises to the caller.

The two roots share no base class but ``Exception``, so ``except ProtocolError``
cannot swallow our own bugs.
"""

from __future__ import annotations


class ProtocolError(Exception):
    """The peer sent something we must refuse: the root of every peer fault.

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


class LocalError(Exception):
    """The caller used the API wrongly, or configured what the core cannot do: the root
    of our own faults, never the peer's."""


class CommandRefused(LocalError):
    """An IkeSa command (rekey, delete, create or rekey a child, check liveness) given
    when the SA cannot take it: not established, the child gone, a rekey already under
    way. A driver racing the peer meets this and may retry; it is narrower than
    LocalError, so catching it does not hide other bugs of ours."""


class UnsupportedTransform(LocalError):
    """A transform ID (or key length) this stack does not implement was configured.

    Only our configuration names transforms by ID: a peer's proposals are matched
    against ours, never looked up, so a peer cannot raise this."""
