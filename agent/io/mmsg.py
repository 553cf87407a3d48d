"""Many datagrams per system call: ``recvmmsg(2)`` and ``sendmmsg(2)`` through ctypes,
into and out of buffers allocated once per socket.

Python's socket module has neither call, so a loop of ``recvfrom`` pays a system call,
a bytes object, an address tuple and a string per datagram. :class:`RecvBatch` fills up
to ``count`` preallocated slots in one call and hands back each datagram as bytes with
its raw ``sockaddr``; :class:`SendBatch` copies a run of ESP packets for one peer into
its slots and sends them in one call (the raw ESP socket has no UDP GSO, so this is its
batch). Slots are 64 KiB, room for the largest IP datagram, so nothing is ever
truncated; they live in an anonymous mapping, so only the pages datagrams were written
to are resident (a few hundred KiB for full-size ESP, not the 4 MiB mapped).

The memory layout of ``struct mmsghdr`` / ``msghdr`` / ``iovec`` comes from ctypes
structures (the C ABI of this machine); the per-call fields (``msg_len``,
``msg_namelen``, ``iov_len``) are read and written through flat memoryviews of them,
which costs no ctypes attribute lookups on the packet path.
"""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
import socket
import struct

MSG_DONTWAIT = 0x40
SLOT_BYTES = 1 << 16
"""Room for the largest IPv4 datagram (RFC 791's total length is 16 bits), which also
bounds a UDP payload; a power of two, so a datagram of up to a page touches one page."""
SOCKADDR_BYTES = 28
"""sizeof(struct sockaddr_in6), which also holds a sockaddr_in."""


class _Iovec(ctypes.Structure):
    _fields_ = (("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t))


class _Msghdr(ctypes.Structure):
    _fields_ = (
        ("msg_name", ctypes.c_void_p),
        ("msg_namelen", ctypes.c_uint32),
        ("msg_iov", ctypes.c_void_p),
        ("msg_iovlen", ctypes.c_size_t),
        ("msg_control", ctypes.c_void_p),
        ("msg_controllen", ctypes.c_size_t),
        ("msg_flags", ctypes.c_int),
    )


class _Mmsghdr(ctypes.Structure):
    _fields_ = (("msg_hdr", _Msghdr), ("msg_len", ctypes.c_uint))


_libc = ctypes.CDLL(None, use_errno=True)
_recvmmsg = _libc.recvmmsg
_recvmmsg.argtypes = (ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int, ctypes.c_void_p)
_recvmmsg.restype = ctypes.c_int
_sendmmsg = _libc.sendmmsg
_sendmmsg.argtypes = (ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int)
_sendmmsg.restype = ctypes.c_int

_U32 = ctypes.sizeof(ctypes.c_uint32)
_SIZE_T = ctypes.sizeof(ctypes.c_ulong)
# Indexes into the flat views: unsigned ints of the mmsghdr array, size_t of the iovecs.
_MMSG_U32S = ctypes.sizeof(_Mmsghdr) // _U32
_MSG_LEN = _Mmsghdr.msg_len.offset // _U32
_NAMELEN = _Msghdr.msg_namelen.offset // _U32
_IOV_SIZE_TS = ctypes.sizeof(_Iovec) // _SIZE_T
_IOV_LEN = _Iovec.iov_len.offset // _SIZE_T


def _raise_errno(what: str) -> None:
    code = ctypes.get_errno()
    if code in (errno.EAGAIN, errno.EWOULDBLOCK):
        raise BlockingIOError(code, os.strerror(code))
    raise OSError(code, f"{what}: {os.strerror(code)}")


class _Slots:
    """``count`` buffers of ``size`` bytes in one anonymous mapping, with their iovecs
    and message headers (``name`` given: one shared sockaddr buffer)."""

    def __init__(self, count: int, size: int, names: bool) -> None:
        if count <= 0:
            raise ValueError(f"a batch needs at least one slot, got {count}")
        self.count = count
        self.size = size
        self.buffer = mmap.mmap(-1, count * size)
        self.view = memoryview(self.buffer)
        base = ctypes.addressof((ctypes.c_char * (count * size)).from_buffer(self.buffer))
        self.names = (ctypes.c_char * (SOCKADDR_BYTES * (count if names else 1)))()
        name_base = ctypes.addressof(self.names)
        self.iovecs = (_Iovec * count)()
        self.headers = (_Mmsghdr * count)()
        for i in range(count):
            self.iovecs[i].iov_base = base + i * size
            self.iovecs[i].iov_len = size
            hdr = self.headers[i].msg_hdr
            hdr.msg_name = name_base + (i * SOCKADDR_BYTES if names else 0)
            hdr.msg_namelen = SOCKADDR_BYTES
            hdr.msg_iov = ctypes.addressof(self.iovecs[i])
            hdr.msg_iovlen = 1
        self.header_u32 = memoryview(self.headers).cast("B").cast("I")
        # size_t is an unsigned long on every Linux ABI (LP64 and ILP32).
        self.iov_size_t = memoryview(self.iovecs).cast("B").cast("L")
        self.name_bytes = memoryview(self.names).cast("B")

    def close(self) -> None:
        for view in (self.header_u32, self.iov_size_t, self.name_bytes, self.view):
            view.release()
        self.buffer.close()


class RecvBatch:
    """Receives up to ``count`` datagrams from a non-blocking socket per :meth:`receive`."""

    def __init__(self, sock: socket.socket, count: int) -> None:
        self._sock = sock
        self._slots = _Slots(count, SLOT_BYTES, names=True)
        self._headers = ctypes.addressof(self._slots.headers)

    def receive(self) -> list[bytes]:
        """The datagrams waiting (at most ``count``); raises BlockingIOError when there
        is none, OSError on a socket error. :meth:`sender` gives each one's source."""
        slots = self._slots
        got = _recvmmsg(self._sock.fileno(), self._headers, slots.count, MSG_DONTWAIT, None)
        if got < 0:
            _raise_errno("recvmmsg")
        if got == 1:  # a lone datagram (a ping, an ACK): no list of lengths to build
            return [slots.buffer[: slots.header_u32[_MSG_LEN]]]
        lengths = slots.header_u32[_MSG_LEN : got * _MMSG_U32S : _MMSG_U32S].tolist()
        buffer = slots.buffer
        size = slots.size
        # Slicing the mapping copies straight into a new bytes object.
        return [buffer[i * size : i * size + n] for i, n in enumerate(lengths)]

    def senders(self, got: int) -> list[bytes]:
        """The sockaddr of each of the ``got`` datagrams of the last :meth:`receive`.
        Their length is the socket family's: the kernel writes back ``msg_namelen``, but
        for a socket of one family always the same value, so it is not reset."""
        slots = self._slots
        namelen = slots.header_u32[_NAMELEN]
        if got == 1:
            return [bytes(slots.name_bytes[:namelen])]
        names = bytes(slots.name_bytes[: got * SOCKADDR_BYTES])
        return [names[at : at + namelen] for at in range(0, got * SOCKADDR_BYTES, SOCKADDR_BYTES)]

    def close(self) -> None:
        self._slots.close()


class SendBatch:
    """Sends runs of datagrams to one destination in one ``sendmmsg`` each."""

    def __init__(self, sock: socket.socket, count: int) -> None:
        self._sock = sock
        self.count = count
        self._slots = _Slots(count, SLOT_BYTES, names=False)
        self._headers = ctypes.addressof(self._slots.headers)

    def send(self, packets: list[bytes], name: bytes) -> int:
        """Send ``packets`` (at most ``count``) to the sockaddr ``name``; returns how many
        the kernel took (the rest did not fit its send queue). Raises BlockingIOError
        when it took none, OSError on another error."""
        slots = self._slots
        if len(packets) > slots.count:
            raise ValueError(f"{len(packets)} packets for a batch of {slots.count}")
        slots.name_bytes[: len(name)] = name
        u32 = slots.header_u32
        iov = slots.iov_size_t
        view = slots.view
        size = slots.size
        namelen = len(name)
        for i, packet in enumerate(packets):
            start = i * size
            length = len(packet)
            view[start : start + length] = packet
            iov[i * _IOV_SIZE_TS + _IOV_LEN] = length
            u32[i * _MMSG_U32S + _NAMELEN] = namelen
        sent = _sendmmsg(self._sock.fileno(), self._headers, len(packets), MSG_DONTWAIT)
        if sent < 0:
            _raise_errno("sendmmsg")
        return int(sent)

    def close(self) -> None:
        self._slots.close()


def sockaddr(family: socket.AddressFamily, host: str, port: int = 0) -> bytes:
    """``struct sockaddr_in`` / ``sockaddr_in6`` for ``host`` and ``port`` (Linux
    layout: the family in host byte order, then the port in network order)."""
    packed = socket.inet_pton(family, host)
    head = struct.pack("=H", family) + port.to_bytes(2, "big")
    if family == socket.AF_INET:
        return head + packed + bytes(8)
    return head + bytes(4) + packed + bytes(4)


def source_of(name: bytes) -> tuple[str, int]:
    """Host and port of a received ``sockaddr_in`` / ``sockaddr_in6``."""
    port = int.from_bytes(name[2:4], "big")
    if len(name) >= 24:
        return socket.inet_ntop(socket.AF_INET6, name[8:24]), port
    return socket.inet_ntop(socket.AF_INET, name[4:8]), port
