"""The ISAKMP header (RFC 2408 section 3.1) and the codec's parse error.

``IsakmpHeader.parse`` checks what needs no keys: the length against the datagram,
the major and minor version, a non-zero initiator cookie. The body it returns is the
payload chain, or ciphertext when the ENCRYPTION flag is set; payloads.py walks the
chain once it is in the clear.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from ..buffer import pack
from ..errors import LocalError, ParseError
from .constants import (
    ISAKMP_HEADER_LENGTH,
    ISAKMP_MAJOR_VERSION,
    ISAKMP_MINOR_VERSION,
    ISAKMP_VERSION,
    ExchangeType,
    Flag,
    NotifyType,
)

_HEADER = struct.Struct("!8s8sBBBBII")
_HEADER_AFTER_COOKIES = struct.Struct("!BBBBII")
_EXCHANGES: dict[int, ExchangeType] = {m.value: m for m in ExchangeType}


class V1ParseError(ParseError):
    """A malformed ISAKMP datagram or payload: the message names the payload (or
    header) and the byte offset from the start of the ISAKMP message, e.g.
    ``ID payload at offset 76: payload length 7 below 8``.

    ``notify`` carries the RFC 2408 section 3.14.1 error type to report, when one fits.
    """


@dataclass(frozen=True, slots=True)
class IsakmpHeader:
    """RFC 2408 section 3.1.

    ``exchange`` is an ExchangeType when registered, else the bare number (the state
    machine refuses it with UNSUPPORTED_EXCHANGE_TYPE, the codec does not). ``flags``
    keeps every bit as received, so a header re-encodes byte for byte.
    """

    icookie: bytes
    rcookie: bytes
    next_payload: int
    exchange: int
    flags: Flag
    message_id: int
    length: int = ISAKMP_HEADER_LENGTH
    version: int = ISAKMP_VERSION

    @property
    def encrypted(self) -> bool:
        return bool(self.flags & Flag.ENCRYPTION)

    def encode(self) -> bytes:
        """The 28 header octets as the fields say (``length`` included as given)."""
        if len(self.icookie) != 8 or len(self.rcookie) != 8:
            raise LocalError("ISAKMP cookies are 8 octets")
        tail = pack(
            _HEADER_AFTER_COOKIES,
            self.next_payload,
            self.version,
            self.exchange,
            int(self.flags),
            self.message_id,
            self.length,
        )
        return self.icookie + self.rcookie + tail

    @classmethod
    def parse(cls, data: bytes) -> tuple[IsakmpHeader, bytes]:
        """Parse the header of a whole datagram (no non-ESP marker); return it and
        the bytes after it. Raises V1ParseError only."""
        if len(data) < ISAKMP_HEADER_LENGTH:
            raise V1ParseError(
                f"datagram of {len(data)} bytes is shorter than the "
                f"{ISAKMP_HEADER_LENGTH}-byte header",
                payload="ISAKMP header",
                offset=0,
            )
        icookie, rcookie, next_payload, version, exchange, flags, message_id, length = (
            _HEADER.unpack_from(data)
        )
        if version >> 4 != ISAKMP_MAJOR_VERSION:
            raise V1ParseError(
                f"major version {version >> 4}, only {ISAKMP_MAJOR_VERSION} is spoken",
                payload="ISAKMP header",
                offset=17,
                notify=NotifyType.INVALID_MAJOR_VERSION,
            )
        if version & 0x0F > ISAKMP_MINOR_VERSION:
            # RFC 2408 section 3.1: never accept a minor version above our own.
            raise V1ParseError(
                f"minor version {version & 0x0F} above {ISAKMP_MINOR_VERSION}",
                payload="ISAKMP header",
                offset=17,
                notify=NotifyType.INVALID_MINOR_VERSION,
            )
        if icookie == bytes(8):
            raise V1ParseError(
                "initiator cookie is zero",
                payload="ISAKMP header",
                offset=0,
                notify=NotifyType.INVALID_COOKIE,
            )
        if length != len(data):
            # RFC 2408 section 5.1: the header length must match the message.
            raise V1ParseError(
                f"header length {length} but datagram has {len(data)} bytes",
                payload="ISAKMP header",
                offset=24,
                notify=NotifyType.UNEQUAL_PAYLOAD_LENGTHS,
            )
        header = cls(
            icookie,
            rcookie,
            next_payload,
            _EXCHANGES.get(exchange, exchange),
            Flag(flags),
            message_id,
            length,
            version,
        )
        return header, data[ISAKMP_HEADER_LENGTH:]
