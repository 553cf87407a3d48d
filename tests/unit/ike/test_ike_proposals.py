"""Proposal notation, selection (RFC 7296 section 2.7), TS narrowing (section 2.9),
and the IKE SA state table."""

from __future__ import annotations

import ipaddress

import pytest

from vpnfleet.agent.ike.config import Identity, selector
from vpnfleet.agent.ike.constants import (
    DhGroup,
    EncrId,
    EsnId,
    IdType,
    IntegId,
    PrfId,
    ProtocolId,
    TransformType,
)
from vpnfleet.agent.ike.errors import LocalError
from vpnfleet.agent.ike.payloads import TrafficSelector
from vpnfleet.agent.ike.proposals import (
    EspProposal,
    IkeProposal,
    NoProposalChosen,
    accept_child,
    accept_ike,
    dh_name,
    render_proposal,
    select_child,
    select_ike,
)
from vpnfleet.agent.ike.sa_payload import Proposal, Transform
from vpnfleet.agent.ike.states import TRANSITIONS, IkeSaInput, IkeSaState, Role, next_state
from vpnfleet.agent.ike.traffic_selectors import (
    TsUnacceptable,
    check_subset,
    format_selector,
    intersect,
    narrow,
)


@pytest.mark.parametrize(
    ("text", "encr", "bits", "integ", "prf", "dh"),
    [
        (
            "aes256gcm16-prfsha384-x25519",
            EncrId.AES_GCM_16,
            256,
            None,
            PrfId.HMAC_SHA2_384,
            DhGroup.CURVE25519,
        ),
        (
            "aes128-sha256-modp2048",
            EncrId.AES_CBC,
            128,
            IntegId.HMAC_SHA2_256_128,
            PrfId.HMAC_SHA2_256,
            DhGroup.MODP_2048,
        ),
        (
            "chacha20poly1305-prfsha256-ecp256",
            EncrId.CHACHA20_POLY1305,
            256,
            None,
            PrfId.HMAC_SHA2_256,
            DhGroup.ECP_256,
        ),
        (
            "AES256-SHA512-prfsha384-ecp384",
            EncrId.AES_CBC,
            256,
            IntegId.HMAC_SHA2_512_256,
            PrfId.HMAC_SHA2_384,
            DhGroup.ECP_384,
        ),
    ],
)
def test_ike_proposal_strongswan_notation(
    text: str, encr: int, bits: int, integ: int | None, prf: int, dh: int
) -> None:
    p = IkeProposal.parse(text)
    assert (p.encr.id, p.encr.key_bits, p.prf.id, p.dh) == (encr, bits, prf, dh)
    assert (p.integ.id if p.integ else None) == integ
    assert IkeProposal.parse(str(p)) == p


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("", "empty proposal"),
        ("aes128-sha256-modp1024", "unknown or repeated algorithm 'modp1024'"),
        ("aes128-aes256-sha256-x25519", "unknown or repeated algorithm 'aes256'"),
        ("prfsha256-x25519", "needs an encryption algorithm and a DH group"),
        ("aes128-sha256", "needs an encryption algorithm and a DH group"),
        ("aes256gcm16-sha256-x25519", "takes no integrity algorithm"),
        ("aes128-prfsha256-x25519", "needs an integrity algorithm"),
        ("aes256gcm16-x25519", "an AEAD proposal needs a PRF"),
    ],
)
def test_bad_ike_proposals_are_named(text: str, needle: str) -> None:
    with pytest.raises(LocalError, match=needle):
        IkeProposal.parse(text)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("aes128", "needs an integrity algorithm"),
        ("aes256gcm16-sha256", "takes no integrity algorithm"),
        ("sha256", "needs an encryption algorithm"),
        ("aes128-sha256-prfsha256", "unknown or repeated algorithm 'prfsha256'"),
        ("aes128-sha256-x25519-ecp256", "unknown or repeated algorithm 'ecp256'"),
    ],
)
def test_bad_esp_proposals_are_named(text: str, needle: str) -> None:
    with pytest.raises(LocalError, match=needle):
        EspProposal.parse(text)


def test_esp_proposal_with_a_pfs_group() -> None:
    """RFC 7296 section 1.3.1: a DH transform in a CREATE_CHILD_SA proposal asks for PFS."""
    pfs = EspProposal.parse("aes128gcm16-x25519")
    assert str(pfs) == "aes128gcm16-x25519" and pfs.dh == 31
    transforms = {(int(t.type), t.id) for t in pfs.to_proposal(1, b"\x01\x02\x03\x04").transforms}
    assert (4, 31) in transforms
    assert pfs.without_pfs() == EspProposal.parse("aes128gcm16")
    # A peer offering PFS does not match a proposal without it, and vice versa.
    plain = EspProposal.parse("aes128gcm16")
    with pytest.raises(NoProposalChosen):
        select_child([plain], [pfs.to_proposal(1, b"\x01\x02\x03\x04")])
    with pytest.raises(NoProposalChosen):
        select_child([pfs], [plain.to_proposal(1, b"\x01\x02\x03\x04")])
    _chosen, mine = select_child([pfs], [pfs.to_proposal(1, b"\x01\x02\x03\x04")])
    assert mine == pfs


def test_ike_proposal_wire_form() -> None:
    prop = IkeProposal.parse("aes256gcm16-prfsha384-x25519").to_proposal(1)
    assert [(t.type, t.id, t.key_length) for t in prop.transforms] == [
        (TransformType.ENCR, EncrId.AES_GCM_16, 256),
        (TransformType.PRF, PrfId.HMAC_SHA2_384, None),
        (TransformType.DH, DhGroup.CURVE25519, None),
    ]
    # RFC 7634 section 2: ChaCha20-Poly1305 carries no Key Length attribute.
    chacha = IkeProposal.parse("chacha20poly1305-prfsha256-x25519").to_proposal(1)
    assert chacha.transforms[0].attributes == []


def test_select_prefers_our_order_and_echoes_their_number() -> None:
    ours = [
        IkeProposal.parse("aes256gcm16-prfsha384-x25519"),
        IkeProposal.parse("aes128-sha256-modp2048"),
    ]
    theirs = [ours[1].to_proposal(1), ours[0].to_proposal(2)]
    assert select_ike(ours, theirs) == (2, ours[0])


def test_select_accepts_a_proposal_listing_several_transforms_per_type() -> None:
    ours = [IkeProposal.parse("aes128-sha256-modp2048")]
    theirs = Proposal(
        1,
        ProtocolId.IKE,
        b"",
        [
            Transform.with_key_length(TransformType.ENCR, EncrId.AES_CBC, 256),
            Transform.with_key_length(TransformType.ENCR, EncrId.AES_CBC, 128),
            Transform(TransformType.PRF, PrfId.HMAC_SHA2_512),
            Transform(TransformType.PRF, PrfId.HMAC_SHA2_256),
            Transform(TransformType.INTEG, IntegId.HMAC_SHA2_256_128),
            Transform(TransformType.DH, DhGroup.CURVE25519),
            Transform(TransformType.DH, DhGroup.MODP_2048),
        ],
    )
    assert select_ike(ours, [theirs]) == (1, ours[0])


def test_key_length_must_match() -> None:
    ours = [IkeProposal.parse("aes128-sha256-modp2048")]
    theirs = [IkeProposal.parse("aes256-sha256-modp2048").to_proposal(1)]
    with pytest.raises(NoProposalChosen) as info:
        select_ike(ours, theirs)
    assert str(info.value) == (
        "NO_PROPOSAL_CHOSEN: ours [aes128-sha256-modp2048], theirs [aes256-sha256-modp2048]"
    )


def test_unknown_transform_type_skips_the_proposal() -> None:
    """Section 3.3.6: a proposal with a transform type we do not know is not chosen."""
    mine = IkeProposal.parse("aes256gcm16-prfsha384-x25519")
    odd = mine.to_proposal(1)
    odd.transforms.append(Transform(9, 1))
    with pytest.raises(NoProposalChosen, match=r"theirs \[aes256gcm16-prfsha384-x25519-TYPE9_1\]"):
        select_ike([mine], [odd])


def test_initiator_refuses_a_choice_it_did_not_offer() -> None:
    ours = [IkeProposal.parse("aes256gcm16-prfsha384-x25519")]
    with pytest.raises(NoProposalChosen, match="responder's choice"):
        accept_ike(ours, [IkeProposal.parse("aes128-sha256-modp2048").to_proposal(1)])
    with pytest.raises(NoProposalChosen):
        accept_ike(ours, [ours[0].to_proposal(1), ours[0].to_proposal(2)])
    assert accept_ike(ours, [ours[0].to_proposal(1)]) == ours[0]


def test_esp_selection_and_esn() -> None:
    ours = [EspProposal.parse("aes256gcm16-esn"), EspProposal.parse("aes128-sha256")]
    theirs = [EspProposal.parse("aes128-sha256").to_proposal(1, b"\x00\x00\x00\x07")]
    chosen, esp = select_child(ours, theirs)
    assert esp == ours[1] and chosen.spi == b"\x00\x00\x00\x07"
    with pytest.raises(
        NoProposalChosen,
        match=r"^NO_PROPOSAL_CHOSEN: ours \[aes256gcm16-esn\], theirs \[aes256gcm16\]$",
    ):
        select_child(
            [ours[0]], [EspProposal.parse("aes256gcm16").to_proposal(1, b"\x00\x00\x00\x01")]
        )
    assert accept_child(ours, theirs)[1] == ours[1]


def test_esp_proposal_needs_a_four_byte_spi() -> None:
    ours = [EspProposal.parse("aes128-sha256")]
    with pytest.raises(NoProposalChosen):
        select_child(ours, [ours[0].to_proposal(1, b"\x01\x02")])


V4 = ipaddress.IPv4Address


def test_intersection_of_ranges_protocols_and_ports() -> None:
    a = TrafficSelector(V4("10.0.0.0"), V4("10.0.0.255"), 0, 0, 65535)
    b = TrafficSelector(V4("10.0.0.128"), V4("10.0.1.0"), 17, 500, 4500)
    assert intersect(a, b) == TrafficSelector(V4("10.0.0.128"), V4("10.0.0.255"), 17, 500, 4500)
    assert intersect(b, TrafficSelector(V4("10.0.0.0"), V4("10.0.0.255"), 6)) is None
    assert intersect(a, selector("2001:db8::/32")) is None
    assert intersect(a, selector("10.0.1.0/24")) is None


def test_narrowing_keeps_the_proposers_order() -> None:
    ours = [selector("10.0.0.0/8")]
    theirs = [selector("10.1.0.0/16"), selector("192.168.0.0/16"), selector("0.0.0.0/0")]
    assert narrow(ours, theirs) == [selector("10.1.0.0/16"), selector("10.0.0.0/8")]


def test_narrowing_to_nothing_is_ts_unacceptable() -> None:
    with pytest.raises(TsUnacceptable) as info:
        narrow([selector("10.0.0.0/8")], [selector("192.168.1.0/24", 6, (80, 80))])
    assert str(info.value) == "TS_UNACCEPTABLE: ours [10.0.0.0/8], theirs [192.168.1.0/24[6/80]]"


def test_initiator_checks_the_answer_is_a_subset() -> None:
    check_subset([selector("10.0.0.0/8")], [selector("10.1.0.0/16")])
    with pytest.raises(TsUnacceptable):
        check_subset([selector("10.1.0.0/16")], [selector("10.0.0.0/8")])
    with pytest.raises(TsUnacceptable):
        check_subset([selector("10.1.0.0/16")], [])


def test_selector_format() -> None:
    assert format_selector(selector("10.1.0.0/16")) == "10.1.0.0/16"
    ts = TrafficSelector(V4("10.0.0.1"), V4("10.0.0.9"), 17, 500, 4500)
    assert format_selector(ts) == "10.0.0.1-10.0.0.9[17/500-4500]"


def test_identity_parsing() -> None:
    assert Identity.parse("192.0.2.1") == Identity(IdType.ID_IPV4_ADDR, bytes([192, 0, 2, 1]))
    assert Identity.parse("2001:db8::1").id_type == IdType.ID_IPV6_ADDR
    assert Identity.parse("vpn@example.net").id_type == IdType.ID_RFC822_ADDR
    assert Identity.parse("gw.example.net") == Identity(IdType.ID_FQDN, b"gw.example.net")
    assert str(Identity.parse("2001:db8::1")) == "2001:db8::1"
    with pytest.raises(LocalError, match="empty identity"):
        Identity.parse("")


def test_every_state_can_fail_except_the_final_ones() -> None:
    for role in Role:
        for state in IkeSaState:
            if state in (IkeSaState.FAILED, IkeSaState.DELETED):
                assert (role, state, IkeSaInput.FAILURE) not in TRANSITIONS
            else:
                assert next_state(role, state, IkeSaInput.FAILURE) is IkeSaState.FAILED


def test_missing_transition_names_role_state_and_input() -> None:
    with pytest.raises(
        LocalError, match="responder IKE SA in state created cannot take input initiate"
    ):
        next_state(Role.RESPONDER, IkeSaState.CREATED, IkeSaInput.INITIATE)


# ---------------------------------------------------------------- one notation


@pytest.mark.parametrize(
    "text",
    [
        "aes256gcm16-prfsha384-x25519",
        "aes128gcm16-prfsha256-ecp256",
        "chacha20poly1305-prfsha512-ecp384",
        "aes128-sha256-modp2048",
        "aes256-sha512-ecp384",
        "aes256-sha384-prfsha256-x25519",  # a PRF other than the integrity's own stays
    ],
)
def test_ike_proposal_round_trips_in_strongswan_notation(text: str) -> None:
    proposal = IkeProposal.parse(text)
    assert str(proposal) == text
    assert render_proposal(proposal.to_proposal(1)) == text
    assert IkeProposal.parse(str(proposal)) == proposal


@pytest.mark.parametrize(
    "text",
    [
        "aes256gcm16",
        "aes128gcm16-x25519",
        "aes256-sha256",
        "aes128-sha384-modp2048",
        "aes256gcm16-esn",
        "aes128-sha256-ecp256-esn",
        "chacha20poly1305-ecp384",
    ],
)
def test_esp_proposal_round_trips_in_strongswan_notation(text: str) -> None:
    proposal = EspProposal.parse(text)
    assert str(proposal) == text
    assert render_proposal(proposal.to_proposal(1, bytes(4))) == text
    assert EspProposal.parse(str(proposal)) == proposal


@pytest.mark.parametrize(
    ("kind", "written", "shown"),
    [
        # The defaults are not written, as in swanctl.conf: no ESN, the PRF of the hash.
        (EspProposal, "aes256gcm16-noesn", "aes256gcm16"),
        (EspProposal, "sha256-aes128-noesn", "aes128-sha256"),
        (IkeProposal, "aes128-sha256-prfsha256-modp2048", "aes128-sha256-modp2048"),
        (IkeProposal, "x25519-aes128gcm16-prfsha256", "aes128gcm16-prfsha256-x25519"),
        (IkeProposal, "AES256-SHA256-CURVE25519", "aes256-sha256-x25519"),
    ],
)
def test_equivalent_spellings_are_shown_one_way(
    kind: type[IkeProposal | EspProposal], written: str, shown: str
) -> None:
    assert str(kind.parse(written)) == shown


def test_a_peers_offer_is_shown_in_the_same_notation() -> None:
    """Several transforms of a type are alternatives, written one after the other;
    algorithms this core does not implement keep strongSwan's keyword."""
    ike = Proposal(
        1,
        ProtocolId.IKE,
        b"",
        [
            Transform.with_key_length(TransformType.ENCR, EncrId.AES_CBC, 192),
            Transform.with_key_length(TransformType.ENCR, EncrId.AES_CBC, 256),
            Transform(TransformType.INTEG, IntegId.HMAC_SHA1_96),
            Transform(TransformType.PRF, PrfId.HMAC_SHA1),
            Transform(TransformType.DH, DhGroup.MODP_1024),
            Transform(TransformType.DH, DhGroup.CURVE448),
        ],
    )
    assert render_proposal(ike) == "aes192-aes256-sha1-prfsha1-modp1024-x448"
    esp = Proposal(
        1,
        ProtocolId.ESP,
        bytes(4),
        [
            Transform.with_key_length(TransformType.ENCR, EncrId.AES_GCM_16, 128),
            Transform(TransformType.INTEG, IntegId.NONE),
            Transform(TransformType.DH, DhGroup.NONE),
            Transform(TransformType.ESN, EsnId.ESN),
            Transform(TransformType.ESN, EsnId.NO_ESN),
            Transform(TransformType.ENCR, 1031),
        ],
    )
    assert render_proposal(esp) == "aes128gcm16-ENCR_1031-esn-noesn"
    assert dh_name(DhGroup.ECP_256) == "ecp256" and dh_name(99) == "DH_99"


def test_no_proposal_chosen_names_both_sides_in_one_notation() -> None:
    ours = [EspProposal.parse("aes128-sha256"), EspProposal.parse("aes256gcm16-esn")]
    theirs = [EspProposal.parse("aes256-sha256").to_proposal(1, bytes(4))]
    with pytest.raises(NoProposalChosen) as info:
        select_child(ours, theirs)
    assert str(info.value) == (
        "NO_PROPOSAL_CHOSEN: ours [aes128-sha256, aes256gcm16-esn], theirs [aes256-sha256]"
    )
