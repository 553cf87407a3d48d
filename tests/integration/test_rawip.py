"""The raw IP socket raw ESP and raw AH are built on (``rawip.RawIpSocket``), on
loopback with IP protocol 253, which RFC 3692 section 2.1 sets aside for
experimentation, so no other traffic of the host reaches the sockets: runs longer than
one ``sendmmsg``, a lone packet over IPv6, what the kernel refuses counted, a socket
that cannot be set up closed and reported with its owner's error."""

from __future__ import annotations

import asyncio
import gc
import socket
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.support.lab import require_root
from vpnfleet.agent.io.rawah import RawAhError, RawAhSocket
from vpnfleet.agent.io.rawesp import RawEspError, RawEspSocket
from vpnfleet.agent.io.rawip import RawIpError, RawIpSocket
from vpnfleet.agent.io.udp import GSO_MAX_SEGMENTS, SOURCE_CACHE_LIMIT

pytestmark = pytest.mark.netns

EXPERIMENT = 253
"""RFC 3692 section 2.1: an IP protocol number for experimentation and testing."""
IPV4_HEADER = 20
"""A raw IPv4 socket hands the datagram over with its header, here without options."""


@dataclass
class Tx:
    tx_dropped: int = 0
    tx_errors: int = 0


def _open(host: str, counters: Tx | None = None) -> RawIpSocket:
    return RawIpSocket(EXPERIMENT, "test", counters or Tx(), host=host)


@pytest.fixture
def ipv4_pair() -> Iterator[tuple[RawIpSocket, RawIpSocket, Tx]]:
    require_root()
    counters = Tx()
    sender = _open("127.0.0.1", counters)
    receiver = _open("127.0.0.1")
    try:
        yield sender, receiver, counters
    finally:
        sender.close()
        receiver.close()


def _drain(sock: RawIpSocket) -> list[bytes]:
    got: list[bytes] = []
    while True:
        try:
            got += sock.receive()
        except BlockingIOError:
            return got


def test_a_run_longer_than_one_sendmmsg_leaves_whole_and_in_order(
    ipv4_pair: tuple[RawIpSocket, RawIpSocket, Tx],
) -> None:
    sender, receiver, counters = ipv4_pair
    run = [b"run " + n.to_bytes(2, "big") * 300 for n in range(GSO_MAX_SEGMENTS + 6)]
    assert sender.send_batch(run, "127.0.0.1") == len(run)
    assert (counters.tx_dropped, counters.tx_errors) == (0, 0)
    got = _drain(receiver)
    assert [packet[IPV4_HEADER:] for packet in got] == run
    assert {receiver.source_host(packet[12:16]) for packet in got} == {"127.0.0.1"}
    assert receiver.kernel_drops() == 0


def test_a_lone_packet_over_ipv6_and_its_sender() -> None:
    require_root()
    counters = Tx()
    sender, receiver = _open("::1", counters), _open("::1")
    try:
        assert sender.send_batch([], "::1") == 0
        assert sender.send(b"lone", "::1") == 1
        assert sender.send_batch([b"one of one"], "::1") == 1
        got = receiver.receive()
        # An IPv6 raw socket never hands over the IPv6 header; the sender's sockaddr
        # (sockaddr_in6: the address at octets 8 to 24) says who sent it.
        assert got == [b"lone", b"one of one"]
        assert [receiver.source_host(name[8:24]) for name in receiver.senders(2)] == ["::1"] * 2
        assert (counters.tx_dropped, counters.tx_errors) == (0, 0)
    finally:
        sender.close()
        receiver.close()


def test_what_the_kernel_refuses_is_counted_not_raised(
    ipv4_pair: tuple[RawIpSocket, RawIpSocket, Tx],
) -> None:
    sender, receiver, counters = ipv4_pair
    # One octet past the longest IPv4 datagram (RFC 791 section 3.1: total length is
    # 16 bits) once the kernel puts its header on: EMSGSIZE.
    too_long = bytes(65535 - IPV4_HEADER + 1)
    assert sender.send(too_long, "127.0.0.1") == 0
    assert counters.tx_errors == 1
    assert sender.send_batch([too_long, too_long, too_long], "127.0.0.1") == 0
    assert (counters.tx_dropped, counters.tx_errors) == (0, 4)
    assert sender.send(b"still sends", "127.0.0.1") == 1
    assert [packet[IPV4_HEADER:] for packet in _drain(receiver)] == [b"still sends"]


def test_a_socket_that_cannot_be_set_up_is_closed_and_says_why() -> None:
    require_root()
    # A socket left open is closed by the collector with a ResourceWarning "unclosed".
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        # 192.0.2.1 (TEST-NET-1, RFC 5737) is no address of this host: bind fails.
        with pytest.raises(RawIpError, match=r"cannot set up raw test socket on 192\.0\.2\.1"):
            _open("192.0.2.1")
        with pytest.raises(RawEspError, match=r"raw ESP socket on 192\.0\.2\.1"):
            RawEspSocket(lambda data, host: None, host="192.0.2.1")
        with pytest.raises(RawAhError, match=r"raw AH socket on 192\.0\.2\.1"):
            RawAhSocket(lambda packet, host: None, host="192.0.2.1")
        with pytest.raises(ValueError, match="socket buffer size must be positive"):
            RawIpSocket(EXPERIMENT, "test", Tx(), host="127.0.0.1", buffer_bytes=0)
        gc.collect()
    assert [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)] == []


def test_started_reader_runs_on_the_loop_and_close_is_final() -> None:
    require_root()
    woken: list[bytes] = []

    async def exchange(sock: RawIpSocket) -> None:
        readable = asyncio.Event()

        def read() -> None:
            woken.extend(packet[IPV4_HEADER:] for packet in _drain(sock))
            readable.set()

        sock.start(read)
        assert sock.send(b"wake up", "127.0.0.1") == 1
        await asyncio.wait_for(readable.wait(), 5.0)
        sock.close()

    sock = _open("127.0.0.1")
    try:
        asyncio.run(exchange(sock))
    finally:
        sock.close()
    assert woken == [b"wake up"]
    assert sock.fileno() == -1 and sock.kernel_drops() is None


def test_the_source_cache_stays_bounded_and_right() -> None:
    require_root()
    sock = _open("127.0.0.1")
    try:
        sources = [n.to_bytes(4, "big") for n in range(SOURCE_CACHE_LIMIT + 2)]
        names = [sock.source_host(source) for source in sources]
        assert names == [socket.inet_ntop(socket.AF_INET, source) for source in sources]
        assert len(sock._hosts) <= SOURCE_CACHE_LIMIT
    finally:
        sock.close()
