"""INFORMATIONAL exchanges (RFC 7296 section 1.4) between two in-memory peers on fake time:
deletes of child SAs and of the IKE SA from either side, liveness checks and dead
peers, and error notifies turned into events."""

from __future__ import annotations

import pytest

from tests.support.ike_peers import Peers
from vpnfleet.agent.ike.constants import ExchangeType, NotifyType, PayloadType, ProtocolId
from vpnfleet.agent.ike.errors import LocalError
from vpnfleet.agent.ike.events import (
    ChildSaDeleted,
    ChildSaEstablished,
    IkeSaDeleted,
    IkeSaFailed,
    LivenessAnswered,
    PeerErrorNotify,
)
from vpnfleet.agent.ike.message import parse_message
from vpnfleet.agent.ike.payloads import DeletePayload, NotifyPayload, Payload, RawPayload
from vpnfleet.agent.ike.states import IkeSaState


def established() -> tuple[Peers, ChildSaEstablished, ChildSaEstablished]:
    peers = Peers.established()
    (left_child,) = peers.left.of(ChildSaEstablished)
    (right_child,) = peers.right.of(ChildSaEstablished)
    peers.clear_events()
    return peers, left_child, right_child


@pytest.mark.parametrize("side", ["left", "right"])
def test_child_delete_by_either_side_removes_both_halves(side: str) -> None:
    peers, left_child, right_child = established()
    us, them = (peers.left, peers.right) if side == "left" else (peers.right, peers.left)
    ours = left_child if side == "left" else right_child
    us.sa.delete_child(ours.spi_in, peers.now)
    peers.run()
    (mine,) = us.of(ChildSaDeleted)
    (theirs,) = them.of(ChildSaDeleted)
    assert (mine.spi_in, mine.spi_out, mine.reason) == (ours.spi_in, ours.spi_out, "deleted by us")
    assert (theirs.spi_in, theirs.spi_out) == (ours.spi_out, ours.spi_in)
    assert theirs.reason == "deleted by peer" and theirs.name == "net"
    assert not us.sa.children and not them.sa.children
    assert us.sa.state is them.sa.state is IkeSaState.ESTABLISHED
    assert us.sa.get_timer() is None


def test_responder_answers_a_child_delete_with_its_own_spi() -> None:
    """Section 1.4.1: the response carries the Delete for the paired inbound SA."""
    peers, left_child, right_child = established()
    peers.left.sa.delete_child(left_child.spi_in, peers.now)
    (request,) = peers.outgoing(peers.left)
    peers.deliver(peers.right, request)
    (response,) = peers.outgoing(peers.right)
    sa = peers.left.sa
    payloads = sa._open(parse_message(response), response)
    assert payloads == [DeletePayload(ProtocolId.ESP, [right_child.spi_in])]


def test_crossing_child_deletes_delete_each_half_once() -> None:
    """Section 1.4.1: both ends delete the same child at once; neither response names it."""
    peers, left_child, right_child = established()
    peers.left.sa.delete_child(left_child.spi_in, peers.now)
    peers.right.sa.delete_child(right_child.spi_in, peers.now)
    (from_left,) = peers.outgoing(peers.left)
    (from_right,) = peers.outgoing(peers.right)
    peers.deliver(peers.right, from_left)
    peers.deliver(peers.left, from_right)
    (left_answer,) = peers.outgoing(peers.left)
    assert peers.right.sa._open(parse_message(left_answer), left_answer) == []
    peers.run()
    assert len(peers.left.of(ChildSaDeleted)) == len(peers.right.of(ChildSaDeleted)) == 1
    assert not peers.left.sa.children and not peers.right.sa.children
    assert peers.left.sa.dropped == peers.right.sa.dropped == 0


@pytest.mark.parametrize("side", ["left", "right"])
def test_ike_sa_delete_by_either_side_takes_the_children(side: str) -> None:
    peers, _left_child, _right_child = established()
    us, them = (peers.left, peers.right) if side == "left" else (peers.right, peers.left)
    sa_us, sa_them = us.sa, them.sa
    sa_us.delete(peers.now)
    assert sa_us.state is IkeSaState.DELETING
    peers.run()
    assert sa_us.state is sa_them.state is IkeSaState.DELETED
    (child_us,) = us.of(ChildSaDeleted)
    (child_them,) = them.of(ChildSaDeleted)
    assert child_us.reason == "IKE SA deleted: deleted by us"
    assert child_them.reason == "IKE SA deleted: deleted by peer"
    (ike_us,) = us.of(IkeSaDeleted)
    (ike_them,) = them.of(IkeSaDeleted)
    assert (ike_us.spi_i, ike_us.spi_r) == (ike_them.spi_i, ike_them.spi_r)
    assert (ike_us.reason, ike_them.reason) == ("deleted by us", "deleted by peer")
    # Child deletions come before the IKE SA's own.
    assert isinstance(us.events[-1], IkeSaDeleted)
    assert sa_us.get_timer() is None and sa_them.get_timer() is None


def test_unanswered_ike_delete_still_deletes() -> None:
    peers, _, _ = established()
    sa = peers.left.sa
    sa.delete(peers.now)
    peers.outgoing(peers.left)  # lost
    for wait in (2, 4, 8, 16, 32):
        peers.advance(wait)
        peers.outgoing(peers.left)  # lost again
    (deleted,) = peers.left.of(IkeSaDeleted)
    assert deleted.reason.startswith("deleted by us (peer did not answer: no response to")
    assert sa.state is IkeSaState.DELETED


def test_liveness_check_on_command_is_answered() -> None:
    peers, _, _ = established()
    sa = peers.left.sa
    sa.check_liveness(peers.now)
    assert sa.get_timer() == peers.now + 2.0
    peers.run()
    assert sa.get_timer() is None
    # The answer is reported to the initiator of the check only (CheckLiveness waits on it).
    assert peers.left.events == [LivenessAnswered()] and peers.right.events == []
    assert sa.tasks.next_message_id == 3


def test_liveness_check_runs_on_the_timer_after_silence() -> None:
    peers = Peers.established(dpd_delay=30.0)
    peers.clear_events()
    sa = peers.left.sa
    assert sa.get_timer() == peers.now + 30.0
    peers.advance(29.0)
    assert peers.outgoing(peers.left) == []
    peers.advance(1.0)
    (request,) = peers.outgoing(peers.left)
    assert parse_message(request).header.exchange_type == ExchangeType.INFORMATIONAL
    peers.deliver(peers.right, request)
    peers.run()
    # The answer counts as hearing from the peer: the next check is 30 s after it.
    assert sa.get_timer() == peers.now + 30.0


def test_dead_peer_deletes_the_ike_sa_with_the_reason() -> None:
    peers = Peers.established(dpd_delay=10.0)
    peers.clear_events()
    sa = peers.left.sa
    peers.advance(10.0)
    for wait in (2, 4, 8, 16, 32):
        peers.outgoing(peers.left)  # the peer is gone
        peers.advance(wait)
    assert sa.state is IkeSaState.DELETED
    (deleted,) = peers.left.of(IkeSaDeleted)
    assert deleted.reason == "peer dead: no answer to liveness check after 4 retransmissions"
    (child,) = peers.left.of(ChildSaDeleted)
    assert child.reason == f"IKE SA deleted: {deleted.reason}"
    assert not peers.left.of(IkeSaFailed)
    assert sa.get_timer() is None


def test_error_notify_in_a_request_becomes_an_event() -> None:
    peers, _left_child, _ = established()
    sa = peers.left.sa
    notify = NotifyPayload(NotifyType.INVALID_SPI, protocol=ProtocolId.ESP, spi=b"\xde\xad\xbe\xef")
    request = sa.build_message(ExchangeType.INFORMATIONAL, 2, False, [notify])
    peers.deliver(peers.right, request)
    (event,) = peers.right.of(PeerErrorNotify)
    assert event.notify == NotifyType.INVALID_SPI
    assert event.reason == "INVALID_SPI (SPI deadbeef): reported by peer"
    (response,) = peers.outgoing(peers.right)
    assert parse_message(response).header.is_response
    assert peers.right.sa.state is IkeSaState.ESTABLISHED


def test_delete_for_an_unknown_spi_is_answered_empty() -> None:
    peers, _, _ = established()
    sa = peers.left.sa
    request = sa.build_message(
        ExchangeType.INFORMATIONAL, 2, False, [DeletePayload(ProtocolId.ESP, [b"\x00\x00\x00\x01"])]
    )
    peers.deliver(peers.right, request)
    (response,) = peers.outgoing(peers.right)
    assert sa._open(parse_message(response), response) == []
    assert peers.right.events == [] and len(peers.right.sa.children) == 1


def test_local_misuse_of_delete_and_liveness_is_named() -> None:
    peers, left_child, _ = established()
    sa = peers.left.sa
    with pytest.raises(LocalError, match="cannot delete child SA 00000000: unknown"):
        sa.delete_child(bytes(4), peers.now)
    sa.delete_child(left_child.spi_in, peers.now)
    with pytest.raises(LocalError, match=f"cannot delete child SA {left_child.spi_in.hex()}: "):
        sa.delete_child(left_child.spi_in, peers.now)
    fresh = Peers(*[peers.left.sa.config, peers.right.sa.config]).left.sa
    with pytest.raises(LocalError, match="cannot check liveness on an IKE SA in state created"):
        fresh.check_liveness(peers.now)
    with pytest.raises(LocalError, match="cannot delete an IKE SA in state created"):
        fresh.delete(peers.now)


@pytest.mark.parametrize(
    ("inner", "notify", "data", "reason"),
    [
        (
            [RawPayload(200, b"\x00\x01", critical=True)],
            NotifyType.UNSUPPORTED_CRITICAL_PAYLOAD,
            bytes([200]),
            "payload type 200 at offset 40: unsupported payload marked critical",
        ),
        (
            [RawPayload(PayloadType.NONCE, b"short")],
            NotifyType.INVALID_SYNTAX,
            b"",
            "Nonce at offset 44: nonce of 5 bytes, must be 16..256",
        ),
    ],
    ids=["unsupported-critical", "invalid-syntax"],
)
def test_malformed_authenticated_request_is_answered_with_the_error(
    inner: list[Payload], notify: NotifyType, data: bytes, reason: str
) -> None:
    """RFC 7296 sections 2.5 and 2.21.2: a protected request with an unsupported critical
    payload, or whose payloads are malformed, is rejected whole with a response carrying
    UNSUPPORTED_CRITICAL_PAYLOAD (naming the type) or INVALID_SYNTAX; the SA stays up
    and the message ID is used."""
    peers, _, _ = established()
    left, right = peers.left.sa, peers.right.sa
    message_id = left.tasks.next_message_id
    request = left.build_message(ExchangeType.INFORMATIONAL, message_id, False, inner)
    peers.deliver(peers.right, request)
    (response,) = peers.outgoing(peers.right)
    message = parse_message(response)
    assert message.header.is_response and message.header.message_id == message_id
    assert left._open(message, response) == [NotifyPayload(notify, data)]
    assert right.state is IkeSaState.ESTABLISHED
    assert right.last_refusal == reason
    # The retransmitted request gets the same answer; the next ID is taken.
    peers.deliver(peers.right, request)
    assert peers.outgoing(peers.right) == [response]
    assert right.tasks.expected_request_id == message_id + 1
