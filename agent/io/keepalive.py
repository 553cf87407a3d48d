"""NAT-keepalives (RFC 3948 section 2.3): the single byte 0xFF sent to a peer on the
NAT-T port while nothing else goes to it, so the NAT keeps the mapping open.
:class:`KeepaliveScheduler` sends them through any ``udp.DatagramEndpoint``.
"""

from __future__ import annotations

import asyncio

from .udp import Address, DatagramEndpoint

DEFAULT_KEEPALIVE_INTERVAL = 20.0
"""RFC 3948 section 4 leaves the interval to the implementation; 20 s is the common one."""


class KeepaliveScheduler:
    """Sends a NAT-keepalive to each registered peer whenever nothing else was sent to it
    on the NAT-T port for one interval (RFC 3948 section 4: only the side behind a NAT
    needs to, and only while idle).

    Activity is read once per tick from the endpoint, so the send path pays one set
    insertion and no clock read: a peer idle for one full tick gets a keepalive, so after
    traffic stops the first keepalive goes out between one and two intervals later, then
    one per interval. :meth:`tick` is public so tests drive it without a loop.
    """

    def __init__(
        self, endpoint: DatagramEndpoint, interval: float = DEFAULT_KEEPALIVE_INTERVAL
    ) -> None:
        if not interval > 0:
            raise ValueError(f"keepalive interval must be positive, got {interval!r}")
        self.endpoint = endpoint
        self.interval = interval
        self._peers: set[Address] = set()
        self._handle: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def peers(self) -> frozenset[Address]:
        return frozenset(self._peers)

    def add_peer(self, addr: Address) -> None:
        self._peers.add(addr)

    def remove_peer(self, addr: Address) -> None:
        self._peers.discard(addr)

    def tick(self) -> list[Address]:
        """Send keepalives to the peers idle since the last tick; returns them."""
        active = self.endpoint.take_active_peers()
        idle = sorted(self._peers - active)
        for addr in idle:
            self.endpoint.send_keepalive(addr)
        return idle

    def start(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self._loop = loop or asyncio.get_running_loop()
        # Forget activity from before the start, so the first tick judges one interval.
        self.endpoint.take_active_peers()
        self._handle = self._loop.call_later(self.interval, self._on_timer)

    def _on_timer(self) -> None:
        self.tick()
        if self._loop is not None:
            self._handle = self._loop.call_later(self.interval, self._on_timer)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._loop = None
