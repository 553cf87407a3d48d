"""Buffer: big-endian pulls and pushes, short reads, blocks that refuse trailing bytes."""

from __future__ import annotations

import pytest

from vpnfleet.agent.ike.buffer import Buffer, BufferReadError
from vpnfleet.agent.ike.errors import LocalError


def test_pull_integers_big_endian() -> None:
    buf = Buffer(bytes.fromhex("01 0203 04050607 08090a0b0c0d0e0f ff".replace(" ", "")))
    assert buf.pull_uint8() == 0x01
    assert buf.pull_uint16() == 0x0203
    assert buf.pull_uint32() == 0x04050607
    assert buf.pull_uint64() == 0x08090A0B0C0D0E0F
    assert buf.pull_bytes(1) == b"\xff"
    assert buf.eof()


def test_push_round_trips_pull() -> None:
    out = Buffer()
    out.push_uint8(7)
    out.push_uint16(0xBEEF)
    out.push_uint32(0xDEADBEEF)
    out.push_uint64(2**64 - 1)
    out.push_length_prefixed_16(b"abc")
    buf = Buffer(out.data())
    assert (buf.pull_uint8(), buf.pull_uint16(), buf.pull_uint32(), buf.pull_uint64()) == (
        7,
        0xBEEF,
        0xDEADBEEF,
        2**64 - 1,
    )
    assert buf.pull_length_prefixed_16() == b"abc"
    buf.expect_end()


@pytest.mark.parametrize("value", [-1, 256])
def test_push_out_of_range_is_local_error(value: int) -> None:
    with pytest.raises(LocalError, match="does not fit"):
        Buffer().push_uint8(value)


def test_short_read_reports_absolute_offset() -> None:
    buf = Buffer(b"\x00\x01\x02", base_offset=100)
    buf.pull_uint8()
    with pytest.raises(BufferReadError) as info:
        buf.pull_uint32()
    assert info.value.offset == 101
    assert "need 4 bytes, only 2 left" in str(info.value)


def test_negative_read_is_refused() -> None:
    with pytest.raises(BufferReadError, match="negative"):
        Buffer(b"abc").pull_bytes(-1)


def test_length_prefixed_block_longer_than_data() -> None:
    with pytest.raises(BufferReadError, match="need 5 bytes"):
        Buffer(b"\x00\x05abc").pull_length_prefixed_16()


def test_exact_block_refuses_trailing_bytes() -> None:
    buf = Buffer(b"\x01\x02\x03\x04", base_offset=10)
    with (
        pytest.raises(BufferReadError, match="1 trailing bytes") as info,
        buf.pull_exact_block(3) as block,
    ):
        block.pull_uint16()
    assert info.value.offset == 12
    buf2 = Buffer(b"\x01\x02\x03")
    with buf2.pull_exact_block(2) as block:
        assert block.pull_uint16() == 0x0102
    assert buf2.remaining == 1


def test_expect_end() -> None:
    buf = Buffer(b"ab")
    buf.pull_uint8()
    with pytest.raises(BufferReadError, match="1 trailing bytes"):
        buf.expect_end()
