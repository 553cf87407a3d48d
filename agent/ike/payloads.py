"""RFC 7296 section 3 payload bodies as dataclasses.

Each class parses and serialises only its body (the bytes after the 4-byte generic
payload header); message.py walks the payload chain. Parsers read from a Buffer
whose ``base_offset`` is the body's offset in the message, so every error names
the payload and the byte where the fault is.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import ClassVar, Protocol, Self, cast

from .buffer import Buffer, BufferReadError
from .constants import CfgType, NotifyType, PayloadType, ProtocolId, TsType, enum_or_int
from .errors import ParseError
from .sa_payload import Proposal, SaPayload, Transform, TransformAttribute

__all__ = ["Proposal", "SaPayload", "Transform", "TransformAttribute"]  # re-exported

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class PayloadBody(Protocol):
    payload_type: ClassVar[PayloadType]

    @classmethod
    def parse_body(cls, buf: Buffer) -> Self: ...

    def serialize_body(self) -> bytes: ...


def _fail(payload: str, buf: Buffer | int, message: str, **kw: int | bytes | None) -> ParseError:
    offset = buf.offset if isinstance(buf, Buffer) else buf
    return ParseError(message, payload=payload, offset=offset, **kw)  # type: ignore[arg-type]


# -- simple payloads -----------------------------------------------------------


@dataclass
class KePayload:
    """RFC 7296 section 3.4."""

    payload_type: ClassVar[PayloadType] = PayloadType.KE
    group: int
    data: bytes

    @classmethod
    def parse_body(cls, buf: Buffer) -> Self:
        group = buf.pull_uint16()
        buf.pull_uint16()
        if buf.eof():
            raise _fail("KE", buf, "empty key exchange data")
        return cls(group, buf.pull_rest())

    def serialize_body(self) -> bytes:
        return self.group.to_bytes(2, "big") + b"\x00\x00" + self.data


@dataclass
class IdPayload:
    """RFC 7296 section 3.5. ``data`` is the identification data as sent."""

    payload_type: ClassVar[PayloadType] = PayloadType.IDI
    id_type: int
    data: bytes

    @classmethod
    def parse_body(cls, buf: Buffer) -> Self:
        start = buf.offset
        id_type = buf.pull_uint8()
        buf.pull_bytes(3)
        data = buf.pull_rest()
        expected = {1: 4, 5: 16}.get(id_type)
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
    def parse_body(cls, buf: Buffer) -> Self:
        encoding = buf.pull_uint8()
        return cls(encoding, buf.pull_rest())

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
    def parse_body(cls, buf: Buffer) -> Self:
        method = buf.pull_uint8()
        buf.pull_bytes(3)
        if buf.eof():
            raise _fail("AUTH", buf, "empty authentication data")
        return cls(method, buf.pull_rest())

    def serialize_body(self) -> bytes:
        return bytes([self.method, 0, 0, 0]) + self.data


NONCE_MIN = 16  # RFC 7296 section 3.9
NONCE_MAX = 256


@dataclass
class NoncePayload:
    payload_type: ClassVar[PayloadType] = PayloadType.NONCE
    data: bytes

    @classmethod
    def parse_body(cls, buf: Buffer) -> Self:
        start = buf.offset
        data = buf.pull_rest()
        if not NONCE_MIN <= len(data) <= NONCE_MAX:
            raise _fail("Nonce", start, f"nonce of {len(data)} bytes, must be 16..256")
        return cls(data)

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
    def parse_body(cls, buf: Buffer) -> Self:
        protocol = buf.pull_uint8()
        spi_size = buf.pull_uint8()
        notify_type = buf.pull_uint16()
        spi = buf.pull_bytes(spi_size)
        return cls(enum_or_int(NotifyType, notify_type), buf.pull_rest(), protocol, spi)

    def serialize_body(self) -> bytes:
        out = Buffer()
        out.push_uint8(self.protocol)
        out.push_uint8(len(self.spi))
        out.push_uint16(int(self.notify_type))
        out.push_bytes(self.spi)
        out.push_bytes(self.data)
        return out.data()


@dataclass
class DeletePayload:
    """RFC 7296 section 3.11."""

    payload_type: ClassVar[PayloadType] = PayloadType.DELETE
    protocol: int
    spis: list[bytes] = field(default_factory=list)

    @classmethod
    def parse_body(cls, buf: Buffer) -> Self:
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
    def parse_body(cls, buf: Buffer) -> Self:
        return cls(buf.pull_rest())

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
    def parse_body(cls, buf: Buffer) -> Self:
        name = cls.payload_type.name.replace("TSI", "TSi").replace("TSR", "TSr")
        start = buf.offset
        count = buf.pull_uint8()
        buf.pull_bytes(3)
        if count == 0:
            raise _fail(name, start, "no traffic selectors")
        selectors = []
        for _ in range(count):
            ts_start = buf.offset
            ts_type = buf.pull_uint8()
            protocol = buf.pull_uint8()
            length = buf.pull_uint16()
            size = {TsType.TS_IPV4_ADDR_RANGE: 4, TsType.TS_IPV6_ADDR_RANGE: 16}.get(ts_type)  # type: ignore[call-overload]
            if size is None:
                raise _fail(name, ts_start, f"unknown traffic selector type {ts_type}")
            if length != 8 + 2 * size:
                raise _fail(
                    name, ts_start, f"selector length {length}, type {ts_type} needs {8 + 2 * size}"
                )
            start_port = buf.pull_uint16()
            end_port = buf.pull_uint16()
            first = ipaddress.ip_address(buf.pull_bytes(size))
            last = ipaddress.ip_address(buf.pull_bytes(size))
            selectors.append(TrafficSelector(first, last, protocol, start_port, end_port))
        if not buf.eof():
            raise _fail(name, buf, f"{buf.remaining} bytes after {count} selectors")
        return cls(selectors)

    def serialize_body(self) -> bytes:
        out = Buffer()
        out.push_uint8(len(self.selectors))
        out.push_bytes(b"\x00\x00\x00")
        for ts in self.selectors:
            addr_len = 4 if ts.start_address.version == 4 else 16
            out.push_uint8(ts.ts_type)
            out.push_uint8(ts.ip_protocol)
            out.push_uint16(8 + 2 * addr_len)
            out.push_uint16(ts.start_port)
            out.push_uint16(ts.end_port)
            out.push_bytes(ts.start_address.packed)
            out.push_bytes(ts.end_address.packed)
        return out.data()


@dataclass
class TsrPayload(TsPayload):
    payload_type: ClassVar[PayloadType] = PayloadType.TSR


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
    def parse_body(cls, buf: Buffer) -> Self:
        return cls(0, buf.pull_rest())

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
    def parse_body(cls, buf: Buffer) -> Self:
        start = buf.offset
        number = buf.pull_uint16()
        total = buf.pull_uint16()
        if number == 0 or total == 0 or number > total:
            raise _fail("SKF", start, f"fragment {number} of {total} is out of range")
        return cls(0, number, total, buf.pull_rest())

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
    def parse_body(cls, buf: Buffer) -> Self:
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
    def parse_body(cls, buf: Buffer) -> Self:
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
    cls = PAYLOAD_CLASSES[payload_type]
    buf = Buffer(body, base_offset=offset)
    try:
        return cast(Payload, cls.parse_body(buf))
    except BufferReadError as exc:
        raise ParseError(
            exc.reason, payload=payload_name(payload_type), offset=exc.offset
        ) from None
    except ValueError as exc:  # ipaddress or enum conversion of a field
        raise ParseError(str(exc), payload=payload_name(payload_type), offset=buf.offset) from None
