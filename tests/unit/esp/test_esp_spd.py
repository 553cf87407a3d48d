"""SPD: header parser, first-match-wins lookup (indexed == linear), inbound selector checks."""

from __future__ import annotations

import ipaddress
import random
import struct

import pytest

from vpnfleet.agent.esp.spd import (
    Action,
    PacketInfo,
    Selector,
    Spd,
    SpdEntry,
    TrafficSelector,
    inbound_allowed,
    parse_ip_packet,
)


def ip4(text: str) -> int:
    return int(ipaddress.IPv4Address(text))


def ip6(text: str) -> int:
    return int(ipaddress.IPv6Address(text))


def ipv4_packet(
    src: str, dst: str, proto: int, sport: int = 1, dport: int = 2, frag: int = 0, ihl: int = 5
) -> bytes:
    options = bytes((ihl - 5) * 4)
    header = struct.pack(">BBHHHBBH", 0x40 | ihl, 0, 0, 0, frag, 64, proto, 0)
    header += ipaddress.IPv4Address(src).packed + ipaddress.IPv4Address(dst).packed + options
    return header + struct.pack(">HH", sport, dport) + b"rest"


def ipv6_packet(src: str, dst: str, next_header: int, extensions: bytes = b"") -> bytes:
    header = struct.pack(">IHBB", 6 << 28, 0, next_header, 64)
    header += ipaddress.IPv6Address(src).packed + ipaddress.IPv6Address(dst).packed
    return header + extensions + struct.pack(">HH", 4000, 443) + b"rest"


# --- parser -----------------------------------------------------------------------------


def test_parse_ipv4_udp_and_options() -> None:
    for ihl in (5, 6, 15):
        info = parse_ip_packet(ipv4_packet("10.0.0.1", "10.0.0.2", 17, 53, 5353, ihl=ihl))
        assert info == PacketInfo(4, ip4("10.0.0.1"), ip4("10.0.0.2"), 17, 53, 5353)


def test_parse_ipv4_icmp_and_fragments_have_no_ports() -> None:
    assert parse_ip_packet(ipv4_packet("1.1.1.1", "2.2.2.2", 1)) == PacketInfo(
        4, ip4("1.1.1.1"), ip4("2.2.2.2"), 1, -1, -1
    )
    # RFC 4301 section 7: a non-initial fragment carries no ports.
    later_fragment = ipv4_packet("1.1.1.1", "2.2.2.2", 6, 80, 80, frag=0x00B9)
    assert parse_ip_packet(later_fragment) == PacketInfo(
        4, ip4("1.1.1.1"), ip4("2.2.2.2"), 6, -1, -1
    )


def test_parse_ipv6_through_extension_headers() -> None:
    hop_by_hop = bytes((60, 0)) + bytes(6)  # next: destination options
    destination = bytes((44, 1)) + bytes(14)  # next: fragment, 16 octets long
    fragment = bytes((6, 0, 0, 0)) + bytes(4)  # first fragment, next: TCP
    info = parse_ip_packet(
        ipv6_packet("fd00::1", "fd00::2", 0, hop_by_hop + destination + fragment)
    )
    assert info == PacketInfo(6, ip6("fd00::1"), ip6("fd00::2"), 6, 4000, 443)
    later = bytes((6, 0, 0x01, 0x00)) + bytes(4)  # fragment offset 32
    info = parse_ip_packet(ipv6_packet("fd00::1", "fd00::2", 44, later))
    assert info == PacketInfo(6, ip6("fd00::1"), ip6("fd00::2"), 6, -1, -1)


@pytest.mark.parametrize(
    "packet",
    [
        b"",
        b"\x45",
        b"\x45" + bytes(18),
        b"\x44" + bytes(30),  # IHL 4 is below the minimum
        b"\x4f" + bytes(30),  # IHL 15 needs 60 octets
        b"\x60" + bytes(30),
        b"\x70" + bytes(60),
        ipv6_packet("::1", "::2", 0, b"\x00\xff")[:50],  # extension runs past the end
        ipv6_packet("::1", "::2", 0, (bytes((0, 0)) + bytes(6)) * 9),  # too many extensions
    ],
)
def test_parse_garbage_gives_none(packet: bytes) -> None:
    assert parse_ip_packet(packet) is None


def test_parse_short_upper_layer_has_no_ports() -> None:
    packet = ipv4_packet("1.1.1.1", "2.2.2.2", 17)[:22]
    assert parse_ip_packet(packet) == PacketInfo(4, ip4("1.1.1.1"), ip4("2.2.2.2"), 17, -1, -1)


# --- selectors and entries ----------------------------------------------------------------


def test_selector_parse_and_errors() -> None:
    sel = Selector.parse("10.0.0.0/8", "192.168.0.0/16", "tcp", "1024-65535", "443")
    assert sel.protocol == 6
    assert sel.local_ports == (1024, 65535)
    assert sel.remote_ports == (443, 443)
    with pytest.raises(ValueError, match=r"local prefix '10\.0\.0\.1/8' is not a network"):
        Selector.parse("10.0.0.1/8", "0.0.0.0/0")
    with pytest.raises(ValueError, match="mixes address families"):
        Selector.parse("10.0.0.0/8", "::/0")
    with pytest.raises(ValueError, match="protocol 'tcpp' is not a number"):
        Selector.parse("10.0.0.0/8", "0.0.0.0/0", "tcpp")
    with pytest.raises(ValueError, match="remote ports '80-x' is not a port"):
        Selector.parse("10.0.0.0/8", "0.0.0.0/0", "tcp", None, "80-x")
    with pytest.raises(ValueError, match="remote port range must be a range"):
        Selector.parse("10.0.0.0/8", "0.0.0.0/0", "tcp", None, "90-80")
    with pytest.raises(ValueError, match="port ranges need protocol"):
        Selector.parse("10.0.0.0/8", "0.0.0.0/0", "icmp", None, "80")
    with pytest.raises(ValueError, match="protect needs a policy name"):
        SpdEntry(sel, Action.PROTECT)
    with pytest.raises(TypeError, match="SPD entry 0 is a str"):
        Spd(["not an entry"])  # type: ignore[list-item]


def entry(local: str, remote: str, action: Action, *args: object, name: str = "") -> SpdEntry:
    policy = name or "p" if action is Action.PROTECT else ""
    return SpdEntry(Selector.parse(local, remote, *args), action, policy, name)  # type: ignore[arg-type]


def test_first_match_wins_across_prefix_lengths() -> None:
    spd = Spd(
        [
            entry("0.0.0.0/0", "10.0.0.0/8", Action.BYPASS, "udp", None, "53", name="dns"),
            entry("0.0.0.0/0", "10.1.0.0/16", Action.PROTECT, name="site"),
            entry("0.0.0.0/0", "10.1.2.0/24", Action.DISCARD, name="never-reached-by-dns"),
            entry("0.0.0.0/0", "0.0.0.0/0", Action.BYPASS, name="default"),
        ]
    )
    dns = PacketInfo(4, ip4("192.168.0.1"), ip4("10.1.2.3"), 17, 5000, 53)
    web = PacketInfo(4, ip4("192.168.0.1"), ip4("10.1.2.3"), 6, 5000, 443)
    other = PacketInfo(4, ip4("192.168.0.1"), ip4("10.9.0.1"), 6, 5000, 443)
    assert spd.lookup(dns).name == "dns"  # type: ignore[union-attr]
    assert spd.lookup(web).name == "site"  # type: ignore[union-attr]
    assert spd.lookup(other).name == "default"  # type: ignore[union-attr]
    assert spd.lookup(PacketInfo(6, 1, 2, 6, 1, 2)) is None  # no IPv6 entry: discard


def test_inbound_lookup_reads_source_as_remote() -> None:
    spd = Spd([entry("192.168.0.0/24", "10.0.0.0/8", Action.PROTECT, "tcp", "22", None)])
    inbound = PacketInfo(4, ip4("10.1.1.1"), ip4("192.168.0.5"), 6, 40000, 22)
    assert spd.lookup(inbound, inbound=True) is not None
    assert spd.lookup(inbound) is None


def test_port_selectors_never_match_portless_packets() -> None:
    spd = Spd(
        [
            entry("0.0.0.0/0", "0.0.0.0/0", Action.DISCARD, "tcp", None, "0-65535"),
            entry("0.0.0.0/0", "0.0.0.0/0", Action.BYPASS, "tcp", None, "80"),
            entry("0.0.0.0/0", "0.0.0.0/0", Action.PROTECT, name="rest"),
        ]
    )
    fragment = PacketInfo(4, 1, 2, 6, -1, -1)
    # 0-65535 is "any" (RFC 4301 OPAQUE and ANY both match); "80" needs a port.
    assert spd.lookup(fragment).action is Action.DISCARD  # type: ignore[union-attr]
    spd.replace(spd.entries[1:])
    assert spd.lookup(fragment).name == "rest"  # type: ignore[union-attr]


def test_replace_clears_the_cache() -> None:
    spd = Spd([entry("0.0.0.0/0", "0.0.0.0/0", Action.BYPASS)])
    info = PacketInfo(4, 1, 2, 17, 3, 4)
    assert spd.lookup(info).action is Action.BYPASS  # type: ignore[union-attr]
    spd.replace([entry("0.0.0.0/0", "0.0.0.0/0", Action.DISCARD)])
    assert spd.lookup(info).action is Action.DISCARD  # type: ignore[union-attr]


def random_entry(rng: random.Random, index: int) -> SpdEntry:
    remote: ipaddress.IPv4Network | ipaddress.IPv6Network
    local: ipaddress.IPv4Network | ipaddress.IPv6Network
    if rng.random() < 0.8:
        length = rng.choice([8, 16, 20, 24, 24, 24, 28, 32])
        remote = ipaddress.IPv4Network(
            (rng.getrandbits(32) >> (32 - length) << (32 - length) if length else 0, length)
        )
        local = ipaddress.IPv4Network((0, 0))
        if rng.random() < 0.3:
            local = ipaddress.IPv4Network(rng.choice([(0x0A000000, 8), (0xC0A80000, 16)]))
    else:
        length = rng.choice([32, 48, 64, 128])
        base = 0xFD00 << 112 | rng.getrandbits(112)
        remote = ipaddress.IPv6Network(
            (base >> (128 - length) << (128 - length) if length else 0, length)
        )
        local = ipaddress.IPv6Network((0, 0))
    protocol = rng.choice([None, None, 6, 17, 1])
    remote_ports = None
    if protocol in (6, 17) and rng.random() < 0.5:
        low = rng.choice([53, 80, 443, 1000, 5000])
        remote_ports = (low, low + rng.choice([0, 0, 100]))
    action = rng.choice(list(Action))
    return SpdEntry(
        Selector(local, remote, protocol, None, remote_ports),
        action,
        f"policy-{index}" if action is Action.PROTECT else "",
        f"e{index}",
    )


def random_packet(rng: random.Random, spd: Spd) -> PacketInfo:
    target = rng.choice(spd.entries).selector.remote
    address = int(target.network_address) | (
        rng.getrandbits(target.max_prefixlen) & int(target.hostmask)
    )
    if target.version == 4:
        src = rng.choice([0x0A000001, 0xC0A80001, rng.getrandbits(32)])
        return PacketInfo(
            4,
            src,
            address,
            rng.choice([6, 17, 1]),
            rng.randint(1, 65535),
            rng.choice([53, 80, 443, 1050, 5050, 9999]),
        )
    return PacketInfo(
        6, rng.getrandbits(128), address, rng.choice([6, 17]), 1234, rng.choice([53, 443, 9999])
    )


def test_indexed_lookup_equals_linear_scan_with_10000_entries() -> None:
    rng = random.Random(4303)
    spd = Spd(random_entry(rng, i) for i in range(10_000))
    positions = {entry: index for index, entry in enumerate(spd.entries)}
    matched = []
    for _ in range(3000):
        info = random_packet(rng, spd)
        for inbound in (False, True):
            expected = spd.lookup_linear(info, inbound=inbound)
            assert spd.lookup(info, inbound=inbound) is expected
            assert spd.lookup(info, inbound=inbound) is expected  # from the cache
            matched.append(-1 if expected is None else positions[expected])
    # The comparison covered early, deep and missing matches, not only the first few.
    assert max(matched) > 5000
    assert min(matched) == -1
    assert sum(1 for m in matched if m > 1000) > 1000


class Probe:
    """Stands in for one compiled SPD entry and records that a lookup read it."""

    __slots__ = ("_compiled", "_touched")

    def __init__(self, compiled: object, touched: set[int]) -> None:
        self._compiled = compiled
        self._touched = touched

    def __getattr__(self, name: str) -> object:
        self._touched.add(id(self))
        return getattr(self._compiled, name)


def probe_entries(spd: Spd) -> set[int]:
    """Put a Probe in place of every compiled entry, in the scan list and in the index;
    returns the set the probes record into."""
    touched: set[int] = set()
    probes = {id(c): Probe(c, touched) for c in spd._compiled}
    spd._compiled = [probes[id(c)] for c in spd._compiled]  # type: ignore[misc]
    for family in spd._index.values():
        for _, table in family.buckets:
            for key, candidates in table.items():
                table[key] = [probes[id(c)] for c in candidates]  # type: ignore[misc]
    return touched


def test_outbound_lookup_in_10000_entries_reads_few_of_them() -> None:
    """Not a linear scan: an uncached lookup reads a handful of the 10,000 entries,
    where the in-order scan reads thousands (the probe sees both, so it can fail)."""
    rng = random.Random(4301)
    spd = Spd(random_entry(rng, i) for i in range(10_000))
    touched = probe_entries(spd)
    indexed, linear = [], []
    for n in range(1000):
        info = random_packet(rng, spd)
        for inbound in (False, True):
            spd._cache.clear()  # measure the index, not the flow cache
            touched.clear()
            found = spd.lookup(info, inbound=inbound)
            indexed.append(len(touched))
            if n % 10 == 0:
                touched.clear()
                assert spd.lookup_linear(info, inbound=inbound) is found
                linear.append(len(touched))
    assert max(indexed) <= 32, max(indexed)
    assert sum(indexed) / len(indexed) < 8
    assert sum(linear) / len(linear) > 1000


# --- inbound selector check (RFC 4301 section 5.2) ------------------------------------------


def test_traffic_selectors() -> None:
    local = [TrafficSelector.from_network("192.168.0.0/24")]
    remote = [
        TrafficSelector.from_network("10.0.0.0/8", protocol=6, ports=(443, 443)),
        TrafficSelector.from_network("fd00::/8"),
    ]
    ok = PacketInfo(4, ip4("10.1.1.1"), ip4("192.168.0.9"), 6, 443, 50000)
    assert inbound_allowed(local, remote, ok)
    assert not inbound_allowed(local, remote, ok._replace(sport=444))
    assert not inbound_allowed(local, remote, ok._replace(protocol=17))
    assert not inbound_allowed(local, remote, ok._replace(dst=ip4("192.168.1.9")))
    with pytest.raises(ValueError, match="version must be 4 or 6"):
        TrafficSelector(5, 0, 1)
    with pytest.raises(ValueError, match="ports 10-9 are invalid"):
        TrafficSelector(4, 0, 1, 6, 10, 9)
