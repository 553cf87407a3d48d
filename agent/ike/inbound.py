"""The receive path of an IKE SA: what the peer sends, checked against the SA's SPIs
(section 3.1) and message IDs (section 2.2), unprotected (section 3.14, with RFC 7383
fragments reassembled first) and handed to its exchange; a malformed authenticated
request is refused whole (sections 2.5 and 2.21.2). Which exchanges each state takes
is the table in states.py; ``RESPONDERS`` names the responder of each. A half-open
responder drops any datagram larger than the agent's ``preauth_message_bytes`` before
decrypting it (admission.py).

Every function takes the IkeSa it works for; ``IkeSa.receive_datagram`` is the entry
point and turns any ProtocolError (the peer's fault) raised here into a dropped
datagram.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from .admission import Limit
from .constants import ZERO_SPI, ExchangeType, NotifyType, enum_name
from .crypto import open_message
from .errors import ParseError, ProtocolError
from .events import Address
from .message import IkeHeader, Message, parse_message, parse_payloads
from .payloads import NotifyPayload, Payload, SkfPayload
from .states import (
    IkeSaInput,
    IkeSaState,
    Unexpected,
    accepts_request,
    accepts_response,
    unexpected_request,
)
from .tasks import ike_auth, ike_init, ike_rekey, informational
from .tasks.child_create import ChildCreate

if TYPE_CHECKING:
    from .ike_sa import IkeSa


def receive(sa: IkeSa, data: bytes, addr: Address, now: float) -> None:
    if sa.is_closed:
        sa.dropped += 1
        return
    message = parse_message(data)
    header = message.header
    # The I flag tells who created the IKE SA (section 3.1); it must be the other side.
    if header.is_initiator == sa.is_initiator or not spis_match(sa, header):
        sa.dropped += 1
        return
    expiry = sa._half_open_expiry()
    if expiry is not None and now >= expiry:
        sa.dropped += 1  # its half-open time is over; its timer fails it (section 2.6)
        return
    slot = sa.half_open_slot
    if (
        slot is not None
        and len(data) > slot.message_limit
        and header.exchange_type != ExchangeType.IKE_SA_INIT
    ):
        slot.refuse(Limit.PREAUTH_MESSAGE_BYTES, now)
        sa.dropped += 1
        return
    sa.current_datagram = data
    opened: list[Payload] | None = None
    if isinstance(message.encrypted, SkfPayload):
        opened = sa._fragments.receive(message, message.encrypted, data, sa._sk_in, now)
        if opened is None:
            return
    if header.is_response:
        _receive_response(sa, message, data, now, opened)
    else:
        _receive_request(sa, message, data, addr, now, opened)


def spis_match(sa: IkeSa, header: IkeHeader) -> bool:
    if sa.is_initiator:
        if header.spi_i != sa.spi_i:
            return False
        return sa.spi_r == ZERO_SPI or header.spi_r == sa.spi_r
    if sa.state is IkeSaState.CREATED:
        return header.exchange_type == ExchangeType.IKE_SA_INIT and header.spi_r == ZERO_SPI
    if header.exchange_type == ExchangeType.IKE_SA_INIT and header.spi_r == ZERO_SPI:
        return header.spi_i == sa.spi_i  # a retransmitted first request (section 2.1)
    return header.spi_i == sa.spi_i and header.spi_r == sa.spi_r


def _receive_response(
    sa: IkeSa, message: Message, data: bytes, now: float, opened: list[Payload] | None
) -> None:
    if not sa.tasks.is_expected_response(message):
        sa.dropped += 1
        return
    exchange = message.header.exchange_type
    if exchange != sa.tasks.active_exchange or not accepts_response(sa.state, exchange):
        sa.dropped += 1
        return
    payloads = opened if opened is not None else open_payloads(sa, message, data)
    sa.last_heard = now
    sa.tasks.on_response(message, payloads, now)


def _receive_request(
    sa: IkeSa,
    message: Message,
    data: bytes,
    addr: Address,
    now: float,
    opened: list[Payload] | None,
) -> None:
    header = message.header
    if sa.tasks.is_retransmit(message, data):
        sa.tasks.replay_response()
        return
    if header.message_id != sa.tasks.expected_request_id:
        sa.dropped += 1
        return
    if sa.state is IkeSaState.CREATED:
        sa.spi_i = header.spi_i
        sa.peer = addr
    if opened is None and header.exchange_type != ExchangeType.IKE_SA_INIT:
        first_inner, plaintext, offset = unprotect(sa, message, data)
        try:
            opened = parse_payloads(plaintext, first_inner, offset)
        except ParseError as exc:
            sa.refuse_malformed(header.exchange_type, header.message_id, data, exc)
            return
    payloads = opened if opened is not None else list(message.payloads)
    if sa.keys is not None:
        sa.last_heard = now
    if sa.state is not IkeSaState.CREATED and sa.nat is not None and sa.nat.any:
        # Section 2.23: behind a NAT, answer where authenticated requests come from.
        sa.peer = addr
    exchange = header.exchange_type
    response: list[Payload]
    if not accepts_request(sa.state, exchange):
        if unexpected_request(sa.state, exchange) is Unexpected.DROP:
            sa.dropped += 1
            return
        name = enum_name(ExchangeType, exchange)
        sa.note_refusal(f"INVALID_SYNTAX: {name} request in state {sa.state.value}")
        response, advance = [NotifyPayload(NotifyType.INVALID_SYNTAX)], True
    else:
        response, advance = RESPONDERS[ExchangeType(exchange)](sa, message, payloads)
        if exchange == ExchangeType.IKE_SA_INIT and advance:
            sa.init_request = data
    out = sa.build_datagrams(exchange, header.message_id, True, response)
    if exchange == ExchangeType.IKE_SA_INIT and advance:
        sa.init_response = out[0]
        sa.half_open_since = now
        sa.transition(IkeSaInput.INIT_DONE)
    sa.tasks.respond(header.message_id, data, out, advance=advance)


def _informational(
    sa: IkeSa, message: Message, payloads: list[Payload]
) -> tuple[list[Payload], bool]:
    return informational.respond(sa, payloads), True


def _create_child_sa(
    sa: IkeSa, message: Message, payloads: list[Payload]
) -> tuple[list[Payload], bool]:
    """Section 1.3: an IKE SA rekey offers an IKE proposal; otherwise a child SA."""
    if ike_rekey.is_ike_rekey(payloads):
        return ike_rekey.respond(sa, payloads), True
    return ChildCreate.respond(sa, payloads, ExchangeType.CREATE_CHILD_SA), True


Responder = Callable[["IkeSa", Message, list[Payload]], tuple[list[Payload], bool]]
"""The responder side of an exchange: the response payloads, and whether the request
counts (its message ID is used; section 2.2)."""

RESPONDERS: dict[ExchangeType, Responder] = {
    ExchangeType.IKE_SA_INIT: ike_init.respond,
    ExchangeType.IKE_AUTH: ike_auth.respond,
    ExchangeType.CREATE_CHILD_SA: _create_child_sa,
    ExchangeType.INFORMATIONAL: _informational,
}
"""Every exchange that ``states.REQUESTS`` accepts in some state."""


def open_payloads(sa: IkeSa, message: Message, data: bytes) -> list[Payload]:
    if message.header.exchange_type == ExchangeType.IKE_SA_INIT:
        return list(message.payloads)
    first_inner, plaintext, offset = unprotect(sa, message, data)
    return parse_payloads(plaintext, first_inner, offset)


def unprotect(sa: IkeSa, message: Message, data: bytes) -> tuple[int, bytes, int]:
    if sa._sk_in is None:
        raise ProtocolError("encrypted message before keys exist")
    return open_message(data, message, sa._sk_in)


def refuse_malformed(
    sa: IkeSa, exchange: int, message_id: int, request: bytes, error: ParseError
) -> None:
    """Sections 2.5 and 2.21.2: an authenticated request that is malformed, or has an
    unsupported critical payload, is refused whole by a response carrying only
    UNSUPPORTED_CRITICAL_PAYLOAD (with the payload type) or INVALID_SYNTAX."""
    if error.notify == NotifyType.UNSUPPORTED_CRITICAL_PAYLOAD:
        notify = NotifyPayload(NotifyType.UNSUPPORTED_CRITICAL_PAYLOAD, error.notify_data)
    else:
        notify = NotifyPayload(NotifyType.INVALID_SYNTAX)
    out = sa.build_datagrams(exchange, message_id, True, [notify])
    sa.tasks.respond(message_id, request, out, advance=True)
    if exchange == ExchangeType.IKE_AUTH and sa.state is IkeSaState.INIT_DONE:
        # The initiator cannot be authenticated from a rejected IKE_AUTH request.
        sa.fail(f"{enum_name(NotifyType, int(notify.notify_type))}: {error}")
    else:
        sa.note_refusal(str(error))
