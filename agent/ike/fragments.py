"""Reassembly of encrypted fragments (RFC 7383 section 2.6).

Each SKF message is authenticated on its own before it is kept; the message is
parsed once every fragment of it has arrived.
"""

from __future__ import annotations

from .errors import ParseError
from .payloads import SkfPayload

MAX_FRAGMENTS = 64
"""More fragments than this for one message is refused (a bound on held memory)."""


class Reassembly:
    def __init__(self) -> None:
        self.message_id: int | None = None
        self.total = 0
        self.first_inner = 0
        self.chunks: dict[int, bytes] = {}

    def add(self, message_id: int, fragment: SkfPayload, chunk: bytes) -> tuple[int, bytes] | None:
        """Keep one verified fragment; return (first inner payload type, plaintext) once
        the message is whole."""
        if fragment.total_fragments > MAX_FRAGMENTS:
            raise ParseError(
                f"{fragment.total_fragments} fragments, at most {MAX_FRAGMENTS} are taken",
                payload="SKF",
                offset=fragment.offset,
            )
        # Section 2.6.1: a new message, or the same one re-fragmented with a higher total.
        if message_id != self.message_id or fragment.total_fragments > self.total:
            self.message_id, self.total, self.chunks = message_id, fragment.total_fragments, {}
        elif fragment.total_fragments < self.total:
            return None  # a stale fragmentation of the same message
        if fragment.fragment_number == 1:
            self.first_inner = fragment.first_inner
        self.chunks[fragment.fragment_number] = chunk
        if len(self.chunks) < self.total:
            return None
        whole = b"".join(self.chunks[n] for n in range(1, self.total + 1))
        first_inner = self.first_inner
        self.message_id, self.total, self.chunks = None, 0, {}
        return first_inner, whole
