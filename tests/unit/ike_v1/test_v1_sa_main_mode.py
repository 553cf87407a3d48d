"""Main mode with a pre-shared key (RFC 2409 sections 5 and 5.4) between two IkeV1Sa on
fake time: both roles, wrong key, no common proposal, loss and duplicates, garbage."""

from __future__ import annotations

from dataclasses import replace

import pytest

from tests.support.ike_v1_peers import LEFT, RIGHT, Peers, left_right
from vpnfleet.agent.ike.config import Identity
from vpnfleet.agent.ike.events import (
    ChildSaEstablished,
    IkeSaEstablished,
    IkeSaFailed,
    LivenessAnswered,
)
from vpnfleet.agent.ike.v1.config import Phase1Proposal
from vpnfleet.agent.ike.v1.constants import ExchangeType, Flag, NotifyType, PayloadType
from vpnfleet.agent.ike.v1.message import IsakmpHeader
from vpnfleet.agent.ike.v1.sa import IkeV1Sa, V1State


def _exchange(data: bytes) -> int:
    return data[18]


@pytest.mark.parametrize(
    "ike",
    [
        "aes128-sha1-modp2048",
        "aes192-sha256-ecp256",
        "aes256-sha384-ecp384",
        "aes256-sha512-x25519",
    ],
)
def test_main_mode_psk_establishes_both_sides(ike: str) -> None:
    peers = Peers.established(ike=(ike,))
    left, right = peers.left.sa, peers.right.sa
    assert (left.icookie, left.rcookie) == (right.icookie, right.rcookie)
    up_l = peers.left.of(IkeSaEstablished)[0]
    up_r = peers.right.of(IkeSaEstablished)[0]
    assert (up_l.spi_i, up_l.spi_r) == (left.icookie, left.rcookie)
    assert up_l.proposal == up_r.proposal == str(Phase1Proposal.parse(ike))
    assert (up_l.remote_id, up_r.remote_id) == ("right.example", "left.example")
    assert up_r.initial_contact  # the initiator sent INITIAL-CONTACT with its identity
    assert up_l.peer == RIGHT and up_r.peer == LEFT
    assert left.keys is not None and right.keys is not None
    assert left.keys.skeyid_d == right.keys.skeyid_d
    # Six Main mode messages and three Quick mode ones, nothing else, nothing dropped.
    kinds = [_exchange(d) for _, d in peers.sent]
    assert kinds == [ExchangeType.IDENTITY_PROTECTION] * 6 + [ExchangeType.QUICK] * 3
    assert left.dropped == right.dropped == 0


def test_responder_picks_its_first_proposal_the_initiator_offers() -> None:
    left, right = left_right(
        left={"ike": ("aes128-sha1-modp2048", "aes256-sha256-ecp256")},
        right={"ike": ("aes256-sha256-ecp256", "aes128-sha1-modp2048")},
    )
    peers = Peers(left, right)
    peers.start()
    peers.run()
    assert peers.left.of(IkeSaEstablished)[0].proposal == "aes256-sha256-ecp256"


def _until_quiet(peers: Peers, seconds: float = 120.0) -> None:
    """Run the fake clock on, delivering, until nothing is left to do."""
    end = peers.now + seconds
    while peers.now < end:
        peers.advance(1.0)
        peers.run()


def test_wrong_psk_fails_clearly_on_both_sides() -> None:
    """A message 5 that does not verify is dropped (it might be forged), the
    responder says AUTHENTICATION_FAILED in the clear, and both fail on their timers
    naming the likely cause."""
    peers = Peers(*left_right(right={"psk": b"another key"}, half_open_timeout=20.0))
    peers.start()
    peers.run()
    assert not peers.left.of(IkeSaFailed) and not peers.right.of(IkeSaFailed)
    assert peers.right.sa.dropped == 1
    _until_quiet(peers)
    (responder,) = peers.right.of(IkeSaFailed)
    assert responder.notify == NotifyType.AUTHENTICATION_FAILED
    assert "message 5 did not decrypt and verify" in responder.reason
    assert "pre-shared keys" in responder.reason
    (initiator,) = peers.left.of(IkeSaFailed)
    assert initiator.notify == NotifyType.AUTHENTICATION_FAILED
    assert "pre-shared keys" in initiator.reason
    assert "no answer to Main mode message 5" in initiator.reason
    assert peers.left.sa.state is peers.right.sa.state is V1State.FAILED
    assert not peers.left.of(IkeSaEstablished) and not peers.right.of(IkeSaEstablished)


def test_no_common_proposal_names_ours_and_theirs() -> None:
    peers = Peers(
        *left_right(
            left={"ike": ("aes128-sha1-modp2048",)}, right={"ike": ("aes256-sha512-ecp384",)}
        )
    )
    peers.start()
    peers.run()
    (responder,) = peers.right.of(IkeSaFailed)
    assert responder.notify == NotifyType.NO_PROPOSAL_CHOSEN
    assert "ours [aes256-sha512-ecp384]" in responder.reason
    assert "theirs [aes128-sha1-modp2048]" in responder.reason
    _until_quiet(peers)
    (initiator,) = peers.left.of(IkeSaFailed)
    assert initiator.notify == NotifyType.NO_PROPOSAL_CHOSEN
    assert initiator.reason.startswith("NO_PROPOSAL_CHOSEN: the peer refused phase 1")


def test_initiator_retransmits_with_doubling_timeout_and_gives_up() -> None:
    left, right = left_right(retransmit_timeout=1.0, retransmit_tries=3)
    peers = Peers(left, right)
    peers.start()
    peers.run(drop=lambda *_: True)
    times = []
    for _ in range(10):
        timer = peers.left.sa.get_timer()
        if timer is None:
            break
        peers.now = timer
        peers.advance(0)
        if peers.outgoing(peers.left):
            times.append(peers.now)
    assert times == [1001.0, 1003.0, 1007.0]  # 1, 2, 4 s after the first try
    (failed,) = peers.left.of(IkeSaFailed)
    assert "Main mode message 1 after 3 retransmissions" in failed.reason


@pytest.mark.parametrize("lost", range(1, 7))
def test_each_lost_main_mode_message_is_recovered(lost: int) -> None:
    """Message ``lost`` (1..6) is dropped once: the initiator's retransmission (and the
    responder's answer to a duplicate request) completes phase 1 and Quick mode."""
    peers = Peers(*left_right())
    count = {"n": 0}

    def drop(_sender: str, data: bytes) -> bool:
        if _exchange(data) != ExchangeType.IDENTITY_PROTECTION:
            return False
        count["n"] += 1
        return count["n"] == lost

    peers.start()
    peers.run(drop)
    peers.advance(2.0)
    peers.run(drop)
    assert peers.left.of(IkeSaEstablished) and peers.right.of(IkeSaEstablished)
    assert peers.left.of(ChildSaEstablished) and peers.right.of(ChildSaEstablished)
    assert peers.left.sa.dropped == peers.right.sa.dropped == 0


def test_duplicated_datagrams_change_nothing() -> None:
    peers = Peers(*left_right())
    peers.start()
    for _ in range(20):
        moved = False
        for sender in (peers.left, peers.right):
            for data, addr in peers.outgoing(sender):
                moved = True
                peers.deliver(peers.other(sender), data, addr[1])
                peers.deliver(peers.other(sender), data, addr[1])  # every datagram twice
        if not moved:
            break
    assert len(peers.left.of(IkeSaEstablished)) == len(peers.right.of(IkeSaEstablished)) == 1
    assert len(peers.left.of(ChildSaEstablished)) == len(peers.right.of(ChildSaEstablished)) == 1
    assert peers.left.sa.state is peers.right.sa.state is V1State.ESTABLISHED


def _datagram(sa: IkeV1Sa, exchange: int, flags: Flag, mid: int, first: int, body: bytes) -> bytes:
    header = IsakmpHeader(sa.icookie, sa.rcookie, first, exchange, flags, mid, 28 + len(body))
    return header.encode() + body


def test_garbage_is_counted_and_dropped_never_fatal() -> None:
    peers = Peers.established()
    sa = peers.right.sa
    encrypted = Flag.ENCRYPTION
    for junk in (
        b"",
        b"\x00" * 10,
        _datagram(sa, ExchangeType.QUICK, encrypted, 7, PayloadType.HASH, bytes(16)),
        _datagram(sa, ExchangeType.QUICK, encrypted, 7, PayloadType.HASH, bytes(15)),
        _datagram(sa, ExchangeType.INFORMATIONAL, encrypted, 9, PayloadType.HASH, bytes(32)),
        _datagram(sa, ExchangeType.IDENTITY_PROTECTION, Flag.NONE, 0, PayloadType.SA, b"xx"),
        _datagram(sa, ExchangeType.QUICK, Flag.NONE, 5, PayloadType.HASH, bytes(4)),
        _datagram(sa, ExchangeType.AGGRESSIVE, Flag.NONE, 0, PayloadType.SA, bytes(4)),
    ):
        sa.receive_datagram(junk, LEFT, peers.now)
    assert sa.dropped == 8
    assert sa.last_drop is not None
    assert sa.state is V1State.ESTABLISHED
    assert not peers.right.of(IkeSaFailed)
    # and the SA still works: a liveness check is answered
    peers.right.sa.check_liveness(peers.now)
    peers.run()
    assert peers.right.of(LivenessAnswered)


def test_wrong_identity_is_refused() -> None:
    left, right = left_right()
    peers = Peers(left, replace(right, remote_id=Identity.parse("other.example")))
    peers.start()
    peers.run()
    (failed,) = peers.right.of(IkeSaFailed)
    assert failed.notify == NotifyType.INVALID_ID_INFORMATION
    assert "left.example" in failed.reason and "other.example" in failed.reason
    _until_quiet(peers)  # told in the clear: the initiator's failure names it
    assert peers.left.of(IkeSaFailed)[0].notify == NotifyType.INVALID_ID_INFORMATION


def test_half_open_responder_gives_up() -> None:
    peers = Peers(*left_right(half_open_timeout=10.0))
    peers.start()
    peers.run(drop=lambda sender, data: sender == "left" and data[16] == PayloadType.KE)
    assert peers.right.sa.state is V1State.SA_EXCHANGE
    peers.now += 10
    peers.right.sa.handle_timer(peers.now)
    peers.collect()
    (failed,) = peers.right.of(IkeSaFailed)
    assert "phase 1 not complete within 10 s" in failed.reason
