"""The data plane on an in-memory TUN and network with a fake clock: traffic both ways,
SPD verdicts and their counters, trap acquires, garbage input, bad install arguments."""

from __future__ import annotations

import asyncio
import os
import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.support.dataplane_pair import (
    HOST_A,
    HOST_B,
    POLICY,
    POLICY6,
    SITE_A,
    SITE_B,
    Pair,
    SocketTun,
    icmp4,
    ipv4,
    sa,
    tcp4,
    udp4,
    udp6,
)
from vpnfleet.agent.esp.sa import InboundSa, Mode, OutboundSa
from vpnfleet.agent.esp.sad import InboundRemoved
from vpnfleet.agent.esp.spd import Action, Selector, SpdEntry, TrafficSelector
from vpnfleet.agent.io.dataplane import DataPlane
from vpnfleet.agent.io.dataplane_model import Encap, ipv4_header
from vpnfleet.agent.io.inbound_check import InboundCheck
from vpnfleet.agent.io.memory import MemoryEndpoint, MemoryNetwork
from vpnfleet.agent.io.outbound_path import TUN_BATCH
from vpnfleet.agent.io.udp import UdpEndpoint

A1, A2, B1 = "10.1.0.5", "10.1.0.6", "10.2.0.7"


@pytest.fixture
def pair() -> Pair:
    p = Pair()
    p.connect(sa(0x1001, 1), sa(0x2002, 2))
    return p


def test_packets_cross_both_ways(pair: Pair) -> None:
    out = [udp4(A1, B1), tcp4(A2, B1), icmp4(A1, B1), udp4(A1, B1, size=1300)]
    assert pair.a.send(*out) == 4
    assert pair.net.pump() == 4
    assert pair.b.tun.delivered == out
    back = [udp4(B1, A1, 2000, 1000), tcp4(B1, A2, 5201, 40000)]
    pair.b.send(*back)
    pair.net.pump()
    assert pair.a.tun.delivered == back
    a, b = pair.a.dp.stats(), pair.b.dp.stats()
    assert a.counters["tun_rx"] == 4 and a.counters["esp_tx"] == 4
    assert a.counters["esp_rx"] == 2 and a.counters["tun_tx"] == 2
    assert b.counters["tun_tx"] == 4
    outbound = {s.spi: s for s in a.sas if s.direction == "out"}
    assert outbound[0x1001].counters["packets_out"] == 4
    assert outbound[0x1001].counters["bytes_out"] == sum(map(len, out))
    assert outbound[0x1001].peer == HOST_B
    inbound = {s.spi: s for s in b.sas if s.direction == "in"}
    assert inbound[0x1001].counters["packets_in"] == 4
    assert inbound[0x1001].counters["integrity_failures"] == 0


def test_ipv6_uses_its_own_policy(pair: Pair) -> None:
    pair.connect(sa(0x3003, 3), sa(0x4004, 4), POLICY6)
    packet = udp6("fd00:a::1", "fd00:b::1")
    pair.a.send(packet)
    pair.net.pump()
    assert pair.b.tun.delivered == [packet]
    assert pair.a.dp.policies() == [POLICY, POLICY6]


def test_bypass_discard_and_no_policy_are_dropped_and_counted(pair: Pair) -> None:
    pair.a.send(
        udp4(A1, B1, dport=53),  # bypass: should never have been routed into the TUN
        tcp4(A1, B1, dport=23),  # discard
        udp4(A1, "10.9.0.1"),  # no SPD entry
        b"\x45\x00",  # not a packet
    )
    assert pair.net.pump() == 0
    counters = pair.a.dp.stats().counters
    assert counters["bypass_misrouted"] == 1
    assert counters["discarded"] == 1
    assert counters["no_policy"] == 1
    assert counters["unparsable"] == 1
    assert counters["esp_tx"] == 0


def test_trap_acquires_once_per_interval() -> None:
    pair = Pair()
    pair.a.send(udp4(A1, B1), udp4(A2, B1, 5, 6))
    assert [a.policy for a in pair.a.acquires] == [POLICY]
    assert pair.a.acquires[0].packet.dst == int.from_bytes(bytes([10, 2, 0, 7]), "big")
    pair.clock.now += 0.5
    pair.a.send(udp4(A1, B1))
    assert len(pair.a.acquires) == 1
    pair.clock.now += 0.6
    pair.a.send(udp4(A1, B1))
    assert len(pair.a.acquires) == 2
    counters = pair.a.dp.stats().counters
    assert counters["no_sa"] == 4 and counters["acquires"] == 2
    # Once SAs are in, the same flow (already in the flow cache) goes out.
    pair.connect(sa(0x1001, 1), sa(0x2002, 2))
    pair.a.send(udp4(A1, B1))
    pair.net.pump()
    assert len(pair.b.tun.delivered) == 1


def test_removed_child_sa_traps_again(pair: Pair) -> None:
    pair.a.send(udp4(A1, B1))
    pair.a.dp.remove_child_sa(POLICY)
    pair.a.send(udp4(A1, B1))
    assert len(pair.a.acquires) == 1
    assert pair.a.dp.policies() == []
    assert pair.a.dp.stats().sas == []
    assert pair.a.events == [(POLICY, InboundRemoved(0x2002, "deleted"))]


def test_garbage_datagrams_are_counted_and_nothing_raises(pair: Pair) -> None:
    sender = MemoryEndpoint(pair.net, lambda *_: None, lambda *_: None, host="192.0.2.66")
    valid = pair.a.dp.sad.outbound(POLICY)
    assert valid is not None
    sealed = valid.encap(udp4(A1, B1), 4, pair.clock.now)
    assert sealed is not None
    tampered = sealed[:-1] + bytes([sealed[-1] ^ 1])
    garbage = [
        os.urandom(3),  # too short for anything
        bytes.fromhex("0000dead00000001") + os.urandom(60),  # unknown SPI
        bytes.fromhex("00001001"),  # our SPI alone: the endpoint's demux drops it
        sealed[:20],  # our SPI, too short for its transform
        tampered,  # ICV fails
        sealed,  # fine once...
        sealed,  # ...and then a replay
    ]
    for data in garbage:
        sender.send_raw(data, (HOST_B, 4500))
    pair.net.pump()
    stats = pair.b.dp.stats()
    assert stats.inbound_drops == {"unknown_spi": 1, "truncated": 1, "integrity": 1, "replayed": 1}
    assert stats.counters["esp_rx_dropped"] == 4
    assert stats.counters["tun_tx"] == 1
    assert stats.counters["internal_errors"] == 0
    inbound = {s.spi: s for s in stats.sas if s.direction == "in"}[0x1001].counters
    assert inbound["integrity_failures"] == 1 and inbound["replay_drops"] == 1
    assert pair.b.endpoint.counters.rx_short == 2


def test_inbound_packet_outside_the_selectors_is_dropped(pair: Pair) -> None:
    # The peer's SA carries a packet from an address its selectors do not cover.
    rogue = pair.a.dp.sad.outbound(POLICY)
    assert rogue is not None
    # Cached flows (UDP and ICMP, twice each), a protocol the cache does not key (GRE),
    # and one allowed flow.
    gre = ipv4(A1, "10.2.1.1", 47, bytes(4))
    inner = [udp4("10.66.0.1", B1), udp4("10.66.0.1", B1), icmp4(A1, "10.2.1.1")]
    inner += [icmp4(A1, "10.2.1.1"), gre, udp4(A1, B1)]
    for packet in inner:
        sealed = rogue.encap(packet, 4, pair.clock.now)
        assert sealed is not None
        pair.a.endpoint.send_esp(sealed, (HOST_B, 4500))
    pair.net.pump()
    stats = pair.b.dp.stats()
    assert stats.inbound_drops == {"policy": 5}
    assert pair.b.tun.delivered == [udp4(A1, B1)]
    inbound = {s.spi: s for s in stats.sas if s.direction == "in"}[0x1001].counters
    assert inbound["policy_drops"] == 5 and inbound["packets_in"] == 6


def test_the_inbound_check_judges_the_pings_of_an_address_pair_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """ICMP's type and code are not selectors: echoes of one address pair share one
    cached verdict, as the outbound flow cache keys them; a refused pair stays refused
    and counted, and a pair the cache has not seen is judged on its own."""
    judged: list[bytes] = []
    judge = InboundCheck._judge

    def counting(self: InboundCheck, packet: bytes) -> bool:
        judged.append(packet)
        return judge(self, packet)

    monkeypatch.setattr(InboundCheck, "_judge", counting)
    inbound = InboundSa(sa(0x1001, 1), 0.0)
    local, remote = TrafficSelector.from_network(SITE_B), TrafficSelector.from_network(SITE_A)
    check = InboundCheck(inbound, [local], [remote])

    def echo(src: str, dst: str, ident: int, seq: int) -> bytes:
        body = struct.pack("!BBHHH", 8, 0, 0, ident, seq) + bytes(56)
        return ipv4(src, dst, 1, body)

    echoes = [echo(A1, B1, 7, seq) for seq in range(1, 4)] + [echo(A1, B1, 8, 1)]
    assert all(check.allows(packet) for packet in echoes)
    assert judged == echoes[:1]
    rogue = [echo(A1, "10.2.1.1", 7, seq) for seq in range(1, 3)]
    assert not any(check.allows(packet) for packet in rogue)
    assert judged == [echoes[0], rogue[0]]
    assert inbound.counters.policy_drops == 2
    # Another source in the selectors: its own verdict.
    assert check.allows(echo(A2, B1, 7, 1)) and len(judged) == 3


def test_transport_mode_rebuilds_the_ipv4_header() -> None:
    pair = Pair()
    for node, local, peer, sa_in, sa_out in (
        (pair.a, HOST_A, HOST_B, sa(0x6006, 6, Mode.TRANSPORT), sa(0x5005, 5, Mode.TRANSPORT)),
        (pair.b, HOST_B, HOST_A, sa(0x5005, 5, Mode.TRANSPORT), sa(0x6006, 6, Mode.TRANSPORT)),
    ):
        node.dp.install_child_sa(POLICY, sa_in, sa_out, peer, local=local)
    packet = udp4(A1, B1)
    pair.a.send(packet)
    pair.net.pump()
    (delivered,) = pair.b.tun.delivered
    # Addresses are the outer ones; the upper-layer segment is carried unchanged.
    assert delivered[12:16] == bytes([192, 0, 2, 1]) and delivered[16:20] == bytes([192, 0, 2, 2])
    assert delivered[9] == 17 and delivered[20:] == packet[20:]
    assert delivered[:20] == ipv4_header(delivered[12:16], delivered[16:20], 17, packet[20:])


def test_ipv4_header_checksum_verifies() -> None:
    header = ipv4_header(bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2]), 6, b"x" * 40)
    total = sum(int.from_bytes(header[i : i + 2], "big") for i in range(0, 20, 2))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    assert total == 0xFFFF  # RFC 1071: the sum over a correct header is all ones


@dataclass
class FdPair:
    """Two data planes on the TUN fd path (SocketTun), joined by an in-memory network,
    with one child SA pair installed."""

    net: MemoryNetwork
    tun_a: SocketTun
    tun_b: SocketTun
    a: DataPlane
    b: DataPlane


@pytest.fixture
def fd_pair() -> Iterator[FdPair]:
    net = MemoryNetwork()
    tun_a, tun_b = SocketTun(), SocketTun()
    try:
        a = DataPlane(tun_a, spd=Pair().a.dp.spd.entries, clock=lambda: 1.0)
        b = DataPlane(tun_b, spd=Pair().b.dp.spd.entries, clock=lambda: 1.0)
        a.attach(MemoryEndpoint(net, lambda *_: None, a.receive_esp, host=HOST_A))
        b.attach(MemoryEndpoint(net, lambda *_: None, b.receive_esp, host=HOST_B))
        a.install_child_sa(POLICY, sa(0x2002, 2), sa(0x1001, 1), HOST_B)
        b.install_child_sa(POLICY, sa(0x1001, 1), sa(0x2002, 2), HOST_A)
        yield FdPair(net, tun_a, tun_b, a, b)
    finally:
        tun_a.close()
        tun_b.close()


def test_fd_fast_path_batches_and_caches_flows(fd_pair: FdPair) -> None:
    net, tun_a, tun_b, a = fd_pair.net, fd_pair.tun_a, fd_pair.tun_b, fd_pair.a
    packets = [udp4(A1, B1, sport=1000 + i % 3) for i in range(TUN_BATCH + 10)]
    packets += [udp4(A1, B1, dport=53), b"\x45" + bytes(9), icmp4(A1, B1)]
    for packet in packets:
        tun_a.inject(packet)
    assert a.process_tun() == TUN_BATCH  # one wakeup reads at most a batch
    assert a.process_tun() == len(packets) - TUN_BATCH
    assert a.process_tun() == 0
    net.pump()
    expected = [p for p in packets if p[22:24] != b"\x00\x35" and len(p) > 10]
    assert tun_b.delivered() == expected
    counters = a.stats().counters
    assert counters["tun_rx"] == len(packets)
    assert counters["esp_tx"] == len(expected)
    assert counters["bypass_misrouted"] == 1 and counters["unparsable"] == 1
    # Three UDP flows, DNS, and the ICMP address pair.
    assert a.outbound.cached_flows() == 5


def echo(src: str, dst: str, ident: int, seq: int) -> bytes:
    """An ICMP echo request (type 8): identifier and sequence number differ per ping."""
    body = bytes([8, 0, 0, 0]) + ident.to_bytes(2, "big") + seq.to_bytes(2, "big")
    packed = [bytes(map(int, address.split("."))) for address in (src, dst)]
    return ipv4_header(*packed, 1, body) + body


def test_pings_take_the_flow_cache_until_the_spd_changes(fd_pair: FdPair) -> None:
    net, tun_a, tun_b, a = fd_pair.net, fd_pair.tun_a, fd_pair.tun_b, fd_pair.a
    lookups = []
    lookup = a.spd.lookup
    a.spd.lookup = lambda info, inbound=False: lookups.append(info) or lookup(info, inbound)  # type: ignore[method-assign]
    # A ping's identifier and sequence number change with each echo: one SPD
    # lookup for the address pair, the rest from the flow cache.
    pings = [echo(A1, B1, 7, seq) for seq in range(3)] + [echo(A1, B1, 8, 0)]
    for packet in pings:
        tun_a.inject(packet)
        a.process_tun()
    net.pump()
    assert tun_b.delivered() == pings
    assert len(lookups) == 1
    # Another address pair is a flow of its own; a new SPD empties the cache, so a
    # policy that now discards ICMP takes effect on the next ping.
    tun_a.inject(echo(A2, B1, 7, 0))
    a.process_tun()
    assert len(lookups) == 2
    no_icmp = SpdEntry(Selector.parse("10.1.0.0/24", "10.2.0.0/24", "icmp"), Action.DISCARD)
    a.update_spd([no_icmp, *a.spd.entries])
    tun_a.inject(echo(A1, B1, 7, 3))
    a.process_tun()
    net.pump()
    assert tun_b.delivered() == [echo(A2, B1, 7, 0)]
    assert a.stats().counters["discarded"] == 1


def test_a_received_packet_reaches_the_tun_within_the_socket_wakeup() -> None:
    # attach() has the UDP socket say when its read batch ends: what it decrypted is
    # written then, not on a later event-loop iteration (a ping's reply would wait for
    # one), and no callback is left for the loop (even a cancelled one costs it a turn).
    loop = asyncio.new_event_loop()
    tun = SocketTun()
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    dp = DataPlane(tun, spd=Pair().b.dp.spd.entries, clock=lambda: 1.0)
    endpoint = UdpEndpoint(
        lambda *_: None, dp.receive_esp, host="127.0.0.1", ike_port=None, natt_port=0
    )
    try:
        dp.attach(endpoint)
        dp.install_child_sa(POLICY, sa(0x1001, 1), sa(0x2002, 2), HOST_A)
        dp.start(loop)  # never run: nothing may wait for a later iteration
        scheduled: list[object] = []
        loop.call_soon = lambda *args, **_: scheduled.append(args)  # type: ignore[method-assign,assignment]
        seal = OutboundSa(sa(0x1001, 1), 1.0).encap
        pings = [echo(A1, B1, 7, seq) for seq in range(3)]
        for packet in pings:
            sealed = seal(packet, 4, 1.0)
            assert sealed is not None
            sender.sendto(sealed, ("127.0.0.1", endpoint.natt_port))
        endpoint._read_natt()  # what the loop calls when the socket is readable
        assert tun.delivered() == pings
        assert dp.stats().counters["tun_tx"] == 3
        assert scheduled == []
    finally:
        dp.stop()
        endpoint.close()
        sender.close()
        tun.close()
        loop.close()


def test_what_the_kernel_answers_during_a_tun_write_is_sent_in_the_same_wakeup() -> None:
    # A TUN write hands the packet to the kernel, which answers a ping (or ACKs TCP) in
    # the write itself: the data plane reads the TUN right after writing, so the reply
    # leaves in the socket read's wake-up, not on the loop's next turn.
    loop = asyncio.new_event_loop()
    tun = SocketTun()
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    peer.bind(("127.0.0.1", 0))
    peer.settimeout(0.5)
    dp = DataPlane(tun, spd=Pair().b.dp.spd.entries, clock=lambda: 1.0)
    endpoint = UdpEndpoint(
        lambda *_: None, dp.receive_esp, host="127.0.0.1", ike_port=None, natt_port=0
    )
    try:
        dp.attach(endpoint)
        dp.install_child_sa(POLICY, sa(0x1001, 1), sa(0x2002, 2), peer.getsockname())
        dp.start(loop)  # never run
        request = OutboundSa(sa(0x1001, 1), 1.0).encap(echo(A1, B1, 7, 1), 4, 1.0)
        assert request is not None
        tun.inject(echo(B1, A1, 7, 1))  # the reply, as the kernel queues it in the write
        peer.sendto(request, ("127.0.0.1", endpoint.natt_port))
        endpoint._read_natt()  # what the loop calls when the socket is readable
        assert tun.delivered() == [echo(A1, B1, 7, 1)]
        reply = peer.recv(2048)
        assert reply[:4] == (0x2002).to_bytes(4, "big")
        assert dp.stats().counters["tun_rx"] == 1
    finally:
        dp.stop()
        endpoint.close()
        peer.close()
        tun.close()
        loop.close()


def test_a_wakeups_first_packet_leaves_before_the_tun_is_read_again() -> None:
    # A ping's echo (or a lone ACK) of a cached flow is sent as soon as it is sealed: the
    # read that finds the TUN empty, and raises, comes after it. The sender below queues
    # one more packet while that echo is sent; that the drain still reads it in the same
    # wake-up shows the send came first. A run after the first packet leaves in one
    # batch, in order.
    tun = SocketTun()
    dp = DataPlane(tun, spd=Pair().a.dp.spd.entries, clock=lambda: 1.0)
    calls: list[tuple[str, int]] = []

    class Raw:
        def send_esp(self, data: bytes, addr: str) -> None:
            calls.append(("send", int.from_bytes(data[4:8], "big")))
            if calls == [("send", 2)]:
                tun.inject(echo(A1, B1, 7, 3))

        def send_esp_batch(self, packets: list[bytes], addr: str) -> None:
            calls.append(("batch", len(packets)))

    try:
        dp.attach(raw=Raw())
        dp.install_child_sa(POLICY, sa(0x2002, 2), sa(0x1001, 1), HOST_B, encap=Encap.RAW)
        tun.inject(echo(A1, B1, 7, 1))  # the flow's first packet fills the flow cache
        assert dp.process_tun() == 1 and calls == [("send", 1)]
        calls.clear()
        tun.inject(echo(A1, B1, 7, 2))
        assert dp.process_tun() == 2
        assert calls == [("send", 2), ("batch", 1)]
        calls.clear()
        for seq in range(4, 9):
            tun.inject(echo(A1, B1, 7, seq))
        assert dp.process_tun() == 5
        assert calls == [("send", 4), ("batch", 4)]
        assert dp.stats().counters["esp_tx"] == 8
    finally:
        tun.close()


@pytest.mark.parametrize(
    ("peer", "encap", "message"),
    [
        ("not-an-address", Encap.UDP, "peer address 'not-an-address' is not an IP address"),
        (("192.0.2.2", 0), Encap.UDP, r"peer must be \(host, port 1..65535\)"),
        (("192.0.2.2", 4500), Encap.RAW, "raw ESP needs a bare peer host"),
        ("192.0.2.2", "gre", "encap must be one of"),
    ],
)
def test_bad_peer_is_refused(peer: object, encap: object, message: str) -> None:
    pair = Pair()
    with pytest.raises(ValueError, match=message):
        pair.a.dp.install_child_sa(POLICY, sa(0x2002, 2), sa(0x1001, 1), peer, encap=encap)  # type: ignore[arg-type]
    assert pair.a.dp.stats().sas == []


def test_bad_install_and_rekey_arguments_are_refused(pair: Pair) -> None:
    dp = pair.a.dp
    with pytest.raises(ValueError, match="needs the policy name"):
        dp.install_child_sa("", sa(0x7007, 7), sa(0x7008, 7), HOST_B)
    with pytest.raises(ValueError, match="inbound SA is tunnel mode, outbound is transport"):
        dp.install_child_sa("x", sa(0x7007, 7), sa(0x7008, 7, Mode.TRANSPORT), HOST_B)
    with pytest.raises(ValueError, match="transport mode needs the local address"):
        dp.install_child_sa(
            "x", sa(0x7007, 7, Mode.TRANSPORT), sa(0x7008, 7, Mode.TRANSPORT), HOST_B
        )
    with pytest.raises(ValueError, match="already installed for policy 'site'"):
        dp.install_child_sa("other", sa(0x2002, 2), sa(0x7008, 7), HOST_B)
    with pytest.raises(ValueError, match="policy 'nope' has no child SA to rekey"):
        dp.rekey_child_sa("nope", sa(0x7007, 7), sa(0x7008, 7))
    with pytest.raises(ValueError, match="inbound SPI 0x00002002 is already installed"):
        dp.rekey_child_sa(POLICY, sa(0x2002, 2), sa(0x7008, 7))
    with pytest.raises(ValueError, match="a rekey cannot change the mode"):
        dp.rekey_child_sa(POLICY, sa(0x7007, 7, Mode.TRANSPORT), sa(0x7008, 7, Mode.TRANSPORT))
    with pytest.raises(ValueError, match="policy 'nope' has no child SA"):
        dp.remove_child_sa("nope")
    with pytest.raises(ValueError, match="acquire interval must be >= 0"):
        DataPlane(pair.a.tun, acquire_interval=-1)
    # Nothing changed: the original pair still carries traffic.
    assert sorted((s.spi, s.direction) for s in dp.stats().sas) == [(0x1001, "out"), (0x2002, "in")]
    pair.a.send(udp4(A1, B1))
    pair.net.pump()
    assert len(pair.b.tun.delivered) == 1


def test_reinstalling_a_policy_replaces_its_sas(pair: Pair) -> None:
    pair.connect(sa(0x1101, 11), sa(0x2202, 12))
    spis = sorted((s.spi, s.direction) for s in pair.a.dp.stats().sas)
    assert spis == [(0x1101, "out"), (0x2202, "in")]
    pair.a.send(udp4(A1, B1))
    pair.net.pump()
    assert len(pair.b.tun.delivered) == 1


def test_reinstalling_the_same_spis_keeps_checking_selectors(pair: Pair) -> None:
    # The removal of the old pair is reported before the new one, with the same inbound
    # SPI, is in place: the new SA's selector check (RFC 4301 section 5.2) must survive it.
    pair.connect(sa(0x1001, 1), sa(0x2002, 2))
    rogue = pair.a.dp.sad.outbound(POLICY)
    assert rogue is not None
    for packet in (udp4("10.66.0.1", B1), udp4(A1, B1)):
        sealed = rogue.encap(packet, 4, pair.clock.now)
        assert sealed is not None
        pair.a.endpoint.send_esp(sealed, (HOST_B, 4500))
    pair.net.pump()
    assert pair.b.dp.stats().inbound_drops == {"policy": 1}
    assert pair.b.tun.delivered == [udp4(A1, B1)]


def test_raw_esp_without_a_socket_is_counted(pair: Pair) -> None:
    dp = pair.a.dp
    dp.install_child_sa(POLICY, sa(0x2102, 21), sa(0x1201, 22), HOST_B, encap=Encap.RAW)
    pair.a.send(udp4(A1, B1))
    assert dp.stats().counters["encap_refused"] == 1
    sent: list[tuple[bytes, str]] = []

    class Raw:
        def send_esp(self, data: bytes, addr: str) -> None:
            sent.append((data, addr))

        def send_esp_batch(self, packets: list[bytes], addr: str) -> None:
            sent.extend((data, addr) for data in packets)

    dp.attach(raw=Raw())
    pair.a.send(udp4(A1, B1))
    assert [addr for _, addr in sent] == [HOST_B]
    # What raw ESP receives goes through the same SAD.
    pair.b.dp.install_child_sa(POLICY, sa(0x1201, 22), sa(0x2102, 21), HOST_A, encap=Encap.RAW)
    pair.b.dp.receive_raw_esp(sent[0][0], HOST_A)
    pair.b.dp.end_receive_batch()
    assert len(pair.b.tun.delivered) == 1


def test_handler_errors_do_not_stop_traffic() -> None:
    pair = Pair()

    def broken(_: object) -> None:
        raise RuntimeError("handler bug")

    pair.a.dp.on_acquire = broken
    pair.a.send(udp4(A1, B1))
    assert pair.a.dp.stats().counters["internal_errors"] == 1


def test_udp_gso_batch_arrives_as_separate_datagrams() -> None:
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    receiver.settimeout(2)
    endpoint = UdpEndpoint(
        lambda *_: None, lambda *_: None, host="127.0.0.1", ike_port=None, natt_port=0
    )
    try:
        # GSO's rule: equal lengths, the last one shorter.
        packets = [bytes([i]) * 8 + bytes(992) for i in range(1, 6)] + [b"\x09" * 300]
        endpoint.send_esp_batch(packets, receiver.getsockname())
        got = [receiver.recv(65535) for _ in packets]
        assert got == packets
        assert endpoint.counters.tx_esp == len(packets)
        assert endpoint._gso  # one GSO send, not the one-by-one fallback
        assert endpoint.counters.tx_errors == endpoint.counters.tx_dropped == 0
    finally:
        endpoint.close()
        receiver.close()
