"""AH child SAs in IKEv2 (RFC 7296 sections 3.3.1, 3.3.3, 2.17, 1.3.3, 3.11; RFC 4302):
AH proposals on the wire, their selection beside ESP ones, and an AH child negotiated,
rekeyed and deleted between two of our cores on fake time; a NAT refuses AH."""

from __future__ import annotations

import dataclasses

import pytest

from tests.support.ike_peers import LEFT, RIGHT, Peers, left_right
from vpnfleet.agent.ike.config import ChildConfig, IkeConfig, selector
from vpnfleet.agent.ike.constants import IntegId, NotifyType, ProtocolId, TransformType
from vpnfleet.agent.ike.errors import LocalError, ProtocolError
from vpnfleet.agent.ike.events import (
    ChildSaDeleted,
    ChildSaEstablished,
    ChildSaFailed,
    ChildSaRekeyed,
    IkeEvent,
)
from vpnfleet.agent.ike.ike_sa import IkeSa
from vpnfleet.agent.ike.keys import prf_plus
from vpnfleet.agent.ike.payloads import DeletePayload, NoncePayload, NotifyPayload
from vpnfleet.agent.ike.proposals import (
    AhProposal,
    EspProposal,
    accept_child,
    select_child,
)
from vpnfleet.agent.ike.sa_payload import Proposal, SaPayload, Transform
from vpnfleet.agent.ike.states import IkeSaState, Role
from vpnfleet.agent.ike.tasks.child_create import ChildCreate
from vpnfleet.agent.ike.tasks.informational import ChildDelete

SPI = bytes.fromhex("c0ffee01")

# -- proposals -------------------------------------------------------------------------


def test_ah_proposal_on_the_wire_is_protocol_2_with_integ_and_esn_only() -> None:
    """Section 3.3.1: protocol ID 2 (AH), SPI size 4; section 3.3.3: AH takes INTEG and
    ESN (and DH for PFS), never ENCR or PRF."""
    proposal = AhProposal.parse("sha256-esn").to_proposal(1, SPI)
    body = SaPayload([proposal]).serialize_body()
    # Proposal substructure: last(0) reserved length(2) number protocol spi-size count.
    assert body[4:8] == bytes([1, ProtocolId.AH, 4, 2])
    assert body[8:12] == SPI
    assert [(t.type, t.id) for t in proposal.transforms] == [
        (TransformType.INTEG, IntegId.HMAC_SHA2_256_128),
        (TransformType.ESN, 1),
    ]
    (parsed,) = SaPayload.parse_body(body, 0).proposals
    assert AhProposal.from_transforms(parsed.transforms) == [AhProposal.parse("sha256-esn")]


@pytest.mark.parametrize(
    ("text", "integ", "key_length", "icv"),
    [
        ("sha256", IntegId.HMAC_SHA2_256_128, 32, 16),  # RFC 4868 section 2.1.1
        ("sha384", IntegId.HMAC_SHA2_384_192, 48, 24),
        ("sha512", IntegId.HMAC_SHA2_512_256, 64, 32),
        ("sha1", IntegId.HMAC_SHA1_96, 20, 12),  # RFC 2404
        ("aes128gmac", IntegId.AES_128_GMAC, 20, 16),  # RFC 4543: key || 4-octet salt
        ("aes192gmac", IntegId.AES_192_GMAC, 28, 16),
        ("aes256gmac", IntegId.AES_256_GMAC, 36, 16),
    ],
)
def test_ah_integrity_algorithms(text: str, integ: int, key_length: int, icv: int) -> None:
    ah = AhProposal.parse(text)
    assert (ah.integ.id, ah.integ.key_length, ah.integ.icv_length) == (integ, key_length, icv)
    assert str(ah) == text and not ah.esn and ah.dh is None


@pytest.mark.parametrize("text", ["aes256-sha256", "sha256-prfsha256", "esn", "noesn-x25519"])
def test_an_ah_proposal_is_integrity_only(text: str) -> None:
    with pytest.raises(LocalError):
        AhProposal.parse(text)


@pytest.mark.parametrize("text", ["aes256-sha1", "aes256-aes128gmac"])
def test_ah_only_integrity_is_refused_in_esp(text: str) -> None:
    with pytest.raises(LocalError):
        EspProposal.parse(text)


def _esp(number: int) -> Proposal:
    return EspProposal.parse("aes256gcm16").to_proposal(number, SPI)


def _ah(number: int, text: str = "sha256") -> Proposal:
    return AhProposal.parse(text).to_proposal(number, SPI)


def test_responder_takes_its_own_first_protocol_the_peer_offers() -> None:
    """One SA payload may hold proposals of different protocols (section 3.3); our order
    decides (section 2.7, as strongSwan does)."""
    theirs = [_esp(1), _ah(2)]
    ah, esp = AhProposal.parse("sha256"), EspProposal.parse("aes256gcm16")
    assert select_child([ah, esp], theirs) == (theirs[1], ah)
    assert select_child([esp, ah], theirs) == (theirs[0], esp)
    with pytest.raises(ProtocolError, match=r"ours \[aes256gcm16\], theirs \[AH:sha256\]"):
        select_child([esp], [_ah(1)])
    with pytest.raises(ProtocolError, match=r"ours \[AH:sha256\], theirs \[aes256gcm16\]"):
        select_child([ah], [_esp(1)])


def test_an_ah_proposal_with_encryption_is_not_taken() -> None:
    bad = Proposal(
        1,
        ProtocolId.AH,
        SPI,
        [
            Transform.with_key_length(TransformType.ENCR, 20, 256),
            Transform(TransformType.INTEG, IntegId.HMAC_SHA2_256_128),
            Transform(TransformType.ESN, 0),
        ],
    )
    with pytest.raises(ProtocolError, match="NO_PROPOSAL_CHOSEN"):
        select_child([AhProposal.parse("sha256")], [bad])


def test_ah_esn_and_pfs_must_match() -> None:
    with pytest.raises(ProtocolError):
        select_child([AhProposal.parse("sha256-esn")], [_ah(1, "sha256-noesn")])
    with pytest.raises(ProtocolError):
        select_child([AhProposal.parse("sha256-x25519")], [_ah(1, "sha256")])
    mine = AhProposal.parse("sha384-ecp256")
    assert select_child([mine], [_ah(1, "sha384-ecp256")])[1] == mine


def test_initiator_accepts_only_an_ah_proposal_it_offered() -> None:
    ah = AhProposal.parse("sha512")
    chosen = ah.to_proposal(2, SPI)
    assert accept_child([EspProposal.parse("aes256gcm16"), ah], [chosen]) == (chosen, ah)
    with pytest.raises(ProtocolError, match="was not offered"):
        accept_child([EspProposal.parse("aes256gcm16")], [chosen])


# -- two cores ---------------------------------------------------------------------------


def _with_child(config: IkeConfig, esp: tuple[str, ...], ah: tuple[str, ...]) -> IkeConfig:
    child = dataclasses.replace(
        config.child,
        esp_proposals=tuple(EspProposal.parse(e) for e in esp),
        ah_proposals=tuple(AhProposal.parse(a) for a in ah),
    )
    return dataclasses.replace(config, child=child)


def _pair(
    left: tuple[tuple[str, ...], tuple[str, ...]], right: tuple[tuple[str, ...], tuple[str, ...]]
) -> Peers:
    lc, rc = left_right()
    peers = Peers(_with_child(lc, *left), _with_child(rc, *right))
    peers.left.sa.initiate(RIGHT, peers.now)
    peers.run()
    assert peers.left.sa.state is IkeSaState.ESTABLISHED
    assert peers.right.sa.state is IkeSaState.ESTABLISHED
    return peers


def _child(events: list[ChildSaEstablished]) -> ChildSaEstablished:
    (event,) = events
    return event


def test_ah_child_in_ike_auth_carries_protocol_integrity_and_keys() -> None:
    peers = _pair(((), ("sha256",)), ((), ("sha256",)))
    left = _child(peers.left.of(ChildSaEstablished))
    right = _child(peers.right.of(ChildSaEstablished))
    for event in (left, right):
        assert event.protocol is ProtocolId.AH
        assert (event.encr_id, event.encr_key_bits) == (0, 0)
        assert event.encr_key_in == event.encr_key_out == b""
        assert event.integ_id == IntegId.HMAC_SHA2_256_128 and not event.esn
        assert event.proposal == "AH:sha256"
        assert not event.encap
    assert left.spi_in == right.spi_out and left.spi_out == right.spi_in
    # Section 2.17: KEYMAT = prf+(SK_d, Ni | Nr); AH takes no encryption key, so the
    # initiator's integrity key comes first, then the responder's.
    sa = peers.left.sa
    assert sa.keys is not None and sa.proposal is not None
    keymat = prf_plus(sa.proposal.prf, sa.keys.sk_d, sa.ni + sa.nr, 64)
    assert left.integ_key_out == right.integ_key_in == keymat[:32]
    assert left.integ_key_in == right.integ_key_out == keymat[32:]


def test_ah_first_when_both_ends_offer_both() -> None:
    peers = _pair((("aes256gcm16",), ("sha512",)), (("aes256gcm16",), ("sha512",)))
    event = _child(peers.right.of(ChildSaEstablished))
    assert event.protocol is ProtocolId.AH and len(event.integ_key_in) == 64


def test_esp_when_one_end_offers_no_ah() -> None:
    peers = _pair((("aes256gcm16",), ("sha256",)), (("aes256gcm16",), ()))
    for endpoint in (peers.left, peers.right):
        event = _child(endpoint.of(ChildSaEstablished))
        assert event.protocol is ProtocolId.ESP and event.proposal == "aes256gcm16"


def test_ah_only_against_esp_only_fails_the_child() -> None:
    peers = _pair(((), ("sha256",)), (("aes256gcm16",), ()))
    assert not peers.left.of(ChildSaEstablished)
    (failed,) = peers.left.of(ChildSaFailed)
    assert failed.notify == NotifyType.NO_PROPOSAL_CHOSEN


def test_ah_child_rekey_names_protocol_ah_and_keeps_ah() -> None:
    """Section 1.3.3: REKEY_SA carries the SA's protocol (AH, 2) and our inbound SPI;
    the old SA is deleted with a Delete payload of protocol 2 (section 3.11)."""
    peers = _pair(((), ("sha256-x25519", "sha256")), ((), ("sha256-x25519", "sha256")))
    old = _child(peers.left.of(ChildSaEstablished))
    sa = peers.left.sa
    child = sa.children[old.spi_in]
    request = ChildCreate(sa, child.config, child).build_request()
    assert request is not None
    (notify,) = [p for p in request if isinstance(p, NotifyPayload)]
    assert (notify.notify_type, notify.protocol, notify.spi) == (
        NotifyType.REKEY_SA,
        ProtocolId.AH,
        old.spi_in,
    )
    (offer,) = [p for p in request if isinstance(p, SaPayload)]
    assert {p.protocol for p in offer.proposals} == {ProtocolId.AH}

    peers = _pair(((), ("sha256-x25519",)), ((), ("sha256-x25519",)))
    old = _child(peers.left.of(ChildSaEstablished))
    peers.clear_events()
    peers.left.sa.rekey_child(old.spi_in, peers.now)
    peers.run()
    (rekeyed_left,) = peers.left.of(ChildSaRekeyed)
    (rekeyed_right,) = peers.right.of(ChildSaRekeyed)
    assert (rekeyed_left.old_spi_in, rekeyed_left.old_spi_out) == (old.spi_in, old.spi_out)
    new = rekeyed_left.new
    assert new.protocol is ProtocolId.AH and new.proposal == "AH:sha256-x25519"
    assert new.integ_key_out == rekeyed_right.new.integ_key_in
    assert new.integ_key_out != old.integ_key_out
    deleted = {e.spi_in for e in peers.left.of(ChildSaDeleted)}
    assert deleted == {old.spi_in}
    assert {e.spi_in for e in peers.right.of(ChildSaDeleted)} == {old.spi_out}
    assert list(peers.left.sa.children) == [new.spi_in]


def test_ah_child_delete_names_protocol_ah() -> None:
    peers = _pair(((), ("aes256gmac",)), ((), ("aes256gmac",)))
    event = _child(peers.left.of(ChildSaEstablished))
    assert len(event.integ_key_in) == 36  # AES-256 key || 4-octet salt (RFC 4543)
    child = peers.left.sa.children[event.spi_in]
    (payload,) = ChildDelete(peers.left.sa, child, "test").build_request() or []
    assert isinstance(payload, DeletePayload)
    assert (payload.protocol, payload.spis) == (ProtocolId.AH, [event.spi_in])
    peers.clear_events()
    peers2 = _pair(((), ("sha256",)), ((), ("sha256",)))
    event = _child(peers2.left.of(ChildSaEstablished))
    peers2.clear_events()
    peers2.left.sa.delete_child(event.spi_in, peers2.now)
    peers2.run()
    (left_gone,) = peers2.left.of(ChildSaDeleted)
    (right_gone,) = peers2.right.of(ChildSaDeleted)
    assert (left_gone.spi_in, right_gone.spi_in) == (event.spi_in, event.spi_out)
    assert not peers2.left.sa.children and not peers2.right.sa.children


# -- NAT ---------------------------------------------------------------------------------


def _across_nat(
    left: tuple[tuple[str, ...], tuple[str, ...]], right: tuple[tuple[str, ...], tuple[str, ...]]
) -> tuple[IkeSa, IkeSa, list[IkeEvent], list[IkeEvent]]:
    """The initiator fakes a NAT (force_encap, section 2.23), so both ends find one."""
    lc, rc = left_right()
    initiator = IkeSa(
        dataclasses.replace(_with_child(lc, *left), force_encap=True), Role.INITIATOR, LEFT
    )
    responder = IkeSa(_with_child(rc, *right), Role.RESPONDER, RIGHT)
    initiator.initiate(RIGHT, 0.0)
    _exchange(initiator, responder)
    return initiator, responder, _events(initiator), _events(responder)


def _exchange(initiator: IkeSa, responder: IkeSa, now: float = 0.0) -> None:
    for _ in range(6):
        for data, addr in initiator.datagrams_to_send(now):
            responder.receive_datagram(data, (LEFT[0], addr[1]), now)
        for data, addr in responder.datagrams_to_send(now):
            initiator.receive_datagram(data, (RIGHT[0], addr[1]), now)


def _events(sa: IkeSa) -> list[IkeEvent]:
    out = []
    while (e := sa.next_event()) is not None:
        out.append(e)
    return out


def test_nat_refuses_an_ah_only_child_on_both_ends() -> None:
    initiator, responder, i_events, r_events = _across_nat(((), ("sha256",)), ((), ("sha256",)))
    assert initiator.encap and responder.encap
    assert initiator.state is responder.state is IkeSaState.ESTABLISHED  # the IKE SA stays
    for events in (i_events, r_events):
        assert not [e for e in events if isinstance(e, ChildSaEstablished)]
        (failed,) = [e for e in events if isinstance(e, ChildSaFailed)]
        assert failed.reason.startswith("AH cannot cross NAT: "), failed.reason
    assert not initiator.children and not responder.children


def test_nat_falls_back_to_esp_when_both_offer_it() -> None:
    _, _, i_events, r_events = _across_nat(
        (("aes256gcm16",), ("sha256",)), (("aes256gcm16",), ("sha256",))
    )
    for events in (i_events, r_events):
        (event,) = [e for e in events if isinstance(e, ChildSaEstablished)]
        assert event.protocol is ProtocolId.ESP and event.encap


def test_nat_fails_a_new_ah_only_child_without_sending() -> None:
    initiator, _, _, _ = _across_nat((("aes256gcm16",), ()), (("aes256gcm16",), ()))
    db = ChildConfig(
        "db",
        (),
        (selector("10.1.5.0/24"),),
        (selector("10.2.5.0/24"),),
        ah_proposals=(AhProposal.parse("sha256"),),
    )
    initiator.config.__dict__["extra_children"] = (db,)  # frozen: test-only patch
    initiator.create_child("db", 1.0)
    assert initiator.datagrams_to_send(1.0) == []
    (failed,) = _events(initiator)
    assert isinstance(failed, ChildSaFailed)
    assert failed.name == "db" and failed.reason.startswith("AH cannot cross NAT: ")


def test_initiator_never_installs_ah_a_responder_took_across_a_nat() -> None:
    """A responder that picks AH although a NAT was found (not ours): the initiator
    fails the child and installs nothing."""
    initiator, _, _, _ = _across_nat((("aes256gcm16",), ()), (("aes256gcm16",), ()))
    config = ChildConfig(
        "db",
        (),
        (selector("10.1.5.0/24"),),
        (selector("10.2.5.0/24"),),
        ah_proposals=(AhProposal.parse("sha256"),),
    )
    task = ChildCreate(initiator, config)
    offered = task.offer()
    (sa_payload,) = [p for p in offered if isinstance(p, SaPayload)]
    chosen = dataclasses.replace(sa_payload.proposals[0], spi=SPI)
    before = dict(initiator.children)
    reply = [SaPayload([chosen]) if isinstance(p, SaPayload) else p for p in offered]
    reply = [NoncePayload(bytes(32)) if isinstance(p, NoncePayload) else p for p in reply]
    task.process_response(None, reply)  # type: ignore[arg-type]  # the message is unused
    (failed,) = _events(initiator)
    assert isinstance(failed, ChildSaFailed)
    assert failed.reason.startswith("AH cannot cross NAT: ")
    assert failed.reason.endswith("the peer chose AH")
    assert initiator.children == before
