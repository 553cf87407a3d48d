"""Lifetimes between two IkeV1Sa on fake time: the phase 1 LIFE_DURATION (RFC 2409
Appendix A) gives ``expires_at`` and ``rekey_due``, a responder keeping the SA for
less says so with RESPONDER-LIFETIME (RFC 2407 section 4.6.3.1) and the SA is deleted
at expiry; Quick mode carries seconds and kilobytes (RFC 2407 section 4.5)."""

from __future__ import annotations

import pytest

from tests.support.ike_v1_peers import START, Peers, left_right
from vpnfleet.agent.ike.errors import CommandRefused, LocalError
from vpnfleet.agent.ike.events import ChildSaDeleted, ChildSaEstablished, IkeSaDeleted
from vpnfleet.agent.ike.proposals import EspProposal
from vpnfleet.agent.ike.v1.attributes import Attribute, encode_attributes
from vpnfleet.agent.ike.v1.constants import (
    DOI_IPSEC,
    Encapsulation,
    ExchangeType,
    LifeType,
    NotifyType,
    P1Attr,
    P2Attr,
    ProtocolId,
)
from vpnfleet.agent.ike.v1.payloads import NotifyPayload
from vpnfleet.agent.ike.v1.proposals import Lifetimes, child_sa, lifetimes
from vpnfleet.agent.ike.v1.sa import REKEY_MARGIN, V1State


def _established(**kw: object) -> Peers:
    peers = Peers(*left_right(**kw))  # type: ignore[arg-type]
    peers.start()
    peers.run()
    assert peers.left.sa.state is peers.right.sa.state is V1State.ESTABLISHED
    return peers


def _informational(peers: Peers, sender: str) -> int:
    return sum(
        1 for name, d in peers.sent if name == sender and d[18] == ExchangeType.INFORMATIONAL
    )


def test_expiry_and_rekey_time_follow_the_lifetime() -> None:
    peers = _established(ike_lifetime=1000)
    for sa in (peers.left.sa, peers.right.sa):
        assert sa.lifetime == 1000
        assert sa.established_at == START
        assert sa.expires_at == START + 1000
        assert sa.rekey_due == pytest.approx(START + 1000 * (1 - REKEY_MARGIN))
    assert _informational(peers, "right") == 0  # same lifetime: nothing to say


def test_no_expiry_before_phase_1_is_up() -> None:
    peers = Peers(*left_right())
    assert peers.left.sa.expires_at is None and peers.left.sa.rekey_due is None


def test_responder_takes_a_shorter_proposed_lifetime() -> None:
    peers = _established(left={"ike_lifetime": 600})
    assert peers.left.sa.lifetime == peers.right.sa.lifetime == 600
    assert _informational(peers, "right") == 0


def test_responder_lifetime_lowers_the_initiators() -> None:
    """RFC 2407 section 4.6.3.1: the responder keeps the SA for less than proposed
    and tells the initiator, which ends it no later."""
    peers = _established(right={"ike_lifetime": 600})
    assert peers.right.sa.lifetime == 600
    assert _informational(peers, "right") == 1
    assert peers.left.sa.lifetime == 600
    assert peers.left.sa.expires_at == peers.right.sa.expires_at == START + 600
    assert peers.left.sa.dropped == 0


def test_responder_lifetime_never_lengthens() -> None:
    peers = _established(ike_lifetime=600)
    sa = peers.left.sa
    for kinds, seconds in (((P1Attr.LIFE_TYPE, P1Attr.LIFE_DURATION), 5000), ((1, 2), 300)):
        data = encode_attributes(
            [Attribute(kinds[0], LifeType.SECONDS), Attribute.variable(kinds[1], seconds)]
        )
        notify = NotifyPayload(
            DOI_IPSEC,
            ProtocolId.ISAKMP,
            sa.icookie + sa.rcookie,
            NotifyType.RESPONDER_LIFETIME,
            data,
        )
        peers.right.sa.send_informational([notify])
        peers.run()
    # 5000 s was ignored (longer); 300 s with the IPsec DOI's attribute numbers taken.
    assert sa.lifetime == 300 and sa.dropped == 0


def test_the_sa_is_deleted_at_expiry() -> None:
    peers = _established(ike_lifetime=1000)
    assert peers.left.sa.get_timer() == START + 1000
    peers.advance(999)
    peers.run()
    assert not peers.left.of(IkeSaDeleted)
    peers.advance(1)
    peers.run()
    for endpoint in (peers.left, peers.right):
        (deleted,) = endpoint.of(IkeSaDeleted)
        assert deleted.reason.startswith("expired: phase 1 lifetime of 1000 s is over") or (
            deleted.reason == "deleted by peer"
        )
        assert endpoint.of(ChildSaDeleted)
        assert endpoint.sa.is_closed and endpoint.sa.get_timer() is None
    assert peers.left.of(IkeSaDeleted)[0].reason.startswith("expired")


def test_a_deleted_sa_does_not_expire() -> None:
    peers = _established(ike_lifetime=1000)
    peers.left.sa.delete(peers.now)
    peers.run()
    peers.advance(2000)
    assert [e.reason for e in peers.left.of(IkeSaDeleted)] == ["deleted by us"]


# -- Quick mode (RFC 2407 section 4.5) -----------------------------------------------


def test_lifetimes_pair_each_type_with_its_duration() -> None:
    attributes = (
        Attribute(P2Attr.LIFE_TYPE, LifeType.SECONDS),
        Attribute.variable(P2Attr.LIFE_DURATION, 3600),
        Attribute(P2Attr.LIFE_TYPE, LifeType.KILOBYTES),
        Attribute.variable(P2Attr.LIFE_DURATION, 4608000),
    )
    assert lifetimes(attributes, P2Attr.LIFE_TYPE, P2Attr.LIFE_DURATION) == Lifetimes(3600, 4608000)
    kb_only = attributes[2:]
    assert lifetimes(kb_only, P2Attr.LIFE_TYPE, P2Attr.LIFE_DURATION) == Lifetimes(None, 4608000)
    assert lifetimes((), P2Attr.LIFE_TYPE, P2Attr.LIFE_DURATION) == Lifetimes()


def test_quick_mode_offer_carries_kilobytes() -> None:
    sa = child_sa([EspProposal.parse("aes128-sha256")], bytes(4), Encapsulation.TUNNEL, 3600, 1000)
    (transform,) = sa.proposals[0].transforms
    kinds = [(a.type, a.as_int()) for a in transform.attributes[:4]]
    assert kinds == [
        (P2Attr.LIFE_TYPE, LifeType.SECONDS),
        (P2Attr.LIFE_DURATION, 3600),
        (P2Attr.LIFE_TYPE, LifeType.KILOBYTES),
        (P2Attr.LIFE_DURATION, 1000),
    ]


@pytest.mark.parametrize(
    ("left", "right", "expected"),
    [
        ({}, {}, Lifetimes(3600, None)),
        ({"child_lifetime_kb": 1000}, {}, Lifetimes(3600, 1000)),
        ({"child_lifetime_kb": 1000}, {"child_lifetime_kb": 500}, Lifetimes(3600, 500)),
        ({}, {"child_lifetime_kb": 500}, Lifetimes(3600, 500)),
        ({"child_lifetime": 600}, {}, Lifetimes(600, None)),
        ({}, {"child_lifetime": 600}, Lifetimes(600, None)),
    ],
    ids=["defaults", "kb-offered", "kb-lowered", "kb-imposed", "shorter-offer", "s-lowered"],
)
def test_child_lifetimes_agree(
    left: dict[str, object], right: dict[str, object], expected: Lifetimes
) -> None:
    """The initiator learns a lower value only from RESPONDER-LIFETIME in message 2."""
    peers = _established(left=left, right=right)
    (ours,) = peers.left.of(ChildSaEstablished)
    (theirs,) = peers.right.of(ChildSaEstablished)
    assert peers.left.sa.child_lifetime(ours.spi_in) == expected
    assert peers.right.sa.child_lifetime(theirs.spi_in) == expected


def test_child_lifetime_of_an_unknown_spi_is_refused() -> None:
    peers = _established()
    with pytest.raises(CommandRefused, match="no child SA 00000000"):
        peers.left.sa.child_lifetime(bytes(4))


def test_kilobyte_lifetime_must_be_positive() -> None:
    with pytest.raises(LocalError, match="child_lifetime_kb must be positive"):
        left_right(child_lifetime_kb=0)
