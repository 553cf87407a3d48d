"""ISAKMP payloads (RFC 2408 sections 3.2-3.16, RFC 2407 section 4.6, RFC 3947).

One frozen dataclass per payload; each parses and encodes only its body (the bytes
after the 4-octet generic header, RFC 2408 section 3.2). ``parse_payloads`` walks the
chain of Next Payload fields and ``encode_payloads`` writes it, the exact inverse
(RESERVED octets are ignored on receipt and written as zero, RFC 2408 section 3.2).

Parsing is strict and every refusal is a V1ParseError naming the payload and the
byte offset from the start of the ISAKMP message: a length below the payload's fixed
part, a length running past the message, bytes after the last payload, Proposal and
Transform chains that disagree with their counts, a "Basic" attribute in TLV form.

Unknown payload types are kept as UnknownPayload by default rather than refused:
RFC 2408 section 5.1 tells the receiver to reject them with INVALID-PAYLOAD-TYPE, but
peers send private ones (Cisco's fragments, 132) that are better stepped over, so the
exchange decides; ``reject_unknown=True`` gives the RFC's refusal, naming the type and
its offset. The NAT-D and
NAT-OA numbers of draft-ietf-ipsec-nat-t-ike-02/03 (130, 131) parse as NatDPayload
and NatOaPayload that remember their number, so they re-encode as received.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from enum import IntEnum
from typing import ClassVar

from ..buffer import pack
from ..errors import LocalError
from .attributes import Attribute, encode_attributes, parse_attributes
from .constants import (
    DOI_IPSEC,
    GENERIC_PAYLOAD_HEADER_LENGTH,
    ISAKMP_HEADER_LENGTH,
    P1_BASIC_ATTRIBUTES,
    P2_BASIC_ATTRIBUTES,
    SIT_INTEGRITY,
    SIT_SECRECY,
    CertEncoding,
    IdType,
    ModeCfgType,
    NotifyType,
    PayloadType,
    ProtocolId,
)
from .message import IsakmpHeader, V1ParseError

_GENERIC = struct.Struct("!BBH")
_SA_FIXED = struct.Struct("!II")  # DOI, Situation (RFC 2407 section 4.6.1)
_PROPOSAL = struct.Struct("!BBBB")  # number, protocol, SPI size, transform count
_TRANSFORM = struct.Struct("!BBH")  # number, transform ID, RESERVED2
_ID = struct.Struct("!BBH")  # ID type, protocol, port (RFC 2407 section 4.6.2)
_NOTIFY = struct.Struct("!IBBH")  # DOI, protocol, SPI size, notify type
_DELETE = struct.Struct("!IBBH")  # DOI, protocol, SPI size, number of SPIs
_MODE_CFG = struct.Struct("!BBH")  # type, RESERVED, identifier
_U8 = struct.Struct("!B")  # CERT encoding, CERTREQ type

_PAYLOAD_TYPES: dict[int, PayloadType] = {m.value: m for m in PayloadType}
_NOTIFY_TYPES: dict[int, NotifyType] = {m.value: m for m in NotifyType}
_PROTOCOLS: dict[int, ProtocolId] = {m.value: m for m in ProtocolId}
_ID_TYPES: dict[int, IdType] = {m.value: m for m in IdType}
_CERT_ENCODINGS: dict[int, CertEncoding] = {m.value: m for m in CertEncoding}
_MODE_CFG_TYPES: dict[int, ModeCfgType] = {m.value: m for m in ModeCfgType}

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# RFC 2407 section 4.6.2.1: identification data lengths of the address types.
_ID_DATA_LENGTHS: dict[int, int] = {
    IdType.IPV4_ADDR: 4,
    IdType.IPV6_ADDR: 16,
    IdType.IPV4_ADDR_SUBNET: 8,
    IdType.IPV6_ADDR_SUBNET: 32,
    IdType.IPV4_ADDR_RANGE: 8,
    IdType.IPV6_ADDR_RANGE: 32,
}
# RFC 3947 section 5.2: NAT-OA carries one address, ID_IPV4_ADDR or ID_IPV6_ADDR.
_NAT_OA_LENGTHS: dict[int, int] = {IdType.IPV4_ADDR: 4, IdType.IPV6_ADDR: 16}
# RFC 2409 section 5: "The length of nonce payload MUST be between 8 and 256 bytes".
NONCE_MIN, NONCE_MAX = 8, 256
# RFC 3706 section 5.3: R-U-THERE and its ACK carry a 4-octet sequence number.
_DPD_NOTIFIES = (NotifyType.R_U_THERE, NotifyType.R_U_THERE_ACK)


def _known(table: Mapping[int, IntEnum], value: int) -> int:
    return table.get(value, value)


def payload_name(payload_type: int) -> str:
    """``SA``, ``NAT_D`` ... or the bare number of an unregistered type."""
    known = _PAYLOAD_TYPES.get(payload_type)
    return known.name if known is not None else f"type {payload_type}"


def _fail(name: str, offset: int, reason: str, notify: int) -> V1ParseError:
    return V1ParseError(reason, payload=name, offset=offset, notify=notify)


def _need(name: str, offset: int, body: bytes, fixed: int) -> None:
    """Refuse a body shorter than the payload's fixed part (both counted with the
    generic header, as the Payload Length field counts)."""
    total = len(body) + GENERIC_PAYLOAD_HEADER_LENGTH
    if total < fixed:
        raise _fail(
            name,
            offset - GENERIC_PAYLOAD_HEADER_LENGTH,
            f"payload length {total} below {fixed}",
            NotifyType.PAYLOAD_MALFORMED,
        )


def _not_empty(name: str, offset: int, data: bytes, what: str) -> None:
    if not data:
        raise _fail(name, offset, f"empty {what}", NotifyType.PAYLOAD_MALFORMED)


# -- SA, Proposal, Transform (RFC 2408 sections 3.4-3.6) ------------------------------


@dataclass(frozen=True, slots=True)
class Transform:
    """RFC 2408 section 3.6: ``id`` is a TransformId (ISAKMP), EspTransform,
    AhTransform or IpcompTransform number, by the proposal's protocol."""

    number: int
    id: int
    attributes: tuple[Attribute, ...] = ()

    def encode(self, last: bool) -> bytes:
        body = pack(_TRANSFORM, self.number, self.id, 0) + encode_attributes(self.attributes)
        return _generic(PayloadType.NONE if last else PayloadType.TRANSFORM, body)


@dataclass(frozen=True, slots=True)
class Proposal:
    """RFC 2408 section 3.5. ``spi`` is empty for a phase 1 proposal (RFC 2409
    section 5: the cookies are the ISAKMP SA's SPI) and 4 octets for ESP or AH."""

    number: int
    protocol: int
    spi: bytes
    transforms: tuple[Transform, ...]

    def encode(self, last: bool) -> bytes:
        if len(self.spi) > 0xFF:
            raise LocalError(f"proposal {self.number}: SPI of {len(self.spi)} octets")
        body = b"".join(
            [
                pack(_PROPOSAL, self.number, self.protocol, len(self.spi), len(self.transforms)),
                self.spi,
                *(
                    transform.encode(i == len(self.transforms) - 1)
                    for i, transform in enumerate(self.transforms)
                ),
            ]
        )
        return _generic(PayloadType.NONE if last else PayloadType.PROPOSAL, body)


@dataclass(frozen=True, slots=True)
class SaPayload:
    """RFC 2408 section 3.4 with the IPsec DOI's Situation (RFC 2407 section 4.6.1).

    Only the IPsec DOI is spoken, and only situations without SIT_SECRECY and
    SIT_INTEGRITY (their labelled-domain fields are not parsed; strongSwan neither)."""

    payload_type: ClassVar[PayloadType] = PayloadType.SA
    doi: int
    situation: int
    proposals: tuple[Proposal, ...]

    @classmethod
    def parse_body(cls, body: bytes, offset: int) -> SaPayload:
        _need("SA payload", offset, body, 12)
        doi, situation = _SA_FIXED.unpack_from(body)
        if doi != DOI_IPSEC:
            raise _fail(
                "SA payload", offset, f"DOI {doi} is not IPsec (1)", NotifyType.DOI_NOT_SUPPORTED
            )
        if situation & (SIT_SECRECY | SIT_INTEGRITY):
            raise _fail(
                "SA payload",
                offset + 4,
                f"situation {situation:#x} has labelled secrecy or integrity",
                NotifyType.SITUATION_NOT_SUPPORTED,
            )
        chunks = _walk_substructures(
            body, 8, offset, PayloadType.PROPOSAL, "Proposal", NotifyType.BAD_PROPOSAL_SYNTAX
        )
        if not chunks:
            raise _fail("SA payload", offset + 8, "no proposal", NotifyType.BAD_PROPOSAL_SYNTAX)
        return cls(doi, situation, tuple(_parse_proposal(b, o) for b, o in chunks))

    def encode_body(self) -> bytes:
        return pack(_SA_FIXED, self.doi, self.situation) + b"".join(
            proposal.encode(i == len(self.proposals) - 1)
            for i, proposal in enumerate(self.proposals)
        )


def _walk_substructures(
    data: bytes, start: int, offset: int, own_type: PayloadType, name: str, notify: int
) -> list[tuple[bytes, int]]:
    """Split the Proposals of an SA (or Transforms of a Proposal) from ``start`` to
    the end of ``data``. Each carries a generic header whose Next Payload is its own
    type, or 0 on the last (RFC 2408 sections 3.5 and 3.6). Returns (body, offset)."""
    chunks: list[tuple[bytes, int]] = []
    pos = start
    end = len(data)
    following = int(own_type) if pos < end else 0
    while following:
        at = offset + pos
        if end - pos < GENERIC_PAYLOAD_HEADER_LENGTH:
            raise _fail(name, at, f"header needs 4 bytes, {end - pos} left", notify)
        following, _, length = _GENERIC.unpack_from(data, pos)
        if following not in (0, own_type):
            raise _fail(
                name, at, f"next payload {following}, expected {int(own_type)} or 0", notify
            )
        if length < GENERIC_PAYLOAD_HEADER_LENGTH:
            raise _fail(name, at, f"length {length} below 4", notify)
        if length > end - pos:
            raise _fail(name, at, f"length {length} runs past the {end - pos} bytes left", notify)
        chunks.append((data[pos + 4 : pos + length], at + 4))
        pos += length
    if pos != end:
        raise _fail(name, offset + pos, f"{end - pos} bytes after the last {name}", notify)
    return chunks


def _parse_proposal(body: bytes, offset: int) -> Proposal:
    _need("Proposal", offset, body, 8)
    number, protocol, spi_size, count = _PROPOSAL.unpack_from(body)
    if 4 + spi_size > len(body):
        raise _fail(
            "Proposal",
            offset + 2,
            f"SPI size {spi_size} runs past the {len(body) - 4} bytes left",
            NotifyType.BAD_PROPOSAL_SYNTAX,
        )
    chunks = _walk_substructures(
        body,
        4 + spi_size,
        offset,
        PayloadType.TRANSFORM,
        "Transform",
        NotifyType.BAD_PROPOSAL_SYNTAX,
    )
    if len(chunks) != count or not count:
        raise _fail(
            "Proposal",
            offset + 3,
            f"{count} transforms announced, {len(chunks)} present",
            NotifyType.BAD_PROPOSAL_SYNTAX,
        )
    # RFC 2409 Appendix A (ISAKMP) and RFC 2407 section 4.5 (the rest) name the
    # attributes that must be TV.
    basic = P1_BASIC_ATTRIBUTES if protocol == ProtocolId.ISAKMP else P2_BASIC_ATTRIBUTES
    return Proposal(
        number,
        _known(_PROTOCOLS, protocol),
        body[4 : 4 + spi_size],
        tuple(_parse_transform(b, o, basic) for b, o in chunks),
    )


def _parse_transform(body: bytes, offset: int, basic: frozenset[int]) -> Transform:
    _need("Transform", offset, body, 8)
    number, transform_id, _ = _TRANSFORM.unpack_from(body)
    attributes = parse_attributes(body[4:], offset + 4, payload="Transform", basic=basic)
    return Transform(number, transform_id, attributes)


# -- payloads that are a byte string after the generic header --------------------------


@dataclass(frozen=True, slots=True)
class KePayload:
    """RFC 2408 section 3.7: the key exchange data (g^x), group from the SA."""

    payload_type: ClassVar[PayloadType] = PayloadType.KE
    data: bytes

    @classmethod
    def parse_body(cls, body: bytes, offset: int) -> KePayload:
        _not_empty("KE payload", offset, body, "key exchange data")
        return cls(body)

    def encode_body(self) -> bytes:
        return self.data


@dataclass(frozen=True, slots=True)
class HashPayload:
    """RFC 2408 section 3.11."""

    payload_type: ClassVar[PayloadType] = PayloadType.HASH
    data: bytes

    @classmethod
    def parse_body(cls, body: bytes, offset: int) -> HashPayload:
        _not_empty("HASH payload", offset, body, "hash data")
        return cls(body)

    def encode_body(self) -> bytes:
        return self.data


@dataclass(frozen=True, slots=True)
class SigPayload:
    """RFC 2408 section 3.12."""

    payload_type: ClassVar[PayloadType] = PayloadType.SIG
    data: bytes

    @classmethod
    def parse_body(cls, body: bytes, offset: int) -> SigPayload:
        _not_empty("SIG payload", offset, body, "signature data")
        return cls(body)

    def encode_body(self) -> bytes:
        return self.data


@dataclass(frozen=True, slots=True)
class NoncePayload:
    """RFC 2408 section 3.13; RFC 2409 section 5 bounds the nonce to 8..256 octets."""

    payload_type: ClassVar[PayloadType] = PayloadType.NONCE
    data: bytes

    @classmethod
    def parse_body(cls, body: bytes, offset: int) -> NoncePayload:
        if not NONCE_MIN <= len(body) <= NONCE_MAX:
            raise _fail(
                "NONCE payload",
                offset,
                f"nonce of {len(body)} bytes outside {NONCE_MIN}..{NONCE_MAX}",
                NotifyType.PAYLOAD_MALFORMED,
            )
        return cls(body)

    def encode_body(self) -> bytes:
        return self.data


@dataclass(frozen=True, slots=True)
class VendorIdPayload:
    """RFC 2408 section 3.16."""

    payload_type: ClassVar[PayloadType] = PayloadType.VENDOR_ID
    data: bytes

    @classmethod
    def parse_body(cls, body: bytes, offset: int) -> VendorIdPayload:
        _not_empty("VENDOR_ID payload", offset, body, "vendor ID")
        return cls(body)

    def encode_body(self) -> bytes:
        return self.data


@dataclass(frozen=True, slots=True)
class NatDPayload:
    """RFC 3947 section 3.2: HASH(CKY-I | CKY-R | IP | Port). ``payload_type`` is 20,
    or 130 when a draft-NAT-T peer sent it (kept so it re-encodes as received)."""

    data: bytes
    payload_type: int = PayloadType.NAT_D

    @classmethod
    def parse_body(
        cls, body: bytes, offset: int, payload_type: int = PayloadType.NAT_D
    ) -> NatDPayload:
        _not_empty("NAT_D payload", offset, body, "hash")
        return cls(body, _known(_PAYLOAD_TYPES, payload_type))

    def encode_body(self) -> bytes:
        return self.data


# -- payloads with fixed fields ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class IdPayload:
    """RFC 2408 section 3.8 with the IPsec DOI fields (RFC 2407 section 4.6.2):
    ``protocol`` and ``port`` are 0 in phase 1 unless the peer binds them (UDP 500).
    ``data`` is the identification data as sent."""

    payload_type: ClassVar[PayloadType] = PayloadType.ID
    id_type: int
    protocol: int
    port: int
    data: bytes

    @classmethod
    def parse_body(cls, body: bytes, offset: int) -> IdPayload:
        _need("ID payload", offset, body, 8)
        id_type, protocol, port = _ID.unpack_from(body)
        data = body[4:]
        expected = _ID_DATA_LENGTHS.get(id_type)
        if expected is not None and len(data) != expected:
            raise _fail(
                "ID payload",
                offset + 4,
                f"{_ID_TYPES[id_type].name} needs {expected} bytes, got {len(data)}",
                NotifyType.INVALID_ID_INFORMATION,
            )
        _not_empty("ID payload", offset + 4, data, "identification data")
        return cls(_known(_ID_TYPES, id_type), protocol, port, data)

    def encode_body(self) -> bytes:
        return pack(_ID, self.id_type, self.protocol, self.port) + self.data


@dataclass(frozen=True, slots=True)
class CertPayload:
    """RFC 2408 section 3.9: ``encoding`` a CertEncoding number."""

    payload_type: ClassVar[PayloadType] = PayloadType.CERT
    encoding: int
    data: bytes

    @classmethod
    def parse_body(cls, body: bytes, offset: int) -> CertPayload:
        _need("CERT payload", offset, body, 5)
        return cls(_known(_CERT_ENCODINGS, body[0]), body[1:])

    def encode_body(self) -> bytes:
        return pack(_U8, self.encoding) + self.data


@dataclass(frozen=True, slots=True)
class CertReqPayload:
    """RFC 2408 section 3.10: ``authority`` is a DER distinguished name of an
    acceptable CA, or empty for any."""

    payload_type: ClassVar[PayloadType] = PayloadType.CERTREQ
    cert_type: int
    authority: bytes

    @classmethod
    def parse_body(cls, body: bytes, offset: int) -> CertReqPayload:
        _need("CERTREQ payload", offset, body, 5)
        return cls(_known(_CERT_ENCODINGS, body[0]), body[1:])

    def encode_body(self) -> bytes:
        return pack(_U8, self.cert_type) + self.authority


@dataclass(frozen=True, slots=True)
class NotifyPayload:
    """RFC 2408 section 3.14; ``type`` a NotifyType when registered. DPD (RFC 3706
    section 5.3) carries the cookies as SPI and a 4-octet sequence number as data."""

    payload_type: ClassVar[PayloadType] = PayloadType.NOTIFY
    doi: int
    protocol: int
    spi: bytes
    type: int
    data: bytes = b""

    @classmethod
    def parse_body(cls, body: bytes, offset: int) -> NotifyPayload:
        _need("NOTIFY payload", offset, body, 12)
        doi, protocol, spi_size, notify_type = _NOTIFY.unpack_from(body)
        if 8 + spi_size > len(body):
            raise _fail(
                "NOTIFY payload",
                offset + 5,
                f"SPI size {spi_size} runs past the {len(body) - 8} bytes left",
                NotifyType.PAYLOAD_MALFORMED,
            )
        data = body[8 + spi_size :]
        if notify_type in _DPD_NOTIFIES and len(data) != 4:
            raise _fail(
                "NOTIFY payload",
                offset + 8 + spi_size,
                f"{_NOTIFY_TYPES[notify_type].name} needs a 4-byte sequence number, "
                f"got {len(data)} bytes",
                NotifyType.PAYLOAD_MALFORMED,
            )
        return cls(
            doi,
            _known(_PROTOCOLS, protocol),
            body[8 : 8 + spi_size],
            _known(_NOTIFY_TYPES, notify_type),
            data,
        )

    @property
    def sequence(self) -> int:
        """The RFC 3706 DPD sequence number (R_U_THERE and R_U_THERE_ACK only)."""
        if self.type not in _DPD_NOTIFIES or len(self.data) != 4:
            raise LocalError(f"notify {self.type} carries no DPD sequence number")
        return int.from_bytes(self.data, "big")

    def encode_body(self) -> bytes:
        if len(self.spi) > 0xFF:
            raise LocalError(f"notify {self.type}: SPI of {len(self.spi)} octets")
        return (
            pack(_NOTIFY, self.doi, self.protocol, len(self.spi), self.type) + self.spi + self.data
        )


@dataclass(frozen=True, slots=True)
class DeletePayload:
    """RFC 2408 section 3.15: ``spis`` all of one size (16 for an ISAKMP SA: the
    cookies, RFC 2408 section 3.15; 4 for ESP and AH)."""

    payload_type: ClassVar[PayloadType] = PayloadType.DELETE
    doi: int
    protocol: int
    spis: tuple[bytes, ...]

    @classmethod
    def parse_body(cls, body: bytes, offset: int) -> DeletePayload:
        _need("DELETE payload", offset, body, 12)
        doi, protocol, spi_size, count = _DELETE.unpack_from(body)
        if spi_size * count != len(body) - 8:
            raise _fail(
                "DELETE payload",
                offset + 6,
                f"{count} SPIs of {spi_size} bytes, but {len(body) - 8} bytes follow",
                NotifyType.PAYLOAD_MALFORMED,
            )
        if count == 0:
            raise _fail("DELETE payload", offset + 6, "no SPI", NotifyType.PAYLOAD_MALFORMED)
        spis = tuple(body[8 + i * spi_size : 8 + (i + 1) * spi_size] for i in range(count))
        return cls(doi, _known(_PROTOCOLS, protocol), spis)

    def encode_body(self) -> bytes:
        size = len(self.spis[0]) if self.spis else 0
        if any(len(spi) != size for spi in self.spis) or size > 0xFF:
            raise LocalError(f"delete: SPIs of unequal or oversized lengths {self.spis!r}")
        return pack(_DELETE, self.doi, self.protocol, size, len(self.spis)) + b"".join(self.spis)


@dataclass(frozen=True, slots=True)
class AttributePayload:
    """Mode Config's ATTRIBUTE payload (draft-ietf-ipsec-isakmp-mode-cfg-05 section
    3.2), also XAUTH's: ``type`` a ModeCfgType, ``identifier`` pairs a reply with its
    request."""

    payload_type: ClassVar[PayloadType] = PayloadType.ATTRIBUTE
    type: int
    identifier: int
    attributes: tuple[Attribute, ...] = ()

    @classmethod
    def parse_body(cls, body: bytes, offset: int) -> AttributePayload:
        _need("ATTRIBUTE payload", offset, body, 8)
        cfg_type, _, identifier = _MODE_CFG.unpack_from(body)
        attributes = parse_attributes(body[4:], offset + 4, payload="ATTRIBUTE payload")
        return cls(_known(_MODE_CFG_TYPES, cfg_type), identifier, attributes)

    def encode_body(self) -> bytes:
        return pack(_MODE_CFG, self.type, 0, self.identifier) + encode_attributes(self.attributes)


@dataclass(frozen=True, slots=True)
class NatOaPayload:
    """RFC 3947 section 5.2: the original address, ID_IPV4_ADDR or ID_IPV6_ADDR
    (type 21, or 131 from a draft-NAT-T peer, kept as received)."""

    address: IpAddress
    payload_type: int = PayloadType.NAT_OA

    @classmethod
    def parse_body(
        cls, body: bytes, offset: int, payload_type: int = PayloadType.NAT_OA
    ) -> NatOaPayload:
        _need("NAT_OA payload", offset, body, 8)
        id_type = body[0]
        expected = _NAT_OA_LENGTHS.get(id_type)
        if expected is None:
            raise _fail(
                "NAT_OA payload",
                offset,
                f"ID type {id_type} is not IPV4_ADDR or IPV6_ADDR",
                NotifyType.PAYLOAD_MALFORMED,
            )
        if len(body) - 4 != expected:
            raise _fail(
                "NAT_OA payload",
                offset + 4,
                f"{_ID_TYPES[id_type].name} needs {expected} bytes, got {len(body) - 4}",
                NotifyType.PAYLOAD_MALFORMED,
            )
        return cls(ipaddress.ip_address(body[4:]), _known(_PAYLOAD_TYPES, payload_type))

    def encode_body(self) -> bytes:
        id_type = IdType.IPV4_ADDR if self.address.version == 4 else IdType.IPV6_ADDR
        return bytes([id_type, 0, 0, 0]) + self.address.packed


@dataclass(frozen=True, slots=True)
class UnknownPayload:
    """A payload type this codec does not know, kept whole (see the module notes)."""

    payload_type: int
    body: bytes

    def encode_body(self) -> bytes:
        return self.body


Payload = (
    SaPayload
    | KePayload
    | IdPayload
    | CertPayload
    | CertReqPayload
    | HashPayload
    | SigPayload
    | NoncePayload
    | NotifyPayload
    | DeletePayload
    | VendorIdPayload
    | AttributePayload
    | NatDPayload
    | NatOaPayload
    | UnknownPayload
)


_PARSERS: dict[int, Callable[[bytes, int], Payload]] = {
    PayloadType.SA: SaPayload.parse_body,
    PayloadType.KE: KePayload.parse_body,
    PayloadType.ID: IdPayload.parse_body,
    PayloadType.CERT: CertPayload.parse_body,
    PayloadType.CERTREQ: CertReqPayload.parse_body,
    PayloadType.HASH: HashPayload.parse_body,
    PayloadType.SIG: SigPayload.parse_body,
    PayloadType.NONCE: NoncePayload.parse_body,
    PayloadType.NOTIFY: NotifyPayload.parse_body,
    PayloadType.DELETE: DeletePayload.parse_body,
    PayloadType.VENDOR_ID: VendorIdPayload.parse_body,
    PayloadType.ATTRIBUTE: AttributePayload.parse_body,
}
_NAT_D_TYPES = (PayloadType.NAT_D, PayloadType.NAT_D_DRAFT)
_NAT_OA_TYPES = (PayloadType.NAT_OA, PayloadType.NAT_OA_DRAFT)
# Proposal and Transform only live inside an SA (RFC 2408 sections 3.5 and 3.6).
_NESTED_ONLY = (PayloadType.PROPOSAL, PayloadType.TRANSFORM)


# -- the chain ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RawPayload:
    """One link of a payload chain before its body is parsed: ``offset`` is where
    the body starts in the message. The exchanges hash some bodies exactly as
    received (SAi_b, IDii_b of RFC 2409 section 5), so they get these too."""

    payload_type: int
    body: bytes
    offset: int


def split_payloads(
    first_type: int,
    data: bytes,
    base_offset: int = ISAKMP_HEADER_LENGTH,
    *,
    padded: bool = False,
) -> list[RawPayload]:
    """Walk the Next Payload chain starting with ``first_type`` over ``data``.

    ``base_offset`` is data[0]'s offset in the message. The chain must end exactly
    at the end of ``data``, unless ``padded``: a decrypted body carries the cipher's
    padding after its last payload (RFC 2409 section 5.3), which the cipher has
    already checked.
    """
    if type(data) is not bytes:
        data = bytes(data)
    chain: list[RawPayload] = []
    pos = 0
    end = len(data)
    following = first_type
    while following != PayloadType.NONE:
        at = base_offset + pos
        name = f"{payload_name(following)} payload"
        if end - pos < GENERIC_PAYLOAD_HEADER_LENGTH:
            raise _fail(
                name,
                at,
                f"generic header needs 4 bytes, {end - pos} left",
                NotifyType.PAYLOAD_MALFORMED,
            )
        if following in _NESTED_ONLY:
            raise _fail(name, at, "outside an SA payload", NotifyType.INVALID_PAYLOAD_TYPE)
        current = following
        following, _, length = _GENERIC.unpack_from(data, pos)
        if length < GENERIC_PAYLOAD_HEADER_LENGTH:
            raise _fail(name, at, f"payload length {length} below 4", NotifyType.PAYLOAD_MALFORMED)
        if length > end - pos:
            raise _fail(
                name,
                at,
                f"payload length {length} runs past the {end - pos} bytes left",
                NotifyType.UNEQUAL_PAYLOAD_LENGTHS,
            )
        chain.append(RawPayload(current, data[pos + 4 : pos + length], at + 4))
        pos += length
    if pos != end and not padded:
        raise _fail(
            "message",
            base_offset + pos,
            f"{end - pos} bytes after the last payload",
            NotifyType.UNEQUAL_PAYLOAD_LENGTHS,
        )
    return chain


def parse_payload(raw: RawPayload, *, reject_unknown: bool = False) -> Payload:
    """Parse one link of a chain. An unknown type is kept as UnknownPayload, or with
    ``reject_unknown`` refused as RFC 2408 section 5.1 says (INVALID-PAYLOAD-TYPE)."""
    parser = _PARSERS.get(raw.payload_type)
    if parser is not None:
        return parser(raw.body, raw.offset)
    if raw.payload_type in _NAT_D_TYPES:
        return NatDPayload.parse_body(raw.body, raw.offset, raw.payload_type)
    if raw.payload_type in _NAT_OA_TYPES:
        return NatOaPayload.parse_body(raw.body, raw.offset, raw.payload_type)
    if reject_unknown:
        raise _fail(
            f"{payload_name(raw.payload_type)} payload",
            raw.offset - GENERIC_PAYLOAD_HEADER_LENGTH,
            f"unknown payload type {raw.payload_type}",
            NotifyType.INVALID_PAYLOAD_TYPE,
        )
    return UnknownPayload(raw.payload_type, raw.body)


def parse_payloads(
    first_type: int,
    data: bytes,
    base_offset: int = ISAKMP_HEADER_LENGTH,
    *,
    padded: bool = False,
    reject_unknown: bool = False,
) -> list[Payload]:
    """Parse a whole chain (see ``split_payloads`` and ``parse_payload``). Raises
    V1ParseError only."""
    return [
        parse_payload(raw, reject_unknown=reject_unknown)
        for raw in split_payloads(first_type, data, base_offset, padded=padded)
    ]


def _generic(following: int, body: bytes) -> bytes:
    return pack(_GENERIC, following, 0, GENERIC_PAYLOAD_HEADER_LENGTH + len(body)) + body


def encode_payloads(payloads: Sequence[Payload]) -> tuple[int, bytes]:
    """The chain's first payload type (for the header) and the chained bytes."""
    if not payloads:
        return PayloadType.NONE, b""
    parts = []
    for i, payload in enumerate(payloads):
        following = payloads[i + 1].payload_type if i + 1 < len(payloads) else PayloadType.NONE
        parts.append(_generic(following, payload.encode_body()))
    return payloads[0].payload_type, b"".join(parts)


def encode_message(header: IsakmpHeader, payloads: Sequence[Payload]) -> bytes:
    """A cleartext message: ``header`` with Next Payload and Length filled in."""
    first, body = encode_payloads(payloads)
    return seal_header(header, first, body)


def seal_header(header: IsakmpHeader, next_payload: int, body: bytes) -> bytes:
    """``header`` with ``next_payload`` and the total length set, then ``body`` (a
    chain, or its ciphertext when the ENCRYPTION flag is set)."""
    filled = replace(header, next_payload=next_payload, length=ISAKMP_HEADER_LENGTH + len(body))
    return filled.encode() + body


def parse_message(data: bytes) -> tuple[IsakmpHeader, list[Payload]]:
    """Parse a cleartext datagram (no non-ESP marker). An encrypted one is refused:
    its body must go through the cipher, then ``parse_payloads(..., padded=True)``."""
    header, body = IsakmpHeader.parse(data)
    if header.encrypted:
        raise _fail(
            "ISAKMP header",
            19,
            "ENCRYPTION flag set: decrypt the body, then parse its payloads",
            NotifyType.INVALID_FLAGS,
        )
    return header, parse_payloads(header.next_payload, body)


def describe(payloads: Iterable[Payload]) -> str:
    """strongSwan-like list for logs, e.g. ``[ SA V V V ]`` or ``[ KE No NAT-D NAT-D ]``."""
    return "[ " + " ".join(_short(p) for p in payloads) + " ]"


def _short(payload: Payload) -> str:
    match payload:
        case NotifyPayload():
            name = payload.type.name if isinstance(payload.type, NotifyType) else payload.type
            return f"N({name})"
        case DeletePayload():
            return "D"
        case UnknownPayload():
            return f"U({payload.payload_type})"
        case AttributePayload():
            kind = payload.type.name if isinstance(payload.type, ModeCfgType) else payload.type
            return f"CP({kind})"
    return _SHORT_NAMES[type(payload)]


_SHORT_NAMES: dict[type, str] = {
    SaPayload: "SA",
    KePayload: "KE",
    IdPayload: "ID",
    CertPayload: "CERT",
    CertReqPayload: "CERTREQ",
    HashPayload: "HASH",
    SigPayload: "SIG",
    NoncePayload: "No",
    VendorIdPayload: "V",
    NatDPayload: "NAT-D",
    NatOaPayload: "NAT-OA",
}
