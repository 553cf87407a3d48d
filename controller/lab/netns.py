"""Namespaces, veth links, the bridge and the NAT routers, made with ``ip`` and ``nft``.

Interfaces are created directly inside their namespaces (``ip -n NS link add … peer
name … netns OTHER``), so their names only need to be unique per namespace and stay
short (eth0, site0, h3, r1); the one link in the root namespace is ``vf-<key>``, at most
15 characters (IFNAMSIZ) because lab keys are at most 12. It carries the management
subnet only: the underlay stays inside the lab.

Every namespace shares the kernel's neighbour tables, whose garbage-collection limits
(``gc_thresh3``, 1,024 entries by default) are set for the whole machine only: a mesh of
N hosts on one bridge needs about N(N-1) + 2N entries, so past ~30 hosts resolution
fails ("neighbor table overflow"). Permanent entries are exempt from those limits
(``neigh_alloc`` counts only what the collector may reclaim), so the lab pins every
neighbour on the bridge (:func:`pin_neighbours`) instead of changing sysctls of the
machine; the entries go with the interfaces, when the lab is removed.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from .layout import HostLayout, LabError, LabLayout
from .record import LabRecord

NAT_TABLE = "vpnfleet_lab"
BRIDGE = "br0"
BRIDGE_NETFILTER_OFF = (
    "net.bridge.bridge-nf-call-iptables=0",
    "net.bridge.bridge-nf-call-ip6tables=0",
    "net.bridge.bridge-nf-call-arptables=0",
)
"""The bridge namespace's sysctls that keep bridged frames out of netfilter."""


def run(argv: list[str], *, stdin: str | None = None, check: bool = True) -> str:
    try:
        res = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=30)
    except FileNotFoundError:
        raise LabError(
            f"`{argv[0]}` is not installed; the lab needs iproute2 and nftables"
        ) from None
    if check and res.returncode != 0:
        raise LabError(f"`{' '.join(argv)}` failed: {res.stderr.strip() or res.returncode}")
    return res.stdout


def ip(*args: str, netns: str | None = None, check: bool = True) -> str:
    return run(["ip", *(("-n", netns) if netns else ()), *args], check=check)


def list_netns() -> list[str]:
    # `ip netns list` prints "name (id: N)" for namespaces with an id assigned.
    out = run(["ip", "netns", "list"], check=False)
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def link_exists(name: str) -> bool:
    return (
        subprocess.run(
            ["ip", "link", "show", "dev", name], capture_output=True, check=False
        ).returncode
        == 0
    )


def root_routes(version: int) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """The destinations of the root namespace's routes in every table (but default,
    loopback and link-local ones): where a lab's management subnet must not go."""
    family = "-4" if version == 4 else "-6"
    found = []
    for line in run(["ip", family, "route", "show", "table", "all"], check=False).splitlines():
        words = line.split()
        if not words:
            continue
        dest = words[0]
        if dest in ("default", "local", "broadcast", "multicast", "unreachable", "anycast"):
            dest = words[1] if dest != "default" and len(words) > 1 else ""
        try:
            net = ipaddress.ip_network(dest, strict=False)
        except ValueError:
            continue
        if net.prefixlen == 0 or net.is_loopback or net.is_link_local:
            continue
        found.append(net)
    return found


def add_netns(record: LabRecord, name: str) -> None:
    record.add("netns", name=name)
    ip("netns", "add", name)
    ip("link", "set", "lo", "up", netns=name)


def build_bridge(record: LabRecord, layout: LabLayout) -> None:
    br = layout.bridge_netns
    add_netns(record, br)
    ip("link", "add", BRIDGE, "type", "bridge", netns=br)
    # A wire, not a firewall: where the kernel has bridge netfilter (built in on some,
    # its sysctls on in every new namespace), each frame the bridge forwards would also
    # pass the IPv4, IPv6 and ARP hooks, with a route lookup per frame. The lab's
    # nftables rules are in hosts and routers, never on the bridge. (-e: absent keys,
    # where the kernel has no bridge netfilter, are not an error.)
    run(["ip", "netns", "exec", br, "sysctl", "-eqw", *BRIDGE_NETFILTER_OFF])
    ip("link", "set", BRIDGE, "up", netns=br)
    # The controller's way in: a veth from the root namespace onto the bridge.
    record.add("link", name=layout.root_link)
    ip("link", "add", layout.root_link, "type", "veth", "peer", "name", "root", "netns", br)
    ip("link", "set", "root", "master", BRIDGE, "up", netns=br)
    set_address(None, layout.root_link, layout.mgmt_address, _plen(layout.mgmt_network))


def _plen(network: str) -> int:
    return int(network.split("/")[1])


def veth(netns: str, name: str, peer: str, peer_netns: str | None = None) -> None:
    """A veth pair made in ``netns``, its ``peer`` end moved to ``peer_netns`` if given."""
    where = ("netns", peer_netns) if peer_netns else ()
    ip("link", "add", name, "type", "veth", "peer", "name", peer, *where, netns=netns)


def _attach(layout: LabLayout, port: str, netns: str, ifname: str) -> None:
    br = layout.bridge_netns
    veth(br, port, ifname, netns)
    ip("link", "set", port, "master", BRIDGE, "up", netns=br)


def set_address(netns: str | None, dev: str, address: str, prefixlen: int) -> None:
    extra = ("nodad",) if ":" in address else ()
    ip("addr", "add", f"{address}/{prefixlen}", "dev", dev, *extra, netns=netns)
    ip("link", "set", dev, "up", netns=netns)


def nat_ruleset(host: HostLayout) -> str:
    assert host.router is not None
    return (
        f"table ip {NAT_TABLE} {{\n"
        "  chain prerouting {\n"
        "    type nat hook prerouting priority dstnat; policy accept;\n"
        # The controller reaches the agent behind the NAT through a port forward.
        f'    iifname "wan" tcp dport {host.agent_port} dnat to {host.router.private_address}\n'
        "  }\n"
        "  chain postrouting {\n"
        "    type nat hook postrouting priority srcnat; policy accept;\n"
        '    oifname "wan" masquerade\n'
        "  }\n"
        "}\n"
    )


def build_router(record: LabRecord, layout: LabLayout, host: HostLayout) -> None:
    router = host.router
    assert router is not None
    add_netns(record, router.netns)
    _attach(layout, router.bridge_port, router.netns, "wan")
    set_address(router.netns, "wan", router.wan_address, _plen(layout.underlay))
    set_address(router.netns, "wan", host.mgmt_address, _plen(layout.mgmt_network))
    veth(router.netns, "lan", "eth0", host.netns)
    set_address(router.netns, "lan", router.lan_address, int(router.lan_network.split("/")[1]))
    run(["ip", "netns", "exec", router.netns, "sysctl", "-qw", "net.ipv4.ip_forward=1"])
    record.add("nft", netns=router.netns, table=NAT_TABLE)
    run(["ip", "netns", "exec", router.netns, "nft", "-f", "-"], stdin=nat_ruleset(host))


def build_host(record: LabRecord, layout: LabLayout, host: HostLayout) -> None:
    add_netns(record, host.netns)
    if host.router:
        build_router(record, layout, host)
    else:
        _attach(layout, host.bridge_port, host.netns, "eth0")
    set_address(host.netns, "eth0", host.local_address, host.prefixlen)
    if host.router is None:
        set_address(host.netns, "eth0", host.mgmt_address, _plen(layout.mgmt_network))
    if host.router:
        ip("route", "add", "default", "via", host.router.lan_address, netns=host.netns)
    for site in host.sites:
        # No dummy interfaces on this kernel: a veth pair kept inside the namespace.
        peer = f"{site.interface}p"
        veth(host.netns, site.interface, peer)
        ip("link", "set", peer, "up", netns=host.netns)
        set_address(host.netns, site.interface, site.address, site.prefixlen)
    # Every lab host is a site gateway: a hub forwards spoke-to-spoke traffic from one
    # tunnel into another, as a real gateway forwards its site's traffic.
    run(["ip", "netns", "exec", host.netns, "sysctl", "-qw", "net.ipv4.ip_forward=1"])
    run(["ip", "netns", "exec", host.netns, "sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"])


def cleartext_routes(layout: LabLayout) -> dict[str, list[tuple[str, str]]]:
    """Per host namespace, (site network, via) for every other host's site subnets: the
    main table's way to the other sites in the clear, as a routed network between the
    sites would give. SPD bypass traffic takes it; protected traffic never does, since
    the agent's rules send it to the tunnel table first, whose ``unreachable`` fallbacks
    stay when the agent dies (agent/engine/plan_routes.py).

    Hosts behind a NAT router get none and are reached by none: the router masquerades
    what they send, so no selector on site addresses would match it on the far side.
    A site overlapping one of the namespace's own sites, or already routed, is skipped.
    """
    direct = [h for h in layout.hosts.values() if h.router is None]
    out: dict[str, list[tuple[str, str]]] = {}
    for host in direct:
        taken = [ipaddress.ip_network(s.network) for s in host.sites]
        routes: list[tuple[str, str]] = []
        for other in direct:
            if other.host == host.host:
                continue
            via = ipaddress.ip_address(other.address)
            for site in other.sites:
                net = ipaddress.ip_network(site.network)
                if net.version != via.version or any(
                    net.version == t.version and net.overlaps(t) for t in taken
                ):
                    continue
                taken.append(net)
                routes.append((str(net), str(via)))
        out[host.netns] = routes
    return out


def build_network(
    record: LabRecord, layout: LabLayout, progress: Callable[[str], None] = lambda _m: None
) -> None:
    build_bridge(record, layout)
    progress(
        f"bridge {layout.bridge_netns}: underlay {layout.underlay}, management "
        f"{layout.mgmt_network}, controller at {layout.mgmt_address} on {layout.root_link}"
    )
    for host in layout.hosts.values():
        build_host(record, layout, host)
        where = f" behind {host.router.netns} ({host.local_address})" if host.router else ""
        sites = ", ".join(s.address for s in host.sites) or "no sites"
        progress(
            f"host {host.host}: {host.netns} {host.address}{where}, agent at "
            f"{host.endpoint}; {sites}"
        )
    count = 0
    for netns_name, routes in cleartext_routes(layout).items():
        # One `ip -batch` per namespace: a mesh of N hosts has N(N-1) such routes.
        lines = "".join(f"route add {network} via {via}\n" for network, via in routes)
        if lines:
            run(["ip", "-n", netns_name, "-batch", "-"], stdin=lines)
            count += len(routes)
    if count:
        progress(f"{count} cleartext routes between the sites (for SPD bypass traffic)")


# ---------------------------------------------------------------- neighbours


@dataclass(frozen=True, slots=True)
class BridgeEnd:
    """An interface on the lab's bridge and the addresses it answers for."""

    netns: str | None  # None: this machine's own namespace (the controller's link)
    dev: str
    underlay: tuple[str, ...]  # where IKE and ESP go
    mgmt: tuple[str, ...]  # where the controller reaches an agent, or the controller


def bridge_ends(layout: LabLayout) -> list[BridgeEnd]:
    """Every interface attached to the lab's bridge: the controller's link, each host's
    eth0 (its NAT router's wan, behind a NAT) and each external peer's eth0."""
    ends = [BridgeEnd(None, layout.root_link, (), (layout.mgmt_address,))]
    for h in layout.hosts.values():
        if h.router is not None:
            ends.append(BridgeEnd(h.router.netns, "wan", (h.address,), (h.mgmt_address,)))
        else:
            ends.append(BridgeEnd(h.netns, "eth0", (h.local_address,), (h.mgmt_address,)))
    for x in layout.externals.values():
        ends.append(BridgeEnd(x.netns, "eth0", (x.address,), ()))
    return ends


def neighbour_entries(
    ends: Iterable[BridgeEnd], macs: dict[tuple[str | None, str], str]
) -> dict[BridgeEnd, list[tuple[str, str]]]:
    """Per bridge end, the (address, link-layer address) of each neighbour it talks to:
    the underlay among the hosts and external peers, the management subnet between the
    controller and each agent (the agents do not talk to each other there)."""
    ends = list(ends)
    out: dict[BridgeEnd, list[tuple[str, str]]] = {}
    for end in ends:
        entries: list[tuple[str, str]] = []
        for other in ends:
            if other is end:
                continue
            mac = macs[(other.netns, other.dev)]
            if end.underlay:
                entries += [(a, mac) for a in other.underlay]
            if end.mgmt and (end.netns is None or other.netns is None):
                entries += [(a, mac) for a in other.mgmt]
        out[end] = entries
    return out


def link_address(netns: str | None, dev: str) -> str:
    (link,) = json.loads(ip("-j", "link", "show", "dev", dev, netns=netns))
    return str(link["address"])


def pin_neighbours(layout: LabLayout) -> int:
    """Permanent neighbour entries on every bridge end for every neighbour it talks to
    (see the module's docstring); returns how many were made."""
    ends = bridge_ends(layout)
    macs = {(e.netns, e.dev): link_address(e.netns, e.dev) for e in ends}
    count = 0
    for end, entries in neighbour_entries(ends, macs).items():
        lines = "".join(
            f"neigh replace {a} lladdr {mac} dev {end.dev} nud permanent\n" for a, mac in entries
        )
        if lines:
            run(["ip", *(("-n", end.netns) if end.netns else ()), "-batch", "-"], stdin=lines)
            count += len(entries)
    return count


# ---------------------------------------------------------------- teardown


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie is dead for our purposes.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def netns_pids(netns: str) -> list[int]:
    out = run(["ip", "netns", "pids", netns], check=False)
    return [int(p) for p in out.split() if p.isdigit()]


def kill_and_wait(pids: list[int], sig: int = signal.SIGKILL, timeout: float = 5.0) -> list[int]:
    """Signal ``pids``; return those still alive after ``timeout``."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
    deadline = time.monotonic() + timeout
    alive = [p for p in pids if pid_alive(p)]
    while alive and time.monotonic() < deadline:
        time.sleep(0.05)
        alive = [p for p in alive if pid_alive(p)]
    return alive


def delete_netns(netns: str) -> int:
    """Kill every process in ``netns``, then remove it (its veths go with it)."""
    pids = netns_pids(netns)
    left = kill_and_wait(pids)
    if left:
        raise LabError(f"processes {left} in {netns} did not die; the namespace stays")
    run(["ip", "netns", "exec", netns, "nft", "delete", "table", "ip", NAT_TABLE], check=False)
    ip("netns", "delete", netns, check=False)
    if netns in list_netns():
        raise LabError(f"could not delete namespace {netns}")
    return len(pids)
