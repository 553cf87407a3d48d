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
addresses, ports, TOS, TTL, IP flags, TCP header length and options, same ACK number,
flags ACK (PSH ends a run), the next expected sequence number, equal payload sizes (a
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


class _Run:
    """Segments of one TCP flow being joined."""

    __slots__ = ("ack", "count", "head", "key", "next_seq", "open", "parts", "psh", "size")

    def __init__(self, packet: bytes, key: bytes, thl: int, payload: int, flags: int) -> None:
        self.head = packet
        self.key = key
        self.ack = packet[28:32]
        self.size = payload
        self.next_seq = (int.from_bytes(packet[24:28], "big") + payload) & 0xFFFFFFFF
        self.parts = [packet[20 + thl :]]
        self.count = 1
        self.psh = flags & _TCP_PSH
        self.open = not self.psh


def coalesce(packets: list[bytes]) -> list[bytes]:
    """TUN frames (virtio-net header first) for ``packets``, in order, with runs of
    in-order TCP segments of one flow joined (see the module docstring)."""
    frames: list[bytes] = []
    run: _Run | None = None
    for packet in packets:
        # IPv4 without options, TCP, not a fragment (MF clear, offset 0; DF may be set).
        if (
            len(packet) > 40
            and packet[0] == 0x45
            and packet[9] == 6
            and not (packet[6] & 0x3F or packet[7])
        ):
            thl = (packet[32] >> 4) * 4
            payload = len(packet) - 20 - thl
            flags = packet[33]
            if payload > 0 and thl >= 20 and flags & ~_TCP_PSH == _TCP_ACK:
                key = packet[12:24]
                if (
                    run is not None
                    and run.open
                    and run.key == key
                    and payload <= run.size
                    and run.count < MAX_SEGMENTS
                    and int.from_bytes(packet[24:28], "big") == run.next_seq
                    and packet[28:32] == run.ack
                    and _same_headers(run.head, packet, thl)
                    and len(run.head) + run.count * run.size + payload <= MAX_IP_LENGTH + run.size
                ):
                    run.parts.append(packet[20 + thl :])
                    run.count += 1
                    run.next_seq = (run.next_seq + payload) & 0xFFFFFFFF
                    if payload < run.size or flags & _TCP_PSH:
                        run.psh |= flags & _TCP_PSH
                        run.open = False
                    continue
                if run is not None:
                    frames.append(_emit(run))
                run = _Run(packet, key, thl, payload, flags)
                continue
        if run is not None:
            frames.append(_emit(run))
            run = None
        frames.append(_PLAIN + packet)
    if run is not None:
        frames.append(_emit(run))
    return frames


def _same_headers(head: bytes, packet: bytes, thl: int) -> bool:
    # TOS, IP flags (DF), TTL, TCP data offset and options as the kernel's GRO demands.
    return (
        head[1] == packet[1]
        and head[6] == packet[6]
        and head[8] == packet[8]
        and head[32] == packet[32]
        and head[40 : 20 + thl] == packet[40 : 20 + thl]
    )


def _emit(run: _Run) -> bytes:
    head = run.head
    if run.count == 1:
        return _PLAIN + head
    thl = (head[32] >> 4) * 4
    body = b"".join(run.parts)
    tcp_length = thl + len(body)
    ip = bytearray(head[:20])
    ip[2:4] = (20 + tcp_length).to_bytes(2, "big")
    ip[10:12] = b"\x00\x00"
    ip[10:12] = _ipv4_checksum(bytes(ip)).to_bytes(2, "big")
    tcp = bytearray(head[20 : 20 + thl])
    tcp[13] |= run.psh
    # CHECKSUM_PARTIAL: the field holds the folded pseudo-header sum (RFC 9293 section
    # 3.1) over the joined length; the kernel adds the segment's own sum when needed.
    pseudo = sum(struct.unpack("!4H", head[12:20])) + 6 + tcp_length
    tcp[16:18] = _fold(pseudo).to_bytes(2, "big")
    vnet = _VNET.pack(
        VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_TCPV4, 20 + thl, run.size, 20, 16
    )
    return vnet + bytes(ip) + bytes(tcp) + body


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
