"""One raw IP socket of one IP protocol: what raw ESP (:mod:`.rawesp`, protocol 50) and
raw AH (:mod:`.rawah`, protocol 51) have in common.

:class:`RawIpSocket` owns the socket of the version of its address, with its kernel
buffers (:mod:`.socket_buffers`), firewall mark, socket options and bound address; it
sends one packet with ``sendto``, and a run of packets to one peer with one
``sendmmsg`` per :data:`~.udp.GSO_MAX_SEGMENTS` (:mod:`.mmsg`; raw sockets have no GSO,
so this is their batch), what the kernel's send queue cannot take dropped and counted.
It reads with ``recvmmsg`` for an owner that wants batches, keeps the received source
addresses as strings, registers the owner's reader with the loop, reads what the kernel
dropped at the socket, and closes it all.

What a packet is on the way in (an IPv4 header to strip, an IPv6 header to rebuild) and
which packets may leave are the owner's: it composes a :class:`RawIpSocket` and keeps
its own receive path and its own counters, which hold the send-side drops and errors
(:class:`TxCounters`) and count the packets sent from what the send methods return.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable, Iterable
from typing import Protocol

from .mmsg import RecvBatch, SendBatch, sockaddr
from .socket_buffers import SOCKET_BUFFER_BYTES, kernel_drops, set_socket_buffers
from .udp import GSO_MAX_SEGMENTS, RECV_BATCH, SOURCE_CACHE_LIMIT

log = logging.getLogger(__name__)

SocketOption = tuple[int, int, int]
"""``(level, option, value)`` for ``setsockopt``."""

ANY_ADDRESSES = ("0.0.0.0", "::")
"""The addresses a raw socket is left unbound on: it receives for every address."""


class TxCounters(Protocol):
    """The send-side counters :class:`RawIpSocket` adds to, in its owner's counters."""

    tx_dropped: int
    """Packets the kernel's send queue could not take."""
    tx_errors: int
    """Packets refused by the kernel otherwise (no route, too long, …)."""


class RawIpError(OSError):
    """A raw IP socket could not be created or configured."""


def ip_family(host: str) -> socket.AddressFamily:
    """The IP version of a raw socket on ``host``."""
    return socket.AF_INET6 if ":" in host else socket.AF_INET


class RawIpSocket:
    """A non-blocking raw socket of IP protocol ``protocol`` on ``host`` ("0.0.0.0" for
    any IPv4 address, "::" for any IPv6 address, or one address to bind to), with
    ``buffer_bytes`` of kernel buffers, ``options`` set, and optionally a firewall mark.
    ``label`` names the protocol in errors and logs ("ESP"); send-side drops and errors
    are added to ``counters``; a failure to set up raises ``error``. Needs CAP_NET_RAW."""

    def __init__(
        self,
        protocol: int,
        label: str,
        counters: TxCounters,
        *,
        host: str,
        mark: int | None = None,
        buffer_bytes: int = SOCKET_BUFFER_BYTES,
        options: Iterable[SocketOption] = (),
        error: type[RawIpError] = RawIpError,
    ) -> None:
        self.label = label
        self._counters = counters
        self.family = ip_family(host)
        try:
            sock = socket.socket(self.family, socket.SOCK_RAW, protocol)
        except PermissionError as exc:
            raise error(
                exc.errno, f"cannot open a raw IP protocol {protocol} socket: needs CAP_NET_RAW"
            ) from None
        try:
            sock.setblocking(False)
            set_socket_buffers(sock, buffer_bytes)
            for level, option, value in options:
                sock.setsockopt(level, option, value)
            if mark is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, mark)
            if host not in ANY_ADDRESSES:
                sock.bind((host, 0))
        except OSError as exc:
            sock.close()
            raise error(
                exc.errno, f"cannot set up raw {label} socket on {host}: {exc.strerror}"
            ) from None
        except BaseException:
            sock.close()
            raise
        self._sock = sock
        self._loop: asyncio.AbstractEventLoop | None = None
        self._recv = RecvBatch(sock, RECV_BATCH)
        self._send = SendBatch(sock, GSO_MAX_SEGMENTS)
        self._hosts: dict[bytes, str] = {}
        """Source addresses (4 or 16 octets) of received packets, as strings."""
        self._names: dict[str, bytes] = {}
        """Destinations, as the sockaddr ``sendmmsg`` takes."""

    def fileno(self) -> int:
        return self._sock.fileno()

    def start(
        self, read: Callable[[], None], loop: asyncio.AbstractEventLoop | None = None
    ) -> None:
        """Call ``read`` whenever the socket is readable, on ``loop`` (default: the
        running one)."""
        self._loop = loop or asyncio.get_running_loop()
        self._loop.add_reader(self._sock.fileno(), read)

    # -- receiving -----------------------------------------------------------------------

    def receive(self) -> list[bytes]:
        """Up to :data:`~.udp.RECV_BATCH` waiting packets in one ``recvmmsg``; raises
        BlockingIOError when there is none, OSError on a socket error."""
        return self._recv.receive()

    def senders(self, got: int) -> list[bytes]:
        """The sockaddr of each of the ``got`` packets of the last :meth:`receive`."""
        return self._recv.senders(got)

    def receive_with_control(
        self, bufsize: int, ancbufsize: int
    ) -> tuple[bytes, list[tuple[int, int, bytes]], str]:
        """One packet with ``recvmsg``: its payload, its control messages and its
        sender's address. Raises BlockingIOError when there is none."""
        payload, ancillary, _flags, sender = self._sock.recvmsg(bufsize, ancbufsize)
        return payload, ancillary, str(sender[0])

    def source_host(self, source: bytes) -> str:
        """A received packet's source address (4 or 16 octets) as a string."""
        hosts = self._hosts
        host = hosts.get(source)
        if host is None:
            if len(hosts) >= SOURCE_CACHE_LIMIT:
                hosts.clear()
            host = hosts[source] = socket.inet_ntop(self.family, source)
        return host

    # -- sending -------------------------------------------------------------------------

    def send(self, packet: bytes, addr: str) -> int:
        """Send one packet to ``addr`` with ``sendto`` (a lone packet, a ping or an ACK,
        costs half of what a one-message ``sendmmsg`` through ctypes does): 1 if the
        kernel took it, else 0 and the packet counted dropped or in error."""
        try:
            self._sock.sendto(packet, (addr, 0))
        except BlockingIOError:
            self._counters.tx_dropped += 1
            return 0
        except OSError as exc:
            self._counters.tx_errors += 1
            log.debug("raw %s sendto %s: %s", self.label, addr, exc)
            return 0
        return 1

    def send_batch(self, packets: list[bytes], addr: str) -> int:
        """Send packets to one peer in one ``sendmmsg`` per ``GSO_MAX_SEGMENTS`` (a lone
        packet with :meth:`send`): how many the kernel took; the others are counted
        dropped (its send queue was full) or in error."""
        if len(packets) <= 1:
            return self.send(packets[0], addr) if packets else 0
        name = self._names.get(addr)
        if name is None:
            if len(self._names) >= SOURCE_CACHE_LIMIT:
                self._names.clear()
            name = self._names[addr] = sockaddr(self.family, addr)
        counters = self._counters
        total = 0
        for at in range(0, len(packets), GSO_MAX_SEGMENTS):
            run = packets[at : at + GSO_MAX_SEGMENTS]
            try:
                sent = self._send.send(run, name)
            except BlockingIOError:
                counters.tx_dropped += len(run)
                continue
            except OSError as exc:
                counters.tx_errors += len(run)
                log.debug("raw %s sendmmsg %s: %s", self.label, addr, exc)
                continue
            total += sent
            counters.tx_dropped += len(run) - sent
        return total

    # -- state ---------------------------------------------------------------------------

    def kernel_drops(self) -> int | None:
        """Packets the kernel dropped at this socket (its receive buffer was full), or
        None where the kernel does not say."""
        return kernel_drops(self._sock)

    def close(self) -> None:
        if self._sock.fileno() < 0:
            return
        if self._loop is not None and not self._loop.is_closed():
            self._loop.remove_reader(self._sock.fileno())
        self._sock.close()
        self._recv.close()
        self._send.close()
