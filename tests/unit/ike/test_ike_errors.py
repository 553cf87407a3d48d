"""The two error roots of the IKE core (errors.py, h11's split): the peer's faults are
dropped quietly, our own raise to the caller."""

from __future__ import annotations

import pytest

from tests.support.ike_peers import Peers, left_right
from vpnfleet.agent.ike.constants import ExchangeType
from vpnfleet.agent.ike.errors import (
    CommandRefused,
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
    assert issubclass(CommandRefused, LocalError)
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


def test_a_command_the_sa_cannot_take_now_is_refused_narrowly() -> None:
    """A driver racing the peer catches CommandRefused (the SA is busy or gone) and
    still sees every other LocalError, such as a child policy that does not exist."""
    peers = Peers(*left_right())
    fresh = peers.left.sa
    for command in (fresh.rekey, fresh.check_liveness):
        with pytest.raises(CommandRefused, match="on an IKE SA in state created"):
            command(peers.now)
    with pytest.raises(CommandRefused, match="cannot delete an IKE SA in state created"):
        fresh.delete(peers.now)
    peers = Peers.established()
    sa = peers.left.sa
    with pytest.raises(CommandRefused, match="cannot rekey child SA 00000000: unknown"):
        sa.rekey_child(bytes(4), peers.now)
    sa.rekey(peers.now)
    with pytest.raises(CommandRefused, match="an IKE SA rekey is already under way"):
        sa.rekey(peers.now)
    with pytest.raises(LocalError, match="no child configuration named 'nope'") as caught:
        sa.create_child("nope", peers.now)
    assert not isinstance(caught.value, CommandRefused)
