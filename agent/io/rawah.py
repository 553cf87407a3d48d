"""Raw AH: IP protocol 51 on a raw socket (RFC 4302 directly over IP; AH has no UDP
encapsulation, it cannot cross a NAT).

AH covers the IP header (RFC 4302 section 3.3.3.1), so unlike raw ESP both directions
carry whole IP packets, and the AH SA (``esp.ah``) builds and reads the header itself:

- IPv4 receive: the kernel hands a raw socket the whole datagram, IPv4 header as
  received (Linux leaves the total length in network order and the header untouched);
  it goes to the AH SA as is. A datagram the kernel reassembled arrives whole.
- IPv4 send: ``IP_HDRINCL``, so the header the ICV covered is the header that leaves.
  Linux fills in, for such a packet (man 7 raw, ``raw_send_hdrinc``): the checksum
  always and the total length always (both ours already: the checksum is outside the
  ICV, the length is the packet's), the source address when zero (never: the SA or the
  TUN packet sets it) and the identification when zero. The identification *is* in the
  ICV, so a packet with identification 0 would leave with a number the kernel picked and
  fail at the peer: :meth:`RawAhSocket.send_ah` refuses it (``tx_id_zero``), and the data
  plane never hands one over (tunnel mode numbers the outer header from the sequence
  number without 0, transport mode gives a packet from the TUN with identification 0 a
  number before AH is computed). A packet longer than the route's MTU is refused by the
  kernel (EMSGSIZE, counted in ``tx_errors``): HDRINCL packets are not fragmented.
- IPv6 send: ``IPV6_HDRINCL`` (option 36, Linux >= 4.5), the header as the SA built it.
- IPv6 receive: an IPv6 raw socket never delivers the IPv6 header, so it is rebuilt from
  what ``recvmsg`` gives: the source (the sender's sockaddr), the destination
  (``IPV6_PKTINFO``), the hop limit (``IPV6_HOPLIMIT``) and the traffic class
  (``IPV6_TCLASS``); the flow label is not given (``IPV6_FLOWINFO`` reports it for
  connected sockets only) and is left 0. All three of hop limit, traffic class and flow
  label are mutable and zeroed for the ICV, so the rebuilt header verifies like the
  original. Extension headers before AH (hop-by-hop, destination options, routing;
  RFC 4302 section 3.3.3.1.2 puts them in the ICV) are consumed by the kernel but handed
  back, octet for octet and in packet order, as ``IPV6_HOPOPTS``, ``IPV6_DSTOPTS`` and
  ``IPV6_RTHDR`` control messages (RFC 3542 sections 4 and 7; Linux reparses the chain
  up to the last header it processed, ``ip6_datagram_recv_specific_ctl``), so they are
  put back between the rebuilt header and AH (:func:`ipv6_chain`) and such packets
  verify too (measured and tested with hop-by-hop and destination options headers
  sent by scapy from another namespace). A chain that does not end in AH, or whose
  lengths do not match, is counted ``rx_malformed``. A fragment header does not come
  back, and need not: the kernel reassembled the packet, and AH covers the datagram as
  it was before fragmenting (RFC 4302 section 3.4.1). A routing header comes back as
  the kernel left it after processing it, which is untested here (Linux refuses type 0,
  RFC 5095; type 2 is Mobile IPv6's, RFC 6275); one whose addresses the kernel rewrote
  otherwise than AH predicts fails the ICV (an integrity failure of the SA). An
  ``AF_PACKET`` socket would also keep the chain (measured: a ``SOCK_DGRAM``
  ``ETH_P_IPV6`` socket in a namespace receives a hop-by-hop + AH packet whole) but it is
  not used: it sees frames before reassembly and before the host firewall, frames the
  host forwards, and would duplicate what the raw socket (still needed to keep the
  kernel from answering with ICMP) receives. IPv6 reads one ``recvmsg`` per packet (no
  batching: ``recvmmsg`` through ctypes with control messages would be its own module).

The socket is of one IP version, that of ``host``: the agent opens it on its IKE listen
address (``ike_listen``), whose version is also the only one its IKE and ESP sockets
speak, so every peer an AH SA can be negotiated with is in that version (the lab writes
``ike_listen: '::'`` for an IPv6 underlay).

IPv4 reads are batched (``recvmmsg``, :data:`~.udp.RECV_BATCH` per wakeup) and runs of
packets to one peer leave in one ``sendmmsg``, as raw ESP does (``rawesp``): the socket,
its sending and its buffers are :class:`.rawip.RawIpSocket`'s, shared with raw ESP; the
receive paths and the refusal of identification 0 are this module's. Because a
raw socket takes every protocol-51 packet addressed to the host, the kernel (with no AH
of its own here) sends no ICMP protocol-unreachable for them.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass, fields

from ..esp.ah_icv import IPPROTO_AH
from .rawip import RawIpError, RawIpSocket, SocketOption, ip_family
from .socket_buffers import SOCKET_BUFFER_BYTES
from .udp import RECV_BATCH, BatchEndHandler

log = logging.getLogger(__name__)

IPV6_HDRINCL = 36
"""Linux ``include/uapi/linux/in6.h`` (since 4.5); Python's socket module lacks it."""
AH_MIN_LENGTH = 12
"""Next header, payload length, reserved, SPI and sequence number (RFC 4302 section 2)."""
_RECV_BYTES = 65535
_EXTENSION_MAX = (255 + 1) * 8
"""The longest hop-by-hop, destination options or routing header (RFC 8200 section 4)."""
_ANCILLARY_BYTES = (
    socket.CMSG_SPACE(20)
    + socket.CMSG_SPACE(4)
    + socket.CMSG_SPACE(4)
    + 3 * socket.CMSG_SPACE(_EXTENSION_MAX)
)
_EXTENSION_KINDS = {
    socket.IPV6_HOPOPTS: 0,  # hop-by-hop options header
    socket.IPV6_DSTOPTS: 60,  # destination options header
    socket.IPV6_RTHDR: 43,  # routing header
}
"""Control message type → the extension header's next-header value (RFC 8200 section 4)."""

RawAhHandler = Callable[[bytes, str], None]
"""on_ah(the whole IP packet, IP header first, the sender's address)."""


@dataclass
class RawAhCounters:
    rx_ah: int = 0
    rx_short: int = 0
    """Shorter than the IP header plus AH's fixed part."""
    rx_malformed: int = 0
    """Not of the socket's IP version, a bad header length, not AH, an SPI of zero, or
    (IPv6) extension headers before AH that do not chain to it."""
    rx_errors: int = 0
    tx_ah: int = 0
    tx_dropped: int = 0
    """The kernel's send queue was full."""
    tx_id_zero: int = 0
    """IPv4 packets refused because the kernel would renumber them (see the module)."""
    tx_errors: int = 0

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


class RawAhError(RawIpError):
    """The raw AH socket could not be created or configured."""


def check_ipv4_ah(packet: bytes) -> str:
    """Why a received IPv4 datagram is no AH packet ("short", "malformed"), or ""."""
    if len(packet) < 20:
        return "short"
    ihl = (packet[0] & 0x0F) * 4
    if packet[0] >> 4 != 4 or ihl < 20:
        return "malformed"
    if len(packet) < ihl + AH_MIN_LENGTH:
        return "short"
    if packet[9] != IPPROTO_AH:
        return "malformed"
    if packet[ihl + 4 : ihl + 8] == b"\x00\x00\x00\x00":
        # RFC 4302 section 2.4: SPI zero is reserved for local use and never on the wire.
        return "malformed"
    return ""


def ipv6_chain(headers: list[tuple[int, bytes]]) -> tuple[int, bytes] | None:
    """The extension headers before AH, from the control messages that carried them
    (``(next-header value, header)`` in packet order, hop-by-hop first): the IPv6
    header's next header and the headers joined, or None if a header's length field
    does not match its size, hop-by-hop is not first, or the chain does not lead to AH."""
    if not headers:
        return IPPROTO_AH, b""
    headers = sorted(headers, key=lambda kind_data: kind_data[0] != 0)  # RFC 8200 4.1
    if any(kind == 0 for kind, _ in headers[1:]):
        return None
    for at, (_kind, data) in enumerate(headers):
        if len(data) < 8 or len(data) != (data[1] + 1) * 8:
            return None
        following = headers[at + 1][0] if at + 1 < len(headers) else IPPROTO_AH
        if data[0] != following:
            return None
    return headers[0][0], b"".join(data for _, data in headers)


def ipv6_header(
    src: bytes,
    dst: bytes,
    payload_length: int,
    hop_limit: int,
    traffic_class: int,
    next_header: int = IPPROTO_AH,
) -> bytes:
    """The IPv6 header (RFC 8200 section 3) of a received AH payload, rebuilt; flow
    label 0."""
    return (
        bytes(
            (
                0x60 | (traffic_class >> 4),
                (traffic_class & 0x0F) << 4,
                0,
                0,
            )
        )
        + payload_length.to_bytes(2, "big")
        + bytes((next_header, hop_limit))
        + src
        + dst
    )


def socket_options(family: socket.AddressFamily) -> list[SocketOption]:
    """The raw AH socket's options: the header included on send (both versions) and, for
    IPv6, what rebuilding the received header takes (see the module)."""
    if family == socket.AF_INET:
        return [(socket.IPPROTO_IP, socket.IP_HDRINCL, 1)]
    return [
        (socket.IPPROTO_IPV6, option, 1)
        for option in (
            IPV6_HDRINCL,
            socket.IPV6_RECVPKTINFO,
            socket.IPV6_RECVHOPLIMIT,
            socket.IPV6_RECVTCLASS,
            socket.IPV6_RECVHOPOPTS,
            socket.IPV6_RECVDSTOPTS,
            socket.IPV6_RECVRTHDR,
        )
    ]


class RawAhSocket:
    """A raw protocol-51 socket on ``host`` ("0.0.0.0" for any IPv4 address, "::" or an
    IPv6 address for IPv6), optionally with a firewall mark (transport-mode peers are
    routed into the TUN for everything but the agent's own marked packets), with
    ``buffer_bytes`` of kernel buffers. Needs CAP_NET_RAW."""

    def __init__(
        self,
        on_ah: RawAhHandler,
        *,
        host: str = "0.0.0.0",
        mark: int | None = None,
        buffer_bytes: int = SOCKET_BUFFER_BYTES,
        on_batch_end: BatchEndHandler | None = None,
    ):
        self._on_ah = on_ah
        self.on_batch_end = on_batch_end
        """Called after each read's packets were handed to ``on_ah``."""
        self.counters = RawAhCounters()
        self._ip = RawIpSocket(
            IPPROTO_AH,
            "AH",
            self.counters,
            host=host,
            mark=mark,
            buffer_bytes=buffer_bytes,
            options=socket_options(ip_family(host)),
            error=RawAhError,
        )
        self.family = self._ip.family

    def fileno(self) -> int:
        return self._ip.fileno()

    def start(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        read = self._read_ipv4 if self.family == socket.AF_INET else self._read_ipv6
        self._ip.start(read, loop)

    # -- receiving -----------------------------------------------------------------------

    def _read_ipv4(self) -> None:
        counters = self.counters
        try:
            packets = self._ip.receive()
        except BlockingIOError:
            return
        except OSError as exc:
            counters.rx_errors += 1
            log.debug("recvmmsg on raw AH: %s", exc)
            return
        on_ah = self._on_ah
        source_host = self._ip.source_host
        for packet in packets:
            reason = check_ipv4_ah(packet)
            if reason:
                if reason == "short":
                    counters.rx_short += 1
                else:
                    counters.rx_malformed += 1
                continue
            counters.rx_ah += 1
            on_ah(packet, source_host(packet[12:16]))
        if self.on_batch_end is not None:
            self.on_batch_end()

    def _read_ipv6(self) -> None:
        counters = self.counters
        on_ah = self._on_ah
        ip = self._ip
        for _ in range(RECV_BATCH):
            try:
                payload, ancillary, sender = ip.receive_with_control(_RECV_BYTES, _ANCILLARY_BYTES)
            except BlockingIOError:
                break
            except OSError as exc:
                counters.rx_errors += 1
                log.debug("recvmsg on raw AH: %s", exc)
                break
            if len(payload) < AH_MIN_LENGTH:
                counters.rx_short += 1
                continue
            if payload[4:8] == b"\x00\x00\x00\x00":
                counters.rx_malformed += 1
                continue
            dst = b""
            hop_limit = traffic_class = 0
            extensions: list[tuple[int, bytes]] = []
            for level, kind, data in ancillary:
                if level != socket.IPPROTO_IPV6:
                    continue
                if kind in _EXTENSION_KINDS:
                    extensions.append((_EXTENSION_KINDS[kind], data))
                elif kind == socket.IPV6_PKTINFO:
                    dst = data[:16]
                elif kind == socket.IPV6_HOPLIMIT:
                    hop_limit = int.from_bytes(data[:4], "little") & 0xFF
                elif kind == socket.IPV6_TCLASS:
                    traffic_class = int.from_bytes(data[:4], "little") & 0xFF
            chain = ipv6_chain(extensions)
            if len(dst) != 16 or chain is None:
                counters.rx_malformed += 1
                continue
            next_header, before_ah = chain
            src = socket.inet_pton(socket.AF_INET6, sender.split("%", 1)[0])
            header = ipv6_header(
                src, dst, len(before_ah) + len(payload), hop_limit, traffic_class, next_header
            )
            counters.rx_ah += 1
            on_ah(header + before_ah + payload, ip.source_host(src))
        if self.on_batch_end is not None:
            self.on_batch_end()

    # -- sending -------------------------------------------------------------------------

    def _refused(self, packet: bytes) -> bool:
        if self.family == socket.AF_INET and packet[4:6] == b"\x00\x00":
            self.counters.tx_id_zero += 1
            return True
        return False

    def send_ah(self, packet: bytes, addr: str) -> None:
        """Send one whole IP packet (AH inside) to ``addr`` with ``sendto``."""
        if self._refused(packet):
            return
        self.counters.tx_ah += self._ip.send(packet, addr)

    def send_ah_batch(self, packets: list[bytes], addr: str) -> None:
        """Send packets to one peer in one ``sendmmsg`` per ``GSO_MAX_SEGMENTS`` (a lone
        packet with ``sendto``); what the kernel's send queue cannot take is dropped and
        counted."""
        if self.family == socket.AF_INET and any(p[4:6] == b"\x00\x00" for p in packets):
            packets = [p for p in packets if not self._refused(p)]
        self.counters.tx_ah += self._ip.send_batch(packets, addr)

    def kernel_drops(self) -> int | None:
        """Packets the kernel dropped at this socket (its receive buffer was full), or
        None where the kernel does not say."""
        return self._ip.kernel_drops()

    def close(self) -> None:
        self._ip.close()
