"""Joining received TCP segments for a TUN device with virtio-net headers: which
segments join (the kernel's own TCP GRO rules), the headers of the joined packet, and
that everything else passes through unchanged and in order."""

from __future__ import annotations

import struct

from tests.support.dataplane_pair import udp4
from vpnfleet.agent.io.tun_offload import (
    MAX_SEGMENTS,
    VIRTIO_NET_HDR_F_NEEDS_CSUM,
    VIRTIO_NET_HDR_GSO_TCPV4,
    VNET_HDR_LEN,
    coalesce,
)

SRC, DST = bytes([10, 1, 0, 5]), bytes([10, 2, 0, 7])
ACK, PSH, SYN, FIN = 0x10, 0x08, 0x02, 0x01
TIMESTAMPS = bytes.fromhex("0101080a0000000100000002")  # NOP NOP TS (RFC 7323)


def segment(
    seq: int,
    size: int = 1000,
    *,
    flags: int = ACK,
    ack: int = 7,
    sport: int = 40000,
    options: bytes = TIMESTAMPS,
    ttl: int = 64,
    tos: int = 0,
    ip_flags: int = 0x4000,
    window: int = 512,
) -> bytes:
    thl = 20 + len(options)
    tcp = struct.pack(
        "!HHIIBBHHH", sport, 5201, seq, ack, (thl // 4) << 4, flags, window, 0x1234, 0
    )
    payload = bytes((seq + i) % 251 for i in range(size))
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, tos, 20 + thl + size, 1, ip_flags, ttl, 6, 0, SRC, DST)
    return ip + tcp + options + payload


def plain(packet: bytes) -> bytes:
    return bytes(VNET_HDR_LEN) + packet


def fold(total: int) -> int:
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def test_in_order_segments_of_one_flow_are_joined() -> None:
    segments = [segment(1000 + i * 1000) for i in range(3)]
    (frame,) = coalesce(segments)
    flags, gso_type, hdr_len, gso_size, csum_start, csum_offset = struct.unpack(
        "=BBHHHH", frame[:VNET_HDR_LEN]
    )
    assert (flags, gso_type) == (VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_TCPV4)
    assert (hdr_len, gso_size, csum_start, csum_offset) == (52, 1000, 20, 16)
    packet = frame[VNET_HDR_LEN:]
    assert int.from_bytes(packet[2:4], "big") == len(packet) == 52 + 3000
    assert fold(sum(struct.unpack("!10H", packet[:20]))) == 0xFFFF  # RFC 1071 check
    # The first segment's TCP header (sequence number, ACK, options) heads the packet...
    assert packet[20:52][:16] == segments[0][20:36] and packet[40:52] == TIMESTAMPS
    # ...with the folded pseudo-header sum over the joined TCP length as the partial
    # checksum (RFC 9293 section 3.1's pseudo-header: addresses, protocol, length).
    pseudo = sum(struct.unpack("!4H", SRC + DST)) + 6 + (32 + 3000)
    assert int.from_bytes(packet[36:38], "big") == fold(pseudo)
    assert packet[52:] == b"".join(s[52:] for s in segments)


def test_gaps_other_flows_and_other_protocols_break_runs_in_order() -> None:
    other_flow = segment(5000, sport=40001)
    datagram = udp4("10.1.0.5", "10.2.0.7")
    packets = [
        segment(1000),
        segment(2000),
        segment(3500),  # a gap: a new run starts
        other_flow,
        datagram,
        segment(4500),  # the first flow again, after others: not joined backwards
    ]
    frames = coalesce(packets)
    assert [f[1] for f in frames] == [VIRTIO_NET_HDR_GSO_TCPV4, 0, 0, 0, 0]
    assert frames[1:] == [plain(p) for p in packets[2:]]


def test_psh_or_a_shorter_segment_ends_a_run() -> None:
    packets = [
        segment(0),
        segment(1000, flags=ACK | PSH),
        segment(2000),
        segment(3000, size=400),
        segment(3400, size=400),
    ]
    first, second, third = coalesce(packets)
    assert struct.unpack("=H", first[4:6]) == (1000,) and first[VNET_HDR_LEN + 33] == ACK | PSH
    assert len(first) == VNET_HDR_LEN + 52 + 2000
    assert len(second) == VNET_HDR_LEN + 52 + 1400  # 1000 then the short 400 closes it
    assert third == plain(packets[4])


def test_segments_the_kernel_would_not_merge_stay_apart() -> None:
    cases = [
        (segment(0), segment(1000, ack=8)),  # another ACK number
        (segment(0), segment(1000, options=bytes.fromhex("0101080a0000000200000002"))),
        (segment(0), segment(1000, ttl=63)),
        (segment(0), segment(1000, tos=0x10)),
        (segment(0), segment(1000, ip_flags=0)),  # DF cleared
        (segment(0), segment(1000, size=1200)),  # longer than the run's segment size
        (segment(0, flags=ACK | SYN), segment(1000)),
        (segment(0), segment(1000, flags=ACK | FIN)),
        (segment(0, size=0), segment(0)),  # a pure ACK carries nothing to join
    ]
    for packets in cases:
        assert coalesce(list(packets)) == [plain(p) for p in packets], packets


def test_a_changed_window_ends_a_run() -> None:
    # The kernel's TCP GRO compares the whole word of data offset, flags and window
    # (all but CWR, FIN and PSH): a joined packet carries one window, so a segment that
    # announces another one starts a new run rather than having its window lost.
    packets = [segment(0), segment(1000), segment(2000, window=1024), segment(3000, window=1024)]
    first, second = coalesce(packets)
    assert len(first) == len(second) == VNET_HDR_LEN + 52 + 2000
    assert first[VNET_HDR_LEN + 34 : VNET_HDR_LEN + 36] == (512).to_bytes(2, "big")
    assert second[VNET_HDR_LEN + 34 : VNET_HDR_LEN + 36] == (1024).to_bytes(2, "big")


def test_runs_stop_at_the_segment_limit_and_sequence_numbers_wrap() -> None:
    start = (1 << 32) - 3 * 100
    packets = [segment((start + i * 100) % (1 << 32), 100) for i in range(MAX_SEGMENTS + 1)]
    first, second = coalesce(packets)
    assert len(first) == VNET_HDR_LEN + 52 + MAX_SEGMENTS * 100
    assert second == plain(packets[-1])


def test_runs_stay_under_64_kib() -> None:
    packets = [segment(i * 1400, 1400) for i in range(50)]
    frames = coalesce(packets)
    assert all(len(f) - VNET_HDR_LEN <= 65535 for f in frames)
    assert b"".join(f[VNET_HDR_LEN + 52 :] for f in frames) == b"".join(p[52:] for p in packets)
    assert len(frames) == 2


def test_short_and_odd_packets_pass_through() -> None:
    packets = [b"", b"\x45", b"\x60" + bytes(50), segment(0)[:45]]
    assert coalesce(packets) == [plain(p) for p in packets]


def test_a_lone_packet_is_written_as_it_came() -> None:
    # One packet per batch (a ping, an ACK, a lone segment): nothing to join with, so no
    # GSO header, whatever it is; the same frame as inside a batch that breaks its run.
    for packet in (segment(0), segment(0, flags=0x18), udp4("10.1.0.1", "10.2.0.1"), b""):
        assert coalesce([packet]) == [plain(packet)]
    assert coalesce([segment(0), udp4("10.1.0.1", "10.2.0.1")])[0] == plain(segment(0))
