"""IKEv1 SA payloads from our proposals, and the choice among a peer's.

Phase 1 (RFC 2409 Appendix A, section 5): one ISAKMP proposal whose KEY_IKE
transforms each carry a cipher, key length, hash, authentication method, group and
lifetime; the responder answers with the one transform it chose, unchanged. Quick
mode (RFC 2407 sections 4.4.4 and 4.5): one ESP proposal with our SPI whose transforms
are the ESP transform IDs with Auth Algorithm, Key Length, Group Description (PFS),
Encapsulation Mode and SA lifetime attributes. A child with AH proposals (RFC 2407
section 4.4.3) offers an AH proposal first, numbered 1, with a transform per AH
proposal (the AH transform ID and its Authentication Algorithm attribute), and the ESP
proposal numbered 2: proposals of different numbers are alternatives (RFC 2408 section
4.2), so the responder takes one of them, never both.

Our configured order wins (strongSwan's default); a failure names ours and theirs in
strongSwan's notation, as the IKEv2 NO_PROPOSAL_CHOSEN text does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..config import Mode
from ..constants import EncrId, IntegId, TransformType
from ..errors import ProtocolError
from ..proposals import AhProposal, ChildProposal, EspProposal, NoProposalChosen, child_label
from ..transforms import integ_for, transform_keyword
from .attributes import Attribute, find_attribute
from .config import Phase1Proposal
from .constants import (
    DOI_IPSEC,
    SIT_IDENTITY_ONLY,
    AhTransform,
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
    IntegId.AES_128_GMAC: AuthAlg.AES_128_GMAC,
    IntegId.AES_192_GMAC: AuthAlg.AES_192_GMAC,
    IntegId.AES_256_GMAC: AuthAlg.AES_256_GMAC,
}
"""RFC 2407 section 4.5 Auth Algorithm for each IKEv2 integrity transform: the data
plane knows ESP and AH integrity by its IKEv2 number (RFC 4868 truncation for SHA-2)."""
_AH_TRANSFORM_FOR_INTEG: dict[int, AhTransform] = {
    IntegId.HMAC_SHA1_96: AhTransform.SHA1,
    IntegId.HMAC_SHA2_256_128: AhTransform.SHA2_256,
    IntegId.HMAC_SHA2_384_192: AhTransform.SHA2_384,
    IntegId.HMAC_SHA2_512_256: AhTransform.SHA2_512,
    IntegId.AES_128_GMAC: AhTransform.AES_128_GMAC,
    IntegId.AES_192_GMAC: AhTransform.AES_192_GMAC,
    IntegId.AES_256_GMAC: AhTransform.AES_256_GMAC,
}
"""RFC 2407 section 4.4.3 AH transform ID for each IKEv2 integrity transform."""
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


def ah_transform(
    number: int,
    proposal: AhProposal,
    encap: Encapsulation,
    lifetime: int,
    kilobytes: int | None = None,
) -> Transform:
    """An AH transform (RFC 2407 section 4.4.3): the AH transform ID, and the
    Authentication Algorithm attribute, which AH must carry (section 4.5)."""
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
    attributes.append(Attribute(P2Attr.AUTH_ALG, _AUTH_ALG_FOR_INTEG[proposal.integ.id]))
    if proposal.dh is not None:
        attributes.append(Attribute(P2Attr.GROUP, proposal.dh))
    return Transform(number, _AH_TRANSFORM_FOR_INTEG[proposal.integ.id], tuple(attributes))


def child_sa(
    offered: Sequence[ChildProposal],
    spi: bytes,
    encap: Encapsulation,
    lifetime: int,
    kilobytes: int | None = None,
) -> SaPayload:
    """The Quick mode initiator's offer: an AH proposal (when there are AH ones) and an
    ESP proposal (when there are ESP ones), numbered apart so that they are
    alternatives (RFC 2408 section 4.2), each with a transform per ours and our SPI."""
    ah = [p for p in offered if isinstance(p, AhProposal)]
    esp = [p for p in offered if isinstance(p, EspProposal)]
    out: list[Proposal] = []
    if ah:
        transforms = tuple(
            ah_transform(i, p, encap, lifetime, kilobytes) for i, p in enumerate(ah, 1)
        )
        out.append(Proposal(len(out) + 1, ProtocolId.IPSEC_AH, spi, transforms))
    if esp:
        transforms = tuple(
            esp_transform(i, p, encap, lifetime, kilobytes) for i, p in enumerate(esp, 1)
        )
        out.append(Proposal(len(out) + 1, ProtocolId.IPSEC_ESP, spi, transforms))
    return SaPayload(DOI_IPSEC, SIT_IDENTITY_ONLY, tuple(out))


def describe_ah(transform: Transform) -> str:
    """A peer's AH transform as ``AH:sha256[-group][-encapsulation]``."""
    integ = next((i for i, t in _AH_TRANSFORM_FOR_INTEG.items() if t == transform.id), None)
    keyword = transform_keyword(TransformType.INTEG, integ) if integ is not None else None
    return "AH:" + _child_tail(keyword or f"AH_{transform.id}", transform.attributes)


def _child_tail(head: str, attrs: Sequence[Attribute]) -> str:
    parts = [head]
    group = _int(attrs, P2Attr.GROUP)
    if group is not None:
        parts.append(_group_name(group))
    encap = _int(attrs, P2Attr.ENCAPSULATION)
    if encap is not None and encap != Encapsulation.TUNNEL:
        known = {e.value: e.name.lower() for e in Encapsulation}
        parts.append(known.get(encap, f"ENCAP_{encap}"))
    return "-".join(p for p in parts if p)


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
    return _child_tail("-".join(parts), attrs)


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


def _ah_matches(ours: AhProposal, transform: Transform, encap: Encapsulation) -> bool:
    attrs = transform.attributes
    return (
        transform.id == _AH_TRANSFORM_FOR_INTEG[ours.integ.id]
        and _int(attrs, P2Attr.AUTH_ALG) == _AUTH_ALG_FOR_INTEG[ours.integ.id]
        and _int(attrs, P2Attr.KEY_LENGTH) is None
        and _int(attrs, P2Attr.GROUP) == ours.dh
        and not _int(attrs, P2Attr.EXTENDED_SEQUENCE_NUMBER)
        and _int(attrs, P2Attr.ENCAPSULATION) == encap
    )


def _matches(
    ours: ChildProposal, proposal: Proposal, transform: Transform, encap: Encapsulation
) -> bool:
    if isinstance(ours, AhProposal):
        return proposal.protocol == ProtocolId.IPSEC_AH and _ah_matches(ours, transform, encap)
    return proposal.protocol == ProtocolId.IPSEC_ESP and _esp_matches(ours, transform, encap)


@dataclass(frozen=True)
class ChildChoice:
    proposal: ChildProposal
    proposal_number: int
    spi: bytes
    """The SPI of the peer's proposal: where we send (outbound)."""
    transform: Transform
    lifetime: int | None
    kilobytes: int | None = None
    """The kilobyte lifetime the transform carried (RFC 2407 section 4.5)."""

    @property
    def protocol(self) -> ProtocolId:
        """PROTO_IPSEC_AH or PROTO_IPSEC_ESP (RFC 2407 section 4.4.1)."""
        is_ah = isinstance(self.proposal, AhProposal)
        return ProtocolId.IPSEC_AH if is_ah else ProtocolId.IPSEC_ESP


def _child_offers(sa: SaPayload) -> list[tuple[Proposal, Transform]]:
    numbers = [p.number for p in sa.proposals]
    # Proposals sharing a number are ANDed (RFC 2408 section 4.2, e.g. AH with ESP):
    # we speak ESP or AH alone, so such a combination is not one we can take.
    return [
        (p, t)
        for p in sa.proposals
        if p.protocol in (ProtocolId.IPSEC_ESP, ProtocolId.IPSEC_AH)
        and numbers.count(p.number) == 1
        for t in p.transforms
    ]


def _describe(proposal: Proposal, transform: Transform) -> str:
    if proposal.protocol == ProtocolId.IPSEC_AH:
        return describe_ah(transform)
    return describe_esp(transform)


def _label(ours: ChildProposal, encap: Encapsulation) -> str:
    return f"{child_label(ours)}-{encap.name.lower()}"


def select_child(ours: Sequence[ChildProposal], sa: SaPayload, encap: Encapsulation) -> ChildChoice:
    """Responder: our first ESP or AH proposal that one of the peer's transforms matches."""
    offered = _child_offers(sa)
    for proposal in ours:
        for peer_proposal, transform in offered:
            if _matches(proposal, peer_proposal, transform, encap):
                if len(peer_proposal.spi) != 4:
                    what = "AH" if peer_proposal.protocol == ProtocolId.IPSEC_AH else "ESP"
                    raise ProtocolError(
                        f"{what} proposal {peer_proposal.number} has a {len(peer_proposal.spi)}"
                        "-byte SPI, not 4",
                        notify=NotifyType.INVALID_SPI,
                    )
                life = lifetimes(transform.attributes, P2Attr.LIFE_TYPE, P2Attr.LIFE_DURATION)
                return ChildChoice(
                    proposal,
                    peer_proposal.number,
                    peer_proposal.spi,
                    transform,
                    life.seconds,
                    life.kilobytes,
                )
    raise NoProposalChosen(
        [_label(p, encap) for p in ours],
        [_describe(p, t) for p, t in offered],
    )


def answer_child(sa: SaPayload, choice: ChildChoice, spi: bytes) -> SaPayload:
    """The responder's SA: the chosen transform under our own SPI."""
    return SaPayload(
        sa.doi,
        sa.situation,
        (Proposal(choice.proposal_number, choice.protocol, spi, (choice.transform,)),),
    )


def accept_child(ours: Sequence[ChildProposal], sa: SaPayload, encap: Encapsulation) -> ChildChoice:
    offered = _child_offers(sa)
    if len(offered) != 1:
        raise ProtocolError(
            f"the responder's SA must hold one ESP or AH transform, it holds {len(offered)}",
            notify=NotifyType.BAD_PROPOSAL_SYNTAX,
        )
    try:
        return select_child(ours, sa, encap)
    except NoProposalChosen as exc:
        raise NoProposalChosen(
            [child_label(p) for p in ours],
            [_describe(*offered[0])],
            "the responder chose what we did not offer",
        ) from exc


def integ_of(proposal: ChildProposal) -> int | None:
    """The IKEv2 integrity number the data plane installs, None for AEAD ESP."""
    return None if proposal.integ is None else int(proposal.integ.id)


def encryption_key_length(proposal: ChildProposal) -> int:
    """Octets of the cipher key in one direction's KEYMAT (with the 4-byte salt for
    GCM, RFC 4106 section 8.1); none for AH."""
    return 0 if isinstance(proposal, AhProposal) else proposal.encr.key_length


def keymat_length(proposal: ChildProposal) -> int:
    """Octets of KEYMAT one direction takes (RFC 2409 section 5.5): the cipher key,
    then the integrity key; AH's is its integrity key alone."""
    length = encryption_key_length(proposal)
    if proposal.integ is not None:
        length += integ_for(proposal.integ.id).key_length
    return length
