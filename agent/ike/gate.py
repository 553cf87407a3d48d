"""The responder's front door: new IKE_SA_INIT requests, before any IkeSa exists.

An IkeSa cannot see its siblings, so this small object owns what spans them: the
COOKIE secret (RFC 7296 section 2.6) and its place in the agent's half-open table
(admission.py), shared by every gate. Above the cookie threshold, a request without a
valid cookie gets a stateless COOKIE response and creates nothing; a request with one
still goes over the table's caps (per source address, per gate, per agent), and one
over a cap is dropped. Sans-I/O like the rest: datagrams and ``now`` in, a decision out.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from .admission import GateRefusal, HalfOpenTable, Limit
from .config import IkeConfig
from .constants import IKE_HEADER_LENGTH, ExchangeType, HeaderFlag, NotifyType
from .errors import LocalError, ProtocolError
from .events import Address
from .ike_sa import IkeSa
from .message import IkeHeader, Message, parse_message, serialize_message
from .payloads import NoncePayload, NotifyPayload
from .states import IkeSaState, Role
from .transforms import random_bytes

COOKIE_VERSION_LENGTH = 4
COOKIE_HASH_LENGTH = 16


SaT = TypeVar("SaT")


@dataclass(frozen=True)
class GateDecision(Generic[SaT]):
    """What a responder gate did with a datagram that names no SA of ours yet; ``SaT``
    is the core's SA type (IKEv2's :class:`IkeSa`, or IKEv1's)."""

    sa: SaT | None = None
    """The SA that took the datagram (new, or the half-open one it retransmits to)."""
    new: bool = False
    """``sa`` was created now: the caller must start routing to its responder SPI."""
    reply: bytes | None = None
    """An answer sent without keeping state (COOKIE, or the core's refusal such as
    NO_PROPOSAL_CHOSEN) to the datagram's source."""
    refusal: GateRefusal | None = None
    """Why nothing was created (None: an SA took the datagram)."""
    reason: str = ""
    """The refusal as logs say it: ``cookie required``, ``bad cookie``, ``not an
    IKE_SA_INIT request``, ``malformed: ...``, ``refused: <notify>: ...`` (answered
    without state), ``over <limit> (<value>)``."""
    limit: Limit | None = None
    """The cap the request went over (dropped, counted in the table)."""


class IkeResponderGate:
    def __init__(
        self,
        config: IkeConfig,
        *,
        local: Address | None = None,
        half_open_threshold: int = 64,
        half_open_timeout: float | None = None,
        secret_lifetime: float = 300.0,
        secret_source: Callable[[int], bytes] = random_bytes,
        table: HalfOpenTable | None = None,
    ) -> None:
        """``table``: the agent's half-open table, shared by all its gates (default: one
        of this gate's own, with the default limits)."""
        if half_open_timeout is None:
            half_open_timeout = config.half_open_timeout
        if half_open_threshold < 0 or half_open_timeout <= 0 or secret_lifetime <= 0:
            raise LocalError(
                "half_open_threshold must be >= 0, half_open_timeout and secret_lifetime > 0"
            )
        self.config = config
        self.local = local
        self.half_open_threshold = half_open_threshold
        self.half_open_timeout = half_open_timeout
        self.secret_lifetime = secret_lifetime
        self._secret_source = secret_source
        self._version = 0
        self._secret = secret_source(32)
        self._previous: tuple[int, bytes] | None = None
        self._rotated_at: float | None = None
        self.table = table if table is not None else HalfOpenTable()
        self.cookies_sent = 0
        self.refused = 0

    # -- the half-open count ------------------------------------------------------------

    def half_open(self, now: float) -> int:
        """SAs this gate answered IKE_SA_INIT for that have not finished IKE_AUTH yet."""
        self.table.expire(now)
        return self.table.count(self)

    # -- the cookie secret (section 2.6: versioned, changed periodically) -----------------

    def _rotate(self, now: float) -> None:
        if self._rotated_at is None:
            self._rotated_at = now
        elif now - self._rotated_at >= self.secret_lifetime:
            self._previous = (self._version, self._secret)
            self._version = (self._version + 1) % (1 << 32)
            self._secret = self._secret_source(32)
            self._rotated_at = now

    def cookie(
        self, nonce: bytes, addr: Address, spi_i: bytes, *, version: int | None = None
    ) -> bytes:
        """Cookie = <VersionIDofSecret> | Hash(Ni | IPi | SPIi | <secret>) (section 2.6)."""
        if version is None or version == self._version:
            version, secret = self._version, self._secret
        elif self._previous is not None and version == self._previous[0]:
            secret = self._previous[1]
        else:
            return b""
        ip = ipaddress.ip_address(addr[0]).packed
        digest = hmac.new(secret, nonce + ip + spi_i, hashlib.sha256).digest()
        return version.to_bytes(COOKIE_VERSION_LENGTH, "big") + digest[:COOKIE_HASH_LENGTH]

    def _cookie_ok(self, cookie: bytes, nonce: bytes, addr: Address, spi_i: bytes) -> bool:
        if len(cookie) != COOKIE_VERSION_LENGTH + COOKIE_HASH_LENGTH:
            return False
        version = int.from_bytes(cookie[:COOKIE_VERSION_LENGTH], "big")
        expected = self.cookie(nonce, addr, spi_i, version=version)
        return bool(expected) and hmac.compare_digest(expected, cookie)

    # -- the input ------------------------------------------------------------------------

    def receive_datagram(
        self, data: bytes, addr: Address, now: float, wall: float | None = None
    ) -> GateDecision[IkeSa]:
        """A datagram whose responder SPI is zero (no IKE SA of ours yet); ``wall`` as
        for :meth:`IkeSa.receive_datagram`."""
        self._rotate(now)
        limits = self.table.limits
        if len(data) > limits.preauth_message_bytes:
            self.table.refuse(Limit.PREAUTH_MESSAGE_BYTES, addr[0], now)
            return GateDecision(
                refusal=GateRefusal.OVER_LIMIT,
                reason=f"over preauth_message_bytes ({limits.preauth_message_bytes})",
                limit=Limit.PREAUTH_MESSAGE_BYTES,
            )
        try:
            message = parse_message(data)
        except ProtocolError as exc:
            self.refused += 1
            return GateDecision(
                reply=_refusal(data, exc), refusal=GateRefusal.MALFORMED, reason=f"malformed: {exc}"
            )
        header = message.header
        if (
            header.exchange_type != ExchangeType.IKE_SA_INIT
            or header.is_response
            or not header.is_initiator
            or header.message_id != 0
            or header.spi_r != bytes(8)
        ):
            self.refused += 1
            return GateDecision(
                refusal=GateRefusal.NOT_INIT_REQUEST, reason="not an IKE_SA_INIT request"
            )
        known = self.table.find(self, addr, header.spi_i)
        held = known.sa if known is not None else None
        if isinstance(held, IkeSa) and held.state is IkeSaState.INIT_DONE:
            held.receive_datagram(data, addr, now, wall)  # a retransmission: replayed
            return GateDecision(sa=held)
        nonce = next((p.data for p in message.payloads if isinstance(p, NoncePayload)), None)
        if nonce is None:
            self.refused += 1
            return GateDecision(
                refusal=GateRefusal.MALFORMED,
                reason="malformed: IKE_SA_INIT request without Nonce",
            )
        if self.half_open(now) >= self.half_open_threshold:
            first = message.payloads[0] if message.payloads else None
            # Section 2.6: the cookie comes back as the first payload.
            if isinstance(first, NotifyPayload) and first.notify_type == NotifyType.COOKIE:
                if not self._cookie_ok(first.data, nonce, addr, header.spi_i):
                    self.refused += 1
                    return GateDecision(
                        reply=self._challenge(message, nonce, addr),
                        refusal=GateRefusal.BAD_COOKIE,
                        reason="bad cookie",
                    )
            else:
                self.cookies_sent += 1
                return GateDecision(
                    reply=self._challenge(message, nonce, addr),
                    refusal=GateRefusal.COOKIE_REQUIRED,
                    reason="cookie required",
                )
        # strongSwan's order: the cookie first (it costs no state), then the caps.
        limit = self.table.admit(self, addr[0], now)
        if limit is not None:
            value = self.table.limits.value(limit)
            return GateDecision(
                refusal=GateRefusal.OVER_LIMIT, reason=f"over {limit.value} ({value})", limit=limit
            )
        sa = IkeSa(self.config, Role.RESPONDER, self.local)
        sa.receive_datagram(data, addr, now, wall)
        if sa.state is IkeSaState.CREATED:
            # Refused without state (section 1.3, INVALID_KE_PAYLOAD; INVALID_SYNTAX):
            # the answer goes back and nothing is kept, so nothing is left to expire.
            self.refused += 1
            replies = sa.datagrams_to_send(now)
            return GateDecision(
                reply=replies[0][0] if replies else None,
                refusal=GateRefusal.REFUSED,
                reason=f"refused: {sa.last_refusal}",
            )
        if sa.state is IkeSaState.INIT_DONE:
            sa.half_open_slot = self.table.add(
                self, addr, header.spi_i, sa, now + self.half_open_timeout
            )
        return GateDecision(sa=sa, new=True)

    def _challenge(self, request: Message, nonce: bytes, addr: Address) -> bytes:
        spi_i = request.header.spi_i
        header = IkeHeader(spi_i, bytes(8), 0, ExchangeType.IKE_SA_INIT, HeaderFlag.RESPONSE, 0)
        cookie = self.cookie(nonce, addr, spi_i)
        return serialize_message(header, [NotifyPayload(NotifyType.COOKIE, cookie)])


def _refusal(data: bytes, error: ProtocolError) -> bytes | None:
    """Section 2.5: an IKE_SA_INIT request with an unsupported critical payload is
    answered UNSUPPORTED_CRITICAL_PAYLOAD (naming the type), one of a higher major
    version INVALID_MAJOR_VERSION (our version goes in the header). Anything else
    malformed goes unanswered (section 2.21.4)."""
    if len(data) < IKE_HEADER_LENGTH:
        return None
    notify = error.notify
    if notify not in (NotifyType.UNSUPPORTED_CRITICAL_PAYLOAD, NotifyType.INVALID_MAJOR_VERSION):
        return None
    spi_i, spi_r = data[:8], data[8:16]
    exchange, flags, message_id = data[18], data[19], int.from_bytes(data[20:24], "big")
    if (
        exchange != ExchangeType.IKE_SA_INIT
        or flags & HeaderFlag.RESPONSE
        or not flags & HeaderFlag.INITIATOR
        or message_id != 0
        or spi_r != bytes(8)
        or spi_i == bytes(8)
    ):
        return None
    header = IkeHeader(spi_i, spi_r, 0, ExchangeType.IKE_SA_INIT, HeaderFlag.RESPONSE, 0)
    return serialize_message(header, [NotifyPayload(notify, error.notify_data)])
