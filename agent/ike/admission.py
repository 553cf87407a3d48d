"""How much an unauthenticated initiator can make a responder hold (RFC 7296 section 2.6,
RFC 7383 section 2.6).

Until IKE_AUTH is checked, anyone who can answer a COOKIE can have us keep an IKE SA
(its keys, its cached messages) and the encrypted fragments of its first request. The
caps here bound both: half-open IKE SAs per source address, per plan peer (one
responder gate each) and for the whole agent; bytes of one reassembled pre-auth message
(strongSwan's ``max_packet``, 10,000 bytes, is the model) and of every pre-auth fragment
the agent holds. What goes over a cap is dropped and counted; an IKE SA already
established is never touched.

One :class:`HalfOpenTable` serves every gate of an agent. Its entries are kept in
creation order and expire from the front, so admitting a request costs O(1) amortised
however many SAs are half open; an SA that leaves the half-open state earlier
(established, failed, expired on its own timer) gives its place back at once through its
:class:`HalfOpenSlot`. Sans-I/O: ``now`` comes in, counters and notices go out.
"""

from __future__ import annotations

import enum
from collections import OrderedDict, deque
from collections.abc import Hashable
from dataclasses import dataclass, field, fields
from typing import Protocol

from .errors import LocalError
from .events import Address

NOTICE_INTERVAL = 10.0
"""Seconds between two notices of one kind about input nobody authenticated (a cap, a
stranger's failures): the agent logs at most one line per kind and interval."""
MIN_PREAUTH_MESSAGE_BYTES = 2000
"""Below this an IKE_AUTH request with a certificate would not fit."""


class Limit(enum.Enum):
    """A cap; the value is its key in :class:`ResponderLimits` and the agent config."""

    HALF_OPEN_PER_SOURCE = "half_open_per_source"
    HALF_OPEN_PER_PEER = "half_open_per_peer"
    HALF_OPEN_TOTAL = "half_open_total"
    PREAUTH_MESSAGE_BYTES = "preauth_message_bytes"
    PREAUTH_FRAGMENT_BYTES = "preauth_fragment_bytes"


class GateRefusal(enum.Enum):
    """Why a responder gate created no IKE SA for an IKE_SA_INIT request; the value is
    the reason's first words as logs show them."""

    COOKIE_REQUIRED = "cookie required"
    """Over the half-open threshold: a stateless COOKIE answer went back (section 2.6)."""
    BAD_COOKIE = "bad cookie"
    """The request carried a COOKIE we did not give (or one too old): challenged again."""
    NOT_INIT_REQUEST = "not an IKE_SA_INIT request"
    MALFORMED = "malformed"
    REFUSED = "refused"
    """Answered with an error Notify and no state (INVALID_KE_PAYLOAD, INVALID_SYNTAX …)."""
    OVER_LIMIT = "over"
    """Over one of the :class:`Limit` caps: dropped, counted in the table."""


@dataclass(frozen=True)
class ResponderLimits:
    half_open_per_source: int = 16
    """Half-open IKE SAs from one IP address (any port)."""
    half_open_per_peer: int = 128
    """Half-open IKE SAs one plan peer's gate holds (with the cookie threshold, 64, below
    it, the last half come only from addresses that answered a COOKIE)."""
    half_open_total: int = 256
    """Half-open IKE SAs of the whole agent, every peer together."""
    preauth_message_bytes: int = 10_000
    """Largest message an IKE SA takes before IKE_AUTH is checked, whole or as the sum of
    its fragments (strongSwan's ``charon.max_packet`` default)."""
    preauth_fragment_bytes: int = 1 << 20
    """Fragment bytes the whole agent holds for half-open IKE SAs."""

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise LocalError(f"{f.name} must be a whole number of at least 1, not {value!r}")
        if self.preauth_message_bytes < MIN_PREAUTH_MESSAGE_BYTES:
            raise LocalError(
                f"preauth_message_bytes must be at least {MIN_PREAUTH_MESSAGE_BYTES} "
                f"(an IKE_AUTH request with a certificate), not {self.preauth_message_bytes}"
            )
        if self.preauth_fragment_bytes < self.preauth_message_bytes:
            raise LocalError(
                f"preauth_fragment_bytes ({self.preauth_fragment_bytes}) must be at least "
                f"preauth_message_bytes ({self.preauth_message_bytes}): otherwise no "
                "fragmented IKE_AUTH request could ever be reassembled"
            )

    def value(self, limit: Limit) -> int:
        return int(getattr(self, limit.value))


@dataclass(frozen=True)
class LimitNotice:
    """What to log about a cap: at most one per cap every ``NOTICE_INTERVAL`` seconds."""

    limit: Limit
    value: int
    """The cap in force."""
    refused: int
    """Refusals since the previous notice of this cap, this one included."""
    source: str
    """The address of the latest refusal."""


@dataclass
class LogLimiter:
    """At most one log line per key every ``interval`` seconds (time is passed in)."""

    interval: float = NOTICE_INTERVAL
    _next: dict[Hashable, float] = field(default_factory=dict)
    _left_out: dict[Hashable, int] = field(default_factory=dict)

    def admit(self, key: Hashable, now: float) -> int | None:
        """None when no line may go out for ``key`` now (the event is tallied); else how
        many were left out since the last line."""
        if now < self._next.get(key, float("-inf")):
            self._left_out[key] = self._left_out.get(key, 0) + 1
            return None
        self._next[key] = now + self.interval
        return self._left_out.pop(key, 0)


class HalfOpen(Protocol):
    """What a table entry holds: a half-open SA (IKEv2's ``IkeSa``, or the engine's
    record of an IKEv1 responder SA), told when its place is given back."""

    half_open_slot: HalfOpenSlot | None


class HalfOpenSlot:
    """One half-open IKE SA's place in the table, and its budget for fragments."""

    __slots__ = ("deadline", "held", "key", "sa", "table")

    def __init__(
        self,
        table: HalfOpenTable,
        key: tuple[object, Address, bytes],
        sa: HalfOpen,
        deadline: float,
    ) -> None:
        self.table = table
        self.key = key
        self.sa = sa
        self.deadline = deadline
        self.held = 0
        """Fragment bytes this SA holds (reserved from the agent's budget)."""

    @property
    def peer(self) -> object:
        return self.key[0]

    @property
    def source(self) -> str:
        return self.key[1][0]

    @property
    def message_limit(self) -> int:
        return self.table.limits.preauth_message_bytes

    def reserve(self, size: int) -> bool:
        """Take ``size`` more fragment bytes from the agent's budget; False if over it."""
        table = self.table
        if table.held + size > table.limits.preauth_fragment_bytes:
            return False
        table.held += size
        self.held += size
        return True

    def free(self, size: int) -> None:
        size = min(size, self.held)
        self.held -= size
        self.table.held -= size

    def refuse(self, limit: Limit, now: float) -> None:
        self.table.refuse(limit, self.source, now)

    def release(self) -> None:
        """The SA is no longer half open (or expired): its place and bytes are free."""
        self.table.release(self)


class HalfOpenTable:
    """The half-open IKE SAs of one agent, oldest first, with the counts the caps need."""

    def __init__(
        self, limits: ResponderLimits | None = None, notice_interval: float = NOTICE_INTERVAL
    ) -> None:
        self.limits = limits if limits is not None else ResponderLimits()
        self.notice_interval = notice_interval
        self._slots: OrderedDict[tuple[object, Address, bytes], HalfOpenSlot] = OrderedDict()
        self._per_source: dict[object, int] = {}
        self._per_peer: dict[object, int] = {}
        self.held = 0
        """Fragment bytes held for half-open SAs, agent-wide."""
        self.refused: dict[Limit, int] = {limit: 0 for limit in Limit}
        """Requests, messages and fragments dropped, by the cap they went over."""
        self._pacing = LogLimiter(notice_interval)
        self._notices: deque[LimitNotice] = deque()

    def __len__(self) -> int:
        return len(self._slots)

    def count(self, peer: object) -> int:
        return self._per_peer.get(peer, 0)

    def count_source(self, source: str) -> int:
        return self._per_source.get(source, 0)

    def expire(self, now: float) -> None:
        """Drop the entries whose half-open time is over, from the oldest: each request
        pays for the entries it removes, never for the ones it leaves."""
        slots = self._slots
        while slots:
            oldest = next(iter(slots.values()))
            if oldest.deadline > now:
                return
            self.release(oldest)

    def find(self, peer: object, addr: Address, spi_i: bytes) -> HalfOpenSlot | None:
        return self._slots.get((peer, addr, spi_i))

    def admit(self, peer: object, source: str, now: float) -> Limit | None:
        """The cap a new half-open SA from ``source`` for ``peer`` would go over (counted
        as refused), or None when it may be created."""
        self.expire(now)
        limits = self.limits
        if self._per_source.get(source, 0) >= limits.half_open_per_source:
            limit = Limit.HALF_OPEN_PER_SOURCE
        elif self._per_peer.get(peer, 0) >= limits.half_open_per_peer:
            limit = Limit.HALF_OPEN_PER_PEER
        elif len(self._slots) >= limits.half_open_total:
            limit = Limit.HALF_OPEN_TOTAL
        else:
            return None
        self.refuse(limit, source, now)
        return limit

    def add(
        self, peer: object, addr: Address, spi_i: bytes, sa: HalfOpen, deadline: float
    ) -> HalfOpenSlot:
        key = (peer, addr, spi_i)
        old = self._slots.get(key)
        if old is not None:
            self.release(old)
        slot = HalfOpenSlot(self, key, sa, deadline)
        self._slots[key] = slot
        source = addr[0]
        self._per_source[source] = self._per_source.get(source, 0) + 1
        self._per_peer[peer] = self._per_peer.get(peer, 0) + 1
        return slot

    def release(self, slot: HalfOpenSlot) -> None:
        if self._slots.get(slot.key) is not slot:
            return
        del self._slots[slot.key]
        slot.free(slot.held)
        _decrement(self._per_source, slot.source)
        _decrement(self._per_peer, slot.peer)
        if slot.sa.half_open_slot is slot:
            slot.sa.half_open_slot = None

    # -- refusals and their notices -----------------------------------------------------

    def refuse(self, limit: Limit, source: str, now: float) -> None:
        self.refused[limit] += 1
        left_out = self._pacing.admit(limit, now)
        if left_out is not None:
            notice = LimitNotice(limit, self.limits.value(limit), left_out + 1, source)
            self._notices.append(notice)

    def next_notice(self) -> LimitNotice | None:
        return self._notices.popleft() if self._notices else None


def _decrement(counts: dict[object, int], key: object) -> None:
    left = counts[key] - 1
    if left:
        counts[key] = left
    else:
        del counts[key]
