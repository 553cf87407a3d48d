"""Encrypted fragments (RFC 7383): splitting what we send (section 2.5) and
reassembling what we receive (section 2.6).

A message is fragmented only when both sides announced support and it would not fit
the configured datagram size; each fragment is encrypted on its own, with its number
and the total in the AAD. Each SKF message received is authenticated on its own
before it is kept; the message is parsed once every fragment of it has arrived.

Authenticated here only means "sent by whoever did IKE_SA_INIT with us": until IKE_AUTH
is checked, what a half-open SA keeps is charged to its slot in the agent's half-open
table (admission.py): at most ``preauth_message_bytes`` for one message, and the
agent's ``preauth_fragment_bytes`` for every half-open SA together. A message over
either is dropped whole, and its further fragments with it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from .admission import HalfOpenSlot, Limit
from .constants import GENERIC_PAYLOAD_HEADER_LENGTH, IKE_HEADER_LENGTH
from .crypto import SkKeys, decrypt_fragment, encrypt_fragment
from .errors import LocalError, ParseError, ProtocolError
from .events import Address
from .message import IkeHeader, Message, parse_payloads, serialize_payloads
from .nat import NAT_T_PORT
from .payloads import Payload, SkfPayload

if TYPE_CHECKING:
    from .ike_sa import IkeSa

IPV4_HEADER, IPV6_HEADER, UDP_HEADER = 20, 40, 8
NON_ESP_MARKER_LENGTH = 4
SKF_FIELDS = 4
"""Fragment Number and Total Fragments (section 2.5)."""

MAX_FRAGMENTS = 64
"""More fragments than this for one message is refused (a bound on held memory)."""


class Reassembly:
    def __init__(self) -> None:
        self.message_id: int | None = None
        self.total = 0
        self.first_inner = 0
        self.chunks: dict[int, bytes] = {}
        self.held = 0
        """Bytes of ``chunks``."""
        self.refused_id: int | None = None
        """A message dropped for its size: its further fragments are dropped too."""

    def add(
        self,
        message_id: int,
        fragment: SkfPayload,
        chunk: bytes,
        budget: HalfOpenSlot | None,
        now: float,
    ) -> tuple[int, bytes] | None:
        """Keep one verified fragment; return (first inner payload type, plaintext) once
        the message is whole. With ``budget`` (a half-open SA), the bytes kept are
        charged to it and a message over its caps is dropped (counted there)."""
        if fragment.total_fragments > MAX_FRAGMENTS:
            raise ParseError(
                f"{fragment.total_fragments} fragments, at most {MAX_FRAGMENTS} are taken",
                payload="SKF",
                offset=fragment.offset,
            )
        if budget is not None and message_id == self.refused_id:
            budget.refuse(Limit.PREAUTH_MESSAGE_BYTES, now)
            return None
        # Section 2.6.1: a new message, or the same one re-fragmented with a higher total.
        if message_id != self.message_id or fragment.total_fragments > self.total:
            self._clear(budget)
            self.message_id, self.total = message_id, fragment.total_fragments
        elif fragment.total_fragments < self.total:
            return None  # a stale fragmentation of the same message
        old = self.chunks.get(fragment.fragment_number)
        grow = len(chunk) - (len(old) if old is not None else 0)
        if budget is not None:
            limit = None
            if self.held + grow > budget.message_limit:
                limit = Limit.PREAUTH_MESSAGE_BYTES
            elif grow > 0 and not budget.reserve(grow):
                limit = Limit.PREAUTH_FRAGMENT_BYTES
            elif grow < 0:
                budget.free(-grow)
            if limit is not None:
                self._clear(budget)
                self.refused_id = message_id
                budget.refuse(limit, now)
                return None
        self.held += grow
        if fragment.fragment_number == 1:
            self.first_inner = fragment.first_inner
        self.chunks[fragment.fragment_number] = chunk
        if len(self.chunks) < self.total:
            return None
        whole = b"".join(self.chunks[n] for n in range(1, self.total + 1))
        first_inner = self.first_inner
        self._clear(budget)
        return first_inner, whole

    def _clear(self, budget: HalfOpenSlot | None) -> None:
        if budget is not None:
            budget.free(self.held)
        self.message_id, self.total, self.chunks, self.held = None, 0, {}, 0


class FragmentInbox:
    """The SKF messages an IKE SA receives, requests and responses apart (both may be in
    flight at once), checked against its exchanges before they are kept."""

    def __init__(self, sa: IkeSa) -> None:
        self.sa = sa
        self._by_response = {False: Reassembly(), True: Reassembly()}

    def receive(
        self,
        message: Message,
        fragment: SkfPayload,
        data: bytes,
        keys: SkKeys | None,
        now: float,
    ) -> list[Payload] | None:
        """Keep an authenticated fragment (section 2.6); the inner payloads once the
        message is whole, else None (the fragment was kept, replayed or dropped)."""
        sa, header = self.sa, message.header
        if keys is None:
            raise ProtocolError("encrypted fragment before keys exist")
        chunk = decrypt_fragment(data, message, keys)
        if header.is_response:
            expected = sa.tasks.is_expected_response(message)
        elif sa.tasks.is_replayed_id(header.message_id):
            # Section 2.6.1: only fragment 1 of a retransmitted request is answered, by
            # every fragment of the cached response; the others are ignored.
            if fragment.fragment_number == 1:
                sa.tasks.replay_response()
            return None
        else:
            expected = header.message_id == sa.tasks.expected_request_id
        if not expected:
            sa.dropped += 1
            return None
        whole = self._by_response[header.is_response].add(
            header.message_id, fragment, chunk, sa.half_open_slot, now
        )
        if whole is None:
            return None
        try:
            return parse_payloads(whole[1], whole[0], 0)
        except ParseError as exc:
            if header.is_response:
                raise
            # Processed as if it had come whole: refused like any malformed request.
            sa.refuse_malformed(header.exchange_type, header.message_id, data, exc)
            return None


def message_limit(fragment_size: int, peer: Address, *, encap: bool = False) -> int:
    """The largest IKE message that fits a ``fragment_size`` IP datagram to ``peer``
    (section 2.5.1): IP and UDP headers come off, and on port 4500 (the peer's, or ours
    once a NAT was found, ``encap``) the non-ESP marker (RFC 3948 section 2.2)."""
    ip_header = IPV6_HEADER if ":" in peer[0] else IPV4_HEADER
    marker = NON_ESP_MARKER_LENGTH if encap or peer[1] == NAT_T_PORT else 0
    return fragment_size - ip_header - UDP_HEADER - marker


def fragment_message(
    header: IkeHeader, payloads: Sequence[Payload], keys: SkKeys, limit: int
) -> tuple[bytes, ...]:
    """The SKF messages carrying ``payloads`` (section 2.5), none longer than ``limit``.

    The inner payload chain is cut into equal chunks (the last shorter); fragment 1
    names the first inner payload, the others 0; all keep the header's message ID.
    """
    first_inner, inner = serialize_payloads(payloads)
    encr = keys.encr
    overhead = (
        IKE_HEADER_LENGTH
        + GENERIC_PAYLOAD_HEADER_LENGTH
        + SKF_FIELDS
        + encr.iv_length
        + keys.icv_length
    )
    # The plaintext (chunk, padding, Pad Length octet) is a whole number of blocks.
    room = (limit - overhead) // encr.block_size * encr.block_size - 1
    if room < 1:
        raise LocalError(f"{limit}-byte messages leave no room for a fragment's content")
    total = max(1, -(-len(inner) // room))
    if total > 0xFFFF:
        raise LocalError(f"{len(inner)} bytes would need {total} fragments, at most 65535")
    return tuple(
        encrypt_fragment(header, first_inner, inner[i * room : (i + 1) * room], i + 1, total, keys)
        for i in range(total)
    )
