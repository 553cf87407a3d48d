"""Raw ESP: IP protocol 50 on a raw socket, for peers with no NAT between us (RFC 4303
directly over IP, no UDP encapsulation).

The kernel hands an IPv4 raw socket whole datagrams including the IPv4 header; receive
strips it (its length is IHL * 4, RFC 791 section 3.1) and passes the ESP packet starting
at the SPI. IPv6 raw sockets never include the IPv6 header. On send the kernel builds the
outer IP header itself. The kernel needs no ESP support of its own for this: a raw socket
bound to protocol 50 receives every ESP packet addressed to the host, and because a raw
socket took it, the kernel sends no ICMP protocol-unreachable for it.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass, fields

from .udp import ESP_HEADER_LEN, RECV_BATCH

log = logging.getLogger(__name__)

IPPROTO_ESP = 50
RECV_BUFSIZE = 65535

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


class RawEspError(OSError):
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
    address), optionally with a firewall mark. Needs CAP_NET_RAW."""

    def __init__(self, on_esp: RawEspHandler, *, host: str = "0.0.0.0", mark: int | None = None):
        self._on_esp = on_esp
        self.counters = RawEspCounters()
        self.family = socket.AF_INET6 if ":" in host else socket.AF_INET
        try:
            sock = socket.socket(self.family, socket.SOCK_RAW, IPPROTO_ESP)
        except PermissionError as exc:
            raise RawEspError(
                exc.errno, "cannot open a raw IP protocol 50 socket: needs CAP_NET_RAW"
            ) from None
        try:
            sock.setblocking(False)
            if mark is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, mark)
            if host not in ("0.0.0.0", "::"):
                sock.bind((host, 0))
        except OSError as exc:
            sock.close()
            raise RawEspError(
                exc.errno, f"cannot set up raw ESP socket on {host}: {exc.strerror}"
            ) from None
        self._sock = sock
        self._loop: asyncio.AbstractEventLoop | None = None

    def fileno(self) -> int:
        return self._sock.fileno()

    def start(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self._loop = loop or asyncio.get_running_loop()
        self._loop.add_reader(self._sock.fileno(), self._read)

    def _read(self) -> None:
        counters = self.counters
        ipv4 = self.family == socket.AF_INET
        for _ in range(RECV_BATCH):
            try:
                packet, addr = self._sock.recvfrom(RECV_BUFSIZE)
            except BlockingIOError:
                return
            except OSError as exc:
                counters.rx_errors += 1
                log.debug("recvfrom on raw ESP: %s", exc)
                return
            if ipv4:
                esp, reason = strip_ipv4_header(packet)
            elif len(packet) < ESP_HEADER_LEN:
                esp, reason = None, "short"
            else:
                esp, reason = packet, ""
            if esp is None:
                if reason == "short":
                    counters.rx_short += 1
                else:
                    counters.rx_malformed += 1
                continue
            counters.rx_esp += 1
            self._on_esp(esp, addr[0])

    def send_esp(self, data: bytes, addr: str) -> None:
        try:
            self._sock.sendto(data, (addr, 0))
        except BlockingIOError:
            self.counters.tx_dropped += 1
            return
        except OSError as exc:
            self.counters.tx_errors += 1
            log.debug("raw ESP sendto %s: %s", addr, exc)
            return
        self.counters.tx_esp += 1

    def close(self) -> None:
        if self._sock.fileno() < 0:
            return
        if self._loop is not None and not self._loop.is_closed():
            self._loop.remove_reader(self._sock.fileno())
        self._sock.close()
