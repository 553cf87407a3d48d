"""Two in-memory IKEv1 endpoints on fake time (the IKEv1 twin of ike_peers.py).

Datagrams are routed by cookie pair; a Main mode message 1 (responder cookie zero)
for no known SA makes a new responder, as a driver's dispatcher would.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

from vpnfleet.agent.ike.config import ChildConfig, Identity, Mode, selector
from vpnfleet.agent.ike.events import IkeEvent
from vpnfleet.agent.ike.proposals import EspProposal
from vpnfleet.agent.ike.states import Role
from vpnfleet.agent.ike.v1.config import IkeV1Config, Phase1Proposal
from vpnfleet.agent.ike.v1.constants import ExchangeType
from vpnfleet.agent.ike.v1.sa import IkeV1Sa, V1State

LEFT = ("192.0.2.1", 500)
RIGHT = ("192.0.2.2", 500)
PSK = b"correct horse battery staple"
START = 1000.0
T = TypeVar("T")


def v1_config(
    local_id: str,
    remote_id: str,
    *,
    local_net: str,
    remote_net: str,
    ike: tuple[str, ...] = ("aes256-sha256-modp2048",),
    esp: tuple[str, ...] = ("aes128-sha256",),
    mode: Mode = Mode.TUNNEL,
    psk: bytes = PSK,
    **kw: Any,
) -> IkeV1Config:
    return IkeV1Config(
        Identity.parse(local_id),
        Identity.parse(remote_id),
        psk,
        tuple(Phase1Proposal.parse(p) for p in ike),
        ChildConfig(
            "net",
            tuple(EspProposal.parse(e) for e in esp),
            (selector(local_net),),
            (selector(remote_net),),
            mode,
        ),
        **kw,
    )


def left_right(
    left: dict[str, Any] | None = None, right: dict[str, Any] | None = None, **kw: Any
) -> tuple[IkeV1Config, IkeV1Config]:
    """Matching configurations; ``left``/``right`` override one side only."""
    a = {"local_net": "10.1.0.0/16", "remote_net": "10.2.0.0/16", **kw, **(left or {})}
    b = {"local_net": "10.2.0.0/16", "remote_net": "10.1.0.0/16", **kw, **(right or {})}
    return (
        v1_config("left.example", "right.example", **a),
        v1_config("right.example", "left.example", **b),
    )


class Endpoint:
    def __init__(self, name: str, address: tuple[str, int], config: IkeV1Config) -> None:
        self.name = name
        self.address = address
        self.config = config
        self.sas: list[IkeV1Sa] = []
        self.events: list[IkeEvent] = []

    @property
    def sa(self) -> IkeV1Sa:
        return self.sas[-1]

    def route(self, data: bytes) -> IkeV1Sa | None:
        icookie, rcookie = data[:8], data[8:16]
        for sa in self.sas:
            if sa.icookie == icookie and (
                sa.rcookie == rcookie or not any(rcookie) or sa.state is V1State.SA_EXCHANGE
            ):
                return sa
        phase1 = (ExchangeType.IDENTITY_PROTECTION, ExchangeType.AGGRESSIVE)
        if len(data) >= 28 and data[18] in phase1 and not any(rcookie):
            sa = IkeV1Sa(self.config, Role.RESPONDER, self.address)
            self.sas.append(sa)
            return sa
        return None

    def collect(self) -> None:
        for sa in self.sas:
            while (event := sa.next_event()) is not None:
                self.events.append(event)

    def of(self, kind: type[T]) -> list[T]:
        return [e for e in self.events if isinstance(e, kind)]


class Peers:
    def __init__(self, left: IkeV1Config, right: IkeV1Config) -> None:
        self.now = START
        self.wall_start = time.time()
        self.left = Endpoint("left", LEFT, left)
        self.right = Endpoint("right", RIGHT, right)
        self.left.sas.append(IkeV1Sa(left, Role.INITIATOR, LEFT))
        self.sent: list[tuple[str, bytes]] = []
        """Every datagram put on the wire, by sender name."""

    @classmethod
    def established(cls, **kw: object) -> Peers:
        peers = cls(*left_right(**kw))  # type: ignore[arg-type]
        peers.start()
        peers.run()
        assert peers.left.sa.state is V1State.ESTABLISHED, peers.left.events
        assert peers.right.sa.state is V1State.ESTABLISHED, peers.right.events
        return peers

    @property
    def wall(self) -> float:
        """Wall-clock time moving with the fake clock (certificates are judged by it)."""
        return self.wall_start + (self.now - START)

    def start(self) -> None:
        self.left.sa.initiate(RIGHT, self.now)

    def other(self, endpoint: Endpoint) -> Endpoint:
        return self.right if endpoint is self.left else self.left

    def outgoing(self, endpoint: Endpoint) -> list[tuple[bytes, tuple[str, int]]]:
        out = []
        for sa in endpoint.sas:
            out += sa.datagrams_to_send(self.now)
        return out

    def deliver(self, to: Endpoint, data: bytes, port: int = 500) -> None:
        """``port``: where it was sent to; the sender's socket of that port sends it
        (UDP 4500 once NAT-T floated, RFC 3947 section 4)."""
        sa = to.route(data)
        if sa is not None:
            source = self.other(to).address
            sa.receive_datagram(data, (source[0], port), self.now, self.wall)
        self.collect()

    def run(self, drop: Callable[[str, bytes], bool] = lambda *_: False) -> None:
        """Deliver both ways until quiet; ``drop(sender_name, data)`` loses a datagram."""
        for _ in range(100):
            self.collect()
            moved = False
            for sender in (self.left, self.right):
                for data, addr in self.outgoing(sender):
                    moved = True
                    self.sent.append((sender.name, data))
                    if not drop(sender.name, data):
                        self.deliver(self.other(sender), data, addr[1])
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
