"""AH against scapy's implementation (scapy.layers.ipsec, an independent one): packets we
build verify in scapy and scapy's verify in ours, in transport and tunnel mode, over IPv4
and IPv6, with every integrity transform both implement (HMAC-SHA1-96, HMAC-SHA2-256/384/
512; scapy has no AES-GMAC), with ESN, with mutable fields changed en route (still
valid) and immutable ones changed (refused), with IPv4 options and IPv6 extension
headers (RFC 4302 section 3.3.3.1 and Appendix A)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from scapy.layers.inet import IP, UDP, IPOption
from scapy.layers.inet6 import (
    HBHOptUnknown,
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
)
from scapy.layers.ipsec import AH, IPSecIntegrityError, SecurityAssociation
from scapy.packet import Packet, Raw

from vpnfleet.agent.esp.ah import AhParams, InboundAhSa, OutboundAhSa
from vpnfleet.agent.esp.sa import Drop, Mode
from vpnfleet.agent.esp.transforms import Integrity

SPI = 0x0A0B0C0D
SCAPY_NAMES = {
    Integrity.HMAC_SHA1_96: "HMAC-SHA1-96",
    Integrity.HMAC_SHA2_256_128: "SHA2-256-128",
    Integrity.HMAC_SHA2_384_192: "SHA2-384-192",
    Integrity.HMAC_SHA2_512_256: "SHA2-512-256",
}
OUTER = {4: ("192.0.2.1", "192.0.2.2"), 6: ("2001:db8:a::1", "2001:db8:b::2")}
PAYLOAD = b"protected by the authentication header"


def key_for(integrity: Integrity) -> bytes:
    return bytes((7 * i + 3) & 0xFF for i in range(integrity.key_length))


def plain(version: int) -> Packet:
    """An inner (tunnel) or whole (transport) packet, its fields all set."""
    if version == 4:
        packet = IP(src="10.1.0.1", dst="10.2.0.1", ttl=61, tos=0xB8, id=4242, flags="DF")
    else:
        packet = IPv6(src="2001:db8:1::1", dst="2001:db8:2::1", hlim=61, tc=0xB8, fl=0x12345)
    return rebuilt(packet / UDP(sport=5353, dport=53) / Raw(PAYLOAD))


def rebuilt(packet: Packet) -> Packet:
    """The packet as it reads back from its bytes (every length and checksum filled)."""
    return packet.__class__(bytes(packet))


def sas(
    integrity: Integrity, mode: Mode, version: int, esn: bool = False
) -> tuple[OutboundAhSa, InboundAhSa, SecurityAssociation]:
    src, dst = OUTER[version]
    tunnel = mode is Mode.TUNNEL
    params = AhParams(
        SPI,
        integrity,
        key_for(integrity),
        mode=mode,
        esn=esn,
        src=src if tunnel else "*",
        dst=dst if tunnel else "*",
    )
    header = (IP(src=src, dst=dst) if version == 4 else IPv6(src=src, dst=dst)) if tunnel else None
    scapy_sa = SecurityAssociation(
        AH,
        spi=SPI,
        auth_algo=SCAPY_NAMES[integrity],
        auth_key=key_for(integrity),
        tunnel_header=header,
    )
    return OutboundAhSa(params, 0.0), InboundAhSa(params, 0.0), scapy_sa


def fresh(inbound: InboundAhSa) -> InboundAhSa:
    """The same SA with an empty replay window (to try a packet with a used number)."""
    return InboundAhSa(inbound.params, 0.0)


def parse(data: bytes) -> Packet:
    return IP(data) if data[0] >> 4 == 4 else IPv6(data)


def scapy_opens(scapy_sa: SecurityAssociation, data: bytes, **kwargs: object) -> bytes:
    return bytes(scapy_sa.decrypt(parse(data), **kwargs))


def scapy_refuses(scapy_sa: SecurityAssociation, data: bytes) -> bool:
    try:
        scapy_sa.decrypt(parse(data))
    except IPSecIntegrityError:
        return True
    return False


CASES = [(i, m, v) for i in SCAPY_NAMES for m in Mode for v in (4, 6)]
IDS = [f"{i}-{m}-v{v}" for i, m, v in CASES]


@pytest.mark.parametrize(("integrity", "mode", "version"), CASES, ids=IDS)
def test_scapy_verifies_what_we_send(integrity: Integrity, mode: Mode, version: int) -> None:
    out, _, scapy_sa = sas(integrity, mode, version)
    inner = plain(version)
    for _ in range(3):
        data = out.encap(bytes(inner), 0.0)
        assert isinstance(data, bytes)
        ah = parse(data)[AH]
        assert (ah.spi, ah.seq) == (SPI, out.seq)
        assert scapy_opens(scapy_sa, data) == bytes(inner)


@pytest.mark.parametrize(("integrity", "mode", "version"), CASES, ids=IDS)
def test_we_verify_what_scapy_sends(integrity: Integrity, mode: Mode, version: int) -> None:
    _, inbound, scapy_sa = sas(integrity, mode, version)
    inner = plain(version)
    for seq in (1, 2, 7, 5):
        data = bytes(scapy_sa.encrypt(inner, seq_num=seq))
        assert inbound.decap(data, 0.0) == bytes(inner)
    assert inbound.counters.packets_in == 4
    assert inbound.decap(data, 0.0) is Drop.REPLAYED


@pytest.mark.parametrize(("mode", "version"), [(m, v) for m in Mode for v in (4, 6)])
def test_both_build_the_same_bytes_in_transport_mode(mode: Mode, version: int) -> None:
    # Transport mode leaves nothing to choose (tunnel mode: the outer header's TTL,
    # identification and DSCP are each side's own), so both must agree to the octet.
    out, _, scapy_sa = sas(Integrity.HMAC_SHA2_256_128, mode, version)
    data = out.encap(bytes(plain(version)), 0.0)
    assert isinstance(data, bytes)
    theirs = bytes(scapy_sa.encrypt(plain(version), seq_num=1))
    if mode is Mode.TRANSPORT:
        assert data == theirs
    else:
        outer = 20 if version == 4 else 40
        assert data[outer:] == theirs[outer:]  # AH and inner packet


@pytest.mark.parametrize("version", [4, 6])
@pytest.mark.parametrize("mode", list(Mode))
def test_esn_high_half_is_authenticated_like_scapy(mode: Mode, version: int) -> None:
    # RFC 4302 section 2.5.1: the high 32 bits enter the ICV after the packet, unsent.
    out, inbound, scapy_sa = sas(Integrity.HMAC_SHA2_256_128, mode, version, esn=True)
    high, low = 3, 0xFFFFFFFE
    inner = plain(version)
    data = out.seal_with_seq((high << 32) | low, bytes(inner))
    assert isinstance(data, bytes)
    assert parse(data)[AH].seq == low
    assert scapy_opens(scapy_sa, data, esn_en=True, esn=high) == bytes(inner)
    with pytest.raises(IPSecIntegrityError):
        scapy_sa.decrypt(parse(data), esn_en=True, esn=high + 1)
    # Ours infers the high half from the window: put its top just below.
    inbound.replay.update((high << 32) | (low - 10))
    theirs = bytes(scapy_sa.encrypt(inner, seq_num=low, esn_en=True, esn=high))
    assert inbound.decap(theirs, 0.0) == bytes(inner)
    assert inbound.replay.top == (high << 32) | low
    # Past the 32-bit wrap: low 1 now means high + 1.
    theirs = bytes(scapy_sa.encrypt(inner, seq_num=1, esn_en=True, esn=high + 1))
    assert inbound.decap(theirs, 0.0) == bytes(inner)
    assert inbound.replay.top == ((high + 1) << 32) | 1


# --- fields changed on the way: mutable ones keep the ICV, immutable ones break it -------


def changed(data: bytes, change: Callable[[Packet], None]) -> bytes:
    packet = parse(data)
    change(packet)
    if packet.version == 4:
        del packet.chksum  # routers recompute it
    return bytes(packet)


def _set(field: str, value: object) -> Callable[[Packet], None]:
    def change(packet: Packet) -> None:
        setattr(packet, field, value)

    return change


MUTABLE = {
    4: {"ttl": _set("ttl", 3), "dscp-ecn": _set("tos", 0x03), "flags": _set("flags", 0)},
    6: {"hop-limit": _set("hlim", 3), "traffic-class": _set("tc", 0x03), "flow": _set("fl", 7)},
}
IMMUTABLE = {
    4: {
        "src": _set("src", "192.0.2.99"),
        "dst": _set("dst", "192.0.2.98"),
        "id": _set("id", 0xBEEF),
    },
    6: {"src": _set("src", "2001:db8:a::99"), "dst": _set("dst", "2001:db8:b::98")},
}


def _payload_flip(packet: Packet) -> None:
    raw = packet[Raw]
    raw.load = bytes([raw.load[0] ^ 1]) + raw.load[1:]


@pytest.mark.parametrize("version", [4, 6])
@pytest.mark.parametrize("mode", list(Mode))
def test_mutable_fields_changed_en_route_still_verify(mode: Mode, version: int) -> None:
    out, inbound, scapy_sa = sas(Integrity.HMAC_SHA2_384_192, mode, version)
    inner = plain(version)
    for name, change in MUTABLE[version].items():
        data = out.encap(bytes(inner), 0.0)
        assert isinstance(data, bytes)
        routed = changed(data, change)
        assert routed != data, name
        result = inbound.decap(routed, 0.0)
        assert isinstance(result, bytes), name
        if mode is Mode.TUNNEL:
            assert result == bytes(inner), name
        assert not scapy_refuses(scapy_sa, routed), name


@pytest.mark.parametrize("version", [4, 6])
@pytest.mark.parametrize("mode", list(Mode))
def test_immutable_fields_changed_are_refused(mode: Mode, version: int) -> None:
    out, inbound, scapy_sa = sas(Integrity.HMAC_SHA2_512_256, mode, version)
    changes = {**IMMUTABLE[version], "payload": _payload_flip}
    for name, change in changes.items():
        data = out.encap(bytes(plain(version)), 0.0)
        assert isinstance(data, bytes)
        forged = changed(data, change)
        assert inbound.decap(forged, 0.0) is Drop.INTEGRITY, name
        assert scapy_refuses(scapy_sa, forged), name
        # The forgery moved nothing: the genuine packet is still accepted.
        assert isinstance(inbound.decap(data, 0.0), bytes), name
    assert inbound.counters.integrity_failures == len(changes)


# --- IPv4 options and IPv6 extension headers ----------------------------------------------

# Router Alert (type 0x94, immutable, RFC 4302 Appendix A.1), then Record Route (0x07,
# mutable: zeroed) with room for one address, then End of Options List.
IPV4_OPTIONS = bytes.fromhex("94040000") + bytes.fromhex("070704") + bytes(4) + b"\x00"
RR_ADDRESS_AT = 20 + 4 + 3
ROUTER_ALERT_VALUE_AT = 20 + 2


def with_options() -> Packet:
    packet = IP(src="10.1.0.1", dst="10.2.0.1", ttl=61, options=IPOption(IPV4_OPTIONS))
    return rebuilt(packet / UDP(sport=1, dport=2) / Raw(PAYLOAD))


def patch(data: bytes, at: int, value: bytes) -> bytes:
    return data[:at] + value + data[at + len(value) :]


def test_ipv4_options_mutable_zeroed_immutable_covered() -> None:
    out, inbound, scapy_sa = sas(Integrity.HMAC_SHA2_256_128, Mode.TRANSPORT, 4)
    original = with_options()
    data = out.encap(bytes(original), 0.0)
    assert isinstance(data, bytes)
    assert data[20:32] == IPV4_OPTIONS  # AH goes after the options
    assert parse(data)[AH].nh == 17
    assert scapy_opens(scapy_sa, data) == bytes(original)
    # A router records its address and moves the pointer: the ICV still holds.
    recorded = patch(patch(data, RR_ADDRESS_AT, bytes([198, 51, 100, 7])), 26, b"\x08")
    recorded = changed(recorded, lambda p: None)
    opened = inbound.decap(recorded, 0.0)
    assert isinstance(opened, bytes)
    assert opened[RR_ADDRESS_AT : RR_ADDRESS_AT + 4] == bytes([198, 51, 100, 7])
    assert parse(opened)[Raw].load == PAYLOAD
    assert not scapy_refuses(scapy_sa, recorded)
    # The Router Alert value is immutable.
    forged = changed(patch(data, ROUTER_ALERT_VALUE_AT, b"\x00\x01"), lambda p: None)
    assert fresh(inbound).decap(forged, 0.0) is Drop.INTEGRITY
    assert scapy_refuses(scapy_sa, forged)
    # And ours verifies what scapy built with the same options.
    theirs = bytes(scapy_sa.encrypt(original, seq_num=9))
    assert inbound.decap(theirs, 0.0) == bytes(original)


# Hop-by-hop: an option whose type has the change-en-route bit (0x3e: skip if unknown,
# may change) and one without it (0x1e), 4 octets of data each (RFC 8200 section 4.2).
def with_hop_by_hop(next_headers: list[Packet] | None = None) -> Packet:
    hbh = IPv6ExtHdrHopByHop(
        options=[
            HBHOptUnknown(otype=0x3E, optdata=b"\x01\x02\x03\x04"),
            HBHOptUnknown(otype=0x1E, optdata=b"\x05\x06\x07\x08"),
        ]
    )
    packet = IPv6(src="2001:db8:1::1", dst="2001:db8:2::1", hlim=9) / hbh
    for header in next_headers or []:
        packet = packet / header
    return rebuilt(packet / UDP(sport=1, dport=2) / Raw(PAYLOAD))


def test_ipv6_hop_by_hop_option_with_the_change_bit_is_zeroed() -> None:
    out, inbound, scapy_sa = sas(Integrity.HMAC_SHA2_256_128, Mode.TRANSPORT, 6)
    original = with_hop_by_hop()
    data = out.encap(bytes(original), 0.0)
    assert isinstance(data, bytes)
    packet = parse(data)
    assert packet.nh == 0 and packet[IPv6ExtHdrHopByHop].nh == 51  # AH after hop-by-hop
    assert scapy_opens(scapy_sa, data) == bytes(original)
    at = data.index(b"\x01\x02\x03\x04")
    en_route = patch(data, at, b"\xff\xee\xdd\xcc")
    assert inbound.decap(en_route, 0.0) == patch(bytes(original), at, b"\xff\xee\xdd\xcc")
    assert not scapy_refuses(scapy_sa, en_route)
    at = data.index(b"\x05\x06\x07\x08")
    forged = patch(data, at, b"\xff\xee\xdd\xcc")
    assert fresh(inbound).decap(forged, 0.0) is Drop.INTEGRITY
    assert scapy_refuses(scapy_sa, forged)
    theirs = bytes(scapy_sa.encrypt(original, seq_num=5))
    assert inbound.decap(theirs, 0.0) == bytes(original)


def test_ipv6_destination_options_after_the_last_routing_header_follow_ah() -> None:
    out, inbound, scapy_sa = sas(Integrity.HMAC_SHA1_96, Mode.TRANSPORT, 6)
    dest = IPv6ExtHdrDestOpt(options=[HBHOptUnknown(otype=0x1E, optdata=b"\x00\x00\x00\x00")])
    original = with_hop_by_hop([dest])
    data = out.encap(bytes(original), 0.0)
    assert isinstance(data, bytes)
    packet = parse(data)
    assert packet[IPv6ExtHdrHopByHop].nh == 51 and packet[AH].nh == 60
    assert scapy_opens(scapy_sa, data) == bytes(original)
    assert inbound.decap(data, 0.0) == bytes(original)


def route_type0(data: bytes) -> bytes:
    """What the listed routers do to a type 0 routing header (RFC 2460 section 4.4),
    hop by hop until no segment is left; hop limit down by one each time."""
    packet = parse(data)
    routing = packet[IPv6ExtHdrRouting]
    while routing.segleft:
        index = len(routing.addresses) - routing.segleft
        addresses = list(routing.addresses)
        addresses[index], packet.dst = packet.dst, addresses[index]
        routing.addresses = addresses
        routing.segleft -= 1
        packet.hlim -= 1
    return bytes(packet)


def test_ipv6_routing_header_type_0_is_predicted_as_it_arrives() -> None:
    # RFC 4302 Appendix A.2: mutable but predictable; the sender orders the addresses
    # as the final destination will see them.
    out, inbound, scapy_sa = sas(Integrity.HMAC_SHA2_256_128, Mode.TRANSPORT, 6)
    routing = IPv6ExtHdrRouting(addresses=["2001:db8:f::2", "2001:db8:2::1"], segleft=2)
    original = rebuilt(
        IPv6(src="2001:db8:1::1", dst="2001:db8:f::1") / routing / UDP(sport=1) / Raw(PAYLOAD)
    )
    data = out.encap(bytes(original), 0.0)
    assert isinstance(data, bytes)
    assert parse(data)[IPv6ExtHdrRouting].nh == 51  # AH after the routing header
    arrived = route_type0(data)
    assert parse(arrived).dst == "2001:db8:2::1"
    assert isinstance(inbound.decap(arrived, 0.0), bytes)
    assert not scapy_refuses(scapy_sa, arrived)
    # As sent (not yet routed) it does not verify: the ICV is over the arrival form.
    assert fresh(inbound).decap(data, 0.0) is Drop.INTEGRITY
    # scapy predicts the same when it sends.
    theirs = bytes(scapy_sa.encrypt(original, seq_num=2))
    assert isinstance(inbound.decap(route_type0(theirs), 0.0), bytes)
