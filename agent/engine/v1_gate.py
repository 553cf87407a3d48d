"""The IKEv1 responder's front door: a first Main (or Aggressive) mode message (zero
responder cookie, RFC 2408 section 3.1) becomes a responder ``IkeV1Sa`` for the plan
peer it came for.

ISAKMP has no cookie exchange under load like IKEv2's (RFC 7296 section 2.6; the
"anti-clogging" cookies of RFC 2408 section 2.5.3 are the SPIs themselves and cost the
responder its state all the same), so every such SA holds a place in the agent's one
half-open table (agent/ike/admission.py) beside the IKEv2 ones, under the same caps per
source, per peer and per agent, from its first message until it is established or
closes (:meth:`V1ResponderGate.settled`) or its place expires.
"""

from __future__ import annotations

from ..ike.admission import GateRefusal, HalfOpenSlot, HalfOpenTable, Limit
from ..ike.errors import ProtocolError
from ..ike.events import Address
from ..ike.gate import GateDecision
from ..ike.states import Role
from ..ike.v1.config import ExchangeMode, IkeV1Config
from ..ike.v1.constants import ExchangeType
from ..ike.v1.message import IsakmpHeader
from ..ike.v1.sa import IkeV1Sa, V1State


class V1HalfOpen:
    """An IKEv1 responder SA's entry in the half-open table."""

    __slots__ = ("half_open_slot", "sa")

    def __init__(self, sa: IkeV1Sa) -> None:
        self.sa = sa
        self.half_open_slot: HalfOpenSlot | None = None


class V1ResponderGate:
    def __init__(
        self,
        config: IkeV1Config,
        *,
        local: Address | None = None,
        table: HalfOpenTable | None = None,
        half_open_timeout: float | None = None,
    ) -> None:
        self.config = config
        self.local = local
        self.table = table if table is not None else HalfOpenTable()
        self.half_open_timeout = (
            config.half_open_timeout if half_open_timeout is None else half_open_timeout
        )
        self.refused = 0
        self._held: dict[IkeV1Sa, V1HalfOpen] = {}

    def half_open(self, now: float) -> int:
        self.table.expire(now)
        return self.table.count(self)

    def receive_datagram(
        self, data: bytes, addr: Address, now: float, wall: float | None = None
    ) -> GateDecision[IkeV1Sa]:
        """A datagram whose responder cookie is zero (no SA of ours yet); ``wall`` as
        for ``IkeV1Sa.receive_datagram``."""
        limits = self.table.limits
        if len(data) > limits.preauth_message_bytes:
            self.table.refuse(Limit.PREAUTH_MESSAGE_BYTES, addr[0], now)
            return GateDecision(
                refusal=GateRefusal.OVER_LIMIT,
                reason=f"over preauth_message_bytes ({limits.preauth_message_bytes})",
                limit=Limit.PREAUTH_MESSAGE_BYTES,
            )
        try:
            header, _ = IsakmpHeader.parse(data)
        except ProtocolError as exc:
            self.refused += 1
            return GateDecision(refusal=GateRefusal.MALFORMED, reason=f"malformed: {exc}")
        wanted = _FIRST[self.config.phase1_mode]
        if header.exchange != wanted or header.message_id != 0 or header.encrypted:
            self.refused += 1
            name = _exchange_name(header.exchange)
            return GateDecision(
                refusal=GateRefusal.NOT_INIT_REQUEST,
                reason=f"not a {wanted.name} first message ({name})",
            )
        known = self.table.find(self, addr, header.icookie)
        if known is not None and isinstance(known.sa, V1HalfOpen):
            sa = known.sa.sa
            sa.receive_datagram(data, addr, now, wall)  # a retransmission: answered again
            return GateDecision(sa=sa)
        limit = self.table.admit(self, addr[0], now)
        if limit is not None:
            value = limits.value(limit)
            return GateDecision(
                refusal=GateRefusal.OVER_LIMIT, reason=f"over {limit.value} ({value})", limit=limit
            )
        sa = IkeV1Sa(self.config, Role.RESPONDER, self.local)
        sa.receive_datagram(data, addr, now, wall)
        if sa.state not in (V1State.SA_EXCHANGE, V1State.KE_EXCHANGE):
            # Refused (no proposal chosen, a malformed SA payload): the core's answer
            # goes back, nothing is kept.
            self.refused += 1
            replies = sa.datagrams_to_send(now)
            return GateDecision(
                refusal=GateRefusal.REFUSED,
                reason=f"refused: {sa.last_drop or 'no acceptable proposal'}",
                reply=replies[0][0] if replies else None,
            )
        held = V1HalfOpen(sa)
        held.half_open_slot = self.table.add(
            self, addr, header.icookie, held, now + self.half_open_timeout
        )
        self._held[sa] = held
        return GateDecision(sa=sa, new=True)

    def settled(self, sa: IkeV1Sa) -> None:
        """``sa`` is established or closed: its place in the table is free."""
        held = self._held.pop(sa, None)
        if held is not None and held.half_open_slot is not None:
            held.half_open_slot.release()


_FIRST = {
    ExchangeMode.MAIN: ExchangeType.IDENTITY_PROTECTION,
    ExchangeMode.AGGRESSIVE: ExchangeType.AGGRESSIVE,
}
"""The exchange a peer's first message must be in (RFC 2409 section 5): the plan says
Main or Aggressive mode, and a responder takes only that one."""


def _exchange_name(exchange: int) -> str:
    try:
        return ExchangeType(exchange).name
    except ValueError:
        return f"exchange {exchange}"
