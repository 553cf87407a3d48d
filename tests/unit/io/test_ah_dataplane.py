"""AH child SAs in the data plane (RFC 4302): two data planes joined by an in-memory IP
link for protocol 51, on a fake clock. Tunnel and transport mode, IPv4 and IPv6, rekey
make-before-break, removal, refusals and garbage."""

from __future__ import annotations

import random

import pytest

from tests.support.ah_pair import (
    HOST6_A,
    HOST6_B,
    HOST_A,
    HOST_B,
    HOSTS,
    HOSTS6,
    TUNNEL,
    AhPair,
    ah_params,
    udp6,
)
from tests.support.dataplane_pair import icmp4, ipv4, sa, tcp4, udp4
from vpnfleet.agent.esp.ah import OutboundAhSa
from vpnfleet.agent.esp.ah_icv import IPPROTO_AH
from vpnfleet.agent.esp.sa import Mode
from vpnfleet.agent.esp.transforms import Integrity
from vpnfleet.agent.io.dataplane_model import Encap

INNER_A, INNER_B = "10.1.0.5", "10.2.0.7"


def outer(packet: bytes) -> tuple[int, str, str, int]:
    """Version, source, destination and protocol of an IPv4 packet on the link."""
    src = ".".join(str(b) for b in packet[12:16])
    dst = ".".join(str(b) for b in packet[16:20])
    return packet[0] >> 4, src, dst, packet[9]


def without_checksum(packet: bytes) -> bytes:
    """An IPv4 packet with its header checksum left out (the builders leave it 0; the
    transport-mode receiver writes the right one)."""
    return packet[:10] + packet[12:]


def sa_stats(pair_node: object, policy: str) -> list[dict[str, object]]:
    stats = pair_node.dp.stats()  # type: ignore[attr-defined]
    return [
        {"spi": s.spi, "dir": s.direction, "proto": s.protocol, "mode": s.mode, **s.counters}
        for s in stats.sas
        if s.policy == policy
    ]


@pytest.mark.parametrize("integrity", [Integrity.HMAC_SHA2_256_128, Integrity.AES128GMAC])
def test_tunnel_ipv4_both_ways(integrity: Integrity) -> None:
    pair = AhPair()
    pair.tunnel(integrity=integrity)
    packets = [udp4(INNER_A, INNER_B), tcp4(INNER_A, INNER_B), icmp4(INNER_A, INNER_B)]
    assert pair.a.send(*packets) == 3
    assert [outer(p) for p in pair.link.queue_packets()] == [(4, HOST_A, HOST_B, 51)] * 3
    assert pair.link.pump() == 3
    assert pair.b.received() == packets
    back = udp4(INNER_B, INNER_A, sport=2000, dport=1000)
    pair.b.send(back)
    pair.link.pump()
    assert pair.a.received() == [back]
    out_a = next(s for s in sa_stats(pair.a, TUNNEL) if s["dir"] == "out")
    in_b = next(s for s in sa_stats(pair.b, TUNNEL) if s["dir"] == "in")
    assert (out_a["proto"], out_a["mode"], out_a["packets_out"]) == ("ah", "tunnel", 3)
    assert (in_b["proto"], in_b["spi"], in_b["packets_in"]) == ("ah", 0xA100, 3)
    counters = pair.b.dp.stats().counters
    assert (counters["ah_rx"], counters["ah_rx_dropped"], counters["esp_rx"]) == (3, 0, 0)
    assert counters["tun_tx"] == 3 and pair.a.dp.stats().counters["esp_tx"] == 3


def test_tunnel_carries_ipv6_inside_ipv4() -> None:
    pair = AhPair()
    pair.a.dp.update_spd(
        [*pair.a.dp.spd.entries, *_six_site_spd("fd00:a::/64", "fd00:b::/64", "site6in4")]
    )
    pair.b.dp.update_spd(
        [*pair.b.dp.spd.entries, *_six_site_spd("fd00:b::/64", "fd00:a::/64", "site6in4")]
    )
    ab = ah_params(0xC100, 3, src=HOST_A, dst=HOST_B)
    ba = ah_params(0xC200, 4, src=HOST_B, dst=HOST_A)
    pair.a.dp.install_child_sa("site6in4", ba, ab, HOST_B, encap=Encap.RAW)
    pair.b.dp.install_child_sa("site6in4", ab, ba, HOST_A, encap=Encap.RAW)
    packet = udp6("fd00:a::5", "fd00:b::7")
    pair.a.send(packet)
    (wire,) = pair.link.queue_packets()
    assert outer(wire) == (4, HOST_A, HOST_B, 51)
    assert wire[20] == 41  # AH's next header: IPv6 (RFC 4302 section 2.1)
    pair.link.pump()
    assert pair.b.received() == [packet]


def _six_site_spd(local: str, remote: str, policy: str) -> list[object]:
    from vpnfleet.agent.esp.spd import Action, Selector, SpdEntry

    return [SpdEntry(Selector.parse(local, remote), Action.PROTECT, policy, name=policy)]


def test_transport_ipv4_keeps_the_header_and_inserts_ah() -> None:
    pair = AhPair()
    pair.connect(HOSTS, ah_params(0xD100, 5, Mode.TRANSPORT), ah_params(0xD200, 6, Mode.TRANSPORT))
    packet = udp4(HOST_A, HOST_B)
    packet = packet[:4] + b"\x12\x34" + packet[6:]
    pair.a.send(packet)
    (wire,) = pair.link.queue_packets()
    assert outer(wire) == (4, HOST_A, HOST_B, IPPROTO_AH)
    assert wire[4:6] == b"\x12\x34"  # the packet's own identification, in the ICV
    assert wire[20] == 17  # AH's next header: the UDP that follows
    pair.link.pump()
    (got,) = pair.b.received()
    assert without_checksum(got) == without_checksum(packet)
    assert sa_stats(pair.b, HOSTS)[0]["mode"] == "transport"


def test_transport_ipv4_identification_zero_is_numbered_before_ah() -> None:
    # The kernel fills in an identification of 0 on a raw IP_HDRINCL send (man 7 raw),
    # and the identification is in the ICV: the data plane numbers it first.
    pair = AhPair()
    pair.connect(HOSTS, ah_params(0xD100, 5, Mode.TRANSPORT), ah_params(0xD200, 6, Mode.TRANSPORT))
    packet = udp4(HOST_A, HOST_B)
    assert packet[4:6] == b"\x00\x00"
    pair.a.send(packet, packet)
    first, second = pair.link.queue_packets()
    assert first[4:6] != b"\x00\x00" and second[4:6] != b"\x00\x00"
    assert first[4:6] != second[4:6]
    pair.link.pump()
    got = pair.b.received()
    assert [without_checksum(g)[6:] for g in got] == [without_checksum(packet)[6:]] * 2
    assert [g[4:6] for g in got] == [first[4:6], second[4:6]]


def test_tunnel_outer_identification_is_never_zero() -> None:
    out = OutboundAhSa(ah_params(0xE100, 7, src=HOST_A, dst=HOST_B), 0.0)
    inner = udp4(INNER_A, INNER_B)
    for seq in (1, 0xFFFF, 0x10000, 0x1FFFE, 0x1FFFF, 0x20000):
        sealed = out.seal_with_seq(seq, inner)
        assert isinstance(sealed, bytes)
        assert sealed[4:6] != b"\x00\x00", seq


def test_transport_ipv6() -> None:
    pair = AhPair()
    pair.connect(HOSTS6, ah_params(0xF100, 8, Mode.TRANSPORT), ah_params(0xF200, 9, Mode.TRANSPORT))
    packet = udp6(HOST6_A, HOST6_B, size=13)
    pair.a.send(packet)
    (wire,) = pair.link.queue_packets()
    assert wire[0] >> 4 == 6 and wire[6] == IPPROTO_AH
    # 12 + 16 octets of HMAC-SHA2-256-128 ICV: 28, padded to 64 bits over IPv6 (2.6).
    assert len(wire) == len(packet) + 32
    pair.link.pump()
    assert pair.b.received() == [packet]
    reply = udp6(HOST6_B, HOST6_A)
    pair.b.send(reply)
    pair.link.pump()
    assert pair.a.received() == [reply]


def test_selectors_are_checked_on_the_way_in() -> None:
    pair = AhPair()
    pair.tunnel()
    # B's SA for A's traffic only accepts 10.1.0.0/24 -> 10.2.0.0/24; A's own SPD would
    # never send this, so seal it with A's outbound SA directly.
    route = pair.a.dp.sas.route(TUNNEL)
    stray = udp4("10.9.0.1", INNER_B)
    wire = route.encap(stray, 4, pair.clock.now)  # type: ignore[misc]
    assert wire is not None
    pair.b.dp.receive_ah(wire, HOST_A)
    pair.b.dp.end_receive_batch()
    assert pair.b.received() == []
    assert pair.b.dp.stats().inbound_drops == {"policy": 1}


def test_no_raw_socket_refuses_and_counts() -> None:
    pair = AhPair()
    pair.tunnel()
    pair.a.dp._raw_ah = None  # as if the agent had no raw AH socket
    pair.a.dp.sas._bind_send(pair.a.dp.sas.route(TUNNEL))
    pair.a.send(udp4(INNER_A, INNER_B))
    assert pair.link.queue == []
    assert pair.a.dp.stats().counters["encap_refused"] == 1


def test_rekey_make_before_break_loses_nothing_in_flight() -> None:
    pair = AhPair()
    pair.tunnel()
    pair.a.send(udp4(INNER_A, INNER_B, sport=1))  # sealed with the old SA, in flight
    old_in_flight = pair.link.queue
    pair.link.queue = []
    ab = ah_params(0xA200, 11, src=HOST_A, dst=HOST_B)
    ba = ah_params(0xB200, 12, src=HOST_B, dst=HOST_A)
    # B (the responder) installs first and keeps sending on the old SA until A's new
    # SA shows up; A switches at once.
    pair.b.dp.rekey_child_sa(TUNNEL, ab, ba, switch_outbound=False)
    pair.a.dp.rekey_child_sa(TUNNEL, ba, ab)
    pair.a.send(udp4(INNER_A, INNER_B, sport=2))
    (new_wire,) = pair.link.queue_packets()
    assert new_wire[24:28] == (0xA200).to_bytes(4, "big")
    pair.b.send(udp4(INNER_B, INNER_A, sport=3))
    (b_wire,) = pair.link.queue_packets()[1:]
    assert b_wire[24:28] == (0xB100).to_bytes(4, "big")  # B still on its old SA
    pair.link.queue = old_in_flight + pair.link.queue
    pair.link.pump()
    assert [p[20:22] for p in pair.b.received()] == [b"\x00\x01", b"\x00\x02"]
    assert len(pair.a.received()) == 1
    # The packet on its new inbound SA switched B's outbound (the peer holds it).
    assert pair.b.dp.stats().counters["outbound_activated_by_peer"] == 1
    pair.b.send(udp4(INNER_B, INNER_A, sport=4))
    (b_new,) = pair.link.queue_packets()
    assert b_new[24:28] == (0xB200).to_bytes(4, "big")
    pair.link.pump()
    assert len(pair.a.received()) == 1
    # After the grace period the old inbound SAs are gone.
    pair.clock.now += 10
    pair.a.dp.handle_timer()
    pair.b.dp.handle_timer()
    assert sorted(s["spi"] for s in sa_stats(pair.b, TUNNEL) if s["dir"] == "in") == [0xA200]


def test_remove_traps_again() -> None:
    pair = AhPair()
    pair.tunnel()
    pair.a.dp.remove_child_sa(TUNNEL)
    pair.a.send(udp4(INNER_A, INNER_B))
    assert pair.link.queue == []
    assert [a.policy for a in pair.a.acquires] == [TUNNEL]
    assert sa_stats(pair.a, TUNNEL) == []


def test_install_refusals_change_nothing() -> None:
    pair = AhPair()
    ab = ah_params(0xA100, 1, src=HOST_A, dst=HOST_B)
    ba = ah_params(0xB100, 2, src=HOST_B, dst=HOST_A)
    dp = pair.a.dp
    with pytest.raises(ValueError, match=r"^AH cannot cross NAT: "):
        dp.install_child_sa(TUNNEL, ba, ab, HOST_B)  # UDP encapsulation by default
    with pytest.raises(ValueError, match="one SA of the pair is AH, the other ESP"):
        dp.install_child_sa(TUNNEL, sa(0xB100, 2), ab, HOST_B, encap=Encap.RAW)
    with pytest.raises(ValueError, match="inbound SA is transport mode"):
        dp.install_child_sa(
            TUNNEL, ah_params(0xB100, 2, Mode.TRANSPORT), ab, HOST_B, encap=Encap.RAW
        )
    assert dp.stats().sas == [] and dp.policies() == []
    pair.tunnel()
    with pytest.raises(ValueError, match="a rekey cannot change the protocol"):
        dp.rekey_child_sa(TUNNEL, sa(0xB300, 2), sa(0xA300, 1))
    with pytest.raises(ValueError, match="a rekey cannot change the mode"):
        dp.rekey_child_sa(
            TUNNEL, ah_params(0xB300, 2, Mode.TRANSPORT), ah_params(0xA300, 1, Mode.TRANSPORT)
        )
    assert sorted(s["spi"] for s in sa_stats(pair.a, TUNNEL)) == [0xA100, 0xB100]


def test_garbage_is_counted_and_never_raises() -> None:
    pair = AhPair()
    pair.tunnel()
    pair.a.send(udp4(INNER_A, INNER_B))
    (good,) = pair.link.queue_packets()
    pair.link.queue = []
    rng = random.Random(4302)
    garbage = [b"", b"\x45", good[:30], bytes(60), ipv4(HOST_A, HOST_B, 51, bytes(40))]
    garbage.append(good[:24] + b"\x00\x00\x0f\xff" + good[28:])  # unknown SPI
    tampered = bytearray(good)
    tampered[-1] ^= 1  # the inner payload, inside the ICV
    garbage.append(bytes(tampered))
    for _ in range(200):
        mutated = bytearray(good)
        for _ in range(rng.randint(1, 4)):
            mutated[rng.randrange(len(mutated))] = rng.randrange(256)
        garbage.append(bytes(mutated[: rng.randint(0, len(mutated))]))
    for packet in garbage:
        pair.b.dp.receive_ah(packet, HOST_A)
    pair.b.dp.end_receive_batch()
    counters = pair.b.dp.stats().counters
    assert counters["internal_errors"] == 0
    delivered = pair.b.received()
    # A mutated packet that still verifies changed only mutable fields: the very inner.
    assert all(p == udp4(INNER_A, INNER_B) for p in delivered)
    assert counters["ah_rx"] == len(garbage)
    assert counters["ah_rx_dropped"] == len(garbage) - len(delivered)
    drops = pair.b.dp.stats().inbound_drops
    assert drops["unknown_spi"] >= 1 and drops["integrity"] >= 1 and drops["truncated"] >= 1
    # The real packet still opens afterwards (nothing above moved the replay window).
    pair.b.dp.receive_ah(good, HOST_A)
    pair.b.dp.end_receive_batch()
    assert pair.b.received() == ([udp4(INNER_A, INNER_B)] if not delivered else [])


def test_esp_packets_do_not_reach_ah_sas() -> None:
    # One inbound SPI space, two protocols: an ESP packet naming an AH SA's SPI is an
    # unknown SPI for ESP.
    pair = AhPair()
    pair.tunnel()
    pair.b.dp.receive_esp((0xA100).to_bytes(4, "big") + bytes(40), (HOST_A, 4500))
    pair.b.dp.end_receive_batch()
    assert pair.b.dp.stats().inbound_drops == {"unknown_spi": 1}
    assert pair.b.received() == []


def test_tunnel_over_ipv6() -> None:
    pair = AhPair()
    ab = ah_params(0xF300, 13, src=HOST6_A, dst=HOST6_B, integrity=Integrity.AES256GMAC)
    ba = ah_params(0xF400, 14, src=HOST6_B, dst=HOST6_A, integrity=Integrity.AES256GMAC)
    pair.connect(HOSTS6, ab, ba)
    packet = udp6(HOST6_A, HOST6_B, size=40)
    pair.a.send(packet)
    (wire,) = pair.link.queue_packets()
    assert wire[0] >> 4 == 6 and wire[6] == IPPROTO_AH and wire[40] == 41
    # 12 + 8 (IV) + 16 (tag) = 36 octets, padded to 40 over IPv6 (RFC 4543 section 4).
    assert len(wire) == 40 + 40 + len(packet)
    pair.link.pump()
    assert pair.b.received() == [packet]
