"""AH in IKEv1 Quick mode (RFC 2407 sections 4.4.1, 4.4.3, 4.5; RFC 2409 section 5.5):
PROTO_IPSEC_AH proposals with AH transform IDs and the Authentication Algorithm
attribute, selection beside ESP, KEYMAT with protocol 2, rekey and Delete of an AH SA
between two of our cores on fake time, and NAT-D refusing AH."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from tests.support.ike_v1_peers import Peers, left_right
from vpnfleet.agent.ike.constants import IntegId
from vpnfleet.agent.ike.constants import ProtocolId as IkeProtocolId
from vpnfleet.agent.ike.errors import ProtocolError
from vpnfleet.agent.ike.events import (
    ChildSaDeleted,
    ChildSaEstablished,
    ChildSaFailed,
    ChildSaRekeyed,
)
from vpnfleet.agent.ike.proposals import AhProposal, EspProposal
from vpnfleet.agent.ike.v1 import quick
from vpnfleet.agent.ike.v1.attributes import find_attribute
from vpnfleet.agent.ike.v1.config import IkeV1Config
from vpnfleet.agent.ike.v1.constants import (
    AhTransform,
    AuthAlg,
    Encapsulation,
    P2Attr,
    ProtocolId,
)
from vpnfleet.agent.ike.v1.payloads import SaPayload
from vpnfleet.agent.ike.v1.proposals import accept_child, answer_child, child_sa, select_child

SPI = bytes.fromhex("0badf00d")


def test_offer_holds_an_ah_proposal_then_an_esp_one() -> None:
    """RFC 2408 section 4.2: proposals of different numbers are alternatives."""
    offer = child_sa(
        [
            AhProposal.parse("sha256"),
            AhProposal.parse("aes128gmac"),
            EspProposal.parse("aes256gcm16"),
        ],
        SPI,
        Encapsulation.TUNNEL,
        3600,
    )
    (parsed,) = [SaPayload.parse_body(offer.encode_body(), 0)]
    ah, esp = parsed.proposals
    assert (ah.number, ah.protocol, ah.spi) == (1, ProtocolId.IPSEC_AH, SPI)
    assert (esp.number, esp.protocol, esp.spi) == (2, ProtocolId.IPSEC_ESP, SPI)
    # RFC 2407 section 4.4.3 transform IDs, section 4.5 Authentication Algorithm values.
    assert [t.id for t in ah.transforms] == [AhTransform.SHA2_256, AhTransform.AES_128_GMAC]
    algs = [find_attribute(t.attributes, P2Attr.AUTH_ALG) for t in ah.transforms]
    assert [a.as_int() for a in algs if a is not None] == [
        AuthAlg.HMAC_SHA2_256,
        AuthAlg.AES_128_GMAC,
    ]
    assert all(find_attribute(t.attributes, P2Attr.KEY_LENGTH) is None for t in ah.transforms)


def test_selection_takes_our_first_protocol_the_peer_offers() -> None:
    ah, esp = AhProposal.parse("sha512"), EspProposal.parse("aes256gcm16")
    offer = child_sa([esp, ah], SPI, Encapsulation.TUNNEL, 3600)
    choice = select_child([ah, esp], offer, Encapsulation.TUNNEL)
    assert (choice.proposal, choice.protocol, choice.proposal_number) == (
        ah,
        ProtocolId.IPSEC_AH,
        1,
    )
    assert select_child([esp, ah], offer, Encapsulation.TUNNEL).proposal == esp
    answer = answer_child(offer, choice, bytes(4))
    (only,) = answer.proposals
    assert only.protocol == ProtocolId.IPSEC_AH
    assert accept_child([ah], answer, Encapsulation.TUNNEL).proposal == ah
    with pytest.raises(ProtocolError, match=r"ours \[aes256gcm16\], theirs \[AH:sha512\]"):
        accept_child([esp], answer, Encapsulation.TUNNEL)


def test_ah_proposals_that_differ_are_named_in_the_refusal() -> None:
    offer = child_sa([AhProposal.parse("sha256")], SPI, Encapsulation.TUNNEL, 3600)
    with pytest.raises(ProtocolError, match=r"ours \[AH:sha384-tunnel\], theirs \[AH:sha256\]"):
        select_child([AhProposal.parse("sha384")], offer, Encapsulation.TUNNEL)


def _with_ah(config: IkeV1Config, esp: tuple[str, ...], ah: tuple[str, ...]) -> IkeV1Config:
    child = dataclasses.replace(
        config.child,
        esp_proposals=tuple(EspProposal.parse(e) for e in esp),
        ah_proposals=tuple(AhProposal.parse(a) for a in ah),
    )
    return dataclasses.replace(config, child=child)


def _peers(
    ours: tuple[tuple[str, ...], tuple[str, ...]],
    theirs: tuple[tuple[str, ...], tuple[str, ...]],
    **kw: Any,
) -> Peers:
    """Left's and right's (ESP, AH) proposals; ``kw`` as ``left_right`` takes them."""
    lc, rc = left_right(**kw)
    peers = Peers(_with_ah(lc, *ours), _with_ah(rc, *theirs))
    peers.start()
    peers.run()
    return peers


def test_ah_quick_mode_keys_with_protocol_ah(monkeypatch: pytest.MonkeyPatch) -> None:
    """RFC 2409 section 5.5: KEYMAT = prf(SKEYID_d, protocol | SPI | Ni_b | Nr_b) with
    the negotiated protocol, 2 for AH; AH takes the integrity key alone."""
    protocols: list[int] = []
    real = quick.keymat

    def spy(prf: Any, skeyid_d: bytes, protocol: int, *rest: Any) -> bytes:
        protocols.append(protocol)
        return real(prf, skeyid_d, protocol, *rest)

    monkeypatch.setattr(quick, "keymat", spy)
    peers = _peers(((), ("sha256",)), ((), ("sha256",)))
    (left,) = peers.left.of(ChildSaEstablished)
    (right,) = peers.right.of(ChildSaEstablished)
    assert protocols == [ProtocolId.IPSEC_AH] * 4  # two directions on each side
    for event in (left, right):
        assert event.protocol is IkeProtocolId.AH
        assert (event.encr_id, event.encr_key_bits, event.encr_key_in) == (0, 0, b"")
        assert event.integ_id == IntegId.HMAC_SHA2_256_128 and len(event.integ_key_in) == 32
        assert event.proposal == "AH:sha256"
    assert (left.spi_in, left.spi_out) == (right.spi_out, right.spi_in)
    assert left.integ_key_out == right.integ_key_in != left.integ_key_in == right.integ_key_out


def test_esp_when_the_responder_has_no_ah() -> None:
    peers = _peers((("aes128-sha256",), ("sha256",)), (("aes128-sha256",), ()))
    (event,) = peers.right.of(ChildSaEstablished)
    assert event.protocol is IkeProtocolId.ESP and event.proposal == "aes128-sha256"


def test_ah_child_rekey_and_delete_name_protocol_ah() -> None:
    peers = _peers(((), ("sha512-modp2048",)), ((), ("sha512-modp2048",)))
    (old,) = peers.left.of(ChildSaEstablished)
    peers.left.sa.rekey_child(old.spi_in, peers.now)
    peers.run()
    (ours,) = peers.left.of(ChildSaRekeyed)
    (theirs,) = peers.right.of(ChildSaRekeyed)
    assert ours.new.protocol is theirs.new.protocol is IkeProtocolId.AH
    assert ours.new.integ_key_out == theirs.new.integ_key_in != old.integ_key_out
    # The Delete for the old SA names PROTO_IPSEC_AH: the responder finds its SA by it.
    for endpoint in (peers.left, peers.right):
        (deleted,) = endpoint.of(ChildSaDeleted)
        assert deleted.reason == "rekeyed"
    new = ours.new
    peers.left.sa.delete_child(new.spi_in, peers.now)
    peers.run()
    gone = [e.spi_in for e in peers.right.of(ChildSaDeleted)]
    assert gone[-1] == new.spi_out and not peers.right.sa.children


def test_nat_d_refuses_an_ah_only_child() -> None:
    peers = _peers(((), ("sha256",)), ((), ("sha256",)), left={"force_encap": True})
    assert not peers.left.of(ChildSaEstablished) and not peers.right.of(ChildSaEstablished)
    (failed,) = peers.left.of(ChildSaFailed)
    assert failed.reason.startswith("AH cannot cross NAT: "), failed.reason
    assert not peers.left.sa.children and not peers.right.sa.children


def test_nat_d_makes_the_responder_refuse_ah_and_take_esp() -> None:
    """The initiator offers AH and ESP: across the NAT both ends drop AH."""
    peers = _peers(
        (("aes128-sha256",), ("sha256",)),
        (("aes128-sha256",), ("sha256",)),
        left={"force_encap": True},
    )
    for endpoint in (peers.left, peers.right):
        (event,) = endpoint.of(ChildSaEstablished)
        assert event.protocol is IkeProtocolId.ESP and event.encap


def test_the_responder_refuses_ah_it_alone_would_take_across_a_nat() -> None:
    """The responder, AH only, behind the NAT: it refuses whatever comes."""
    peers = _peers(
        (("aes128-sha256",), ("sha256",)),
        ((), ("sha256",)),
        left={"force_encap": True},
    )
    (failed,) = peers.right.of(ChildSaFailed)
    assert failed.reason.startswith("AH cannot cross NAT: "), failed.reason
    assert not peers.right.sa.children
