"""topology.yaml: which hosts get tunnels to which, and the operator's SPD policies.

Schema (every key optional; unknown keys are errors with a did-you-mean)::

    overlay_pool: 100.64.0.0/10        # hosts without `subnets` get one address from here
    meshes:                            # full mesh among the hosts of a group
      - {name: lab, group: mesh}
    hub_spoke:                         # hubs meshed with each other; each spoke peers
      - {name: hq, hubs: hubs, spokes: spokes}   # with every hub and reaches the other
                                       # spokes through a hub
    links:                             # explicit site-to-site tunnels between two hosts
      - {a: gw1, b: gw2, name: optional-label}
    external_peers:                    # gateways vpnfleet does not manage
      - name: partner
        address: 203.0.113.10          # or "any": no fixed address, known by its identity
        identity: vpn.partner.example  # default: the address (an IP ID)
        auth: psk                      # psk | pubkey
        psk: !vault ...                # auth psk: the key, 16+ characters (use the vault)
        ca: |                          # auth pubkey: PEM of the CA that signs its cert
          -----BEGIN CERTIFICATE----- ...
        subnets: [192.0.2.0/24]
        ike_proposals: [aes256gcm16-prfsha384-x25519]   # what it accepts (checked
        esp_proposals: [aes256gcm16]                     # against our hosts' own)
        ike_version: 2                 # 1: IKEv1; must match its hosts' ike_version
        ike_aggressive: false          # IKEv1 Aggressive Mode (warned of); ditto
        connect: gateways              # --limit pattern of the hosts that peer with it
        port: 500
    policies:                          # ordered; placed before the implicit entries
      - name: ssh-clear
        action: bypass                 # protect | bypass | discard
        local: 10.1.0.0/16             # prefix or "any" (default)
        remote: any
        protocol: tcp                  # name, number or "any" (default)
        local_ports: any               # "80", 80, "1000-2000" or "any" (tcp/udp/sctp only)
        remote_ports: "22"
        hosts: all                     # --limit pattern of the hosts it applies to
        peer: partner                  # protect only: the peer whose SA carries it

A host pair may be joined by one construct only; a second is an error naming both.
Who initiates: in meshes, links and among hubs, a host behind NAT (``nat: true``) when
only one end is, otherwise the end that does not only respond when the other does
(``start_action: none``), otherwise the host with the lower name; spokes initiate to hubs;
managed hosts initiate to external peers, unless their ``start_action`` is ``none``
(they only respond) or the peer's address is ``any`` (it can only be answered).

Overlay addresses: a host with no ``subnets`` gets one /32 (/128 in an IPv6 pool) from
``overlay_pool``. Hosts are taken in name order; each starts at slot
SHA-256(name) mod (pool size) and probes forward to the next free slot. The address
depends only on the host's own name unless two names hash to the same slot, so adding
or removing other hosts leaves existing addresses alone; it can only move a host whose
slot a newcomer with an earlier name hashes onto (probability ~ hosts / pool size per
added host, tiny in the default /10). A counter in name order, the obvious alternative,
would renumber every host after an insertion.
"""

from __future__ import annotations

import hashlib
import ipaddress
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from vpnfleet.controller.inventory import (
    Inventory,
    InventoryError,
    InventoryWarning,
    Mark,
    ResolvedHost,
    did_you_mean,
    key_mark,
    mark_of,
)

from .checks import TopologyChecker
from .external import ExternalPeer, parse_external
from .policy import Policy, parse_policy

DEFAULT_OVERLAY_POOL = "100.64.0.0/10"
TOP_KEYS = ("overlay_pool", "meshes", "hub_spoke", "links", "external_peers", "policies")
MESH_KEYS = ("name", "group")
HUB_SPOKE_KEYS = ("name", "hubs", "spokes")
LINK_KEYS = ("a", "b", "name")


class RoleKind(StrEnum):
    """Which construct of topology.yaml made a tunnel, and this end's side of it."""

    MESH = "mesh"
    LINK = "link"
    HUB_MESH = "hub-mesh"  # between the hubs of one hub_spoke
    HUB = "hub"  # a hub's end of its tunnel to a spoke
    SPOKE = "spoke"
    EXTERNAL = "external"  # to a gateway vpnfleet does not manage


@dataclass(frozen=True, slots=True)
class Role:
    """How one end sees one tunnel; shared by every pair of a construct side."""

    kind: RoleKind
    construct: str  # the mesh / hub_spoke / link name, for messages
    mark: Mark | None
    initiator: bool | None = None  # None: by NAT, then by name order
    extra_local: tuple[str, ...] = ()  # hub side: spoke prefixes it forwards for
    extra_remote: tuple[str, ...] = ()  # spoke side: other spokes' prefixes via the hub
    hubs: tuple[str, ...] = ()  # spoke side: every hub of the construct, sorted
    mirrored: bool = True  # the other end sees the tunnel with this same role


@dataclass(slots=True)
class Topology:
    """The expanded topology: adjacency of every managed host, with roles."""

    adjacency: dict[str, dict[str, Role]] = field(default_factory=dict)
    externals: dict[str, ExternalPeer] = field(default_factory=dict)
    overlay: dict[str, str] = field(default_factory=dict)
    policies: tuple[Policy, ...] = ()
    # Per host, for the transit entries and trust anchors: the hub_spoke roles in which it
    # is a hub (with that construct's spokes, sorted) or a spoke, and its external peers.
    hub_of: dict[str, list[tuple[Role, tuple[str, ...]]]] = field(default_factory=dict)
    spoke_of: dict[str, list[Role]] = field(default_factory=dict)
    externals_of: dict[str, list[str]] = field(default_factory=dict)
    warnings: list[InventoryWarning] = field(default_factory=list)
    """What plans but is likely unwise (IKEv1 Aggressive Mode towards an external peer)."""


def _overlay(
    ck: TopologyChecker, topology: Mapping[str, Any], resolved: Mapping[str, ResolvedHost]
) -> dict[str, str]:
    raw = topology.get("overlay_pool", DEFAULT_OVERLAY_POOL)
    text = ck.prefix(raw, "overlay_pool")
    if text is None:
        return {}
    pool = ipaddress.ip_network(text)
    needing = sorted(name for name, host in resolved.items() if not host.vars.get("subnets"))
    if not needing:
        return {}
    # Skip the pool's first address (and for IPv4 the last: the network and broadcast
    # addresses of a routed pool are not host addresses).
    first = 1 if pool.num_addresses > 2 else 0
    size = pool.num_addresses - (2 if pool.version == 4 and pool.num_addresses > 2 else first)
    if len(needing) > size:
        ck.error(
            f"overlay_pool {text} has {size} addresses, but {len(needing)} hosts have no subnets",
            raw,
        )
        return {}
    base = int(pool.network_address) + first
    bits = "/32" if pool.version == 4 else "/128"
    taken: set[int] = set()
    out: dict[str, str] = {}
    for name in needing:
        slot = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big") % size
        while slot in taken:
            slot = (slot + 1) % size
        taken.add(slot)
        out[name] = str(ipaddress.ip_address(base + slot)) + bits
    return out


def _aggregate(prefixes: list[str]) -> tuple[str, ...]:
    """The fewest prefixes covering ``prefixes`` (per family, v4 first, sorted)."""
    nets4 = [ipaddress.IPv4Network(p) for p in prefixes if ":" not in p]
    nets6 = [ipaddress.IPv6Network(p) for p in prefixes if ":" in p]
    return tuple(
        [n.compressed for n in ipaddress.collapse_addresses(nets4)]
        + [n.compressed for n in ipaddress.collapse_addresses(nets6)]
    )


class _Adjacency:
    def __init__(self, ck: TopologyChecker, topo: Topology) -> None:
        self.ck = ck
        self.adj = topo.adjacency

    def join(self, host: str, peers: Mapping[str, Role]) -> None:
        """Add ``peers`` to ``host``; a pair already joined by another construct is an error."""
        mine = self.adj.setdefault(host, {})
        if mine and not mine.keys().isdisjoint(peers):
            for peer, role in peers.items():
                old = mine.get(peer)
                if old is not None and host < peer:
                    self.ck.error(
                        f"{role.kind} {role.construct!r} joins {host} and {peer}, which "
                        f"{old.kind} {old.construct!r} (at {old.mark}) already joins",
                        at=role.mark,
                    )
            peers = {p: r for p, r in peers.items() if p not in mine}
        mine.update(peers)


def expand_topology(
    inventory: Inventory, resolved: Mapping[str, ResolvedHost]
) -> tuple[Topology, list[InventoryError]]:
    """Validate ``inventory.topology`` and expand it; returns the errors found too."""
    raw = inventory.topology
    topo = Topology(adjacency={name: {} for name in resolved})
    ck = TopologyChecker(inventory, mark_of(raw))
    if raw is None:
        topo.overlay = _overlay(ck, {}, resolved)
        return topo, ck.errors
    for key in raw:
        if key not in TOP_KEYS:
            hint = did_you_mean(key, TOP_KEYS) or f" (expected {', '.join(TOP_KEYS)})"
            ck.error(f"unknown key {key!r}{hint}", at=key_mark(raw, key))
    topo.overlay = _overlay(ck, raw, resolved)
    subnets = {
        name: tuple(host.vars.get("subnets") or ()) or (topo.overlay.get(name, ""),)
        for name, host in resolved.items()
    }
    adj = _Adjacency(ck, topo)
    names: dict[str, Mark | None] = {}

    def unique(name: str | None, what: str, where: Any) -> None:
        if name is None:
            return
        if name in names:
            ck.error(f"{what}: name {name!r} is already used at {names[name]}", where)
        names[name] = mark_of(where)

    for i, entry in enumerate(ck.entries(raw, "meshes")):
        what = f"meshes[{i}]"
        ck.keys(entry, what, MESH_KEYS, ("name", "group"))
        name = ck.string(entry, "name", what)
        unique(name, what, entry.get("name"))
        members = ck.group(entry, "group", what)
        if name is None or members is None:
            continue
        role = Role(RoleKind.MESH, name, mark_of(entry))
        members = sorted(members)
        for host in members:
            peers = dict.fromkeys(members, role)
            del peers[host]
            adj.join(host, peers)

    for i, entry in enumerate(ck.entries(raw, "hub_spoke")):
        what = f"hub_spoke[{i}]"
        ck.keys(entry, what, HUB_SPOKE_KEYS, HUB_SPOKE_KEYS)
        name = ck.string(entry, "name", what)
        unique(name, what, entry.get("name"))
        hubs = ck.group(entry, "hubs", what)
        spokes = ck.group(entry, "spokes", what)
        if name is None or hubs is None or spokes is None:
            continue
        both = sorted(set(hubs) & set(spokes))
        if both:
            ck.error(f"{what}: {', '.join(both)} cannot be both hub and spoke", entry)
            continue
        if not hubs:
            ck.error(f"{what}: group {entry['hubs']!r} has no hosts to act as hubs", entry)
            continue
        mark = mark_of(entry)
        transit = _aggregate([p for s in spokes for p in subnets[s]])
        hub_list = tuple(sorted(hubs))
        hub_mesh = Role(RoleKind.HUB_MESH, name, mark)
        to_hub = Role(RoleKind.SPOKE, name, mark, True, (), transit, hub_list, mirrored=False)
        to_spoke = Role(RoleKind.HUB, name, mark, False, transit, (), mirrored=False)
        spoke_list = tuple(sorted(spokes))
        for hub in hubs:
            topo.hub_of.setdefault(hub, []).append((to_spoke, spoke_list))
            peers = dict.fromkeys(hubs, hub_mesh)
            del peers[hub]
            peers.update(dict.fromkeys(spokes, to_spoke))
            adj.join(hub, peers)
        spoke_peers = dict.fromkeys(hubs, to_hub)
        for spoke in spokes:
            adj.join(spoke, spoke_peers)
            topo.spoke_of.setdefault(spoke, []).append(to_hub)

    for i, entry in enumerate(ck.entries(raw, "links")):
        what = f"links[{i}]"
        ck.keys(entry, what, LINK_KEYS, ("a", "b"))
        a, b = ck.host(entry, "a", what), ck.host(entry, "b", what)
        label = ck.string(entry, "name", what)
        if a is None or b is None:
            continue
        if a == b:
            ck.error(f"{what}: a link needs two different hosts, got {a!r} twice", entry)
            continue
        role = Role(RoleKind.LINK, label or f"{min(a, b)}-{max(a, b)}", mark_of(entry))
        adj.join(a, {b: role})
        adj.join(b, {a: role})

    dynamic_of: dict[str, ExternalPeer] = {}
    for i, entry in enumerate(ck.entries(raw, "external_peers")):
        what = f"external_peers[{i}]"
        parsed = parse_external(ck, entry, what, unique)
        if parsed is None:
            continue
        peer, hosts = parsed
        if peer.address is None:
            # An IKE_SA_INIT says nothing of who sends it: a host tells a peer with no
            # address from its other peers by the source address not being theirs.
            twice = [h for h in hosts if h in dynamic_of]
            if twice:
                first = dynamic_of[twice[0]]
                ck.error(
                    f"{what}: {', '.join(twice)} would have two external peers with address "
                    f"any, {first.name} (at {first.mark}) and {peer.name}; a host can answer "
                    "one such peer: give the others their addresses, or connect them to "
                    "other hosts",
                    entry,
                )
                continue
            dynamic_of.update(dict.fromkeys(hosts, peer))
        topo.externals[peer.name] = peer
        role = Role(RoleKind.EXTERNAL, peer.name, peer.mark, True, mirrored=False)
        for host in hosts:
            adj.join(host, {peer.name: role})
            topo.externals_of.setdefault(host, []).append(peer.name)

    topo.policies = tuple(
        p
        for i, entry in enumerate(ck.entries(raw, "policies"))
        if (p := parse_policy(ck, topo.externals, entry, f"policies[{i}]", unique)) is not None
    )
    topo.warnings = ck.warnings
    return topo, ck.errors


def transit_order(spoke: str, hubs: tuple[str, ...]) -> tuple[str, ...]:
    """The hubs a spoke sends other spokes' traffic through, in preference order.

    Rotated by a hash (CRC-32) of the spoke's name so spoke-to-spoke traffic spreads
    over the hubs; stable for a given set of hubs.
    """
    start = zlib.crc32(spoke.encode()) % len(hubs)
    return hubs[start:] + hubs[:start]
