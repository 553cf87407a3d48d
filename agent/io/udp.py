"""UDP endpoints for IKE and ESP-in-UDP: port 500 (IKE only) and port 4500 (RFC 3948).

On port 4500 the first four bytes of a datagram tell IKE from ESP (RFC 3948 section 2.2):
four zero bytes are the non-ESP marker and precede an IKE message; anything else is the
ESP SPI, which is never zero. A datagram of the single byte 0xFF is a NAT-keepalive
(RFC 3948 section 2.3) and is dropped after being counted. :func:`classify_natt` is that
rule as a pure function; the in-memory network (``memory.py``) applies the same function,
so tests see the same demultiplexing as the real sockets.

Socket choice, measured with ``bench/udp_blast.py`` on loopback (2 vCPU, sender and
receiver in separate processes, three runs):

- Receive. An ``asyncio`` ``DatagramProtocol`` reads one datagram per readiness callback
  (``_SelectorDatagramTransport._read_ready``), so every packet pays a trip through the
  selector and the callback machinery. A plain non-blocking socket registered with
  ``loop.add_reader`` and drained in batches pays it once per batch (capped at
  :data:`RECV_BATCH` so one busy socket cannot starve the loop). Draining a full socket
  buffer: 460k-675k datagrams/s at 64 bytes and ~605k/s at 1400 bytes here with a
  ``recvfrom`` loop, against 250k-265k and 200k-245k through ``DatagramProtocol``: 2-2.6
  times as fast. The NAT-T socket now reads each batch with one ``recvmmsg``
  (:mod:`.mmsg`): ``bench/socket_batch.py`` gives 0.53-0.64 us per datagram against
  0.87-0.93 us for the ``recvfrom`` loop (64 and 1400 bytes, best of 7).
- Send. ``sendto`` straight on the socket: 270k-300k/s at 64 bytes, 210k-295k/s at 1400,
  against 255k-285k and 150k-255k through ``DatagramTransport.sendto``. As fast or
  faster, and a full
  kernel send queue drops the datagram (counted in ``tx_dropped``) as a router would,
  where the transport would grow a user-space queue without bound.

Under a live blast the receiver keeps up with one sender (rx equals tx, about the 278k/s
plain-Python loopback ceiling), so the receive side has headroom for the ESP work.

A firewall mark (``SO_MARK``) can be set on the sockets, so that policy routing (``ip rule
fwmark``) keeps the agent's own encapsulated traffic out of the TUN in transport mode.

Sending NAT-keepalives on idle (:class:`KeepaliveScheduler`) is in :mod:`.keepalive`.
"""

from __future__ import annotations

import asyncio
import enum
import errno
import logging
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Protocol

from .mmsg import RecvBatch, source_of
from .socket_buffers import SOCKET_BUFFER_BYTES, kernel_drops, set_socket_buffers

log = logging.getLogger(__name__)
_LITTLE = sys.byteorder == "little"

Address = tuple[str, int]
IkeHandler = Callable[[bytes, Address, int], None]
"""on_ike(message, peer address, local port it arrived on) — the marker already removed."""
EspHandler = Callable[[bytes, Address], None]
"""on_esp(esp packet starting at the SPI, peer address)."""
BatchEndHandler = Callable[[], None]
"""on_batch_end(): the ESP packets of one read were all handed to on_esp."""

IKE_PORT = 500
NATT_PORT = 4500
NON_ESP_MARKER = b"\x00\x00\x00\x00"
NAT_KEEPALIVE = b"\xff"
IKE_HEADER_LEN = 28
"""RFC 7296 section 3.1: the fixed IKE header; anything shorter cannot be IKE."""
ESP_HEADER_LEN = 8
"""RFC 4303 section 2: SPI and sequence number; anything shorter cannot be ESP."""
RECV_BATCH = 64
"""Most datagrams read from one socket per wakeup before yielding to the event loop."""
RECV_BUFSIZE = 65535
UDP_SEGMENT = 103
"""linux/udp.h: UDP GSO, the kernel splits one send into datagrams of this size."""
GSO_MAX_SEGMENTS = 64
"""UDP_MAX_SEGMENTS in the oldest kernels with UDP GSO (4.18)."""
GSO_MAX_BYTES = 65000
"""A GSO send is one UDP datagram to the stack until it is split: under 64 KiB."""
SOURCE_CACHE_LIMIT = 4096


class DatagramKind(enum.Enum):
    IKE = "ike"
    ESP = "esp"
    KEEPALIVE = "keepalive"
    SHORT = "short"
    """Too short to be what its first bytes say (or shorter than the marker itself)."""
    MALFORMED = "malformed"
    """Something that is neither IKE, ESP nor a keepalive where it arrived."""


def classify_natt(data: bytes) -> tuple[DatagramKind, bytes]:
    """Demultiplex one datagram that arrived on the NAT-T port (RFC 3948 section 2.2).

    Returns the kind and the payload for the upper layer: the IKE message without the
    marker, the ESP packet as received, or ``b""`` for anything dropped.
    """
    if data.startswith(NON_ESP_MARKER):
        if len(data) < len(NON_ESP_MARKER) + IKE_HEADER_LEN:
            return DatagramKind.SHORT, b""
        return DatagramKind.IKE, data[4:]
    if len(data) >= ESP_HEADER_LEN:
        # Not the marker, so the SPI is non-zero: ESP.
        return DatagramKind.ESP, data
    if data == NAT_KEEPALIVE:
        return DatagramKind.KEEPALIVE, b""
    return DatagramKind.SHORT, b""


def classify_ike(data: bytes) -> tuple[DatagramKind, bytes]:
    """Check one datagram that arrived on port 500, where only IKE without a marker is
    expected (RFC 7296 section 2.23): a keepalive or marker there is malformed."""
    if len(data) < IKE_HEADER_LEN:
        return (DatagramKind.MALFORMED if data == NAT_KEEPALIVE else DatagramKind.SHORT), b""
    if data.startswith(NON_ESP_MARKER):
        # IKE SPIi is never zero (RFC 7296 section 3.1): a marker here means ESP-in-UDP
        # framing on the wrong port.
        return DatagramKind.MALFORMED, b""
    return DatagramKind.IKE, data


@dataclass
class UdpCounters:
    """What the endpoint saw and sent; malformed input is counted here and dropped."""

    rx_ike: int = 0
    rx_esp: int = 0
    rx_keepalive: int = 0
    rx_short: int = 0
    rx_malformed: int = 0
    rx_errors: int = 0
    """recvfrom failed (e.g. a queued ICMP error)."""
    tx_ike: int = 0
    tx_esp: int = 0
    tx_keepalive: int = 0
    tx_dropped: int = 0
    """The kernel's send queue was full; the datagram was dropped."""
    tx_errors: int = 0
    """sendto failed for another reason (no route, permission, message too long)."""

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


class DatagramEndpoint(Protocol):
    """What the data plane sends IKE and ESP through (the real sockets or the in-memory
    network); received datagrams arrive through the ``on_ike`` / ``on_esp`` callbacks
    given at construction."""

    counters: UdpCounters
    on_batch_end: BatchEndHandler | None
    """Called after each read's datagrams were delivered (the receiver's cue to flush)."""

    def start(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Begin delivering received datagrams to the callbacks."""

    def send_ike(self, data: bytes, addr: Address, via_4500: bool) -> None:
        """Send one IKE message; on the NAT-T port the non-ESP marker is prepended."""

    def send_esp(self, data: bytes, addr: Address) -> None:
        """Send one ESP packet (starting at the SPI) over the NAT-T port."""

    def send_esp_batch(self, packets: list[bytes], addr: Address) -> None:
        """Send several ESP packets to one peer (equal lengths, the last may be shorter)."""

    def send_keepalive(self, addr: Address) -> None:
        """Send one NAT-keepalive (RFC 3948 section 2.3) over the NAT-T port."""

    def take_active_peers(self) -> set[Address]:
        """Peers sent anything on the NAT-T port since the last call (and forget them)."""

    def kernel_drops(self) -> int | None:
        """Datagrams dropped below the endpoint before it read them (None: unknown)."""

    def close(self) -> None: ...


class UdpError(OSError):
    """A UDP socket could not be created or configured."""


def _family_of(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def open_udp_socket(
    host: str, port: int, mark: int | None = None, buffer_bytes: int | None = None
) -> socket.socket:
    """A bound, non-blocking UDP socket, optionally carrying a firewall mark and with
    larger kernel buffers (to absorb bursts while the loop is busy elsewhere)."""
    family = _family_of(host)
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)
        if buffer_bytes is not None:
            set_socket_buffers(sock, buffer_bytes)
        if mark is not None:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, mark)
            except OSError as exc:
                raise UdpError(
                    exc.errno, f"cannot set SO_MARK {mark:#x}: {exc.strerror} (needs CAP_NET_ADMIN)"
                ) from None
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise UdpError(exc.errno, f"cannot bind UDP {host}:{port}: {exc.strerror}") from None
    except BaseException:
        sock.close()
        raise
    return sock


class UdpEndpoint:
    """The agent's IKE/ESP sockets: UDP ``ike_port`` (IKE only; ``None`` to skip it) and
    UDP ``natt_port`` (IKE with the marker, ESP, keepalives), on one address.

    Ports may be 0 to let the kernel choose (tests); :attr:`ike_port` and
    :attr:`natt_port` then hold the bound ports. ``natt_sock`` / ``ike_sock`` adopt
    sockets bound elsewhere (by a privileged parent, say) instead of opening new ones;
    the endpoint makes them non-blocking and owns them from then on. Call :meth:`start`
    inside the running loop to begin receiving.

    The NAT-T socket, which carries ESP, gets ``buffer_bytes`` of kernel buffers
    (:mod:`.socket_buffers`) and is read with ``recvmmsg`` (:mod:`.mmsg`), up to
    :data:`RECV_BATCH` datagrams per call; port 500 carries IKE only and keeps the
    kernel's defaults and one ``recvfrom`` per datagram.
    """

    def __init__(
        self,
        on_ike: IkeHandler,
        on_esp: EspHandler,
        *,
        host: str = "0.0.0.0",
        ike_port: int | None = IKE_PORT,
        natt_port: int = NATT_PORT,
        mark: int | None = None,
        buffer_bytes: int = SOCKET_BUFFER_BYTES,
        natt_sock: socket.socket | None = None,
        ike_sock: socket.socket | None = None,
        on_batch_end: BatchEndHandler | None = None,
    ) -> None:
        self._on_ike = on_ike
        self._on_esp = on_esp
        self.on_batch_end = on_batch_end
        self.counters = UdpCounters()
        self.host = host
        self.mark = mark
        if natt_sock is not None:
            natt_sock.setblocking(False)
            set_socket_buffers(natt_sock, buffer_bytes)
            self._natt = natt_sock
        else:
            self._natt = open_udp_socket(host, natt_port, mark, buffer_bytes)
        self._ike: socket.socket | None = ike_sock
        try:
            if ike_sock is not None:
                ike_sock.setblocking(False)
            elif ike_port is not None:
                self._ike = open_udp_socket(host, ike_port, mark)
        except BaseException:
            self._natt.close()
            raise
        self.natt_port: int = self._natt.getsockname()[1]
        self.ike_port: int | None = self._ike.getsockname()[1] if self._ike else None
        self._active: set[Address] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._gso = True
        self._natt_batch = RecvBatch(self._natt, RECV_BATCH)
        self._sources: dict[bytes, Address] = {}
        """Received sockaddrs (as the kernel wrote them) and the address they name."""

    def start(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self._loop = loop or asyncio.get_running_loop()
        self._loop.add_reader(self._natt.fileno(), self._read_natt)
        if self._ike is not None:
            self._loop.add_reader(self._ike.fileno(), self._read_ike)

    def close(self) -> None:
        for sock in (self._natt, self._ike):
            if sock is None or sock.fileno() < 0:
                continue
            if self._loop is not None and not self._loop.is_closed():
                self._loop.remove_reader(sock.fileno())
            sock.close()
        self._natt_batch.close()

    def kernel_drops(self) -> int | None:
        """Datagrams the kernel dropped at the NAT-T and IKE sockets (their receive
        buffers were full), or None where the kernel does not say."""
        counts = [kernel_drops(s) for s in (self._natt, self._ike) if s is not None]
        known = [n for n in counts if n is not None]
        return sum(known) if known else None

    # -- receive -------------------------------------------------------------------------

    def _read_natt(self) -> None:
        counters = self.counters
        batch = self._natt_batch
        try:
            packets = batch.receive()
        except BlockingIOError:
            return
        except OSError as exc:
            counters.rx_errors += 1
            log.debug("recvmmsg on UDP %d: %s", self.natt_port, exc)
            return
        on_esp = self._on_esp
        sources = self._sources
        for data, name in zip(packets, batch.senders(len(packets)), strict=True):
            addr = sources.get(name)
            if addr is None:
                if len(sources) >= SOURCE_CACHE_LIMIT:
                    sources.clear()
                addr = sources[name] = source_of(name)
            # The ESP test inlined: this is the per-packet hot path.
            if len(data) >= ESP_HEADER_LEN and not data.startswith(NON_ESP_MARKER):
                counters.rx_esp += 1
                on_esp(data, addr)
                continue
            self._dispatch_natt(data, addr)
        if self.on_batch_end is not None:
            self.on_batch_end()

    def _dispatch_natt(self, data: bytes, addr: Address) -> None:
        kind, payload = classify_natt(data)
        if kind is DatagramKind.IKE:
            self.counters.rx_ike += 1
            self._on_ike(payload, addr, self.natt_port)
        elif kind is DatagramKind.ESP:
            self.counters.rx_esp += 1
            self._on_esp(payload, addr)
        else:
            _count_drop(self.counters, kind)

    def _read_ike(self) -> None:
        assert self._ike is not None
        recvfrom = self._ike.recvfrom
        port = self.ike_port or 0
        for _ in range(RECV_BATCH):
            try:
                data, addr = recvfrom(RECV_BUFSIZE)
            except BlockingIOError:
                return
            except OSError as exc:
                self.counters.rx_errors += 1
                log.debug("recvfrom on UDP %d: %s", port, exc)
                return
            kind, payload = classify_ike(data)
            if kind is DatagramKind.IKE:
                self.counters.rx_ike += 1
                self._on_ike(payload, addr[:2], port)
            else:
                _count_drop(self.counters, kind)

    # -- send ----------------------------------------------------------------------------

    def send_ike(self, data: bytes, addr: Address, via_4500: bool) -> None:
        if via_4500:
            self._active.add(addr)
            ok = self._send(self._natt, NON_ESP_MARKER + data, addr)
        elif self._ike is None:
            raise UdpError(errno.ENOTCONN, "this endpoint has no IKE port 500 socket")
        else:
            ok = self._send(self._ike, data, addr)
        if ok:
            self.counters.tx_ike += 1

    def send_esp(self, data: bytes, addr: Address) -> None:
        self._active.add(addr)
        try:
            self._natt.sendto(data, addr)
        except BlockingIOError:
            self.counters.tx_dropped += 1
            return
        except OSError as exc:
            self.counters.tx_errors += 1
            log.debug("sendto %s: %s", addr, exc)
            return
        self.counters.tx_esp += 1

    def send_esp_batch(self, packets: list[bytes], addr: Address) -> None:
        """Send ESP packets to one peer; with UDP GSO (Linux 4.18+) in one system call.

        The caller keeps GSO's rule: every packet as long as the first except the last,
        which may be shorter, at most ``GSO_MAX_SEGMENTS`` packets and ``GSO_MAX_BYTES``
        in all. Where the kernel refuses GSO, packets go one by one from then on.
        """
        if len(packets) > 1 and self._gso:
            self._active.add(addr)
            size = len(packets[0]).to_bytes(2, "little" if _LITTLE else "big")
            try:
                self._natt.sendmsg(packets, [(socket.SOL_UDP, UDP_SEGMENT, size)], 0, addr)
            except BlockingIOError:
                self.counters.tx_dropped += len(packets)
                return
            except OSError as exc:
                if exc.errno not in (errno.EINVAL, errno.EIO, errno.ENOPROTOOPT, errno.EOPNOTSUPP):
                    self.counters.tx_errors += len(packets)
                    log.debug("sendmsg %s: %s", addr, exc)
                    return
                log.info("UDP GSO refused (%s); sending ESP datagrams one by one", exc)
                self._gso = False
            else:
                self.counters.tx_esp += len(packets)
                return
        for packet in packets:
            self.send_esp(packet, addr)

    def send_keepalive(self, addr: Address) -> None:
        if self._send(self._natt, NAT_KEEPALIVE, addr):
            self.counters.tx_keepalive += 1

    def _send(self, sock: socket.socket, data: bytes, addr: Address) -> bool:
        try:
            sock.sendto(data, addr)
        except BlockingIOError:
            self.counters.tx_dropped += 1
            return False
        except OSError as exc:
            self.counters.tx_errors += 1
            log.debug("sendto %s: %s", addr, exc)
            return False
        return True

    def take_active_peers(self) -> set[Address]:
        active, self._active = self._active, set()
        return active


def _count_drop(counters: UdpCounters, kind: DatagramKind) -> None:
    if kind is DatagramKind.KEEPALIVE:
        counters.rx_keepalive += 1
    elif kind is DatagramKind.SHORT:
        counters.rx_short += 1
    else:
        counters.rx_malformed += 1
