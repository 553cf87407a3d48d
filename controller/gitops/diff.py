"""The data-plane difference between two sets of plans (``vpnfleet diff --from --to``).

A pure comparison of planner NodePlans, host by host: identity and addresses, SPD
entries (added, removed, changed, and a new order among the kept ones, since the first
match wins), peers (added, removed, and each changed field: addresses, identities,
proposals, mode, lifetimes, DPD, NAT-T, traffic selectors) and trust anchors.
Credentials appear by reference only (``psk:a1+a2/epoch-1 -> epoch-2``); key bytes are
compared but never shown. Generation, content hash and source revision are bookkeeping,
not data plane, and are left out.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from cryptography import x509
from cryptography.x509.oid import NameOID

from vpnfleet.protos.limits import DEFAULT_IKE_FRAGMENT_SIZE

from ..planner.model import Credential, NodePlan, Peer, Proposal, SpdEntry, TrafficSelector
from ..reports.results import ChangeLine


@dataclass(frozen=True, slots=True)
class HostDiff:
    host: str
    kind: str  # "added" | "removed" | "changed"
    changes: tuple[ChangeLine, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "kind": self.kind,
            "changes": [
                {"section": c.section, "name": c.name, "kind": c.kind, "details": list(c.details)}
                for c in self.changes
            ],
        }


@dataclass(slots=True)
class FleetDiff:
    hosts: list[HostDiff] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    from_revision: str = ""
    to_revision: str = ""

    @property
    def changed(self) -> bool:
        return bool(self.hosts)

    def to_json(self) -> dict[str, Any]:
        return {
            "from": self.from_revision,
            "to": self.to_revision,
            "hosts": [h.to_json() for h in self.hosts],
            "unchanged": list(self.unchanged),
        }


def _ports(start: int, end: int) -> str:
    if (start, end) in ((0, 65535), (0, 0)):
        return "any"
    return str(start) if start == end else f"{start}-{end}"


_PROTOCOLS = {1: "icmp", 6: "tcp", 17: "udp", 58: "ipv6-icmp", 132: "sctp"}


def selector_text(s: TrafficSelector) -> str:
    proto = _PROTOCOLS.get(s.protocol, str(s.protocol)) if s.protocol else "any"
    return (
        f"{s.local_prefix}[{_ports(s.local_port_start, s.local_port_end)}] -> "
        f"{s.remote_prefix}[{_ports(s.remote_port_start, s.remote_port_end)}] proto {proto}"
    )


def entry_text(e: SpdEntry) -> str:
    via = f" via {e.peer}" if e.peer else ""
    return f"{e.action.name.lower()} {selector_text(e.selector)}{via}"


def _proposals(items: tuple[Proposal, ...]) -> str:
    return ", ".join(p.text for p in items) or "-"


def credential_change(old: Credential, new: Credential) -> str | None:
    """How a credential changed, by reference only; None when it did not."""
    parts = [_main_credential_change(old, new), accepted_psks_change(old, new)]
    return "; ".join(p for p in parts if p) or None


def accepted_psks_change(old: Credential, new: Credential) -> str | None:
    """How the further keys a peer may authenticate with changed (a staged key change),
    named by their references; None when they did not."""
    if (old.accepted_psks, old.accepted_psk_references) == (
        new.accepted_psks,
        new.accepted_psk_references,
    ):
        return None
    if not new.accepted_psks:
        return f"auth {new.reference} accepts no other key"
    names = list(new.accepted_psk_references[: len(new.accepted_psks)])
    names += ["unnamed key"] * (len(new.accepted_psks) - len(names))
    return f"auth {new.reference} also accepts {', '.join(n or 'unnamed key' for n in names)}"


def _main_credential_change(old: Credential, new: Credential) -> str | None:
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
        return f"auth {old.reference} -> {new.reference}"
    if old.ca_fingerprint != new.ca_fingerprint:
        return (
            f"auth {new.reference}: CA {old.ca_fingerprint[:16] or '-'} -> "
            f"{new.ca_fingerprint[:16] or '-'}"
        )
    if old.method != new.method:
        return f"auth {old.method.name.lower()} -> {new.method.name.lower()}"
    return f"auth {new.reference}: key changed"


def _value_text(value: Any) -> str:
    if isinstance(value, tuple):
        return ", ".join(_value_text(v) for v in value) or "-"
    if isinstance(value, enum.Enum):
        return value.name.lower()
    return str(value)


def _record_changes(prefix: str, old: Any, new: Any) -> list[str]:
    out = []
    for f in fields(old):
        a, b = getattr(old, f.name), getattr(new, f.name)
        if a != b:
            out.append(f"{prefix}{f.name} {_value_text(a)} -> {_value_text(b)}")
    return out


def peer_changes(old: Peer, new: Peer) -> list[str]:
    """The fields of a peer that changed, one phrase each."""
    out: list[str] = []
    for f in fields(Peer):
        a, b = getattr(old, f.name), getattr(new, f.name)
        if a == b or f.name == "name":
            continue
        if f.name == "auth":
            text = credential_change(a, b)
            if text:
                out.append(text)
        elif f.name in ("ike_proposals", "esp_proposals"):
            out.append(f"{f.name.split('_')[0]} {_proposals(a)} -> {_proposals(b)}")
        elif f.name in ("local_id", "remote_id"):
            out.append(f"{f.name} {a.value} -> {b.value}")
        elif f.name in ("lifetimes", "dpd", "nat"):
            out += _record_changes(f"{f.name}.", a, b)
        elif f.name == "ike_fragment_size":  # 0 in a plan stands for the default
            default = DEFAULT_IKE_FRAGMENT_SIZE
            out.append(f"{f.name} {a or default} -> {b or default}")
        else:
            out.append(f"{f.name} {_value_text(a)} -> {_value_text(b)}")
    return out


def _fingerprint(pem: bytes) -> str:
    return hashlib.sha256(pem).hexdigest()[:16]


def _crl_summary(pem: bytes) -> str:
    """A CRL as an operator reads it: issuer, how many revoked, its number."""
    crl = x509.load_pem_x509_crl(pem)
    try:
        number = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    except x509.ExtensionNotFound:
        number = 0
    cn = crl.issuer.get_attributes_for_oid(NameOID.COMMON_NAME)
    issuer = str(cn[0].value) if cn else crl.issuer.rfc4514_string()
    return f"{issuer} CRL #{number}: {len(crl)} revoked"


def _list_change(section: str, name: str, old: Iterable[str], new: Iterable[str]) -> ChangeLine:
    a, b = list(old), list(new)
    details = [f"+{x}" for x in b if x not in a] + [f"-{x}" for x in a if x not in b]
    return ChangeLine(section, name, "changed", tuple(details or [f"{a} -> {b}"]))


def host_changes(old: NodePlan, new: NodePlan) -> list[ChangeLine]:
    """Every data-plane change from ``old`` to ``new`` for one host."""
    out: list[ChangeLine] = []
    if old.identity != new.identity:
        out.append(
            ChangeLine(
                "identity", new.host, "changed", (f"{old.identity.value} -> {new.identity.value}",)
            )
        )
    if old.addresses != new.addresses:
        out.append(_list_change("addresses", new.host, old.addresses, new.addresses))
    if old.subnets != new.subnets:
        out.append(_list_change("subnets", new.host, old.subnets, new.subnets))
    if old.trust_anchors != new.trust_anchors:
        out.append(
            _list_change(
                "trust-anchors",
                new.host,
                (_fingerprint(p) for p in old.trust_anchors),
                (_fingerprint(p) for p in new.trust_anchors),
            )
        )
    if old.crls != new.crls:
        out.append(
            _list_change("crl", new.host, map(_crl_summary, old.crls), map(_crl_summary, new.crls))
        )

    old_peers = {p.name: p for p in old.peers}
    new_peers = {p.name: p for p in new.peers}
    for name, peer in new_peers.items():
        before = old_peers.get(name)
        if before is None:
            out.append(
                ChangeLine(
                    "peer",
                    name,
                    "added",
                    (
                        f"address {', '.join(peer.remote_addresses) or 'any'}",
                        f"auth {peer.auth.reference}",
                        f"ike {_proposals(peer.ike_proposals)}",
                        f"esp {_proposals(peer.esp_proposals)}",
                    ),
                )
            )
        elif before != peer:
            details = peer_changes(before, peer)
            if details:
                out.append(ChangeLine("peer", name, "changed", tuple(details)))
    for name, peer in old_peers.items():
        if name not in new_peers:
            out.append(
                ChangeLine(
                    "peer",
                    name,
                    "removed",
                    (f"address {', '.join(peer.remote_addresses) or 'any'}",),
                )
            )

    old_spd = {e.name: e for e in old.spd}
    new_spd = {e.name: e for e in new.spd}
    for name, entry in new_spd.items():
        before_entry = old_spd.get(name)
        if before_entry is None:
            out.append(ChangeLine("spd", name, "added", (entry_text(entry),)))
        elif before_entry != entry:
            out.append(
                ChangeLine(
                    "spd", name, "changed", (f"{entry_text(before_entry)} -> {entry_text(entry)}",)
                )
            )
    for name, entry in old_spd.items():
        if name not in new_spd:
            out.append(ChangeLine("spd", name, "removed", (entry_text(entry),)))
    kept_old = [e.name for e in old.spd if e.name in new_spd]
    kept_new = [e.name for e in new.spd if e.name in old_spd]
    if kept_old != kept_new:
        # First match wins (RFC 4301 section 4.4.1): a new order is a policy change.
        out.append(ChangeLine("spd-order", new.host, "changed", (" > ".join(kept_new),)))
    return out


def diff_plans(
    old: Mapping[str, NodePlan],
    new: Mapping[str, NodePlan],
    *,
    from_revision: str = "",
    to_revision: str = "",
) -> FleetDiff:
    """Per host, what changes between the ``old`` and the ``new`` plans."""
    result = FleetDiff(from_revision=from_revision, to_revision=to_revision)
    for host in sorted(set(old) | set(new)):
        a, b = old.get(host), new.get(host)
        if a is None and b is not None:
            changes = host_changes(_empty(b), b)
            result.hosts.append(HostDiff(host, "added", tuple(changes)))
        elif b is None and a is not None:
            result.hosts.append(HostDiff(host, "removed"))
        elif a is not None and b is not None:
            changes = host_changes(a, b)
            if changes:
                result.hosts.append(HostDiff(host, "changed", tuple(changes)))
            else:
                result.unchanged.append(host)
    return result


def _empty(plan: NodePlan) -> NodePlan:
    """A plan with nothing in it, for showing a new host as all additions."""
    return NodePlan(plan.host, 0, "", plan.identity, (), (), (), (), (), plan.source_revision)
