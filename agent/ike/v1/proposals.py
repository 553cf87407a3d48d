"""IKEv1 SA payloads from our proposals, and the choice among a peer's.

Phase 1 (RFC 2409 Appendix A, section 5): one ISAKMP proposal whose KEY_IKE
transforms each carry a cipher, key length, hash, authentication method, group and
lifetime; the responder answers with the one transform it chose, unchanged. Quick
mode (RFC 2407 sections 4.4.4 and 4.5): one ESP proposal with our SPI whose transforms
are the ESP transform IDs with Auth Algorithm, Key Length, Group Description (PFS),
Encapsulation Mode and SA lifetime attributes.

Our configured order wins (strongSwan's default); a failure names ours and theirs in
strongSwan's notation, as the IKEv2 NO_PROPOSAL_CHOSEN text does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..config import Mode
from ..constants import EncrId, IntegId, TransformType
from ..errors import ProtocolError
from ..proposals import EspProposal, NoProposalChosen
from ..transforms import integ_for, transform_keyword
from .attributes import Attribute, find_attribute
from .config import Phase1Proposal
from .constants import (
    DOI_IPSEC,
    SIT_IDENTITY_ONLY,
    AuthAlg,
    AuthMethod,
    Encapsulation,
    EspTransform,
    LifeType,
    NotifyType,
    P1Attr,
    P1Encr,
    P1Hash,
    P2Attr,
    ProtocolId,
    TransformId,
)
from .payloads import Proposal, SaPayload, Transform

_AUTH_ALG_FOR_INTEG: dict[int, AuthAlg] = {
    IntegId.HMAC_SHA1_96: AuthAlg.HMAC_SHA1,
    IntegId.HMAC_SHA2_256_128: AuthAlg.HMAC_SHA2_256,
    IntegId.HMAC_SHA2_384_192: AuthAlg.HMAC_SHA2_384,
    IntegId.HMAC_SHA2_512_256: AuthAlg.HMAC_SHA2_512,
}
"""RFC 2407 section 4.5 Auth Algorithm for each IKEv2 integrity transform: the data
plane knows ESP integrity by its IKEv2 number (RFC 4868 truncation for SHA-2)."""
_INTEG_FOR_AUTH_ALG = {alg: integ for integ, alg in _AUTH_ALG_FOR_INTEG.items()}
_AUTH_ALG_VALUES = frozenset(int(a) for a in AuthAlg)
_ESP_TRANSFORM_FOR_ENCR: dict[int, EspTransform] = {
    EncrId.AES_CBC: EspTransform.AES_CBC,
    EncrId.AES_GCM_16: EspTransform.AES_GCM_16,
}
"""The IPsec DOI ESP transform IDs share the IKEv2 ENCR numbers (12, 20)."""
_HASH_NAMES: dict[int, str] = {
    P1Hash.SHA1: "sha1",
    P1Hash.SHA2_256: "sha256",
    P1Hash.SHA2_384: "sha384",
    P1Hash.SHA2_512: "sha512",
    P1Hash.MD5: "md5",
}


def _group_name(group: int) -> str:
    return transform_keyword(TransformType.DH, group) or f"DH_{group}"


def _int(attributes: Sequence[Attribute], attr_type: int) -> int | None:
    attribute = find_attribute(attributes, attr_type)
    return None if attribute is None else attribute.as_int()


# -- phase 1 -------------------------------------------------------------------------


def phase1_transform(
    number: int, proposal: Phase1Proposal, lifetime: int, auth: AuthMethod
) -> Transform:
    return Transform(
        number,
        TransformId.KEY_IKE,
        (
            Attribute(P1Attr.ENCRYPTION, P1Encr.AES_CBC),
            Attribute(P1Attr.KEY_LENGTH, proposal.encr.key_bits),
            Attribute(P1Attr.HASH, proposal.hash),
            Attribute(P1Attr.AUTH_METHOD, auth),
            Attribute(P1Attr.GROUP, proposal.group),
            Attribute(P1Attr.LIFE_TYPE, LifeType.SECONDS),
            Attribute.variable(P1Attr.LIFE_DURATION, lifetime),
        ),
    )


def phase1_sa(
    proposals: Sequence[Phase1Proposal], lifetime: int, auth: AuthMethod = AuthMethod.PSK
) -> SaPayload:
    """The initiator's offer: one ISAKMP proposal, a transform per configured one."""
    transforms = tuple(phase1_transform(i, p, lifetime, auth) for i, p in enumerate(proposals, 1))
    return SaPayload(
        DOI_IPSEC, SIT_IDENTITY_ONLY, (Proposal(1, ProtocolId.ISAKMP, b"", transforms),)
    )


def describe_phase1(transform: Transform) -> str:
    """A peer's phase 1 transform in strongSwan's notation, unknown values by number."""
    attrs = transform.attributes
    encr, bits = _int(attrs, P1Attr.ENCRYPTION), _int(attrs, P1Attr.KEY_LENGTH)
    hash_, group = _int(attrs, P1Attr.HASH), _int(attrs, P1Attr.GROUP)
    auth = _int(attrs, P1Attr.AUTH_METHOD)
    parts = [
        f"aes{bits}" if encr == P1Encr.AES_CBC and bits else f"ENCR_{encr}",
        _HASH_NAMES.get(hash_, f"HASH_{hash_}") if hash_ is not None else "HASH_none",
        _group_name(group) if group is not None else "DH_none",
    ]
    if auth != AuthMethod.PSK:
        known = {int(m): m.name for m in AuthMethod}
        parts.append(known.get(auth, f"AUTH_{auth}") if auth is not None else "AUTH_none")
    return "-".join(parts)


@dataclass(frozen=True)
class Phase1Choice:
    proposal: Phase1Proposal
    """Ours, which the peer's transform matched."""
    proposal_number: int
    transform: Transform
    """The peer's transform as received: the responder sends it back unchanged."""
    lifetime: int | None
    """The LIFE_DURATION in seconds the transform carried (None: none, or kilobytes)."""


def _phase1_matches(ours: Phase1Proposal, transform: Transform, auth: AuthMethod) -> bool:
    attrs = transform.attributes
    return (
        transform.id == TransformId.KEY_IKE
        and _int(attrs, P1Attr.ENCRYPTION) == P1Encr.AES_CBC
        and _int(attrs, P1Attr.KEY_LENGTH) == ours.encr.key_bits
        and _int(attrs, P1Attr.HASH) == ours.hash
        and _int(attrs, P1Attr.GROUP) == ours.group
        and _int(attrs, P1Attr.AUTH_METHOD) == auth
        and _int(attrs, P1Attr.PRF) is None
    )


DEFAULT_PROPOSED_LIFETIME = 28800
"""Seconds of an SA whose proposal names no lifetime (RFC 2407 section 4.5: "a
default value of 28,800 seconds (8 hours) SHOULD be assumed")."""


@dataclass(frozen=True)
class Lifetimes:
    """An SA's lifetimes (RFC 2407 section 4.5; RFC 2409 Appendix A for phase 1):
    seconds, kilobytes, either or both; None where none is given."""

    seconds: int | None = None
    kilobytes: int | None = None


def lifetimes(attributes: Sequence[Attribute], type_attr: int, duration_attr: int) -> Lifetimes:
    """Each Life Type is followed by its Life Duration (RFC 2407 section 4.5: "If the
    duration is specified in both seconds and kilobytes, two Life Type/Life Duration
    pairs"); a duration with no type before it is in seconds (the default type)."""
    seconds: int | None = None
    kilobytes: int | None = None
    life_type: int = LifeType.SECONDS
    for attribute in attributes:
        if attribute.type == type_attr:
            life_type = attribute.as_int()
        elif attribute.type == duration_attr:
            if life_type == LifeType.SECONDS:
                seconds = attribute.as_int()
            elif life_type == LifeType.KILOBYTES:
                kilobytes = attribute.as_int()
            life_type = LifeType.SECONDS
    return Lifetimes(seconds, kilobytes)


def _lifetime(attributes: Sequence[Attribute], type_attr: int, duration_attr: int) -> int | None:
    """Seconds of the lifetime attributes (None: not given)."""
    return lifetimes(attributes, type_attr, duration_attr).seconds


def _isakmp_proposals(sa: SaPayload) -> list[Proposal]:
    return [p for p in sa.proposals if p.protocol == ProtocolId.ISAKMP]


def select_phase1(
    ours: Sequence[Phase1Proposal], sa: SaPayload, auth: AuthMethod = AuthMethod.PSK
) -> Phase1Choice:
    """Responder: the first of our proposals that one of the peer's transforms matches."""
    offered = [(p, t) for p in _isakmp_proposals(sa) for t in p.transforms]
    for proposal in ours:
        for peer_proposal, transform in offered:
            if _phase1_matches(proposal, transform, auth):
                lifetime = _lifetime(transform.attributes, P1Attr.LIFE_TYPE, P1Attr.LIFE_DURATION)
                return Phase1Choice(proposal, peer_proposal.number, transform, lifetime)
    shown = [str(p) if auth == AuthMethod.PSK else f"{p}-{auth.name}" for p in ours]
    raise NoProposalChosen(shown, [describe_phase1(t) for _, t in offered])


def answer_phase1(sa: SaPayload, choice: Phase1Choice) -> SaPayload:
    """RFC 2409 section 5: the responder's SA holds the chosen transform only."""
    return SaPayload(
        sa.doi,
        sa.situation,
        (Proposal(choice.proposal_number, ProtocolId.ISAKMP, b"", (choice.transform,)),),
    )


def accept_phase1(
    ours: Sequence[Phase1Proposal], sa: SaPayload, auth: AuthMethod = AuthMethod.PSK
) -> Phase1Choice:
    """Initiator: the responder must return exactly one of our transforms."""
    proposals = _isakmp_proposals(sa)
    if len(proposals) != 1 or len(proposals[0].transforms) != 1:
        raise ProtocolError(
            "the responder's SA must hold one ISAKMP proposal with one transform",
            notify=NotifyType.BAD_PROPOSAL_SYNTAX,
        )
    transform = proposals[0].transforms[0]
    for proposal in ours:
        if _phase1_matches(proposal, transform, auth):
            lifetime = _lifetime(transform.attributes, P1Attr.LIFE_TYPE, P1Attr.LIFE_DURATION)
            return Phase1Choice(proposal, proposals[0].number, transform, lifetime)
    raise NoProposalChosen(
        ours, [describe_phase1(transform)], "the responder chose what we did not offer"
    )


# -- Quick mode ----------------------------------------------------------------------


def encapsulation(mode: Mode, udp: bool) -> Encapsulation:
    """RFC 2407 section 4.5, with the UDP-encapsulated modes of RFC 3947 section 5.1."""
    if mode is Mode.TUNNEL:
        return Encapsulation.UDP_TUNNEL if udp else Encapsulation.TUNNEL
    return Encapsulation.UDP_TRANSPORT if udp else Encapsulation.TRANSPORT


def esp_transform(
    number: int,
    proposal: EspProposal,
    encap: Encapsulation,
    lifetime: int,
    kilobytes: int | None = None,
) -> Transform:
    """``kilobytes``: a second Life Type/Life Duration pair (RFC 2407 section 4.5)."""
    attributes = [
        Attribute(P2Attr.LIFE_TYPE, LifeType.SECONDS),
        Attribute.variable(P2Attr.LIFE_DURATION, lifetime),
    ]
    if kilobytes is not None:
        attributes += [
            Attribute(P2Attr.LIFE_TYPE, LifeType.KILOBYTES),
            Attribute.variable(P2Attr.LIFE_DURATION, kilobytes),
        ]
    attributes.append(Attribute(P2Attr.ENCAPSULATION, encap))
    if proposal.integ is not None:
        attributes.append(Attribute(P2Attr.AUTH_ALG, _AUTH_ALG_FOR_INTEG[proposal.integ.id]))
    attributes.append(Attribute(P2Attr.KEY_LENGTH, proposal.encr.key_bits))
    if proposal.dh is not None:
        attributes.append(Attribute(P2Attr.GROUP, proposal.dh))
    return Transform(number, _ESP_TRANSFORM_FOR_ENCR[proposal.encr.id], tuple(attributes))


def esp_sa(
    proposals: Sequence[EspProposal],
    spi: bytes,
    encap: Encapsulation,
    lifetime: int,
    kilobytes: int | None = None,
) -> SaPayload:
    """The Quick mode initiator's offer: one ESP proposal, a transform per ours."""
    transforms = tuple(
        esp_transform(i, p, encap, lifetime, kilobytes) for i, p in enumerate(proposals, 1)
    )
    return SaPayload(
        DOI_IPSEC, SIT_IDENTITY_ONLY, (Proposal(1, ProtocolId.IPSEC_ESP, spi, transforms),)
    )


def describe_esp(transform: Transform) -> str:
    attrs = transform.attributes
    bits = _int(attrs, P2Attr.KEY_LENGTH)
    if transform.id == EspTransform.AES_CBC:
        parts = [f"aes{bits}"]
    elif transform.id == EspTransform.AES_GCM_16:
        parts = [f"aes{bits}gcm16"]
    else:
        parts = [f"ENCR_{transform.id}"]
    alg = _int(attrs, P2Attr.AUTH_ALG)
    if alg is not None:
        integ = _INTEG_FOR_AUTH_ALG.get(AuthAlg(alg)) if alg in _AUTH_ALG_VALUES else None
        keyword = transform_keyword(TransformType.INTEG, integ) if integ is not None else None
        parts.append(keyword or f"AUTH_{alg}")
    group = _int(attrs, P2Attr.GROUP)
    if group is not None:
        parts.append(_group_name(group))
    encap = _int(attrs, P2Attr.ENCAPSULATION)
    if encap is not None and encap != Encapsulation.TUNNEL:
        known = {e.value: e.name.lower() for e in Encapsulation}
        parts.append(known.get(encap, f"ENCAP_{encap}"))
    return "-".join(p for p in parts if p)


def _esp_matches(ours: EspProposal, transform: Transform, encap: Encapsulation) -> bool:
    attrs = transform.attributes
    if transform.id != _ESP_TRANSFORM_FOR_ENCR.get(ours.encr.id):
        return False
    if _int(attrs, P2Attr.KEY_LENGTH) != ours.encr.key_bits:
        return False
    alg = _int(attrs, P2Attr.AUTH_ALG)
    wanted = None if ours.integ is None else _AUTH_ALG_FOR_INTEG[ours.integ.id]
    if alg != wanted:
        return False
    if _int(attrs, P2Attr.GROUP) != ours.dh:
        return False
    if _int(attrs, P2Attr.EXTENDED_SEQUENCE_NUMBER):
        return False
    # RFC 2407 section 4.5: an absent Encapsulation Mode means transport... but every
    # implementation sends it; we require the mode our policy (and NAT-T) asks for.
    return _int(attrs, P2Attr.ENCAPSULATION) == encap


@dataclass(frozen=True)
class EspChoice:
    proposal: EspProposal
    proposal_number: int
    spi: bytes
    """The SPI of the peer's proposal: where we send (outbound)."""
    transform: Transform
    lifetime: int | None
    kilobytes: int | None = None
    """The kilobyte lifetime the transform carried (RFC 2407 section 4.5)."""


def _esp_offers(sa: SaPayload) -> list[tuple[Proposal, Transform]]:
    numbers = [p.number for p in sa.proposals]
    # Proposals sharing a number are ANDed (RFC 2408 section 4.2, e.g. AH with ESP):
    # we speak ESP alone, so such a combination is not one we can take.
    return [
        (p, t)
        for p in sa.proposals
        if p.protocol == ProtocolId.IPSEC_ESP and numbers.count(p.number) == 1
        for t in p.transforms
    ]


def select_esp(ours: Sequence[EspProposal], sa: SaPayload, encap: Encapsulation) -> EspChoice:
    offered = _esp_offers(sa)
    for proposal in ours:
        for peer_proposal, transform in offered:
            if _esp_matches(proposal, transform, encap):
                if len(peer_proposal.spi) != 4:
                    raise ProtocolError(
                        f"ESP proposal {peer_proposal.number} has a {len(peer_proposal.spi)}"
                        "-byte SPI, not 4",
                        notify=NotifyType.INVALID_SPI,
                    )
                life = lifetimes(transform.attributes, P2Attr.LIFE_TYPE, P2Attr.LIFE_DURATION)
                return EspChoice(
                    proposal,
                    peer_proposal.number,
                    peer_proposal.spi,
                    transform,
                    life.seconds,
                    life.kilobytes,
                )
    raise NoProposalChosen(
        [f"{p}-{encap.name.lower()}" for p in ours],
        [describe_esp(t) for _, t in offered],
    )


def answer_esp(sa: SaPayload, choice: EspChoice, spi: bytes) -> SaPayload:
    """The responder's SA: the chosen transform under our own SPI."""
    return SaPayload(
        sa.doi,
        sa.situation,
        (Proposal(choice.proposal_number, ProtocolId.IPSEC_ESP, spi, (choice.transform,)),),
    )


def accept_esp(ours: Sequence[EspProposal], sa: SaPayload, encap: Encapsulation) -> EspChoice:
    offered = _esp_offers(sa)
    if len(offered) != 1:
        raise ProtocolError(
            f"the responder's SA must hold one ESP transform, it holds {len(offered)}",
            notify=NotifyType.BAD_PROPOSAL_SYNTAX,
        )
    try:
        return select_esp(ours, sa, encap)
    except NoProposalChosen as exc:
        raise NoProposalChosen(
            [str(p) for p in ours],
            [describe_esp(offered[0][1])],
            "the responder chose what we did not offer",
        ) from exc


def integ_of(proposal: EspProposal) -> int | None:
    """The IKEv2 integrity number the data plane installs, None for AEAD."""
    return None if proposal.integ is None else int(proposal.integ.id)


def keymat_length(proposal: EspProposal) -> int:
    """Octets of KEYMAT one direction takes (RFC 2409 section 5.5): the cipher key
    (with the 4-byte salt for GCM, RFC 4106 section 8.1), then the integrity key."""
    length = proposal.encr.key_length
    if proposal.integ is not None:
        length += integ_for(proposal.integ.id).key_length
    return length
