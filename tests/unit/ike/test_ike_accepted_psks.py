"""A staged key change: an end that accepts the old and the new pre-shared key while it
signs with one of them (RFC 7296 section 2.15: AUTH = prf(prf(Shared Secret, "Key Pad
for IKEv2"), <SignedOctets>)), on fake time with an in-memory pair."""

from __future__ import annotations

from dataclasses import replace

import pytest

from tests.support.ike_peers import Peers, left_right
from vpnfleet.agent.ike.config import IkeConfig
from vpnfleet.agent.ike.constants import NotifyType
from vpnfleet.agent.ike.errors import LocalError
from vpnfleet.agent.ike.events import ChildSaEstablished, IkeSaFailed
from vpnfleet.agent.ike.states import IkeSaState

OLD = b"old pair key, epoch 1 .........."
NEW = b"new pair key, epoch 2 .........."


def keyed(config: IkeConfig, psk: bytes, *accepted: bytes) -> IkeConfig:
    return replace(config, psk=psk, accepted_psks=accepted)


def pair(initiator: tuple[bytes, ...], responder: tuple[bytes, ...]) -> Peers:
    """``initiator``/``responder``: the key each signs with, then the keys it accepts."""
    left, right = left_right()
    peers = Peers(keyed(left, *initiator), keyed(right, *responder))
    peers.left.sa.initiate(peers.right.address, peers.now)
    peers.run()
    return peers


def assert_up(peers: Peers) -> None:
    assert peers.left.sa.state is IkeSaState.ESTABLISHED, peers.left.of(IkeSaFailed)
    assert peers.right.sa.state is IkeSaState.ESTABLISHED, peers.right.of(IkeSaFailed)
    assert len(peers.left.of(ChildSaEstablished)) == 1
    assert len(peers.right.of(ChildSaEstablished)) == 1


@pytest.mark.parametrize("initiator_key", [OLD, NEW], ids=["old", "new"])
def test_responder_accepting_both_keys_takes_an_initiator_with_either(
    initiator_key: bytes,
) -> None:
    # Step one of a staged change: the responder still signs with the old key and
    # accepts the new one; an initiator with either key is authenticated.
    other = OLD if initiator_key == NEW else NEW
    assert_up(pair((initiator_key, other), (OLD, NEW)))


@pytest.mark.parametrize("responder_key", [OLD, NEW], ids=["old", "new"])
def test_initiator_accepting_both_keys_takes_a_responder_with_either(
    responder_key: bytes,
) -> None:
    # Step two: the initiator signs with the new key, accepts the old, and verifies a
    # responder that still signs with the old key (or already with the new one).
    other = OLD if responder_key == NEW else NEW
    assert_up(pair((NEW, OLD), (responder_key, other)))


def test_initiator_without_the_new_key_cannot_verify_a_responder_signing_with_it() -> None:
    # The responder accepts the initiator's old key but signs with the new one, which an
    # initiator that was never given the new key cannot verify: the reason why every end
    # must accept the new key before any end uses it.
    peers = pair((OLD,), (NEW, OLD))
    assert peers.left.sa.state is IkeSaState.FAILED
    (fail,) = peers.left.of(IkeSaFailed)
    assert fail.notify == NotifyType.AUTHENTICATION_FAILED
    assert "does not verify with the pre-shared key" in fail.reason


def test_responder_without_the_old_key_refuses_with_authentication_failed() -> None:
    # The final step removes the old key: an initiator still on it is refused.
    peers = pair((OLD,), (NEW,))
    (r_fail,) = peers.right.of(IkeSaFailed)
    (i_fail,) = peers.left.of(IkeSaFailed)
    assert r_fail.notify == NotifyType.AUTHENTICATION_FAILED
    assert r_fail.reason == (
        "AUTHENTICATION_FAILED: AUTH payload of left.example does not verify with the "
        "pre-shared key"
    )
    assert i_fail.reason == "AUTHENTICATION_FAILED: refused by peer"
    assert not peers.left.of(ChildSaEstablished) and not peers.right.of(ChildSaEstablished)


def test_a_key_neither_signed_with_nor_accepted_is_refused() -> None:
    other = b"a third key that nobody accepts."
    peers = pair((other,), (NEW, OLD))
    (r_fail,) = peers.right.of(IkeSaFailed)
    assert r_fail.notify == NotifyType.AUTHENTICATION_FAILED
    assert r_fail.reason.endswith("does not verify with any pre-shared key")
    assert peers.right.sa.state is IkeSaState.FAILED


def test_config_refuses_an_empty_accepted_key() -> None:
    left, _ = left_right()
    with pytest.raises(LocalError, match="empty accepted pre-shared key"):
        replace(left, accepted_psks=(OLD, b""))


def test_accepted_keys_stay_out_of_repr() -> None:
    left, _ = left_right()
    assert OLD.decode() not in repr(replace(left, accepted_psks=(OLD,)))
