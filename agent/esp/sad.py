"""Security Association Database (RFC 4301 section 4.4.2) with make-before-break rekey.

Inbound SAs are found by SPI (RFC 4303 section 2.1: the SPI with the destination picks
the SA; this SAD serves one local endpoint, so the SPI alone). Outbound SAs are found
by the policy (an SPD entry's ``policy`` name) they serve: one current SA per policy.

Rekeying follows wireguard-go's keypair rotation: the new inbound SA is installed
first, the new outbound SA replaces the old one at once (traffic moves to the new keys
with no gap), and the old inbound SA keeps accepting until its grace period ends, so
packets the peer sent before it switched, or still has in flight, are not dropped.
Time is passed in; ``handle_timer(now)`` removes SAs whose grace ended or that expired.

AH SAs (RFC 4302, ``ah``) live here beside the ESP ones, with the same rekey hand-over,
lifetimes and events: one inbound SPI space for both (the child SA table keys its
policies by SPI; our SPIs are unique across protocols), ESP packets opened by
:meth:`Sad.decap` and AH packets, IP header first, by :meth:`Sad.decap_ah`. A policy's
outbound SA is of either protocol.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass

from .ah import AhDecapResult, InboundAhSa, OutboundAhSa
from .ah_icv import IPPROTO_AH, received_layout
from .sa import DecapResult, Drop, InboundSa, OutboundSa, SaEvent

_NEVER = float("inf")

DEFAULT_REKEY_GRACE = 5.0
"""Seconds an old inbound SA keeps accepting after a rekey."""


@dataclass(frozen=True)
class InboundRemoved:
    """An inbound SA left the SAD (grace over, expired or removed on request)."""

    spi: int
    reason: str
    """'rekeyed', 'expired' or 'deleted'."""


SadEvent = SaEvent | InboundRemoved
AnyInboundSa = InboundSa | InboundAhSa
AnyOutboundSa = OutboundSa | OutboundAhSa


@dataclass(slots=True)
class SadCounters:
    """Drops that belong to no SA."""

    unknown_spi: int = 0
    truncated: int = 0


class Sad:
    """Inbound SAs by SPI, outbound SAs by policy, and their rekey hand-over."""

    def __init__(self, grace: float = DEFAULT_REKEY_GRACE) -> None:
        if grace < 0:
            raise ValueError(f"rekey grace must be >= 0 seconds, got {grace}")
        self.grace = grace
        self.counters = SadCounters()
        self._inbound: dict[int, InboundSa] = {}
        self._inbound_ah: dict[int, InboundAhSa] = {}
        self._retiring: dict[int, float] = {}
        self._outbound: dict[str, AnyOutboundSa] = {}
        self._events: deque[SadEvent] = deque()

    # -- lookups -------------------------------------------------------------------

    def inbound(self, spi: int) -> AnyInboundSa | None:
        return self._inbound.get(spi) or self._inbound_ah.get(spi)

    def outbound(self, policy: str) -> AnyOutboundSa | None:
        return self._outbound.get(policy)

    def inbound_sas(self) -> Iterator[AnyInboundSa]:
        return iter(self._all_inbound())

    def _all_inbound(self) -> list[AnyInboundSa]:
        sas: list[AnyInboundSa] = list(self._inbound.values())
        sas.extend(self._inbound_ah.values())
        return sas

    def outbound_sas(self) -> Iterator[tuple[str, AnyOutboundSa]]:
        return iter(tuple(self._outbound.items()))

    def retiring(self, spi: int) -> float | None:
        """When a retiring inbound SA will be removed, or None if it is not retiring."""
        return self._retiring.get(spi)

    # -- installing and removing ---------------------------------------------------

    def add_inbound(self, sa: AnyInboundSa) -> None:
        if sa.spi in self._inbound or sa.spi in self._inbound_ah:
            raise ValueError(f"inbound SPI 0x{sa.spi:08x} is already installed")
        self._take_events(sa)
        if isinstance(sa, InboundAhSa):
            self._inbound_ah[sa.spi] = sa
        else:
            self._inbound[sa.spi] = sa

    def set_outbound(self, policy: str, sa: AnyOutboundSa) -> AnyOutboundSa | None:
        """Make ``sa`` the one ``policy`` sends with, at once; returns the replaced SA."""
        if not policy:
            raise ValueError("an outbound SA needs the policy name it serves")
        self._take_events(sa)
        previous = self._outbound.get(policy)
        self._outbound[policy] = sa
        return previous

    def rekey(
        self,
        policy: str,
        new_inbound: AnyInboundSa,
        new_outbound: AnyOutboundSa,
        old_inbound_spi: int | None,
        now: float,
    ) -> AnyOutboundSa | None:
        """Make-before-break: new inbound first, then switch outbound, then retire the
        old inbound SA at ``now + grace``. Returns the outbound SA that was replaced."""
        if old_inbound_spi is not None and self.inbound(old_inbound_spi) is None:
            raise ValueError(f"old inbound SPI 0x{old_inbound_spi:08x} is not installed")
        self.add_inbound(new_inbound)
        previous = self.set_outbound(policy, new_outbound)
        if old_inbound_spi is not None:
            self.retire_inbound(old_inbound_spi, now)
        return previous

    def retire_inbound(self, spi: int, now: float, grace: float | None = None) -> None:
        """Keep accepting on ``spi`` until ``now + grace``, then remove it."""
        if self.inbound(spi) is None:
            raise ValueError(f"inbound SPI 0x{spi:08x} is not installed")
        deadline = now + (self.grace if grace is None else grace)
        current = self._retiring.get(spi)
        self._retiring[spi] = deadline if current is None else min(current, deadline)

    def remove_inbound(self, spi: int, reason: str = "deleted") -> AnyInboundSa | None:
        sa: AnyInboundSa | None = self._inbound.pop(spi, None) or self._inbound_ah.pop(spi, None)
        self._retiring.pop(spi, None)
        if sa is not None:
            self._events.append(InboundRemoved(spi, reason))
        return sa

    def remove_outbound(self, policy: str) -> AnyOutboundSa | None:
        return self._outbound.pop(policy, None)

    # -- data path -----------------------------------------------------------------

    def decap(self, packet: bytes, now: float) -> DecapResult:
        """Find the inbound SA by SPI and open the packet; never raises on content."""
        if len(packet) < 8:
            self.counters.truncated += 1
            return Drop.TRUNCATED
        spi = int.from_bytes(packet[:4], "big")
        sa = self._inbound.get(spi)
        if sa is not None and self._retiring and now >= self._retiring.get(spi, _NEVER):
            self.remove_inbound(spi, "rekeyed")
            sa = None
        if sa is None:
            self.counters.unknown_spi += 1
            return Drop.UNKNOWN_SPI
        return sa.decap(packet, now)

    def decap_ah(self, packet: bytes, now: float) -> AhDecapResult:
        """Find the inbound AH SA by the SPI in the packet's AH header (the packet as
        received, IP header first) and verify it; never raises on content."""
        if packet[:1] == b"\x45" and len(packet) >= 28:
            # Plain IPv4 (no options): AH at 20, whatever else the SA checks itself.
            spi = int.from_bytes(packet[24:28], "big")
        else:
            layout = received_layout(packet)
            if layout is None or layout.next_header != IPPROTO_AH or layout.at + 8 > layout.end:
                self.counters.truncated += 1
                return Drop.TRUNCATED
            spi = int.from_bytes(packet[layout.at + 4 : layout.at + 8], "big")
        sa = self._inbound_ah.get(spi)
        if sa is not None and self._retiring and now >= self._retiring.get(spi, _NEVER):
            self.remove_inbound(spi, "rekeyed")
            sa = None
        if sa is None:
            self.counters.unknown_spi += 1
            return Drop.UNKNOWN_SPI
        return sa.decap(packet, now)

    def encap(self, policy: str, payload: bytes, next_header: int, now: float) -> bytes | None:
        """Seal with the policy's current outbound ESP SA; None if there is none (or it
        is an AH SA) or it refuses (expired, sequence numbers used up)."""
        sa = self._outbound.get(policy)
        if not isinstance(sa, OutboundSa):
            return None
        return sa.encap(payload, next_header, now)

    # -- time and events -----------------------------------------------------------

    def get_timer(self) -> float | None:
        """The earliest deadline (grace end or SA lifetime), None if there is none.

        An expired SA still installed gives -inf: call ``handle_timer`` at once.
        """
        deadlines = list(self._retiring.values())
        for sa in self._all_inbound():
            if sa.expired:
                return -float("inf")
            timer = sa.get_timer()
            if timer is not None:
                deadlines.append(timer)
        for out in self._outbound.values():
            if out.expired:
                return -float("inf")
            timer = out.get_timer()
            if timer is not None:
                deadlines.append(timer)
        return min(deadlines, default=None)

    def handle_timer(self, now: float) -> None:
        """Run SA lifetimes, then remove retired (grace over) and expired SAs."""
        for spi, deadline in list(self._retiring.items()):
            if now >= deadline:
                self.remove_inbound(spi, "rekeyed")
        for sa in self._all_inbound():
            sa.handle_timer(now)
            if sa.expired:
                self.remove_inbound(sa.spi, "expired")
        for policy, out in list(self._outbound.items()):
            out.handle_timer(now)
            if out.expired:
                del self._outbound[policy]

    def next_event(self) -> SadEvent | None:
        return self._events.popleft() if self._events else None

    def _take_events(self, sa: AnyInboundSa | AnyOutboundSa) -> None:
        # One queue for the whole SAD: events raised on the packet path land here.
        sa.share_events(self._events)
