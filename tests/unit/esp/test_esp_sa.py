"""ESP SA encap/decap: round trips, padding, ESN, sequence limits and every drop reason."""

from __future__ import annotations

import ipaddress
import struct

import pytest

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
from vpnfleet.agent.esp.transforms import AeadSuite, CbcHmacSuite, Encryption, Integrity

SUITES = [
    (Encryption.AES128GCM16, None),
    (Encryption.AES256GCM16, None),
    (Encryption.CHACHA20POLY1305, None),
    (Encryption.AES128, Integrity.HMAC_SHA2_256_128),
    (Encryption.AES256, Integrity.HMAC_SHA2_384_192),
    (Encryption.AES256, Integrity.HMAC_SHA2_512_256),
]
SUITE_IDS = [f"{e}-{i}" if i else str(e) for e, i in SUITES]


def params(
    encryption: Encryption = Encryption.AES128GCM16,
    integrity: Integrity | None = None,
    *,
    spi: int = 0x1000,
    mode: Mode = Mode.TUNNEL,
    esn: bool = False,
    lifetime: Lifetime | None = None,
) -> SaParams:
    enc_key = bytes(range(1, encryption.key_length + 1))
    integ_key = bytes(range(100, 100 + integrity.key_length)) if integrity else b""
    return SaParams(
        spi,
        encryption,
        enc_key,
        integrity,
        integ_key,
        mode=mode,
        esn=esn,
        lifetime=lifetime or Lifetime(),
    )


def pair(p: SaParams, **inbound: object) -> tuple[OutboundSa, InboundSa]:
    return OutboundSa(p, 0.0), InboundSa(p, 0.0, **inbound)  # type: ignore[arg-type]


def ipv4(src: str, dst: str, proto: int = 17, sport: int = 1000, dport: int = 2000) -> bytes:
    body = struct.pack(">HHHH", sport, dport, 8 + 4, 0) + b"data"
    header = struct.pack(">BBHHHBBH", 0x45, 0, 20 + len(body), 0, 0, 64, proto, 0)
    header += ipaddress.IPv4Address(src).packed + ipaddress.IPv4Address(dst).packed
    return header + body


def ipv6(src: str, dst: str, proto: int = 17) -> bytes:
    body = struct.pack(">HHHH", 1000, 2000, 12, 0) + b"data"
    header = struct.pack(">IHBB", 6 << 28, len(body), proto, 64)
    header += ipaddress.IPv6Address(src).packed + ipaddress.IPv6Address(dst).packed
    return header + body


INNER4 = ipv4("10.1.0.1", "10.2.0.1")


@pytest.mark.parametrize(("encryption", "integrity"), SUITES, ids=SUITE_IDS)
@pytest.mark.parametrize("esn", [False, True], ids=["seq32", "esn"])
def test_round_trip_tunnel(encryption: Encryption, integrity: Integrity | None, esn: bool) -> None:
    out, inb = pair(params(encryption, integrity, esn=esn))
    inner6 = ipv6("fd00::1", "fd00::2")
    for size in range(0, 40):
        for inner, nh in ((INNER4 + b"x" * size, 4), (inner6 + b"y" * size, 41)):
            packet = out.encap(inner, nh, now=0.0)
            assert packet is not None
            assert inb.decap(packet, now=0.0) == (inner, nh)
    assert out.counters.packets_out == inb.counters.packets_in == 80
    assert out.counters.bytes_out == inb.counters.bytes_in > 0


@pytest.mark.parametrize(("encryption", "integrity"), SUITES, ids=SUITE_IDS)
def test_round_trip_transport(encryption: Encryption, integrity: Integrity | None) -> None:
    out, inb = pair(params(encryption, integrity, mode=Mode.TRANSPORT))
    segment = struct.pack(">HHHH", 5000, 53, 12, 0) + b"abcd"
    packet = out.encap(segment, 17, now=0.0)
    assert packet is not None
    assert inb.decap(packet, now=0.0) == (segment, 17)


@pytest.mark.parametrize(("encryption", "integrity"), SUITES, ids=SUITE_IDS)
def test_padding_alignment_and_layout(encryption: Encryption, integrity: Integrity | None) -> None:
    out, _ = pair(params(encryption, integrity))
    iv_length = 8 if encryption.is_aead else 16
    icv_length = 16 if encryption.is_aead else integrity.icv_length  # type: ignore[union-attr]
    block = 4 if encryption.is_aead else 16
    for size in range(20, 60):
        packet = out.encap(b"\x45" + bytes(size - 1), 4, now=0.0)
        assert packet is not None
        assert packet[:4] == (0x1000).to_bytes(4, "big")
        body = len(packet) - 8 - iv_length - icv_length
        assert body % block == 0
        # The least padding that aligns payload + 2 trailer octets (RFC 4303 2.4).
        assert body - (size + 2) < block


def test_aead_iv_is_the_sequence_number() -> None:
    out, _ = pair(params())
    for seq in range(1, 5):
        packet = out.encap(INNER4, 4, now=0.0)
        assert packet is not None
        assert struct.unpack(">I", packet[4:8])[0] == seq
        assert packet[8:16] == seq.to_bytes(8, "big")


def test_cbc_iv_is_random() -> None:
    out, _ = pair(params(Encryption.AES128, Integrity.HMAC_SHA2_256_128))
    ivs = set()
    for _ in range(50):
        packet = out.encap(INNER4, 4, now=0.0)
        assert packet is not None
        ivs.add(packet[8:24])
    assert len(ivs) == 50


def test_padding_bytes_are_monotonic() -> None:
    p = params()
    out, _ = pair(p)
    payload = INNER4 + b"zzz"  # 35 octets + 2 trailer octets: 3 pad octets reach 40
    packet = out.encap(payload, 4, now=0.0)
    assert packet is not None
    plaintext = AeadSuite(p.encryption, p.enc_key).open(packet[8:16], packet[:8], packet[16:])
    assert plaintext is not None
    assert plaintext[len(payload) :] == b"\x01\x02\x03\x03\x04"


# --- negative paths -------------------------------------------------------------------


@pytest.mark.parametrize(("encryption", "integrity"), SUITES, ids=SUITE_IDS)
def test_flipped_bit_is_an_integrity_failure(
    encryption: Encryption, integrity: Integrity | None
) -> None:
    out, inb = pair(params(encryption, integrity))
    packet = out.encap(INNER4, 4, now=0.0)
    assert packet is not None
    stale = 0
    for position in range(4, len(packet)):  # SPI octets would pick another SA
        for bit in (0x01, 0x80):
            mutated = bytearray(packet)
            mutated[position] ^= bit
            if mutated[4:8] == bytes(4):  # sequence number 1 became 0: never valid
                expected, stale = Drop.STALE, stale + 1
            else:
                expected = Drop.INTEGRITY
            assert inb.decap(bytes(mutated), now=0.0) is expected
    assert stale == 1
    assert inb.counters.integrity_failures == 2 * (len(packet) - 4) - 1
    # A forged packet never moved the window: the real one is still accepted.
    assert inb.replay.top == 0
    assert inb.decap(packet, now=0.0) == (INNER4, 4)


def test_replay_is_dropped_and_counted() -> None:
    out, inb = pair(params())
    packet = out.encap(INNER4, 4, now=0.0)
    assert packet is not None
    assert inb.decap(packet, 0.0) == (INNER4, 4)
    assert inb.decap(packet, 0.0) is Drop.REPLAYED
    assert inb.counters.replay_drops == 1
    assert inb.counters.packets_in == 1


def test_sequence_left_of_the_window_is_stale() -> None:
    out, inb = pair(params(), replay_window=64)
    packets = [out.encap(INNER4, 4, now=0.0) for _ in range(100)]
    assert inb.decap(packets[99], 0.0) == (INNER4, 4)  # type: ignore[arg-type]
    # The window now holds 37..100.
    assert inb.decap(packets[35], 0.0) is Drop.STALE  # type: ignore[arg-type]  # seq 36
    assert inb.decap(packets[36], 0.0) == (INNER4, 4)  # type: ignore[arg-type]  # seq 37
    assert inb.counters.replay_drops == 1


def test_out_of_order_inside_the_window_is_accepted() -> None:
    out, inb = pair(params())
    packets = [out.encap(INNER4, 4, now=0.0) for _ in range(10)]
    for index in (9, 0, 5, 3, 8, 1, 2, 4, 6, 7):
        assert inb.decap(packets[index], 0.0) == (INNER4, 4)  # type: ignore[arg-type]


def seal_raw(p: SaParams, seq: int, plaintext: bytes) -> bytes:
    """An ESP packet with a hand-made trailer, sealed with the SA's own keys."""
    header = p.spi.to_bytes(4, "big") + seq.to_bytes(4, "big")
    iv = seq.to_bytes(8, "big")
    return header + iv + AeadSuite(p.encryption, p.enc_key).seal(iv, header, plaintext)


@pytest.mark.parametrize(
    "trailer",
    [b"\x01\x03\x02\x04", b"\x00\x00\x02\x04", b"\x02\x01\x02\x04", b"\x01\x02\x03\x04"],
    ids=["wrong-last", "zeros", "reversed", "pad-length-too-long"],
)
def test_bad_padding_is_dropped_and_counted(trailer: bytes) -> None:
    p = params()
    inb = InboundSa(p, 0.0)
    packet = seal_raw(p, 1, INNER4[:34] + trailer)
    assert inb.decap(packet, 0.0) is Drop.BAD_PADDING
    assert inb.counters.bad_padding == 1
    assert inb.counters.packets_in == 0


def test_pad_length_beyond_the_plaintext() -> None:
    p = params()
    inb = InboundSa(p, 0.0)
    assert inb.decap(seal_raw(p, 1, b"\xff\x04"), 0.0) is Drop.BAD_PADDING


def test_default_replay_window_is_1024_sequence_numbers() -> None:
    out, inb = pair(params())
    assert inb.replay.size == 1024
    packets = [out.encap(INNER4, 4, now=0.0) for _ in range(1025)]
    assert inb.decap(packets[1024], 0.0) == (INNER4, 4)  # type: ignore[arg-type]  # seq 1025
    # RFC 4303 section 3.4.3: the window holds 2..1025, so 1 is left of it.
    assert inb.decap(packets[0], 0.0) is Drop.STALE  # type: ignore[arg-type]
    assert inb.decap(packets[1], 0.0) == (INNER4, 4)  # type: ignore[arg-type]
    assert inb.counters.replay_drops == 1


@pytest.mark.parametrize(
    "integrity",
    [Integrity.HMAC_SHA2_256_128, Integrity.HMAC_SHA2_384_192, Integrity.HMAC_SHA2_512_256],
)
@pytest.mark.parametrize(
    "trailer",
    [b"\x01\x03\x02\x04", b"\x00\x00\x02\x04", b"\x01\x02\x03\x04"],
    ids=["wrong-last", "zeros", "pad-length-too-long"],
)
def test_cbc_bad_padding_is_dropped_and_counted(integrity: Integrity, trailer: bytes) -> None:
    p = params(Encryption.AES256, integrity)
    inb = InboundSa(p, 0.0)
    header = p.spi.to_bytes(4, "big") + (1).to_bytes(4, "big")
    iv = bytes(range(16))
    suite = CbcHmacSuite(p.encryption, p.enc_key, integrity, p.integ_key)
    # 28 + 4 = two AES blocks: the ICV verifies, only the padding is wrong.
    packet = header + iv + suite.seal(iv, header, INNER4[:28] + trailer)
    assert inb.decap(packet, 0.0) is Drop.BAD_PADDING
    assert inb.counters.bad_padding == 1
    assert inb.counters.integrity_failures == 0 and inb.counters.packets_in == 0


def test_truncated_packets() -> None:
    for encryption, integrity in SUITES:
        out, inb = pair(params(encryption, integrity))
        packet = out.encap(INNER4, 4, now=0.0)
        assert packet is not None
        minimum = 8 + (8 + 2 + 16 if encryption.is_aead else 16 + 16 + integrity.icv_length)  # type: ignore[union-attr]
        for length in range(minimum):
            assert inb.decap(packet[:length], 0.0) is Drop.TRUNCATED
        for length in range(minimum, len(packet)):
            assert inb.decap(packet[:length], 0.0) is Drop.INTEGRITY
        assert inb.counters.malformed == minimum
        assert inb.counters.integrity_failures == len(packet) - minimum


def test_tunnel_sa_refuses_a_transport_payload() -> None:
    p = params()
    inb = InboundSa(p, 0.0)
    # Next header 17 (UDP) on a tunnel-mode SA.
    assert inb.decap(seal_raw(p, 1, b"udp-segment!\x01\x02\x02\x11"), 0.0) is Drop.WRONG_NEXT_HEADER
    assert inb.counters.malformed == 1


def test_transport_sa_refuses_an_inner_ip_packet() -> None:
    p = params(mode=Mode.TRANSPORT)
    out_tunnel = OutboundSa(params(), 0.0)
    packet = out_tunnel.encap(INNER4, 4, now=0.0)
    assert packet is not None
    inb = InboundSa(p, 0.0)
    assert inb.decap(packet, 0.0) is Drop.WRONG_NEXT_HEADER


def test_inner_version_must_match_next_header() -> None:
    p = params()
    out, inb = pair(p)
    packet = out.seal_with_iv(1, (1).to_bytes(8, "big"), INNER4, 41)  # IPv4 labelled IPv6
    assert inb.decap(packet, 0.0) is Drop.BAD_INNER_PACKET


def test_dummy_packets_are_dropped() -> None:
    out, inb = pair(params())
    packet = out.encap(b"\x00" * 16, 59, now=0.0)
    assert packet is not None
    assert inb.decap(packet, 0.0) is Drop.DUMMY
    assert inb.counters.dummy_packets == 1
    assert inb.counters.packets_in == 0


@pytest.mark.parametrize(
    ("mode", "next_header"), [(Mode.TUNNEL, 17), (Mode.TRANSPORT, 4), (Mode.TUNNEL, 256)]
)
def test_encap_refuses_a_next_header_that_does_not_fit(mode: Mode, next_header: int) -> None:
    out = OutboundSa(params(mode=mode), 0.0)
    with pytest.raises(ValueError, match=f"next header {next_header} does not fit a {mode}"):
        out.encap(INNER4, next_header, now=0.0)
    assert out.seq == 0


def test_inbound_selectors_drop_foreign_inner_packets() -> None:
    local = [TrafficSelector.from_network("10.1.0.0/16")]
    remote = [TrafficSelector.from_network("10.2.0.0/16")]
    out, inb = pair(params(), local_ts=local, remote_ts=remote)
    good = ipv4("10.2.3.4", "10.1.9.9")
    bad = ipv4("10.3.3.4", "10.1.9.9")
    for inner, expected in ((good, (good, 4)), (bad, Drop.POLICY)):
        packet = out.encap(inner, 4, now=0.0)
        assert packet is not None
        assert inb.decap(packet, 0.0) == expected
    assert inb.counters.policy_drops == 1
    garbage = out.encap(b"\x45\x00\x00", 4, now=0.0)
    assert garbage is not None
    assert inb.decap(garbage, 0.0) is Drop.BAD_INNER_PACKET


def test_transport_selectors_check_protocol_and_ports() -> None:
    local = [TrafficSelector(4, 0, 0xFFFFFFFF, 17, 53, 53)]
    remote = [TrafficSelector(4, 0, 0xFFFFFFFF, 17)]
    out, inb = pair(params(mode=Mode.TRANSPORT), local_ts=local, remote_ts=remote)
    to_dns = struct.pack(">HHHH", 40000, 53, 8, 0)
    to_other = struct.pack(">HHHH", 40000, 54, 8, 0)
    for segment, proto, expected in (
        (to_dns, 17, (to_dns, 17)),
        (to_other, 17, Drop.POLICY),
        (to_dns, 6, Drop.POLICY),
    ):
        packet = out.encap(segment, proto, now=0.0)
        assert packet is not None
        assert inb.decap(packet, 0.0) == expected


def test_selectors_must_come_in_pairs() -> None:
    with pytest.raises(ValueError, match="both local and remote traffic selectors"):
        InboundSa(params(), 0.0, local_ts=[TrafficSelector.from_network("10.0.0.0/8")])


# --- ESN and sequence limits ----------------------------------------------------------


def test_esn_crosses_the_32_bit_wrap() -> None:
    out, inb = pair(params(esn=True))
    out._seq = (1 << 32) - 3  # start just below the wrap without sending 4 billion packets
    inb.replay.update((1 << 32) - 3)
    for expected in range((1 << 32) - 2, (1 << 32) + 3):
        packet = out.encap(INNER4, 4, now=0.0)
        assert packet is not None
        assert packet[4:8] == (expected & 0xFFFFFFFF).to_bytes(4, "big")
        assert inb.decap(packet, 0.0) == (INNER4, 4)
    assert inb.replay.top == (1 << 32) + 2


def test_esn_high_bits_are_authenticated() -> None:
    out = OutboundSa(params(esn=True), 0.0)
    out._seq = 1 << 32  # next packet: high half 1, low half 1
    packet = out.encap(INNER4, 4, now=0.0)
    assert packet is not None
    # A receiver that infers high half 0 (no wrap seen) fails the ICV.
    inb = InboundSa(params(esn=True), 0.0)
    assert inb.decap(packet, 0.0) is Drop.INTEGRITY


def test_sequence_numbers_never_wrap() -> None:
    out = OutboundSa(params(), 0.0)
    out._seq = SEQ_MAX - SEQ_SOFT_MARGIN - 2
    assert out.encap(INNER4, 4, now=0.0) is not None
    assert out.next_event() is None
    assert out.encap(INNER4, 4, now=0.0) is not None
    assert out.seq == SEQ_MAX - SEQ_SOFT_MARGIN  # 2^32 - 2^24 - 1: time to rekey
    assert out.next_event() == RekeyRequested(0x1000, Direction.OUTBOUND, "sequence")
    out._seq = SEQ_MAX - 1
    assert out.encap(INNER4, 4, now=0.0) is not None
    assert out.seq == SEQ_MAX
    assert out.encap(INNER4, 4, now=0.0) is None
    assert out.encap(INNER4, 4, now=0.0) is None
    assert out.seq == SEQ_MAX
    assert out.counters.send_refused == 2
    assert out.next_event() is None  # one rekey request, not one per packet


# --- lifetimes ------------------------------------------------------------------------


def test_time_lifetime_soft_then_hard() -> None:
    lifetime = Lifetime(soft_seconds=100, hard_seconds=120)
    out, inb = pair(params(lifetime=lifetime))
    assert out.get_timer() == 100
    out.handle_timer(99.9)
    assert out.next_event() is None
    out.handle_timer(100.0)
    assert out.next_event() == RekeyRequested(0x1000, Direction.OUTBOUND, "time")
    assert out.get_timer() == 120
    assert out.encap(INNER4, 4, now=110.0) is not None
    packet = out.encap(INNER4, 4, now=119.0)
    assert packet is not None
    assert out.encap(INNER4, 4, now=120.0) is None
    assert out.next_event() == SaExpired(0x1000, Direction.OUTBOUND, "time")
    assert out.expired and out.get_timer() is None
    # The inbound side reaches its hard limit on the packet path too.
    assert inb.decap(packet, now=125.0) is Drop.EXPIRED
    assert inb.counters.expired_drops == 1
    assert [inb.next_event(), inb.next_event()] == [
        RekeyRequested(0x1000, Direction.INBOUND, "time"),
        SaExpired(0x1000, Direction.INBOUND, "time"),
    ]


def test_byte_and_packet_lifetimes() -> None:
    out = OutboundSa(params(lifetime=Lifetime(soft_packets=3, hard_packets=5)), 0.0)
    results = [out.encap(INNER4, 4, now=0.0) for _ in range(6)]
    assert [r is not None for r in results] == [True] * 5 + [False]
    assert out.next_event() == RekeyRequested(0x1000, Direction.OUTBOUND, "packets")
    assert out.next_event() == SaExpired(0x1000, Direction.OUTBOUND, "packets")
    size = len(INNER4)
    inb_params = params(lifetime=Lifetime(soft_bytes=2 * size, hard_bytes=10 * size))
    out2, inb = pair(inb_params)
    packets = [out2.encap(INNER4, 4, now=0.0) for _ in range(3)]
    assert inb.decap(packets[0], 0.0) == (INNER4, 4)  # type: ignore[arg-type]
    assert inb.next_event() is None
    assert inb.decap(packets[1], 0.0) == (INNER4, 4)  # type: ignore[arg-type]
    assert inb.next_event() == RekeyRequested(0x1000, Direction.INBOUND, "bytes")
    assert inb.decap(packets[2], 0.0) == (INNER4, 4)  # type: ignore[arg-type]
    assert inb.next_event() is None


def test_sequence_rekey_request_leaves_time_for_a_slow_rekey() -> None:
    """'Well before' in time: at the fastest one core seals (about 135,000 packets/s),
    the numbers left after the rekey request must outlast a CREATE_CHILD_SA exchange
    that needs every retransmission (2 s doubling over 5 tries: about a minute)."""
    ceiling_pps = 135_000
    assert SEQ_SOFT_MARGIN / ceiling_pps >= 64
    assert ESN_SEQ_SOFT_MARGIN / ceiling_pps >= 64
    # ... and the request still comes late enough to use nearly all of the space.
    assert SEQ_SOFT_MARGIN <= SEQ_MAX // 100


def test_esn_sequence_numbers_never_wrap() -> None:
    out = OutboundSa(params(esn=True), 0.0)
    out._seq = ESN_SEQ_MAX - ESN_SEQ_SOFT_MARGIN - 2
    assert out.encap(INNER4, 4, now=0.0) is not None
    assert out.next_event() is None
    assert out.encap(INNER4, 4, now=0.0) is not None
    assert out.seq == ESN_SEQ_MAX - ESN_SEQ_SOFT_MARGIN  # 2^64 - 2^32 - 1: time to rekey
    assert out.next_event() == RekeyRequested(0x1000, Direction.OUTBOUND, "sequence")
    out._seq = ESN_SEQ_MAX - 1
    assert out.encap(INNER4, 4, now=0.0) is not None
    assert out.seq == ESN_SEQ_MAX
    assert out.encap(INNER4, 4, now=0.0) is None
    assert out.seq == ESN_SEQ_MAX
    assert out.counters.send_refused == 1
    assert out.next_event() is None


@pytest.mark.parametrize("kind", ["bytes", "packets"])
def test_hard_volume_lifetimes_expire_each_direction(kind: str) -> None:
    size = len(INNER4)
    limits = (
        Lifetime(soft_bytes=2 * size, hard_bytes=3 * size)
        if kind == "bytes"
        else Lifetime(soft_packets=2, hard_packets=3)
    )
    out = OutboundSa(params(lifetime=limits), 0.0)
    sent = [out.encap(INNER4, 4, now=0.0) for _ in range(4)]
    assert [s is not None for s in sent] == [True, True, True, False]
    assert out.expired and out.counters.send_refused == 1
    assert [out.next_event(), out.next_event(), out.next_event()] == [
        RekeyRequested(0x1000, Direction.OUTBOUND, kind),
        SaExpired(0x1000, Direction.OUTBOUND, kind),
        None,
    ]
    sender = OutboundSa(params(), 0.0)
    inb = InboundSa(params(lifetime=limits), 0.0)
    for _ in range(3):
        assert inb.decap(sender.encap(INNER4, 4, now=0.0), 0.0) == (INNER4, 4)  # type: ignore[arg-type]
    assert inb.decap(sender.encap(INNER4, 4, now=0.0), 0.0) is Drop.EXPIRED  # type: ignore[arg-type]
    assert inb.counters.packets_in == 3 and inb.counters.expired_drops == 1
    assert [inb.next_event(), inb.next_event(), inb.next_event()] == [
        RekeyRequested(0x1000, Direction.INBOUND, kind),
        SaExpired(0x1000, Direction.INBOUND, kind),
        None,
    ]


# --- bad configuration ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"spi": 0}, "SPI must be an int in 256..2"),
        ({"spi": 255}, "SPI must be an int in 256..2"),
        ({"spi": 1 << 32}, "SPI must be an int in 256..2"),
        ({"src": "10.0.0.300"}, "SA src '10.0.0.300' is not an IP address"),
        ({"enc_key": b"short"}, "aes128gcm16 key||salt must be 20 octets, got 5"),
        (
            {"integrity": Integrity.HMAC_SHA2_256_128, "integ_key": b"k" * 32},
            "aes128gcm16 is an AEAD transform; it takes no integrity",
        ),
    ],
)
def test_bad_params_are_refused(kwargs: dict[str, object], message: str) -> None:
    base: dict[str, object] = {
        "spi": 0x1000,
        "encryption": Encryption.AES128GCM16,
        "enc_key": b"k" * 20,
    }
    base.update(kwargs)
    with pytest.raises(ValueError, match=message):
        OutboundSa(SaParams(**base), 0.0)  # type: ignore[arg-type]


def test_cbc_needs_integrity_and_right_key_lengths() -> None:
    with pytest.raises(ValueError, match="aes128 needs an integrity transform"):
        OutboundSa(SaParams(0x1000, Encryption.AES128, b"k" * 16), 0.0)
    with pytest.raises(ValueError, match="sha384 integrity key must be 48 octets, got 32"):
        OutboundSa(
            SaParams(0x1000, Encryption.AES256, b"k" * 32, Integrity.HMAC_SHA2_384_192, b"i" * 32),
            0.0,
        )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"soft_bytes": 10, "hard_bytes": 5}, "soft_bytes \\(10\\) exceeds hard_bytes \\(5\\)"),
        ({"hard_packets": 0}, "hard_packets must be positive"),
        ({"soft_seconds": -1.0}, "soft_seconds must be positive"),
    ],
)
def test_bad_lifetimes_are_refused(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Lifetime(**kwargs)  # type: ignore[arg-type]


def test_keys_stay_out_of_repr() -> None:
    p = params(Encryption.AES128, Integrity.HMAC_SHA2_256_128)
    text = repr(p)
    assert p.enc_key.hex() not in text and "enc_key" not in text
    assert "integ_key" not in text


def test_aead_objects_are_made_once_per_sa(monkeypatch: pytest.MonkeyPatch) -> None:
    from vpnfleet.agent.esp import transforms

    made: list[bytes] = []
    real = transforms.AESGCM

    def counting(key: bytes) -> transforms.AESGCM:
        made.append(key)
        return real(key)

    monkeypatch.setattr(transforms, "AESGCM", counting)
    out, inb = pair(params())
    for _ in range(20):
        packet = out.encap(INNER4, 4, now=0.0)
        assert packet is not None
        assert inb.decap(packet, now=0.0) == (INNER4, 4)
    assert len(made) == 2  # one per SA, none per packet


# --- wire layout checked with the primitives directly (not our own decap) --------------


@pytest.mark.parametrize("esn", [False, True], ids=["seq32", "esn"])
def test_cbc_hmac_layout_rfc4303_2_2_1(esn: bool) -> None:
    import hashlib
    import hmac

    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    p = params(Encryption.AES128, Integrity.HMAC_SHA2_256_128, esn=esn)
    out = OutboundSa(p, 0.0)
    out._seq = (5 << 32) + 6 if esn else 6
    packet = out.encap(INNER4, 4, now=0.0)
    assert packet is not None
    seq = out.seq
    assert packet[:8] == p.spi.to_bytes(4, "big") + (seq & 0xFFFFFFFF).to_bytes(4, "big")
    iv, ciphertext, icv = packet[8:24], packet[24:-16], packet[-16:]
    # The ICV covers SPI .. ciphertext, plus the high sequence half when ESN is on.
    covered = packet[:-16] + ((seq >> 32).to_bytes(4, "big") if esn else b"")
    assert icv == hmac.new(p.integ_key, covered, hashlib.sha256).digest()[:16]
    decryptor = Cipher(algorithms.AES(p.enc_key), modes.CBC(iv)).decryptor()
    plaintext = decryptor.update(ciphertext) + decryptor.finalize()
    pad = (-len(INNER4) - 2) % 16
    assert plaintext == INNER4 + bytes(range(1, pad + 1)) + bytes((pad, 4))


@pytest.mark.parametrize("encryption", [Encryption.AES256GCM16, Encryption.CHACHA20POLY1305])
def test_aead_esn_aad_is_spi_then_64_bit_sequence(encryption: Encryption) -> None:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

    p = params(encryption, esn=True)
    out = OutboundSa(p, 0.0)
    out._seq = (3 << 32) + 9
    packet = out.encap(INNER4, 4, now=0.0)
    assert packet is not None
    seq8 = out.seq.to_bytes(8, "big")
    assert packet[4:8] == seq8[4:] and packet[8:16] == seq8
    key, salt = p.enc_key[:-4], p.enc_key[-4:]
    aead = ChaCha20Poly1305(key) if encryption is Encryption.CHACHA20POLY1305 else AESGCM(key)
    # RFC 4106 section 5 / RFC 7634 section 4: AAD = SPI || Seq high || Seq low.
    plaintext = aead.decrypt(salt + seq8, packet[16:], p.spi.to_bytes(4, "big") + seq8)
    assert plaintext[: len(INNER4)] == INNER4
