"""Security Policy Database (RFC 4301 section 4.4.1) and the packet selectors it reads.

Entries are ordered and the first match wins, as in RFC 4301's decorrelation-free SPD:
a packet gets the action of the earliest entry whose selectors all match.

Lookup structure (so 10,000 entries are not scanned one by one):

* Per address family, entries are bucketed by the prefix length of their *remote*
  prefix (the destination of an outbound packet, the source of an inbound one). A
  bucket is a dict from the masked remote network to the entries with exactly that
  prefix, kept in SPD order. A lookup masks the packet's remote address once per
  distinct prefix length present (at most 33 for IPv4, 129 for IPv6, usually a
  handful), does one dict get per bucket, and walks that short list in order.
* First-match-wins across buckets: each list is in SPD order, so within a list the
  first entry that matches is that list's best; across lists the lowest SPD position
  wins. A list is abandoned as soon as its next entry sits later in the SPD than the
  best match found so far, so no list is walked past a better match.
* A result cache keyed by the 5-tuple (family, src, dst, protocol, ports) answers
  repeated flows with one dict get; it is bounded and cleared whenever the SPD changes.

The worst case is many entries sharing one remote prefix and differing only in local
prefix, protocol or ports: that list is walked in order (still first-match exact).

The packet parser reads only what selectors need (addresses, protocol, ports) and
never raises: anything it cannot read gives None. Ports are -1 when the packet has
none (not TCP/UDP/SCTP/UDP-Lite, or a non-initial fragment, RFC 4301 section 7); a
port range that is not "any" never matches -1. ICMP type/code are not used as ports.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import NamedTuple

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Protocols with 16-bit source and destination ports in their first 4 octets.
PORT_PROTOCOLS = frozenset({6, 17, 132, 136})
_IPV6_EXTENSIONS = frozenset({0, 43, 60})
_IPV6_FRAGMENT = 44
_IPV6_AH = 51
_MAX_IPV6_EXTENSIONS = 8
_NO_PORT = -1
FLOW_KEY_END = {6: 24, 17: 24, 1: 20}
"""Where a flow's key ends in a plain IPv4 packet (IHL 5, not a later fragment) for the
protocols whose selector verdict the key decides, from octet 12 on: addresses and ports
for TCP and UDP, the addresses alone for ICMP (its type and code are not selectors, so
every ping of one address pair is judged alike). The data plane's flow caches, outbound
and inbound, key their entries so."""
_ANY = -1
_CACHE_LIMIT = 65536

PROTOCOL_NAMES = {"icmp": 1, "tcp": 6, "udp": 17, "ipv6-icmp": 58, "icmpv6": 58, "sctp": 132}


class PacketInfo(NamedTuple):
    """What the SPD reads from a packet. Addresses are ints; ports -1 when absent."""

    version: int
    src: int
    dst: int
    protocol: int
    sport: int
    dport: int


def parse_ports(protocol: int, data: bytes, offset: int = 0) -> tuple[int, int]:
    """Source and destination port of an upper-layer header at ``offset``, or (-1, -1)."""
    if protocol in PORT_PROTOCOLS and len(data) >= offset + 4:
        return (
            (data[offset] << 8) | data[offset + 1],
            (data[offset + 2] << 8) | data[offset + 3],
        )
    return _NO_PORT, _NO_PORT


def parse_ip_packet(packet: bytes) -> PacketInfo | None:
    """Read an IPv4 or IPv6 header; None when the bytes are not a readable packet."""
    try:
        if not packet:
            return None
        version = packet[0] >> 4
        if version == 4:
            return _parse_ipv4(packet)
        if version == 6:
            return _parse_ipv6(packet)
    except (IndexError, ValueError):  # pragma: no cover - the bounds checks cover these
        return None
    return None


def _parse_ipv4(packet: bytes) -> PacketInfo | None:
    header_length = (packet[0] & 0x0F) * 4
    if header_length < 20 or len(packet) < header_length:
        return None
    protocol = packet[9]
    src = int.from_bytes(packet[12:16], "big")
    dst = int.from_bytes(packet[16:20], "big")
    fragment_offset = ((packet[6] & 0x1F) << 8) | packet[7]
    if fragment_offset:
        return PacketInfo(4, src, dst, protocol, _NO_PORT, _NO_PORT)
    sport, dport = parse_ports(protocol, packet, header_length)
    return PacketInfo(4, src, dst, protocol, sport, dport)


def _parse_ipv6(packet: bytes) -> PacketInfo | None:
    if len(packet) < 40:
        return None
    src = int.from_bytes(packet[8:24], "big")
    dst = int.from_bytes(packet[24:40], "big")
    next_header = packet[6]
    offset = 40
    # RFC 8200 section 4: walk extension headers to the upper-layer protocol.
    for _ in range(_MAX_IPV6_EXTENSIONS):
        if next_header in _IPV6_EXTENSIONS:
            if len(packet) < offset + 2:
                return None
            following = packet[offset]
            offset += (packet[offset + 1] + 1) * 8
            next_header = following
        elif next_header == _IPV6_FRAGMENT:
            if len(packet) < offset + 8:
                return None
            following = packet[offset]
            fragment_offset = ((packet[offset + 2] << 8) | packet[offset + 3]) >> 3
            offset += 8
            next_header = following
            if fragment_offset:
                return PacketInfo(6, src, dst, next_header, _NO_PORT, _NO_PORT)
        elif next_header == _IPV6_AH:
            if len(packet) < offset + 2:
                return None
            following = packet[offset]
            offset += (packet[offset + 1] + 2) * 4
            next_header = following
        else:
            break
    else:
        return None
    if offset > len(packet):
        return None
    sport, dport = parse_ports(next_header, packet, offset)
    return PacketInfo(6, src, dst, next_header, sport, dport)


class Action(StrEnum):
    """RFC 4301 section 4.4.1: what to do with a packet that matches."""

    PROTECT = "protect"
    BYPASS = "bypass"
    DISCARD = "discard"


def _port_range(value: tuple[int, int] | None, what: str) -> tuple[int, int]:
    if value is None:
        return (0, 65535)
    low, high = value
    if not (0 <= low <= high <= 65535):
        raise ValueError(f"{what} must be a range within 0-65535 with low <= high, got {value}")
    return (low, high)


@dataclass(frozen=True)
class Selector:
    """Selectors of one SPD entry, from this host's point of view.

    ``local``/``remote`` are prefixes; ``protocol`` None means any; port ranges are
    inclusive, None meaning any (which also matches packets without ports).
    """

    local: IPNetwork
    remote: IPNetwork
    protocol: int | None = None
    local_ports: tuple[int, int] | None = None
    remote_ports: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        if self.local.version != self.remote.version:
            raise ValueError(
                f"selector mixes address families: local {self.local}, remote {self.remote}"
            )
        if self.protocol is not None and not 0 <= self.protocol <= 255:
            raise ValueError(f"selector protocol must be 0-255, got {self.protocol}")
        _port_range(self.local_ports, "local port range")
        _port_range(self.remote_ports, "remote port range")
        if (self.local_ports or self.remote_ports) and self.protocol not in PORT_PROTOCOLS:
            raise ValueError(
                f"port ranges need protocol tcp, udp, sctp or udplite, got {self.protocol}"
            )

    @classmethod
    def parse(
        cls,
        local: str,
        remote: str,
        protocol: str | int | None = None,
        local_ports: str | tuple[int, int] | None = None,
        remote_ports: str | tuple[int, int] | None = None,
    ) -> Selector:
        """Build from text as a plan carries it: prefixes, 'tcp' or 6, '1000-2000'."""
        try:
            local_net = ipaddress.ip_network(local, strict=True)
        except ValueError as exc:
            raise ValueError(f"local prefix {local!r} is not a network: {exc}") from None
        try:
            remote_net = ipaddress.ip_network(remote, strict=True)
        except ValueError as exc:
            raise ValueError(f"remote prefix {remote!r} is not a network: {exc}") from None
        return cls(
            local_net,
            remote_net,
            _parse_protocol(protocol),
            _parse_ports(local_ports, "local ports"),
            _parse_ports(remote_ports, "remote ports"),
        )


def _parse_protocol(protocol: str | int | None) -> int | None:
    if protocol is None or protocol == "any":
        return None
    if isinstance(protocol, int):
        return protocol
    if protocol.lower() in PROTOCOL_NAMES:
        return PROTOCOL_NAMES[protocol.lower()]
    if protocol.isdigit():
        return int(protocol)
    raise ValueError(f"protocol {protocol!r} is not a number or one of {sorted(PROTOCOL_NAMES)}")


def _parse_ports(ports: str | tuple[int, int] | None, what: str) -> tuple[int, int] | None:
    if ports is None or ports == "any":
        return None
    if isinstance(ports, tuple):
        return ports
    low, sep, high = ports.partition("-")
    if not low.isdigit() or (sep and not high.isdigit()):
        raise ValueError(f"{what} {ports!r} is not a port or a range like 1000-2000")
    return (int(low), int(high) if sep else int(low))


@dataclass(frozen=True)
class SpdEntry:
    """One ordered SPD entry. ``policy`` names the SA set a PROTECT entry uses."""

    selector: Selector
    action: Action
    policy: str = ""
    name: str = ""

    def __post_init__(self) -> None:
        if self.action is Action.PROTECT and not self.policy:
            raise ValueError(f"SPD entry {self.name!r}: protect needs a policy name")


@dataclass(frozen=True, slots=True)
class _Compiled:
    order: int
    version: int
    remote_net: int
    remote_mask: int
    local_net: int
    local_mask: int
    protocol: int
    local_low: int
    local_high: int
    remote_low: int
    remote_high: int
    entry: SpdEntry


def _compile(order: int, entry: SpdEntry) -> _Compiled:
    sel = entry.selector

    def bounds(ports: tuple[int, int] | None) -> tuple[int, int]:
        # "any" also admits packets without ports, which carry -1.
        return (_ANY, 65535) if ports is None or ports == (0, 65535) else ports

    local_low, local_high = bounds(sel.local_ports)
    remote_low, remote_high = bounds(sel.remote_ports)
    return _Compiled(
        order,
        sel.remote.version,
        int(sel.remote.network_address),
        int(sel.remote.netmask),
        int(sel.local.network_address),
        int(sel.local.netmask),
        _ANY if sel.protocol is None else sel.protocol,
        local_low,
        local_high,
        remote_low,
        remote_high,
        entry,
    )


@dataclass
class _FamilyIndex:
    # (mask, table) per remote prefix length present; table: masked remote -> entries.
    buckets: list[tuple[int, dict[int, list[_Compiled]]]] = field(default_factory=list)


class Spd:
    """An ordered SPD with an indexed first-match lookup (see the module docstring)."""

    def __init__(self, entries: Iterable[SpdEntry] = ()) -> None:
        self._entries: tuple[SpdEntry, ...] = ()
        self._compiled: list[_Compiled] = []
        self._index: dict[int, _FamilyIndex] = {}
        self._cache: dict[tuple[int, int, int, int, int, int, bool], SpdEntry | None] = {}
        self.replace(entries)

    @property
    def entries(self) -> tuple[SpdEntry, ...]:
        return self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def replace(self, entries: Iterable[SpdEntry]) -> None:
        """Install a whole new ordered list (a plan carries the full SPD)."""
        new_entries = tuple(entries)
        for position, entry in enumerate(new_entries):
            if not isinstance(entry, SpdEntry):
                raise TypeError(f"SPD entry {position} is a {type(entry).__name__}")
        compiled = [_compile(order, entry) for order, entry in enumerate(new_entries)]
        per_family: dict[int, dict[int, dict[int, list[_Compiled]]]] = {4: {}, 6: {}}
        for c in compiled:
            remote = c.entry.selector.remote
            table = per_family[c.version].setdefault(remote.prefixlen, {})
            table.setdefault(c.remote_net, []).append(c)
        index: dict[int, _FamilyIndex] = {}
        for version, tables in per_family.items():
            width = 32 if version == 4 else 128
            full = (1 << width) - 1
            buckets = [
                (full ^ ((1 << (width - length)) - 1), table)
                for length, table in sorted(tables.items(), reverse=True)
            ]
            index[version] = _FamilyIndex(buckets)
        self._entries = new_entries
        self._compiled = compiled
        self._index = index
        self._cache = {}

    def lookup(self, info: PacketInfo, inbound: bool = False) -> SpdEntry | None:
        """The first entry matching the packet, or None (RFC 4301: then discard).

        Outbound packets go local -> remote; ``inbound=True`` reads src as remote.
        """
        key = (*info, inbound)
        cache = self._cache
        if key in cache:
            return cache[key]
        if inbound:
            local, remote, local_port, remote_port = info.dst, info.src, info.dport, info.sport
        else:
            local, remote, local_port, remote_port = info.src, info.dst, info.sport, info.dport
        protocol = info.protocol
        best: _Compiled | None = None
        best_order = len(self._entries)
        family = self._index.get(info.version)
        if family is not None:
            for mask, table in family.buckets:
                candidates = table.get(remote & mask)
                if candidates is None:
                    continue
                for c in candidates:
                    if c.order >= best_order:
                        break
                    if (
                        (local & c.local_mask) == c.local_net
                        and (c.protocol == _ANY or c.protocol == protocol)
                        and c.local_low <= local_port <= c.local_high
                        and c.remote_low <= remote_port <= c.remote_high
                    ):
                        best, best_order = c, c.order
                        break
        result = None if best is None else best.entry
        if len(cache) >= _CACHE_LIMIT:
            cache.clear()
        cache[key] = result
        return result

    def lookup_packet(self, packet: bytes, inbound: bool = False) -> SpdEntry | None:
        """Parse and look up; an unreadable packet matches nothing (so it is discarded)."""
        info = parse_ip_packet(packet)
        return None if info is None else self.lookup(info, inbound)

    def lookup_linear(self, info: PacketInfo, inbound: bool = False) -> SpdEntry | None:
        """The same answer by scanning in order: the reference the index is tested against."""
        if inbound:
            local, remote, lp, rp = info.dst, info.src, info.dport, info.sport
        else:
            local, remote, lp, rp = info.src, info.dst, info.sport, info.dport
        for c in self._compiled:
            if (
                c.version == info.version
                and (remote & c.remote_mask) == c.remote_net
                and (local & c.local_mask) == c.local_net
                and (c.protocol == _ANY or c.protocol == info.protocol)
                and c.local_low <= lp <= c.local_high
                and c.remote_low <= rp <= c.remote_high
            ):
                return c.entry
        return None


@dataclass(frozen=True, slots=True)
class TrafficSelector:
    """An IKEv2 traffic selector (RFC 7296 section 3.13.1): an address range, a
    protocol (0 = any) and a port range (0-65535 = any, which also admits no ports)."""

    version: int
    start: int
    end: int
    protocol: int = 0
    start_port: int = 0
    end_port: int = 65535

    def __post_init__(self) -> None:
        width = 32 if self.version == 4 else 128 if self.version == 6 else 0
        if not width:
            raise ValueError(f"traffic selector version must be 4 or 6, got {self.version}")
        if not 0 <= self.start <= self.end < (1 << width):
            raise ValueError(f"traffic selector address range {self.start}-{self.end} is invalid")
        if not 0 <= self.protocol <= 255:
            raise ValueError(f"traffic selector protocol must be 0-255, got {self.protocol}")
        if not 0 <= self.start_port <= self.end_port <= 65535:
            raise ValueError(
                f"traffic selector ports {self.start_port}-{self.end_port} are invalid"
            )

    @classmethod
    def from_network(
        cls, network: str | IPNetwork, protocol: int = 0, ports: tuple[int, int] = (0, 65535)
    ) -> TrafficSelector:
        net = ipaddress.ip_network(network) if isinstance(network, str) else network
        return cls(
            net.version,
            int(net.network_address),
            int(net.broadcast_address),
            protocol,
            ports[0],
            ports[1],
        )

    def matches(self, version: int, address: int, protocol: int, port: int) -> bool:
        if version != self.version or not self.start <= address <= self.end:
            return False
        if self.protocol and self.protocol != protocol:
            return False
        if self.start_port == 0 and self.end_port == 65535:
            return True
        return self.start_port <= port <= self.end_port

    def matches_upper_layer(self, protocol: int, port: int) -> bool:
        """Protocol and port only (transport mode: the addresses are the outer ones)."""
        if self.protocol and self.protocol != protocol:
            return False
        if self.start_port == 0 and self.end_port == 65535:
            return True
        return self.start_port <= port <= self.end_port


def inbound_allowed(
    local_ts: Sequence[TrafficSelector], remote_ts: Sequence[TrafficSelector], info: PacketInfo
) -> bool:
    """RFC 4301 section 5.2 step 4: a decrypted tunnel-mode packet must come from the
    SA's remote selectors and go to its local selectors."""
    return any(
        ts.matches(info.version, info.src, info.protocol, info.sport) for ts in remote_ts
    ) and any(ts.matches(info.version, info.dst, info.protocol, info.dport) for ts in local_ts)
