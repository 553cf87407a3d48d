"""NodePlan and its parts: frozen dataclasses mirroring ``protos/plan.proto`` field for field.

Field names, order and meaning are the .proto's; repeated fields are tuples and enums are
:class:`enum.StrEnum` classes whose member names are the tails of the proto value names
(``SPD_ACTION_PROTECT`` -> ``SpdAction.PROTECT``), so ``controller/transport/convert.py`` maps them
mechanically.

Large fleets build millions of Peer, SpdEntry and TrafficSelector objects (a 1,000-host
mesh has ~1M peers); the planner makes those with :func:`fast_constructor`.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, TypeVar


class IdType(StrEnum):
    """IKE identification types (RFC 7296 section 3.5)."""

    UNSPECIFIED = "UNSPECIFIED"
    IPV4_ADDR = "IPV4_ADDR"
    FQDN = "FQDN"
    RFC822_ADDR = "RFC822_ADDR"
    IPV6_ADDR = "IPV6_ADDR"
    DER_ASN1_DN = "DER_ASN1_DN"
    KEY_ID = "KEY_ID"


class SpdAction(StrEnum):
    UNSPECIFIED = "UNSPECIFIED"
    PROTECT = "PROTECT"
    BYPASS = "BYPASS"
    DISCARD = "DISCARD"


class AuthMethod(StrEnum):
    UNSPECIFIED = "UNSPECIFIED"
    PSK = "PSK"
    PUBKEY = "PUBKEY"


class Mode(StrEnum):
    UNSPECIFIED = "UNSPECIFIED"
    TUNNEL = "TUNNEL"
    TRANSPORT = "TRANSPORT"


class StartAction(StrEnum):
    UNSPECIFIED = "UNSPECIFIED"
    START = "START"
    TRAP = "TRAP"
    NONE = "NONE"


class IkeVersion(StrEnum):
    """The IKE protocol a peer is reached with (the inventory's ``ike_version``)."""

    V2 = "V2"
    """IKEv2, RFC 7296: the default, and what every plan without the field means."""
    V1 = "V1"
    """IKEv1, RFC 2409 (Main Mode, or Aggressive Mode where ``ike_aggressive`` asks)."""


@dataclass(frozen=True, slots=True)
class Identity:
    type: IdType
    value: str


@dataclass(frozen=True, slots=True)
class TrafficSelector:
    """RFC 4301 section 4.4.1 selector; protocol 0 and ports 0-65535 mean any."""

    local_prefix: str
    remote_prefix: str
    protocol: int = 0
    local_port_start: int = 0
    local_port_end: int = 65535
    remote_port_start: int = 0
    remote_port_end: int = 65535


@dataclass(frozen=True, slots=True)
class SpdEntry:
    """One SPD entry; the first matching entry wins. ``peer`` is set for PROTECT."""

    name: str
    selector: TrafficSelector
    action: SpdAction
    peer: str = ""


@dataclass(frozen=True, slots=True)
class Transform:
    """One transform by IANA numbers (RFC 7296 section 3.3.2)."""

    type: int
    id: int
    key_length: int = 0


@dataclass(frozen=True, slots=True)
class Proposal:
    text: str
    transforms: tuple[Transform, ...]


@dataclass(frozen=True, slots=True)
class Credential:
    method: AuthMethod
    reference: str
    psk: bytes = b""
    epoch: int = 0
    ca_fingerprint: str = ""
    accepted_ca_fingerprints: tuple[str, ...] = ()
    """Further CAs whose certificates the peer may present (while a CA rotation runs)."""
    accepted_psks: tuple[bytes, ...] = ()
    """Further keys the peer's AUTH may use while a key change is staged (ours: ``psk``)."""
    accepted_psk_references: tuple[str, ...] = ()
    """How each accepted key is named in diffs and logs."""

    def __repr__(self) -> str:
        # Plans end up in logs and diffs: show the reference, never the key.
        return (
            f"Credential(method={self.method!s}, reference={self.reference!r}, "
            f"epoch={self.epoch}, ca_fingerprint={self.ca_fingerprint!r})"
        )


@dataclass(frozen=True, slots=True)
class Lifetimes:
    ike_rekey_seconds: int
    child_rekey_seconds: int
    child_rekey_bytes: int = 0
    child_rekey_packets: int = 0
    rand_seconds: int = 0


@dataclass(frozen=True, slots=True)
class Dpd:
    delay_seconds: int
    timeout_seconds: int


@dataclass(frozen=True, slots=True)
class NatTraversal:
    force_encap: bool
    keepalive_seconds: int
    remote_behind_nat: bool = False
    """The peer's ``nat: true``: its agent may answer for an IKE_SA_INIT from an address
    that is none of the peer's (the public address of a NAT router)."""


@dataclass(frozen=True, slots=True)
class Peer:
    name: str
    remote_addresses: tuple[str, ...]
    local_address: str
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
    local_ts: tuple[str, ...]
    remote_ts: tuple[str, ...]
    managed: bool
    initiator: bool
    ike_fragmentation_off: bool
    """RFC 7383 off: no IKEV2_FRAGMENTATION_SUPPORTED, no fragments (strongSwan's ``no``)."""
    ike_fragment_size: int
    """Largest IP datagram an IKE message may fill (RFC 7383 section 2.5.1); 0: 1280."""
    dynamic_address: bool = False
    """The remote end has no fixed address (``address: any``): no remote address, this end
    only responds, and the peer is told by its IKE identity."""
    ike_version: IkeVersion = IkeVersion.V2
    ike_aggressive: bool = False
    """IKEv1 Aggressive Mode (RFC 2409 section 5) instead of Main Mode; never with V2."""
    ah_proposals: tuple[Proposal, ...] = ()
    """AH (RFC 4302) child proposals: integrity, ESN and PFS group transforms only. Offered
    before ``esp_proposals``, as separate proposals of one SA payload (see
    controller/planner/profile.py); ``esp_proposals`` is empty for an AH-only peer."""


@dataclass(frozen=True, slots=True)
class NodePlan:
    host: str
    generation: int
    content_hash: str
    identity: Identity
    addresses: tuple[str, ...]
    subnets: tuple[str, ...]
    spd: tuple[SpdEntry, ...]
    peers: tuple[Peer, ...]
    trust_anchors: tuple[bytes, ...]
    source_revision: str
    crls: tuple[bytes, ...] = ()
    """PEM CRLs of the fleet CA(s) (controller.statedir.pki.fleet_crls); empty while nothing is
    revoked, so a fleet that never revoked anything plans as before."""


T = TypeVar("T")


def fast_constructor(cls: type[T]) -> Callable[..., T]:
    """A constructor for a frozen slotted dataclass that skips its per-field setattr.

    A frozen dataclass's ``__init__`` stores each field through ``object.__setattr__``
    (a call per field: 21 for a Peer). This constructor takes the same arguments (the
    fields in order or by keyword, with the same defaults) and stores them into a
    mutable draft with the same slots, which then becomes a ``cls`` instance (Python
    lets ``__class__`` change between classes of identical slot layout): an ordinary,
    equal, hashable, frozen instance.

    Kept because it matters: with the pair builder's Peer, SpdEntry, TrafficSelector
    and PSK Credential made by the dataclasses' own constructors instead,
    ``bench/plan_scale.py`` timed in CPU seconds (best of two interleaved rounds on a
    shared 2-core machine) gave 11.6 s instead of 6.2 s for mesh_1000_s and 6.7 s
    instead of 4.4 s for hubspoke_10000_s.
    """
    fields = dataclasses.fields(cls)  # type: ignore[arg-type]
    names = tuple(f.name for f in fields)
    if tuple(getattr(cls, "__slots__", ())) != names:
        raise TypeError(f"{cls.__name__}: slots do not match fields {names!r}")
    namespace: dict[str, Any] = {"_frozen": cls}
    params = []
    for f in fields:
        if f.default is dataclasses.MISSING:
            params.append(f.name)
        else:
            namespace[f"_default_{f.name}"] = f.default
            params.append(f"{f.name}=_default_{f.name}")
    # The body has to be written out (one plain store per field) to be fast: that is
    # the point of it, so it is generated from the field list rather than kept by hand.
    stores = "".join(f"    self.{n} = {n}\n" for n in names)
    source = f"def __init__(self, {', '.join(params)}):\n{stores}    self.__class__ = _frozen\n"
    exec(source, namespace)
    draft = type(f"_{cls.__name__}Draft", (), {"__slots__": names})
    draft.__init__ = namespace["__init__"]  # type: ignore[misc]
    return draft


def identity_of(text: str) -> Identity:
    """The IKE ID for an identity string (RFC 7296 section 3.5)."""
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        pass
    else:
        return Identity(IdType.IPV4_ADDR if ip.version == 4 else IdType.IPV6_ADDR, ip.compressed)
    if "@" in text:
        return Identity(IdType.RFC822_ADDR, text)
    if "=" in text:
        return Identity(IdType.DER_ASN1_DN, text)
    return Identity(IdType.FQDN, text)
