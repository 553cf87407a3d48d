"""AH SA state and edges (RFC 4302): header layout, replay window and ESN on fake time,
sequence exhaustion, lifetimes, counters, every drop reason, transport-mode rebuilding,
IPv4 source routes, traffic selectors and parameter checks."""

from __future__ import annotations

from collections import deque
from typing import Any

import pytest
from scapy.layers.inet import IP, TCP, UDP, IPOption
from scapy.layers.inet6 import IPv6, IPv6ExtHdrFragment, IPv6ExtHdrRouting
from scapy.layers.ipsec import AH, SecurityAssociation
from scapy.packet import Raw

from vpnfleet.agent.esp.ah import (
    AH_HEADER_LENGTH,
    AhParams,
    InboundAhSa,
    OutboundAhSa,
    ah_length,
)
from vpnfleet.agent.esp.ah_icv import ipv4_checksum
from vpnfleet.agent.esp.sa import (
    ESN_SEQ_MAX,
    ESN_SEQ_SOFT_MARGIN,
    SEQ_MAX,
    SEQ_SOFT_MARGIN,
    Direction,
    Drop,
    InboundSa,
    Lifetime,
    Mode,
    OutboundSa,
    RekeyRequested,
    SaExpired,
    SaParams,
)
from vpnfleet.agent.esp.spd import TrafficSelector
from vpnfleet.agent.esp.transforms import CbcHmacSuite, Encryption, Integrity

SPI = 0x00AB0001
SRC4, DST4 = "192.0.2.10", "192.0.2.20"
SRC6, DST6 = "2001:db8:10::1", "2001:db8:20::1"


def params(
    integrity: Integrity = Integrity.HMAC_SHA2_256_128,
    *,
    mode: Mode = Mode.TUNNEL,
    version: int = 4,
    esn: bool = False,
    lifetime: Lifetime | None = None,
) -> AhParams:
    src, dst = (SRC4, DST4) if version == 4 else (SRC6, DST6)
    return AhParams(
        SPI,
        integrity,
        bytes(range(9, 9 + integrity.key_length)),
        mode=mode,
        esn=esn,
        lifetime=lifetime or Lifetime(),
        src=src,
        dst=dst,
    )


def pair(p: AhParams, **inbound: Any) -> tuple[OutboundAhSa, InboundAhSa]:
    return OutboundAhSa(p, 0.0), InboundAhSa(p, 0.0, **inbound)


def udp4(payload: bytes = b"x" * 30, **fields: Any) -> bytes:
    ip = IP(src="10.0.1.1", dst="10.0.2.1", **fields)
    return bytes(ip / UDP(sport=1234, dport=53) / Raw(payload))


def udp6(payload: bytes = b"x" * 30) -> bytes:
    return bytes(IPv6(src="2001:db8:1::1", dst="2001:db8:2::1") / UDP(sport=1234) / Raw(payload))


def packet_for(version: int) -> bytes:
    return udp4() if version == 4 else udp6()


def ah_at(data: bytes) -> int:
    parsed = IP(data) if data[0] >> 4 == 4 else IPv6(data)
    return len(data) - len(bytes(parsed[AH]))


def sealed(out: OutboundAhSa, packet: bytes, now: float = 0.0) -> bytes:
    data = out.encap(packet, now)
    assert isinstance(data, bytes), data
    return data


# --- header (RFC 4302 sections 2.2 and 2.6) -----------------------------------------------

LENGTHS = {
    # integrity: (AH octets over IPv4, over IPv6); ICV + 12, padded to 32 / 64 bits
    Integrity.HMAC_SHA1_96: (24, 24),
    Integrity.HMAC_SHA2_256_128: (28, 32),
    Integrity.HMAC_SHA2_384_192: (36, 40),
    Integrity.HMAC_SHA2_512_256: (44, 48),
    Integrity.AES128GMAC: (36, 40),
    Integrity.AES192GMAC: (36, 40),
    Integrity.AES256GMAC: (36, 40),
}


@pytest.mark.parametrize("version", [4, 6])
@pytest.mark.parametrize("integrity", list(Integrity))
def test_header_fields_and_padding(integrity: Integrity, version: int) -> None:
    expected = LENGTHS[integrity][0 if version == 4 else 1]
    assert ah_length(integrity, version) == expected
    out, inbound = pair(params(integrity, version=version))
    inner = packet_for(version)
    data = sealed(out, inner)
    at = 20 if version == 4 else 40
    assert data[at] == (4 if version == 4 else 41)  # next header: the inner packet
    assert data[at + 1] == expected // 4 - 2  # payload length in 32-bit words, minus 2
    assert data[at + 2 : at + 4] == b"\x00\x00"  # reserved
    assert data[at + 4 : at + 8] == SPI.to_bytes(4, "big")
    assert data[at + 8 : at + 12] == (1).to_bytes(4, "big")
    padding = expected - AH_HEADER_LENGTH - integrity.iv_length - integrity.icv_length
    assert data[at + expected - padding : at + expected] == bytes(padding)
    assert data[at + expected :] == inner
    assert len(data) == at + expected + len(inner)
    if version == 4:
        assert data[9] == 51 and int.from_bytes(data[2:4], "big") == len(data)
        assert ipv4_checksum(data[:10] + b"\x00\x00" + data[12:20]) == int.from_bytes(
            data[10:12], "big"
        )
    else:
        assert data[6] == 51 and int.from_bytes(data[4:6], "big") == len(data) - 40
    assert inbound.decap(data, 0.0) == inner


def test_outer_header_copies_dscp_and_df_from_the_inner_packet() -> None:
    out, _ = pair(params())
    data = sealed(out, udp4(tos=0xB9, flags="DF", ttl=3))
    assert data[1] == 0xB9 and data[6] & 0x40 and data[8] == 64
    out6, _ = pair(params(version=6))
    inner = bytes(IPv6(src="2001:db8::1", dst="2001:db8::2", tc=0xB9) / UDP())
    data = sealed(out6, inner)
    assert ((data[0] & 0x0F) << 4 | data[1] >> 4) == 0xB9 and data[7] == 64


def test_ipv6_inner_in_ipv4_outer_and_back() -> None:
    out, inbound = pair(params())
    data = sealed(out, udp6())
    assert data[20] == 41
    assert inbound.decap(data, 0.0) == udp6()


# --- transport mode -----------------------------------------------------------------------


@pytest.mark.parametrize("version", [4, 6])
def test_transport_mode_gives_back_the_original_packet(version: int) -> None:
    out, inbound = pair(params(mode=Mode.TRANSPORT, version=version))
    original = packet_for(version)
    data = sealed(out, original)
    at = 20 if version == 4 else 40
    assert data[at] == 17 and data[:at][9 if version == 4 else 6] == 51
    assert data[at + ah_length(out.params.integrity, version) :] == original[at:]
    # The receiver restores next header, length and (IPv4) checksum: the packet as sent.
    assert inbound.decap(data, 0.0) == original
    assert out.counters.bytes_out == inbound.counters.bytes_in == len(original) - at


def test_transport_keeps_link_padding_out() -> None:
    out, inbound = pair(params(mode=Mode.TRANSPORT))
    data = sealed(out, udp4())
    assert inbound.decap(data + b"\x00" * 6, 0.0) == udp4()  # Ethernet minimum padding


def test_transport_ipv4_options_stay_before_ah() -> None:
    original = bytes(
        IP(src="10.0.1.1", dst="10.0.2.1", options=IPOption(b"\x94\x04\x00\x00"))
        / TCP(sport=1, dport=2)
    )
    out, inbound = pair(params(mode=Mode.TRANSPORT))
    data = sealed(out, original)
    assert data[20:24] == b"\x94\x04\x00\x00" and data[24] == 6
    assert inbound.decap(data, 0.0) == original


def route_lsrr(data: bytes) -> bytes:
    """RFC 791 section 3.1: each listed router records itself and forwards to the next
    address of a Loose Source and Record Route; TTL down by one; checksum recomputed."""
    packet = bytearray(data)
    at = 20
    assert packet[at] == 0x83
    length = packet[at + 1]
    while packet[at + 2] <= length - 3:
        slot = at + packet[at + 2] - 1
        next_hop = bytes(packet[slot : slot + 4])
        packet[slot : slot + 4] = bytes([203, 0, 113, packet[at + 2]])  # this router
        packet[16:20] = next_hop
        packet[at + 2] += 4
        packet[8] -= 1
    header_length = (packet[0] & 0x0F) * 4
    packet[10:12] = b"\x00\x00"
    packet[10:12] = ipv4_checksum(packet[:header_length]).to_bytes(2, "big")
    return bytes(packet)


def test_ipv4_loose_source_route_icv_uses_the_final_destination() -> None:
    # RFC 4302 section 3.3.3.1.1.1: with a source route the destination is mutable but
    # predictable (the final one); Appendix A.1: the option itself is zeroed.
    final = bytes([10, 0, 2, 1])
    option = bytes([0x83, 11, 4]) + bytes([10, 0, 9, 2]) + final + b"\x00"  # + EOL
    original = bytes(
        IP(src="10.0.1.1", dst="10.0.9.1", options=IPOption(option)) / UDP() / Raw(b"r" * 8)
    )
    out, inbound = pair(params(mode=Mode.TRANSPORT))
    data = sealed(out, original)
    arrived = route_lsrr(data)
    assert arrived[16:20] == final
    result = inbound.decap(arrived, 0.0)
    assert isinstance(result, bytes) and result[16:20] == final
    # As sent, the destination is the first hop: its ICV is not for that form.
    assert InboundAhSa(out.params, 0.0).decap(data, 0.0) is Drop.INTEGRITY


def test_ipv6_unpredictable_routing_type_is_refused() -> None:
    routing = IPv6ExtHdrRouting(type=3, addresses=["2001:db8::9"], segleft=1)
    original = bytes(IPv6(src="2001:db8::1", dst="2001:db8::2") / routing / UDP())
    out, _ = pair(params(mode=Mode.TRANSPORT, version=6))
    assert out.encap(original, 0.0) is Drop.BAD_INNER_PACKET
    assert out.counters.malformed == 1 and out.seq == 0


@pytest.mark.parametrize(
    "packet",
    [
        udp4(flags="MF"),
        udp4(frag=10),
        bytes(IPv6(src="2001:db8::1", dst="2001:db8::2") / IPv6ExtHdrFragment() / UDP()),
    ],
    ids=["v4-more-fragments", "v4-offset", "v6-fragment-header"],
)
def test_fragments_are_neither_protected_nor_accepted(packet: bytes) -> None:
    # RFC 4302 section 3.4.1: AH applies to whole packets only.
    out, _ = pair(params(mode=Mode.TRANSPORT, version=packet[0] >> 4))
    assert out.encap(packet, 0.0) is Drop.BAD_INNER_PACKET
    _, inbound = pair(params(version=4))
    whole = sealed(OutboundAhSa(params(), 0.0), udp4())
    fragment = bytearray(whole)
    fragment[6] |= 0x20  # more fragments
    assert inbound.decap(bytes(fragment), 0.0) is Drop.TRUNCATED


def test_transport_sa_takes_no_whole_ip_packet() -> None:
    out, _ = pair(params(mode=Mode.TRANSPORT))
    inner = udp4()
    ip_in_ip = bytes(IP(src="10.0.0.1", dst="10.0.0.2", proto=4) / Raw(inner))
    assert out.encap(ip_in_ip, 0.0) is Drop.WRONG_NEXT_HEADER
    # Received: a transport SA refuses a tunnel-mode packet and the other way round.
    tunnel_packet = sealed(OutboundAhSa(params(), 0.0), inner)
    transport_in = InboundAhSa(params(mode=Mode.TRANSPORT), 0.0)
    assert transport_in.decap(tunnel_packet, 0.0) is Drop.WRONG_NEXT_HEADER
    transport_packet = sealed(OutboundAhSa(params(mode=Mode.TRANSPORT), 0.0), udp4())
    assert InboundAhSa(params(), 0.0).decap(transport_packet, 0.0) is Drop.WRONG_NEXT_HEADER


def test_inner_version_must_match_next_header() -> None:
    # Built by scapy: an AH packet saying IPv4 (4) follows, carrying an IPv6 packet.
    sa = SecurityAssociation(AH, spi=SPI, auth_algo="SHA2-256-128", auth_key=params().integ_key)
    packet = IP(src=SRC4, dst=DST4, proto=4) / Raw(udp6())
    data = bytes(sa.encrypt(packet))
    inbound = InboundAhSa(params(), 0.0)
    assert inbound.decap(data, 0.0) is Drop.BAD_INNER_PACKET
    assert inbound.counters.malformed == 1


# --- replay window and ESN (RFC 4302 section 3.4.3, Appendix B) ---------------------------


def test_replay_stale_and_out_of_order() -> None:
    out, inbound = pair(params(), replay_window=64)
    packets = {seq: out.seal_with_seq(seq, udp4()) for seq in (1, 2, 3, 70, 100)}
    assert all(isinstance(p, bytes) for p in packets.values())
    assert inbound.decap(packets[3], 0.0) == udp4()
    assert inbound.decap(packets[1], 0.0) == udp4()  # out of order, inside the window
    assert inbound.decap(packets[3], 0.0) is Drop.REPLAYED
    assert inbound.decap(packets[100], 0.0) == udp4()
    assert inbound.decap(packets[2], 0.0) is Drop.STALE  # 2 + 64 <= 100
    assert inbound.decap(packets[70], 0.0) == udp4()
    assert inbound.counters.replay_drops == 2 and inbound.counters.packets_in == 4


def test_forged_packet_does_not_move_the_window() -> None:
    out, inbound = pair(params())
    data = bytearray(sealed(out, udp4()))
    data[-1] ^= 1
    assert inbound.decap(bytes(data), 0.0) is Drop.INTEGRITY
    assert inbound.replay.top == 0


def test_esn_crosses_the_32_bit_wrap() -> None:
    p = params(esn=True)
    out, inbound = pair(p)
    out._seq = (1 << 32) - 3
    inbound.replay.update((1 << 32) - 4)  # the window is where the sender is
    for _ in range(5):
        data = sealed(out, udp4())
        assert data[28:32] == (out.seq & 0xFFFFFFFF).to_bytes(4, "big")
        assert inbound.decap(data, 0.0) == udp4()
    assert inbound.replay.top == (1 << 32) + 2
    # A packet from the previous epoch, still inside the window, is a replay.
    old = out.seal_with_seq((1 << 32) - 1, udp4())
    assert isinstance(old, bytes)
    assert inbound.decap(old, 0.0) is Drop.REPLAYED


def test_esn_high_half_is_authenticated_not_sent() -> None:
    p = params(esn=True)
    out = OutboundAhSa(p, 0.0)
    a = out.seal_with_seq((5 << 32) | 9, udp4())
    b = out.seal_with_seq((6 << 32) | 9, udp4())
    assert isinstance(a, bytes) and isinstance(b, bytes)
    assert a[:32] == b[:32] and a != b  # same headers on the wire, different ICV
    inbound = InboundAhSa(p, 0.0)
    inbound.replay.update((6 << 32) | 1)
    assert inbound.decap(a, 0.0) is Drop.INTEGRITY  # inferred high half 6, signed with 5
    assert inbound.decap(b, 0.0) == udp4()


def test_esn_number_below_zero_is_stale() -> None:
    # RFC 4302 Appendix B: with the window at 5 in the first 2^32 subspace, a low half
    # near 2^32 would belong to the subspace before the first: nothing to accept.
    p = params(esn=True)
    out, inbound = pair(p)
    inbound.replay.update(5)
    early = out.seal_with_seq((1 << 32) - 2, udp4())
    assert isinstance(early, bytes)
    assert inbound.decap(early, 0.0) is Drop.STALE


# --- sequence numbers never cycle (RFC 4302 section 3.3.2) --------------------------------


@pytest.mark.parametrize(
    ("esn", "last", "margin"),
    [(False, SEQ_MAX, SEQ_SOFT_MARGIN), (True, ESN_SEQ_MAX, ESN_SEQ_SOFT_MARGIN)],
    ids=["seq32", "esn"],
)
def test_sequence_exhaustion_asks_for_a_rekey_then_refuses(
    esn: bool, last: int, margin: int
) -> None:
    out = OutboundAhSa(params(esn=esn), 0.0)
    out._seq = last - margin - 2
    sealed(out, udp4())
    assert out.next_event() is None
    sealed(out, udp4())  # reaches the rekey mark
    assert out.next_event() == RekeyRequested(SPI, Direction.OUTBOUND, "sequence")
    out._seq = last - 1
    sealed(out, udp4())
    assert out.seq == last
    assert out.encap(udp4(), 0.0) is Drop.EXPIRED
    assert out.seq == last and out.counters.send_refused == 1
    assert out.next_event() is None  # one rekey request only


# --- lifetimes (the SaLifecycle ESP uses too) ---------------------------------------------


def test_time_lifetime_soft_then_hard_on_fake_time() -> None:
    life = Lifetime(soft_seconds=10, hard_seconds=20)
    out, inbound = pair(params(lifetime=life))
    assert out.get_timer() == 10 and inbound.get_timer() == 10
    data = sealed(out, udp4(), now=5)
    out.handle_timer(10)
    assert out.next_event() == RekeyRequested(SPI, Direction.OUTBOUND, "time")
    assert out.get_timer() == 20
    sealed(out, udp4(), now=15)  # still works after the soft limit
    assert out.encap(udp4(), 20) is Drop.EXPIRED
    assert out.next_event() == SaExpired(SPI, Direction.OUTBOUND, "time")
    assert out.expired and out.get_timer() is None and out.counters.send_refused == 1
    assert inbound.decap(data, 19.0) == udp4()
    assert inbound.next_event() == RekeyRequested(SPI, Direction.INBOUND, "time")
    assert inbound.decap(data, 25.0) is Drop.EXPIRED
    assert inbound.counters.expired_drops == 1
    assert inbound.next_event() == SaExpired(SPI, Direction.INBOUND, "time")


def test_packet_and_byte_lifetimes() -> None:
    inner = udp4()
    life = Lifetime(soft_packets=2, hard_packets=3, soft_bytes=len(inner) * 10)
    out, inbound = pair(params(lifetime=life))
    sealed(out, inner)
    assert out.next_event() is None
    sealed(out, inner)
    assert out.next_event() == RekeyRequested(SPI, Direction.OUTBOUND, "packets")
    data = sealed(out, inner)
    assert out.next_event() == SaExpired(SPI, Direction.OUTBOUND, "packets")
    assert out.encap(inner, 0.0) is Drop.EXPIRED
    assert out.counters.packets_out == 3 and out.counters.bytes_out == 3 * len(inner)
    assert inbound.decap(data, 0.0) == inner


def test_events_can_be_shared_into_one_queue() -> None:
    queue: deque[Any] = deque()
    out, inbound = pair(params(lifetime=Lifetime(hard_seconds=1)))
    out.share_events(queue)
    inbound.share_events(queue)
    out.handle_timer(1)
    inbound.handle_timer(1)
    assert [e.direction for e in queue] == [Direction.OUTBOUND, Direction.INBOUND]
    assert out.next_event() is not None  # the SA reads the same queue


# --- drops on what arrives ----------------------------------------------------------------


def test_truncated_packets_at_every_length() -> None:
    out, inbound = pair(params())
    data = sealed(out, udp4())
    for cut in range(len(data)):
        result = inbound.decap(data[:cut], 0.0)
        assert isinstance(result, Drop), cut
    assert inbound.counters.packets_in == 0
    assert inbound.decap(data, 0.0) == udp4()


def test_drop_reasons_for_headers_that_do_not_fit() -> None:
    out, inbound = pair(params())
    data = sealed(out, udp4())
    assert inbound.decap(udp4(), 0.0) is Drop.WRONG_NEXT_HEADER  # no AH at all
    other = bytearray(data)
    other[24:28] = (SPI + 1).to_bytes(4, "big")
    assert inbound.decap(bytes(other), 0.0) is Drop.UNKNOWN_SPI
    short = bytearray(data)
    short[21] -= 1  # AH one word shorter: the ICV cannot be this SA's
    assert inbound.decap(bytes(short), 0.0) is Drop.INTEGRITY
    long = bytearray(data)
    long[21] = 250  # longer than the packet
    assert inbound.decap(bytes(long), 0.0) is Drop.TRUNCATED
    claims_more = bytearray(data)
    claims_more[2:4] = (len(data) + 1).to_bytes(2, "big")
    assert inbound.decap(bytes(claims_more), 0.0) is Drop.TRUNCATED
    assert inbound.decap(b"", 0.0) is Drop.TRUNCATED
    assert inbound.decap(b"\x75" + data[1:], 0.0) is Drop.TRUNCATED  # IP version 7
    counters = inbound.counters
    assert counters.malformed == 6 and counters.integrity_failures == 1
    assert inbound.decap(data, 0.0) == udp4()


def test_inner_packets_outside_the_selectors_are_dropped() -> None:
    local = [TrafficSelector.from_network("10.0.2.0/24")]
    remote = [TrafficSelector.from_network("10.0.1.0/24")]
    out, inbound = pair(params(), local_ts=local, remote_ts=remote)
    assert inbound.decap(sealed(out, udp4()), 0.0) == udp4()
    stranger = bytes(IP(src="10.7.7.7", dst="10.0.2.1") / UDP())
    assert inbound.decap(sealed(out, stranger), 0.0) is Drop.POLICY
    assert inbound.counters.policy_drops == 1
    with pytest.raises(ValueError, match="both local and remote"):
        InboundAhSa(params(), 0.0, local_ts=local)


def test_transport_selectors_check_protocol_and_ports() -> None:
    local = [TrafficSelector.from_network("10.0.2.1/32", protocol=17, ports=(53, 53))]
    remote = [TrafficSelector.from_network("10.0.1.1/32", protocol=17)]
    p = params(mode=Mode.TRANSPORT)
    out, inbound = pair(p, local_ts=local, remote_ts=remote)
    assert inbound.decap(sealed(out, udp4()), 0.0) == udp4()
    tcp = bytes(IP(src="10.0.1.1", dst="10.0.2.1") / TCP(sport=1, dport=53))
    assert inbound.decap(sealed(out, tcp), 0.0) is Drop.POLICY


# --- what we are asked to protect ---------------------------------------------------------


@pytest.mark.parametrize(
    "inner", [b"", b"\x45" + bytes(10), b"\x50" + bytes(40), b"\x60" + bytes(20)]
)
def test_unreadable_packets_are_not_protected(inner: bytes) -> None:
    out = OutboundAhSa(params(), 0.0)
    assert out.encap(inner, 0.0) is Drop.BAD_INNER_PACKET
    assert out.seq == 0 and out.counters.malformed == 1 and out.counters.packets_out == 0
    transport = OutboundAhSa(params(mode=Mode.TRANSPORT), 0.0)
    assert transport.encap(inner, 0.0) is Drop.BAD_INNER_PACKET


def test_too_large_for_ip_is_not_protected() -> None:
    out = OutboundAhSa(params(), 0.0)
    assert out.encap(udp4(b"y" * 65500), 0.0) is Drop.BAD_INNER_PACKET


# --- parameters ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"spi": 255}, "SPI must be an int in 256..2"),
        ({"spi": 1 << 32}, "SPI must be an int in 256..2"),
        ({"src": "not-an-address"}, "SA src 'not-an-address' is not an IP address"),
        ({"integrity": "sha256"}, "AH integrity must be an Integrity"),
    ],
)
def test_bad_params_are_refused(kwargs: dict[str, Any], message: str) -> None:
    base: dict[str, Any] = {
        "spi": SPI,
        "integrity": Integrity.HMAC_SHA2_256_128,
        "integ_key": bytes(32),
    }
    with pytest.raises((ValueError, TypeError), match=message):
        AhParams(**{**base, **kwargs})


def test_sa_construction_checks_keys_and_tunnel_addresses() -> None:
    with pytest.raises(ValueError, match="sha384 integrity key must be 48 octets, got 32"):
        OutboundAhSa(AhParams(SPI, Integrity.HMAC_SHA2_384_192, bytes(32)), 0.0)
    with pytest.raises(ValueError, match="needs its src and dst addresses"):
        OutboundAhSa(AhParams(SPI, Integrity.HMAC_SHA2_256_128, bytes(32)), 0.0)
    mixed = AhParams(SPI, Integrity.HMAC_SHA2_256_128, bytes(32), src=SRC4, dst=DST6)
    with pytest.raises(ValueError, match="different IP versions"):
        OutboundAhSa(mixed, 0.0)
    # Inbound and transport SAs need no addresses.
    InboundAhSa(AhParams(SPI, Integrity.HMAC_SHA2_256_128, bytes(32)), 0.0)
    OutboundAhSa(AhParams(SPI, Integrity.AES128GMAC, bytes(20), mode=Mode.TRANSPORT), 0.0)


def test_keys_stay_out_of_repr() -> None:
    p = params()
    assert p.integ_key.hex() not in repr(p) and "integ_key" not in repr(p)


# --- the integrity table ESP shares -------------------------------------------------------


def test_integrity_transform_ids_are_ianas() -> None:
    # IKEv2 Transform Type 3 (RFC 7296 section 3.3.2; RFC 2404, RFC 4543, RFC 4868).
    assert {i: i.transform_id for i in Integrity} == {
        Integrity.HMAC_SHA1_96: 2,
        Integrity.AES128GMAC: 9,
        Integrity.AES192GMAC: 10,
        Integrity.AES256GMAC: 11,
        Integrity.HMAC_SHA2_256_128: 12,
        Integrity.HMAC_SHA2_384_192: 13,
        Integrity.HMAC_SHA2_512_256: 14,
    }
    assert all(Integrity.for_transform(i.transform_id) is i for i in Integrity)


def test_esp_cbc_takes_hmac_sha1_but_not_gmac() -> None:
    p = SaParams(
        0x1000,
        Encryption.AES128,
        bytes(16),
        Integrity.HMAC_SHA1_96,
        bytes(20),
    )
    packet = OutboundSa(p, 0.0).encap(udp4(), 4, 0.0)
    assert packet is not None
    assert InboundSa(p, 0.0).decap(packet, 0.0) == (udp4(), 4)
    with pytest.raises(ValueError, match="aes128 takes an HMAC integrity transform"):
        CbcHmacSuite(Encryption.AES128, bytes(16), Integrity.AES128GMAC, bytes(20))
