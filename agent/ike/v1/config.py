"""What an IKEv1 SA needs to know about its peer (RFC 2409): identities, the pre-shared
key, phase 1 proposals, the Quick mode child policy, lifetimes and retransmission.

Identities, child policies and ESP proposals are the IKEv2 core's own types
(agent.ike.config, agent.ike.proposals): the identity type numbers of RFC 2407
section 4.6.2.1 that an IKE peer is named by (IPV4_ADDR, FQDN, USER_FQDN, IPV6_ADDR,
DER_ASN1_DN) are the IKEv2 ones (RFC 7296 section 3.5), and an ESP proposal is the
same set of algorithms whichever IKE negotiates it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from ..config import ChildConfig, Identity
from ..constants import EncrId, TransformType
from ..errors import LocalError, UnsupportedTransform
from ..proposals import AhProposal
from ..signatures import CertificateAuth
from ..transforms import DH_GROUPS, PROPOSAL_TOKENS, Encr, EncrMode, transform_keyword
from .auth import auth_method
from .constants import AuthMethod, P1Hash

DEFAULT_IKE_LIFETIME = 10800
"""Seconds of a phase 1 SA offered in LIFE_DURATION (strongSwan's 3 h reauth time)."""
DEFAULT_CHILD_LIFETIME = 3600
"""Seconds of a Quick mode SA offered in SA Life Duration (RFC 2407 section 4.5)."""

_HASH_KEYWORDS: dict[str, P1Hash] = {
    "sha1": P1Hash.SHA1,
    "sha256": P1Hash.SHA2_256,
    "sha384": P1Hash.SHA2_384,
    "sha512": P1Hash.SHA2_512,
}
"""strongSwan's integrity keywords name the phase 1 hash in an IKEv1 proposal."""
_PRF_KEYWORDS: dict[str, P1Hash] = {f"prf{k}": v for k, v in _HASH_KEYWORDS.items()}
_AES_CBC_BITS = (128, 192, 256)
"""RFC 3602 key sizes, chosen with the Key Length attribute (RFC 2409 Appendix A)."""


class ExchangeMode(Enum):
    """How phase 1 is carried (RFC 2409 section 5)."""

    MAIN = "main"
    AGGRESSIVE = "aggressive"


def aes_cbc(bits: int) -> Encr:
    """AES-CBC with ``bits``-bit keys. The registry in transforms.py has no 192-bit AES
    (IKEv2 proposals never carry it); phase 1 may, and CBC needs nothing more."""
    if bits not in _AES_CBC_BITS:
        raise UnsupportedTransform(f"AES-CBC with {bits}-bit keys is not supported")
    return Encr(EncrId.AES_CBC, bits, EncrMode.CBC)


@dataclass(frozen=True)
class Phase1Proposal:
    """One phase 1 transform (RFC 2409 Appendix A attributes): AES-CBC with its key
    length, the hash (its HMAC is the prf), the Diffie-Hellman group."""

    encr: Encr
    hash: P1Hash
    group: int

    @classmethod
    def parse(cls, text: str) -> Phase1Proposal:
        """strongSwan's notation for an IKEv1 proposal: ``aes256-sha256-modp2048``
        (``prfsha256`` is accepted for the hash; one algorithm of each kind)."""
        encr: Encr | None = None
        hash_: P1Hash | None = None
        group: int | None = None
        for token in (t for t in text.strip().lower().split("-") if t):
            if token.startswith("aes") and token[3:].isdigit():
                if encr is not None:
                    raise LocalError(f"IKEv1 proposal {text!r} names two ciphers")
                encr = aes_cbc(int(token[3:]))
            elif token in _HASH_KEYWORDS or token in _PRF_KEYWORDS:
                named = _HASH_KEYWORDS.get(token) or _PRF_KEYWORDS[token]
                if hash_ is not None and hash_ is not named:
                    raise LocalError(f"IKEv1 proposal {text!r} names two hashes")
                hash_ = named
            elif (entry := PROPOSAL_TOKENS.get(token)) is not None and entry[0] == (
                TransformType.DH
            ):
                if group is not None:
                    raise LocalError(f"IKEv1 proposal {text!r} names two DH groups")
                group = entry[1]
            else:
                raise LocalError(f"IKEv1 proposal {text!r}: unknown or unsupported {token!r}")
        if encr is None or hash_ is None or group is None:
            raise LocalError(
                f"IKEv1 proposal {text!r} needs AES-CBC, a hash (sha1, sha256, sha384, "
                "sha512) and a DH group"
            )
        return cls(encr, hash_, group)

    def __post_init__(self) -> None:
        if self.encr.mode is not EncrMode.CBC:
            raise UnsupportedTransform(f"IKEv1 phase 1 takes CBC ciphers, not {self.encr.name}")
        if self.group not in DH_GROUPS:
            raise UnsupportedTransform(f"Diffie-Hellman group {self.group} is not supported")

    def __str__(self) -> str:
        group = transform_keyword(TransformType.DH, self.group) or f"DH_{self.group}"
        hash_name = next(k for k, v in _HASH_KEYWORDS.items() if v is self.hash)
        return f"{self.encr.name}-{hash_name}-{group}"


@dataclass(frozen=True)
class IkeV1Config:
    local_id: Identity
    remote_id: Identity
    psk: bytes = field(repr=False)
    ike_proposals: tuple[Phase1Proposal, ...]
    child: ChildConfig
    """The Quick mode policy: ESP proposals (a ``dh`` group asks for PFS), one traffic
    selector each way (IKEv1 ID payloads carry one), tunnel or transport."""
    phase1_mode: ExchangeMode = ExchangeMode.MAIN
    certificates: CertificateAuth | None = None
    """Authenticate both ways with RSA or ECDSA signatures and X.509 certificates (RFC
    2409 section 5.1, RFC 4754) instead of the pre-shared key, in Main or Aggressive mode."""
    ike_lifetime: int = DEFAULT_IKE_LIFETIME
    child_lifetime: int = DEFAULT_CHILD_LIFETIME
    child_lifetime_kb: int | None = None
    """Kilobytes a Quick mode SA may carry, offered as a second Life Type/Life Duration
    pair (RFC 2407 section 4.5); None: no volume limit is offered."""
    retransmit_timeout: float = 2.0
    """Seconds before the first retransmission; doubled each time."""
    retransmit_tries: int = 4
    """Retransmissions before the exchange, and a phase 1 SA not yet up, is given up."""
    half_open_timeout: float = 30.0
    """Responder: seconds a phase 1 SA may take to complete after the first message."""
    dpd_delay: float | None = None
    """Seconds of silence before an R-U-THERE (RFC 3706 section 5.3); None: off, though
    the DPD vendor ID is sent and a peer's R-U-THERE is always answered."""
    force_encap: bool = False
    """Claim a NAT in NAT-D (RFC 3947 section 3.2) so ESP is always UDP-encapsulated."""
    nat_traversal: bool = True
    """Send the RFC 3947 vendor ID and NAT-D payloads."""
    initial_contact: bool = True
    """Initiator: send INITIAL-CONTACT (RFC 2407 section 4.6.3.3) with the phase 1
    identity, telling the peer we hold no other SA with it."""

    accepted_psks: tuple[bytes, ...] = field(default=(), repr=False)
    """Further pre-shared keys the peer may have authenticated with while both ends move
    to a new key (``rotate psk``). SKEYID hangs on the key (RFC 2409 section 5), so
    each is tried in turn: a Main mode responder keeps the one under which message 5
    decrypts and HASH_I verifies, an Aggressive mode initiator the one under which
    HASH_R in message 2 verifies. A Main mode initiator and an Aggressive mode
    responder (which proves itself in message 2, before the initiator does) always use
    ``psk``."""

    @property
    def peer_psks(self) -> tuple[bytes, ...]:
        """Every key the peer may have used: ours first, then the accepted ones."""
        return (self.psk, *self.accepted_psks)

    @property
    def auth(self) -> AuthMethod:
        """The phase 1 Authentication Method (RFC 2409 Appendix A) we offer and take."""
        return AuthMethod.PSK if self.certificates is None else auth_method(self.certificates)

    def __post_init__(self) -> None:
        if not self.ike_proposals:
            raise LocalError("no IKEv1 proposals configured")
        if self.certificates is None and not self.psk:
            raise LocalError("empty pre-shared key")
        if any(not key for key in self.accepted_psks):
            raise LocalError("empty accepted pre-shared key")
        if self.accepted_psks and self.certificates is not None:
            raise LocalError("accepted pre-shared keys given with certificate authentication")
        if self.certificates is not None:
            auth_method(self.certificates)  # refuses keys we cannot sign with
        for name, value in (
            ("ike_lifetime", self.ike_lifetime),
            ("child_lifetime", self.child_lifetime),
            ("child_lifetime_kb", self.child_lifetime_kb),
        ):
            if value is not None and value <= 0:
                raise LocalError(f"{name} must be positive, got {value}")
        if self.dpd_delay is not None and self.dpd_delay <= 0:
            raise LocalError(f"dpd_delay must be positive, got {self.dpd_delay}")
        groups = {p.dh for p in self.child.proposals}
        if len(groups) > 1:
            # RFC 2409 section 5.5: message 1 carries one KE, so one PFS group (or none).
            raise LocalError(
                f"child {self.child.name!r}: IKEv1 Quick mode offers one PFS group, the "
                f"ESP and AH proposals name {sorted(str(g) for g in groups)}"
            )
        for proposal in self.child.proposals:
            if proposal.esn:
                what = "AH" if isinstance(proposal, AhProposal) else "ESP"
                raise UnsupportedTransform(
                    f"{what} proposal {proposal}: IKEv1 here negotiates no extended sequence "
                    "numbers"
                )
            if proposal.dh is not None and proposal.dh not in DH_GROUPS:
                raise UnsupportedTransform(f"PFS group {proposal.dh} is not supported")
