"""The one child SA negotiation (tasks/child_create.py) in both exchanges that carry it:
a request without its child SA payloads is malformed, in IKE_AUTH as in CREATE_CHILD_SA
(RFC 7296 sections 1.2, 1.3, 2.21.2, 2.21.3 and 3.10.1)."""

from __future__ import annotations

import pytest

from tests.support.ike_peers import RIGHT, Peers, left_right
from vpnfleet.agent.ike.constants import ExchangeType, NotifyType
from vpnfleet.agent.ike.events import (
    ChildSaEstablished,
    ChildSaFailed,
    IkeSaEstablished,
    IkeSaFailed,
)
from vpnfleet.agent.ike.message import parse_message
from vpnfleet.agent.ike.payloads import NoncePayload, NotifyPayload, Payload, TsPayload, TsrPayload
from vpnfleet.agent.ike.sa_payload import SaPayload
from vpnfleet.agent.ike.states import IkeSaState
from vpnfleet.agent.ike.tasks import child_create, ike_auth

CHILD_PAYLOADS = {"SA": SaPayload, "TSi": TsPayload, "TSr": TsrPayload}


def _responses(peers: Peers, exchange: ExchangeType) -> list[list[Payload]]:
    """The payloads of every response of ``exchange`` that right sends, unprotected with
    left's keys, while the peers run to quiet."""
    seen: list[list[Payload]] = []

    def watch(sender: str, data: bytes) -> bool:
        message = parse_message(data)
        header = message.header
        if sender == "right" and header.is_response and header.exchange_type == exchange:
            seen.append(peers.left.sa._open(message, data))
        return False

    peers.run(drop=watch)
    return seen


@pytest.mark.parametrize("missing", sorted(CHILD_PAYLOADS))
def test_ike_auth_request_without_child_payloads_is_refused_whole(
    monkeypatch: pytest.MonkeyPatch, missing: str
) -> None:
    """Section 2.21.2: a malformed IKE_AUTH request gets INVALID_SYNTAX alone and the
    initiator is not authenticated, so no IKE SA is made on either side. (It used to
    be authenticated and its child refused with NO_PROPOSAL_CHOSEN.)"""
    build = ike_auth.IkeAuth.build_request

    def without(task: ike_auth.IkeAuth) -> list[Payload]:
        return [p for p in build(task) if type(p) is not CHILD_PAYLOADS[missing]]

    monkeypatch.setattr(ike_auth.IkeAuth, "build_request", without)
    peers = Peers(*left_right())
    peers.left.sa.initiate(RIGHT, peers.now)
    (response,) = _responses(peers, ExchangeType.IKE_AUTH)
    assert response == [NotifyPayload(NotifyType.INVALID_SYNTAX)]
    (refused,) = peers.right.of(IkeSaFailed)
    assert refused.reason == "INVALID_SYNTAX: IKE_AUTH request lacks SA, TSi or TSr"
    assert refused.notify == NotifyType.INVALID_SYNTAX
    (failed,) = peers.left.of(IkeSaFailed)
    assert failed.reason == "INVALID_SYNTAX: refused by peer"
    assert failed.notify == NotifyType.INVALID_SYNTAX
    for endpoint in (peers.left, peers.right):
        assert not endpoint.of(IkeSaEstablished) and not endpoint.of(ChildSaEstablished)
        assert endpoint.sa.state is IkeSaState.FAILED


@pytest.mark.parametrize("missing", [*sorted(CHILD_PAYLOADS), "Nonce"])
def test_create_child_sa_request_without_child_payloads_gets_invalid_syntax(
    monkeypatch: pytest.MonkeyPatch, missing: str
) -> None:
    """Sections 1.3 and 3.10.1: the same malformed request in CREATE_CHILD_SA gets the
    same INVALID_SYNTAX; the IKE SA is authenticated and stays up (section 2.21.3)."""
    kinds = {**CHILD_PAYLOADS, "Nonce": NoncePayload}
    build = child_create.ChildCreate.build_request

    def without(task: child_create.ChildCreate) -> list[Payload] | None:
        payloads = build(task)
        return None if payloads is None else [p for p in payloads if type(p) is not kinds[missing]]

    peers = Peers.established()
    peers.clear_events()
    monkeypatch.setattr(child_create.ChildCreate, "build_request", without)
    peers.left.sa.create_child("net", peers.now)
    (response,) = _responses(peers, ExchangeType.CREATE_CHILD_SA)
    assert response == [NotifyPayload(NotifyType.INVALID_SYNTAX)]
    (failed,) = peers.left.of(ChildSaFailed)
    assert failed.reason == "INVALID_SYNTAX: peer refused the new child SA"
    assert failed.notify == NotifyType.INVALID_SYNTAX
    assert peers.right.sa.last_refusal == (
        "INVALID_SYNTAX: CREATE_CHILD_SA request lacks SA, Nonce, TSi or TSr"
    )
    assert not peers.right.of(ChildSaEstablished) and not peers.right.of(ChildSaFailed)
    assert peers.left.sa.state is peers.right.sa.state is IkeSaState.ESTABLISHED


def test_the_first_child_and_a_later_one_are_negotiated_alike() -> None:
    """One negotiation for both exchanges: the child of IKE_AUTH and one made later
    with CREATE_CHILD_SA come out with the same policy, each keyed in pairs."""
    peers = Peers.established()
    (first_left,) = peers.left.of(ChildSaEstablished)
    (first_right,) = peers.right.of(ChildSaEstablished)
    peers.clear_events()
    peers.left.sa.create_child("net", peers.now)
    peers.run()
    (later_left,) = peers.left.of(ChildSaEstablished)
    (later_right,) = peers.right.of(ChildSaEstablished)
    for left, right in ((first_left, first_right), (later_left, later_right)):
        assert left.spi_in == right.spi_out and left.spi_out == right.spi_in
        assert left.encr_key_in == right.encr_key_out and left.encr_key_out == right.encr_key_in
        assert left.local_ts == right.remote_ts and left.remote_ts == right.local_ts
    assert (first_left.proposal, first_left.mode, first_left.local_ts) == (
        later_left.proposal,
        later_left.mode,
        later_left.local_ts,
    )
    assert first_left.encr_key_in != later_left.encr_key_in
