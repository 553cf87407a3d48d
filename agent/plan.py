"""The agent's own model of a validated plan, and the difference between two plans.

An :class:`AgentPlan` only exists once :func:`vpnfleet.agent.convert.plan_from_proto`
has checked a NodePlan whole, so code that holds one may trust every field: prefixes are
parsed, every SPD entry names a peer that exists, proposals hold only transforms this
agent implements. The agent never imports the controller's model; the only contract
between the two sides is ``protos/plan.proto``.
"""

from __future__ import annotations

import enum
import ipaddress
from dataclasses import dataclass, field, fields

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


class ChangeKind(enum.Enum):
    ADDED = "added"
    REMOVED = "removed"
    CHANGED = "changed"


@dataclass(frozen=True, slots=True)
class PlanChange:
    """One difference between the plan in force and a new one; never holds a secret."""

    section: str  # "peer", "spd", "identity", "addresses", "subnets", "trust_anchors", "crls"
    name: str
    kind: ChangeKind
    details: tuple[str, ...] = ()


def _show(value: object) -> str:
    if isinstance(value, tuple):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    if isinstance(value, enum.Enum):
        return value.name.lower()
    if isinstance(value, Proposal):
        return value.text
    if value is None:
        return "-"
    if isinstance(value, Lifetimes | Dpd | NatTraversal):
        return " ".join(f"{f.name}={getattr(value, f.name)}" for f in fields(value))
    return str(value)


def _accepted_psk_details(old: Credential, new: Credential) -> list[str]:
    if old.accepted_psks == new.accepted_psks:
        return []
    named = [r or "unnamed key" for r in new.accepted_psk_references]
    named += ["unnamed key"] * (len(new.accepted_psks) - len(named))
    if not named:
        return ["auth accepts no other key"]
    return [f"auth also accepts: {', '.join(named)}"]


def _credential_details(old: Credential, new: Credential) -> list[str]:
    # Secrets are named by their reference only: "psk:pair/epoch-1 -> psk:pair/epoch-2".
    if old == new:
        return []
    return _main_credential_details(old, new) + _accepted_psk_details(old, new)


def _main_credential_details(old: Credential, new: Credential) -> list[str]:
    if (old.method, old.reference, old.psk, old.epoch, old.ca_fingerprint) == (
        new.method,
        new.reference,
        new.psk,
        new.epoch,
        new.ca_fingerprint,
    ) and old.accepted_ca_fingerprints == new.accepted_ca_fingerprints:
        return []
    if old.reference != new.reference or old.method != new.method:
        return [f"auth: {old.reference or old.method.name.lower()} -> {new.reference}"]
    if old.psk != new.psk:
        return [f"auth: secret changed ({new.reference})"]
    out: list[str] = []
    if old.epoch != new.epoch:
        out.append(f"auth epoch: {old.epoch} -> {new.epoch} ({new.reference})")
    if old.ca_fingerprint != new.ca_fingerprint:
        out.append(f"auth ca: {old.ca_fingerprint[:16]} -> {new.ca_fingerprint[:16]}")
    if old.accepted_ca_fingerprints != new.accepted_ca_fingerprints:
        shown = ", ".join(f[:16] for f in new.accepted_ca_fingerprints) or "none"
        out.append(f"auth also accepts: {shown}")
    return out


def _peer_details(old: Peer, new: Peer) -> list[str]:
    details: list[str] = []
    for f in fields(Peer):
        if f.name == "name":
            continue
        a, b = getattr(old, f.name), getattr(new, f.name)
        if a == b:
            continue
        if f.name == "auth":
            details.extend(_credential_details(a, b))
        else:
            details.append(f"{f.name}: {_show(a)} -> {_show(b)}")
    return details


def _spd_details(old: SpdEntry, new: SpdEntry) -> list[str]:
    details: list[str] = []
    if old.selector != new.selector:
        details.append(f"selector: {old.selector} -> {new.selector}")
    if old.action != new.action:
        details.append(f"action: {_show(old.action)} -> {_show(new.action)}")
    if old.peer != new.peer:
        details.append(f"peer: {old.peer or '-'} -> {new.peer or '-'}")
    return details


def _diff_named(
    section: str,
    old: dict[str, object],
    new: dict[str, object],
    describe_added: dict[str, str],
    details_of: dict[str, list[str]],
) -> list[PlanChange]:
    out: list[PlanChange] = []
    for name in old:
        if name not in new:
            out.append(PlanChange(section, name, ChangeKind.REMOVED))
    for name in new:
        if name not in old:
            added = (describe_added[name],) if describe_added.get(name) else ()
            out.append(PlanChange(section, name, ChangeKind.ADDED, added))
        elif details_of.get(name):
            out.append(PlanChange(section, name, ChangeKind.CHANGED, tuple(details_of[name])))
    return out


def plan_diff(old: AgentPlan | None, new: AgentPlan) -> list[PlanChange]:
    """What putting ``new`` in force changes, section by section (no secret values)."""
    changes: list[PlanChange] = []
    if old is None or old.identity != new.identity:
        before = "-" if old is None else str(old.identity)
        kind = ChangeKind.ADDED if old is None else ChangeKind.CHANGED
        changes.append(
            PlanChange("identity", new.host, kind, (f"identity: {before} -> {new.identity}",))
        )
    for section in ("addresses", "subnets"):
        a = () if old is None else getattr(old, section)
        b = getattr(new, section)
        if a != b:
            gone = [str(x) for x in a if x not in b]
            came = [str(x) for x in b if x not in a]
            details = [f"+ {x}" for x in came] + [f"- {x}" for x in gone]
            if not details:
                details = [f"order: {_show(a)} -> {_show(b)}"]
            kind = ChangeKind.ADDED if not a else ChangeKind.CHANGED
            changes.append(PlanChange(section, new.host, kind, tuple(details)))
    old_anchors = () if old is None else old.trust_anchors
    if old_anchors != new.trust_anchors:
        changes.append(
            PlanChange(
                "trust_anchors",
                new.host,
                ChangeKind.CHANGED if old_anchors else ChangeKind.ADDED,
                (f"{len(old_anchors)} -> {len(new.trust_anchors)} certificates",),
            )
        )
    old_revoked = frozenset() if old is None else old.revoked
    if old_revoked != new.revoked or (old is not None and old.crls != new.crls):
        changes.append(
            PlanChange(
                "crls",
                new.host,
                ChangeKind.CHANGED if old is not None and old.crls else ChangeKind.ADDED,
                (f"{len(old_revoked)} -> {len(new.revoked)} revoked certificates",),
            )
        )

    old_spd = {e.name: e for e in (old.spd if old else ())}
    new_spd = {e.name: e for e in new.spd}
    changes.extend(
        _diff_named(
            "spd",
            dict(old_spd),
            dict(new_spd),
            {n: f"{_show(e.action)} {e.selector}" for n, e in new_spd.items()},
            {n: _spd_details(old_spd[n], e) for n, e in new_spd.items() if n in old_spd},
        )
    )
    # First match wins (RFC 4301 section 4.4.1), so a reorder alone is a change.
    common_old = [n for n in old_spd if n in new_spd]
    common_new = [n for n in new_spd if n in old_spd]
    if common_old != common_new:
        changes.append(
            PlanChange("spd", "order", ChangeKind.CHANGED, (f"{common_old} -> {common_new}",))
        )

    old_peers = {p.name: p for p in (old.peers if old else ())}
    new_peers = {p.name: p for p in new.peers}
    changes.extend(
        _diff_named(
            "peer",
            dict(old_peers),
            dict(new_peers),
            {
                n: f"{_show(p.remote_addresses)} {p.mode.name.lower()} auth {p.auth.reference}"
                for n, p in new_peers.items()
            },
            {n: _peer_details(old_peers[n], p) for n, p in new_peers.items() if n in old_peers},
        )
    )
    return changes
