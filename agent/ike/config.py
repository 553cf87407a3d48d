"""What an IKE SA needs to know about its peer: identities, credentials, proposals,
the first child SA's policy and the retransmission schedule."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from enum import StrEnum

from cryptography import x509

from .constants import IdType
from .errors import LocalError
from .payloads import IdPayload, TrafficSelector
from .proposals import AhProposal, ChildProposal, EspProposal, IkeProposal
from .signatures import CertificateAuth

DEFAULT_FRAGMENT_SIZE = 1280
"""RFC 7383 section 2.5.1 suggests 1280 bytes for IPv6 and 576 for IPv4 when nothing is
known of the path; 1280 for both is the common default (strongSwan's too): 576 would
split most certificate exchanges for no gain on today's paths."""
MIN_FRAGMENT_SIZE = 256
"""Below this an IPv6 fragment with the widest ICV would carry almost nothing."""
MAX_FRAGMENT_SIZE = 65535


@dataclass(frozen=True)
class Identity:
    """An IKE identity (RFC 7296 section 3.5)."""

    id_type: int
    data: bytes
    label: str = field(default="", compare=False)
    """How the identity was written, when it came from text (for DNs)."""

    @classmethod
    def parse(cls, text: str) -> Identity:
        """IP address, a distinguished name in RFC 4514 form (``CN=gw1,O=Example``),
        ``user@example.net`` (RFC822) or a host name (FQDN)."""
        try:
            address = ipaddress.ip_address(text)
        except ValueError:
            if not text:
                raise LocalError("empty identity") from None
            if "=" in text:
                try:
                    name = x509.Name.from_rfc4514_string(text)
                except ValueError as exc:
                    raise LocalError(f"identity {text!r} is not an RFC 4514 DN: {exc}") from None
                return cls(IdType.ID_DER_ASN1_DN, name.public_bytes(), name.rfc4514_string())
            kind = IdType.ID_RFC822_ADDR if "@" in text else IdType.ID_FQDN
            return cls(kind, text.encode())
        kind = IdType.ID_IPV4_ADDR if address.version == 4 else IdType.ID_IPV6_ADDR
        return cls(kind, address.packed)

    @classmethod
    def from_payload(cls, payload: IdPayload) -> Identity:
        return cls(payload.id_type, payload.data)

    def __str__(self) -> str:
        if self.id_type in (IdType.ID_IPV4_ADDR, IdType.ID_IPV6_ADDR):
            return str(ipaddress.ip_address(self.data))
        if self.id_type in (IdType.ID_FQDN, IdType.ID_RFC822_ADDR):
            return self.data.decode(errors="replace")
        if self.label:
            return self.label
        return f"id-type-{self.id_type}:{self.data.hex()}"


class Mode(StrEnum):
    """How a child SA's ESP carries packets (RFC 4301 section 4.1); transport mode is
    asked for with USE_TRANSPORT_MODE (RFC 7296 section 1.3.1)."""

    TUNNEL = "tunnel"
    TRANSPORT = "transport"


@dataclass(frozen=True)
class ChildConfig:
    name: str
    esp_proposals: tuple[EspProposal, ...]
    local_ts: tuple[TrafficSelector, ...]
    remote_ts: tuple[TrafficSelector, ...]
    mode: Mode = Mode.TUNNEL
    ah_proposals: tuple[AhProposal, ...] = ()
    """AH (RFC 4302) alternatives to ``esp_proposals``, offered before them in the same
    SA payload (RFC 7296 section 3.3); ``esp_proposals`` may then be empty."""

    def __post_init__(self) -> None:
        if not self.esp_proposals and not self.ah_proposals:
            raise LocalError(f"child {self.name!r} has no ESP or AH proposals")
        if not self.local_ts or not self.remote_ts:
            raise LocalError(f"child {self.name!r} needs local and remote traffic selectors")
        if not isinstance(self.mode, Mode):  # a caller outside the type checker's reach
            raise LocalError(f"child {self.name!r}: mode {self.mode!r} is not tunnel or transport")

    @property
    def proposals(self) -> tuple[ChildProposal, ...]:
        """What the child is offered and accepted with, in our order of preference: AH,
        then ESP."""
        return (*self.ah_proposals, *self.esp_proposals)

    @property
    def initial_proposals(self) -> tuple[ChildProposal, ...]:
        """The proposals without PFS groups, for the child set up in IKE_AUTH (section 1.2)."""
        return tuple(dict.fromkeys(p.without_pfs() for p in self.proposals))


@dataclass(frozen=True)
class IkeConfig:
    local_id: Identity
    remote_id: Identity
    psk: bytes = field(repr=False)
    ike_proposals: tuple[IkeProposal, ...]
    child: ChildConfig
    retransmit_timeout: float = 2.0
    """Seconds before the first retransmission; doubled each time (section 2.1)."""
    retransmit_tries: int = 4
    """Retransmissions before the exchange, and the SA, are given up."""
    force_encap: bool = False
    """Claim a NAT in NAT detection so ESP is always UDP-encapsulated (section 2.23)."""
    half_open_timeout: float = 30.0
    """Responder: seconds to wait for IKE_AUTH after answering IKE_SA_INIT."""
    dpd_delay: float | None = None
    """Seconds of silence from the peer before a liveness check (section 1.4); None: off."""
    extra_children: tuple[ChildConfig, ...] = ()
    """Further child policies, set up with CREATE_CHILD_SA (section 1.3.1)."""
    certificates: CertificateAuth | None = None
    """Authenticate both ways with RFC 7427 signatures instead of the pre-shared key."""
    accepted_psks: tuple[bytes, ...] = field(default=(), repr=False)
    """Further pre-shared keys the peer's AUTH may be computed with (section 2.15) while
    both ends move to a new key; our own AUTH always uses ``psk``."""
    fragmentation: bool = True
    """Announce IKEV2_FRAGMENTATION_SUPPORTED (RFC 7383 section 2.3) and fragment large
    encrypted messages when the peer announced it too."""
    fragment_size: int = DEFAULT_FRAGMENT_SIZE
    """The largest IP datagram an IKE message may travel in before it is sent as
    fragments (RFC 7383 section 2.5.1), IP and UDP headers included."""

    def __post_init__(self) -> None:
        if not self.ike_proposals:
            raise LocalError("no IKE proposals configured")
        if not self.psk and self.certificates is None:
            raise LocalError("empty pre-shared key")
        if any(not key for key in self.accepted_psks):
            raise LocalError("empty accepted pre-shared key")
        if self.accepted_psks and self.certificates is not None:
            raise LocalError("accepted pre-shared keys given with certificate authentication")
        if self.half_open_timeout <= 0:
            raise LocalError(f"half_open_timeout must be positive, got {self.half_open_timeout}")
        if self.dpd_delay is not None and self.dpd_delay <= 0:
            raise LocalError(f"dpd_delay must be positive, got {self.dpd_delay}")
        if not MIN_FRAGMENT_SIZE <= self.fragment_size <= MAX_FRAGMENT_SIZE:
            raise LocalError(
                f"fragment_size must be {MIN_FRAGMENT_SIZE} to {MAX_FRAGMENT_SIZE} bytes, "
                f"got {self.fragment_size}"
            )
        names = [c.name for c in self.children]
        if len(set(names)) != len(names):
            raise LocalError(f"child names must be unique, got {names}")

    @property
    def children(self) -> tuple[ChildConfig, ...]:
        return (self.child, *self.extra_children)

    @property
    def peer_psks(self) -> tuple[bytes, ...]:
        """Every key the peer's AUTH may be computed with: ours first, then the accepted."""
        return (self.psk, *self.accepted_psks)

    def child_named(self, name: str) -> ChildConfig:
        for child in self.children:
            if child.name == name:
                return child
        raise LocalError(f"no child configuration named {name!r}")


def selector(
    network: str | ipaddress.IPv4Network | ipaddress.IPv6Network,
    protocol: int = 0,
    ports: tuple[int, int] = (0, 65535),
) -> TrafficSelector:
    """A traffic selector for a prefix, e.g. ``selector("10.1.0.0/16")``."""
    net = ipaddress.ip_network(network, strict=False)
    return TrafficSelector(net[0], net[-1], protocol, ports[0], ports[1])
