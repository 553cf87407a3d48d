"""The Security Association payload (RFC 7296 section 3.3): proposals, transforms
and transform attributes, with every length, count and "last" flag checked."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import ClassVar, Self

from .buffer import pack, short_read, short_read_in
from .constants import PayloadType, ProtocolId, TransformAttributeType, TransformType
from .errors import ParseError


def _fail(offset: int, message: str) -> ParseError:
    return ParseError(message, payload="SA", offset=offset)


@dataclass
class TransformAttribute:
    """RFC 7296 section 3.3.5. TV format (AF=1) carries a 16-bit value."""

    type: int
    value: bytes | int

    @property
    def is_tv(self) -> bool:
        return isinstance(self.value, int)


@dataclass
class Transform:
    type: TransformType | int
    id: int
    attributes: list[TransformAttribute] = field(default_factory=list)

    @property
    def key_length(self) -> int | None:
        for attr in self.attributes:
            if attr.type == TransformAttributeType.KEY_LENGTH and isinstance(attr.value, int):
                return attr.value
        return None

    @classmethod
    def with_key_length(cls, type: TransformType, id: int, key_bits: int | None) -> Transform:
        attrs = (
            []
            if key_bits is None
            else [TransformAttribute(TransformAttributeType.KEY_LENGTH, key_bits)]
        )
        return cls(type, id, attrs)


@dataclass
class Proposal:
    number: int
    protocol: ProtocolId | int
    spi: bytes
    transforms: list[Transform]


@dataclass
class SaPayload:
    payload_type: ClassVar[PayloadType] = PayloadType.SA
    proposals: list[Proposal]

    @classmethod
    def parse_body(cls, body: bytes, offset: int) -> Self:
        """Parse the body found at ``offset`` in the message; errors point into it."""
        end = len(body)
        if end == 0:
            raise _fail(offset, "no proposals")
        proposals: list[Proposal] = []
        pos = 0
        while pos < end:
            start = offset + pos
            if end - pos < 4:
                raise short_read_in((1, 1, 2), end - pos, start)
            last, _, length = _HEADER.unpack_from(body, pos)
            if last not in (0, 2):
                raise _fail(start, f"proposal 'last' field is {last}, expected 0 or 2")
            if length < 8:
                raise _fail(start, f"proposal length {length} below 8")
            pos += 4
            if length - 4 > end - pos:
                raise short_read(length - 4, end - pos, offset + pos)
            proposal_end = pos + length - 4
            proposals.append(_parse_proposal(body, pos, proposal_end, offset))
            pos = proposal_end
            if (last == 0) != (pos >= end):
                raise _fail(start, "proposal 'last' field disagrees with payload length")
        return cls(proposals)

    def serialize_body(self) -> bytes:
        out = bytearray()
        for index, prop in enumerate(self.proposals):
            inner = bytearray(
                pack(_PROPOSAL, prop.number, prop.protocol, len(prop.spi), len(prop.transforms))
            )
            inner += prop.spi
            final = len(prop.transforms) - 1
            for t_index, transform in enumerate(prop.transforms):
                attrs = bytearray()
                for attr in transform.attributes:
                    if isinstance(attr.value, int):
                        attrs += pack(_HEADER_TV, 0x8000 | attr.type, attr.value)
                    else:
                        attrs += pack(_HEADER_TV, attr.type, len(attr.value))
                        attrs += attr.value
                inner += pack(
                    _TRANSFORM,
                    0 if t_index == final else 3,
                    8 + len(attrs),
                    transform.type,
                    transform.id,
                )
                inner += attrs
            out += pack(_HEADER, 0 if index == len(self.proposals) - 1 else 2, 0, 4 + len(inner))
            out += inner
        return bytes(out)


# Precompiled layouts (section 3.3.1, 3.3.2, 3.3.5): a substructure's header
# (last, reserved, length), a proposal's fixed part, a transform header, and a
# transform attribute's type with its TV value or TLV length.
_HEADER = struct.Struct("!BBH")
_PROPOSAL = struct.Struct("!BBBB")
_TRANSFORM = struct.Struct("!BxHBxH")
_HEADER_TV = struct.Struct("!HH")
# enum_or_int without building an enum per field: the members by value.
_TRANSFORM_TYPES: dict[int, TransformType] = {m.value: m for m in TransformType}
_PROTOCOLS: dict[int, ProtocolId] = {m.value: m for m in ProtocolId}


def _parse_proposal(body: bytes, pos: int, end: int, offset: int) -> Proposal:
    """The proposal in body[pos:end] (after its 4-byte header); ``offset`` is body[0]'s."""
    start = offset + pos - 4
    if end - pos < 4:
        raise short_read_in((1, 1, 1, 1), end - pos, offset + pos)
    number, protocol, spi_size, count = _PROPOSAL.unpack_from(body, pos)
    if number == 0:
        raise _fail(start, "proposal number 0")
    # A request numbers its first proposal 1, but a response echoes the number of
    # the proposal it accepted (section 3.3.1), so only 0 is always wrong.
    pos += 4
    if spi_size > end - pos:
        raise short_read(spi_size, end - pos, offset + pos)
    spi = body[pos : pos + spi_size]
    pos += spi_size
    transforms: list[Transform] = []
    while pos < end:
        t_start = offset + pos
        if end - pos < 4:
            raise short_read_in((1, 1, 2), end - pos, t_start)
        last, _, length = _HEADER.unpack_from(body, pos)
        if last not in (0, 3):
            raise _fail(t_start, f"transform 'last' field is {last}, expected 0 or 3")
        if length < 8:
            raise _fail(t_start, f"transform length {length} below 8")
        pos += 4
        if length - 4 > end - pos:
            raise short_read(length - 4, end - pos, offset + pos)
        t_end = pos + length - 4
        # length >= 8, so the type, reserved octet and ID are all there.
        t_type, _, t_id = _HEADER.unpack_from(body, pos)
        pos += 4
        attributes: list[TransformAttribute] = []
        while pos < t_end:
            if t_end - pos < 4:
                raise short_read_in((2, 2), t_end - pos, offset + pos)
            a_type, value = _HEADER_TV.unpack_from(body, pos)
            pos += 4
            if a_type & 0x8000:
                attributes.append(TransformAttribute(a_type & 0x7FFF, value))
            else:
                if value > t_end - pos:
                    raise short_read(value, t_end - pos, offset + pos)
                attributes.append(TransformAttribute(a_type, body[pos : pos + value]))
                pos += value
        if (last == 0) != (pos >= end):
            raise _fail(t_start, "transform 'last' field disagrees with proposal length")
        transforms.append(Transform(_TRANSFORM_TYPES.get(t_type, t_type), t_id, attributes))
    if len(transforms) != count:
        raise _fail(start, f"proposal announces {count} transforms, carries {len(transforms)}")
    return Proposal(number, _PROTOCOLS.get(protocol, protocol), spi, transforms)
