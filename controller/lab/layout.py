"""Where every lab host sits: namespace and interface names, underlay, management and
site addresses.

A pure function of the inventory (and its plans, for the external peers' addresses) and
of the lab's *key* and *management subnet* (machine-wide, allocated by :mod:`.owner`),
so every problem with the inventory is reported before anything is created.

The picture for a mesh (``vf-<key>-<host>`` per host, one bridge namespace; the key is
the lab's name unless another lab holds it)::

    root namespace ── vf-<key> 198.18.0.1 ═╗
                                           ║ br0 in vf-<key>-br
    vf-<key>-a1: eth0 10.99.0.11/24  ══════╣   site0 10.1.1.1/24 (veth pair site0/site0p)
                      198.18.0.2/24        ║
    vf-<key>-a2: eth0 10.99.0.12/24  ══════╝   site0 10.1.2.1/24
                      198.18.0.3/24

The underlay (the inventory's addresses: IKE, ESP) exists only inside the lab. The
controller reaches each agent at its management address, which is what the lab records
in its controller state (``agent-addresses.json``); so two labs of one inventory can run
at once, and no route of this machine's own namespace is taken.

Each external peer of the topology (a gateway vpnfleet does not manage) becomes a
namespace ``vf-<key>-<peer>`` on the same bridge, with the peer's address and its site
subnets, where the lab runs strongSwan's charon in that peer's place (:mod:`.external`).

A host with ``nat: true`` gets a router namespace ``vf-<key>-nat<k>`` between it and the
bridge: the router's ``wan`` carries the host's inventory address (what its peers see)
and its management address, the host itself has a private address behind the router's
``lan``. The router masquerades the host's traffic and forwards the agent's gRPC port to
it (DNAT), so the controller reaches every agent at its management address alike.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..inventory import Inventory
from ..planner import Mode, NodePlan, expand_topology
from ..planner.model import AuthMethod, Identity, IdType, IkeVersion

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

NETNS_PREFIX = "vf-"
# Lab names (and keys) end up inside namespace and interface names (IFNAMSIZ: 15
# characters for "vf-<key>"), and without "-" so that "vf-<key>-" names one lab only.
LAB_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_]{0,11}$")
HOST_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
DEFAULT_AGENT_PORT = 50051
# Where the private networks behind NAT routers are taken from: the first free /24s.
NAT_POOL = ipaddress.IPv4Network("192.168.0.0/16")
NAT_FIRST = 100
MGMT_STAND_IN = {4: "198.18.0.0/24", 6: "2001:2::/64"}
WIDEST_UNDERLAY = {4: 8, 6: 48}
NARROWEST_UNDERLAY = {4: 24, 6: 64}


class LabError(Exception):
    """The lab cannot be built, used or removed; the message says why and what to do."""


@dataclass(frozen=True, slots=True)
class Site:
    """One site subnet kept on a veth end inside the host's namespace."""

    interface: str
    network: str
    address: str  # the first host address of the subnet
    prefixlen: int


@dataclass(frozen=True, slots=True)
class Router:
    """The NAT router in front of one host."""

    netns: str
    bridge_port: str  # its veth end in the bridge namespace
    wan_address: str  # the host's inventory address
    lan_network: str
    lan_address: str
    private_address: str  # the host's own address behind the router


@dataclass(frozen=True, slots=True)
class HostLayout:
    host: str
    netns: str
    address: str  # inventory (underlay) address: what peers and the controller use
    local_address: str  # the address on the host's eth0 (private behind NAT)
    prefixlen: int
    bridge_port: str  # veth end in the bridge namespace ("" behind NAT: the router's)
    sites: tuple[Site, ...]
    agent_port: int
    mgmt_address: str  # where the controller reaches the agent
    router: Router | None = None

    @property
    def endpoint(self) -> str:
        a = self.mgmt_address
        return f"[{a}]:{self.agent_port}" if ":" in a else f"{a}:{self.agent_port}"

    @property
    def listen(self) -> str:
        return f"[::]:{self.agent_port}" if ":" in self.address else f"0.0.0.0:{self.agent_port}"


@dataclass(frozen=True, slots=True)
class ExternalConnection:
    """One managed host's tunnel to an external peer, seen from the external peer."""

    host: str
    address: str  # the managed host's inventory address
    identity: str  # its IKE identity in strongSwan's notation (``fqdn:gw1.example``)
    local_ts: tuple[str, ...]  # the external peer's prefixes
    remote_ts: tuple[str, ...]  # the managed host's prefixes
    initiate: bool = False  # the managed host only answers (its plan: not the initiator)


@dataclass(frozen=True, slots=True)
class ExternalLayout:
    """An external peer played by charon in a namespace of its own."""

    name: str
    netns: str
    address: str
    prefixlen: int
    bridge_port: str  # veth end in the bridge namespace
    sites: tuple[Site, ...]
    identity: str  # strongSwan notation
    psk: bytes = field(repr=False)
    ike_proposals: tuple[str, ...]
    esp_proposals: tuple[str, ...]
    port: int
    connections: tuple[ExternalConnection, ...]
    ike_version: IkeVersion = IkeVersion.V2
    """The IKE protocol the peer speaks (charon's ``version``)."""
    aggressive: bool = False
    """IKEv1 Aggressive Mode (charon's ``aggressive``)."""

    def to_json(self) -> dict[str, Any]:
        # No PSK here: lab.json is a record, not a key store.
        return {
            "netns": self.netns,
            "address": self.address,
            "identity": self.identity,
            "ike_version": self.ike_version.value,
            "sites": [s.address for s in self.sites],
            "connections": [c.host for c in self.connections],
        }


@dataclass(frozen=True, slots=True)
class LabLayout:
    name: str
    key: str  # what its namespaces and link carry (see .owner)
    bridge_netns: str
    root_link: str  # the root namespace's veth into the bridge namespace
    underlay: str  # the underlay network, e.g. 10.99.0.0/24
    mgmt_network: str  # the management subnet, e.g. 198.18.0.0/24
    mgmt_address: str  # the root namespace's address on it (the controller's)
    hosts: Mapping[str, HostLayout]
    externals: Mapping[str, ExternalLayout] = field(default_factory=dict)

    @property
    def prefix(self) -> str:
        return netns_prefix(self.key)

    def networks(self) -> list[IpNetwork]:
        """Every network the lab puts addresses in, but the management subnet."""
        nets: list[IpNetwork] = [ipaddress.ip_network(self.underlay)]
        for h in self.hosts.values():
            nets += [ipaddress.ip_network(s.network) for s in h.sites]
            if h.router:
                nets.append(ipaddress.ip_network(h.router.lan_network))
        for x in self.externals.values():
            nets += [ipaddress.ip_network(s.network) for s in x.sites]
        return nets

    @property
    def namespaces(self) -> list[str]:
        names = [self.bridge_netns]
        for h in self.hosts.values():
            if h.router:
                names.append(h.router.netns)
            names.append(h.netns)
        names += [x.netns for x in self.externals.values()]
        return names

    def sites_of(self, name: str) -> tuple[str, tuple[Site, ...]] | None:
        """Namespace and sites of a lab host or external peer."""
        if name in self.hosts:
            return self.hosts[name].netns, self.hosts[name].sites
        if name in self.externals:
            return self.externals[name].netns, self.externals[name].sites
        return None

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "key": self.key,
            "bridge_netns": self.bridge_netns,
            "root_link": self.root_link,
            "underlay": self.underlay,
            "mgmt_network": self.mgmt_network,
            "mgmt_address": self.mgmt_address,
            "hosts": {
                h.host: {
                    "netns": h.netns,
                    "address": h.address,
                    "local_address": h.local_address,
                    "mgmt_address": h.mgmt_address,
                    "endpoint": h.endpoint,
                    "agent_port": h.agent_port,
                    "sites": [s.address for s in h.sites],
                    "router": h.router.netns if h.router else None,
                }
                for h in self.hosts.values()
            },
            "externals": {x.name: x.to_json() for x in self.externals.values()},
        }


def netns_prefix(key: str) -> str:
    return f"{NETNS_PREFIX}{key}-"


def root_link_name(key: str) -> str:
    return f"{NETNS_PREFIX}{key}"


def check_lab_name(name: str) -> str:
    if not LAB_NAME_RE.match(name):
        raise LabError(
            f"lab name {name!r} is not usable: 1 to 12 characters of a-z, 0-9 and _, starting "
            "with a letter or digit (it becomes part of namespace and interface names)"
        )
    return name


def _address(host: str, what: str, value: object) -> IpAddress:
    try:
        return ipaddress.ip_address(str(value))
    except ValueError:
        raise LabError(f"host {host}: {what} {value!r} is not an IP address") from None


def _network(host: str, value: object) -> IpNetwork:
    try:
        return ipaddress.ip_network(str(value), strict=False)
    except ValueError:
        raise LabError(f"host {host}: subnet {value!r} is not an IP prefix") from None


def underlay_network(addresses: Iterable[IpAddress]) -> IpNetwork:
    """The narrowest network, /24 (/64) or wider, holding every address."""
    addrs = list(addresses)
    if not addrs:
        raise LabError("the inventory has no hosts")
    versions = {a.version for a in addrs}
    if len(versions) > 1:
        raise LabError("the lab needs every host address in one IP version (IPv4 or IPv6)")
    version = addrs[0].version
    for plen in range(NARROWEST_UNDERLAY[version], WIDEST_UNDERLAY[version] - 1, -1):
        net = ipaddress.ip_network(f"{addrs[0]}/{plen}", strict=False)
        if all(a in net for a in addrs):
            return net
    raise LabError(
        f"host addresses {', '.join(map(str, addrs))} are too far apart for one lab "
        f"bridge (no common /{WIDEST_UNDERLAY[version]})"
    )


def _free_high_address(net: IpNetwork, used: set[IpAddress]) -> IpAddress:
    # The highest free address (.254 in a /24): far from the hosts, easy to recognise.
    for index in range(net.num_addresses - 2, 0, -1):
        if net[index] not in used:
            return net[index]
    raise LabError(f"no free address left in the underlay {net}")


def _mgmt_network(
    mgmt: IpNetwork | None, underlay: IpNetwork, hosts: int, taken: list[IpNetwork]
) -> IpNetwork:
    """``mgmt`` checked against the lab's own networks; without one, a stand-in of the
    right size (``prepare`` lays the lab out before :mod:`.owner` allocates the real one).
    """
    if mgmt is None:
        return ipaddress.ip_network(MGMT_STAND_IN[underlay.version])
    if mgmt.version != underlay.version:
        raise LabError(f"management subnet {mgmt} is not in the underlay's IP version")
    if mgmt.num_addresses < hosts + 3:
        raise LabError(f"management subnet {mgmt} is too small for {hosts} agents")
    for net in taken:
        if net.version == mgmt.version and net.overlaps(mgmt):
            raise LabError(f"management subnet {mgmt} overlaps the lab's network {net}")
    return mgmt


def _nat_networks(count: int, taken: list[IpNetwork]) -> list[ipaddress.IPv4Network]:
    free: list[ipaddress.IPv4Network] = []
    v4 = [t for t in taken if isinstance(t, ipaddress.IPv4Network)]
    for net in NAT_POOL.subnets(new_prefix=24):
        if len(free) == count:
            break
        if int(net.network_address.packed[2]) < NAT_FIRST:
            continue
        if any(net.overlaps(t) for t in v4):
            continue
        free.append(net)
    if len(free) < count:
        raise LabError(f"no free /24 left in {NAT_POOL} for the NAT routers' inside networks")
    return free


# strongSwan's type prefixes for identities (swanctl.conf ``id``), so that "gw2" is an
# FQDN and "a@b" an RFC 822 address exactly as the plan says (RFC 7296 section 3.5).
STRONGSWAN_ID_TYPES = {
    IdType.IPV4_ADDR: "ipv4",
    IdType.IPV6_ADDR: "ipv6",
    IdType.FQDN: "fqdn",
    IdType.RFC822_ADDR: "email",
    IdType.DER_ASN1_DN: "asn1dn",
}


def strongswan_id(identity: Identity) -> str:
    kind = STRONGSWAN_ID_TYPES.get(identity.type)
    if kind is None:
        raise LabError(
            f"identity {identity.value!r} of type {identity.type.value} has no strongSwan "
            "notation the lab can use"
        )
    return f"{kind}:{identity.value}"


def _check_name(prefix: str, name: str, what: str) -> None:
    if not HOST_NAME_RE.match(name):
        raise LabError(f"{what} name {name!r} cannot name a network namespace")
    if name == "br" or re.fullmatch(r"nat\d+", name):
        raise LabError(f"{what} name {name!r} clashes with the lab's own namespace {prefix}{name}")


def _external_layouts(
    prefix: str,
    inventory: Inventory,
    plans: Mapping[str, NodePlan],
    underlay: IpNetwork,
    taken: Mapping[IpAddress, str],
    subnets: list[tuple[str, IpNetwork]],
    reserved: set[IpAddress],
) -> dict[str, ExternalLayout]:
    """Where charon plays each external peer, and the tunnels the plans give it. A peer
    with ``address: any`` gets a free underlay address (the highest), which no plan
    names: the hosts answer it wherever it comes from."""
    resolved = {h: inventory.resolve(h) for h in inventory.hosts}
    topology, errors = expand_topology(inventory, resolved)
    if errors:
        raise LabError(f"the topology is not valid: {errors[0]}")
    out: dict[str, ExternalLayout] = {}
    for k, (name, ext) in enumerate(topology.externals.items(), start=1):
        what = f"external peer {name}"
        _check_name(prefix, name, "external peer")
        if ext.address is None:
            address = _free_high_address(underlay, reserved)
        else:
            address = ipaddress.ip_address(ext.address)
        reserved.add(address)
        bounds = (underlay.network_address, getattr(underlay, "broadcast_address", None))
        if address.version != underlay.version or address not in underlay or address in bounds:
            raise LabError(
                f"{what}: address {address} is not a host address of the lab's underlay "
                f"{underlay} (where the managed hosts' addresses are): give it one there"
            )
        if address in taken:
            raise LabError(f"{what}: address {address} is also {taken[address]}'s address")
        if ext.auth is not AuthMethod.PSK:
            raise LabError(
                f"{what}: the lab plays external peers with a PSK only (auth {ext.auth.lower()} "
                "needs a certificate of that peer's own CA, which the lab does not have)"
            )
        sites = []
        for j, text in enumerate(ext.subnets):
            net = _network(name, text)
            if net.version == underlay.version and net.overlaps(underlay):
                raise LabError(f"{what}: subnet {net} overlaps the underlay network {underlay}")
            for h, other in subnets:
                if net.version == other.version and net.overlaps(other):
                    raise LabError(f"{what}: subnet {net} overlaps {h}'s subnet {other}")
            first = next(iter(net.hosts()), net.network_address)
            sites.append(Site(f"site{j}", str(net), str(first), net.prefixlen))
        connections = []
        for host in sorted(plans):
            for peer in plans[host].peers:
                if peer.name != name or peer.managed:
                    continue
                if peer.mode is not Mode.TUNNEL:
                    raise LabError(
                        f"host {host}: its tunnel to {what} is in {peer.mode.value} mode; the "
                        "lab's strongSwan (kernel-libipsec) does tunnel mode only"
                    )
                connections.append(
                    ExternalConnection(
                        host=host,
                        address=peer.local_address or str(taken_by(taken, host)),
                        identity=strongswan_id(peer.local_id),
                        local_ts=peer.remote_ts,
                        remote_ts=peer.local_ts,
                        initiate=not peer.initiator,
                    )
                )
        out[name] = ExternalLayout(
            name=name,
            netns=f"{prefix}{name}",
            address=str(address),
            prefixlen=underlay.prefixlen,
            bridge_port=f"x{k}",
            sites=tuple(sites),
            identity=strongswan_id(ext.identity),
            psk=ext.psk.encode(),
            ike_proposals=tuple(p.text for p in ext.ike_proposals),
            esp_proposals=tuple(p.text for p in ext.esp_proposals),
            port=ext.port,
            connections=tuple(connections),
            ike_version=ext.ike_version,
            aggressive=ext.aggressive,
        )
    return out


def taken_by(taken: Mapping[IpAddress, str], host: str) -> IpAddress | str:
    """The inventory address of ``host`` ("%any" when it has none)."""
    return next((a for a, h in taken.items() if h == host), "%any")


def plan_layout(
    name: str,
    inventory: Inventory,
    plans: Mapping[str, NodePlan] | None = None,
    *,
    key: str | None = None,
    mgmt: IpNetwork | None = None,
) -> LabLayout:
    """Lay the inventory's hosts out as namespaces; refuse what the lab cannot build.

    ``key`` (default: the name) and ``mgmt`` are the lab's machine-wide key and
    management subnet (:func:`.owner.claim`)."""
    check_lab_name(name)
    key = check_lab_name(key or name)
    prefix = netns_prefix(key)
    hosts = list(inventory.hosts)
    addresses: dict[str, IpAddress] = {}
    subnets: dict[str, list[IpNetwork]] = {}
    nat: dict[str, bool] = {}
    ports: dict[str, int] = {}
    for h in hosts:
        _check_name(prefix, h, "host")
        v = inventory.resolve(h).vars
        if not v.get("address"):
            raise LabError(f"host {h}: the lab needs an `address` (its underlay address)")
        addresses[h] = _address(h, "address", v["address"])
        subnets[h] = [_network(h, s) for s in (v.get("subnets") or ())]
        nat[h] = bool(v.get("nat"))
        ports[h] = int(v.get("agent_port") or DEFAULT_AGENT_PORT)
    seen: dict[IpAddress, str] = {}
    for h, a in addresses.items():
        if a in seen:
            raise LabError(f"hosts {seen[a]} and {h} have the same address {a}")
        seen[a] = h
    underlay = underlay_network(addresses.values())
    for h, a in addresses.items():
        if a in (underlay.network_address, getattr(underlay, "broadcast_address", None)):
            raise LabError(f"host {h}: address {a} is not a host address of {underlay}")
    all_subnets = [(h, s) for h, nets in subnets.items() for s in nets]
    for h, s in all_subnets:
        if s.version == underlay.version and s.overlaps(underlay):
            raise LabError(f"host {h}: subnet {s} overlaps the underlay network {underlay}")
    used = set(addresses.values())
    for plan in (plans or {}).values():
        for peer in plan.peers:
            for ra in peer.remote_addresses:
                try:
                    used.add(ipaddress.ip_address(ra))
                except ValueError:
                    continue
    nat_hosts = [h for h in hosts if nat[h]]
    if nat_hosts and underlay.version != 4:
        raise LabError("the lab's NAT routers are IPv4 only (nftables masquerade to IPv4)")
    lans = _nat_networks(len(nat_hosts), [underlay] + [s for _h, s in all_subnets])
    mgmt_net = _mgmt_network(
        mgmt, underlay, len(hosts), [underlay, *lans, *(s for _h, s in all_subnets)]
    )
    out: dict[str, HostLayout] = {}
    for i, h in enumerate(hosts):
        sites = []
        for j, s in enumerate(subnets[h]):
            first = next(iter(s.hosts()), s.network_address)
            sites.append(Site(f"site{j}", str(s), str(first), s.prefixlen))
        router = None
        local, plen, port = str(addresses[h]), underlay.prefixlen, f"h{i}"
        if nat[h]:
            k = nat_hosts.index(h) + 1
            lan = lans[k - 1]
            router = Router(
                netns=f"{prefix}nat{k}",
                bridge_port=f"r{k}",
                wan_address=str(addresses[h]),
                lan_network=str(lan),
                lan_address=str(lan[1]),
                private_address=str(lan[2]),
            )
            local, plen, port = router.private_address, lan.prefixlen, ""
        out[h] = HostLayout(
            host=h,
            netns=f"{prefix}{h}",
            address=str(addresses[h]),
            local_address=local,
            prefixlen=plen,
            bridge_port=port,
            sites=tuple(sites),
            agent_port=ports[h],
            # The controller first, then the hosts in inventory order.
            mgmt_address=str(mgmt_net[2 + i]),
            router=router,
        )
    externals = _external_layouts(prefix, inventory, plans or {}, underlay, seen, all_subnets, used)
    for x in externals.values() if mgmt is not None else ():
        for site in x.sites:
            if ipaddress.ip_network(site.network).overlaps(mgmt_net):
                raise LabError(
                    f"external peer {x.name}: subnet {site.network} overlaps the lab's "
                    f"management subnet {mgmt_net}"
                )
    return LabLayout(
        name=name,
        key=key,
        bridge_netns=f"{prefix}br",
        root_link=root_link_name(key),
        underlay=str(underlay),
        mgmt_network=str(mgmt_net),
        mgmt_address=str(mgmt_net[1]),
        hosts=out,
        externals=externals,
    )
