"""Two data planes joined by an in-memory IP link for AH (protocol 51), on a fake clock.

The link stands in for ``rawah.RawAhSocket`` on both hosts: what a data plane sends is
queued as the whole IP packet it built and delivered to the data plane of the packet's
destination address on :meth:`AhLink.pump`, with the sender's address, as the raw
socket reads it. A hook may rewrite or drop packets in flight.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Callable, Iterable

from vpnfleet.agent.esp.ah import AhParams
from vpnfleet.agent.esp.sa import Lifetime, Mode
from vpnfleet.agent.esp.spd import Action, Selector, SpdEntry, TrafficSelector
from vpnfleet.agent.esp.transforms import Integrity
from vpnfleet.agent.io.dataplane import DataPlane
from vpnfleet.agent.io.dataplane_model import Acquire, Encap
from vpnfleet.agent.io.rawah import RawAhCounters
from vpnfleet.agent.io.tun import MemoryTun

from .dataplane_pair import Clock

HOST_A, HOST_B = "192.0.2.1", "192.0.2.2"
HOST6_A, HOST6_B = "2001:db8::1", "2001:db8::2"
SITE_A, SITE_B = "10.1.0.0/24", "10.2.0.0/24"
TUNNEL, TUNNEL6, HOSTS, HOSTS6 = "site", "site6", "hosts", "hosts6"

Rewrite = Callable[[bytes], bytes | None]
"""Given a packet in flight, the packet to deliver, or None to lose it."""


def ah_params(
    spi: int,
    key_byte: int,
    mode: Mode = Mode.TUNNEL,
    *,
    src: str = "*",
    dst: str = "*",
    integrity: Integrity = Integrity.HMAC_SHA2_256_128,
    lifetime: Lifetime | None = None,
) -> AhParams:
    return AhParams(
        spi,
        integrity,
        bytes([key_byte]) * integrity.key_length,
        mode=mode,
        src=src,
        dst=dst,
        lifetime=lifetime or Lifetime(),
    )


def udp6(src: str, dst: str, size: int = 4) -> bytes:
    body = struct.pack("!HHHH", 1000, 2000, 8 + size, 0) + bytes(range(size))
    return (
        struct.pack("!IHBB", 6 << 28, len(body), 17, 64)
        + ipaddress.IPv6Address(src).packed
        + ipaddress.IPv6Address(dst).packed
        + body
    )


class AhLink:
    """The raw AH sockets of every host, as one wire."""

    def __init__(self) -> None:
        self.planes: dict[str, DataPlane] = {}
        self.queue: list[tuple[str, str, bytes]] = []
        """(source host, destination host, packet) in send order."""
        self.sent: list[bytes] = []
        """Every packet ever sent, as it left."""
        self.rewrite: Rewrite | None = None

    def queue_packets(self) -> list[bytes]:
        """The packets waiting for :meth:`pump`, in send order."""
        return [packet for _, _, packet in self.queue]

    def socket(self, host: str) -> LinkSocket:
        return LinkSocket(self, host)

    def pump(self) -> int:
        """Deliver what is queued; returns how many packets were delivered."""
        delivered = 0
        while self.queue:
            batch, self.queue = self.queue, []
            for src, dst, packet in batch:
                if self.rewrite is not None:
                    changed = self.rewrite(packet)
                    if changed is None:
                        continue
                    packet = changed
                plane = self.planes.get(dst)
                if plane is None:
                    continue
                plane.receive_ah(packet, src)
                delivered += 1
            for plane in self.planes.values():
                plane.end_receive_batch()
        return delivered


class LinkSocket:
    """One host's raw AH socket on an :class:`AhLink` (``engine.RawAhChannel``'s shape)."""

    def __init__(self, link: AhLink, host: str) -> None:
        self.link = link
        self.host = host
        self.counters = RawAhCounters()
        self.on_batch_end: Callable[[], None] | None = None

    def start(self, loop: object = None) -> None:
        pass

    def kernel_drops(self) -> int | None:
        return None

    def close(self) -> None:
        pass

    def send_ah(self, packet: bytes, addr: str) -> None:
        self.counters.tx_ah += 1
        self.link.sent.append(packet)
        self.link.queue.append((self.host, addr, packet))

    def send_ah_batch(self, packets: list[bytes], addr: str) -> None:
        for packet in packets:
            self.send_ah(packet, addr)


class AhNode:
    def __init__(self, link: AhLink, clock: Clock, hosts: Iterable[str], spd: list[SpdEntry]):
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
        for host in hosts:
            link.planes[host] = self.dp
            self.dp.attach(raw_ah=link.socket(host))

    def send(self, *packets: bytes) -> int:
        for packet in packets:
            self.tun.inject(packet)
        return self.dp.process_tun()

    def received(self) -> list[bytes]:
        """What the data plane wrote to the TUN since the last call."""
        out, self.tun.delivered[:] = list(self.tun.delivered), []
        return out


def spd_for(local: str, remote: str, local6: str, remote6: str, site_l: str, site_r: str):
    return [
        SpdEntry(Selector.parse(site_l, site_r), Action.PROTECT, TUNNEL, name=TUNNEL),
        SpdEntry(Selector.parse(local, remote), Action.PROTECT, HOSTS, name=HOSTS),
        SpdEntry(Selector.parse(local6, remote6), Action.PROTECT, HOSTS6, name=HOSTS6),
    ]


class AhPair:
    """A and B with mirror-image SPDs: a tunnel policy between the sites and
    host-to-host (transport) policies for IPv4 and IPv6."""

    def __init__(self) -> None:
        self.link = AhLink()
        self.clock = Clock()
        self.a = AhNode(
            self.link,
            self.clock,
            (HOST_A, HOST6_A),
            spd_for(HOST_A, HOST_B, HOST6_A, HOST6_B, SITE_A, SITE_B),
        )
        self.b = AhNode(
            self.link,
            self.clock,
            (HOST_B, HOST6_B),
            spd_for(HOST_B, HOST_A, HOST6_B, HOST6_A, SITE_B, SITE_A),
        )

    def connect(
        self,
        policy: str,
        a_to_b: AhParams,
        b_to_a: AhParams,
        *,
        a_ts: tuple[TrafficSelector, ...] = (),
        b_ts: tuple[TrafficSelector, ...] = (),
    ) -> None:
        six = policy == HOSTS6
        host_a, host_b = (HOST6_A, HOST6_B) if six else (HOST_A, HOST_B)
        self.a.dp.install_child_sa(
            policy, b_to_a, a_to_b, host_b, encap=Encap.RAW, local_ts=a_ts, remote_ts=b_ts
        )
        self.b.dp.install_child_sa(
            policy, a_to_b, b_to_a, host_a, encap=Encap.RAW, local_ts=b_ts, remote_ts=a_ts
        )

    def tunnel(self, spi_ab: int = 0xA100, spi_ba: int = 0xB100, **kwargs: object) -> None:
        """Connect the site-to-site tunnel policy (outer IPv4) with selectors."""
        ab = ah_params(spi_ab, 1, src=HOST_A, dst=HOST_B, **kwargs)  # type: ignore[arg-type]
        ba = ah_params(spi_ba, 2, src=HOST_B, dst=HOST_A, **kwargs)  # type: ignore[arg-type]
        self.connect(
            TUNNEL,
            ab,
            ba,
            a_ts=(TrafficSelector.from_network(SITE_A),),
            b_ts=(TrafficSelector.from_network(SITE_B),),
        )
