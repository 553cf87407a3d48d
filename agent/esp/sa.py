"""One ESP security association (RFC 4303): encapsulation out, decapsulation in.

Sans-I/O like the rest of the core: bytes in, bytes out, ``now`` passed in. An SA is
read through ``next_event()`` (rekey requests and expiry), ``get_timer()`` (the next
lifetime deadline) and its ``counters``.

Outbound: the sequence number counts up from 1 and never wraps (RFC 4303 section
3.3.3): a rekey is requested ``SEQ_SOFT_MARGIN`` numbers before the end, and at the end
the SA refuses to send. AEAD transforms use the 64-bit sequence number as their
explicit IV, so an IV never repeats under one key (RFC 4106 section 3.1 allows any
unique counter). Padding is 1, 2, 3, ... (RFC 4303 section 2.4) up to the transform's
alignment.

Inbound: anti-replay ``check`` before the ICV, window ``update`` after it (section
3.4.3); the trailer's padding must be 1, 2, 3, ...; next header 59 is a dummy packet
(section 2.6) and is dropped; in tunnel mode the inner packet must be IPv4 (4) or IPv6
(41) and match the SA's traffic selectors (RFC 4301 section 5.2). ``decap`` never
raises on what arrives: it returns ``(payload, next_header)`` or a ``Drop`` reason, and
counts it.
"""

from __future__ import annotations

import ipaddress
import os
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from cryptography.exceptions import InvalidTag

from .replay import DEFAULT_WINDOW_SIZE, ReplayVerdict, ReplayWindow
from .spd import TrafficSelector, inbound_allowed, parse_ip_packet, parse_ports
from .transforms import AeadSuite, Encryption, Integrity, build_suite

NEXT_HEADER_IPV4 = 4
NEXT_HEADER_IPV6 = 41
NEXT_HEADER_DUMMY = 59

SEQ_MAX = (1 << 32) - 1
ESN_SEQ_MAX = (1 << 64) - 1
SEQ_SOFT_MARGIN = 1 << 24
"""Rekey this many sequence numbers before the last one (2^32 - 2^24 without ESN): at
about 135,000 packets/s (one core's ceiling) that is two minutes, longer than a rekey
whose every message needs all its retransmissions, for 0.4% of the space."""
ESN_SEQ_SOFT_MARGIN = 1 << 32

_HEADER_LENGTH = 8
_INNER_VERSION = {NEXT_HEADER_IPV4: 4, NEXT_HEADER_IPV6: 6}
_NEVER = float("inf")
_UNLIMITED = 1 << 80
_PAD = [bytes(range(1, n + 1)) for n in range(256)]
# Padding || Pad Length || Next Header for every pad length an SA can need (alignment
# is at most 16) and every next header: one concatenation per packet.
_TRAILER = [[_PAD[n] + bytes((n, nh)) for nh in range(256)] for n in range(16)]


class Mode(StrEnum):
    TUNNEL = "tunnel"
    TRANSPORT = "transport"


class Direction(StrEnum):
    INBOUND = "in"
    OUTBOUND = "out"


class Drop(StrEnum):
    """Why ``decap`` (or the SAD in front of it) dropped a packet."""

    TRUNCATED = "truncated"
    UNKNOWN_SPI = "unknown_spi"
    REPLAYED = "replayed"
    STALE = "stale"
    INTEGRITY = "integrity"
    BAD_PADDING = "bad_padding"
    DUMMY = "dummy"
    WRONG_NEXT_HEADER = "wrong_next_header"
    BAD_INNER_PACKET = "bad_inner_packet"
    POLICY = "policy"
    EXPIRED = "expired"


DecapResult = tuple[bytes, int] | Drop
"""``(payload, next_header)`` of an accepted packet, or why it was dropped."""


@dataclass(slots=True)
class SaCounters:
    """Per-SA counters; bytes count payload (inner packet) octets."""

    bytes_in: int = 0
    packets_in: int = 0
    bytes_out: int = 0
    packets_out: int = 0
    replay_drops: int = 0
    """Replayed or left of the window."""
    integrity_failures: int = 0
    policy_drops: int = 0
    """Inner packet outside the SA's traffic selectors."""
    bad_padding: int = 0
    dummy_packets: int = 0
    malformed: int = 0
    """Truncated, wrong next header for the mode, or an unreadable inner packet."""
    expired_drops: int = 0
    send_refused: int = 0
    """encap refused: hard lifetime reached or sequence numbers used up."""


@dataclass(frozen=True)
class Lifetime:
    """Soft and hard limits (RFC 4301 section 4.4.2.1); None means no limit.

    Soft limits raise a rekey request, hard limits expire the SA. Seconds count from
    the SA's add time.
    """

    soft_bytes: int | None = None
    hard_bytes: int | None = None
    soft_packets: int | None = None
    hard_packets: int | None = None
    soft_seconds: float | None = None
    hard_seconds: float | None = None

    def __post_init__(self) -> None:
        for kind in ("bytes", "packets", "seconds"):
            soft = getattr(self, f"soft_{kind}")
            hard = getattr(self, f"hard_{kind}")
            for name, value in ((f"soft_{kind}", soft), (f"hard_{kind}", hard)):
                if value is not None and value <= 0:
                    raise ValueError(f"lifetime {name} must be positive, got {value}")
            if soft is not None and hard is not None and soft > hard:
                raise ValueError(f"lifetime soft_{kind} ({soft}) exceeds hard_{kind} ({hard})")


@dataclass(frozen=True)
class SaParams:
    """Everything one SA needs, as the IKE side hands it over in its events."""

    spi: int
    encryption: Encryption
    enc_key: bytes = field(repr=False)
    integrity: Integrity | None = None
    integ_key: bytes = field(default=b"", repr=False)
    mode: Mode = Mode.TUNNEL
    esn: bool = False
    lifetime: Lifetime = field(default_factory=Lifetime)
    src: str = "*"
    """Outer source address (the sender's), or * when not known here."""
    dst: str = "*"

    def __post_init__(self) -> None:
        check_spi(self.spi)
        check_sa_address("src", self.src)
        check_sa_address("dst", self.dst)


@dataclass(frozen=True)
class RekeyRequested:
    """A soft limit was reached: negotiate a replacement (the SA keeps working)."""

    spi: int
    direction: Direction
    reason: str
    """'time', 'bytes', 'packets' or 'sequence'."""


@dataclass(frozen=True)
class SaExpired:
    """A hard limit was reached: the SA no longer sends or accepts anything."""

    spi: int
    direction: Direction
    reason: str


SaEvent = RekeyRequested | SaExpired


class SaLifecycle:
    """The lifetime of one SA direction: soft and hard limits in time, bytes and packets
    (RFC 4301 section 4.4.2.1), the events they raise and the timer that runs them.

    Shared by ESP's and AH's SAs (composed, not inherited). The packet path reads
    ``deadline``, ``byte_mark`` and ``packet_mark`` directly and calls ``handle_timer``
    or ``volume`` only when one is reached.
    """

    __slots__ = (
        "_events",
        "_hard_at",
        "_soft_at",
        "_soft_fired",
        "added_at",
        "byte_mark",
        "deadline",
        "direction",
        "expired",
        "lifetime",
        "packet_mark",
        "spi",
    )

    def __init__(self, spi: int, direction: Direction, lifetime: Lifetime, now: float) -> None:
        self.spi = spi
        self.direction = direction
        self.lifetime = lifetime
        self.added_at = now
        self.expired = False
        self._events: deque[Any] = deque()
        self._soft_fired = False
        self._soft_at = _NEVER if lifetime.soft_seconds is None else now + lifetime.soft_seconds
        self._hard_at = _NEVER if lifetime.hard_seconds is None else now + lifetime.hard_seconds
        self.deadline = min(self._soft_at, self._hard_at)
        """The next time limit (-inf once expired): ``now >= deadline`` calls for
        ``handle_timer``."""
        self.byte_mark = _first_mark(lifetime.soft_bytes, lifetime.hard_bytes)
        self.packet_mark = _first_mark(lifetime.soft_packets, lifetime.hard_packets)

    def next_event(self) -> SaEvent | None:
        return self._events.popleft() if self._events else None

    def share_events(self, queue: deque[Any]) -> None:
        """Deliver events (pending and future) into ``queue``."""
        queue.extend(self._events)
        self._events.clear()
        self._events = queue

    def get_timer(self) -> float | None:
        """The next lifetime deadline, or None."""
        return None if self.expired or self.deadline == _NEVER else self.deadline

    def handle_timer(self, now: float) -> None:
        if self.expired:
            return
        if not self._soft_fired and now >= self._soft_at:
            self.soft("time")
        if now >= self._hard_at:
            self.expire("time")
            return
        self.deadline = self._hard_at if self._soft_fired else min(self._soft_at, self._hard_at)

    def soft(self, reason: str) -> None:
        """Ask once for a rekey (``RekeyRequested``); the SA keeps working."""
        if not self._soft_fired:
            self._soft_fired = True
            self._events.append(RekeyRequested(self.spi, self.direction, reason))
            self.deadline = self._hard_at

    def expire(self, reason: str) -> None:
        """End the SA (``SaExpired``): it sends and accepts nothing more."""
        if not self.expired:
            self.expired = True
            self.deadline = -_NEVER
            self._events.append(SaExpired(self.spi, self.direction, reason))

    def volume(self, octets: int, packets: int) -> None:
        """Called when a byte or packet count reached its next mark."""
        lifetime = self.lifetime
        for kind, count, soft, hard in (
            ("bytes", octets, lifetime.soft_bytes, lifetime.hard_bytes),
            ("packets", packets, lifetime.soft_packets, lifetime.hard_packets),
        ):
            if hard is not None and count >= hard:
                self.soft(kind)
                self.expire(kind)
            elif soft is not None and count >= soft:
                self.soft(kind)
        self.byte_mark = _next_mark(octets, lifetime.soft_bytes, lifetime.hard_bytes)
        self.packet_mark = _next_mark(packets, lifetime.soft_packets, lifetime.hard_packets)


def sequence_limits(esn: bool) -> tuple[int, int]:
    """``(last, rekey_at)``: the last sequence number an outbound SA may send and the one
    from which it asks for a rekey (RFC 4303 section 3.3.3, RFC 4302 section 3.3.2: the
    counter never cycles)."""
    if esn:
        return ESN_SEQ_MAX, ESN_SEQ_MAX - ESN_SEQ_SOFT_MARGIN
    return SEQ_MAX, SEQ_MAX - SEQ_SOFT_MARGIN


def check_spi(spi: object) -> None:
    """RFC 4303 section 2.1 / RFC 4302 section 2.4: 0 is reserved for local use and
    1-255 by IANA."""
    if not isinstance(spi, int) or isinstance(spi, bool) or not 256 <= spi <= SEQ_MAX:
        raise ValueError(f"SPI must be an int in 256..2^32-1, got {spi!r}")


def check_sa_address(name: str, value: str) -> None:
    """An SA's outer address is an IP address or * (not known here)."""
    if value != "*":
        try:
            ipaddress.ip_address(value)
        except ValueError:
            raise ValueError(f"SA {name} {value!r} is not an IP address or *") from None


class _EspSa:
    """What both directions share: transforms, lifetimes, events and counters."""

    direction: Direction

    def __init__(self, params: SaParams, now: float) -> None:
        self.params = params
        self.spi = params.spi
        self.mode = params.mode
        self.esn = params.esn
        self.added_at = now
        self.counters = SaCounters()
        self._life = SaLifecycle(params.spi, self.direction, params.lifetime, now)
        suite = build_suite(params.encryption, params.enc_key, params.integrity, params.integ_key)
        self._suite = suite
        self._aead = params.encryption.is_aead
        self._iv_length = suite.iv_length
        self._icv_length = suite.icv_length
        self._align = suite.align
        self._spi_bytes = params.spi.to_bytes(4, "big")
        # AEAD hot path: the cryptography object and salt used directly (one call per
        # packet); CBC+HMAC goes through the suite.
        self._salt = suite.salt if isinstance(suite, AeadSuite) else b""

    @property
    def expired(self) -> bool:
        return self._life.expired

    def next_event(self) -> SaEvent | None:
        return self._life.next_event()

    def share_events(self, queue: deque[Any]) -> None:
        """Deliver this SA's events (pending and future) into ``queue`` (the SAD's)."""
        self._life.share_events(queue)

    def get_timer(self) -> float | None:
        """The next lifetime deadline, or None."""
        return self._life.get_timer()

    def handle_timer(self, now: float) -> None:
        self._life.handle_timer(now)


def _first_mark(soft: int | None, hard: int | None) -> int:
    return min(x for x in (soft, hard, _UNLIMITED) if x is not None)


def _next_mark(count: int, soft: int | None, hard: int | None) -> int:
    return min((x for x in (soft, hard) if x is not None and x > count), default=_UNLIMITED)


class OutboundSa(_EspSa):
    """Seals packets for one outbound SA."""

    direction = Direction.OUTBOUND

    def __init__(self, params: SaParams, now: float) -> None:
        super().__init__(params, now)
        self._seq = 0
        self._seq_max, self._seq_mark = sequence_limits(params.esn)
        self._seal = self._suite.seal
        suite = self._suite
        self._encrypt = suite.aead.encrypt if isinstance(suite, AeadSuite) else None
        if params.mode is Mode.TUNNEL:
            allowed = {NEXT_HEADER_IPV4, NEXT_HEADER_IPV6, NEXT_HEADER_DUMMY}
        else:
            allowed = set(range(256)) - {NEXT_HEADER_IPV4, NEXT_HEADER_IPV6}
        self._next_headers = frozenset(allowed)

    @property
    def seq(self) -> int:
        """The last sequence number sent (0 before the first packet)."""
        return self._seq

    def encap(self, payload: bytes, next_header: int, now: float) -> bytes | None:
        """The ESP packet (SPI to ICV) carrying ``payload``, or None if the SA refuses.

        Tunnel mode: ``payload`` is the inner IP packet, next header 4 or 41. Transport
        mode: the upper-layer segment and its protocol number. None means the SA is
        expired or out of sequence numbers (counted in ``send_refused``); a
        ``RekeyRequested`` or ``SaExpired`` event says why. A next header that does not
        fit the mode is our own misuse and raises ValueError.
        """
        if next_header not in self._next_headers:
            raise ValueError(f"next header {next_header!r} does not fit a {self.mode} mode SA")
        life = self._life
        if now >= life.deadline:
            life.handle_timer(now)
            if life.expired:
                self.counters.send_refused += 1
                return None
        seq = self._seq + 1
        if seq >= self._seq_mark:
            # RFC 4303 section 3.3.3: the counter must not cycle; rekey well before.
            life.soft("sequence")
            if seq > self._seq_max:
                self.counters.send_refused += 1
                return None
        self._seq = seq
        iv = seq.to_bytes(8, "big") if self._aead else os.urandom(16)
        packet = self.seal_with_iv(seq, iv, payload, next_header)
        counters = self.counters
        counters.packets_out += 1
        counters.bytes_out += len(payload)
        if counters.bytes_out >= life.byte_mark or counters.packets_out >= life.packet_mark:
            life.volume(counters.bytes_out, counters.packets_out)
        return packet

    def seal_with_iv(self, seq: int, iv: bytes, payload: bytes, next_header: int) -> bytes:
        """Build the packet for a given sequence number and IV; no counters change.

        ``encap`` calls this with the IV it chose. Called directly it serves known-answer
        tests only: an IV must never repeat under one key.
        """
        seq8 = seq.to_bytes(8, "big")
        header = self._spi_bytes + seq8[4:]
        plaintext = payload + _TRAILER[(-len(payload) - 2) % self._align][next_header]
        if self.esn:
            # RFC 4303 section 2.2.1: the high half is authenticated but not sent.
            return header + iv + self._seal(iv, header, plaintext, seq8[:4])
        if self._encrypt is not None:
            return header + iv + self._encrypt(self._salt + iv, plaintext, header)
        return header + iv + self._seal(iv, header, plaintext, b"")


class InboundSa(_EspSa):
    """Opens and checks packets for one inbound SA."""

    direction = Direction.INBOUND

    def __init__(
        self,
        params: SaParams,
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
        self._open = self._suite.open
        suite = self._suite
        self._decrypt = suite.aead.decrypt if isinstance(suite, AeadSuite) else None
        self._tunnel = params.mode is Mode.TUNNEL
        # The common case (tunnel mode, no selectors to check) is decided inline.
        self._plain_tunnel = self._tunnel and not self.local_ts
        body_min = self._align if not self._aead else 2
        self._min_length = _HEADER_LENGTH + self._iv_length + body_min + self._icv_length

    def decap(self, packet: bytes, now: float) -> DecapResult:
        """Verify and open one ESP packet (from the SPI on). Never raises on content."""
        counters = self.counters
        life = self._life
        if now >= life.deadline:
            life.handle_timer(now)
            if life.expired:
                counters.expired_drops += 1
                return Drop.EXPIRED
        if len(packet) < self._min_length:
            counters.malformed += 1
            return Drop.TRUNCATED
        replay = self.replay
        seq_low = int.from_bytes(packet[4:8], "big")
        if self.esn:
            inferred = replay.infer_esn(seq_low)
            if inferred is None:
                counters.replay_drops += 1
                return Drop.STALE
            seq = inferred
        else:
            seq = seq_low
        if seq <= replay.top:  # in order packets skip the bitmap until update()
            verdict = replay.check(seq)
            if verdict:
                counters.replay_drops += 1
                return Drop.REPLAYED if verdict is ReplayVerdict.REPLAYED else Drop.STALE
        body_at = _HEADER_LENGTH + self._iv_length
        iv = packet[_HEADER_LENGTH:body_at]
        if self.esn:
            seq8 = seq.to_bytes(8, "big")
            plaintext = self._open(iv, packet[:_HEADER_LENGTH], packet[body_at:], seq8[:4])
        elif self._decrypt is not None:
            try:
                plaintext = self._decrypt(self._salt + iv, packet[body_at:], packet[:8])
            except InvalidTag:
                plaintext = None
        else:
            plaintext = self._open(iv, packet[:_HEADER_LENGTH], packet[body_at:], b"")
        if plaintext is None:
            counters.integrity_failures += 1
            return Drop.INTEGRITY
        replay.update(seq)
        pad_length = plaintext[-2]
        next_header = plaintext[-1]
        end = len(plaintext) - 2 - pad_length
        if end < 0 or (pad_length and plaintext[end:-2] != _PAD[pad_length]):
            counters.bad_padding += 1
            return Drop.BAD_PADDING
        payload = plaintext[:end]
        if not (
            self._plain_tunnel and payload and payload[0] >> 4 == _INNER_VERSION.get(next_header)
        ):
            drop = self._check_payload(payload, next_header)
            if drop is not None:
                return drop
        counters.packets_in += 1
        counters.bytes_in += end
        if counters.bytes_in >= life.byte_mark or counters.packets_in >= life.packet_mark:
            life.volume(counters.bytes_in, counters.packets_in)
        return payload, next_header

    def _check_payload(self, payload: bytes, next_header: int) -> Drop | None:
        """Everything but an IP packet of the right version on a tunnel SA without
        selectors (which ``decap`` accepts inline)."""
        counters = self.counters
        if next_header == NEXT_HEADER_DUMMY:
            counters.dummy_packets += 1
            return Drop.DUMMY
        if self._tunnel:
            if next_header == NEXT_HEADER_IPV4:
                version = 4
            elif next_header == NEXT_HEADER_IPV6:
                version = 6
            else:
                counters.malformed += 1
                return Drop.WRONG_NEXT_HEADER
            if not payload or payload[0] >> 4 != version:
                counters.malformed += 1
                return Drop.BAD_INNER_PACKET
            if self.local_ts:
                info = parse_ip_packet(payload)
                if info is None:
                    counters.malformed += 1
                    return Drop.BAD_INNER_PACKET
                if not inbound_allowed(self.local_ts, self.remote_ts, info):
                    counters.policy_drops += 1
                    return Drop.POLICY
            return None
        if next_header in (NEXT_HEADER_IPV4, NEXT_HEADER_IPV6):
            # A whole IP packet arrived on a transport-mode SA: the peer is in tunnel mode.
            counters.malformed += 1
            return Drop.WRONG_NEXT_HEADER
        if self.local_ts:
            # Transport mode: the addresses are the outer ones, checked by whoever
            # read the outer header; protocol and ports are checked here.
            sport, dport = parse_ports(next_header, payload)
            if not (
                any(ts.matches_upper_layer(next_header, sport) for ts in self.remote_ts)
                and any(ts.matches_upper_layer(next_header, dport) for ts in self.local_ts)
            ):
                counters.policy_drops += 1
                return Drop.POLICY
        return None
