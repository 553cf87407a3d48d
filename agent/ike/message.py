"""IKE header and payload chain (RFC 7296 sections 3.1 and 3.2).

``parse_message`` checks every length and type it can without keys: the header,
each generic payload header, the chain of Next Payload fields, the critical bit,
and that an SK / SKF payload comes last. The encrypted payload stays opaque here;
crypto.py opens it and hands the plaintext back to ``parse_payloads``.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass, field

from .buffer import pack
from .constants import (
    GENERIC_PAYLOAD_HEADER_LENGTH,
    IKE_HEADER_LENGTH,
    IKE_MAJOR_VERSION,
    IKE_MINOR_VERSION,
    ExchangeType,
    HeaderFlag,
    NotifyType,
    PayloadType,
    enum_name,
)
from .errors import ParseError
from .payloads import (
    PAYLOAD_CLASSES,
    Payload,
    PayloadBody,
    RawPayload,
    SkfPayload,
    SkPayload,
    parse_body,
    payload_name,
)

ENCRYPTED_TYPES = (PayloadType.SK, PayloadType.SKF)

# The section 3.1 header, its fields after the two SPIs, and the section 3.2
# generic payload header.
_HEADER = struct.Struct("!8s8sBBBBII")
_HEADER_AFTER_SPIS = struct.Struct("!BBBBII")
_GENERIC = struct.Struct("!BBH")
# Known flag bits of every flags octet; the reserved ones are ignored on receipt
# (section 3.1). A table, so parsing builds no Flag per message.
_KNOWN_FLAGS = HeaderFlag.INITIATOR | HeaderFlag.VERSION | HeaderFlag.RESPONSE
_FLAGS: tuple[HeaderFlag, ...] = tuple(HeaderFlag(value & _KNOWN_FLAGS) for value in range(256))
_EXCHANGES: dict[int, ExchangeType] = {m.value: m for m in ExchangeType}
_RESPONSE = int(HeaderFlag.RESPONSE)
_INITIATOR = int(HeaderFlag.INITIATOR)


@dataclass
class IkeHeader:
    """RFC 7296 section 3.1. ``length`` is filled in when serialising."""

    spi_i: bytes
    spi_r: bytes
    next_payload: int
    exchange_type: int
    flags: HeaderFlag
    message_id: int
    major_version: int = IKE_MAJOR_VERSION
    minor_version: int = IKE_MINOR_VERSION
    length: int = 0

    @property
    def is_response(self) -> bool:
        # Bit tests on plain ints: a Flag operation builds a new Flag each time.
        return bool(int(self.flags) & _RESPONSE)

    @property
    def is_initiator(self) -> bool:
        return bool(int(self.flags) & _INITIATOR)

    def serialize(self) -> bytes:
        tail = pack(
            _HEADER_AFTER_SPIS,
            self.next_payload,
            (self.major_version << 4) | self.minor_version,
            self.exchange_type,
            int(self.flags),
            self.message_id,
            self.length,
        )
        return b"".join((self.spi_i, self.spi_r, tail))

    @classmethod
    def parse(cls, data: bytes) -> IkeHeader:
        if len(data) < IKE_HEADER_LENGTH:
            raise ParseError(
                f"datagram of {len(data)} bytes is shorter than the "
                f"{IKE_HEADER_LENGTH}-byte header",
                payload="IKE header",
                offset=0,
            )
        (spi_i, spi_r, next_payload, version, exchange_type, flags, message_id, length) = (
            _HEADER.unpack_from(data)
        )
        major = version >> 4
        if major != IKE_MAJOR_VERSION:
            # RFC 7296 section 2.5: answer with INVALID_MAJOR_VERSION carrying ours.
            raise ParseError(
                f"major version {major}, only {IKE_MAJOR_VERSION} is spoken",
                payload="IKE header",
                offset=17,
                notify=NotifyType.INVALID_MAJOR_VERSION,
            )
        if spi_i == bytes(8):
            raise ParseError(
                "initiator SPI is zero",
                payload="IKE header",
                offset=0,
                notify=NotifyType.INVALID_IKE_SPI,
            )
        if length != len(data):
            raise ParseError(
                f"header length {length} but datagram has {len(data)} bytes",
                payload="IKE header",
                offset=24,
            )
        return cls(
            spi_i,
            spi_r,
            next_payload,
            _EXCHANGES.get(exchange_type, exchange_type),
            _FLAGS[flags],
            message_id,
            major,
            version & 0x0F,
            length,
        )


@dataclass
class Message:
    """A parsed IKE message. ``payloads`` are the cleartext ones (plus SK/SKF last)."""

    header: IkeHeader
    payloads: list[Payload] = field(default_factory=list)

    @property
    def encrypted(self) -> SkPayload | SkfPayload | None:
        if self.payloads and isinstance(self.payloads[-1], SkPayload | SkfPayload):
            return self.payloads[-1]
        return None

    def get(self, cls: type[PayloadBody]) -> list[Payload]:
        return [p for p in self.payloads if type(p) is cls]

    def describe(self) -> str:
        """strongSwan-like summary, e.g. ``IKE_SA_INIT request 0 [ SA KE Nonce ]``."""
        kind = "response" if self.header.is_response else "request"
        names = " ".join(
            payload_name(p.type) if isinstance(p, RawPayload) else payload_name(p.payload_type)
            for p in self.payloads
        )
        exchange = enum_name(ExchangeType, self.header.exchange_type)
        return f"{exchange} {kind} {self.header.message_id} [ {names} ]"


def parse_message(data: bytes) -> Message:
    """Parse a whole IKE datagram (no non-ESP marker). Raises ParseError only."""
    header = IkeHeader.parse(data)
    payloads = parse_payloads(data[IKE_HEADER_LENGTH:], header.next_payload, IKE_HEADER_LENGTH)
    return Message(header, payloads)


def parse_payloads(data: bytes, first_type: int, base_offset: int) -> list[Payload]:
    """Walk a payload chain that starts with ``first_type`` and must fill ``data``.

    ``base_offset`` is the offset of data[0] in the message, so errors point into it.
    Names are looked up only for errors: this loop runs for every message.
    """
    if type(data) is not bytes:
        data = bytes(data)
    end = len(data)
    pos = 0
    payloads: list[Payload] = []
    next_type = first_type
    while next_type != PayloadType.NONE:
        start = base_offset + pos
        if end - pos < GENERIC_PAYLOAD_HEADER_LENGTH:
            raise ParseError(
                f"generic payload header needs 4 bytes, {end - pos} left",
                payload=payload_name(next_type),
                offset=start,
            )
        following, flags, length = _GENERIC.unpack_from(data, pos)
        pos += GENERIC_PAYLOAD_HEADER_LENGTH
        if length < GENERIC_PAYLOAD_HEADER_LENGTH:
            raise ParseError(
                f"payload length {length} below 4",
                payload=payload_name(next_type),
                offset=start + 2,
            )
        body_end = pos + length - GENERIC_PAYLOAD_HEADER_LENGTH
        if body_end > end:
            raise ParseError(
                f"payload length {length} runs past the end of the message "
                f"({end - pos + GENERIC_PAYLOAD_HEADER_LENGTH} bytes left)",
                payload=payload_name(next_type),
                offset=start + 2,
            )
        body = data[pos:body_end]
        pos = body_end
        payload: Payload
        if next_type in PAYLOAD_CLASSES:
            payload = parse_body(next_type, body, start + GENERIC_PAYLOAD_HEADER_LENGTH)
        elif flags & 0x80:  # the critical bit; the other 7 are reserved
            # RFC 7296 section 2.5: reject the message, naming the payload type.
            raise ParseError(
                "unsupported payload marked critical",
                payload=payload_name(next_type),
                offset=start,
                notify=NotifyType.UNSUPPORTED_CRITICAL_PAYLOAD,
                notify_data=bytes([next_type]),
            )
        else:
            payload = RawPayload(next_type, body, False)
        if isinstance(payload, SkPayload | SkfPayload):
            payload.first_inner = following
            payload.offset = start
            payloads.append(payload)
            if pos != end:
                raise ParseError(
                    f"{end - pos} bytes follow the encrypted payload, which must be last",
                    payload=payload_name(next_type),
                    offset=base_offset + pos,
                )
            return payloads
        payloads.append(payload)
        next_type = following
    if pos != end:
        raise ParseError(
            f"{end - pos} bytes after the last payload",
            payload="payload chain",
            offset=base_offset + pos,
        )
    return payloads


def serialize_payloads(
    payloads: Sequence[Payload], *, next_after_last: int = 0
) -> tuple[int, bytes]:
    """Chain payloads; return (type of the first, bytes). SK/SKF must come last."""
    out = bytearray()
    final = len(payloads) - 1
    for index, payload in enumerate(payloads):
        if index < final:
            following = _type_of(payloads[index + 1])
        elif isinstance(payload, SkPayload | SkfPayload):
            following = payload.first_inner
        else:
            following = next_after_last
        body = payload.serialize_body()
        critical = 0x80 if isinstance(payload, RawPayload) and payload.critical else 0
        length = GENERIC_PAYLOAD_HEADER_LENGTH + len(body)
        out += pack(_GENERIC, following, critical, length)
        out += body
    first = _type_of(payloads[0]) if payloads else PayloadType.NONE
    return first, bytes(out)


def _type_of(payload: Payload) -> int:
    return payload.type if isinstance(payload, RawPayload) else payload.payload_type


def serialize_message(header: IkeHeader, payloads: Sequence[Payload]) -> bytes:
    """Serialise a cleartext message (IKE_SA_INIT, or one whose SK is already built)."""
    first, body = serialize_payloads(payloads)
    header.next_payload = first
    header.length = IKE_HEADER_LENGTH + len(body)
    return header.serialize() + body
