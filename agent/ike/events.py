"""Events the IKE core hands out (aioquic style: small dataclasses, read via next_event).

Keys leave the core only inside these events.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .config import Mode
from .constants import ProtocolId
from .payloads import TrafficSelector

if TYPE_CHECKING:
    from .ike_sa import IkeSa

Address = tuple[str, int]


@dataclass(frozen=True)
class IkeSaEstablished:
    spi_i: bytes
    """Initiator's IKE SPI."""
    spi_r: bytes
    """Responder's IKE SPI."""
    proposal: str
    """The negotiated IKE proposal in strongSwan notation."""
    local_id: str
    remote_id: str
    peer: Address
    """Where the peer's datagrams come from."""
    nat_local: bool = False
    """A NAT rewrites our address (or we faked one to force encapsulation)."""
    nat_remote: bool = False
    """A NAT rewrites the peer's address."""
    initial_contact: bool = False
    """The peer sent INITIAL_CONTACT (RFC 7296 section 2.4): it holds no other IKE SA
    with us, so any we hold with it are stale."""


@dataclass(frozen=True)
class IkeSaFailed:
    reason: str
    """Why, in the field's words, e.g. ``AUTHENTICATION_FAILED: ...``."""
    notify: int | None = None
    """The RFC 7296 error Notify type behind the failure, when there is one."""


@dataclass(frozen=True)
class ChildSaEstablished:
    name: str
    """The child configuration's name."""
    spi_in: bytes
    """SPI we chose: the peer sends to it."""
    spi_out: bytes
    """SPI the peer chose: we send to it."""
    encr_id: int
    """The ESP encryption transform (RFC 7296 section 3.3.2); 0 for AH."""
    encr_key_bits: int
    """0 for AH."""
    integ_id: int | None
    """The integrity transform (type 3 IDs, also for an IKEv1 SA): ESP's with a non-AEAD
    cipher, AH's always (HMAC-SHA2, HMAC-SHA1-96 or AES-GMAC); None for AEAD ESP."""
    esn: bool
    encr_key_in: bytes = field(repr=False)
    """Decryption key material for inbound ESP (AEAD keys include the 4-byte salt);
    empty for AH."""
    integ_key_in: bytes = field(repr=False)
    """Integrity key for inbound packets (AH: the whole KEYMAT of the direction; an
    AES-GMAC key ends with its 4-byte salt, RFC 4543)."""
    encr_key_out: bytes = field(repr=False)
    integ_key_out: bytes = field(repr=False)
    local_ts: tuple[TrafficSelector, ...]
    remote_ts: tuple[TrafficSelector, ...]
    mode: Mode
    proposal: str
    """The negotiated proposal in strongSwan notation; an AH one marked ``AH:``."""
    encap: bool = False
    """ESP goes in UDP (RFC 3948) on port 4500 because a NAT was detected (never AH)."""
    protocol: ProtocolId = ProtocolId.ESP
    """The child's IPsec protocol: ESP (3) or AH (2), numbered as both IKEv2 (RFC 7296
    section 3.3.1) and IKEv1 (RFC 2407 section 4.4.1) number them. IP protocol 50 or 51
    on the wire."""


@dataclass(frozen=True)
class ChildSaFailed:
    name: str
    reason: str
    notify: int | None = None


@dataclass(frozen=True)
class ChildSaRekeyed:
    """A rekeyed child's replacement is installed (make-before-break, section 2.8).

    The old SA stays usable for inbound traffic until its ChildSaDeleted event.
    """

    old_spi_in: bytes
    old_spi_out: bytes
    new: ChildSaEstablished
    """The new SA: SPIs, keys, selectors and algorithms."""
    initiator: bool = True
    """We started the exchange that made ``new``: the peer already holds its inbound
    half, so outbound traffic may move at once; the responder waits for the old SA's
    delete (section 2.8)."""
    redundant: bool = False
    """``new`` lost a simultaneous rekey (section 2.8.1, lowest nonce) and is deleted
    next: the peer never sends on it, so nothing should move to it; the old SA's
    replacement is the SA of the peer's exchange (the other ChildSaRekeyed)."""


@dataclass(frozen=True)
class ChildSaDeleted:
    name: str
    spi_in: bytes
    spi_out: bytes
    reason: str
    """``deleted by peer``, ``deleted by us``, ``rekeyed``, ``IKE SA deleted: ...``."""


@dataclass(frozen=True)
class IkeSaRekeyed:
    """The IKE SA was replaced (section 2.18); its children now live in ``new_sa``.

    The caller must route datagrams for the new SPIs to ``new_sa`` and drive it like
    any other IKE SA; the old one finishes by deleting itself (IkeSaDeleted).
    """

    old_spi_i: bytes
    old_spi_r: bytes
    new_spi_i: bytes
    new_spi_r: bytes
    proposal: str
    new_sa: IkeSa = field(repr=False, compare=False)
    carries_children: bool = True
    """False for an SA of a simultaneous rekey (section 2.8.2) that is redundant or not
    yet known not to be: route datagrams to it until its IkeSaDeleted, but the children
    live in the SA of the last IkeSaRekeyed that carries them."""


@dataclass(frozen=True)
class IkeSaDeleted:
    spi_i: bytes
    spi_r: bytes
    reason: str
    """``deleted by peer``, ``deleted by us``, ``rekeyed``, ``peer dead: ...``."""


@dataclass(frozen=True)
class PeerErrorNotify:
    """An error Notify the peer sent that does not end an exchange we track
    (section 3.10.1), e.g. INVALID_SPI for ESP traffic, or one refusing our request."""

    notify: int
    reason: str


@dataclass(frozen=True)
class IkeSaRekeyFailed:
    """Our rekey of this IKE SA ended without a new SA: the peer refused it (e.g.
    TEMPORARY_FAILURE while one of its exchanges is in flight, section 2.25) or its
    answer was unusable."""

    notify: int
    reason: str
    peer_rekey_stands: bool
    """The peer's crossing rekey (section 2.8.2) replaces the SA instead."""


@dataclass(frozen=True)
class LivenessAnswered:
    """The peer answered our liveness check (an empty INFORMATIONAL request, section
    1.4) with an authenticated response: it holds this IKE SA and reaches us."""


IkeEvent = (
    IkeSaEstablished
    | IkeSaFailed
    | ChildSaEstablished
    | ChildSaFailed
    | ChildSaRekeyed
    | ChildSaDeleted
    | IkeSaRekeyed
    | IkeSaDeleted
    | IkeSaRekeyFailed
    | PeerErrorNotify
    | LivenessAnswered
)
