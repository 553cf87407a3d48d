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
from .errors import LocalError, ProtocolError
from .sa_payload import Proposal, Transform
from .transforms import Encr, Integ, Prf, encr_for, integ_for, prf_for

# strongSwan's keywords (swanctl.conf ``proposals``) for every transform we can name, also
# those this core does not implement, so that what a peer offers is shown in the words
# its operator wrote. ``{bits}`` is the Key Length attribute.
_ENCR_KEYWORDS: dict[int, str] = {
    EncrId.DES3: "3des",
    EncrId.NULL: "null",
    EncrId.AES_CBC: "aes{bits}",
    EncrId.AES_CTR: "aes{bits}ctr",
    EncrId.AES_CCM_8: "aes{bits}ccm8",
    EncrId.AES_CCM_12: "aes{bits}ccm12",
    EncrId.AES_CCM_16: "aes{bits}ccm16",
    EncrId.AES_GCM_8: "aes{bits}gcm8",
    EncrId.AES_GCM_12: "aes{bits}gcm12",
    EncrId.AES_GCM_16: "aes{bits}gcm16",
    EncrId.CHACHA20_POLY1305: "chacha20poly1305",
}
_KEYWORDS: dict[TransformType, dict[int, str]] = {
    TransformType.PRF: {
        PrfId.HMAC_MD5: "prfmd5",
        PrfId.HMAC_SHA1: "prfsha1",
        PrfId.AES128_XCBC: "prfaesxcbc",
        PrfId.HMAC_SHA2_256: "prfsha256",
        PrfId.HMAC_SHA2_384: "prfsha384",
        PrfId.HMAC_SHA2_512: "prfsha512",
        PrfId.AES128_CMAC: "prfaescmac",
    },
    TransformType.INTEG: {
        IntegId.HMAC_MD5_96: "md5",
        IntegId.HMAC_SHA1_96: "sha1",
        IntegId.AES_XCBC_96: "aesxcbc",
        IntegId.HMAC_SHA2_256_128: "sha256",
        IntegId.HMAC_SHA2_384_192: "sha384",
        IntegId.HMAC_SHA2_512_256: "sha512",
    },
    TransformType.DH: {
        DhGroup.MODP_1024: "modp1024",
        DhGroup.MODP_1536: "modp1536",
        DhGroup.MODP_2048: "modp2048",
        DhGroup.MODP_3072: "modp3072",
        DhGroup.MODP_4096: "modp4096",
        DhGroup.ECP_256: "ecp256",
        DhGroup.ECP_384: "ecp384",
        DhGroup.ECP_521: "ecp521",
        DhGroup.CURVE25519: "x25519",
        DhGroup.CURVE448: "x448",
    },
    TransformType.ESN: {EsnId.NO_ESN: "noesn", EsnId.ESN: "esn"},
}


def transform_keyword(kind: int, id: int, key_bits: int | None = None) -> str | None:
    """strongSwan's keyword for one transform (``aes256``, ``sha256``, ``x25519``), None
    when it has none (an unknown ID, or a cipher that needs a key length and has none)."""
    if kind == TransformType.ENCR:
        template = _ENCR_KEYWORDS.get(id)
        if template is None or ("{bits}" in template and not key_bits):
            return None
        return template.format(bits=key_bits)
    try:
        return _KEYWORDS[TransformType(kind)].get(id)
    except ValueError:
        return None


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


def _keyword(kind: int, id: int, key_bits: int | None = None) -> str:
    keyword = transform_keyword(kind, id, key_bits)
    assert keyword is not None, (kind, id, key_bits)
    return keyword


# What this core implements, by the keywords above (proposal parsing).
_ENCR_TOKENS: dict[str, tuple[int, int | None]] = {
    _keyword(TransformType.ENCR, encr, bits): (encr, bits)
    for encr, bits in (
        (EncrId.AES_CBC, 128),
        (EncrId.AES_CBC, 256),
        (EncrId.AES_GCM_16, 128),
        (EncrId.AES_GCM_16, 256),
        (EncrId.CHACHA20_POLY1305, None),
    )
}
_INTEG_TOKENS = {
    _keyword(TransformType.INTEG, integ): integ
    for integ in (IntegId.HMAC_SHA2_256_128, IntegId.HMAC_SHA2_384_192, IntegId.HMAC_SHA2_512_256)
}
_PRF_TOKENS = {
    _keyword(TransformType.PRF, prf): prf
    for prf in (PrfId.HMAC_SHA2_256, PrfId.HMAC_SHA2_384, PrfId.HMAC_SHA2_512)
}
# An integrity algorithm without an explicit PRF implies the matching PRF (strongSwan).
_PRF_FOR_INTEG = {
    IntegId.HMAC_SHA2_256_128: PrfId.HMAC_SHA2_256,
    IntegId.HMAC_SHA2_384_192: PrfId.HMAC_SHA2_384,
    IntegId.HMAC_SHA2_512_256: PrfId.HMAC_SHA2_512,
}
_DH_TOKENS = {
    **{
        _keyword(TransformType.DH, group): group
        for group in (DhGroup.MODP_2048, DhGroup.ECP_256, DhGroup.ECP_384, DhGroup.CURVE25519)
    },
    "curve25519": DhGroup.CURVE25519,  # strongSwan's other name for x25519
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
        return render_proposal(self.to_proposal(1))

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
    raise NoProposalChosen(ours, [render_proposal(p) for p in theirs])


def accept_esp(
    ours: Sequence[EspProposal], chosen: Sequence[Proposal]
) -> tuple[Proposal, EspProposal]:
    if len(chosen) == 1 and len(chosen[0].spi) == 4:
        for mine in ours:
            if _same_transforms(mine.to_proposal(chosen[0].number, chosen[0].spi), chosen[0]):
                return chosen[0], mine
    raise NoProposalChosen(
        ours, [render_proposal(p) for p in chosen], "the responder's choice was not offered"
    )


def _same_transforms(a: Proposal, b: Proposal) -> bool:
    key = lambda p: sorted(  # noqa: E731
        (int(t.type), t.id, t.key_length) for t in p.transforms
    )
    return a.protocol == b.protocol and key(a) == key(b)
