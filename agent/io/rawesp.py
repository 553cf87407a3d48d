"""Raw ESP: IP protocol 50 on a raw socket, for peers with no NAT between us (RFC 4303
directly over IP, no UDP encapsulation).

The kernel hands an IPv4 raw socket whole datagrams including the IPv4 header; receive
strips it (its length is IHL * 4, RFC 791 section 3.1) and passes the ESP packet starting
at the SPI. IPv6 raw sockets never include the IPv6 header. On send the kernel builds the
outer IP header itself. The kernel needs no ESP support of its own for this: a raw socket
bound to protocol 50 receives every ESP packet addressed to the host, and because a raw
socket took it, the kernel sends no ICMP protocol-unreachable for it.

Batches both ways (:mod:`.mmsg`): one ``recvmmsg`` reads up to :data:`~.udp.RECV_BATCH` packets
per wakeup, and a run of ESP packets for one peer leaves in one ``sendmmsg`` (raw
sockets have no GSO). The kernel buffers are sized as the UDP endpoint's
(:mod:`.socket_buffers`), and :meth:`RawEspSocket.kernel_drops` reads what the kernel
dropped at the socket when the agent did not read fast enough. The socket, its sending
and its buffers are :class:`.rawip.RawIpSocket`'s, shared with raw AH; the receive path
is this module's.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass, fields

from .rawip import RawIpError, RawIpSocket
from .socket_buffers import SOCKET_BUFFER_BYTES
from .udp import ESP_HEADER_LEN, BatchEndHandler

log = logging.getLogger(__name__)

IPPROTO_ESP = 50

RawEspHandler = Callable[[bytes, str], None]
"""on_esp(esp packet starting at the SPI, peer address)."""


@dataclass
class RawEspCounters:
    rx_esp: int = 0
    rx_short: int = 0
    """Shorter than an IPv4 header plus the ESP header (SPI and sequence number)."""
    rx_malformed: int = 0
    """Not IPv4, a bad header length, or an SPI of zero."""
    rx_errors: int = 0
    tx_esp: int = 0
    tx_dropped: int = 0
    tx_errors: int = 0

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


class RawEspError(RawIpError):
    """The raw ESP socket could not be created or configured."""


def strip_ipv4_header(packet: bytes) -> tuple[bytes | None, str]:
    """The ESP packet inside one IPv4 datagram, or None and the reason it is unusable."""
    if len(packet) < 20:
        return None, "short"
    version, ihl = packet[0] >> 4, (packet[0] & 0x0F) * 4
    if version != 4 or ihl < 20:
        return None, "malformed"
    if len(packet) < ihl + ESP_HEADER_LEN:
        return None, "short"
    if packet[9] != IPPROTO_ESP:
        return None, "malformed"
    esp = packet[ihl:]
    if esp.startswith(b"\x00\x00\x00\x00"):
        # RFC 4303 section 2.1: SPI zero is reserved for local use and never on the wire.
        return None, "malformed"
    return esp, ""


class RawEspSocket:
    """A raw protocol-50 socket on ``host`` ("0.0.0.0" for any IPv4 address, or an IPv6
    address), optionally with a firewall mark, with ``buffer_bytes`` of kernel buffers.
    Needs CAP_NET_RAW."""

    def __init__(
        self,
        on_esp: RawEspHandler,
        *,
        host: str = "0.0.0.0",
        mark: int | None = None,
        buffer_bytes: int = SOCKET_BUFFER_BYTES,
        on_batch_end: BatchEndHandler | None = None,
    ):
        self._on_esp = on_esp
        self.on_batch_end = on_batch_end
        """Called after each read's packets were handed to ``on_esp``."""
        self.counters = RawEspCounters()
        self._ip = RawIpSocket(
            IPPROTO_ESP,
            "ESP",
            self.counters,
            host=host,
            mark=mark,
            buffer_bytes=buffer_bytes,
            error=RawEspError,
        )
        self.family = self._ip.family

    def fileno(self) -> int:
        return self._ip.fileno()

    def start(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self._ip.start(self._read, loop)

    def _read(self) -> None:
        counters = self.counters
        ip = self._ip
        try:
            packets = ip.receive()
        except BlockingIOError:
            return
        except OSError as exc:
            counters.rx_errors += 1
            log.debug("recvmmsg on raw ESP: %s", exc)
            return
        on_esp = self._on_esp
        source_host = ip.source_host
        ipv4 = self.family == socket.AF_INET
        # IPv4: the source is in the header the kernel left on; IPv6 has none.
        senders = [] if ipv4 else ip.senders(len(packets))
        for index, packet in enumerate(packets):
            if ipv4:
                esp, reason = strip_ipv4_header(packet)
                source = packet[12:16]
            elif len(packet) < ESP_HEADER_LEN:
                esp, reason = None, "short"
            else:
                esp, reason = packet, ""
                source = senders[index][8:24]
            if esp is None:
                if reason == "short":
                    counters.rx_short += 1
                else:
                    counters.rx_malformed += 1
                continue
            counters.rx_esp += 1
            on_esp(esp, source_host(source))
        if self.on_batch_end is not None:
            self.on_batch_end()

    def send_esp(self, data: bytes, addr: str) -> None:
        """Send one ESP packet with ``sendto`` (:meth:`.RawIpSocket.send`)."""
        self.counters.tx_esp += self._ip.send(data, addr)

    def send_esp_batch(self, packets: list[bytes], addr: str) -> None:
        """Send ESP packets to one peer in one ``sendmmsg`` per ``GSO_MAX_SEGMENTS`` (a
        lone packet with :meth:`send_esp`); what the kernel's send queue cannot take is
        dropped and counted."""
        self.counters.tx_esp += self._ip.send_batch(packets, addr)

    def kernel_drops(self) -> int | None:
        """Packets the kernel dropped at this socket (its receive buffer was full), or
        None where the kernel does not say."""
        return self._ip.kernel_drops()

    def close(self) -> None:
        self._ip.close()
