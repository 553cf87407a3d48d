"""The ISAKMP header (RFC 2408 section 3.1) and data attributes (RFC 2408 section 3.3).

Expected field values are read off the RFC figures: a 28-octet header of two 8-octet
cookies, Next Payload, version 0x10, exchange type, flags, a 4-octet message ID and a
4-octet length; an attribute is TV when the top bit of its type word is set.
"""

from __future__ import annotations

import pytest

from vpnfleet.agent.ike.errors import LocalError, ParseError, ProtocolError
from vpnfleet.agent.ike.v1.attributes import (
    Attribute,
    encode_attributes,
    find_attribute,
    parse_attributes,
)
from vpnfleet.agent.ike.v1.constants import (
    P1_BASIC_ATTRIBUTES,
    ExchangeType,
    Flag,
    NotifyType,
    P1Attr,
    PayloadType,
)
from vpnfleet.agent.ike.v1.message import IsakmpHeader, V1ParseError

ICOOKIE = bytes.fromhex("0102030405060708")
RCOOKIE = bytes.fromhex("a1a2a3a4a5a6a7a8")


def header_bytes(
    *, version: int = 0x10, length: int = 28, icookie: bytes = ICOOKIE, flags: int = 0
) -> bytes:
    return (
        icookie
        + RCOOKIE
        + bytes([PayloadType.SA, version, ExchangeType.IDENTITY_PROTECTION, flags])
        + (0x01020304).to_bytes(4, "big")
        + length.to_bytes(4, "big")
    )


def test_header_fields_and_round_trip() -> None:
    data = header_bytes(flags=1) + b"body"
    data = data[:24] + (32).to_bytes(4, "big") + data[28:]
    header, body = IsakmpHeader.parse(data)
    assert header == IsakmpHeader(
        ICOOKIE,
        RCOOKIE,
        PayloadType.SA,
        ExchangeType.IDENTITY_PROTECTION,
        Flag.ENCRYPTION,
        0x01020304,
        32,
        0x10,
    )
    assert header.encrypted
    assert body == b"body"
    assert header.encode() + body == data


def test_unknown_exchange_and_flag_bits_are_kept_for_re_encoding() -> None:
    data = bytearray(header_bytes(flags=0x81))
    data[18] = 200
    header, _ = IsakmpHeader.parse(bytes(data))
    assert header.exchange == 200
    assert header.encode() == bytes(data)


@pytest.mark.parametrize(
    ("data", "offset", "reason", "notify"),
    [
        (header_bytes()[:27], 0, "shorter than the 28-byte header", None),
        (header_bytes(version=0x20), 17, "major version 2", NotifyType.INVALID_MAJOR_VERSION),
        (header_bytes(version=0x11), 17, "minor version 1", NotifyType.INVALID_MINOR_VERSION),
        (header_bytes(icookie=bytes(8)), 0, "initiator cookie is zero", NotifyType.INVALID_COOKIE),
        (header_bytes(length=29), 24, "header length 29 but datagram has 28", None),
        (header_bytes() + b"x", 24, "header length 28 but datagram has 29", None),
    ],
)
def test_header_refusals_name_field_and_offset(
    data: bytes, offset: int, reason: str, notify: NotifyType | None
) -> None:
    with pytest.raises(V1ParseError) as info:
        IsakmpHeader.parse(data)
    assert isinstance(info.value, ParseError) and isinstance(info.value, ProtocolError)
    assert info.value.payload == "ISAKMP header"
    assert info.value.offset == offset
    assert reason in str(info.value)
    assert str(info.value).startswith(f"ISAKMP header at offset {offset}: ")
    if notify is not None:
        assert info.value.notify == notify


def test_header_encode_refuses_bad_cookie() -> None:
    with pytest.raises(LocalError):
        IsakmpHeader(b"short", RCOOKIE, 0, 2, Flag.NONE, 0).encode()


# -- data attributes ------------------------------------------------------------


def test_tv_and_tlv_attributes() -> None:
    """RFC 2408 section 3.3: AF=1 TV (encryption AES-CBC = 7, RFC 3602), AF=0 TLV
    (a 4-octet life duration of 86400 s, RFC 2409 Appendix A "V" class)."""
    data = bytes.fromhex("80010007 000c0004 00015180")
    attrs = parse_attributes(data, 40)
    assert attrs == (Attribute(1, 7), Attribute(12, b"\x00\x01\x51\x80"))
    assert attrs[0].is_tv and not attrs[1].is_tv
    assert [a.as_int() for a in attrs] == [7, 86400]
    assert encode_attributes(attrs) == data
    assert find_attribute(attrs, 12) == attrs[1]
    assert find_attribute(attrs, 99) is None


def test_variable_picks_the_form() -> None:
    assert Attribute.variable(12, 28800) == Attribute(12, 28800)
    assert Attribute.variable(12, 86400) == Attribute(12, (86400).to_bytes(4, "big"))
    assert Attribute.variable(12, 1 << 40).as_int() == 1 << 40


def test_basic_attribute_in_tlv_form_is_refused() -> None:
    """RFC 2409 Appendix A: ENCRYPTION is class B, so TV only."""
    data = bytes.fromhex("80020002 00010002 0007")
    with pytest.raises(V1ParseError) as info:
        parse_attributes(data, 100, payload="Transform", basic=P1_BASIC_ATTRIBUTES)
    assert info.value.offset == 104
    assert info.value.payload == "Transform"
    assert "basic (TV only)" in str(info.value)
    assert info.value.notify == NotifyType.ATTRIBUTES_NOT_SUPPORTED
    # Without the basic set the same bytes are a plain TLV.
    assert parse_attributes(data, 100)[1] == Attribute(P1Attr.ENCRYPTION, b"\x00\x07")


@pytest.mark.parametrize(
    ("data", "offset", "reason"),
    [
        (bytes.fromhex("8001"), 10, "needs 4 bytes, 2 left"),
        (bytes.fromhex("80010007 000c0005 00015180"), 16, "length 5 runs past the 4 bytes left"),
    ],
)
def test_attribute_refusals(data: bytes, offset: int, reason: str) -> None:
    with pytest.raises(V1ParseError) as info:
        parse_attributes(data, 10)
    assert info.value.offset == offset
    assert reason in str(info.value)


def test_attribute_encode_refuses_misfits() -> None:
    with pytest.raises(LocalError):
        Attribute(1, 0x10000).encode()
    with pytest.raises(LocalError):
        Attribute(0x8000, 1).encode()
    with pytest.raises(ProtocolError):
        Attribute(12, bytes(9)).as_int()
