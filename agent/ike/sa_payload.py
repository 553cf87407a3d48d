"""The Security Association payload (RFC 7296 section 3.3): proposals, transforms
and transform attributes, with every length, count and "last" flag checked."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Self

from .buffer import Buffer
from .constants import PayloadType, ProtocolId, TransformAttributeType, TransformType, enum_or_int
from .errors import ParseError


def _fail(buf: Buffer | int, message: str) -> ParseError:
    return ParseError(message, payload="SA", offset=buf.offset if isinstance(buf, Buffer) else buf)


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
    def parse_body(cls, buf: Buffer) -> Self:
        proposals: list[Proposal] = []
        if buf.eof():
            raise _fail(buf, "no proposals")
        while not buf.eof():
            start = buf.offset
            last = buf.pull_uint8()
            buf.pull_uint8()
            length = buf.pull_uint16()
            if last not in (0, 2):
                raise _fail(start, f"proposal 'last' field is {last}, expected 0 or 2")
            if length < 8:
                raise _fail(start, f"proposal length {length} below 8")
            with buf.pull_exact_block(length - 4) as block:
                proposals.append(_parse_proposal(block, start))
            if (last == 0) != buf.eof():
                raise _fail(start, "proposal 'last' field disagrees with payload length")
        return cls(proposals)

    def serialize_body(self) -> bytes:
        out = Buffer()
        for index, prop in enumerate(self.proposals):
            inner = Buffer()
            inner.push_uint8(prop.number)
            inner.push_uint8(int(prop.protocol))
            inner.push_uint8(len(prop.spi))
            inner.push_uint8(len(prop.transforms))
            inner.push_bytes(prop.spi)
            for t_index, transform in enumerate(prop.transforms):
                attrs = Buffer()
                for attr in transform.attributes:
                    if isinstance(attr.value, int):
                        attrs.push_uint16(0x8000 | attr.type)
                        attrs.push_uint16(attr.value)
                    else:
                        attrs.push_uint16(attr.type)
                        attrs.push_length_prefixed_16(attr.value)
                body = attrs.data()
                inner.push_uint8(0 if t_index == len(prop.transforms) - 1 else 3)
                inner.push_uint8(0)
                inner.push_uint16(8 + len(body))
                inner.push_uint8(int(transform.type))
                inner.push_uint8(0)
                inner.push_uint16(transform.id)
                inner.push_bytes(body)
            data = inner.data()
            out.push_uint8(0 if index == len(self.proposals) - 1 else 2)
            out.push_uint8(0)
            out.push_uint16(4 + len(data))
            out.push_bytes(data)
        return out.data()


def _parse_proposal(buf: Buffer, start: int) -> Proposal:
    number = buf.pull_uint8()
    protocol = buf.pull_uint8()
    spi_size = buf.pull_uint8()
    count = buf.pull_uint8()
    if number == 0:
        raise _fail(start, "proposal number 0")
    # A request numbers its first proposal 1, but a response echoes the number of
    # the proposal it accepted (section 3.3.1), so only 0 is always wrong.
    spi = buf.pull_bytes(spi_size)
    transforms: list[Transform] = []
    while not buf.eof():
        t_start = buf.offset
        last = buf.pull_uint8()
        buf.pull_uint8()
        length = buf.pull_uint16()
        if last not in (0, 3):
            raise _fail(t_start, f"transform 'last' field is {last}, expected 0 or 3")
        if length < 8:
            raise _fail(t_start, f"transform length {length} below 8")
        with buf.pull_exact_block(length - 4) as block:
            t_type = block.pull_uint8()
            block.pull_uint8()
            t_id = block.pull_uint16()
            attributes: list[TransformAttribute] = []
            while not block.eof():
                a_type = block.pull_uint16()
                if a_type & 0x8000:
                    attributes.append(TransformAttribute(a_type & 0x7FFF, block.pull_uint16()))
                else:
                    attributes.append(TransformAttribute(a_type, block.pull_length_prefixed_16()))
        if (last == 0) != buf.eof():
            raise _fail(t_start, "transform 'last' field disagrees with proposal length")
        transforms.append(Transform(enum_or_int(TransformType, t_type), t_id, attributes))
    if len(transforms) != count:
        raise _fail(start, f"proposal announces {count} transforms, carries {len(transforms)}")
    return Proposal(number, enum_or_int(ProtocolId, protocol), spi, transforms)
