"""PSK rotation over IKEv1 (``rotate psk``): SKEYID hangs on the pre-shared key (RFC
2409 section 5), so the end that cannot choose the key tries ours and the accepted ones.
Main mode: the responder keeps the key under which message 5 decrypts and HASH_I
verifies (the initiator always uses its own). Aggressive mode (section 5.4): the
responder proves itself first with its own key, the initiator tries its keys on HASH_R.
"""

from __future__ import annotations

import pytest

from tests.support.ike_v1_peers import LEFT, PSK, RIGHT, Peers, left_right
from vpnfleet.agent.ike.errors import LocalError
from vpnfleet.agent.ike.events import (
    ChildSaDeleted,
    ChildSaEstablished,
    IkeSaDeleted,
    IkeSaEstablished,
    IkeSaFailed,
)
from vpnfleet.agent.ike.states import Role
from vpnfleet.agent.ike.v1.config import ExchangeMode
from vpnfleet.agent.ike.v1.constants import NotifyType
from vpnfleet.agent.ike.v1.sa import IkeV1Sa, V1State

NEW = b"the new key after rotation"
MODES = [ExchangeMode.MAIN, ExchangeMode.AGGRESSIVE]


def _until_quiet(peers: Peers, seconds: float = 120.0) -> None:
    end = peers.now + seconds
    while peers.now < end:
        peers.advance(1.0)
        peers.run()


def _run(left: dict[str, object], right: dict[str, object], mode: ExchangeMode) -> Peers:
    peers = Peers(*left_right(left=left, right=right, phase1_mode=mode, half_open_timeout=20.0))
    peers.start()
    peers.run()
    return peers


@pytest.mark.parametrize("mode", MODES)
def test_initiator_on_old_key_responder_on_new_accepting_old(mode: ExchangeMode) -> None:
    """Step ``accept`` on the initiator, ``use`` on the responder."""
    peers = _run({"psk": PSK, "accepted_psks": (NEW,)}, {"psk": NEW, "accepted_psks": (PSK,)}, mode)
    left, right = peers.left.sa, peers.right.sa
    assert left.state is right.state is V1State.ESTABLISHED, (peers.left.events, right.last_drop)
    assert left.keys is not None and right.keys is not None
    assert left.keys.skeyid == right.keys.skeyid
    assert peers.left.of(ChildSaEstablished) and peers.right.of(ChildSaEstablished)


@pytest.mark.parametrize("mode", MODES)
def test_initiator_on_new_key_responder_on_old_accepting_new(mode: ExchangeMode) -> None:
    """Step ``use`` on the initiator, ``accept`` on the responder."""
    peers = _run({"psk": NEW, "accepted_psks": (PSK,)}, {"psk": PSK, "accepted_psks": (NEW,)}, mode)
    assert peers.left.sa.state is peers.right.sa.state is V1State.ESTABLISHED
    assert peers.left.of(ChildSaEstablished) and peers.right.of(ChildSaEstablished)


@pytest.mark.parametrize("mode", MODES)
def test_final_step_against_use_step(mode: ExchangeMode) -> None:
    """One end done (only the new key), the other still accepting the old."""
    for left, right in (
        ({"psk": NEW}, {"psk": NEW, "accepted_psks": (PSK,)}),
        ({"psk": NEW, "accepted_psks": (PSK,)}, {"psk": NEW}),
    ):
        peers = _run(left, right, mode)
        assert peers.left.sa.state is peers.right.sa.state is V1State.ESTABLISHED


def test_main_mode_responder_keeps_the_key_that_verified() -> None:
    """Later messages (Quick mode, informational) go under the keys derived from the
    key the initiator used, not from the responder's own."""
    peers = _run(
        {"psk": PSK}, {"psk": NEW, "accepted_psks": (b"unrelated", PSK)}, ExchangeMode.MAIN
    )
    left, right = peers.left.sa, peers.right.sa
    assert left.state is right.state is V1State.ESTABLISHED
    assert left.keys is not None and right.keys is not None
    assert left.keys.enc_key == right.keys.enc_key
    assert right.dropped == 0
    left.check_liveness(peers.now)
    peers.run()
    assert left.dropped == right.dropped == 0


@pytest.mark.parametrize("mode", MODES)
def test_a_key_neither_end_holds_still_fails_clearly(mode: ExchangeMode) -> None:
    third = {"psk": b"a third key", "accepted_psks": (b"a fourth key",)}
    peers = _run(third, {"psk": NEW, "accepted_psks": (PSK,)}, mode)
    _until_quiet(peers)
    assert not peers.left.of(IkeSaEstablished) and not peers.right.of(IkeSaEstablished)
    failed = (
        peers.right.of(IkeSaFailed) if mode is ExchangeMode.MAIN else peers.left.of(IkeSaFailed)
    )
    (failure,) = failed
    assert failure.notify == NotifyType.AUTHENTICATION_FAILED
    which = "message 5" if mode is ExchangeMode.MAIN else "message 2"
    assert f"{which} did not decrypt and verify under any of our 2 pre-shared keys" in (
        failure.reason
    )


def test_aggressive_responder_uses_its_own_key_only() -> None:
    """The Aggressive mode responder sends HASH_R before the initiator proves anything:
    its accepted keys are of no use there. An initiator that holds only the old key
    cannot reach a responder already on the new one, whatever the responder accepts."""
    peers = _run({"psk": PSK}, {"psk": NEW, "accepted_psks": (PSK,)}, ExchangeMode.AGGRESSIVE)
    _until_quiet(peers)
    assert not peers.left.of(IkeSaEstablished)
    (failure,) = peers.left.of(IkeSaFailed)
    assert "message 2" in failure.reason


def test_accepted_keys_are_checked() -> None:
    with pytest.raises(LocalError, match="empty accepted pre-shared key"):
        left_right(accepted_psks=(b"",))


def test_reauthentication_without_quick_mode_adopts_the_children() -> None:
    """A new ISAKMP SA made with ``quick_mode=False`` starts no Quick mode; its
    driver moves the old SA's Quick mode SAs over, and the old one's delete is then a
    phase 1 Delete only: the peer keeps its IPsec SAs too."""
    peers = Peers.established()
    old_l, old_r = peers.left.sa, peers.right.sa
    spis = set(old_l.children)
    assert len(spis) == 1
    new = IkeV1Sa(peers.left.config, Role.INITIATOR, LEFT, quick_mode=False)
    peers.left.sas.append(new)
    before = len(peers.sent)
    new.initiate(RIGHT, peers.now)
    peers.run()
    new_r = peers.right.sa
    assert new.state is new_r.state is V1State.ESTABLISHED and new_r is not old_r
    assert len(peers.sent) - before == 6  # Main mode only, no Quick mode
    assert new.adopt_children(old_l) == tuple(spis)
    assert len(new_r.adopt_children(old_r)) == 1 and not old_r.children
    old_l.delete(peers.now)
    peers.run()
    assert old_l.state is old_r.state is V1State.DELETED
    assert not peers.left.of(ChildSaDeleted) and not peers.right.of(ChildSaDeleted)
    assert peers.right.of(IkeSaDeleted)
    assert set(new.children) == spis and len(new_r.children) == 1
    # The adopted SA is deleted over the new ISAKMP SA, and the peer finds it there.
    new.delete_child(next(iter(spis)), peers.now)
    peers.run()
    assert not new.children and not new_r.children
    assert len(peers.right.of(ChildSaDeleted)) == 1
