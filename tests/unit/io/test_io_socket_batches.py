"""Batched socket I/O on loopback: ``recvmmsg`` / ``sendmmsg`` (agent/io/mmsg.py), the
sockets' kernel buffers, and the kernel's drop counter moving when the UDP endpoint is
flooded while nothing reads it (agent/io/socket_buffers.py). Raw ESP, which needs
CAP_NET_RAW, is tested in tests/integration/test_fast_path_netns.py."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator

import pytest

from vpnfleet.agent.io.mmsg import RecvBatch, SendBatch, sockaddr, source_of
from vpnfleet.agent.io.socket_buffers import SOCKET_BUFFER_BYTES, set_socket_buffers
from vpnfleet.agent.io.udp import RECV_BATCH, Address, UdpEndpoint

SMALL_BUFFER = 4096
"""The kernel doubles it and its minimum; either way a few datagrams fill it."""
FLOOD = 400


@pytest.fixture
def udp_pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    receiver.setblocking(False)
    sender.bind(("127.0.0.1", 0))
    yield receiver, sender
    receiver.close()
    sender.close()


def esp(spi: int, seq: int, size: int = 100) -> bytes:
    return spi.to_bytes(4, "big") + seq.to_bytes(4, "big") + bytes([seq & 0xFF]) * size


def test_recvmmsg_drains_many_datagrams_in_one_call_with_their_senders(
    udp_pair: tuple[socket.socket, socket.socket],
) -> None:
    receiver, sender = udp_pair
    sent = [esp(0x100, n, size=n * 20) for n in range(1, 11)]
    for data in sent:
        sender.sendto(data, receiver.getsockname())
    batch = RecvBatch(receiver, RECV_BATCH)
    try:
        got = batch.receive()
        assert got == sent
        assert {source_of(name) for name in batch.senders(len(got))} == {sender.getsockname()}
        with pytest.raises(BlockingIOError):
            batch.receive()
        # No more than the batch per call: the rest waits for the next one.
        for data in sent:
            sender.sendto(data, receiver.getsockname())
        small = RecvBatch(receiver, 4)
        assert small.receive() == sent[:4]
        assert small.receive() == sent[4:8]
        assert small.receive() == sent[8:]
        small.close()
        # A lone datagram after a full batch: its own length and sender, nothing stale.
        sender.sendto(sent[0], receiver.getsockname())
        assert batch.receive() == [sent[0]]
        assert [source_of(name) for name in batch.senders(1)] == [sender.getsockname()]
    finally:
        batch.close()


def test_sendmmsg_sends_a_run_in_order_unchanged(
    udp_pair: tuple[socket.socket, socket.socket],
) -> None:
    receiver, sender = udp_pair
    run = [esp(0x200, n, size=1400) for n in range(40)] + [esp(0x200, 40, size=3)]
    batch = SendBatch(sender, 64)
    try:
        name = sockaddr(socket.AF_INET, *receiver.getsockname())
        assert batch.send(run, name) == len(run)
        with pytest.raises(ValueError, match="65 packets for a batch of 64"):
            batch.send([b"x"] * 65, name)
    finally:
        batch.close()
    received = []
    while True:
        try:
            received.append(receiver.recv(65535))
        except BlockingIOError:
            break
    assert received == run


def test_sockaddr_round_trips_both_families() -> None:
    assert source_of(sockaddr(socket.AF_INET, "192.0.2.7", 4500)) == ("192.0.2.7", 4500)
    assert source_of(sockaddr(socket.AF_INET6, "2001:db8::9", 500)) == ("2001:db8::9", 500)
    assert len(sockaddr(socket.AF_INET, "192.0.2.7")) == 16
    assert len(sockaddr(socket.AF_INET6, "2001:db8::9")) == 28


def test_buffers_are_sized_past_the_sysctl_cap_and_bad_sizes_refused() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        set_socket_buffers(sock)
        # The kernel doubles the figure; as root the FORCE option passes rmem_max.
        expected = 2 * SOCKET_BUFFER_BYTES if os.geteuid() == 0 else 1
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) >= expected
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) >= expected
        with pytest.raises(ValueError, match="must be positive"):
            set_socket_buffers(sock, 0)


def test_udp_endpoint_counts_what_the_kernel_dropped_while_it_did_not_read() -> None:
    arrived: list[bytes] = []

    def on_esp(data: bytes, addr: Address) -> None:
        arrived.append(data)

    endpoint = UdpEndpoint(
        lambda *_: None,
        on_esp,
        host="127.0.0.1",
        ike_port=None,
        natt_port=0,
        buffer_bytes=SMALL_BUFFER,
    )
    flood = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        assert endpoint.kernel_drops() == 0
        # The reader is stalled (never started): loopback delivers synchronously, so
        # once sendto returns each datagram is either queued or dropped.
        for n in range(FLOOD):
            flood.sendto(esp(0x300, n, size=1000), ("127.0.0.1", endpoint.natt_port))
        dropped = endpoint.kernel_drops()
        assert dropped is not None and dropped > 0
        while True:
            before = len(arrived)
            endpoint._read_natt()
            if len(arrived) == before:
                break
        assert len(arrived) + dropped == FLOOD
        assert endpoint.counters.rx_esp == len(arrived)
    finally:
        flood.close()
        endpoint.close()
