"""strongSwan proposal strings -> IKEv2 transforms by IANA number.

A proposal is algorithm tokens joined by ``-``, e.g. ``aes256gcm16-prfsha384-x25519``
(IKE) or ``aes256-sha256-noesn`` (ESP). Several tokens of one kind are alternatives
(RFC 7296 section 3.3: transforms of the same type within a proposal are OR'ed).

Rules (RFC 7296 section 3.3.3, RFC 8247 / RFC 8221):

- IKE: encryption, integrity (unless AEAD), PRF and a DH group are mandatory; ESN is
  not allowed. Without an explicit PRF, a non-AEAD proposal uses the PRF of the same
  hash as its integrity algorithm (as strongSwan does); an AEAD proposal has no
  integrity algorithm to follow, so it must name its PRF.
- ESP: encryption, integrity (unless AEAD) and ESN (``noesn`` when none is written);
  a DH group asks for PFS on rekeys; PRF is not allowed.
- AEAD ciphers (GCM, ChaCha20-Poly1305) carry their own integrity: mixing them with an
  integrity algorithm, or with non-AEAD ciphers in one proposal, is an error.

A peer reached with IKEv1 (``ike_version: 1``) reads the same keywords under the rules
of RFC 2409 and RFC 2407 (:class:`~.model.IkeVersion` is the version dimension of this
one table, not a second table):

- IKE (phase 1, RFC 2409 Appendix A): a CBC cipher with a hash (``sha1`` too, for
  IKEv1 peers only); no AEAD cipher; the PRF is the HMAC of the negotiated hash
  (section 5), so a PRF keyword other than the integrity's own is an error. DH groups
  as for IKEv2.
- ESP (phase 2, RFC 2407 section 4.4.4 and RFC 4106 section 8.1 for AES-GCM): AES-CBC
  with an HMAC, or AES-GCM-16; a DH group asks for PFS. Keywords with no IKEv1 number
  (ChaCha20-Poly1305 is defined for IKEv2 only, RFC 7634) and extended sequence numbers
  are refused.

AH (``ah_proposals``, RFC 4302) authenticates without encrypting, so an AH proposal
names integrity algorithms only (RFC 7296 section 3.3: transforms INTEG and ESN, and a
DH group for PFS), never an encryption algorithm or a PRF:

- ``sha256``, ``sha384``, ``sha512`` (RFC 4868), ``aes128gmac``, ``aes192gmac``,
  ``aes256gmac`` (RFC 4543), and ``sha1`` (HMAC-SHA1-96, RFC 2404) for old peers only
  when the inventory writes it (no default names it);
- ``esn`` (IKEv2 only, as for ESP) or ``noesn`` (the default); a DH group asks for PFS.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache

from vpnfleet.controller.inventory import did_you_mean

from .model import IkeVersion, Proposal, Transform


class ProposalKind(StrEnum):
    """Which SA a proposal is for; the value names it in inventory variables
    (``ike_proposals``) and messages."""

    IKE = "ike"
    ESP = "esp"
    AH = "ah"


# Transform types, RFC 7296 section 3.3.2.
ENCR, PRF, INTEG, DH, ESN = 1, 2, 3, 4, 5

# ENCR IDs: AES-CBC 12, AES-GCM with 16-octet ICV 20 (RFC 5282 / RFC 4106),
# ChaCha20-Poly1305 28 (RFC 7634).
ENCR_AES_CBC, ENCR_AES_GCM_16, ENCR_CHACHA20_POLY1305 = 12, 20, 28


_BOTH_VERSIONS = frozenset(IkeVersion)
_V1_ONLY = frozenset({IkeVersion.V1})
_V2_ONLY = frozenset({IkeVersion.V2})
_ALL_KINDS = frozenset(ProposalKind)
_AH_ONLY = frozenset({ProposalKind.AH})


@dataclass(frozen=True, slots=True)
class Token:
    """What one proposal keyword stands for."""

    transform: Transform
    aead: bool = False
    """An encryption algorithm that carries its own integrity (RFC 5282 section 8)."""
    versions: frozenset[IkeVersion] = _BOTH_VERSIONS
    """The IKE versions whose peers' proposals may name it."""
    kinds: frozenset[ProposalKind] = _ALL_KINDS
    """The proposals that may name it (ESP and AH only what the data plane implements)."""
    narrower: tuple[tuple[ProposalKind, frozenset[IkeVersion]], ...] = ()
    """Kinds whose proposals may name it for fewer IKE versions than ``versions``."""

    def allowed_versions(self, kind: ProposalKind) -> frozenset[IkeVersion]:
        return dict(self.narrower).get(kind, self.versions)


TOKENS: dict[str, Token] = {
    "aes128": Token(Transform(ENCR, ENCR_AES_CBC, 128)),
    "aes256": Token(Transform(ENCR, ENCR_AES_CBC, 256)),
    "aes128gcm16": Token(Transform(ENCR, ENCR_AES_GCM_16, 128), aead=True),
    "aes256gcm16": Token(Transform(ENCR, ENCR_AES_GCM_16, 256), aead=True),
    # RFC 7634 defines it for IKEv2 only: IKEv1 has no number for it.
    "chacha20poly1305": Token(
        Transform(ENCR, ENCR_CHACHA20_POLY1305), aead=True, versions=_V2_ONLY
    ),
    # AUTH_HMAC_SHA1_96 (RFC 2404) with PRF_HMAC_SHA1 (2): the phase 1 hash of IKEv1 peers
    # only (RFC 2409 Appendix A), and AH's integrity for old peers of either version
    # (only where the inventory writes it); IKEv2 SAs and the ESP data plane have no SHA-1.
    "sha1": Token(
        Transform(INTEG, 2),
        kinds=frozenset({ProposalKind.IKE, ProposalKind.AH}),
        narrower=((ProposalKind.IKE, _V1_ONLY),),
    ),
    # AUTH_HMAC_SHA2_256_128, _384_192, _512_256 (RFC 4868).
    "sha256": Token(Transform(INTEG, 12)),
    "sha384": Token(Transform(INTEG, 13)),
    "sha512": Token(Transform(INTEG, 14)),
    # AUTH_AES_128_GMAC, _192_, _256_ (RFC 4543): integrity for AH only (ESP's GMAC is
    # an encryption transform, ENCR_NULL_AUTH_AES_GMAC, which the data plane lacks).
    "aes128gmac": Token(Transform(INTEG, 9), kinds=_AH_ONLY),
    "aes192gmac": Token(Transform(INTEG, 10), kinds=_AH_ONLY),
    "aes256gmac": Token(Transform(INTEG, 11), kinds=_AH_ONLY),
    # PRF_HMAC_SHA2_256, _384, _512 (RFC 4868).
    "prfsha256": Token(Transform(PRF, 5)),
    "prfsha384": Token(Transform(PRF, 6)),
    "prfsha512": Token(Transform(PRF, 7)),
    # Key exchange groups: 2048-bit MODP 14 (RFC 3526), NIST P-256 19 and P-384 20
    # (RFC 5903), Curve25519 31 (RFC 8031).
    "modp2048": Token(Transform(DH, 14)),
    "ecp256": Token(Transform(DH, 19)),
    "ecp384": Token(Transform(DH, 20)),
    "x25519": Token(Transform(DH, 31)),
    "curve25519": Token(Transform(DH, 31)),
    # Extended sequence numbers (RFC 4303 section 2.2.1).
    # RFC 4304 adds ESN to IKEv1, but vpnfleet's IKEv1 does not negotiate it.
    "esn": Token(Transform(ESN, 1), versions=_V2_ONLY),
    "noesn": Token(Transform(ESN, 0)),
}

"""The controller's algorithm registry: every keyword an inventory may write."""

# Integrity hash -> PRF of the same hash, for IKE proposals that name no PRF.
_PRF_FOR_INTEG = {
    2: Transform(PRF, 2),
    12: Transform(PRF, 5),
    13: Transform(PRF, 6),
    14: Transform(PRF, 7),
}
_NO_ESN = Transform(ESN, 0)

KNOWN_TOKENS: tuple[str, ...] = tuple(TOKENS)


class ProposalError(ValueError):
    """A proposal string that cannot be used; the message quotes it and the bad part."""


@lru_cache(maxsize=4096)
def parse_proposal(text: str, kind: ProposalKind, version: IkeVersion = IkeVersion.V2) -> Proposal:
    """Parse one proposal for a peer reached with IKE ``version``; the same text gives
    the same (shared) object."""
    text = str(text)
    v1 = version is IkeVersion.V1
    where = f"{'IKEv1 ' if v1 else ''}{kind.upper()} proposal {text!r}"
    if not text.strip():
        raise ProposalError(f"{where}: empty proposal")
    by_type: dict[int, list[Transform]] = {ENCR: [], PRF: [], INTEG: [], DH: [], ESN: []}
    aead: set[bool] = set()
    for token in text.strip().lower().split("-"):
        if not token:
            raise ProposalError(f"{where}: empty algorithm between '-' separators")
        known = TOKENS.get(token)
        if known is None:
            hint = did_you_mean(token, TOKENS)
            raise ProposalError(f"{where}: unknown algorithm {token!r}{hint}")
        transform = known.transform
        if kind is ProposalKind.AH and transform.type == ENCR:
            raise ProposalError(
                f"{where}: {token!r} is an encryption algorithm, and AH only authenticates "
                "(RFC 4302): name integrity algorithms only (e.g. sha256), or write "
                "esp_proposals to encrypt"
            )
        if kind not in known.kinds:
            only = " and ".join(k.upper() for k in ProposalKind if k in known.kinds)
            raise ProposalError(
                f"{where}: {token!r} is for {only} proposals only (the {kind.upper()} "
                "data plane does not implement it)"
            )
        if version not in known.allowed_versions(kind):
            only = "IKEv2 peers" if v1 else "IKEv1 peers (ike_version: 1)"
            raise ProposalError(f"{where}: {token!r} is for {only} only")
        if v1 and known.aead and kind is ProposalKind.IKE:
            raise ProposalError(
                f"{where}: {token!r} is an AEAD cipher, which IKEv1 phase 1 does not have "
                "(RFC 2409 Appendix A): use a CBC cipher with a hash, e.g. "
                "aes256-sha256-modp2048"
            )
        if transform in by_type[transform.type]:
            raise ProposalError(f"{where}: {token!r} is written twice")
        if transform.type == ENCR:
            aead.add(known.aead)
        if kind is ProposalKind.IKE and transform.type == ESN:
            raise ProposalError(f"{where}: {token!r} (ESN) only applies to ESP proposals")
        if kind is not ProposalKind.IKE and transform.type == PRF:
            raise ProposalError(f"{where}: {token!r} (a PRF) only applies to IKE proposals")
        by_type[transform.type].append(transform)

    if kind is ProposalKind.AH:
        if not by_type[INTEG]:
            raise ProposalError(
                f"{where}: no integrity algorithm (e.g. sha256, aes128gmac): an AH proposal "
                "is its integrity algorithms"
            )
        by_type[ESN] = by_type[ESN] or [_NO_ESN]
        transforms = tuple(t for kind_ in (INTEG, DH, ESN) for t in by_type[kind_])
        return Proposal(text=text, transforms=transforms)
    if not by_type[ENCR]:
        raise ProposalError(f"{where}: no encryption algorithm (e.g. aes256gcm16, aes256)")
    if len(aead) > 1:
        raise ProposalError(
            f"{where}: mixes AEAD and non-AEAD encryption; write them as separate proposals"
        )
    is_aead = True in aead
    if is_aead and by_type[INTEG]:
        integ = next(t for t, v in TOKENS.items() if v.transform == by_type[INTEG][0])
        raise ProposalError(f"{where}: AEAD encryption carries its own integrity; remove {integ!r}")
    if not is_aead and not by_type[INTEG]:
        raise ProposalError(f"{where}: no integrity algorithm (e.g. sha256) for a non-AEAD cipher")
    if kind is ProposalKind.IKE:
        implied = list(dict.fromkeys(_PRF_FOR_INTEG[t.id] for t in by_type[INTEG]))
        if v1 and any(t not in implied for t in by_type[PRF]):
            bad = next(t for t in by_type[PRF] if t not in implied)
            prf = next(k for k, v in TOKENS.items() if v.transform == bad)
            raise ProposalError(
                f"{where}: IKEv1 has no PRF of its own, it uses the HMAC of the hash "
                f"(RFC 2409 section 5): remove {prf!r}"
            )
        if not by_type[PRF]:
            if is_aead:
                raise ProposalError(
                    f"{where}: an AEAD IKE proposal needs an explicit PRF (e.g. prfsha384)"
                )
            by_type[PRF] = implied
        if not by_type[DH]:
            raise ProposalError(f"{where}: no DH group (e.g. x25519, ecp256, modp2048)")
    elif not by_type[ESN]:
        by_type[ESN] = [_NO_ESN]
    transforms = tuple(t for kind_ in (ENCR, PRF, INTEG, DH, ESN) for t in by_type[kind_])
    return Proposal(text=text, transforms=transforms)


def _compatible(a: Proposal, b: Proposal) -> bool:
    """Whether a responder could pick a transform of each type offered (RFC 7296 2.7)."""
    types_a = {t.type for t in a.transforms}
    if types_a != {t.type for t in b.transforms}:
        return False
    return all(
        any(t == u for t in a.transforms if t.type == kind for u in b.transforms)
        for kind in types_a
    )


@lru_cache(maxsize=4096)
def common_proposal(a: tuple[Proposal, ...], b: tuple[Proposal, ...]) -> Proposal | None:
    """The first of ``a`` that some proposal of ``b`` can agree with, or None."""
    for p in a:
        for q in b:
            if p == q or _compatible(p, q):
                return p
    return None
