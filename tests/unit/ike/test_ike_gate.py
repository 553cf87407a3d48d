"""The responder gate (RFC 7296 section 2.6 cookies, half-open accounting), the
IKE_SA_INIT capability notifies (RFC 7383 section 2.3, RFC 7427 section 4) and
reassembly of encrypted fragments (RFC 7383 section 2.6)."""

from __future__ import annotations

import pytest

from tests.support.ike_peers import LEFT, RIGHT, left_right
from vpnfleet.agent.ike.constants import (
    ExchangeType,
    HeaderFlag,
    NotifyType,
    PayloadType,
    ProtocolId,
)
from vpnfleet.agent.ike.crypto import encrypt_fragment
from vpnfleet.agent.ike.errors import LocalError
from vpnfleet.agent.ike.events import (
    ChildSaDeleted,
    ChildSaEstablished,
    IkeSaEstablished,
    IkeSaFailed,
)
from vpnfleet.agent.ike.gate import IkeResponderGate
from vpnfleet.agent.ike.ike_sa import IkeSa
from vpnfleet.agent.ike.message import (
    IkeHeader,
    parse_message,
    serialize_message,
    serialize_payloads,
)
from vpnfleet.agent.ike.payloads import DeletePayload, NotifyPayload, RawPayload
from vpnfleet.agent.ike.states import IkeSaState, Role

NOW = 1000.0


def initiator() -> IkeSa:
    left, _ = left_right()
    sa = IkeSa(left, Role.INITIATOR)
    sa.initiate(RIGHT, NOW)
    return sa


def gate(threshold: int = 5, **kw: float) -> IkeResponderGate:
    _, right = left_right()
    counter = iter(range(1, 100))
    return IkeResponderGate(
        right,
        half_open_threshold=threshold,
        secret_source=lambda n: bytes([next(counter)]) * n,
        **kw,  # type: ignore[arg-type]
    )


def first_request(sa: IkeSa) -> bytes:
    ((data, _),) = sa.datagrams_to_send(NOW)
    return data


def test_below_the_threshold_a_responder_is_created_and_retransmits_are_replayed() -> None:
    g = gate()
    left = initiator()
    request = first_request(left)
    decision = g.receive_datagram(request, LEFT, NOW)
    assert decision.new and decision.sa is not None and decision.reply is None
    right = decision.sa
    ((answer, _),) = right.datagrams_to_send(NOW)
    assert g.half_open(NOW) == 1
    again = g.receive_datagram(request, LEFT, NOW + 1)
    assert again.sa is right and not again.new
    assert right.datagrams_to_send(NOW + 1) == [(answer, LEFT)]


def test_above_the_threshold_a_cookie_is_required_and_the_handshake_completes() -> None:
    g = gate(threshold=0)
    left = initiator()
    decision = g.receive_datagram(first_request(left), LEFT, NOW)
    assert decision.sa is None and decision.reason == "cookie required"
    assert decision.reply is not None
    challenge = parse_message(decision.reply)
    assert challenge.describe() == "IKE_SA_INIT response 0 [ Notify ]"
    assert challenge.header.spi_r == bytes(8)
    (notify,) = challenge.payloads
    assert isinstance(notify, NotifyPayload) and notify.notify_type == NotifyType.COOKIE
    left.receive_datagram(decision.reply, RIGHT, NOW)
    retry = first_request(left)
    first = parse_message(retry).payloads[0]
    assert isinstance(first, NotifyPayload) and first.data == notify.data  # section 2.6
    accepted = g.receive_datagram(retry, LEFT, NOW)
    assert accepted.new and accepted.sa is not None
    right = accepted.sa
    for _ in range(3):
        for data, _ in right.datagrams_to_send(NOW):
            left.receive_datagram(data, RIGHT, NOW)
        for data, _ in left.datagrams_to_send(NOW):
            right.receive_datagram(data, LEFT, NOW)
    assert left.state is right.state is IkeSaState.ESTABLISHED
    assert isinstance(right.next_event(), IkeSaEstablished)
    assert isinstance(right.next_event(), ChildSaEstablished)
    assert g.cookies_sent == 1 and g.half_open(NOW) == 0


def test_a_wrong_cookie_is_refused_with_a_fresh_challenge() -> None:
    g = gate(threshold=0)
    left = initiator()
    decision = g.receive_datagram(first_request(left), LEFT, NOW)
    assert decision.reply is not None
    forged = bytearray(decision.reply)
    forged[-1] ^= 1
    left.receive_datagram(bytes(forged), RIGHT, NOW)
    refused = g.receive_datagram(first_request(left), LEFT, NOW)
    assert refused.sa is None and refused.reason == "bad cookie" and refused.reply is not None
    # A cookie made for another address does not pass either.
    left2 = initiator()
    d2 = g.receive_datagram(first_request(left2), LEFT, NOW)
    assert d2.reply is not None
    left2.receive_datagram(d2.reply, RIGHT, NOW)
    moved = g.receive_datagram(first_request(left2), ("192.0.2.99", 500), NOW)
    assert moved.reason == "bad cookie"


def test_cookie_secret_rotation_keeps_one_previous_version() -> None:
    g = gate(threshold=0, secret_lifetime=60.0)
    nonce, spi = b"n" * 32, b"s" * 8
    g.receive_datagram(b"", LEFT, NOW)  # starts the clock
    old = g.cookie(nonce, LEFT, spi)
    assert old[:4] == bytes(4)
    g.receive_datagram(b"", LEFT, NOW + 60)
    assert g.cookie(nonce, LEFT, spi)[:4] == (1).to_bytes(4, "big")
    assert g._cookie_ok(old, nonce, LEFT, spi)
    g.receive_datagram(b"", LEFT, NOW + 120)
    assert not g._cookie_ok(old, nonce, LEFT, spi)


def test_half_open_sas_expire_and_established_ones_do_not_count() -> None:
    g = gate(threshold=2, half_open_timeout=30.0)
    for _ in range(2):
        assert g.receive_datagram(first_request(initiator()), LEFT, NOW).new
    assert g.half_open(NOW) == 2
    assert g.receive_datagram(first_request(initiator()), LEFT, NOW).reason == "cookie required"
    assert g.half_open(NOW + 31) == 0
    assert g.receive_datagram(first_request(initiator()), LEFT, NOW + 31).new


def test_the_gate_refuses_what_is_not_a_first_request() -> None:
    g = gate()
    assert g.receive_datagram(b"\x00" * 10, LEFT, NOW).reason.startswith(
        "malformed: IKE header at offset 0"
    )
    left = initiator()
    response = bytearray(first_request(left))
    response[19] = HeaderFlag.RESPONSE
    assert g.receive_datagram(bytes(response), LEFT, NOW).reason == "not an IKE_SA_INIT request"
    assert g.refused == 2
    with pytest.raises(LocalError, match="half_open_threshold must be >= 0"):
        gate(threshold=-1)


def test_capability_notifies_are_exchanged_in_ike_sa_init() -> None:
    left = initiator()
    request = first_request(left)
    kinds = [p.notify_type for p in parse_message(request).payloads if isinstance(p, NotifyPayload)]
    assert NotifyType.IKEV2_FRAGMENTATION_SUPPORTED in kinds
    assert NotifyType.SIGNATURE_HASH_ALGORITHMS in kinds
    right = gate().receive_datagram(request, LEFT, NOW).sa
    assert right is not None
    ((answer, _),) = right.datagrams_to_send(NOW)
    left.receive_datagram(answer, RIGHT, NOW)
    for sa in (left, right):
        assert sa.peer_fragmentation
        assert sa.peer_hash_algorithms == (2, 3, 4, 5)  # RFC 7427 / RFC 8420 values


def test_fragmented_request_is_reassembled_in_any_order() -> None:
    """RFC 7383 section 2.6: a Delete sent in three SKF fragments, last one first."""
    left = initiator()
    right = gate().receive_datagram(first_request(left), LEFT, NOW).sa
    assert right is not None
    for _ in range(3):
        for data, _ in right.datagrams_to_send(NOW):
            left.receive_datagram(data, RIGHT, NOW)
        for data, _ in left.datagrams_to_send(NOW):
            right.receive_datagram(data, LEFT, NOW)
    spi_out = next(iter(right.children.values())).spi_out
    first_inner, inner = serialize_payloads([DeletePayload(ProtocolId.ESP, [spi_out])])
    assert first_inner == PayloadType.DELETE
    chunks = [inner[:4], inner[4:8], inner[8:]]
    assert left._sk_out is not None
    fragments = [
        encrypt_fragment(
            IkeHeader(
                left.spi_i, left.spi_r, 0, ExchangeType.INFORMATIONAL, HeaderFlag.INITIATOR, 2
            ),
            first_inner,
            chunk,
            number,
            3,
            left._sk_out,
        )
        for number, chunk in enumerate(chunks, start=1)
    ]
    while right.next_event() is not None:
        pass
    for fragment in (fragments[2], fragments[0]):
        right.receive_datagram(fragment, LEFT, NOW)
        assert right.datagrams_to_send(NOW) == []
    right.receive_datagram(fragments[1], LEFT, NOW)
    (deleted,) = [e for e in iter(right.next_event, None) if isinstance(e, ChildSaDeleted)]
    assert deleted.reason == "deleted by peer"
    ((answer, _),) = right.datagrams_to_send(NOW)
    # A retransmitted fragment gets the cached answer.
    right.receive_datagram(fragments[0], LEFT, NOW)
    assert right.datagrams_to_send(NOW) == [(answer, LEFT)]
    assert right.dropped == 0


def test_a_half_open_responder_expires_on_its_timer() -> None:
    g = gate()
    right = g.receive_datagram(first_request(initiator()), LEFT, NOW).sa
    assert right is not None and right.state is IkeSaState.INIT_DONE
    assert right.get_timer() == NOW + 30.0
    right.handle_timer(NOW + 29.0)
    assert right.state is IkeSaState.INIT_DONE
    right.handle_timer(NOW + 30.0)
    assert right.state is IkeSaState.FAILED
    event = right.next_event()
    assert isinstance(event, IkeSaFailed)
    assert event.reason == "half-open IKE SA expired: no IKE_AUTH request within 30 s"
    assert right.get_timer() is None and g.half_open(NOW + 30.0) == 0


def test_unsupported_critical_payload_in_ike_sa_init_is_answered() -> None:
    """RFC 7296 section 2.5: a request with an unknown payload marked critical is
    rejected with UNSUPPORTED_CRITICAL_PAYLOAD naming the type; no SA is created, and
    the initiator fails with that reason."""
    left = initiator()
    message = parse_message(first_request(left))
    with_critical = serialize_message(
        message.header, [*message.payloads, RawPayload(200, b"\x01\x02", critical=True)]
    )
    g = gate()
    decision = g.receive_datagram(with_critical, LEFT, NOW)
    assert decision.sa is None and decision.reply is not None
    assert decision.reason.startswith("malformed: payload type 200 at offset ")
    reply = parse_message(decision.reply)
    assert reply.header.is_response and not reply.header.is_initiator
    assert (reply.header.spi_i, reply.header.spi_r) == (left.spi_i, bytes(8))
    assert (reply.header.exchange_type, reply.header.message_id) == (ExchangeType.IKE_SA_INIT, 0)
    assert reply.payloads == [NotifyPayload(NotifyType.UNSUPPORTED_CRITICAL_PAYLOAD, bytes([200]))]
    left.receive_datagram(decision.reply, RIGHT, NOW)
    (failed,) = [e for e in iter(left.next_event, None) if isinstance(e, IkeSaFailed)]
    assert failed.reason == "UNSUPPORTED_CRITICAL_PAYLOAD: refused by peer"


def test_higher_major_version_is_answered_with_invalid_major_version() -> None:
    """RFC 7296 section 2.5: drop it and tell the highest version we speak (2.0) in the
    reply's header."""
    request = bytearray(first_request(initiator()))
    request[17] = 0x30
    decision = gate().receive_datagram(bytes(request), LEFT, NOW)
    assert decision.sa is None and decision.reply is not None
    reply = parse_message(decision.reply)
    assert (reply.header.major_version, reply.header.minor_version) == (2, 0)
    assert reply.payloads == [NotifyPayload(NotifyType.INVALID_MAJOR_VERSION)]


def test_other_malformed_first_requests_get_no_answer() -> None:
    """Section 2.21.4: nothing is sent for garbage that is not a readable IKE_SA_INIT
    request (an answer would help reflection attacks)."""
    truncated = first_request(initiator())[:-3]
    decision = gate().receive_datagram(truncated, LEFT, NOW)
    assert decision.reply is None and decision.reason.startswith("malformed: ")
