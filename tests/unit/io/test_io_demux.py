"""The NAT-T port demultiplexer (RFC 3948 section 2.2 and 2.3) and the port-500 check,
as pure functions and through a real UdpEndpoint on loopback."""

from __future__ import annotations

import asyncio
import socket

import pytest

from vpnfleet.agent.io.keepalive import KeepaliveScheduler
from vpnfleet.agent.io.udp import (
    IKE_HEADER_LEN,
    NAT_KEEPALIVE,
    NON_ESP_MARKER,
    DatagramEndpoint,
    DatagramKind,
    UdpCounters,
    UdpEndpoint,
    UdpError,
    classify_ike,
    classify_natt,
)

# An IKE header (RFC 7296 section 3.1): SPIi, SPIr, next payload SA, version 2.0,
# IKE_SA_INIT (34), flags initiator, message ID 0, length 28.
IKE_MESSAGE = bytes.fromhex("010203040506070800000000000000002120220800000000") + (28).to_bytes(
    4, "big"
)
# ESP (RFC 4303 section 2): SPI 0x00001234, sequence number 1, some payload.
ESP_PACKET = bytes.fromhex("0000123400000001") + b"\xaa" * 40


def test_rfc3948_2_2_marker_then_ike_is_ike_without_marker() -> None:
    assert classify_natt(NON_ESP_MARKER + IKE_MESSAGE) == (DatagramKind.IKE, IKE_MESSAGE)


def test_rfc3948_2_2_nonzero_spi_is_esp_passed_whole() -> None:
    assert classify_natt(ESP_PACKET) == (DatagramKind.ESP, ESP_PACKET)


def test_esp_header_only_is_still_esp() -> None:
    # SPI + sequence number is the least the ESP core can judge; it drops it later.
    assert classify_natt(ESP_PACKET[:8])[0] is DatagramKind.ESP


def test_rfc3948_2_3_single_ff_is_keepalive() -> None:
    assert classify_natt(NAT_KEEPALIVE) == (DatagramKind.KEEPALIVE, b"")


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x00",
        b"\xfe",
        b"\xff\xff",
        b"\x00\x00\x00",
        NON_ESP_MARKER,
        NON_ESP_MARKER + IKE_MESSAGE[: IKE_HEADER_LEN - 1],
        ESP_PACKET[:7],
    ],
    ids=["empty", "zero", "fe", "ff-ff", "3-zeros", "marker-only", "marker-short-ike", "esp-7"],
)
def test_short_datagrams_on_natt_port(data: bytes) -> None:
    assert classify_natt(data) == (DatagramKind.SHORT, b"")


def test_port_500_takes_ike_without_marker() -> None:
    assert classify_ike(IKE_MESSAGE) == (DatagramKind.IKE, IKE_MESSAGE)


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        (NON_ESP_MARKER + IKE_MESSAGE, DatagramKind.MALFORMED),
        (NAT_KEEPALIVE, DatagramKind.MALFORMED),
        (IKE_MESSAGE[:27], DatagramKind.SHORT),
        (b"", DatagramKind.SHORT),
    ],
    ids=["marker-on-500", "keepalive-on-500", "short-ike", "empty"],
)
def test_port_500_drops(data: bytes, kind: DatagramKind) -> None:
    assert classify_ike(data) == (kind, b"")


class Sink:
    def __init__(self) -> None:
        self.ike: list[tuple[bytes, tuple[str, int], int]] = []
        self.esp: list[tuple[bytes, tuple[str, int]]] = []
        self.event = asyncio.Event()
        self.expect = 0

    def on_ike(self, data: bytes, addr: tuple[str, int], port: int) -> None:
        self.ike.append((data, addr, port))
        self._check()

    def on_esp(self, data: bytes, addr: tuple[str, int]) -> None:
        self.esp.append((data, addr))
        self._check()

    def _check(self) -> None:
        if len(self.ike) + len(self.esp) >= self.expect:
            self.event.set()


@pytest.fixture
def plain_socket() -> object:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(5)
    try:
        yield sock
    finally:
        sock.close()


async def _settle(endpoint: UdpEndpoint, total: int) -> None:
    """Wait until the endpoint has classified ``total`` datagrams (loopback is lossless)."""
    for _ in range(500):
        c = endpoint.counters
        seen = c.rx_ike + c.rx_esp + c.rx_keepalive + c.rx_short + c.rx_malformed
        if seen >= total:
            return
        await asyncio.sleep(0.002)
    raise AssertionError(f"endpoint saw {endpoint.counters} of {total} datagrams")


async def test_udp_endpoint_demultiplexes_every_kind(plain_socket: socket.socket) -> None:
    sink = Sink()
    endpoint = UdpEndpoint(sink.on_ike, sink.on_esp, host="127.0.0.1", ike_port=0, natt_port=0)
    try:
        endpoint.start()
        natt = ("127.0.0.1", endpoint.natt_port)
        assert endpoint.ike_port is not None
        ike = ("127.0.0.1", endpoint.ike_port)
        for data in (
            NON_ESP_MARKER + IKE_MESSAGE,
            ESP_PACKET,
            NAT_KEEPALIVE,
            b"\x00\x00",
            NON_ESP_MARKER,
            b"\x01\x02\x03\x04\x05",
        ):
            plain_socket.sendto(data, natt)
        for data in (IKE_MESSAGE, NON_ESP_MARKER + IKE_MESSAGE, b"\x01" * 10):
            plain_socket.sendto(data, ike)
        await _settle(endpoint, 9)
        me = plain_socket.getsockname()
        assert sink.ike == [(IKE_MESSAGE, me, endpoint.natt_port), (IKE_MESSAGE, me, ike[1])]
        assert sink.esp == [(ESP_PACKET, me)]
        assert endpoint.counters == UdpCounters(
            rx_ike=2, rx_esp=1, rx_keepalive=1, rx_short=4, rx_malformed=1
        )
    finally:
        endpoint.close()


async def test_udp_endpoint_sends_marker_on_4500_only(plain_socket: socket.socket) -> None:
    sink = Sink()
    endpoint = UdpEndpoint(sink.on_ike, sink.on_esp, host="127.0.0.1", ike_port=0, natt_port=0)
    try:
        endpoint.start()
        peer = plain_socket.getsockname()
        endpoint.send_ike(IKE_MESSAGE, peer, via_4500=True)
        endpoint.send_ike(IKE_MESSAGE, peer, via_4500=False)
        endpoint.send_esp(ESP_PACKET, peer)
        endpoint.send_keepalive(peer)
        got = [plain_socket.recvfrom(2048) for _ in range(4)]
        assert got == [
            (NON_ESP_MARKER + IKE_MESSAGE, ("127.0.0.1", endpoint.natt_port)),
            (IKE_MESSAGE, ("127.0.0.1", endpoint.ike_port)),
            (ESP_PACKET, ("127.0.0.1", endpoint.natt_port)),
            (NAT_KEEPALIVE, ("127.0.0.1", endpoint.natt_port)),
        ]
        c = endpoint.counters
        assert (c.tx_ike, c.tx_esp, c.tx_keepalive, c.tx_errors) == (2, 1, 1, 0)
    finally:
        endpoint.close()


async def test_send_failure_is_counted_not_raised() -> None:
    sink = Sink()
    endpoint = UdpEndpoint(sink.on_ike, sink.on_esp, host="127.0.0.1", ike_port=None, natt_port=0)
    try:
        # A datagram larger than UDP allows fails with EMSGSIZE.
        endpoint.send_esp(b"\x01" * 70000, ("127.0.0.1", 9))
        assert endpoint.counters.tx_errors == 1
        assert endpoint.counters.tx_esp == 0
    finally:
        endpoint.close()


async def test_ike_on_500_without_socket_is_a_clear_error() -> None:
    sink = Sink()
    endpoint = UdpEndpoint(sink.on_ike, sink.on_esp, host="127.0.0.1", ike_port=None, natt_port=0)
    try:
        with pytest.raises(UdpError, match="no IKE port 500 socket"):
            endpoint.send_ike(IKE_MESSAGE, ("127.0.0.1", 9), via_4500=False)
    finally:
        endpoint.close()


def test_bind_conflict_names_the_address() -> None:
    sink = Sink()
    first = UdpEndpoint(sink.on_ike, sink.on_esp, host="127.0.0.1", ike_port=None, natt_port=0)
    try:
        with pytest.raises(UdpError, match=rf"cannot bind UDP 127\.0\.0\.1:{first.natt_port}"):
            UdpEndpoint(
                sink.on_ike, sink.on_esp, host="127.0.0.1", ike_port=None, natt_port=first.natt_port
            )
    finally:
        first.close()


def test_bad_bind_address_is_refused() -> None:
    sink = Sink()
    with pytest.raises(UdpError, match=r"cannot bind UDP 192\.0\.2\.77:0"):
        UdpEndpoint(sink.on_ike, sink.on_esp, host="192.0.2.77", ike_port=None, natt_port=0)


class RecordingEndpoint:
    """Just enough of a DatagramEndpoint to watch the keepalive scheduler."""

    def __init__(self) -> None:
        self.counters = UdpCounters()
        self.active: set[tuple[str, int]] = set()
        self.keepalives: list[tuple[str, int]] = []

    def start(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        pass

    def send_ike(self, data: bytes, addr: tuple[str, int], via_4500: bool) -> None:
        self.active.add(addr)

    def send_esp(self, data: bytes, addr: tuple[str, int]) -> None:
        self.active.add(addr)

    def send_keepalive(self, addr: tuple[str, int]) -> None:
        self.keepalives.append(addr)

    def take_active_peers(self) -> set[tuple[str, int]]:
        active, self.active = self.active, set()
        return active

    def close(self) -> None:
        pass


def test_rfc3948_4_keepalive_only_to_idle_peers() -> None:
    endpoint = RecordingEndpoint()
    scheduler = KeepaliveScheduler(endpoint, interval=20)
    busy, idle = ("192.0.2.1", 4500), ("192.0.2.2", 4500)
    scheduler.add_peer(busy)
    scheduler.add_peer(idle)
    endpoint.send_esp(b"x", busy)
    assert scheduler.tick() == [idle]
    # No traffic in the next interval: both are idle now.
    assert scheduler.tick() == [busy, idle]
    scheduler.remove_peer(idle)
    endpoint.send_ike(b"x", busy, via_4500=True)
    assert scheduler.tick() == []
    assert endpoint.keepalives == [idle, busy, idle]


def test_keepalive_interval_must_be_positive() -> None:
    with pytest.raises(ValueError, match="keepalive interval must be positive, got 0"):
        KeepaliveScheduler(RecordingEndpoint(), interval=0)


async def test_keepalive_scheduler_runs_on_the_loop(plain_socket: socket.socket) -> None:
    sink = Sink()
    real = UdpEndpoint(sink.on_ike, sink.on_esp, host="127.0.0.1", ike_port=None, natt_port=0)
    # Annotated so mypy checks the real endpoint against the shared interface.
    endpoint: DatagramEndpoint = real
    scheduler = KeepaliveScheduler(endpoint, interval=0.05)
    try:
        scheduler.add_peer(plain_socket.getsockname())
        scheduler.start()
        plain_socket.setblocking(False)
        loop = asyncio.get_running_loop()
        got = [await asyncio.wait_for(loop.sock_recvfrom(plain_socket, 16), 2) for _ in range(2)]
        assert got == [(NAT_KEEPALIVE, ("127.0.0.1", real.natt_port))] * 2
    finally:
        scheduler.stop()
        endpoint.close()


async def test_udp_endpoint_on_ipv6_loopback() -> None:
    sink = Sink()
    sink.expect = 2
    endpoint = UdpEndpoint(sink.on_ike, sink.on_esp, host="::1", ike_port=None, natt_port=0)
    peer = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    try:
        peer.bind(("::1", 0))
        endpoint.start()
        peer.sendto(NON_ESP_MARKER + IKE_MESSAGE, ("::1", endpoint.natt_port))
        peer.sendto(ESP_PACKET, ("::1", endpoint.natt_port))
        await asyncio.wait_for(sink.event.wait(), 5)
        # Addresses are (host, port) on both families: flow info and scope are dropped.
        me = peer.getsockname()[:2]
        assert sink.ike == [(IKE_MESSAGE, me, endpoint.natt_port)]
        assert sink.esp == [(ESP_PACKET, me)]
    finally:
        peer.close()
        endpoint.close()
