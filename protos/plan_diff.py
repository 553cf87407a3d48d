"""The difference between two NodePlans as an operator reads it: the one plan differ.

Both sides show plan changes through :func:`plan_changes`: the controller's
``vpnfleet diff`` (a host's plans at two revisions) and the agent's ApplyPlan (the plan
in force against the one handed in), whose answer ``apply --diff``, ``apply --check``
and ``plan`` print. The same change therefore reads the same everywhere.

What is compared is the data plane: identity, addresses, subnets, trust anchors and
CRLs, SPD entries (added, removed, changed, and a new order among the kept ones, since
the first match wins) and peers (added, removed, and each field that changed).
Credentials appear by reference only (``auth psk:a1+a2/epoch-1 -> epoch-2``); key bytes
are compared but never shown. Generation, content hash and source revision are
bookkeeping, not data plane, and are left out: a plan that differs only in them has no
change.

Plain code over the generated messages; it imports nothing from either side.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.x509.oid import NameOID
from google.protobuf.descriptor import EnumDescriptor, FieldDescriptor
from google.protobuf.message import Message

from vpnfleet.protos import plan_pb2
from vpnfleet.protos.limits import DEFAULT_IKE_FRAGMENT_SIZE


class ChangeKind(enum.Enum):
    ADDED = "added"
    REMOVED = "removed"
    CHANGED = "changed"


class Section(enum.Enum):
    """The part of a plan a change is in; the value is how it is printed."""

    IDENTITY = "identity"
    ADDRESSES = "addresses"
    SUBNETS = "subnets"
    TRUST_ANCHORS = "trust-anchors"
    CRL = "crl"
    PEER = "peer"
    SPD = "spd"
    SPD_ORDER = "spd-order"


@dataclass(frozen=True, slots=True)
class PlanChange:
    """One difference between two plans of a host; never holds a secret.

    ``name`` is the peer or SPD entry for those sections, the host for the others."""

    section: Section
    name: str
    kind: ChangeKind
    details: tuple[str, ...] = ()


# -------------------------------------------------------------------- how values read


def _enum_text(enum_type: EnumDescriptor, number: int) -> str:
    """``MODE_TUNNEL`` reads ``tunnel``, ``ID_FQDN`` reads ``fqdn``."""
    value = enum_type.values_by_number.get(number)
    if value is None:
        return str(number)
    prefix = "".join("_" + c if c.isupper() else c.upper() for c in enum_type.name)[1:] + "_"
    name = value.name
    name = name[len(prefix) :] if name.startswith(prefix) else name.partition("_")[2]
    return name.lower()


def identity_text(identity: plan_pb2.Identity) -> str:
    """An IKE identity with its RFC 7296 section 3.5 type: ``fqdn:a1.example``."""
    kind = _enum_text(plan_pb2.Identity.DESCRIPTOR.fields_by_name["type"].enum_type, identity.type)
    return f"{kind}:{identity.value}"


_PROTOCOLS = {1: "icmp", 6: "tcp", 17: "udp", 58: "ipv6-icmp", 132: "sctp"}


def _ports(start: int, end: int) -> str:
    if (start, end) in ((0, 65535), (0, 0)):
        return "any"
    return str(start) if start == end else f"{start}-{end}"


def selector_text(s: plan_pb2.TrafficSelector) -> str:
    """RFC 4301 section 4.4.1 selectors: ``10.1.0.0/24[any] -> 10.2.0.0/24[443] proto tcp``."""
    proto = _PROTOCOLS.get(s.protocol, str(s.protocol)) if s.protocol else "any"
    return (
        f"{s.local_prefix}[{_ports(s.local_port_start, s.local_port_end)}] -> "
        f"{s.remote_prefix}[{_ports(s.remote_port_start, s.remote_port_end)}] proto {proto}"
    )


def entry_text(e: plan_pb2.SpdEntry) -> str:
    action = _enum_text(plan_pb2.SpdAction.DESCRIPTOR, e.action)
    via = f" via {e.peer}" if e.peer else ""
    return f"{action} {selector_text(e.selector)}{via}"


def _proposals(items: Iterable[plan_pb2.Proposal]) -> str:
    return ", ".join(p.text for p in items) or "-"


def _field_text(fd: FieldDescriptor, value: object) -> str:
    if fd.is_repeated:
        assert isinstance(value, Iterable)
        return ", ".join(_scalar_text(fd, v) for v in value) or "-"
    return _scalar_text(fd, value)


def _scalar_text(fd: FieldDescriptor, value: object) -> str:
    if fd.enum_type is not None:
        assert isinstance(value, int)
        return _enum_text(fd.enum_type, value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value) if value != "" else "-"


def _fingerprint(pem: bytes) -> str:
    return hashlib.sha256(pem).hexdigest()[:16]


def _crl_summary(pem: bytes) -> str:
    """A CRL as an operator reads it (RFC 5280 section 5): issuer, its number, how many
    certificates it revokes."""
    try:
        crl = x509.load_pem_x509_crl(pem)
    except ValueError:
        return f"unreadable CRL {_fingerprint(pem)}"
    try:
        number = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    except x509.ExtensionNotFound:
        number = 0
    cn = crl.issuer.get_attributes_for_oid(NameOID.COMMON_NAME)
    issuer = str(cn[0].value) if cn else crl.issuer.rfc4514_string()
    return f"{issuer} CRL #{number}: {len(crl)} revoked"


# -------------------------------------------------------------------- credentials


def credential_change(old: plan_pb2.Credential, new: plan_pb2.Credential) -> str | None:
    """How a credential changed, by reference only; None when it did not."""
    parts = [
        _main_credential_change(old, new),
        _accepted_cas_change(old, new),
        _accepted_psks_change(old, new),
    ]
    return "; ".join(p for p in parts if p) or None


def _main_credential_change(old: plan_pb2.Credential, new: plan_pb2.Credential) -> str | None:
    if (old.method, old.reference, old.epoch, old.ca_fingerprint, old.psk) == (
        new.method,
        new.reference,
        new.epoch,
        new.ca_fingerprint,
        new.psk,
    ):
        return None
    if old.reference != new.reference:
        head_old, sep_old, _ = old.reference.rpartition("/")
        head_new, sep_new, tail_new = new.reference.rpartition("/")
        if sep_old and sep_new and head_old == head_new:
            return f"auth {old.reference} -> {tail_new}"
        return f"auth {old.reference or '-'} -> {new.reference or '-'}"
    if old.ca_fingerprint != new.ca_fingerprint:
        return (
            f"auth {new.reference}: CA {old.ca_fingerprint[:16] or '-'} -> "
            f"{new.ca_fingerprint[:16] or '-'}"
        )
    if old.method != new.method:
        methods = plan_pb2.AuthMethod.DESCRIPTOR
        return f"auth {_enum_text(methods, old.method)} -> {_enum_text(methods, new.method)}"
    if old.psk != new.psk:
        return f"auth {new.reference}: key changed"
    return f"auth {new.reference}: epoch {old.epoch} -> {new.epoch}"


def _accepted_cas_change(old: plan_pb2.Credential, new: plan_pb2.Credential) -> str | None:
    """Further CAs whose certificates the peer may present (a CA rotation)."""
    if list(old.accepted_ca_fingerprints) == list(new.accepted_ca_fingerprints):
        return None
    if not new.accepted_ca_fingerprints:
        return f"auth {new.reference} accepts no other CA"
    shown = ", ".join(f[:16] for f in new.accepted_ca_fingerprints)
    return f"auth {new.reference} also accepts CA {shown}"


def _accepted_psks_change(old: plan_pb2.Credential, new: plan_pb2.Credential) -> str | None:
    """Further keys the peer may authenticate with (a staged key change), named by their
    references."""
    if (list(old.accepted_psks), list(old.accepted_psk_references)) == (
        list(new.accepted_psks),
        list(new.accepted_psk_references),
    ):
        return None
    if not new.accepted_psks:
        return f"auth {new.reference} accepts no other key"
    names = list(new.accepted_psk_references[: len(new.accepted_psks)])
    names += ["unnamed key"] * (len(new.accepted_psks) - len(names))
    return f"auth {new.reference} also accepts {', '.join(n or 'unnamed key' for n in names)}"


# -------------------------------------------------------------------- peers and hosts


def peer_changes(old: plan_pb2.Peer, new: plan_pb2.Peer) -> list[str]:
    """The fields of a peer that changed, one phrase each, in the .proto's order."""
    out: list[str] = []
    for fd in plan_pb2.Peer.DESCRIPTOR.fields:
        name = fd.name
        a, b = getattr(old, name), getattr(new, name)
        if a == b or name == "name":
            continue
        if name == "auth":
            text = credential_change(a, b)
            if text:
                out.append(text)
        elif name in ("ike_proposals", "esp_proposals", "ah_proposals"):
            out.append(f"{name.split('_')[0]} {_proposals(a)} -> {_proposals(b)}")
        elif name in ("local_id", "remote_id"):
            out.append(f"{name} {identity_text(a)} -> {identity_text(b)}")
        elif fd.message_type is not None and not fd.is_repeated:
            out += _record_changes(f"{name}.", a, b)
        elif name == "ike_fragment_size":  # 0 in a plan stands for the default
            default = DEFAULT_IKE_FRAGMENT_SIZE
            out.append(f"{name} {a or default} -> {b or default}")
        else:
            out.append(f"{name} {_field_text(fd, a)} -> {_field_text(fd, b)}")
    return out


def _record_changes(prefix: str, old: Message, new: Message) -> list[str]:
    out = []
    for fd in old.DESCRIPTOR.fields:
        a, b = getattr(old, fd.name), getattr(new, fd.name)
        if a != b:
            out.append(f"{prefix}{fd.name} {_field_text(fd, a)} -> {_field_text(fd, b)}")
    return out


def _list_change(
    section: Section, host: str, kind: ChangeKind, old: Sequence[str], new: Sequence[str]
) -> PlanChange:
    details = [f"+{x}" for x in new if x not in old] + [f"-{x}" for x in old if x not in new]
    if not details:  # the same items in another order
        details = [f"{', '.join(old) or '-'} -> {', '.join(new) or '-'}"]
    return PlanChange(section, host, kind, tuple(details))


def _peer_added(peer: plan_pb2.Peer) -> tuple[str, ...]:
    out = [
        f"address {', '.join(peer.remote_addresses) or 'any'}",
        f"auth {peer.auth.reference}",
        f"ike {_proposals(peer.ike_proposals)}",
        f"esp {_proposals(peer.esp_proposals)}",
    ]
    if peer.ah_proposals:
        out.append(f"ah {_proposals(peer.ah_proposals)}")
    # IKEv2 goes without saying; another version (and its mode) is worth a line.
    if peer.ike_version != plan_pb2.IKE_V2:
        out.append(f"ike_version {_enum_text(plan_pb2.IkeVersion.DESCRIPTOR, peer.ike_version)}")
    if peer.ike_aggressive:
        out.append("ike_aggressive true")
    return tuple(out)


_EMPTY = plan_pb2.NodePlan()


def plan_changes(old: plan_pb2.NodePlan | None, new: plan_pb2.NodePlan) -> list[PlanChange]:
    """Every data-plane change from ``old`` to ``new`` for one host. ``old`` None: the
    host has no plan yet, and everything in ``new`` is added."""
    host = new.host
    out: list[PlanChange] = []
    # A host's own sections exist (empty) before its first plan: changed unless it is new.
    kind = ChangeKind.ADDED if old is None else ChangeKind.CHANGED
    before = _EMPTY if old is None else old
    if old is None:
        out.append(PlanChange(Section.IDENTITY, host, kind, (identity_text(new.identity),)))
    elif old.identity != new.identity:
        change = f"{identity_text(old.identity)} -> {identity_text(new.identity)}"
        out.append(PlanChange(Section.IDENTITY, host, kind, (change,)))
    lists = (
        (Section.ADDRESSES, list(before.addresses), list(new.addresses)),
        (Section.SUBNETS, list(before.subnets), list(new.subnets)),
        (
            Section.TRUST_ANCHORS,
            [_fingerprint(p) for p in before.trust_anchors],
            [_fingerprint(p) for p in new.trust_anchors],
        ),
    )
    for section, a, b in lists:
        if a != b:
            out.append(_list_change(section, host, kind, a, b))
    if list(before.crls) != list(new.crls):
        a, b = [_crl_summary(p) for p in before.crls], [_crl_summary(p) for p in new.crls]
        out.append(_list_change(Section.CRL, host, kind, a, b))

    old_peers = {p.name: p for p in before.peers}
    new_peers = {p.name: p for p in new.peers}
    for name, peer in new_peers.items():
        was = old_peers.get(name)
        if was is None:
            out.append(PlanChange(Section.PEER, name, ChangeKind.ADDED, _peer_added(peer)))
        elif was != peer:
            details = peer_changes(was, peer)
            if details:
                out.append(PlanChange(Section.PEER, name, ChangeKind.CHANGED, tuple(details)))
    for name, peer in old_peers.items():
        if name not in new_peers:
            address = f"address {', '.join(peer.remote_addresses) or 'any'}"
            out.append(PlanChange(Section.PEER, name, ChangeKind.REMOVED, (address,)))

    old_spd = {e.name: e for e in before.spd}
    new_spd = {e.name: e for e in new.spd}
    for name, entry in new_spd.items():
        was_entry = old_spd.get(name)
        if was_entry is None:
            out.append(PlanChange(Section.SPD, name, ChangeKind.ADDED, (entry_text(entry),)))
        elif was_entry != entry:
            change = f"{entry_text(was_entry)} -> {entry_text(entry)}"
            out.append(PlanChange(Section.SPD, name, ChangeKind.CHANGED, (change,)))
    for name, entry in old_spd.items():
        if name not in new_spd:
            out.append(PlanChange(Section.SPD, name, ChangeKind.REMOVED, (entry_text(entry),)))
    kept_old = [e.name for e in before.spd if e.name in new_spd]
    kept_new = [e.name for e in new.spd if e.name in old_spd]
    if kept_old != kept_new:
        # First match wins (RFC 4301 section 4.4.1): a new order is a policy change.
        out.append(PlanChange(Section.SPD_ORDER, host, ChangeKind.CHANGED, (" > ".join(kept_new),)))
    return out
