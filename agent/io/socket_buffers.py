"""Kernel buffers of the agent's ESP and IKE sockets, and what the kernel dropped at them.

A socket's receive buffer holds what arrived while the event loop was busy elsewhere
(sealing a TUN batch, writing decrypted packets to the TUN). At the default
``net.core.rmem_default`` (208 KiB, about 90 full-size datagrams once the kernel's own
per-packet overhead is counted) a 1 Gbit/s stream fills it in under 2 ms, and every
datagram past it is dropped by the kernel before the agent sees it: a TCP flow through
the tunnel then retransmits. :data:`SOCKET_BUFFER_BYTES` is sized for line rate on a
busy two-core host; as root the ``*BUFFORCE`` options go past ``net.core.[rw]mem_max``,
otherwise the plain options are used and the kernel caps them at those sysctls.

:func:`kernel_drops` reads the count of datagrams the kernel dropped at one socket
(``sk_drops``: receive buffer full, or refused by a socket filter) through
``SO_MEMINFO`` (Linux 4.6+), the same counter ``/proc/net/udp`` and ``/proc/net/raw``
show in their ``drops`` column. Reading it costs one system call at scrape time and
nothing on the packet path.
"""

from __future__ import annotations

import socket
import struct

SOCKET_BUFFER_BYTES = 8 << 20
"""Receive and send buffer of every ESP-carrying socket (UDP 4500, raw ESP): about 40 ms
of a 1.5 Gbit/s stream, which rides out a loop turn spent on a full TUN batch."""
SO_SNDBUFFORCE = 32
SO_RCVBUFFORCE = 33
SO_MEMINFO = 55
"""Linux socket options (asm-generic/socket.h) the socket module does not name."""
SK_MEMINFO_DROPS = 8
"""Index of ``sk_drops`` in SO_MEMINFO's array of u32 (linux/sock_diag.h)."""
_MEMINFO_LEN = (SK_MEMINFO_DROPS + 1) * 4


def set_socket_buffers(sock: socket.socket, size: int = SOCKET_BUFFER_BYTES) -> None:
    """Set ``sock``'s receive and send buffers to ``size`` bytes (the kernel doubles the
    figure for its bookkeeping, as socket(7) says)."""
    if size <= 0:
        raise ValueError(f"socket buffer size must be positive, got {size}")
    for force, plain in ((SO_RCVBUFFORCE, socket.SO_RCVBUF), (SO_SNDBUFFORCE, socket.SO_SNDBUF)):
        try:
            sock.setsockopt(socket.SOL_SOCKET, force, size)
        except PermissionError:
            # Without CAP_NET_ADMIN: capped at net.core.rmem_max / wmem_max.
            sock.setsockopt(socket.SOL_SOCKET, plain, size)


def kernel_drops(sock: socket.socket) -> int | None:
    """Datagrams the kernel dropped at ``sock`` since it was opened, or None where the
    kernel cannot tell (before Linux 4.6, or a closed socket)."""
    if sock.fileno() < 0:
        return None
    try:
        info = sock.getsockopt(socket.SOL_SOCKET, SO_MEMINFO, _MEMINFO_LEN)
    except OSError:
        return None
    if len(info) < _MEMINFO_LEN:
        return None
    return int(struct.unpack_from("=I", info, SK_MEMINFO_DROPS * 4)[0])
