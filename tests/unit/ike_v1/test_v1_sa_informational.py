"""Informational exchanges (RFC 2409 section 5.7, RFC 2408 sections 3.14 and 3.15):
Delete for Quick mode SAs and the ISAKMP SA, DPD (RFC 3706), notifies, on fake time."""

from __future__ import annotations

import pytest

from tests.support.ike_v1_peers import Peers
from vpnfleet.agent.ike.errors import CommandRefused
from vpnfleet.agent.ike.events import (
    ChildSaDeleted,
    ChildSaEstablished,
    IkeSaDeleted,
    LivenessAnswered,
    PeerErrorNotify,
)
from vpnfleet.agent.ike.v1.constants import (
    DOI_IPSEC,
    ExchangeType,
    NotifyType,
    ProtocolId,
)
from vpnfleet.agent.ike.v1.payloads import NotifyPayload
from vpnfleet.agent.ike.v1.sa import V1State


def test_delete_child_both_sides() -> None:
    peers = Peers.established()
    (child,) = peers.left.of(ChildSaEstablished)
    peers.left.sa.delete_child(child.spi_in, peers.now)
    peers.run()
    (ours,) = peers.left.of(ChildSaDeleted)
    (theirs,) = peers.right.of(ChildSaDeleted)
    assert (ours.spi_in, ours.reason) == (child.spi_in, "deleted by us")
    assert (theirs.spi_in, theirs.spi_out, theirs.reason) == (
        child.spi_out,
        child.spi_in,
        "deleted by peer",
    )
    assert not peers.left.sa.children and not peers.right.sa.children
    assert peers.left.sa.state is peers.right.sa.state is V1State.ESTABLISHED
    assert peers.right.sa.dropped == 0


def test_delete_isakmp_sa_takes_the_children() -> None:
    peers = Peers.established()
    peers.right.sa.delete(peers.now)  # the responder may delete too
    peers.run()
    for endpoint, reason in ((peers.right, "deleted by us"), (peers.left, "deleted by peer")):
        (deleted,) = endpoint.of(IkeSaDeleted)
        assert deleted.reason == reason
        assert (deleted.spi_i, deleted.spi_r) == (endpoint.sa.icookie, endpoint.sa.rcookie)
        (child,) = endpoint.of(ChildSaDeleted)
        assert child.reason == reason  # each child's Delete goes before the ISAKMP SA's
        assert endpoint.sa.state is V1State.DELETED
    assert peers.left.sa.get_timer() is None


def test_dpd_is_answered() -> None:
    peers = Peers.established()
    assert peers.left.sa.peer_dpd and peers.right.sa.peer_dpd
    peers.left.sa.check_liveness(peers.now)
    peers.run()
    assert len(peers.left.of(LivenessAnswered)) == 1
    informational = [d for _, d in peers.sent if d[18] == ExchangeType.INFORMATIONAL]
    assert len(informational) == 2  # R-U-THERE and R-U-THERE-ACK
    assert peers.left.sa.get_timer() == peers.left.sa.expires_at  # only the lifetime is left


def test_dpd_declares_a_silent_peer_dead() -> None:
    peers = Peers.established(retransmit_timeout=1.0, retransmit_tries=2)
    peers.left.sa.check_liveness(peers.now)
    silent = lambda sender, data: sender == "right"  # noqa: E731
    peers.run(silent)
    for _ in range(10):
        peers.advance(1.0)
        peers.run(silent)
    (dead,) = peers.left.of(IkeSaDeleted)
    assert dead.reason == "peer dead: no R-U-THERE-ACK after 3 R-U-THERE (RFC 3706)"
    assert peers.left.of(ChildSaDeleted)[0].reason.startswith("IKE SA deleted: peer dead")
    sent = [d for name, d in peers.sent if name == "left" and d[18] == ExchangeType.INFORMATIONAL]
    assert len(sent) == 3  # each R-U-THERE with its own sequence number (a fresh message)


def test_dpd_delay_checks_a_quiet_peer_by_itself() -> None:
    peers = Peers.established(dpd_delay=30.0)
    assert peers.left.sa.get_timer() == peers.now + 30.0
    peers.advance(30.0)
    peers.run()
    assert peers.left.of(LivenessAnswered) and peers.right.of(LivenessAnswered)


def test_liveness_needs_an_established_sa_and_dpd() -> None:
    peers = Peers.established(nat_traversal=False)
    peers.left.sa.peer_dpd = False
    with pytest.raises(CommandRefused, match="DPD"):
        peers.left.sa.check_liveness(peers.now)
    peers.left.sa.delete(peers.now)
    with pytest.raises(CommandRefused, match="state deleted"):
        peers.left.sa.check_liveness(peers.now)


def test_error_notify_reaches_the_caller() -> None:
    peers = Peers.established()
    peers.right.sa.send_informational(
        [
            NotifyPayload(
                DOI_IPSEC, ProtocolId.IPSEC_ESP, b"\x01\x02\x03\x04", NotifyType.INVALID_SPI
            )
        ]
    )
    peers.run()
    (notify,) = peers.left.of(PeerErrorNotify)
    assert notify.notify == NotifyType.INVALID_SPI
    assert notify.reason.startswith("INVALID_SPI")


def test_informational_is_protected_by_hash1() -> None:
    """An informational message whose HASH(1) does not verify is dropped."""
    peers = Peers.established()
    sa = peers.right.sa
    sa.send_informational(
        [NotifyPayload(DOI_IPSEC, ProtocolId.ISAKMP, b"", NotifyType.INVALID_SPI)]
    )
    ((data, _),) = sa.datagrams_to_send(peers.now)
    tampered = data[:28] + bytes([data[28] ^ 1]) + data[29:]  # garbles HASH(1)
    peers.left.sa.receive_datagram(tampered, ("192.0.2.2", 500), peers.now)
    peers.collect()
    assert peers.left.sa.dropped == 1 and not peers.left.of(PeerErrorNotify)
    # the genuine one still goes through
    peers.left.sa.receive_datagram(data, ("192.0.2.2", 500), peers.now)
    peers.collect()
    assert peers.left.of(PeerErrorNotify)
