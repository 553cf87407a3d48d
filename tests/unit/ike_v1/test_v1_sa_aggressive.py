"""Aggressive mode with a pre-shared key (RFC 2409 section 5.4) between two IkeV1Sa on
fake time: three messages, FQDN identities in the clear, NAT-D in messages 2 and 3
(RFC 3947 section 3.2), loss, a wrong key, a mode mismatch."""

from __future__ import annotations

from dataclasses import replace

import pytest

from tests.support.ike_v1_peers import Peers, left_right
from vpnfleet.agent.ike.config import Identity
from vpnfleet.agent.ike.events import ChildSaEstablished, IkeSaEstablished, IkeSaFailed
from vpnfleet.agent.ike.v1.config import ExchangeMode
from vpnfleet.agent.ike.v1.constants import ExchangeType, NotifyType
from vpnfleet.agent.ike.v1.sa import V1State

AGGRESSIVE = {"phase1_mode": ExchangeMode.AGGRESSIVE}


def _until_quiet(peers: Peers, seconds: float = 120.0) -> None:
    end = peers.now + seconds
    while peers.now < end:
        peers.advance(1.0)
        peers.run()


@pytest.mark.parametrize("ike", ["aes256-sha256-modp2048", "aes128-sha1-ecp256"])
def test_aggressive_mode_establishes_in_three_messages(ike: str) -> None:
    peers = Peers.established(ike=(ike,), **AGGRESSIVE)
    kinds = [d[18] for _, d in peers.sent]
    assert kinds == [ExchangeType.AGGRESSIVE] * 3 + [ExchangeType.QUICK] * 3
    assert peers.sent[2][1][19] & 1  # message 3 is encrypted
    up_l, up_r = peers.left.of(IkeSaEstablished)[0], peers.right.of(IkeSaEstablished)[0]
    assert (up_l.spi_i, up_l.spi_r) == (up_r.spi_i, up_r.spi_r)
    assert up_l.remote_id == "right.example" and up_r.remote_id == "left.example"
    assert up_r.initial_contact
    left = peers.left.of(ChildSaEstablished)[0]
    right = peers.right.of(ChildSaEstablished)[0]
    assert left.encr_key_out == right.encr_key_in and left.spi_out == right.spi_in


def test_aggressive_offers_only_the_first_proposals_group() -> None:
    left, right = left_right(
        left={"ike": ("aes256-sha256-ecp256", "aes128-sha256-modp2048")},
        right={"ike": ("aes128-sha256-modp2048",)},
        **AGGRESSIVE,
    )
    peers = Peers(left, right)
    peers.start()
    peers.run()
    (failed,) = peers.right.of(IkeSaFailed)
    assert failed.notify == NotifyType.NO_PROPOSAL_CHOSEN
    assert "theirs [aes256-sha256-ecp256]" in failed.reason  # modp2048 was not offered


def test_forced_encapsulation_in_aggressive_mode() -> None:
    peers = Peers.established(left={"force_encap": True}, **AGGRESSIVE)
    assert peers.left.sa.peer == ("192.0.2.2", 4500)
    assert peers.right.of(ChildSaEstablished)[0].encap
    assert peers.right.of(IkeSaEstablished)[0].nat_remote


@pytest.mark.parametrize("lost", [1, 2, 3])
def test_each_lost_aggressive_message_is_recovered(lost: int) -> None:
    peers = Peers(*left_right(**AGGRESSIVE))
    count = {"n": 0}

    def drop(_sender: str, data: bytes) -> bool:
        if data[18] != ExchangeType.AGGRESSIVE:
            return False
        count["n"] += 1
        return count["n"] == lost

    peers.start()
    peers.run(drop)
    for _ in range(4):
        peers.advance(2.0)
        peers.run(drop)
    assert peers.left.sa.state is peers.right.sa.state is V1State.ESTABLISHED
    assert peers.left.of(ChildSaEstablished) and peers.right.of(ChildSaEstablished)


def test_wrong_psk_in_aggressive_mode() -> None:
    peers = Peers(*left_right(right={"psk": b"other"}, half_open_timeout=20.0, **AGGRESSIVE))
    peers.start()
    peers.run()
    _until_quiet(peers)
    (initiator,) = peers.left.of(IkeSaFailed)
    assert initiator.notify == NotifyType.AUTHENTICATION_FAILED
    assert "message 2" in initiator.reason and "pre-shared keys" in initiator.reason
    (responder,) = peers.right.of(IkeSaFailed)
    assert responder.reason  # its message 2 went unanswered
    assert not peers.right.of(IkeSaEstablished)


def test_wrong_identity_is_refused_in_message_1() -> None:
    left, right = left_right(**AGGRESSIVE)
    peers = Peers(left, replace(right, remote_id=Identity.parse("someone.else")))
    peers.start()
    peers.run()
    (failed,) = peers.right.of(IkeSaFailed)
    assert failed.notify == NotifyType.INVALID_ID_INFORMATION
    assert "left.example" in failed.reason


def test_main_mode_responder_refuses_aggressive() -> None:
    peers = Peers(*left_right(left=AGGRESSIVE))
    peers.start()
    peers.run()
    assert peers.right.sa.dropped == 1
    assert "configured for Main mode" in (peers.right.sa.last_drop or "")
