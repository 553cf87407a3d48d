"""The raw AH socket (IP protocol 51) on loopback, IPv4 and IPv6: what the AH SA built is
what leaves and what is read (IP_HDRINCL / IPV6_HDRINCL out; the whole IPv4 datagram,
or the rebuilt IPv6 header, in), so the ICV verifies on the receiving side; refusals and
malformed packets counted. Packets are told apart by a random SPI (a raw socket takes
every protocol-51 packet of the host). Between two namespaces of its own, scapy
(an independent AH, ``scapy.layers.ipsec``) sends IPv6 AH packets with hop-by-hop and
destination options headers before AH (RFC 4302 section 3.1.1, RFC 8200 section 4.1):
the socket hands the packet over octet for octet and our SA verifies it."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import secrets
import socket
import subprocess
import threading
from collections.abc import Callable, Iterator
from typing import TypeVar

import pytest

from tests.support.ah_pair import ah_params, udp6
from tests.support.dataplane_pair import ipv4, udp4
from tests.support.lab import require_root
from vpnfleet.agent.esp.ah import InboundAhSa, OutboundAhSa
from vpnfleet.agent.esp.sa import Mode
from vpnfleet.agent.esp.transforms import Integrity
from vpnfleet.agent.io.rawah import RawAhSocket, check_ipv4_ah, ipv6_chain, ipv6_header

pytestmark = pytest.mark.netns


async def _exchange(
    host: str, address: str, packets: list[bytes], spi: int
) -> tuple[RawAhSocket, list[tuple[bytes, str]]]:
    got: list[tuple[bytes, str]] = []
    done = asyncio.Event()
    spi_bytes = spi.to_bytes(4, "big")

    def on_ah(packet: bytes, sender: str) -> None:
        at = 20 if packet[0] >> 4 == 4 else 40
        if packet[at + 4 : at + 8] == spi_bytes:
            got.append((packet, sender))
            if len(got) == len(packets):
                done.set()

    sock = RawAhSocket(on_ah, host=host)
    sock.start()
    try:
        sock.send_ah_batch(packets, address)
        await asyncio.wait_for(done.wait(), 5.0)
    finally:
        sock.close()
    return sock, got


@pytest.mark.parametrize("integrity", [Integrity.HMAC_SHA2_256_128, Integrity.AES256GMAC])
async def test_ipv4_tunnel_packets_leave_and_arrive_as_built(integrity: Integrity) -> None:
    require_root()
    spi = 0x1000 + secrets.randbelow(1 << 30)
    params = ah_params(spi, 9, src="127.0.0.1", dst="127.0.0.1", integrity=integrity)
    out, inbound = OutboundAhSa(params, 0.0), InboundAhSa(params, 0.0)
    inner = [udp4("10.1.0.1", "10.2.0.1", sport=n) for n in range(3)]
    sent = [out.encap(p, 0.0) for p in inner]
    assert all(isinstance(p, bytes) for p in sent)
    sock, got = await _exchange("0.0.0.0", "127.0.0.1", sent, spi)  # type: ignore[arg-type]
    assert [g for g, _ in got] == sent  # the header the ICV covered, octet for octet
    assert {h for _, h in got} == {"127.0.0.1"}
    assert [inbound.decap(g, 0.0) for g, _ in got] == inner
    assert sock.counters.tx_ah == 3 and sock.counters.rx_ah >= 3


async def test_ipv4_transport_packet() -> None:
    require_root()
    spi = 0x1000 + secrets.randbelow(1 << 30)
    params = ah_params(spi, 10, Mode.TRANSPORT)
    out, inbound = OutboundAhSa(params, 0.0), InboundAhSa(params, 0.0)
    plain = udp4("127.0.0.1", "127.0.0.1")
    plain = plain[:4] + b"\x00\x07" + plain[6:]
    sealed = out.encap(plain, 0.0)
    assert isinstance(sealed, bytes)
    _, got = await _exchange("0.0.0.0", "127.0.0.1", [sealed], spi)
    opened = inbound.decap(got[0][0], 0.0)
    assert isinstance(opened, bytes) and opened[12:] == plain[12:]


async def test_ipv6_header_rebuilt_from_ancillary_data_verifies() -> None:
    require_root()
    spi = 0x1000 + secrets.randbelow(1 << 30)
    for mode in (Mode.TUNNEL, Mode.TRANSPORT):
        src = dst = "::1" if mode is Mode.TUNNEL else "*"
        params = ah_params(spi, 11, mode, src=src, dst=dst)
        out, inbound = OutboundAhSa(params, 0.0), InboundAhSa(params, 0.0)
        plain = udp6("::1", "::1", size=21)
        sealed = out.encap(plain, 0.0)
        assert isinstance(sealed, bytes)
        sock, got = await _exchange("::", "::1", [sealed], spi)
        (packet, sender), *_ = got
        assert sender == "::1"
        assert packet == sealed  # traffic class 0, flow label 0, hop limit 64 here
        assert inbound.decap(packet, 0.0) == plain
        assert sock.counters.tx_ah == 1


def test_ipv4_identification_zero_is_refused() -> None:
    require_root()
    sock = RawAhSocket(lambda packet, host: None)
    try:
        packet = ipv4("127.0.0.1", "127.0.0.1", 51, bytes.fromhex("11040000") + bytes(28))
        sock.send_ah(packet, "127.0.0.1")
        sock.send_ah_batch([packet, packet], "127.0.0.1")
        assert (sock.counters.tx_id_zero, sock.counters.tx_ah) == (3, 0)
    finally:
        sock.close()


def test_received_ipv4_checks() -> None:
    ah = bytes.fromhex("1104000000001234") + bytes(24)
    assert check_ipv4_ah(ipv4("10.0.0.1", "10.0.0.2", 51, ah)) == ""
    assert check_ipv4_ah(ipv4("10.0.0.1", "10.0.0.2", 51, ah[:11])) == "short"
    assert check_ipv4_ah(b"\x45" + bytes(10)) == "short"
    assert check_ipv4_ah(ipv4("10.0.0.1", "10.0.0.2", 50, ah)) == "malformed"
    zero_spi = ah[:4] + bytes(4) + ah[8:]
    assert check_ipv4_ah(ipv4("10.0.0.1", "10.0.0.2", 51, zero_spi)) == "malformed"
    assert check_ipv4_ah(b"\x65" + ipv4("10.0.0.1", "10.0.0.2", 51, ah)[1:]) == "malformed"


def test_rebuilt_ipv6_header_layout() -> None:
    # RFC 8200 section 3: version 6, traffic class split over octets 0-1, flow label 0.
    src = socket.inet_pton(socket.AF_INET6, "2001:db8::1")
    dst = socket.inet_pton(socket.AF_INET6, "2001:db8::2")
    header = ipv6_header(src, dst, 300, 17, 0xB8)
    assert header[:8] == bytes.fromhex("6b800000012c3311")
    assert header[8:] == src + dst


def test_extension_header_chain_from_control_messages() -> None:
    # RFC 8200 section 4: each header's first octet names the next, its second its
    # length in 8-octet units beyond the first 8; hop-by-hop only first.
    hbh = bytes((60, 0, 1, 4, 0, 0, 0, 0))
    dst = bytes((51, 0, 1, 4, 0, 0, 0, 0))
    assert ipv6_chain([]) == (51, b"")
    assert ipv6_chain([(0, hbh), (60, dst)]) == (0, hbh + dst)
    assert ipv6_chain([(60, dst), (0, hbh)]) == (0, hbh + dst)  # in packet order
    assert ipv6_chain([(60, dst)]) == (60, dst)
    long_dst = bytes((51, 1)) + bytes(14)
    assert ipv6_chain([(60, long_dst)]) == (60, long_dst)
    assert ipv6_chain([(60, long_dst[:8])]) is None  # length field says 16
    assert ipv6_chain([(0, hbh)]) is None  # names destination options, none follows
    assert ipv6_chain([(60, hbh)]) is None  # ends in no AH
    assert ipv6_chain([(0, bytes((0, 0, 1, 4, 0, 0, 0, 0))), (0, hbh)]) is None
    # The rebuilt header names the first of the chain.
    src = socket.inet_pton(socket.AF_INET6, "2001:db8::1")
    assert ipv6_header(src, src, 80, 64, 0, 0)[6] == 0


# -- extension headers before AH, from another namespace ----------------------------------

_CLONE_NEWNET = 0x40000000
T = TypeVar("T")


def _in_netns(netns: str, make: Callable[[], T]) -> T:
    """``make()`` run on a thread that entered ``netns`` (setns(2) moves only the calling
    thread), so the socket it opens lives there; the thread ends, the socket stays."""
    result: list[T] = []
    failure: list[BaseException] = []

    def run() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        fd = os.open(f"/run/netns/{netns}", os.O_RDONLY)
        try:
            if libc.setns(fd, _CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), f"setns {netns}")
            result.append(make())
        except BaseException as exc:  # handed to the caller
            failure.append(exc)
        finally:
            os.close(fd)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
    return result[0]


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


@contextlib.contextmanager
def _namespace_pair() -> Iterator[tuple[str, str]]:
    """Two namespaces joined by a veth, fd98::1 and fd98::2 (no duplicate address
    detection, so usable at once); both deleted at the end, also on failure."""
    tag = secrets.token_hex(3)
    a, b = f"vah-{tag}-a", f"vah-{tag}-b"
    try:
        _ip("netns", "add", a)
        _ip("netns", "add", b)
        _ip("link", "add", f"vaha{tag}", "netns", a, "type", "veth",
            "peer", "name", f"vahb{tag}", "netns", b)  # fmt: skip
        for ns, link, address in ((a, f"vaha{tag}", "fd98::1"), (b, f"vahb{tag}", "fd98::2")):
            _ip("-n", ns, "addr", "add", f"{address}/64", "dev", link, "nodad")
            _ip("-n", ns, "link", "set", link, "up")
        yield a, b
    finally:
        for ns in (a, b):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)
        left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True)
        assert f"vah-{tag}" not in left.stdout


async def test_ipv6_extension_headers_before_ah_arrive_whole() -> None:
    require_root()
    from scapy.layers.inet import UDP
    from scapy.layers.inet6 import HBHOptUnknown, IPv6, IPv6ExtHdrDestOpt, IPv6ExtHdrHopByHop
    from scapy.layers.ipsec import AH, SecurityAssociation
    from scapy.packet import Packet, Raw

    spi = 0x1000 + secrets.randbelow(1 << 30)
    params = ah_params(spi, 13, Mode.TRANSPORT)
    inbound = InboundAhSa(params, 0.0)
    theirs = SecurityAssociation(AH, spi=spi, auth_algo="SHA2-256-128", auth_key=params.integ_key)
    # Option 0x3e may change en route (zeroed for the ICV), 0x1e may not (covered);
    # RFC 8200 section 4.2, RFC 4302 section 3.3.3.1.2.1.
    options = [
        HBHOptUnknown(otype=0x3E, optdata=b"\x01\x02\x03\x04"),
        HBHOptUnknown(otype=0x1E, optdata=b"\x05\x06\x07\x08"),
    ]
    chains: list[list[Packet]] = [
        [],
        [IPv6ExtHdrHopByHop(options=options)],
        [IPv6ExtHdrDestOpt(options=options)],
    ]
    originals = []
    for n, chain in enumerate(chains):
        packet: Packet = IPv6(src="fd98::1", dst="fd98::2", hlim=64)
        for header in chain:
            packet = packet / header
        packet = packet / UDP(sport=4000 + n, dport=5000) / Raw(b"extension headers")
        originals.append(bytes(IPv6(bytes(packet))))
    sealed = [bytes(theirs.encrypt(IPv6(p), seq_num=n + 1)) for n, p in enumerate(originals)]
    # scapy put AH after the hop-by-hop or destination options header, as sent.
    assert [p[6] for p in sealed] == [51, 0, 60]

    got: list[tuple[bytes, str]] = []
    done = asyncio.Event()

    def on_ah(packet: bytes, sender: str) -> None:
        got.append((packet, sender))
        if len(got) == len(sealed):
            done.set()

    with _namespace_pair() as (a, b):
        sock = _in_netns(b, lambda: RawAhSocket(on_ah, host="::"))
        sender = _in_netns(a, lambda: socket.socket(socket.AF_INET6, socket.SOCK_RAW, 255))
        try:
            sock.start()
            for packet in sealed:
                sender.sendto(packet, ("fd98::2", 0))  # IPPROTO_RAW: the header as given
            await asyncio.wait_for(done.wait(), 5.0)
        finally:
            sender.close()
            sock.close()
    assert [sender for _, sender in got] == ["fd98::1"] * 3
    # Octet for octet what left (hop limit 64 and no flow label over one link).
    assert [packet for packet, _ in got] == sealed
    assert [inbound.decap(packet, 0.0) for packet, _ in got] == originals
    assert sock.counters.rx_ah == 3 and sock.counters.rx_malformed == 0
