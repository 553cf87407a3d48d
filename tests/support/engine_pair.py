"""Engines on an in-memory network with fake time, and plans built by hand."""

from __future__ import annotations

import ipaddress
import random
import struct
from collections.abc import Callable, Sequence
from pathlib import Path

from vpnfleet.agent.convert import plan_from_proto
from vpnfleet.agent.engine import Engine
from vpnfleet.agent.engine.clock import ManualScheduler
from vpnfleet.agent.engine.plan_routes import RouteTable
from vpnfleet.agent.engine.translate import IkeCredentials
from vpnfleet.agent.hollow import sample_plan
from vpnfleet.agent.ike.admission import ResponderLimits
from vpnfleet.agent.io.memory import Datagram, MemoryEndpoint, MemoryNetwork
from vpnfleet.agent.io.tun import MemoryTun
from vpnfleet.agent.io.udp import NATT_PORT
from vpnfleet.agent.plan import AgentPlan
from vpnfleet.agent.service import AgentService
from vpnfleet.agent.sink import EventHub, RekeyOutcome, RekeyTarget, SaEventReport
from vpnfleet.agent.store import PlanStore
from vpnfleet.controller.statedir import pki
from vpnfleet.protos import plan_pb2
from vpnfleet.protos.hashing import plan_content_hash

SITES = {
    "a": ("192.0.2.1", "10.1.0.0/24"),
    "b": ("192.0.2.2", "10.2.0.0/24"),
    "c": ("192.0.2.3", "10.3.0.0/24"),
}

PlanEdit = Callable[[plan_pb2.NodePlan], None]


def plan_message(
    host: str, peers: Sequence[str], generation: int = 1, edit: PlanEdit | None = None
) -> plan_pb2.NodePlan:
    """The NodePlan message of ``host`` meshed with ``peers`` (edited, then rehashed)."""
    address, subnet = SITES[host]
    msg = sample_plan(host, address, subnet, [(p, *SITES[p]) for p in peers], generation=generation)
    if edit is not None:
        edit(msg)
        msg.content_hash = plan_content_hash(msg)
    return msg


def node_plan(
    host: str, peers: Sequence[str], generation: int = 1, edit: PlanEdit | None = None
) -> AgentPlan:
    return plan_from_proto(plan_message(host, peers, generation, edit))


def behind_nat(*peers: str) -> PlanEdit:
    """Marks ``peers`` of a plan as behind a NAT (the planner does so for ``nat: true``)."""

    def edit(msg: plan_pb2.NodePlan) -> None:
        for peer in msg.peers:
            if peer.name in peers:
                peer.nat.remote_behind_nat = True

    return edit


class Node:
    def __init__(
        self,
        net: MemoryNetwork,
        clock: ManualScheduler,
        host: str,
        limits: ResponderLimits | None = None,
        routing: RouteTable | None = None,
    ) -> None:
        self.host = host
        self.limits = limits
        self.routing = routing
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
            limits=self.limits,
            routing=self.routing,
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


def agent_service(node: Node, directory: Path) -> AgentService:
    """The gRPC service over ``node``'s engine, its plans stored in ``directory``."""
    return AgentService(node.host, PlanStore(directory), node.engine, events=node.hub)


class Fleet:
    def __init__(
        self,
        *hosts: str,
        limits: ResponderLimits | None = None,
        routing: dict[str, RouteTable] | None = None,
    ) -> None:
        """``routing``: the route table of the hosts that have one (a fake of netlink)."""
        self.net = MemoryNetwork()
        self.clock = ManualScheduler()
        tables = routing or {}
        self.nodes = {h: Node(self.net, self.clock, h, limits, tables.get(h)) for h in hosts}

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
        # Initiations that reached a peer before its plan did are answered when it comes;
        # the rest of the set-up (and any retransmission) runs on fake time.
        self.advance(2)

    def pump(self) -> None:
        self.net.pump()

    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds, between=self.pump)
        self.pump()

    def rekey(self, host: str, peer: str, target: RekeyTarget, within: float = 0.0) -> RekeyOutcome:
        """``host``'s Rekey call for ``peer`` on fake time: started, the network pumped
        and the clock advanced ``within`` seconds, by when it must have its answer."""
        pending = self.nodes[host].engine.start_rekey(peer, target)
        self.pump()
        if within:
            self.advance(within)
        assert pending.done, f"{host}'s rekey of {peer} unsettled after {within:g} s"
        return pending.result()


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


def carries_ike(batch: list[Datagram]) -> bool:
    # On port 4500 IKE follows four zero octets, ESP its SPI (RFC 3948 section 2.2).
    return any(d.dst[1] != NATT_PORT or d.data[:4] == b"\0\0\0\0" for d in batch)


class Traffic:
    """One packet each way per network round that carries IKE (and per :meth:`tick`)."""

    def __init__(self, fleet: Fleet, a: Node, b: Node) -> None:
        self.fleet, self.a, self.b = fleet, a, b
        self.sent_ab: list[bytes] = []
        self.sent_ba: list[bytes] = []
        a.tun.delivered.clear()
        b.tun.delivered.clear()
        fleet.net.reorder = self._round

    def _round(self, batch: list[Datagram]) -> list[Datagram]:
        # Sent now, these arrive in the next round, after this round's IKE messages.
        if carries_ike(batch):
            self.tick()
        return batch

    def tick(self) -> None:
        n = len(self.sent_ab)
        one = udp4("10.1.0.5", "10.2.0.7", f"a to b {n}".encode())
        other = udp4("10.2.0.7", "10.1.0.5", f"b to a {n}".encode())
        self.sent_ab.append(one)
        self.sent_ba.append(other)
        self.a.send(one)
        self.b.send(other)

    def settle(self) -> None:
        self.fleet.net.reorder = None
        self.fleet.pump()
        assert self.b.tun.delivered == self.sent_ab
        assert self.a.tun.delivered == self.sent_ba


# -- certificate peers -------------------------------------------------------------------


def enrolled(ca_dir: Path, agent_dir: Path, host: str) -> IkeCredentials:
    """The host's IKE certificate and key as enrolment leaves them (SAN DNS:host)."""
    agent_dir.mkdir(parents=True, exist_ok=True)
    pki.enroll_local(ca_dir, agent_dir, host)
    return IkeCredentials.from_pem(
        (agent_dir / "ike.pem").read_bytes(), (agent_dir / "ike.key").read_bytes()
    )


def pubkey_plan(
    host: str,
    peers: list[str],
    anchors: list[bytes],
    accepted: tuple[bytes, ...] = (),
    generation: int = 1,
    crls: tuple[bytes, ...] = (),
) -> AgentPlan:
    """The sample plan with every peer on certificates anchored at ``anchors[0]`` (and
    at the ``accepted`` CAs too), carrying ``crls``."""

    def edit(msg: plan_pb2.NodePlan) -> None:
        del msg.trust_anchors[:]
        msg.trust_anchors.extend(anchors)
        msg.crls.extend(crls)
        for peer in msg.peers:
            peer.auth.CopyFrom(
                plan_pb2.Credential(
                    method=plan_pb2.AUTH_METHOD_PUBKEY,
                    reference="cert:fleet-ca",
                    ca_fingerprint=pki.fingerprint(anchors[0]),
                    accepted_ca_fingerprints=[pki.fingerprint(pem) for pem in accepted],
                )
            )

    return node_plan(host, peers, generation, edit=edit)


def with_credentials(fleet: Fleet, host: str, credentials: IkeCredentials | None) -> Node:
    """Give ``host`` a new engine holding these IKE credentials (before it starts)."""
    node = fleet[host]
    node.engine = Engine(
        node.tun,
        lambda on_ike, on_esp: MemoryEndpoint(fleet.net, on_ike, on_esp, host=node.address),
        scheduler=fleet.clock,
        events=node.hub,
        rng=random.Random(7),
        ike_credentials=credentials,
    )
    return node
