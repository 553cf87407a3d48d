"""One AH security association (RFC 4302): protection out, verification in.

Sans-I/O like the ESP SA beside it, and built from the same parts: the integrity table
and authenticators of ``transforms``, the anti-replay window of ``replay``, and from
``sa`` the lifetimes (``SaLifecycle``: soft and hard limits, ``RekeyRequested`` and
``SaExpired`` events, one timer), ``SaCounters``, ``Mode`` and the ``Drop`` reasons. An
SA is read through ``next_event()``, ``get_timer()`` and its ``counters``.

Unlike ESP, AH covers the IP header, so both directions work on whole IP packets:

- Outbound ``encap(packet, now)`` takes an IP packet and gives the packet to send:
  tunnel mode wraps it whole in a new outer header (the SA's addresses, next header 4
  or 41); transport mode inserts AH after the packet's IP header (and the IPv6
  extension headers that precede AH, ``ah_icv``). The sequence number counts up from 1
  and never cycles (section 3.3.2): a rekey is asked for ``SEQ_SOFT_MARGIN`` numbers
  before the end, and at the end the SA refuses to send, as ESP's does.
- Inbound ``decap(packet, now)`` takes the packet as received, IP header included, and
  gives the inner packet (tunnel) or the packet without AH, next header and length
  fixed (transport); or a ``Drop``. Anti-replay ``check`` comes before the ICV,
  ``update`` after it (section 3.4.3); with ESN the high half is inferred from the
  window (Appendix B, the same algorithm as RFC 4303 Appendix A2.2). Never raises on
  what arrives.

The header (section 2): next header, payload length (AH's length in 32-bit words minus
2), reserved (0), SPI, sequence number (its low half with ESN), then the ICV field: the
transform's IV (8 octets for AES-GMAC, RFC 4543 section 4, here the 64-bit sequence
number, unique under the key) and ICV, padded so that AH is a multiple of 32 bits over
IPv4 and 64 bits over IPv6 (sections 2.6 and 3.3.3.2.1). With ESN the high half of the
sequence number is authenticated after the packet but not sent (sections 2.5.1 and
3.3.3.2.2).

Drop reasons used here: ``TRUNCATED`` for a packet whose IP or AH header is cut short
or unreadable (or a fragment, section 3.4.1), ``WRONG_NEXT_HEADER`` when no AH follows
the IP header or the protected protocol does not fit the mode, ``UNKNOWN_SPI`` for an
AH of another SA, ``INTEGRITY`` for an ICV that does not verify or whose length does not
fit the SA's transform, ``REPLAYED``/``STALE``/``EXPIRED``/``POLICY``/
``BAD_INNER_PACKET`` as with ESP.
"""

from __future__ import annotations

import ipaddress
import struct
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .ah_icv import (
    IPPROTO_AH,
    IpLayout,
    canonical,
    checksum_of_sum,
    ipv4_checksum,
    plain_ah_end,
    received_layout,
    sending_layout,
    zeroed_ipv4_base,
    zeroed_ipv6_base,
)
from .replay import DEFAULT_WINDOW_SIZE, ReplayVerdict, ReplayWindow
from .sa import (
    NEXT_HEADER_IPV4,
    NEXT_HEADER_IPV6,
    Direction,
    Drop,
    Lifetime,
    Mode,
    SaCounters,
    SaEvent,
    SaLifecycle,
    check_sa_address,
    check_spi,
    sequence_limits,
)
from .spd import TrafficSelector, inbound_allowed, parse_ip_packet
from .transforms import Integrity, Octets, build_authenticator

AH_HEADER_LENGTH = 12
"""Next header, payload length, reserved, SPI and sequence number (RFC 4302 section 2)."""

OUTER_TTL = 64
"""TTL / hop limit of the outer header in tunnel mode."""

_INNER_VERSION = {NEXT_HEADER_IPV4: 4, NEXT_HEADER_IPV6: 6}
_BASE_HEADER = {4: 20, 6: 40}
"""Octets of the IP header without IPv4 options or IPv6 extension headers."""
_ZEROED_BASE = {4: zeroed_ipv4_base, 6: zeroed_ipv6_base}
_SIZE_FIELD = {4: slice(2, 4), 6: slice(4, 6)}
"""IPv4's total length, IPv6's payload length."""
_AH_FIXED = struct.Struct("!BBHII")
"""Next header, payload length, reserved, SPI, sequence number (its low half)."""
_IPV4_HEADER = struct.Struct("!BBHHHBBH4s4s")
_IPV6_HEADER = struct.Struct("!IHBB16s16s")
_ALIGN = {4: 4, 6: 8}
_MAX_PADDING = 8
"""Padding accepted after the ICV: up to the 64-bit alignment some stacks use on IPv4."""


def ah_length(integrity: Integrity, version: int) -> int:
    """Octets of the AH header with ``integrity`` over IP ``version`` (4 or 6), ICV
    padding included (RFC 4302 sections 2.2 and 2.6; RFC 4543 section 4 and its
    erratum 3643 for AES-GMAC over IPv6)."""
    unpadded = AH_HEADER_LENGTH + integrity.iv_length + integrity.icv_length
    return unpadded + (-unpadded % _ALIGN[version])


@dataclass(frozen=True)
class AhParams:
    """Everything one AH SA needs, as the IKE side hands it over."""

    spi: int
    integrity: Integrity
    integ_key: bytes = field(repr=False)
    mode: Mode = Mode.TUNNEL
    esn: bool = False
    lifetime: Lifetime = field(default_factory=Lifetime)
    src: str = "*"
    """Outer source address (the sender's), or * when not known here. An outbound
    tunnel-mode SA needs both addresses: they make its outer header."""
    dst: str = "*"

    def __post_init__(self) -> None:
        check_spi(self.spi)
        if not isinstance(self.integrity, Integrity):
            raise TypeError(f"AH integrity must be an Integrity, got {self.integrity!r}")
        check_sa_address("src", self.src)
        check_sa_address("dst", self.dst)


AhDecapResult = bytes | Drop
"""The inner packet (tunnel) or the packet without AH (transport), or why it was dropped."""


class _AhSa:
    """What both directions hold: the authenticator, the lifecycle and the counters."""

    direction: Direction

    def __init__(self, params: AhParams, now: float) -> None:
        self.params = params
        self.spi = params.spi
        self.mode = params.mode
        self.esn = params.esn
        self.added_at = now
        self.counters = SaCounters()
        self._life = SaLifecycle(params.spi, self.direction, params.lifetime, now)
        self._auth = build_authenticator(params.integrity, params.integ_key)
        self._iv_length = params.integrity.iv_length
        self._icv_length = params.integrity.icv_length
        self._spi_bytes = params.spi.to_bytes(4, "big")

    @property
    def expired(self) -> bool:
        return self._life.expired

    def next_event(self) -> SaEvent | None:
        return self._life.next_event()

    def share_events(self, queue: deque[Any]) -> None:
        """Deliver this SA's events (pending and future) into ``queue``."""
        self._life.share_events(queue)

    def get_timer(self) -> float | None:
        """The next lifetime deadline, or None."""
        return self._life.get_timer()

    def handle_timer(self, now: float) -> None:
        self._life.handle_timer(now)


class OutboundAhSa(_AhSa):
    """Protects packets for one outbound AH SA."""

    direction = Direction.OUTBOUND

    def __init__(self, params: AhParams, now: float) -> None:
        super().__init__(params, now)
        self._seq = 0
        self._seq_max, self._seq_mark = sequence_limits(params.esn)
        self._ah_length = {v: ah_length(params.integrity, v) for v in _ALIGN}
        self._length_field = {v: length // 4 - 2 for v, length in self._ah_length.items()}
        # What follows the IV: the ICV (zero while it is computed) and the padding.
        before_icv = AH_HEADER_LENGTH + self._iv_length
        self._zeroed_tail = {v: bytes(n - before_icv) for v, n in self._ah_length.items()}
        self._padding = {
            v: bytes(n - before_icv - self._icv_length) for v, n in self._ah_length.items()
        }
        self._sign_parts = self._auth.sign_parts
        self._outer: tuple[int, bytes, bytes] | None = None
        self._outer_sum = 0
        if params.mode is Mode.TUNNEL:
            if params.src == "*" or params.dst == "*":
                raise ValueError("an outbound tunnel-mode AH SA needs its src and dst addresses")
            src = ipaddress.ip_address(params.src)
            dst = ipaddress.ip_address(params.dst)
            if src.version != dst.version:
                raise ValueError(f"AH SA src {src} and dst {dst} are of different IP versions")
            self._outer = (src.version, src.packed, dst.packed)
            # The outer IPv4 header's 16-bit words that never change (RFC 1071 sum):
            # version and header length, TTL and protocol, the addresses.
            addresses = struct.unpack("!4H", src.packed + dst.packed) if src.version == 4 else ()
            self._outer_sum = 0x4500 + (OUTER_TTL << 8 | IPPROTO_AH) + sum(addresses)

    @property
    def seq(self) -> int:
        """The last sequence number sent (0 before the first packet)."""
        return self._seq

    def encap(self, packet: bytes, now: float) -> bytes | Drop:
        """The packet to send, AH included, or why not.

        ``Drop.EXPIRED``: the SA is expired or out of sequence numbers (counted in
        ``send_refused``; a ``SaExpired`` or ``RekeyRequested`` event says why).
        ``Drop.BAD_INNER_PACKET``: ``packet`` is no readable, whole IP packet, or (in
        transport mode) has an IPv6 routing header of a type AH cannot predict.
        ``Drop.WRONG_NEXT_HEADER``: a whole IP packet inside a transport-mode packet
        (the tunnel's business). Both counted in ``malformed``; nothing else changes.
        """
        life = self._life
        counters = self.counters
        if now >= life.deadline:
            life.handle_timer(now)
            if life.expired:
                counters.send_refused += 1
                return Drop.EXPIRED
        seq = self._seq + 1
        if seq >= self._seq_mark:
            # RFC 4302 section 3.3.2: the counter must not cycle; rekey well before.
            life.soft("sequence")
            if seq > self._seq_max:
                counters.send_refused += 1
                return Drop.EXPIRED
        result = self._seal(seq, packet)
        if isinstance(result, Drop):
            counters.malformed += 1
            return result
        self._seq = seq
        protected, payload_length = result
        counters.packets_out += 1
        counters.bytes_out += payload_length
        if counters.bytes_out >= life.byte_mark or counters.packets_out >= life.packet_mark:
            life.volume(counters.bytes_out, counters.packets_out)
        return protected

    def seal_with_seq(self, seq: int, packet: bytes) -> bytes | Drop:
        """Build the protected packet with sequence number ``seq``; no counters change.

        ``encap`` calls this with the next number. Called directly it serves
        known-answer tests only: a sequence number must never repeat under one key.
        """
        result = self._seal(seq, packet)
        return result if isinstance(result, Drop) else result[0]

    def _seal(self, seq: int, packet: bytes) -> tuple[bytes, int] | Drop:
        """The protected packet and the length of what AH protects after its header."""
        outer = self._outer
        if outer is not None:
            return self._seal_tunnel(outer, seq, packet)
        return self._seal_transport(seq, packet)

    def _ah_header(self, seq: int, next_header: int, version: int) -> tuple[bytes, bytes]:
        """``(iv, header)``: the IV (empty but for GMAC) and AH up to the ICV field."""
        iv = seq.to_bytes(8, "big") if self._iv_length else b""
        fixed = _AH_FIXED.pack(
            next_header, self._length_field[version], 0, self.spi, seq & 0xFFFFFFFF
        )
        return iv, fixed + iv

    def _seal_tunnel(
        self, outer: tuple[int, bytes, bytes], seq: int, inner: bytes
    ) -> tuple[bytes, int] | Drop:
        # The outer header is ours (no options, no extension headers): its mutable fields
        # are zeroed as it is built, and the ICV runs over the pieces, none copied.
        version, src, dst = outer
        inner_version = inner[0] >> 4 if inner else 0
        # DSCP and ECN copied from the inner packet (RFC 4301 section 5.1.2.1); they
        # are mutable, outside the ICV.
        if inner_version == 4 and len(inner) >= 20:
            traffic_class = inner[1]
            flags = (inner[6] & 0x40) << 8  # DF copied (RFC 4301 section 8.1)
            next_header = NEXT_HEADER_IPV4
        elif inner_version == 6 and len(inner) >= 40:
            traffic_class = (inner[0] & 15) << 4 | inner[1] >> 4
            flags = 0
            next_header = NEXT_HEADER_IPV6
        else:
            return Drop.BAD_INNER_PACKET
        length = self._ah_length[version]
        if version == 4:
            total = 20 + length + len(inner)
            if total > 0xFFFF:
                return Drop.BAD_INNER_PACKET
            # Never 0: a raw socket's kernel replaces an identification of 0 (man 7 raw,
            # IP_HDRINCL), and it is inside the ICV. From the sent half of the number.
            ident = ((seq & 0xFFFFFFFF) - 1) % 0xFFFF + 1
            checksum = checksum_of_sum(self._outer_sum + traffic_class + total + ident + flags)
            header = _IPV4_HEADER.pack(
                0x45, traffic_class, total, ident, flags, OUTER_TTL, IPPROTO_AH, checksum, src, dst
            )
            zeroed = zeroed_ipv4_base(header)
        else:
            payload_length = length + len(inner)
            if payload_length > 0xFFFF:
                return Drop.BAD_INNER_PACKET
            header = _IPV6_HEADER.pack(
                0x60000000 | traffic_class << 20, payload_length, IPPROTO_AH, OUTER_TTL, src, dst
            )
            zeroed = zeroed_ipv6_base(header)
        iv, ah = self._ah_header(seq, next_header, version)
        parts: tuple[Octets, ...] = (zeroed, ah, self._zeroed_tail[version], inner)
        if self.esn:
            parts += ((seq >> 32).to_bytes(4, "big"),)  # RFC 4302 section 2.5.1
        icv = self._sign_parts(iv, parts)
        return b"".join((header, ah, icv, self._padding[version], inner)), len(inner)

    def _seal_transport(self, seq: int, packet: bytes) -> tuple[bytes, int] | Drop:
        layout = sending_layout(packet)
        if layout is None:
            return Drop.BAD_INNER_PACKET
        if layout.next_header in _INNER_VERSION:
            return Drop.WRONG_NEXT_HEADER
        version, at, end = layout.version, layout.at, layout.end
        length = self._ah_length[version]
        size = end + length if version == 4 else end + length - 40
        if size > 0xFFFF:
            return Drop.BAD_INNER_PACKET
        iv, ah = self._ah_header(seq, layout.next_header, version)
        esn_high = ((seq >> 32).to_bytes(4, "big"),) if self.esn else ()
        if at == _BASE_HEADER[version]:
            # No IPv4 options, no IPv6 extension header before AH: only the base header
            # has mutable fields, and the payload enters the ICV where it lies.
            header = bytearray(packet[:at])
            header[_SIZE_FIELD[version]] = size.to_bytes(2, "big")
            header[layout.next_header_at] = IPPROTO_AH
            if version == 4:
                header[10:12] = b"\x00\x00"
                zeroed = zeroed_ipv4_base(header)
                header[10:12] = ipv4_checksum(header).to_bytes(2, "big")
            else:
                zeroed = zeroed_ipv6_base(header)
            payload = memoryview(packet)[at:end]
            icv = self._sign_parts(iv, (zeroed, ah, self._zeroed_tail[version], payload, *esn_high))
            return b"".join((header, ah, icv, self._padding[version], payload)), end - at
        data = bytearray(packet[:at] + ah + self._zeroed_tail[version] + packet[at:end])
        data[_SIZE_FIELD[version]] = size.to_bytes(2, "big")
        data[layout.next_header_at] = IPPROTO_AH
        icv_at = at + len(ah)
        placed = layout._replace(next_header=IPPROTO_AH, end=len(data))
        covered = canonical(data, placed, icv_at, self._icv_length, sending=True)
        if covered is None:
            return Drop.BAD_INNER_PACKET
        data[icv_at : icv_at + self._icv_length] = self._sign_parts(iv, (covered, *esn_high))
        if version == 4:
            data[10:12] = b"\x00\x00"
            data[10:12] = ipv4_checksum(data[:at]).to_bytes(2, "big")
        return bytes(data), end - at


class InboundAhSa(_AhSa):
    """Verifies packets for one inbound AH SA."""

    direction = Direction.INBOUND

    def __init__(
        self,
        params: AhParams,
        now: float,
        *,
        replay_window: int = DEFAULT_WINDOW_SIZE,
        local_ts: Sequence[TrafficSelector] = (),
        remote_ts: Sequence[TrafficSelector] = (),
    ) -> None:
        super().__init__(params, now)
        if bool(local_ts) != bool(remote_ts):
            raise ValueError("give both local and remote traffic selectors, or neither")
        self.replay = ReplayWindow(replay_window)
        self.local_ts = tuple(local_ts)
        self.remote_ts = tuple(remote_ts)
        self._tunnel = params.mode is Mode.TUNNEL
        self._auth_min = self._iv_length + self._icv_length
        self._zero_icv = bytes(self._icv_length)
        self._verify_parts = self._auth.verify_parts

    def decap(self, packet: bytes, now: float) -> AhDecapResult:
        """Verify one received packet (IP header first). Never raises on content."""
        counters = self.counters
        life = self._life
        if now >= life.deadline:
            life.handle_timer(now)
            if life.expired:
                counters.expired_drops += 1
                return Drop.EXPIRED
        layout: IpLayout | None = None
        end = plain_ah_end(packet)
        if end:
            version = packet[0] >> 4
            at = _BASE_HEADER[version]
        else:
            layout = received_layout(packet)
            if layout is None:
                counters.malformed += 1
                return Drop.TRUNCATED
            if layout.next_header != IPPROTO_AH:
                counters.malformed += 1
                return Drop.WRONG_NEXT_HEADER
            version, at, end = layout.version, layout.at, layout.end
        if at + AH_HEADER_LENGTH > end:
            counters.malformed += 1
            return Drop.TRUNCATED
        length = (packet[at + 1] + 2) * 4
        if at + length > end:
            counters.malformed += 1
            return Drop.TRUNCATED
        if packet[at + 4 : at + 8] != self._spi_bytes:
            counters.malformed += 1
            return Drop.UNKNOWN_SPI
        padding = length - AH_HEADER_LENGTH - self._auth_min
        if not 0 <= padding < _MAX_PADDING or length % _ALIGN[version]:
            counters.integrity_failures += 1
            return Drop.INTEGRITY
        replay = self.replay
        seq_low = int.from_bytes(packet[at + 8 : at + 12], "big")
        if self.esn:
            inferred = replay.infer_esn(seq_low)
            if inferred is None:
                counters.replay_drops += 1
                return Drop.STALE
            seq = inferred
        else:
            seq = seq_low
        verdict = replay.check(seq)
        if verdict:
            counters.replay_drops += 1
            return Drop.REPLAYED if verdict is ReplayVerdict.REPLAYED else Drop.STALE
        iv_at = at + AH_HEADER_LENGTH
        icv_at = iv_at + self._iv_length
        icv_end = icv_at + self._icv_length
        parts: tuple[Octets, ...]
        if layout is None:
            # No IPv4 options, no IPv6 extension header before AH: only the base header
            # has mutable fields, and the rest enters the ICV where it lies.
            view = memoryview(packet)
            zeroed = _ZEROED_BASE[version](packet)
            parts = (zeroed, view[at:icv_at], self._zero_icv, view[icv_end:end])
        else:
            covered = canonical(packet, layout, icv_at, self._icv_length, sending=False)
            if covered is None:
                counters.malformed += 1
                return Drop.TRUNCATED
            parts = (covered,)
        if self.esn:
            parts += ((seq >> 32).to_bytes(4, "big"),)
        if not self._verify_parts(packet[iv_at:icv_at], parts, packet[icv_at:icv_end]):
            counters.integrity_failures += 1
            return Drop.INTEGRITY
        replay.update(seq)
        next_header = packet[at]
        payload = packet[at + length : end]
        if self._tunnel:
            result = self._inner(payload, next_header)
        else:
            if layout is None:
                next_header_at = 9 if version == 4 else 6
                layout = IpLayout(version, at, next_header_at, IPPROTO_AH, end)
            result = self._without_ah(packet, layout, length, next_header)
        if isinstance(result, Drop):
            return result
        counters.packets_in += 1
        counters.bytes_in += len(payload)
        if counters.bytes_in >= life.byte_mark or counters.packets_in >= life.packet_mark:
            life.volume(counters.bytes_in, counters.packets_in)
        return result

    def _inner(self, inner: bytes, next_header: int) -> bytes | Drop:
        counters = self.counters
        version = _INNER_VERSION.get(next_header)
        if version is None:
            counters.malformed += 1
            return Drop.WRONG_NEXT_HEADER
        if not inner or inner[0] >> 4 != version:
            counters.malformed += 1
            return Drop.BAD_INNER_PACKET
        return self._selected(inner)

    def _without_ah(
        self, packet: bytes, layout: IpLayout, length: int, next_header: int
    ) -> bytes | Drop:
        if next_header in _INNER_VERSION:
            # A whole IP packet on a transport-mode SA: the peer is in tunnel mode.
            self.counters.malformed += 1
            return Drop.WRONG_NEXT_HEADER
        at = layout.at
        data = bytearray(packet[:at] + packet[at + length : layout.end])
        data[layout.next_header_at] = next_header
        if layout.version == 4:
            data[2:4] = len(data).to_bytes(2, "big")
            data[10:12] = b"\x00\x00"
            data[10:12] = ipv4_checksum(data[:at]).to_bytes(2, "big")
        else:
            data[4:6] = (len(data) - 40).to_bytes(2, "big")
        return self._selected(bytes(data))

    def _selected(self, packet: bytes) -> bytes | Drop:
        """RFC 4301 section 5.2: the packet must fit the SA's selectors (if it has any)."""
        if not self.local_ts:
            return packet
        info = parse_ip_packet(packet)
        if info is None:
            self.counters.malformed += 1
            return Drop.BAD_INNER_PACKET
        if not inbound_allowed(self.local_ts, self.remote_ts, info):
            self.counters.policy_drops += 1
            return Drop.POLICY
        return packet
