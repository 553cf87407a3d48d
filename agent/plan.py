"""The agent's own model of a validated plan.

An :class:`AgentPlan` only exists once :func:`vpnfleet.agent.convert.plan_from_proto`
has checked a NodePlan whole, so code that holds one may trust every field: prefixes are
parsed, every SPD entry names a peer that exists, proposals hold only transforms this
agent implements. The agent never imports the controller's model; the only contract
between the two sides is ``protos/plan.proto``.
"""

from __future__ import annotations

import enum
import ipaddress
from dataclasses import dataclass, field

from vpnfleet.protos.limits import DEFAULT_IKE_FRAGMENT_SIZE

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class PlanRejected(Exception):
    """A plan that is refused whole; ``reasons`` lists every problem found."""

    def __init__(self, reasons: list[str]) -> None:
        self.reasons = list(reasons)
        super().__init__("plan refused: " + "; ".join(self.reasons))


class IdType(enum.IntEnum):
    """RFC 7296 section 3.5 ID types (IANA numbers)."""

    IPV4_ADDR = 1
    FQDN = 2
    RFC822_ADDR = 3
    IPV6_ADDR = 5
    DER_ASN1_DN = 9
    KEY_ID = 11


class SpdAction(enum.Enum):
    PROTECT = 1
    BYPASS = 2
    DISCARD = 3


class AuthMethod(enum.Enum):
    PSK = 1
    PUBKEY = 2


class Mode(enum.Enum):
    TUNNEL = 1
    TRANSPORT = 2


class StartAction(enum.Enum):
    START = 1
    TRAP = 2
    NONE = 3


class IkeVersion(enum.Enum):
    """The IKE protocol a peer is reached with (the plan's ``IkeVersion``)."""

    V2 = 0
    """IKEv2, RFC 7296: what a plan without the field means."""
    V1 = 1
    """IKEv1, RFC 2409."""


class TransformType(enum.IntEnum):
    """RFC 7296 section 3.3.2 transform types."""

    ENCR = 1
    PRF = 2
    INTEG = 3
    DH = 4
    ESN = 5


@dataclass(frozen=True, slots=True)
class Identity:
    type: IdType
    value: str

    def __str__(self) -> str:
        return f"{self.type.name.lower()}:{self.value}"


@dataclass(frozen=True, slots=True)
class TrafficSelector:
    """RFC 4301 section 4.4.1 selectors; port ranges are inclusive."""

    local_prefix: IPNetwork
    remote_prefix: IPNetwork
    protocol: int  # 0 = any
    local_ports: tuple[int, int]
    remote_ports: tuple[int, int]

    def __str__(self) -> str:
        proto = "any" if self.protocol == 0 else str(self.protocol)
        return (
            f"{self.local_prefix}[{_ports(self.local_ports)}] -> "
            f"{self.remote_prefix}[{_ports(self.remote_ports)}] proto {proto}"
        )


def _ports(r: tuple[int, int]) -> str:
    if r == (0, 65535):
        return "any"
    return str(r[0]) if r[0] == r[1] else f"{r[0]}-{r[1]}"


@dataclass(frozen=True, slots=True)
class SpdEntry:
    name: str
    selector: TrafficSelector
    action: SpdAction
    peer: str  # empty unless action is PROTECT


@dataclass(frozen=True, slots=True)
class Transform:
    type: TransformType
    id: int
    key_length: int  # bits; 0 when the transform has no key length attribute


@dataclass(frozen=True, slots=True)
class Proposal:
    text: str
    transforms: tuple[Transform, ...]


@dataclass(frozen=True, slots=True)
class Credential:
    method: AuthMethod
    reference: str
    # Kept out of repr so that logging a plan or a peer never prints the secret.
    psk: bytes = field(repr=False)
    epoch: int
    ca_fingerprint: str
    accepted_ca_fingerprints: tuple[str, ...] = ()
    """Further CAs (hex SHA-256) whose certificates are accepted (a CA rotation)."""
    # Kept out of repr like ``psk``: further keys the peer's AUTH may be computed with.
    accepted_psks: tuple[bytes, ...] = field(default=(), repr=False)
    """PSK: further keys accepted from the peer (a staged key change); ours uses ``psk``."""
    accepted_psk_references: tuple[str, ...] = ()
    """How each accepted key is named in diffs, in the order of ``accepted_psks``."""

    @property
    def ca_fingerprints(self) -> tuple[str, ...]:
        """Every CA whose certificate this peer may present, the main one first."""
        return (self.ca_fingerprint, *self.accepted_ca_fingerprints)


@dataclass(frozen=True, slots=True)
class Lifetimes:
    ike_rekey_seconds: int
    child_rekey_seconds: int
    child_rekey_bytes: int
    child_rekey_packets: int
    rand_seconds: int


@dataclass(frozen=True, slots=True)
class Dpd:
    delay_seconds: int
    timeout_seconds: int


@dataclass(frozen=True, slots=True)
class NatTraversal:
    force_encap: bool
    keepalive_seconds: int
    remote_behind_nat: bool = False
    """The peer is behind a NAT: its IKE_SA_INIT may come from an address that is none
    of its ``remote_addresses`` (the only peers such a datagram may be routed to)."""


@dataclass(frozen=True, slots=True)
class Peer:
    name: str
    remote_addresses: tuple[IPAddress, ...]
    local_address: IPAddress | None
    remote_port: int
    local_id: Identity
    remote_id: Identity
    auth: Credential
    ike_proposals: tuple[Proposal, ...]
    esp_proposals: tuple[Proposal, ...]
    mode: Mode
    lifetimes: Lifetimes
    dpd: Dpd
    nat: NatTraversal
    start_action: StartAction
    local_ts: tuple[IPNetwork, ...]
    remote_ts: tuple[IPNetwork, ...]
    managed: bool
    initiator: bool
    ike_fragmentation: bool = True
    """Offer and use IKE fragmentation (RFC 7383 section 2.3); the plan's negated
    ``ike_fragmentation_off``."""
    ike_fragment_size: int = DEFAULT_IKE_FRAGMENT_SIZE
    """Largest IP datagram an IKE message may fill (RFC 7383 section 2.5.1); a plan's 0
    becomes the default."""
    dynamic_address: bool = False
    """The peer has no fixed address: its IKE_SA_INIT is taken from any source no other
    peer's address claims, and IKE_AUTH checks it is ``remote_id``. With no
    ``remote_addresses`` this end only responds."""
    ike_version: IkeVersion = IkeVersion.V2
    ike_aggressive: bool = False
    """IKEv1 Aggressive Mode (RFC 2409 section 5) instead of Main Mode; only with V1."""
    ah_proposals: tuple[Proposal, ...] = ()
    """AH (RFC 4302) child proposals, offered before ``esp_proposals`` in the same SA
    payload; ``esp_proposals`` is empty for a peer that offers AH only."""


@dataclass(frozen=True, slots=True)
class AgentPlan:
    host: str
    generation: int
    content_hash: str
    identity: Identity
    addresses: tuple[IPAddress, ...]
    subnets: tuple[IPNetwork, ...]
    spd: tuple[SpdEntry, ...]
    peers: tuple[Peer, ...]
    trust_anchors: tuple[bytes, ...]
    source_revision: str
    crls: tuple[bytes, ...] = ()
    revoked: frozenset[tuple[bytes, int]] = frozenset()
    """What ``crls`` revoke, as (DER issuer name, serial) (agent/crl.py), checked."""

    def peer(self, name: str) -> Peer | None:
        for p in self.peers:
            if p.name == name:
                return p
        return None
