"""The codec's direct (body, offset) parsers and one-pack serialisers.

Payload parsers index the body instead of pulling field by field through a Buffer;
these tests pin that a short read still names the same field, byte count and
offset the field-by-field read would (RFC 7296 section 3 layouts), and that an
out-of-range field still raises the push_* LocalError.
"""

from __future__ import annotations

import struct

import pytest

from vpnfleet.agent.ike.buffer import Buffer, BufferReadError, pack, short_read_in
from vpnfleet.agent.ike.constants import NotifyType, PayloadType, TransformType
from vpnfleet.agent.ike.errors import LocalError, ParseError
from vpnfleet.agent.ike.message import parse_payloads, serialize_payloads
from vpnfleet.agent.ike.payloads import NotifyPayload, TsPayload
from vpnfleet.agent.ike.sa_payload import Proposal, SaPayload, Transform, TransformAttribute


def pulled_error(sizes: tuple[int, ...], data: bytes, base: int) -> BufferReadError:
    buf = Buffer(data, base_offset=base)
    with pytest.raises(BufferReadError) as info:
        for size in sizes:
            buf.pull_bytes(size)
    return info.value


@pytest.mark.parametrize("left", [0, 1, 2, 3, 4, 5])
def test_short_read_in_matches_field_by_field_reads(left: int) -> None:
    sizes = (1, 1, 2, 2)
    expected = pulled_error(sizes, bytes(left), 40)
    got = short_read_in(sizes, left, 40)
    assert (got.reason, got.offset) == (expected.reason, expected.offset)


def test_pack_refuses_the_first_value_that_does_not_fit() -> None:
    with pytest.raises(LocalError, match=r"value 256 does not fit in 0\.\.255"):
        pack(struct.Struct("!BxH"), 256, 70000)
    with pytest.raises(LocalError, match=r"value 70000 does not fit in 0\.\.65535"):
        pack(struct.Struct("!BxH"), 1, 70000)
    assert pack(struct.Struct("!BxH"), 1, 2) == b"\x01\x00\x00\x02"


def test_oversized_payload_is_a_local_error_when_chained() -> None:
    """The generic header's 16-bit length (RFC 7296 section 3.2) bounds a body."""
    with pytest.raises(LocalError, match=r"value 70004 does not fit in 0\.\.65535"):
        serialize_payloads([NotifyPayload(NotifyType.COOKIE, b"x" * 69996)])


def test_sa_body_parses_at_its_offset() -> None:
    """RFC 7296 section 3.3: one proposal, one transform with a TV key length."""
    body = bytes.fromhex("00000014 01010001 0000000c 0100000c 800e0100")
    sa = SaPayload.parse_body(body, 32)
    assert sa == SaPayload(
        [
            Proposal(
                1,
                1,
                b"",
                [Transform(TransformType.ENCR, 12, [TransformAttribute(14, 256)])],
            )
        ]
    )
    assert SaPayload.parse_body(sa.serialize_body(), 32) == sa


def test_truncated_transform_attribute_names_its_offset() -> None:
    """A TV attribute cut after its type: the value read fails 2 bytes later."""
    # Generic header at 28, proposal at 32, transform at 40, attribute at 48.
    body = bytes.fromhex("00000012 01010001 0000000a 0100000c 800e")
    chunk = bytes([0, 0]) + (4 + len(body)).to_bytes(2, "big") + body
    with pytest.raises(ParseError) as info:
        parse_payloads(chunk, PayloadType.SA, 28)
    assert (info.value.payload, info.value.offset) == ("SA", 50)
    assert info.value.reason == "need 2 bytes, only 0 left"


def test_notify_spi_longer_than_body() -> None:
    """RFC 7296 section 3.10: the SPI Size octet says 4, two bytes follow."""
    with pytest.raises(BufferReadError) as info:
        NotifyPayload.parse_body(bytes.fromhex("03044009 0000"), 32)
    assert (info.value.reason, info.value.offset) == ("need 4 bytes, only 2 left", 36)


def test_traffic_selector_cut_inside_its_end_address() -> None:
    """RFC 7296 section 3.13.1: the failing read is the end address at offset 48."""
    body = bytes.fromhex("01000000 07000010 0000ffff 0a000000 0a00")
    with pytest.raises(BufferReadError) as info:
        TsPayload.parse_body(body, 32)
    assert (info.value.reason, info.value.offset) == ("need 4 bytes, only 2 left", 48)


@pytest.mark.parametrize("left", [1, 2, 3])
def test_truncated_generic_header_reports_the_octets_left(left: int) -> None:
    """RFC 7296 section 3.2: a chain that ends inside a generic payload header."""
    with pytest.raises(ParseError) as info:
        parse_payloads(bytes(left), PayloadType.NONCE, 28)
    assert (info.value.payload, info.value.offset) == ("Nonce", 28)
    assert info.value.reason == f"generic payload header needs 4 bytes, {left} left"
