"""Two data planes on an in-memory network with a fake clock, and packet builders."""

from __future__ import annotations

import ipaddress
import socket
import struct
from collections.abc import Iterable

from vpnfleet.agent.esp.sa import Lifetime, Mode, SaParams
from vpnfleet.agent.esp.spd import Action, Selector, SpdEntry, TrafficSelector
from vpnfleet.agent.esp.transforms import Encryption
from vpnfleet.agent.io.dataplane import DataPlane
from vpnfleet.agent.io.dataplane_model import Acquire, Encap
from vpnfleet.agent.io.memory import MemoryEndpoint, MemoryNetwork
from vpnfleet.agent.io.tun import MemoryTun

HOST_A, HOST_B = "192.0.2.1", "192.0.2.2"
SITE_A, SITE_B = "10.1.0.0/24", "10.2.0.0/24"
SITE6_A, SITE6_B = "fd00:a::/64", "fd00:b::/64"
POLICY, POLICY6 = "site", "site6"


def ipv4(src: str, dst: str, protocol: int, body: bytes) -> bytes:
    header = struct.pack(
        "!BBHHHBBH4s4s",
        0x45,
        0,
        20 + len(body),
        0,
        0,
        64,
        protocol,
        0,
        ipaddress.IPv4Address(src).packed,
        ipaddress.IPv4Address(dst).packed,
    )
    return header + body


def udp4(src: str, dst: str, sport: int = 1000, dport: int = 2000, size: int = 32) -> bytes:
    payload = bytes(range(size % 256)) * (size // 256 + 1)
    return ipv4(src, dst, 17, struct.pack("!HHHH", sport, dport, 8 + size, 0) + payload[:size])


def tcp4(src: str, dst: str, sport: int = 40000, dport: int = 5201) -> bytes:
    return ipv4(src, dst, 6, struct.pack("!HHIIBBHHH", sport, dport, 1, 0, 0x50, 0x10, 1, 0, 0))


def icmp4(src: str, dst: str) -> bytes:
    return ipv4(src, dst, 1, bytes.fromhex("0800f7ff00000000"))


def udp6(src: str, dst: str) -> bytes:
    body = struct.pack("!HHHH", 1000, 2000, 12, 0) + b"ping"
    return (
        struct.pack("!IHBB", 6 << 28, len(body), 17, 64)
        + ipaddress.IPv6Address(src).packed
        + ipaddress.IPv6Address(dst).packed
        + body
    )


def sa(spi: int, key_byte: int, mode: Mode = Mode.TUNNEL, lifetime: Lifetime | None = None):
    return SaParams(
        spi,
        Encryption.AES128GCM16,
        bytes([key_byte]) * 20,
        mode=mode,
        lifetime=lifetime or Lifetime(),
    )


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Node:
    def __init__(self, net: MemoryNetwork, clock: Clock, host: str, spd: Iterable[SpdEntry]):
        self.tun = MemoryTun()
        self.acquires: list[Acquire] = []
        self.events: list[tuple[str, object]] = []
        self.dp = DataPlane(
            self.tun,
            spd=spd,
            clock=clock,
            on_acquire=self.acquires.append,
            on_sa_event=lambda policy, event: self.events.append((policy, event)),
        )
        self.endpoint = MemoryEndpoint(net, lambda *_: None, self.dp.receive_esp, host=host)
        self.dp.attach(self.endpoint)

    def send(self, *packets: bytes) -> int:
        for packet in packets:
            self.tun.inject(packet)
        return self.dp.process_tun()


def spd_for(local: str, remote: str, local6: str, remote6: str) -> list[SpdEntry]:
    return [
        SpdEntry(Selector.parse(local, remote, "udp", None, "53"), Action.BYPASS, name="dns"),
        SpdEntry(Selector.parse(local, remote, "tcp", None, "23"), Action.DISCARD, name="telnet"),
        SpdEntry(Selector.parse(local, remote), Action.PROTECT, POLICY, name="site"),
        SpdEntry(Selector.parse(local6, remote6), Action.PROTECT, POLICY6, name="site6"),
    ]


class Pair:
    """A and B with the mirror-image SPD; ``connect`` installs matching SA pairs."""

    def __init__(self) -> None:
        self.net = MemoryNetwork()
        self.clock = Clock()
        self.a = Node(self.net, self.clock, HOST_A, spd_for(SITE_A, SITE_B, SITE6_A, SITE6_B))
        self.b = Node(self.net, self.clock, HOST_B, spd_for(SITE_B, SITE_A, SITE6_B, SITE6_A))

    def connect(
        self,
        a_to_b: SaParams,
        b_to_a: SaParams,
        policy: str = POLICY,
        *,
        encap: Encap = Encap.UDP,
        selectors: bool = True,
    ) -> None:
        a_ts = b_ts = ()
        if selectors:
            a_ts = (TrafficSelector.from_network(SITE_A if policy == POLICY else SITE6_A),)
            b_ts = (TrafficSelector.from_network(SITE_B if policy == POLICY else SITE6_B),)
        self.a.dp.install_child_sa(
            policy, b_to_a, a_to_b, HOST_B, encap=encap, local_ts=a_ts, remote_ts=b_ts
        )
        self.b.dp.install_child_sa(
            policy, a_to_b, b_to_a, HOST_A, encap=encap, local_ts=b_ts, remote_ts=a_ts
        )


class SocketTun:
    """A TUN stand-in with a real non-blocking fd (an AF_UNIX datagram pair keeps packet
    boundaries like a TUN fd), so the data plane's fd fast path runs without root."""

    def __init__(self, mtu: int = 1400) -> None:
        self.name = "sock0"
        self.mtu = mtu
        self.ours, self.host = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.ours.setblocking(False)
        self.host.setblocking(False)

    def fileno(self) -> int:
        return self.ours.fileno()

    def read(self) -> bytes | None:
        raise AssertionError("the fd path must not call read()")

    def write(self, packet: bytes) -> None:
        raise AssertionError("the fd path must not call write()")

    def close(self) -> None:
        self.ours.close()
        self.host.close()

    def inject(self, packet: bytes) -> None:
        self.host.send(packet)

    def delivered(self) -> list[bytes]:
        out = []
        while True:
            try:
                out.append(self.host.recv(65535))
            except BlockingIOError:
                return out
