"""An in-memory stand-in for the UDP endpoints, so two data planes (or two IKE SAs) can
exchange traffic inside one test process (wireguard-go's ``conn.Bind`` fakes are the
model).

Endpoints register an address on a :class:`MemoryNetwork`; what they send is queued with
its wire framing (the non-ESP marker on the NAT-T port, the keepalive byte) and delivered
only when the test calls :meth:`MemoryNetwork.pump`, through the same demultiplexing as
the real sockets (:func:`~vpnfleet.agent.io.udp.classify_natt`). Hooks let a test drop,
duplicate, reorder or rewrite (NAT) datagrams in flight.
"""

from __future__ import annotations

import asyncio
import collections
import errno
from collections.abc import Callable
from dataclasses import dataclass, replace

from .udp import (
    IKE_PORT,
    NAT_KEEPALIVE,
    NATT_PORT,
    NON_ESP_MARKER,
    Address,
    BatchEndHandler,
    DatagramKind,
    EspHandler,
    IkeHandler,
    UdpCounters,
    UdpError,
    classify_ike,
    classify_natt,
)


@dataclass(frozen=True)
class Datagram:
    """One datagram in flight, framed as it would be on the wire."""

    src: Address
    dst: Address
    data: bytes


DropHook = Callable[[Datagram], bool]
"""Return True to lose the datagram."""
DuplicateHook = Callable[[Datagram], bool]
"""Return True to deliver the datagram twice."""
ReorderHook = Callable[[list[Datagram]], list[Datagram]]
"""Given the datagrams of one pump round in send order, return them in delivery order."""
TranslateHook = Callable[[Datagram], Datagram]
"""Rewrite a datagram in flight (a NAT changing the source address, for example)."""


class MemoryNetwork:
    """A switch for :class:`MemoryEndpoint` instances, keyed by (address, port)."""

    def __init__(self) -> None:
        self._bound: dict[Address, tuple[MemoryEndpoint, int]] = {}
        self._queue: collections.deque[Datagram] = collections.deque()
        self.drop: DropHook | None = None
        self.duplicate: DuplicateHook | None = None
        self.reorder: ReorderHook | None = None
        self.translate: TranslateHook | None = None
        self.delivered = 0
        self.dropped = 0
        self.unreachable = 0
        """Datagrams sent to an address no endpoint has bound (silently lost, as UDP)."""

    def bind(self, endpoint: MemoryEndpoint, addr: Address) -> None:
        if addr in self._bound:
            raise UdpError(errno.EADDRINUSE, f"memory address {addr[0]}:{addr[1]} is in use")
        self._bound[addr] = (endpoint, addr[1])

    def unbind(self, addr: Address) -> None:
        self._bound.pop(addr, None)

    def send(self, datagram: Datagram) -> None:
        self._queue.append(datagram)

    @property
    def in_flight(self) -> int:
        return len(self._queue)

    def pump(self, max_rounds: int = 100) -> int:
        """Deliver queued datagrams, including those sent by receivers in reaction, until
        the network is quiet or ``max_rounds`` rounds have run. Returns how many were
        delivered."""
        delivered = 0
        for _ in range(max_rounds):
            if not self._queue:
                break
            batch = list(self._queue)
            self._queue.clear()
            if self.reorder is not None:
                batch = self.reorder(batch)
            for datagram in batch:
                delivered += self._deliver_one(datagram)
        self.delivered += delivered
        return delivered

    def _deliver_one(self, datagram: Datagram) -> int:
        if self.translate is not None:
            datagram = self.translate(datagram)
        if self.drop is not None and self.drop(datagram):
            self.dropped += 1
            return 0
        copies = 2 if self.duplicate is not None and self.duplicate(datagram) else 1
        target = self._bound.get(datagram.dst)
        if target is None:
            self.unreachable += copies
            return 0
        endpoint, port = target
        for _ in range(copies):
            endpoint.receive(datagram.data, datagram.src, port)
        return copies


class MemoryEndpoint:
    """The in-memory counterpart of :class:`~vpnfleet.agent.io.udp.UdpEndpoint`, with the
    same send methods, callbacks and counters."""

    def __init__(
        self,
        network: MemoryNetwork,
        on_ike: IkeHandler,
        on_esp: EspHandler,
        *,
        host: str,
        ike_port: int | None = IKE_PORT,
        natt_port: int = NATT_PORT,
    ) -> None:
        self.network = network
        self.counters = UdpCounters()
        self.host = host
        self.ike_port = ike_port
        self.natt_port = natt_port
        self._on_ike = on_ike
        self._on_esp = on_esp
        self.on_batch_end: BatchEndHandler | None = None
        self._active: set[Address] = set()
        network.bind(self, (host, natt_port))
        if ike_port is not None:
            try:
                network.bind(self, (host, ike_port))
            except UdpError:
                network.unbind((host, natt_port))
                raise
        self.closed = False

    def start(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Nothing to register: delivery happens in :meth:`MemoryNetwork.pump`. Present so
        code written against the real endpoint runs unchanged."""

    def receive(self, data: bytes, src: Address, local_port: int) -> None:
        """Called by the network: one datagram that arrived on ``local_port``."""
        if local_port == self.natt_port:
            kind, payload = classify_natt(data)
        else:
            kind, payload = classify_ike(data)
        counters = self.counters
        if kind is DatagramKind.IKE:
            counters.rx_ike += 1
            self._on_ike(payload, src, local_port)
        elif kind is DatagramKind.ESP:
            counters.rx_esp += 1
            self._on_esp(payload, src)
            if self.on_batch_end is not None:  # every datagram is a read of its own
                self.on_batch_end()
        elif kind is DatagramKind.KEEPALIVE:
            counters.rx_keepalive += 1
        elif kind is DatagramKind.SHORT:
            counters.rx_short += 1
        else:
            counters.rx_malformed += 1

    def send_ike(self, data: bytes, addr: Address, via_4500: bool) -> None:
        self._check_open()
        if via_4500:
            self._active.add(addr)
            self.network.send(Datagram((self.host, self.natt_port), addr, NON_ESP_MARKER + data))
        elif self.ike_port is None:
            raise UdpError(errno.ENOTCONN, "this endpoint has no IKE port 500 socket")
        else:
            self.network.send(Datagram((self.host, self.ike_port), addr, data))
        self.counters.tx_ike += 1

    def send_esp(self, data: bytes, addr: Address) -> None:
        self._check_open()
        self._active.add(addr)
        self.network.send(Datagram((self.host, self.natt_port), addr, data))
        self.counters.tx_esp += 1

    def send_esp_batch(self, packets: list[bytes], addr: Address) -> None:
        """As the real endpoint's: the datagrams arrive one by one, as GSO splits them."""
        for packet in packets:
            self.send_esp(packet, addr)

    def send_keepalive(self, addr: Address) -> None:
        self._check_open()
        self.network.send(Datagram((self.host, self.natt_port), addr, NAT_KEEPALIVE))
        self.counters.tx_keepalive += 1

    def send_raw(self, data: bytes, addr: Address, via_4500: bool = True) -> None:
        """Put arbitrary bytes on the wire (tests: garbage, truncated datagrams)."""
        port = self.natt_port if via_4500 else (self.ike_port or self.natt_port)
        self.network.send(Datagram((self.host, port), addr, data))

    def take_active_peers(self) -> set[Address]:
        active, self._active = self._active, set()
        return active

    def kernel_drops(self) -> int | None:
        """The in-memory network hands over every datagram: nothing is dropped below."""
        return 0

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.network.unbind((self.host, self.natt_port))
        if self.ike_port is not None:
            self.network.unbind((self.host, self.ike_port))

    def _check_open(self) -> None:
        if self.closed:
            raise UdpError(errno.EBADF, f"memory endpoint {self.host} is closed")


def nat_translate(inside: str, public_host: str, first_port: int = 40000) -> TranslateHook:
    """A translate hook playing a port-restricted NAT: each source port of ``inside`` gets
    its own port on ``public_host`` (from ``first_port`` up), and datagrams to a mapped
    public port go back to the inside address and port that created the mapping."""
    outward: dict[int, int] = {}
    inward: dict[int, int] = {}

    def translate(datagram: Datagram) -> Datagram:
        if datagram.src[0] == inside:
            public_port = outward.get(datagram.src[1])
            if public_port is None:
                public_port = first_port + len(outward)
                outward[datagram.src[1]] = public_port
                inward[public_port] = datagram.src[1]
            return replace(datagram, src=(public_host, public_port))
        if datagram.dst[0] == public_host and datagram.dst[1] in inward:
            return replace(datagram, dst=(inside, inward[datagram.dst[1]]))
        return datagram

    return translate
