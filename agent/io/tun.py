"""TUN devices: the real one (Linux, IFF_TUN | IFF_NO_PI) and an in-memory pair for tests.

The data plane sees a TUN device as something that yields whole IP packets and takes
whole IP packets; :class:`TunDevice` is that interface. :class:`LinuxTun` opens
``/dev/net/tun``; :class:`MemoryTun` is its in-process stand-in, so two data planes can
exchange traffic inside one test process (wireguard-go's ``tun.Device`` fakes are the
model).
"""

from __future__ import annotations

import collections
import contextlib
import fcntl
import os
import struct
from typing import Protocol

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
IFF_MULTI_QUEUE = 0x0100
IFNAMSIZ = 16


class TunDevice(Protocol):
    name: str
    mtu: int

    def fileno(self) -> int: ...

    def read(self) -> bytes | None:
        """One packet, or None when nothing is waiting (the device is non-blocking)."""

    def write(self, packet: bytes) -> None: ...

    def close(self) -> None: ...


class TunError(OSError):
    """The TUN device could not be opened or configured."""


class LinuxTun:
    """A Linux TUN device without packet information headers, opened non-blocking.

    With ``multi_queue`` several instances may attach to the same name (one per worker),
    and the kernel spreads flows across them. The agent opens ``tun_offload.OffloadTun``
    instead; this plain device serves ``manual_keying`` with ``"offload": false`` (the
    benchmark's comparison) and the I/O tests of routes and firewall marks.
    """

    def __init__(self, name: str, mtu: int = 1400, multi_queue: bool = False) -> None:
        if len(name.encode()) >= IFNAMSIZ:
            raise TunError(f"interface name {name!r} is longer than {IFNAMSIZ - 1} bytes")
        try:
            fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as exc:
            raise TunError(exc.errno, f"cannot open /dev/net/tun: {exc.strerror}") from None
        flags = IFF_TUN | IFF_NO_PI | (IFF_MULTI_QUEUE if multi_queue else 0)
        try:
            ifr = struct.pack("16sH22x", name.encode(), flags)
            got = fcntl.ioctl(fd, TUNSETIFF, ifr)
        except OSError as exc:
            os.close(fd)
            raise TunError(exc.errno, f"TUNSETIFF {name}: {exc.strerror}") from None
        self._fd = fd
        self.name = got[:16].rstrip(b"\0").decode()
        self.mtu = mtu
        # Largest packet the kernel hands us: the MTU; read a little more to see oversize.
        self._bufsize = max(mtu, 1500) + 64

    def fileno(self) -> int:
        return self._fd

    def read(self) -> bytes | None:
        try:
            return os.read(self._fd, self._bufsize)
        except BlockingIOError:
            return None

    def write(self, packet: bytes) -> None:
        # A full kernel queue drops the packet, as a router would.
        with contextlib.suppress(BlockingIOError):
            os.write(self._fd, packet)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class MemoryTun:
    """An in-memory TUN: ``inject`` plays the host's stack sending a packet into the
    tunnel; ``delivered`` collects what the data plane wrote towards the host."""

    def __init__(self, name: str = "mem0", mtu: int = 1400) -> None:
        self.name = name
        self.mtu = mtu
        self._outbound: collections.deque[bytes] = collections.deque()
        self.delivered: list[bytes] = []
        self.closed = False

    def fileno(self) -> int:
        return -1

    def inject(self, packet: bytes) -> None:
        self._outbound.append(packet)

    def read(self) -> bytes | None:
        return self._outbound.popleft() if self._outbound else None

    def write(self, packet: bytes) -> None:
        self.delivered.append(packet)

    def close(self) -> None:
        self.closed = True
