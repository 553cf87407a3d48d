"""The two error roots of the IKE core (errors.py, h11's split): the peer's faults are
dropped quietly, our own raise to the caller."""

from __future__ import annotations

import pytest

from tests.support.ike_peers import Peers
from vpnfleet.agent.ike.constants import ExchangeType
from vpnfleet.agent.ike.errors import (
    CryptoError,
    LocalError,
    ParseError,
    ProtocolError,
    UnsupportedTransform,
)
from vpnfleet.agent.ike.payloads import Payload
from vpnfleet.agent.ike.states import IkeSaState
from vpnfleet.agent.ike.tasks import informational


def test_peer_faults_and_our_own_have_separate_roots() -> None:
    for peer_fault in (ParseError, CryptoError):
        assert issubclass(peer_fault, ProtocolError) and not issubclass(peer_fault, LocalError)
    assert issubclass(UnsupportedTransform, LocalError)
    assert not issubclass(LocalError, ProtocolError)
    assert not issubclass(ProtocolError, LocalError)


def test_a_peer_fault_is_counted_and_dropped() -> None:
    peers = Peers.established()
    left, right = peers.left.sa, peers.right.sa
    message_id = left.tasks.next_message_id
    request = bytearray(left.build_message(ExchangeType.INFORMATIONAL, message_id, False, []))
    request[-1] ^= 1  # the ICV no longer holds: CryptoError inside
    right.receive_datagram(bytes(request), peers.left.address, peers.now)
    assert right.dropped == 1 and right.state is IkeSaState.ESTABLISHED
    assert peers.outgoing(peers.right) == []


def test_our_own_error_while_answering_the_peer_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    """A LocalError met while handling a peer's datagram is our bug: it is not counted
    as a dropped datagram but raised, for the caller to log with its traceback."""

    def broken(sa: object, payloads: list[Payload]) -> list[Payload]:
        raise LocalError("our bug")

    peers = Peers.established()
    monkeypatch.setattr(informational, "respond", broken)
    peers.left.sa.check_liveness(peers.now)
    (request,) = peers.outgoing(peers.left)
    with pytest.raises(LocalError, match="our bug"):
        peers.right.sa.receive_datagram(request, peers.left.address, peers.now)
    assert peers.right.sa.dropped == 0
