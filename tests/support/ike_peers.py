"""Two in-memory IKE endpoints on fake time that route datagrams by SPI.

Unlike the fixed pair of test_ike_sa_pair.py, each endpoint holds every IKE SA it
has (rekeys make new ones) and follows IkeSaRekeyed events, as a real driver must.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from vpnfleet.agent.ike.config import ChildConfig, Identity, IkeConfig, selector
from vpnfleet.agent.ike.events import IkeEvent, IkeSaRekeyed
from vpnfleet.agent.ike.ike_sa import IkeSa
from vpnfleet.agent.ike.proposals import EspProposal, IkeProposal
from vpnfleet.agent.ike.states import IkeSaState, Role

LEFT = ("192.0.2.1", 500)
RIGHT = ("192.0.2.2", 500)
T = TypeVar("T")


def ike_config(
    local_id: str,
    remote_id: str,
    local_net: str,
    remote_net: str,
    *,
    ike: tuple[str, ...] = ("aes256gcm16-prfsha384-x25519",),
    esp: tuple[str, ...] = ("aes256gcm16", "aes128-sha256"),
    extra: tuple[ChildConfig, ...] = (),
    dpd_delay: float | None = None,
) -> IkeConfig:
    return IkeConfig(
        Identity.parse(local_id),
        Identity.parse(remote_id),
        b"correct horse battery staple",
        tuple(IkeProposal.parse(p) for p in ike),
        ChildConfig(
            "net",
            tuple(EspProposal.parse(e) for e in esp),
            (selector(local_net),),
            (selector(remote_net),),
        ),
        dpd_delay=dpd_delay,
        extra_children=extra,
    )


def left_right(**kw: object) -> tuple[IkeConfig, IkeConfig]:
    left = ike_config("left.example", "right.example", "10.1.0.0/16", "10.2.0.0/16", **kw)  # type: ignore[arg-type]
    right = ike_config("right.example", "left.example", "10.2.0.0/16", "10.1.0.0/16", **kw)  # type: ignore[arg-type]
    return left, right


class Endpoint:
    def __init__(self, name: str, address: tuple[str, int], sa: IkeSa) -> None:
        self.name = name
        self.address = address
        self.sas: list[IkeSa] = [sa]
        self.events: list[IkeEvent] = []

    @property
    def sa(self) -> IkeSa:
        """The IKE SA that holds the children (the newest one not closed)."""
        live = [s for s in self.sas if not s.is_closed and s.state is IkeSaState.ESTABLISHED]
        with_children = [s for s in live if s.children]
        return (with_children or live or self.sas)[-1]

    def route(self, data: bytes) -> IkeSa | None:
        spi_i, spi_r, flags = data[:8], data[8:16], data[19]
        from_original_initiator = bool(flags & 0x08)
        for sa in self.sas:
            if from_original_initiator and not sa.is_initiator and sa.spi_r == spi_r:
                return sa
            if not from_original_initiator and sa.is_initiator and sa.spi_i == spi_i:
                return sa
        return None

    def collect(self) -> None:
        for sa in list(self.sas):
            while (event := sa.next_event()) is not None:
                self.events.append(event)
                if isinstance(event, IkeSaRekeyed) and event.new_sa not in self.sas:
                    self.sas.append(event.new_sa)

    def of(self, kind: type[T]) -> list[T]:
        return [e for e in self.events if isinstance(e, kind)]


START = 1000.0


class Peers:
    def __init__(self, left: IkeConfig, right: IkeConfig, *, wall: float | None = None) -> None:
        """``wall``: the wall-clock time (seconds since the epoch) at the start; it moves
        with the fake clock. By default the time the test runs, which the test
        certificates are made valid around."""
        self.now = START
        self.wall_start = time.time() if wall is None else wall
        self.left = Endpoint("left", LEFT, IkeSa(left, Role.INITIATOR))
        self.right = Endpoint("right", RIGHT, IkeSa(right, Role.RESPONDER))

    @classmethod
    def established(cls, **kw: object) -> Peers:
        peers = cls(*left_right(**kw))
        peers.left.sa.initiate(RIGHT, peers.now)
        peers.run()
        assert peers.left.sa.state is IkeSaState.ESTABLISHED
        assert peers.right.sa.state is IkeSaState.ESTABLISHED
        return peers

    @property
    def wall(self) -> float:
        return self.wall_start + (self.now - START)

    def other(self, endpoint: Endpoint) -> Endpoint:
        return self.right if endpoint is self.left else self.left

    def outgoing(self, endpoint: Endpoint) -> list[bytes]:
        out = []
        for sa in endpoint.sas:
            out += [d for d, _ in sa.datagrams_to_send(self.now)]
        return out

    def deliver(self, to: Endpoint, data: bytes) -> None:
        sa = to.route(data)
        if sa is not None:
            sa.receive_datagram(data, self.other(to).address, self.now, self.wall)
        self.collect()

    def run(self, drop: Callable[[str, bytes], bool] = lambda *_: False) -> None:
        """Deliver both ways until quiet; ``drop(sender_name, data)`` loses a datagram."""
        for _ in range(100):
            self.collect()
            moved = False
            for sender in (self.left, self.right):
                for data in self.outgoing(sender):
                    moved = True
                    if not drop(sender.name, data):
                        self.deliver(self.other(sender), data)
            if not moved:
                break
        self.collect()

    def advance(self, seconds: float) -> None:
        self.now += seconds
        for endpoint in (self.left, self.right):
            for sa in endpoint.sas:
                timer = sa.get_timer()
                if timer is not None and timer <= self.now:
                    sa.handle_timer(self.now)
        self.collect()

    def collect(self) -> None:
        self.left.collect()
        self.right.collect()

    def clear_events(self) -> None:
        self.left.events.clear()
        self.right.events.clear()
