"""The raw AH socket (IP protocol 51) on loopback, IPv4 and IPv6: what the AH SA built is
what leaves and what is read (IP_HDRINCL / IPV6_HDRINCL out; the whole IPv4 datagram,
or the rebuilt IPv6 header, in), so the ICV verifies on the receiving side; refusals and
malformed packets counted. Packets are told apart by a random SPI (a raw socket takes
every protocol-51 packet of the host)."""

from __future__ import annotations

import asyncio
import secrets
import socket

import pytest

from tests.support.ah_pair import ah_params, udp6
from tests.support.dataplane_pair import ipv4, udp4
from tests.support.lab import require_root
from vpnfleet.agent.esp.ah import InboundAhSa, OutboundAhSa
from vpnfleet.agent.esp.sa import Mode
from vpnfleet.agent.esp.transforms import Integrity
from vpnfleet.agent.io.rawah import RawAhSocket, check_ipv4_ah, ipv6_header

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
