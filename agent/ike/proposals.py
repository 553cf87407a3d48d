"""Proposals: built from transform IDs, read from strongSwan's notation, selected.

The IKE, ESP and AH proposals an IKE SA offers and accepts are built from transform IDs
(RFC 7296 section 3.3.2), each checked against the registry in transforms.py:
``IkeProposal.from_transforms([...])`` gives every combination a list of transforms
offers. ``IkeProposal.parse("aes256gcm16-prfsha384-x25519")`` and
``EspProposal.parse("aes128-sha256")`` and ``AhProposal.parse("sha256-esn")`` read what
operators write in swanctl.conf into the same IDs. A child SA is offered ESP and AH
proposals together (``ChildProposal``), as separate proposals of one SA payload (RFC
7296 section 3.3), and selected among them by protocol. Selection follows RFC 7296
section 2.7 with our configured order taking precedence (strongSwan's default), and a
failure names both sides.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TypeAlias

from .constants import (
    DhGroup,
    EsnId,
    IntegId,
    NotifyType,
    ProtocolId,
    TransformType,
    enum_name,
)
from .errors import LocalError, ProtocolError, UnsupportedTransform
from .sa_payload import Proposal, Transform
from .transforms import (
    INTEGS,
    PROPOSAL_TOKENS,
    Encr,
    Integ,
    Prf,
    encr_for,
    integ_for,
    negotiable,
    prf_for,
    transform_keyword,
)


def _name(kind: int, id: int, key_bits: int | None = None) -> str:
    """The keyword, else the transform type and number (``ENCR_1031``, ``DH_99``,
    ``TYPE9_1``)."""
    keyword = transform_keyword(kind, id, key_bits)
    if keyword is not None:
        return keyword
    known = kind in {int(t) for t in TransformType}
    return f"{enum_name(TransformType, kind) if known else f'TYPE{kind}'}_{id}"


def dh_name(group: int) -> str:
    """A DH group as strongSwan names it (``ecp256``; ``DH_99`` when it has no name)."""
    return _name(TransformType.DH, group)


# An integrity algorithm without an explicit PRF implies the PRF of its hash (strongSwan).
_PRF_FOR_INTEG = {
    i.id: i.implied_prf
    for i in INTEGS.values()
    if ProtocolId.IKE in i.protocols and i.implied_prf is not None
}


def render_proposal(proposal: Proposal) -> str:
    """A proposal in strongSwan's configuration notation, as operators write it in the
    inventory (and in swanctl.conf): ``aes128-sha256-modp2048``, ``aes256gcm16-esn``.

    Keywords go in the order encryption, integrity, PRF, DH group, ESN; several of one
    type are alternatives (``aes128-aes256-sha256-...``). What the notation leaves out
    is left out: a PRF implied by the integrity algorithm, "no ESN" and "no DH" (the
    defaults), the integrity "none" of an AEAD cipher. A transform with no keyword shows
    as its type and number (``ENCR_1031``)."""
    by_type: dict[int, list[str]] = {}
    ids: dict[int, list[int]] = {}
    for t in proposal.transforms:
        if (t.type, t.id) in ((TransformType.INTEG, IntegId.NONE), (TransformType.DH, 0)):
            continue
        by_type.setdefault(int(t.type), []).append(_name(t.type, t.id, t.key_length))
        ids.setdefault(int(t.type), []).append(t.id)
    integs, prfs = ids.get(TransformType.INTEG, []), ids.get(TransformType.PRF, [])
    implied = {int(integ): int(prf) for integ, prf in _PRF_FOR_INTEG.items()}
    if integs and prfs == list(dict.fromkeys(implied.get(i, -1) for i in integs)):
        del by_type[TransformType.PRF]
    if ids.get(TransformType.ESN) == [EsnId.NO_ESN]:
        del by_type[TransformType.ESN]
    order = [
        TransformType.ENCR,
        TransformType.INTEG,
        TransformType.PRF,
        TransformType.DH,
        TransformType.ESN,
        *sorted(set(by_type) - {int(t) for t in TransformType}),
    ]
    return "-".join(k for kind in order for k in by_type.get(kind, ()))


class NoProposalChosen(ProtocolError):
    """No common proposal; the message lists ours and theirs."""

    def __init__(self, ours: Sequence[object], theirs: Sequence[str], note: str = "") -> None:
        # The event that carries it (IKE SA or child SA failed) says which SA it was.
        super().__init__(
            f"NO_PROPOSAL_CHOSEN: ours [{', '.join(str(o) for o in ours)}], "
            f"theirs [{', '.join(theirs)}]" + (f" ({note})" if note else ""),
            notify=NotifyType.NO_PROPOSAL_CHOSEN,
        )


def _tokens(text: str) -> list[str]:
    tokens = [t for t in text.strip().lower().split("-") if t]
    if not tokens:
        raise LocalError("empty proposal")
    return tokens


def _encr_transform(encr: Encr) -> Transform:
    return Transform.with_key_length(TransformType.ENCR, encr.id, encr.key_attribute)


_IKE_TYPES = (TransformType.ENCR, TransformType.INTEG, TransformType.PRF, TransformType.DH)
_ESP_TYPES = (TransformType.ENCR, TransformType.INTEG, TransformType.DH, TransformType.ESN)
_AH_TYPES = (TransformType.INTEG, TransformType.DH, TransformType.ESN)
"""RFC 7296 section 3.3.3: AH takes integrity, optional DH and ESN, never encryption."""


def _parsed(
    text: str, what: str, types: tuple[TransformType, ...], protocol: ProtocolId
) -> list[Transform]:
    """The transforms a proposal in strongSwan notation names, one of each type."""
    chosen: dict[TransformType, Transform] = {}
    for token in _tokens(text):
        kind, id, bits = PROPOSAL_TOKENS.get(token, (None, 0, None))
        # ESN is "esn" or "noesn", the last one written standing.
        if (
            kind not in types
            or (kind in chosen and kind is not TransformType.ESN)
            or not negotiable(kind, id, bits, protocol)
        ):
            raise LocalError(f"{what} proposal {text!r}: unknown or repeated algorithm {token!r}")
        chosen[kind] = Transform.with_key_length(kind, id, bits)
    return list(chosen.values())


def _combinations(
    transforms: Iterable[Transform],
    what: str,
    types: tuple[TransformType, ...],
    protocol: ProtocolId,
) -> list[dict[TransformType, Transform]]:
    """One transform of each type per combination, in the order the transforms come
    (RFC 7296 section 3.3: transforms of one type in a proposal are alternatives); each
    must be one this core negotiates for ``protocol``."""
    by_type: dict[TransformType, list[Transform]] = {}
    for t in transforms:
        if t.type not in types:
            raise LocalError(f"{what} proposal: {_name(t.type, t.id)} does not belong in it")
        if not negotiable(t.type, t.id, t.key_length, protocol):
            raise UnsupportedTransform(
                f"{what} proposal: {_name(t.type, t.id, t.key_length)} "
                f"({enum_name(TransformType, t.type)} {t.id}) is not supported"
            )
        by_type.setdefault(TransformType(t.type), []).append(t)
    combos: list[dict[TransformType, Transform]] = [{}]
    for kind in types:
        options = by_type.get(kind)
        if options:
            combos = [{**c, kind: t} for c in combos for t in options]
    return combos


@dataclass(frozen=True)
class IkeProposal:
    """One combination of IKE SA transforms: what one SA is protected with."""

    encr: Encr
    prf: Prf
    integ: Integ | None
    dh: int

    @classmethod
    def parse(cls, text: str) -> IkeProposal:
        """One proposal in strongSwan notation (one algorithm of each type)."""
        return cls._build(
            _parsed(text, "IKE", _IKE_TYPES, ProtocolId.IKE), f"IKE proposal {text!r}"
        )

    @classmethod
    def from_transforms(cls, transforms: Iterable[Transform]) -> list[IkeProposal]:
        """Every combination of the transforms, by type, in their order."""
        out = []
        for combo in _combinations(transforms, "IKE", _IKE_TYPES, ProtocolId.IKE):
            shown = render_proposal(Proposal(1, ProtocolId.IKE, b"", [*combo.values()]))
            out.append(cls._build(combo.values(), f"IKE proposal {shown!r}"))
        return out

    @classmethod
    def _build(cls, transforms: Iterable[Transform], where: str) -> IkeProposal:
        by_type = {t.type: t for t in transforms}
        encr_t, dh_t = by_type.get(TransformType.ENCR), by_type.get(TransformType.DH)
        if encr_t is None or dh_t is None:
            raise LocalError(f"{where} needs an encryption algorithm and a DH group")
        encr = encr_for(encr_t.id, encr_t.key_length)
        integ_t, prf_t = by_type.get(TransformType.INTEG), by_type.get(TransformType.PRF)
        integ = integ_for(integ_t.id) if integ_t is not None else None
        if encr.is_aead and integ is not None:
            raise LocalError(f"{where}: {encr.name} takes no integrity algorithm")
        if not encr.is_aead and integ is None:
            raise LocalError(f"{where}: {encr.name} needs an integrity algorithm")
        if prf_t is not None:
            prf = prf_for(prf_t.id)
        elif integ is None:
            raise LocalError(f"{where}: an AEAD proposal needs a PRF")
        else:
            prf = prf_for(_PRF_FOR_INTEG[integ.id])
        return cls(encr, prf, integ, dh_t.id)

    def __str__(self) -> str:
        return render_proposal(self.to_proposal(1))

    def to_proposal(self, number: int, spi: bytes = b"") -> Proposal:
        transforms = [_encr_transform(self.encr), Transform(TransformType.PRF, self.prf.id)]
        if self.integ:
            transforms.append(Transform(TransformType.INTEG, self.integ.id))
        transforms.append(Transform(TransformType.DH, self.dh))
        return Proposal(number, ProtocolId.IKE, spi, transforms)


@dataclass(frozen=True)
class EspProposal:
    """One combination of ESP transforms: what one child SA is protected with."""

    encr: Encr
    integ: Integ | None
    esn: bool = False
    dh: int | None = None
    """PFS group for CREATE_CHILD_SA (section 1.3.1); never sent in IKE_AUTH (section 1.2)."""

    @classmethod
    def parse(cls, text: str) -> EspProposal:
        """One proposal in strongSwan notation (one algorithm of each type)."""
        return cls._build(
            _parsed(text, "ESP", _ESP_TYPES, ProtocolId.ESP), f"ESP proposal {text!r}"
        )

    @classmethod
    def from_transforms(cls, transforms: Iterable[Transform]) -> list[EspProposal]:
        """Every combination of the transforms, by type, in their order."""
        out = []
        for combo in _combinations(transforms, "ESP", _ESP_TYPES, ProtocolId.ESP):
            shown = render_proposal(Proposal(1, ProtocolId.ESP, bytes(4), [*combo.values()]))
            out.append(cls._build(combo.values(), f"ESP proposal {shown!r}"))
        return out

    @classmethod
    def _build(cls, transforms: Iterable[Transform], where: str) -> EspProposal:
        by_type = {t.type: t for t in transforms}
        encr_t = by_type.get(TransformType.ENCR)
        if encr_t is None:
            raise LocalError(f"{where} needs an encryption algorithm")
        encr = encr_for(encr_t.id, encr_t.key_length)
        integ_t = by_type.get(TransformType.INTEG)
        integ = integ_for(integ_t.id) if integ_t is not None else None
        if encr.is_aead == (integ is not None):
            need = "takes no" if encr.is_aead else "needs an"
            raise LocalError(f"{where}: {encr.name} {need} integrity algorithm")
        esn_t, dh_t = by_type.get(TransformType.ESN), by_type.get(TransformType.DH)
        esn = esn_t is not None and esn_t.id == EsnId.ESN
        return cls(encr, integ, esn, dh_t.id if dh_t is not None else None)

    protocol = ProtocolId.ESP

    def __str__(self) -> str:
        return render_proposal(self.to_proposal(1, bytes(4)))

    def without_pfs(self) -> EspProposal:
        return EspProposal(self.encr, self.integ, self.esn)

    def to_proposal(self, number: int, spi: bytes) -> Proposal:
        transforms = [_encr_transform(self.encr)]
        if self.integ:
            transforms.append(Transform(TransformType.INTEG, self.integ.id))
        if self.dh is not None:
            transforms.append(Transform(TransformType.DH, self.dh))
        esn = EsnId.ESN if self.esn else EsnId.NO_ESN
        transforms.append(Transform(TransformType.ESN, esn))
        return Proposal(number, ProtocolId.ESP, spi, transforms)


@dataclass(frozen=True)
class AhProposal:
    """One combination of AH transforms (RFC 4302): integrity, ESN and an optional PFS
    group; AH has no encryption (RFC 7296 section 3.3.3)."""

    integ: Integ
    esn: bool = False
    dh: int | None = None
    """PFS group for CREATE_CHILD_SA (section 1.3.1); never sent in IKE_AUTH (section 1.2)."""

    protocol = ProtocolId.AH

    @classmethod
    def parse(cls, text: str) -> AhProposal:
        """One proposal in strongSwan notation (``sha256``, ``aes128gmac-esn``)."""
        return cls._build(_parsed(text, "AH", _AH_TYPES, ProtocolId.AH), f"AH proposal {text!r}")

    @classmethod
    def from_transforms(cls, transforms: Iterable[Transform]) -> list[AhProposal]:
        """Every combination of the transforms, by type, in their order."""
        out = []
        for combo in _combinations(transforms, "AH", _AH_TYPES, ProtocolId.AH):
            shown = render_proposal(Proposal(1, ProtocolId.AH, bytes(4), [*combo.values()]))
            out.append(cls._build(combo.values(), f"AH proposal {shown!r}"))
        return out

    @classmethod
    def _build(cls, transforms: Iterable[Transform], where: str) -> AhProposal:
        by_type = {t.type: t for t in transforms}
        integ_t = by_type.get(TransformType.INTEG)
        if integ_t is None or integ_t.id == IntegId.NONE:
            raise LocalError(f"{where} needs an integrity algorithm")
        esn_t, dh_t = by_type.get(TransformType.ESN), by_type.get(TransformType.DH)
        esn = esn_t is not None and esn_t.id == EsnId.ESN
        return cls(integ_for(integ_t.id), esn, dh_t.id if dh_t is not None else None)

    def __str__(self) -> str:
        return render_proposal(self.to_proposal(1, bytes(4)))

    def without_pfs(self) -> AhProposal:
        return AhProposal(self.integ, self.esn)

    def to_proposal(self, number: int, spi: bytes) -> Proposal:
        """Section 3.3.1: protocol ID 2 (AH), a 4-octet SPI; INTEG, [DH,] ESN."""
        transforms = [Transform(TransformType.INTEG, self.integ.id)]
        if self.dh is not None:
            transforms.append(Transform(TransformType.DH, self.dh))
        esn = EsnId.ESN if self.esn else EsnId.NO_ESN
        transforms.append(Transform(TransformType.ESN, esn))
        return Proposal(number, ProtocolId.AH, spi, transforms)


ChildProposal: TypeAlias = EspProposal | AhProposal
"""What a child SA is negotiated with: an ESP or an AH proposal."""


def _offers(proposal: Proposal, kind: int, id: int, key_bits: int | None = None) -> bool:
    return any(
        t.type == kind and t.id == id and (key_bits is None or t.key_length == key_bits)
        for t in proposal.transforms
    )


def _types(proposal: Proposal) -> set[int]:
    return {int(t.type) for t in proposal.transforms}


def _ike_matches(ours: IkeProposal, theirs: Proposal) -> bool:
    if theirs.protocol != ProtocolId.IKE:
        return False
    needed = {TransformType.ENCR, TransformType.PRF, TransformType.DH}
    if ours.integ:
        needed.add(TransformType.INTEG)
    # RFC 7296 section 3.3.6: a proposal with a transform type we do not recognise is skipped.
    if not _types(theirs) <= {int(t) for t in TransformType} or not needed <= _types(theirs):
        return False
    if ours.integ is None and any(
        t.type == TransformType.INTEG and t.id != IntegId.NONE for t in theirs.transforms
    ):
        return False
    return (
        _offers(theirs, TransformType.ENCR, ours.encr.id, ours.encr.key_attribute)
        and _offers(theirs, TransformType.PRF, ours.prf.id)
        and (ours.integ is None or _offers(theirs, TransformType.INTEG, ours.integ.id))
        and _offers(theirs, TransformType.DH, ours.dh)
    )


def select_ike(ours: Sequence[IkeProposal], theirs: Sequence[Proposal]) -> tuple[int, IkeProposal]:
    """Responder: the first of our proposals that one of theirs offers (section 2.7)."""
    for mine in ours:
        for proposal in theirs:
            if _ike_matches(mine, proposal):
                return proposal.number, mine
    raise NoProposalChosen(ours, [render_proposal(p) for p in theirs])


def accept_ike(ours: Sequence[IkeProposal], chosen: Sequence[Proposal]) -> IkeProposal:
    """Initiator: the responder must return exactly one of our proposals, one transform each."""
    if len(chosen) == 1:
        for mine in ours:
            reply = mine.to_proposal(chosen[0].number)
            if _same_transforms(reply, chosen[0]):
                return mine
    raise NoProposalChosen(
        ours, [render_proposal(p) for p in chosen], "the responder's choice was not offered"
    )


def _esn_and_pfs_match(ours: ChildProposal, theirs: Proposal) -> bool:
    esn_ok = _offers(theirs, TransformType.ESN, EsnId.ESN if ours.esn else EsnId.NO_ESN)
    if TransformType.ESN not in _types(theirs):
        esn_ok = not ours.esn  # no ESN transform means no ESN
    if ours.dh is not None:
        return esn_ok and _offers(theirs, TransformType.DH, ours.dh)
    # No PFS: they must offer "no DH" or no DH transform at all.
    return esn_ok and (
        TransformType.DH not in _types(theirs) or _offers(theirs, TransformType.DH, DhGroup.NONE)
    )


def _child_matches(ours: ChildProposal, theirs: Proposal) -> bool:
    """Whether ``theirs`` offers ``ours``: same protocol (ESP 3 or AH 2), a 4-octet
    SPI (section 3.3.1), and each of our transforms among theirs."""
    if theirs.protocol != ours.protocol or len(theirs.spi) != 4:
        return False
    if not _types(theirs) <= {int(t) for t in TransformType}:
        return False
    if isinstance(ours, AhProposal):
        # Section 3.3.3: an AH proposal with an encryption transform is not one we know.
        return (
            TransformType.ENCR not in _types(theirs)
            and _offers(theirs, TransformType.INTEG, ours.integ.id)
            and _esn_and_pfs_match(ours, theirs)
        )
    if ours.integ is None and any(
        t.type == TransformType.INTEG and t.id != IntegId.NONE for t in theirs.transforms
    ):
        return False
    return (
        _offers(theirs, TransformType.ENCR, ours.encr.id, ours.encr.key_attribute)
        and (ours.integ is None or _offers(theirs, TransformType.INTEG, ours.integ.id))
        and _esn_and_pfs_match(ours, theirs)
    )


def select_child(
    ours: Sequence[ChildProposal], theirs: Sequence[Proposal]
) -> tuple[Proposal, ChildProposal]:
    """Responder: our first ESP or AH proposal that one of theirs offers (section 2.7);
    returns their proposal too (its number and SPI are needed for the reply)."""
    for mine in ours:
        for proposal in theirs:
            if _child_matches(mine, proposal):
                return proposal, mine
    raise NoProposalChosen([child_label(o) for o in ours], [_shown(p) for p in theirs])


def accept_child(
    ours: Sequence[ChildProposal], chosen: Sequence[Proposal]
) -> tuple[Proposal, ChildProposal]:
    """Initiator: the responder must return exactly one of our proposals, with its SPI."""
    if len(chosen) == 1 and len(chosen[0].spi) == 4:
        for mine in ours:
            if _same_transforms(mine.to_proposal(chosen[0].number, chosen[0].spi), chosen[0]):
                return chosen[0], mine
    raise NoProposalChosen(
        [child_label(o) for o in ours],
        [_shown(p) for p in chosen],
        "the responder's choice was not offered",
    )


def child_label(proposal: ChildProposal) -> str:
    """A child proposal as logs and status show it: strongSwan notation, an AH one
    marked ``AH:`` (as strongSwan's own logs mark it), e.g. ``AH:sha256-esn``."""
    return f"AH:{proposal}" if isinstance(proposal, AhProposal) else str(proposal)


def _shown(proposal: Proposal) -> str:
    """A peer's child proposal as NO_PROPOSAL_CHOSEN lists it; an AH one says so."""
    text = render_proposal(proposal)
    return f"AH:{text}" if proposal.protocol == ProtocolId.AH else text


def _same_transforms(a: Proposal, b: Proposal) -> bool:
    key = lambda p: sorted(  # noqa: E731
        (int(t.type), t.id, t.key_length) for t in p.transforms
    )
    return a.protocol == b.protocol and key(a) == key(b)
