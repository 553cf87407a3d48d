"""A small read/write buffer for the IKE wire format (network byte order).

Reads past the end raise ``BufferReadError`` carrying the offset, never IndexError
or struct.error, so the codec can turn every short read into a ParseError that
names the payload.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterator
from contextlib import contextmanager

from .errors import LocalError

_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")
_U64 = struct.Struct("!Q")


class BufferReadError(Exception):
    """A read ran past the end of the data, or a block had bytes left over."""

    def __init__(self, message: str, offset: int) -> None:
        super().__init__(f"{message} at offset {offset}")
        self.reason = message
        self.offset = offset


def short_read(size: int, left: int, offset: int) -> BufferReadError:
    """The error of a read of ``size`` bytes with only ``left`` there, at ``offset``.

    Parsers that index bytes directly (for speed) raise exactly what Buffer would.
    """
    return BufferReadError(f"need {size} bytes, only {left} left", offset)


class Buffer:
    """Cursor over immutable bytes (pull_*) or a growing bytearray (push_*)."""

    __slots__ = ("_data", "_out", "_pos", "base_offset")

    def __init__(self, data: bytes = b"", *, base_offset: int = 0) -> None:
        # Plain bytes, not a memoryview: slicing bytes copies once, and index and
        # unpack_from read them directly (the codec's hot path).
        self._data = data if type(data) is bytes else bytes(data)
        self._pos = 0
        self._out = bytearray()
        # Offset of data[0] within the whole message, so errors point into the datagram.
        self.base_offset = base_offset

    # -- reading -------------------------------------------------------------

    @property
    def position(self) -> int:
        """Read position relative to the start of this buffer's data."""
        return self._pos

    @property
    def offset(self) -> int:
        """Read position relative to the start of the whole message."""
        return self.base_offset + self._pos

    @property
    def remaining(self) -> int:
        return len(self._data) - self._pos

    def eof(self) -> bool:
        return self._pos >= len(self._data)

    def _advance(self, size: int) -> int:
        """Check ``size`` bytes are left, move past them, return where they start."""
        pos = self._pos
        if size < 0:
            raise BufferReadError(f"negative read of {size} bytes", self.base_offset + pos)
        if pos + size > len(self._data):
            raise short_read(size, len(self._data) - pos, self.base_offset + pos)
        self._pos = pos + size
        return pos

    def pull_bytes(self, size: int) -> bytes:
        pos = self._advance(size)
        return self._data[pos : pos + size]

    def pull_rest(self) -> bytes:
        return self.pull_bytes(self.remaining)

    def pull_uint8(self) -> int:
        return self._data[self._advance(1)]

    def pull_uint16(self) -> int:
        return int(_U16.unpack_from(self._data, self._advance(2))[0])

    def pull_uint32(self) -> int:
        return int(_U32.unpack_from(self._data, self._advance(4))[0])

    def pull_uint64(self) -> int:
        return int(_U64.unpack_from(self._data, self._advance(8))[0])

    def pull_block(self, size: int) -> Buffer:
        """Return a sub-buffer of ``size`` bytes; the caller must consume it whole."""
        start = self.offset
        return Buffer(self.pull_bytes(size), base_offset=start)

    @contextmanager
    def pull_exact_block(self, size: int) -> Iterator[Buffer]:
        """Yield a sub-buffer of ``size`` bytes and refuse trailing bytes after use."""
        block = self.pull_block(size)
        yield block
        if not block.eof():
            raise BufferReadError(f"{block.remaining} trailing bytes in block", block.offset)

    def pull_length_prefixed_16(self) -> bytes:
        """A block whose 16-bit length precedes it (the length excludes itself)."""
        return self.pull_bytes(self.pull_uint16())

    def expect_end(self) -> None:
        if not self.eof():
            raise BufferReadError(f"{self.remaining} trailing bytes", self.offset)

    # -- writing -------------------------------------------------------------

    def push_bytes(self, value: bytes) -> None:
        self._out += value

    def push_uint8(self, value: int) -> None:
        self._out.append(_check_range(value, 0xFF))

    def push_uint16(self, value: int) -> None:
        self._out += _U16.pack(_check_range(value, 0xFFFF))

    def push_uint32(self, value: int) -> None:
        self._out += _U32.pack(_check_range(value, 0xFFFFFFFF))

    def push_uint64(self, value: int) -> None:
        self._out += _U64.pack(_check_range(value, 0xFFFFFFFFFFFFFFFF))

    def push_length_prefixed_16(self, value: bytes) -> None:
        self.push_uint16(len(value))
        self.push_bytes(value)

    def data(self) -> bytes:
        """Everything pushed so far."""
        return bytes(self._out)


_MAXIMA = {"B": 0xFF, "H": 0xFFFF, "I": 0xFFFFFFFF, "Q": 0xFFFFFFFFFFFFFFFF}


def pack(layout: struct.Struct, *values: int) -> bytes:
    """``layout.pack(*values)``, refusing a value that does not fit as push_* does.

    One precompiled pack per header instead of a push per field; on a misfit the
    fields are checked in order, so the LocalError names the same value.
    """
    try:
        return layout.pack(*values)
    except struct.error:
        codes = [code for _, code in re.findall(r"(\d*)([a-zA-Z])", layout.format) if code != "x"]
        for value, code in zip(values, codes, strict=False):
            if code in _MAXIMA:
                _check_range(value, _MAXIMA[code])
        raise


def _check_range(value: int, maximum: int) -> int:
    if not 0 <= value <= maximum:
        raise LocalError(f"value {value} does not fit in 0..{maximum}")
    return value


def short_read_in(sizes: tuple[int, ...], left: int, offset: int) -> BufferReadError:
    """The error Buffer raises reading fields of ``sizes`` in turn with ``left`` bytes.

    The caller has found that the fields do not fit; this names the first one that
    does not, at its own offset, exactly as the field-by-field reads would.
    """
    for size in sizes:
        if size > left:
            return short_read(size, left, offset)
        left -= size
        offset += size
    return short_read(0, left, offset)  # unreachable when the caller checked the total
