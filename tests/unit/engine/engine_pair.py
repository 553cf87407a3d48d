"""Engines on an in-memory network with fake time, and plans built by hand."""

from __future__ import annotations

import ipaddress
import random
import struct
from collections.abc import Callable, Sequence

from vpnfleet.agent.convert import plan_from_proto
from vpnfleet.agent.engine import Engine
from vpnfleet.agent.engine.clock import ManualScheduler
from vpnfleet.agent.hollow import sample_plan
from vpnfleet.agent.io.memory import MemoryEndpoint, MemoryNetwork
from vpnfleet.agent.io.tun import MemoryTun
from vpnfleet.agent.plan import AgentPlan
from vpnfleet.agent.sink import EventHub, SaEventReport
from vpnfleet.protos import plan_pb2
from vpnfleet.protos.hashing import plan_content_hash

SITES = {
    "a": ("192.0.2.1", "10.1.0.0/24"),
    "b": ("192.0.2.2", "10.2.0.0/24"),
    "c": ("192.0.2.3", "10.3.0.0/24"),
}

PlanEdit = Callable[[plan_pb2.NodePlan], None]


def node_plan(
    host: str, peers: Sequence[str], generation: int = 1, edit: PlanEdit | None = None
) -> AgentPlan:
    address, subnet = SITES[host]
    msg = sample_plan(host, address, subnet, [(p, *SITES[p]) for p in peers], generation=generation)
    if edit is not None:
        edit(msg)
        msg.content_hash = plan_content_hash(msg)
    return plan_from_proto(msg)


class Node:
    def __init__(self, net: MemoryNetwork, clock: ManualScheduler, host: str) -> None:
        self.host = host
        self.address = SITES[host][0]
        self.net = net
        self.clock = clock
        self.tun = MemoryTun(f"tun-{host}")
        self.hub = EventHub(queue_size=10_000)
        self.queue = self.hub.subscribe()
        self.seen: list[SaEventReport] = []
        self.engine = self._new_engine()

    def _new_engine(self) -> Engine:
        return Engine(
            self.tun,
            lambda on_ike, on_esp: MemoryEndpoint(self.net, on_ike, on_esp, host=self.address),
            scheduler=self.clock,
            events=self.hub,
            rng=random.Random(7),
        )

    async def restart(self) -> None:
        """A crash: the old engine's sockets go away without a word to the peers."""
        assert self.engine.endpoint is not None
        self.engine.endpoint.close()
        self.engine = self._new_engine()
        await self.engine.start()

    def events(self, kind: str | None = None, peer: str | None = None) -> list[SaEventReport]:
        while not self.queue.empty():
            self.seen.append(self.queue.get_nowait())
        return [
            e
            for e in self.seen
            if (kind is None or e.kind == kind) and (peer is None or e.peer == peer)
        ]

    def child_spis(self, peer: str) -> tuple[int, int]:
        (report,) = [r for r in self.engine.ike_sas() if r.peer == peer]
        (child,) = report.children
        return child.spi_in, child.spi_out

    def send(self, packet: bytes) -> None:
        self.tun.inject(packet)
        assert self.engine.dp is not None
        self.engine.dp.process_tun()


class Fleet:
    def __init__(self, *hosts: str) -> None:
        self.net = MemoryNetwork()
        self.clock = ManualScheduler()
        self.nodes = {h: Node(self.net, self.clock, h) for h in hosts}

    def __getitem__(self, host: str) -> Node:
        return self.nodes[host]

    async def start(self) -> None:
        for node in self.nodes.values():
            await node.engine.start()

    async def apply(self, host: str, plan: AgentPlan) -> None:
        await self.nodes[host].engine.put_in_force(plan)
        self.pump()

    async def mesh(self, **edits: PlanEdit) -> None:
        """Every node peers with every other; plans applied in name order."""
        hosts = sorted(self.nodes)
        for host in hosts:
            peers = [h for h in hosts if h != host]
            await self.apply(host, node_plan(host, peers, edit=edits.get(host)))
        # Initiations that reached a peer before its plan did are retransmitted after 1 s.
        self.advance(2)

    def pump(self) -> None:
        self.net.pump()

    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds, between=self.pump)
        self.pump()


def udp4(src: str, dst: str, payload: bytes = b"through the tunnel") -> bytes:
    """An IPv4/UDP packet (checksums zero: nothing on the way checks them)."""
    udp = struct.pack("!HHHH", 1000, 2000, 8 + len(payload), 0) + payload
    header = struct.pack(
        "!BBHHHBBH4s4s",
        0x45,
        0,
        20 + len(udp),
        0,
        0,
        64,
        17,
        0,
        ipaddress.IPv4Address(src).packed,
        ipaddress.IPv4Address(dst).packed,
    )
    return header + udp
