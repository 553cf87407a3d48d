"""ISAKMP data attributes (RFC 2408 section 3.3), TV and TLV.

An attribute whose Attribute Format bit is set is TV: the 15-bit type and a 2-octet
value in place of the length. Without the bit it is TLV: a 2-octet length and that
many octets of value. ``Attribute.value`` is an int for TV and bytes for TLV, so
encoding is the exact inverse of parsing. RFC 2409 Appendix A and RFC 2407 section
4.5 class some types "Basic" (TV only); the parser refuses those in TLV form when
told which types are basic.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from ..errors import LocalError, ProtocolError
from .constants import NotifyType
from .message import V1ParseError

AF_TV = 0x8000  # RFC 2408 section 3.3: the Attribute Format bit
_TYPE_MASK = 0x7FFF
_MAX_INT_OCTETS = 8


@dataclass(frozen=True, slots=True)
class Attribute:
    """One data attribute: ``value`` is an int (TV form) or bytes (TLV form)."""

    type: int
    value: int | bytes

    @classmethod
    def variable(cls, attr_type: int, number: int) -> Attribute:
        """A "Variable" class number (a lifetime): TV when it fits in 16 bits, else TLV
        of 4 octets (8 beyond 32 bits), as RFC 2409 Appendix A allows either."""
        if number < 0:
            raise LocalError(f"attribute {attr_type}: negative value {number}")
        if number <= 0xFFFF:
            return cls(attr_type, number)
        size = 4 if number <= 0xFFFFFFFF else 8
        return cls(attr_type, number.to_bytes(size, "big"))

    @property
    def is_tv(self) -> bool:
        return isinstance(self.value, int)

    def as_int(self) -> int:
        """The value as a number, of either form (RFC 2408 section 3.3: a TLV value is
        a big-endian integer for the numeric "Variable" classes).

        A TLV longer than 8 octets is the peer's fault: ProtocolError."""
        if isinstance(self.value, int):
            return self.value
        if not self.value or len(self.value) > _MAX_INT_OCTETS:
            raise ProtocolError(
                f"attribute {self.type}: {len(self.value)}-octet value is not a number",
                notify=NotifyType.ATTRIBUTES_NOT_SUPPORTED,
            )
        return int.from_bytes(self.value, "big")

    def encode(self) -> bytes:
        if not 0 <= self.type <= _TYPE_MASK:
            raise LocalError(f"attribute type {self.type} does not fit in 15 bits")
        if isinstance(self.value, int):
            if not 0 <= self.value <= 0xFFFF:
                raise LocalError(
                    f"attribute {self.type}: TV value {self.value} does not fit in 16 bits"
                )
            return (AF_TV | self.type).to_bytes(2, "big") + self.value.to_bytes(2, "big")
        if len(self.value) > 0xFFFF:
            raise LocalError(f"attribute {self.type}: {len(self.value)}-octet TLV value")
        return self.type.to_bytes(2, "big") + len(self.value).to_bytes(2, "big") + self.value


def encode_attributes(attributes: Iterable[Attribute]) -> bytes:
    return b"".join(attribute.encode() for attribute in attributes)


def parse_attributes(
    data: bytes,
    offset: int,
    *,
    payload: str = "data attribute",
    basic: frozenset[int] = frozenset(),
) -> tuple[Attribute, ...]:
    """Parse attributes filling ``data`` exactly; ``offset`` is data[0]'s place in
    the message and ``payload`` the payload they belong to, both for errors.

    ``basic`` names the types that must be TV (RFC 2409 Appendix A "B" classes):
    one of them sent with a length is refused with ATTRIBUTES_NOT_SUPPORTED.
    """
    attributes: list[Attribute] = []
    pos = 0
    end = len(data)
    while pos < end:
        if end - pos < 4:
            raise V1ParseError(
                f"data attribute needs 4 bytes, {end - pos} left",
                payload=payload,
                offset=offset + pos,
                notify=NotifyType.PAYLOAD_MALFORMED,
            )
        word = int.from_bytes(data[pos : pos + 2], "big")
        field = int.from_bytes(data[pos + 2 : pos + 4], "big")
        attr_type = word & _TYPE_MASK
        if word & AF_TV:
            attributes.append(Attribute(attr_type, field))
            pos += 4
            continue
        if attr_type in basic:
            raise V1ParseError(
                f"attribute type {attr_type} is basic (TV only) but sent with length {field}",
                payload=payload,
                offset=offset + pos,
                notify=NotifyType.ATTRIBUTES_NOT_SUPPORTED,
            )
        if field > end - pos - 4:
            raise V1ParseError(
                f"attribute type {attr_type} length {field} runs past the "
                f"{end - pos - 4} bytes left",
                payload=payload,
                offset=offset + pos + 2,
                notify=NotifyType.PAYLOAD_MALFORMED,
            )
        attributes.append(Attribute(attr_type, data[pos + 4 : pos + 4 + field]))
        pos += 4 + field
    return tuple(attributes)


def find_attribute(attributes: Iterable[Attribute], attr_type: int) -> Attribute | None:
    """The first attribute of ``attr_type``, or None."""
    for attribute in attributes:
        if attribute.type == attr_type:
            return attribute
    return None
