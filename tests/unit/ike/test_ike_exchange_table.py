"""Which exchanges an IKE SA accepts in each state (states.REQUESTS and RESPONSES), and
what a request outside them gets (RFC 7296 sections 1.2, 2.21 and 3.10.1), driven
through real messages between two in-memory peers."""

from __future__ import annotations

import pytest

from tests.support.ike_peers import RIGHT, Peers, left_right
from vpnfleet.agent.ike.constants import ExchangeType, NotifyType
from vpnfleet.agent.ike.events import IkeSaEstablished
from vpnfleet.agent.ike.inbound import RESPONDERS
from vpnfleet.agent.ike.message import parse_message
from vpnfleet.agent.ike.payloads import NotifyPayload
from vpnfleet.agent.ike.states import (
    REQUESTS,
    RESPONSES,
    IkeSaState,
    Unexpected,
    accepts_request,
    accepts_response,
    unexpected_request,
)

S, X = IkeSaState, ExchangeType
LATER = {X.CREATE_CHILD_SA, X.INFORMATIONAL}


def test_every_state_accepts_what_rfc_7296_allows_and_nothing_else() -> None:
    """Section 1.2: IKE_SA_INIT, then IKE_AUTH, then the later exchanges."""
    requests = {
        S.CREATED: {X.IKE_SA_INIT},
        S.INIT_DONE: {X.IKE_AUTH},
        S.ESTABLISHED: LATER,
        S.REKEYED: LATER,
        S.DELETING: LATER,
    }
    responses = {
        S.INIT_SENT: {X.IKE_SA_INIT},
        S.AUTH_SENT: {X.IKE_AUTH},
        S.ESTABLISHED: LATER,
        S.REKEYED: LATER,
        S.DELETING: LATER,
    }
    for state in IkeSaState:
        for exchange in [*ExchangeType, 99]:
            assert accepts_request(state, exchange) == (exchange in requests.get(state, ()))
            assert accepts_response(state, exchange) == (exchange in responses.get(state, ()))


def test_every_accepted_request_has_a_responder() -> None:
    accepted = set().union(*REQUESTS.values(), *RESPONSES.values())
    assert accepted == set(RESPONDERS)


@pytest.mark.parametrize("exchange", [X.IKE_AUTH, X.IKE_SESSION_RESUME, 99])
def test_an_authenticated_sa_answers_a_request_it_does_not_take_with_invalid_syntax(
    exchange: int,
) -> None:
    """Section 2.21.3: after authentication every request in error is answered; section
    3.10.1: INVALID_SYNTAX is the answer no other type covers. The SA stays up and the
    message ID is used."""
    peers = Peers.established()
    left, right = peers.left.sa, peers.right.sa
    assert unexpected_request(right.state, exchange) is Unexpected.INVALID_SYNTAX
    message_id = left.tasks.next_message_id
    request = left.build_message(exchange, message_id, False, [])
    peers.deliver(peers.right, request)
    (response,) = peers.outgoing(peers.right)
    message = parse_message(response)
    assert message.header.is_response and message.header.message_id == message_id
    assert message.header.exchange_type == exchange
    assert left._open(message, response) == [NotifyPayload(NotifyType.INVALID_SYNTAX)]
    assert right.state is IkeSaState.ESTABLISHED and right.dropped == 0
    assert right.tasks.expected_request_id == message_id + 1
    assert right.last_refusal is not None and right.last_refusal.startswith("INVALID_SYNTAX")


def test_a_plaintext_ike_sa_init_on_an_authenticated_sa_is_dropped() -> None:
    """Section 3.10.1: INVALID_SYNTAX only answers an encrypted request whose checksum
    held; an unprotected IKE_SA_INIT with this SA's SPIs gets nothing."""
    peers = Peers.established()
    left, right = peers.left.sa, peers.right.sa
    assert unexpected_request(right.state, X.IKE_SA_INIT) is Unexpected.DROP
    request = left.build_message(X.IKE_SA_INIT, left.tasks.next_message_id, False, [])
    expected = right.tasks.expected_request_id
    peers.deliver(peers.right, request)
    assert peers.outgoing(peers.right) == []
    assert right.dropped == 1 and right.tasks.expected_request_id == expected


@pytest.mark.parametrize("exchange", [X.CREATE_CHILD_SA, X.INFORMATIONAL, 99])
def test_a_half_open_sa_drops_any_request_but_ike_auth(exchange: int) -> None:
    """Section 2.21: whether an error is answered depends on an authenticated IKE SA;
    before IKE_AUTH (section 1.2) nothing else is taken and nothing is answered."""
    peers = Peers(*left_right())
    left, right = peers.left.sa, peers.right.sa
    left.initiate(RIGHT, peers.now)
    (init_request,) = peers.outgoing(peers.left)
    peers.deliver(peers.right, init_request)
    (init_response,) = peers.outgoing(peers.right)
    peers.deliver(peers.left, init_response)
    (auth_request,) = peers.outgoing(peers.left)  # held back
    assert right.state is IkeSaState.INIT_DONE
    assert unexpected_request(right.state, exchange) is Unexpected.DROP
    peers.deliver(peers.right, left.build_message(exchange, 1, False, []))
    assert peers.outgoing(peers.right) == []
    assert right.dropped == 1 and right.state is IkeSaState.INIT_DONE
    # The IKE_AUTH request that the table does take still goes through.
    peers.deliver(peers.right, auth_request)
    peers.run()
    assert peers.right.of(IkeSaEstablished) and right.state is IkeSaState.ESTABLISHED


def test_a_response_the_state_does_not_take_is_dropped() -> None:
    """Responses are never answered (section 2.21): one for an exchange the state has no
    request of (an IKE_AUTH response to an established SA) is counted and dropped."""
    peers = Peers.established()
    left, right = peers.left.sa, peers.right.sa
    assert not accepts_response(left.state, X.IKE_AUTH)
    left.check_liveness(peers.now)
    (request,) = peers.outgoing(peers.left)
    message_id = parse_message(request).header.message_id
    dropped = left.dropped
    peers.deliver(peers.left, right.build_message(X.IKE_AUTH, message_id, True, []))
    assert left.dropped == dropped + 1 and left.tasks.active is not None
