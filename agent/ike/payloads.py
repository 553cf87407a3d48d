"""RFC 7296 section 3 payload bodies as dataclasses.

Each class parses and serialises only its body (the bytes after the 4-byte generic
payload header); message.py walks the payload chain. Parsers get the body and its
offset in the message, so every error names the payload and the byte where the
fault is. The payloads of every exchange index the body directly; the rare ones
read it through a Buffer, which raises the same errors for a short read.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass, field
from typing import ClassVar, Protocol, Self, cast

from .buffer import Buffer, BufferReadError, pack, short_read, short_read_in
from .constants import CfgType, IdType, NotifyType, PayloadType, ProtocolId, TsType, enum_or_int
from .errors import ParseError
from .sa_payload import SaPayload

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class PayloadBody(Protocol):
    payload_type: ClassVar[PayloadType]

    @classmethod
    def parse_body(cls, body: bytes, offset: int) -> Self: ...

    def serialize_body(self) -> bytes: ...


def _fail(payload: str, buf: Buffer | int, message: str, **kw: int | bytes | None) -> ParseError:
    offset = buf.offset if isinstance(buf, Buffer) else buf
    return ParseError(message, payload=payload, offset=offset, **kw)  # type: ignore[arg-type]


# Precompiled layouts of the fixed parts: two 16-bit fields (KE, SKF), the Notify
# header, and a traffic selector's type, protocol, length and port range.
_U16_U16 = struct.Struct("!HH")
_NOTIFY = struct.Struct("!BBH")
_SELECTOR = struct.Struct("!BBHHH")
_COUNT = struct.Struct("!B3x")  # a count and three reserved octets (TS, ID, AUTH)
# enum_or_int without building an enum per payload: the members by value.
_NOTIFY_TYPES: dict[int, NotifyType] = {m.value: m for m in NotifyType}


# -- simple payloads -----------------------------------------------------------


@dataclass
class KePayload:
    """RFC 7296 section 3.4."""

    payload_type: ClassVar[PayloadType] = PayloadType.KE
    group: int
    data: bytes

    @classmethod
    def parse_body(cls, body: bytes, offset: int) -> Self:
        if len(body) < 4:
            raise short_read_in((2, 2), len(body), offset)
        if len(body) == 4:
            raise _fail("KE", offset + 4, "empty key exchange data")
        return cls(_U16_U16.unpack_from(body)[0], body[4:])

    def serialize_body(self) -> bytes:
        return self.group.to_bytes(2, "big") + b"\x00\x00" + self.data


_ADDRESS_ID_LENGTHS: dict[int, int] = {IdType.ID_IPV4_ADDR: 4, IdType.ID_IPV6_ADDR: 16}
"""Octets of identification data an address ID type needs (RFC 7296 section 3.5)."""


@dataclass
class IdPayload:
    """RFC 7296 section 3.5. ``data`` is the identification data as sent."""

    payload_type: ClassVar[PayloadType] = PayloadType.IDI
    id_type: int
    data: bytes

    @classmethod
    def parse_body(cls, body: bytes, offset: int) -> Self:
        start = offset
        if len(body) < 4:
            raise short_read_in((1, 3), len(body), offset)
        id_type = body[0]
        data = body[4:]
        expected = _ADDRESS_ID_LENGTHS.get(id_type)
        if expected is not None and len(data) != expected:
            raise _fail(
                cls._name(), start, f"ID type {id_type} needs {expected} bytes, got {len(data)}"
            )
        if not data:
            raise _fail(cls._name(), start, "empty identification data")
        return cls(id_type, data)

    @classmethod
    def _name(cls) -> str:
        return cls.payload_type.name.replace("IDI", "IDi").replace("IDR", "IDr")

    def serialize_body(self) -> bytes:
        return bytes([self.id_type, 0, 0, 0]) + self.data

    def body_for_auth(self) -> bytes:
        """RFC 7296 section 2.15 IDx': the body without the generic header."""
        return self.serialize_body()


@dataclass
class IdrPayload(IdPayload):
    payload_type: ClassVar[PayloadType] = PayloadType.IDR


@dataclass
class CertPayload:
    """RFC 7296 section 3.6."""

    payload_type: ClassVar[PayloadType] = PayloadType.CERT
    encoding: int
    data: bytes

    @classmethod
    def parse_body(cls, body: bytes, offset: int) -> Self:
        if not body:
            raise short_read(1, 0, offset)
        return cls(body[0], body[1:])

    def serialize_body(self) -> bytes:
        return bytes([self.encoding]) + self.data


@dataclass
class CertReqPayload(CertPayload):
    """RFC 7296 section 3.7: ``data`` is concatenated SHA-1 hashes of CA keys."""

    payload_type: ClassVar[PayloadType] = PayloadType.CERTREQ


@dataclass
class AuthPayload:
    """RFC 7296 section 3.8."""

    payload_type: ClassVar[PayloadType] = PayloadType.AUTH
    method: int
    data: bytes

    @classmethod
    def parse_body(cls, body: bytes, offset: int) -> Self:
        if len(body) < 4:
            raise short_read_in((1, 3), len(body), offset)
        if len(body) == 4:
            raise _fail("AUTH", offset + 4, "empty authentication data")
        return cls(body[0], body[4:])

    def serialize_body(self) -> bytes:
        return bytes([self.method, 0, 0, 0]) + self.data


NONCE_MIN = 16  # RFC 7296 section 3.9
NONCE_MAX = 256


@dataclass
class NoncePayload:
    payload_type: ClassVar[PayloadType] = PayloadType.NONCE
    data: bytes

    @classmethod
    def parse_body(cls, body: bytes, offset: int) -> Self:
        if not NONCE_MIN <= len(body) <= NONCE_MAX:
            raise _fail("Nonce", offset, f"nonce of {len(body)} bytes, must be 16..256")
        return cls(body)

    def serialize_body(self) -> bytes:
        return self.data


@dataclass
class NotifyPayload:
    """RFC 7296 section 3.10."""

    payload_type: ClassVar[PayloadType] = PayloadType.NOTIFY
    notify_type: int
    data: bytes = b""
    protocol: int = 0
    spi: bytes = b""

    @classmethod
    def parse_body(cls, body: bytes, offset: int) -> Self:
        if len(body) < 4:
            raise short_read_in((1, 1, 2), len(body), offset)
        protocol, spi_size, notify_type = _NOTIFY.unpack_from(body)
        if 4 + spi_size > len(body):
            raise short_read(spi_size, len(body) - 4, offset + 4)
        return cls(
            _NOTIFY_TYPES.get(notify_type, notify_type),
            body[4 + spi_size :],
            protocol,
            body[4 : 4 + spi_size],
        )

    def serialize_body(self) -> bytes:
        header = pack(_NOTIFY, self.protocol, len(self.spi), int(self.notify_type))
        return b"".join((header, self.spi, self.data))


@dataclass
class DeletePayload:
    """RFC 7296 section 3.11."""

    payload_type: ClassVar[PayloadType] = PayloadType.DELETE
    protocol: int
    spis: list[bytes] = field(default_factory=list)

    @classmethod
    def parse_body(cls, body: bytes, offset: int) -> Self:
        buf = Buffer(body, base_offset=offset)
        start = buf.offset
        protocol = buf.pull_uint8()
        spi_size = buf.pull_uint8()
        count = buf.pull_uint16()
        if protocol == ProtocolId.IKE and (spi_size, count) != (0, 0):
            raise _fail("Delete", start, "an IKE SA delete carries no SPIs")
        if protocol in (ProtocolId.AH, ProtocolId.ESP) and spi_size != 4:
            raise _fail("Delete", start, f"SPI size {spi_size} for protocol {protocol}, must be 4")
        if spi_size * count != buf.remaining:
            raise _fail(
                "Delete",
                start,
                f"{count} SPIs of {spi_size} bytes do not fill {buf.remaining} bytes",
            )
        return cls(protocol, [buf.pull_bytes(spi_size) for _ in range(count)])

    def serialize_body(self) -> bytes:
        size = len(self.spis[0]) if self.spis else 0
        out = Buffer()
        out.push_uint8(self.protocol)
        out.push_uint8(size)
        out.push_uint16(len(self.spis))
        for spi in self.spis:
            out.push_bytes(spi)
        return out.data()


@dataclass
class VendorIdPayload:
    payload_type: ClassVar[PayloadType] = PayloadType.VENDOR_ID
    data: bytes

    @classmethod
    def parse_body(cls, body: bytes, offset: int) -> Self:
        return cls(body)

    def serialize_body(self) -> bytes:
        return self.data


# -- traffic selectors -----------------------------------------------------------


@dataclass(frozen=True)
class TrafficSelector:
    """RFC 7296 section 3.13.1: one address range, protocol and port range."""

    start_address: IpAddress
    end_address: IpAddress
    ip_protocol: int = 0
    start_port: int = 0
    end_port: int = 65535

    @property
    def ts_type(self) -> TsType:
        if self.start_address.version == 4:
            return TsType.TS_IPV4_ADDR_RANGE
        return TsType.TS_IPV6_ADDR_RANGE


@dataclass
class TsPayload:
    payload_type: ClassVar[PayloadType] = PayloadType.TSI
    selectors: list[TrafficSelector]

    @classmethod
    def parse_body(cls, body: bytes, offset: int) -> Self:
        end = len(body)
        if end < 4:
            raise short_read_in((1, 3), end, offset)
        count = body[0]
        if count == 0:
            raise _fail(cls._name(), offset, "no traffic selectors")
        selectors = []
        pos = 4
        for _ in range(count):
            if end - pos < 4:
                raise short_read_in((1, 1, 2), end - pos, offset + pos)
            ts_type, protocol, length = _NOTIFY.unpack_from(body, pos)
            known = _TS_ADDRESS.get(ts_type)
            if known is None:
                raise _fail(cls._name(), offset + pos, f"unknown traffic selector type {ts_type}")
            size, address = known
            if length != 8 + 2 * size:
                raise _fail(
                    cls._name(),
                    offset + pos,
                    f"selector length {length}, type {ts_type} needs {8 + 2 * size}",
                )
            if end - pos < length:
                raise short_read_in((1, 1, 2, 2, 2, size, size), end - pos, offset + pos)
            _, _, _, start_port, end_port = _SELECTOR.unpack_from(body, pos)
            first = address(body[pos + 8 : pos + 8 + size])
            last = address(body[pos + 8 + size : pos + length])
            selectors.append(TrafficSelector(first, last, protocol, start_port, end_port))
            pos += length
        if pos != end:
            raise _fail(cls._name(), offset + pos, f"{end - pos} bytes after {count} selectors")
        return cls(selectors)

    @classmethod
    def _name(cls) -> str:
        return cls.payload_type.name.replace("TSI", "TSi").replace("TSR", "TSr")

    def serialize_body(self) -> bytes:
        out = bytearray(pack(_COUNT, len(self.selectors)))
        for ts in self.selectors:
            addr_len = 4 if ts.start_address.version == 4 else 16
            out += pack(
                _SELECTOR,
                ts.ts_type,
                ts.ip_protocol,
                8 + 2 * addr_len,
                ts.start_port,
                ts.end_port,
            )
            out += ts.start_address.packed
            out += ts.end_address.packed
        return bytes(out)


@dataclass
class TsrPayload(TsPayload):
    payload_type: ClassVar[PayloadType] = PayloadType.TSR


# Address length and class of each selector type (section 3.13.1).
_TS_ADDRESS: dict[int, tuple[int, type[IpAddress]]] = {
    TsType.TS_IPV4_ADDR_RANGE: (4, ipaddress.IPv4Address),
    TsType.TS_IPV6_ADDR_RANGE: (16, ipaddress.IPv6Address),
}


# -- encrypted payloads (opaque here; crypto.py opens them) ------------------------


@dataclass
class SkPayload:
    """RFC 7296 section 3.14. ``first_inner`` is the generic header's Next Payload.

    ``offset`` is where the SK generic header starts in the message (set by the
    parser), which the integrity check and the AEAD AAD need.
    """

    payload_type: ClassVar[PayloadType] = PayloadType.SK
    first_inner: int
    data: bytes
    offset: int = field(default=0, compare=False)

    @classmethod
    def parse_body(cls, body: bytes, offset: int) -> Self:
        return cls(0, body)

    def serialize_body(self) -> bytes:
        return self.data


@dataclass
class SkfPayload:
    """RFC 7383 section 2.5: one encrypted fragment."""

    payload_type: ClassVar[PayloadType] = PayloadType.SKF
    first_inner: int
    fragment_number: int
    total_fragments: int
    data: bytes
    offset: int = field(default=0, compare=False)

    @classmethod
    def parse_body(cls, body: bytes, offset: int) -> Self:
        if len(body) < 4:
            raise short_read_in((2, 2), len(body), offset)
        number, total = _U16_U16.unpack_from(body)
        if number == 0 or total == 0 or number > total:
            raise _fail("SKF", offset, f"fragment {number} of {total} is out of range")
        return cls(0, number, total, body[4:])

    def serialize_body(self) -> bytes:
        return (
            self.fragment_number.to_bytes(2, "big")
            + self.total_fragments.to_bytes(2, "big")
            + self.data
        )


# -- configuration and EAP ---------------------------------------------------------


@dataclass
class CfgAttribute:
    type: int
    value: bytes = b""


@dataclass
class CpPayload:
    """RFC 7296 section 3.15."""

    payload_type: ClassVar[PayloadType] = PayloadType.CP
    cfg_type: int
    attributes: list[CfgAttribute] = field(default_factory=list)

    @classmethod
    def parse_body(cls, body: bytes, offset: int) -> Self:
        buf = Buffer(body, base_offset=offset)
        cfg_type = buf.pull_uint8()
        buf.pull_bytes(3)
        attributes = []
        while not buf.eof():
            attr_type = buf.pull_uint16() & 0x7FFF  # the top bit is reserved
            attributes.append(CfgAttribute(attr_type, buf.pull_length_prefixed_16()))
        return cls(enum_or_int(CfgType, cfg_type), attributes)

    def serialize_body(self) -> bytes:
        out = Buffer()
        out.push_uint8(int(self.cfg_type))
        out.push_bytes(b"\x00\x00\x00")
        for attr in self.attributes:
            out.push_uint16(attr.type)
            out.push_length_prefixed_16(attr.value)
        return out.data()


@dataclass
class EapPayload:
    """RFC 7296 section 3.16, parsed only so the protocol can refuse it by name."""

    payload_type: ClassVar[PayloadType] = PayloadType.EAP
    code: int
    identifier: int
    data: bytes

    @classmethod
    def parse_body(cls, body: bytes, offset: int) -> Self:
        buf = Buffer(body, base_offset=offset)
        start = buf.offset
        code = buf.pull_uint8()
        identifier = buf.pull_uint8()
        length = buf.pull_uint16()
        if length != 4 + buf.remaining:
            raise _fail(
                "EAP", start, f"EAP length {length} disagrees with payload ({4 + buf.remaining})"
            )
        return cls(code, identifier, buf.pull_rest())

    def serialize_body(self) -> bytes:
        return (
            bytes([self.code, self.identifier])
            + (4 + len(self.data)).to_bytes(2, "big")
            + self.data
        )


@dataclass
class RawPayload:
    """An unrecognised, non-critical payload kept as sent (RFC 7296 section 2.5)."""

    type: int
    data: bytes
    critical: bool = False

    def serialize_body(self) -> bytes:
        return self.data


Payload = (
    SaPayload
    | KePayload
    | IdPayload
    | CertPayload
    | AuthPayload
    | NoncePayload
    | NotifyPayload
    | DeletePayload
    | VendorIdPayload
    | TsPayload
    | SkPayload
    | SkfPayload
    | CpPayload
    | EapPayload
    | RawPayload
)

PAYLOAD_CLASSES: dict[int, type[PayloadBody]] = {
    cls.payload_type: cls
    for cls in (
        SaPayload,
        KePayload,
        IdPayload,
        IdrPayload,
        CertPayload,
        CertReqPayload,
        AuthPayload,
        NoncePayload,
        NotifyPayload,
        DeletePayload,
        VendorIdPayload,
        TsPayload,
        TsrPayload,
        SkPayload,
        SkfPayload,
        CpPayload,
        EapPayload,
    )
}

PAYLOAD_NAMES: dict[int, str] = {
    PayloadType.SA: "SA",
    PayloadType.KE: "KE",
    PayloadType.IDI: "IDi",
    PayloadType.IDR: "IDr",
    PayloadType.CERT: "CERT",
    PayloadType.CERTREQ: "CERTREQ",
    PayloadType.AUTH: "AUTH",
    PayloadType.NONCE: "Nonce",
    PayloadType.NOTIFY: "Notify",
    PayloadType.DELETE: "Delete",
    PayloadType.VENDOR_ID: "Vendor ID",
    PayloadType.TSI: "TSi",
    PayloadType.TSR: "TSr",
    PayloadType.SK: "SK",
    PayloadType.CP: "CP",
    PayloadType.EAP: "EAP",
    PayloadType.SKF: "SKF",
}


def payload_name(payload_type: int) -> str:
    return PAYLOAD_NAMES.get(payload_type, f"payload type {payload_type}")


def parse_body(payload_type: int, body: bytes, offset: int) -> Payload:
    """Parse one known payload body; BufferReadError becomes a ParseError naming it."""
    try:
        return cast(Payload, PAYLOAD_CLASSES[payload_type].parse_body(body, offset))
    except BufferReadError as exc:
        raise ParseError(
            exc.reason, payload=payload_name(payload_type), offset=exc.offset
        ) from None
    except ValueError as exc:  # a field conversion no parser expects to fail
        raise ParseError(str(exc), payload=payload_name(payload_type), offset=offset) from None
