"""IKE header and payload chain (RFC 7296 sections 3.1 and 3.2).

``parse_message`` checks every length and type it can without keys: the header,
each generic payload header, the chain of Next Payload fields, the critical bit,
and that an SK / SKF payload comes last. The encrypted payload stays opaque here;
crypto.py opens it and hands the plaintext back to ``parse_payloads``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from .buffer import Buffer, BufferReadError
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
        return bool(self.flags & HeaderFlag.RESPONSE)

    @property
    def is_initiator(self) -> bool:
        return bool(self.flags & HeaderFlag.INITIATOR)

    def serialize(self) -> bytes:
        out = Buffer()
        out.push_bytes(self.spi_i)
        out.push_bytes(self.spi_r)
        out.push_uint8(self.next_payload)
        out.push_uint8((self.major_version << 4) | self.minor_version)
        out.push_uint8(self.exchange_type)
        out.push_uint8(int(self.flags))
        out.push_uint32(self.message_id)
        out.push_uint32(self.length)
        return out.data()

    @classmethod
    def parse(cls, data: bytes) -> IkeHeader:
        if len(data) < IKE_HEADER_LENGTH:
            raise ParseError(
                f"datagram of {len(data)} bytes is shorter than the "
                f"{IKE_HEADER_LENGTH}-byte header",
                payload="IKE header",
                offset=0,
            )
        buf = Buffer(data[:IKE_HEADER_LENGTH])
        spi_i = buf.pull_bytes(8)
        spi_r = buf.pull_bytes(8)
        next_payload = buf.pull_uint8()
        version = buf.pull_uint8()
        exchange_type = buf.pull_uint8()
        flags = buf.pull_uint8()
        message_id = buf.pull_uint32()
        length = buf.pull_uint32()
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
        # Unknown flag bits are reserved: ignored on receipt (section 3.1).
        known = HeaderFlag.INITIATOR | HeaderFlag.VERSION | HeaderFlag.RESPONSE
        return cls(
            spi_i,
            spi_r,
            next_payload,
            _exchange(exchange_type),
            HeaderFlag(flags & known),
            message_id,
            major,
            version & 0x0F,
            length,
        )


def _exchange(value: int) -> int:
    try:
        return ExchangeType(value)
    except ValueError:
        return value


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
    """
    buf = Buffer(data, base_offset=base_offset)
    payloads: list[Payload] = []
    next_type = first_type
    while next_type != PayloadType.NONE:
        start = buf.offset
        name = payload_name(next_type)
        try:
            following = buf.pull_uint8()
            critical = bool(buf.pull_uint8() & 0x80)  # the other 7 bits are reserved
            length = buf.pull_uint16()
        except BufferReadError:
            raise ParseError(
                f"generic payload header needs 4 bytes, {buf.remaining} left",
                payload=name,
                offset=start,
            ) from None
        if length < GENERIC_PAYLOAD_HEADER_LENGTH:
            raise ParseError(f"payload length {length} below 4", payload=name, offset=start + 2)
        if length - GENERIC_PAYLOAD_HEADER_LENGTH > buf.remaining:
            raise ParseError(
                f"payload length {length} runs past the end of the message "
                f"({buf.remaining + GENERIC_PAYLOAD_HEADER_LENGTH} bytes left)",
                payload=name,
                offset=start + 2,
            )
        body = buf.pull_bytes(length - GENERIC_PAYLOAD_HEADER_LENGTH)
        body_offset = start + GENERIC_PAYLOAD_HEADER_LENGTH
        payload: Payload
        if next_type in PAYLOAD_CLASSES:
            payload = parse_body(next_type, body, body_offset)
        elif critical:
            # RFC 7296 section 2.5: reject the message, naming the payload type.
            raise ParseError(
                "unsupported payload marked critical",
                payload=name,
                offset=start,
                notify=NotifyType.UNSUPPORTED_CRITICAL_PAYLOAD,
                notify_data=bytes([next_type]),
            )
        else:
            payload = RawPayload(next_type, body, critical)
        if isinstance(payload, SkPayload | SkfPayload):
            payload.first_inner = following
            payload.offset = start
            payloads.append(payload)
            if not buf.eof():
                raise ParseError(
                    f"{buf.remaining} bytes follow the encrypted payload, which must be last",
                    payload=name,
                    offset=buf.offset,
                )
            return payloads
        payloads.append(payload)
        next_type = following
    if not buf.eof():
        raise ParseError(
            f"{buf.remaining} bytes after the last payload",
            payload="payload chain",
            offset=buf.offset,
        )
    return payloads


def serialize_payloads(
    payloads: Sequence[Payload], *, next_after_last: int = 0
) -> tuple[int, bytes]:
    """Chain payloads; return (type of the first, bytes). SK/SKF must come last."""
    out = Buffer()
    for index, payload in enumerate(payloads):
        if index + 1 < len(payloads):
            following = _type_of(payloads[index + 1])
        elif isinstance(payload, SkPayload | SkfPayload):
            following = payload.first_inner
        else:
            following = next_after_last
        body = payload.serialize_body()
        out.push_uint8(following)
        out.push_uint8(0x80 if isinstance(payload, RawPayload) and payload.critical else 0)
        out.push_uint16(GENERIC_PAYLOAD_HEADER_LENGTH + len(body))
        out.push_bytes(body)
    first = _type_of(payloads[0]) if payloads else PayloadType.NONE
    return first, out.data()


def _type_of(payload: Payload) -> int:
    return payload.type if isinstance(payload, RawPayload) else payload.payload_type


def serialize_message(header: IkeHeader, payloads: Sequence[Payload]) -> bytes:
    """Serialise a cleartext message (IKE_SA_INIT, or one whose SK is already built)."""
    first, body = serialize_payloads(payloads)
    header.next_payload = first
    header.length = IKE_HEADER_LENGTH + len(body)
    return header.serialize() + body
