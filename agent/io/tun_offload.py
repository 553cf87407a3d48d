"""A TUN device with virtio-net headers (IFF_VNET_HDR), so decrypted TCP segments can be
handed to the kernel coalesced: receive offload done in user space, as wireguard-go's
Linux TUN does.

Writing one IPv4 TCP packet to a TUN device costs the kernel a full pass of its receive
path (IP, TCP, socket wake-up) — measured here at about 11 us per 1400-byte segment, the
largest cost of the whole receive side. Consecutive in-order segments of one flow are
instead joined into one large packet carrying a virtio-net header that says "GSO TCPv4,
segment size N, checksum partial" (``struct virtio_net_hdr``, the same header a virtual
machine's TSO packets carry through vhost/tap). The kernel takes it as one packet, as
if its own GRO had merged the segments (RFC 9293's byte stream is unchanged; the packet
is re-segmented should it be forwarded).

Segments are joined only when they would be by the kernel's own TCP GRO: same
addresses, ports, TOS, TTL, IP flags, TCP header length and options, same ACK number
and window, flags ACK (PSH ends a run), the next expected sequence number, equal payload sizes (a
shorter one ends a run), at most ``MAX_SEGMENTS`` and 64 KiB. Their TCP checksums are
not verified one by one: the joined packet carries a partial checksum, which the kernel
trusts for local delivery, and each segment already passed the ESP ICV check between
the two gateways.

Reads carry the header too (all zero, since no offload is enabled for the
kernel-to-user direction), and :meth:`OffloadTun.read` strips it.
"""

from __future__ import annotations

import fcntl
import os
import struct

from .tun import IFF_NO_PI, IFF_TUN, IFNAMSIZ, TUNSETIFF, TunError

IFF_VNET_HDR = 0x4000
VNET_HDR_LEN = 10
"""``struct virtio_net_hdr`` without ``num_buffers`` (TUN's default header size)."""
VIRTIO_NET_HDR_F_NEEDS_CSUM = 1
VIRTIO_NET_HDR_GSO_TCPV4 = 1
MAX_SEGMENTS = 64
MAX_IP_LENGTH = 65535
_PLAIN = bytes(VNET_HDR_LEN)
_TCP_ACK = 0x10
_TCP_PSH = 0x08
# The legacy virtio-net header is in the host's byte order (TUNSETVNETLE not used).
_VNET = struct.Struct("=BBHHHH")


def _fold(total: int) -> int:
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def _ipv4_checksum(header: bytes) -> int:
    """RFC 1071 over a 20-byte header whose checksum field is zero."""
    return ~_fold(sum(struct.unpack("!10H", header))) & 0xFFFF


_HEADERS = struct.Struct("!BB4xBBBB2x12sIQ")
"""What a segment is matched on, read in one call: IP version and header length, TOS,
flags and fragment offset (two octets), TTL, protocol; addresses and ports; the
sequence number; and TCP octets 8-15 as one word (ACK number, data offset, flags,
window), which the segments of a run share but for PSH."""
_PSH_IN_WORD = _TCP_PSH << 16
_FLAGS_IN_WORD = 0xFF << 16


def coalesce(packets: list[bytes]) -> list[bytes]:
    """TUN frames (virtio-net header first) for ``packets``, in order, with runs of
    in-order TCP segments of one flow joined (see the module docstring)."""
    if len(packets) == 1:  # a lone packet (a ping, an ACK) has nothing to join
        return [_PLAIN + packets[0]]
    # The open run lives in locals (per-segment attribute access and slicing were most
    # of the cost): its first packet ``head`` and what later segments must match.
    frames: list[bytes] = []
    unpack = _HEADERS.unpack_from
    head: bytes | None = None
    parts: list[memoryview] = []
    key = options = b""
    tos = ip_flags = ttl = word = 0
    thl = size = count = next_seq = length = psh = 0
    joinable = False
    for packet in packets:
        if len(packet) > 40:
            version, this_tos, flags_hi, offset_lo, this_ttl, protocol, this_key, seq, this_word = (
                unpack(packet)
            )
            # IPv4 without options, TCP, not a fragment (MF clear, offset 0; DF may be
            # set); flags ACK, or ACK and PSH.
            if (
                version == 0x45
                and protocol == 6
                and not (flags_hi & 0x3F or offset_lo)
                and this_word & _FLAGS_IN_WORD | _PSH_IN_WORD == (_TCP_ACK | _TCP_PSH) << 16
            ):
                this_thl = (this_word >> 26) & 0x3C
                payload = len(packet) - 20 - this_thl
                if payload > 0 and this_thl >= 20:
                    if (
                        joinable
                        and seq == next_seq
                        and payload <= size
                        and length + payload <= MAX_IP_LENGTH
                        and this_word | _PSH_IN_WORD == word
                        and this_key == key
                        and this_ttl == ttl
                        and this_tos == tos
                        and flags_hi == ip_flags
                        and (thl == 20 or packet[40 : 20 + thl] == options)
                    ):
                        parts.append(memoryview(packet)[20 + thl :])
                        count += 1
                        length += payload
                        next_seq = (seq + payload) & 0xFFFFFFFF
                        if payload < size or this_word & _PSH_IN_WORD:
                            psh = (this_word >> 16) & _TCP_PSH
                            joinable = False
                        elif count == MAX_SEGMENTS:
                            joinable = False
                        continue
                    if head is not None:
                        frames.append(_emit(head, thl, size, parts, length, psh))
                    head = packet
                    thl = this_thl
                    size = payload
                    length = len(packet)
                    parts = [memoryview(packet)[20 + thl :]]
                    count = 1
                    next_seq = (seq + payload) & 0xFFFFFFFF
                    key, tos, ip_flags, ttl = this_key, this_tos, flags_hi, this_ttl
                    word = this_word | _PSH_IN_WORD
                    options = packet[40 : 20 + thl]
                    psh = (this_word >> 16) & _TCP_PSH
                    joinable = not psh
                    continue
        if head is not None:
            frames.append(_emit(head, thl, size, parts, length, psh))
            head = None
            joinable = False
        frames.append(_PLAIN + packet)
    if head is not None:
        frames.append(_emit(head, thl, size, parts, length, psh))
    return frames


def _emit(
    head: bytes, thl: int, size: int, parts: list[memoryview], length: int, psh: int
) -> bytes:
    """The frame of one run: ``head`` alone, or the joined packet of ``length`` octets
    whose payloads are ``parts``."""
    if len(parts) == 1:
        return _PLAIN + head
    ip = bytearray(head[:20])
    ip[2:4] = length.to_bytes(2, "big")
    ip[10:12] = b"\x00\x00"
    ip[10:12] = _ipv4_checksum(bytes(ip)).to_bytes(2, "big")
    tcp = bytearray(head[20 : 20 + thl])
    tcp[13] |= psh
    # CHECKSUM_PARTIAL: the field holds the folded pseudo-header sum (RFC 9293 section
    # 3.1) over the joined length; the kernel adds the segment's own sum when needed.
    pseudo = sum(struct.unpack("!4H", head[12:20])) + 6 + length - 20
    tcp[16:18] = _fold(pseudo).to_bytes(2, "big")
    vnet = _VNET.pack(VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_TCPV4, 20 + thl, size, 20, 16)
    return b"".join((vnet, ip, tcp, *parts))


class OffloadTun:
    """A Linux TUN device opened with IFF_VNET_HDR; :meth:`write_batch` joins TCP
    segments (see the module docstring). Same interface as ``tun.LinuxTun`` besides."""

    vnet_hdr_len = VNET_HDR_LEN

    def __init__(self, name: str, mtu: int = 1400) -> None:
        if len(name.encode()) >= IFNAMSIZ:
            raise TunError(f"interface name {name!r} is longer than {IFNAMSIZ - 1} bytes")
        try:
            fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as exc:
            raise TunError(exc.errno, f"cannot open /dev/net/tun: {exc.strerror}") from None
        try:
            ifr = struct.pack("16sH22x", name.encode(), IFF_TUN | IFF_NO_PI | IFF_VNET_HDR)
            got = fcntl.ioctl(fd, TUNSETIFF, ifr)
        except OSError as exc:
            os.close(fd)
            raise TunError(exc.errno, f"TUNSETIFF {name}: {exc.strerror}") from None
        self._fd = fd
        self.name = got[:16].rstrip(b"\0").decode()
        self.mtu = mtu
        self._bufsize = max(mtu, 1500) + 64 + VNET_HDR_LEN

    def fileno(self) -> int:
        return self._fd

    def read(self) -> bytes | None:
        try:
            return os.read(self._fd, self._bufsize)[VNET_HDR_LEN:]
        except BlockingIOError:
            return None

    def write(self, packet: bytes) -> None:
        self.write_batch([packet])

    def write_batch(self, packets: list[bytes]) -> None:
        """Write packets in order, TCP segments joined where the rules allow."""
        write = os.write
        fd = self._fd
        for frame in coalesce(packets):
            try:
                write(fd, frame)
            except BlockingIOError:
                pass  # a full queue drops the frame, as a router would
            except OSError:
                pass  # the kernel refused the frame (e.g. malformed): dropped

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
