"""Proposals in strongSwan's notation, SA payload building and selection.

``IkeProposal.parse("aes256gcm16-prfsha384-x25519")`` and
``EspProposal.parse("aes128-sha256")`` read what operators already write in
swanctl.conf. Selection follows RFC 7296 section 2.7 with our configured order
taking precedence (strongSwan's default), and a failure names both sides.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .constants import (
    DhGroup,
    EncrId,
    EsnId,
    IntegId,
    NotifyType,
    PrfId,
    ProtocolId,
    TransformType,
    enum_name,
)
from .errors import LocalError, ProtocolError, UnsupportedTransform
from .sa_payload import Proposal, Transform
from .transforms import Encr, Integ, Prf, encr_for, integ_for, prf_for

_ENCR_TOKENS: dict[str, tuple[int, int | None]] = {
    "aes128": (EncrId.AES_CBC, 128),
    "aes256": (EncrId.AES_CBC, 256),
    "aes128gcm16": (EncrId.AES_GCM_16, 128),
    "aes256gcm16": (EncrId.AES_GCM_16, 256),
    "chacha20poly1305": (EncrId.CHACHA20_POLY1305, None),
}
_INTEG_TOKENS = {
    "sha256": IntegId.HMAC_SHA2_256_128,
    "sha384": IntegId.HMAC_SHA2_384_192,
    "sha512": IntegId.HMAC_SHA2_512_256,
}
_PRF_TOKENS = {
    "prfsha256": PrfId.HMAC_SHA2_256,
    "prfsha384": PrfId.HMAC_SHA2_384,
    "prfsha512": PrfId.HMAC_SHA2_512,
}
# An integrity algorithm without an explicit PRF implies the matching PRF (strongSwan).
_PRF_FOR_INTEG = {
    IntegId.HMAC_SHA2_256_128: PrfId.HMAC_SHA2_256,
    IntegId.HMAC_SHA2_384_192: PrfId.HMAC_SHA2_384,
    IntegId.HMAC_SHA2_512_256: PrfId.HMAC_SHA2_512,
}
_DH_TOKENS = {
    "modp2048": DhGroup.MODP_2048,
    "ecp256": DhGroup.ECP_256,
    "ecp384": DhGroup.ECP_384,
    "x25519": DhGroup.CURVE25519,
    "curve25519": DhGroup.CURVE25519,
}
_DH_NAMES: dict[int, str] = {v: k for k, v in _DH_TOKENS.items() if k != "curve25519"}


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
    bits = None if encr.id == EncrId.CHACHA20_POLY1305 else encr.key_bits
    return Transform.with_key_length(TransformType.ENCR, encr.id, bits)


@dataclass(frozen=True)
class IkeProposal:
    encr: Encr
    prf: Prf
    integ: Integ | None
    dh: int

    @classmethod
    def parse(cls, text: str) -> IkeProposal:
        encr = prf = integ = dh = None
        for token in _tokens(text):
            if token in _ENCR_TOKENS and encr is None:
                encr = encr_for(*_ENCR_TOKENS[token])
            elif token in _PRF_TOKENS and prf is None:
                prf = prf_for(_PRF_TOKENS[token])
            elif token in _INTEG_TOKENS and integ is None:
                integ = integ_for(_INTEG_TOKENS[token])
            elif token in _DH_TOKENS and dh is None:
                dh = _DH_TOKENS[token]
            else:
                raise LocalError(f"IKE proposal {text!r}: unknown or repeated algorithm {token!r}")
        if encr is None or dh is None:
            raise LocalError(f"IKE proposal {text!r} needs an encryption algorithm and a DH group")
        if encr.is_aead and integ is not None:
            raise LocalError(f"IKE proposal {text!r}: {encr.name} takes no integrity algorithm")
        if not encr.is_aead and integ is None:
            raise LocalError(f"IKE proposal {text!r}: {encr.name} needs an integrity algorithm")
        if prf is None:
            if integ is None:
                raise LocalError(f"IKE proposal {text!r}: an AEAD proposal needs a PRF")
            prf = prf_for(_PRF_FOR_INTEG[integ.id])  # type: ignore[index]
        return cls(encr, prf, integ, dh)

    def __str__(self) -> str:
        parts = [self.encr.name]
        if self.integ:
            parts.append(self.integ.name)
        parts += [self.prf.name, _DH_NAMES.get(self.dh, f"dh{self.dh}")]
        return "-".join(parts)

    def to_proposal(self, number: int, spi: bytes = b"") -> Proposal:
        transforms = [_encr_transform(self.encr), Transform(TransformType.PRF, self.prf.id)]
        if self.integ:
            transforms.append(Transform(TransformType.INTEG, self.integ.id))
        transforms.append(Transform(TransformType.DH, self.dh))
        return Proposal(number, ProtocolId.IKE, spi, transforms)


@dataclass(frozen=True)
class EspProposal:
    encr: Encr
    integ: Integ | None
    esn: bool = False
    dh: int | None = None
    """PFS group for CREATE_CHILD_SA (section 1.3.1); never sent in IKE_AUTH (section 1.2)."""

    @classmethod
    def parse(cls, text: str) -> EspProposal:
        encr = integ = dh = None
        esn = False
        for token in _tokens(text):
            if token in _ENCR_TOKENS and encr is None:
                encr = encr_for(*_ENCR_TOKENS[token])
            elif token in _INTEG_TOKENS and integ is None:
                integ = integ_for(_INTEG_TOKENS[token])
            elif token in _DH_TOKENS and dh is None:
                dh = _DH_TOKENS[token]
            elif token in ("esn", "noesn"):
                esn = token == "esn"
            else:
                raise LocalError(f"ESP proposal {text!r}: unknown or repeated algorithm {token!r}")
        if encr is None:
            raise LocalError(f"ESP proposal {text!r} needs an encryption algorithm")
        if encr.is_aead == (integ is not None):
            need = "takes no" if encr.is_aead else "needs an"
            raise LocalError(f"ESP proposal {text!r}: {encr.name} {need} integrity algorithm")
        return cls(encr, integ, esn, dh)

    def __str__(self) -> str:
        parts = [self.encr.name] + ([self.integ.name] if self.integ else [])
        if self.dh is not None:
            parts.append(_DH_NAMES.get(self.dh, f"dh{self.dh}"))
        return "-".join(parts + (["esn"] if self.esn else []))

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


def describe_proposal(proposal: Proposal) -> str:
    """Their proposal in our notation where we can name it, raw IDs otherwise."""
    names = []
    for t in proposal.transforms:
        name = f"{enum_name(TransformType, t.type)}:{t.id}"
        try:
            if t.type == TransformType.ENCR:
                name = encr_for(t.id, t.key_length).name
            elif t.type == TransformType.PRF:
                name = prf_for(t.id).name
            elif t.type == TransformType.INTEG:
                name = integ_for(t.id).name
            elif t.type == TransformType.DH:
                name = _DH_NAMES.get(t.id, name)
            elif t.type == TransformType.ESN:
                name = "esn" if t.id == EsnId.ESN else "noesn"
        except UnsupportedTransform:  # an unsupported ID keeps its raw form
            pass
        names.append(name)
    return "/".join(names)


def _offers(proposal: Proposal, kind: int, id: int, key_bits: int | None = None) -> bool:
    return any(
        t.type == kind and t.id == id and (key_bits is None or t.key_length == key_bits)
        for t in proposal.transforms
    )


def _types(proposal: Proposal) -> set[int]:
    return {int(t.type) for t in proposal.transforms}


def _encr_bits(encr: Encr) -> int | None:
    return None if encr.id == EncrId.CHACHA20_POLY1305 else encr.key_bits


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
        _offers(theirs, TransformType.ENCR, ours.encr.id, _encr_bits(ours.encr))
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
    raise NoProposalChosen(ours, [describe_proposal(p) for p in theirs])


def accept_ike(ours: Sequence[IkeProposal], chosen: Sequence[Proposal]) -> IkeProposal:
    """Initiator: the responder must return exactly one of our proposals, one transform each."""
    if len(chosen) == 1:
        for mine in ours:
            reply = mine.to_proposal(chosen[0].number)
            if _same_transforms(reply, chosen[0]):
                return mine
    raise NoProposalChosen(
        ours, [describe_proposal(p) for p in chosen], "the responder's choice was not offered"
    )


def _esp_matches(ours: EspProposal, theirs: Proposal) -> bool:
    if theirs.protocol != ProtocolId.ESP or len(theirs.spi) != 4:
        return False
    if not _types(theirs) <= {int(t) for t in TransformType}:
        return False
    if ours.integ is None and any(
        t.type == TransformType.INTEG and t.id != IntegId.NONE for t in theirs.transforms
    ):
        return False
    esn_ok = _offers(theirs, TransformType.ESN, EsnId.ESN if ours.esn else EsnId.NO_ESN)
    if TransformType.ESN not in _types(theirs):
        esn_ok = not ours.esn  # no ESN transform means no ESN
    if ours.dh is not None:
        dh_ok = _offers(theirs, TransformType.DH, ours.dh)
    else:  # no PFS: they must offer "no DH" or no DH transform at all
        dh_ok = TransformType.DH not in _types(theirs) or _offers(
            theirs, TransformType.DH, DhGroup.NONE
        )
    return (
        dh_ok
        and _offers(theirs, TransformType.ENCR, ours.encr.id, _encr_bits(ours.encr))
        and (ours.integ is None or _offers(theirs, TransformType.INTEG, ours.integ.id))
        and esn_ok
    )


def select_esp(
    ours: Sequence[EspProposal], theirs: Sequence[Proposal]
) -> tuple[Proposal, EspProposal]:
    """Responder: our first ESP proposal that one of theirs offers; returns their proposal too
    (its number and SPI are needed for the reply)."""
    for mine in ours:
        for proposal in theirs:
            if _esp_matches(mine, proposal):
                return proposal, mine
    raise NoProposalChosen(ours, [describe_proposal(p) for p in theirs])


def accept_esp(
    ours: Sequence[EspProposal], chosen: Sequence[Proposal]
) -> tuple[Proposal, EspProposal]:
    if len(chosen) == 1 and len(chosen[0].spi) == 4:
        for mine in ours:
            if _same_transforms(mine.to_proposal(chosen[0].number, chosen[0].spi), chosen[0]):
                return chosen[0], mine
    raise NoProposalChosen(
        ours, [describe_proposal(p) for p in chosen], "the responder's choice was not offered"
    )


def _same_transforms(a: Proposal, b: Proposal) -> bool:
    key = lambda p: sorted(  # noqa: E731
        (int(t.type), t.id, t.key_length) for t in p.transforms
    )
    return a.protocol == b.protocol and key(a) == key(b)
