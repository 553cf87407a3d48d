"""The engine behind the Agent service: ApplyPlan puts plans in force through it,
GetStatus carries its SAs with their counters, and a restarted agent restores its
persisted plan and brings the tunnel back without the controller."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path
from typing import Any

from tests.support.engine_pair import SITES, Fleet, node_plan, udp4
from vpnfleet.agent.engine import Engine
from vpnfleet.agent.hollow import sample_plan
from vpnfleet.agent.io.memory import MemoryEndpoint, MemoryNetwork
from vpnfleet.agent.io.tun import MemoryTun
from vpnfleet.agent.io.udp import EspHandler, IkeHandler
from vpnfleet.agent.service import AgentService
from vpnfleet.agent.sink import RekeyTarget
from vpnfleet.agent.store import PlanStore
from vpnfleet.protos import plan_pb2


def message(host: str, peer: str) -> plan_pb2.NodePlan:
    return sample_plan(host, *SITES[host], [(peer, *SITES[peer])])


async def services(fleet: Fleet, root: Path) -> dict[str, AgentService]:
    out = {}
    for host, node in fleet.nodes.items():
        out[host] = AgentService(host, PlanStore(root / host), node.engine, node.hub)
        await out[host].restore()
    return out


async def test_get_status_shows_the_sas_and_their_counters(tmp_path: Path) -> None:
    fleet = Fleet("a", "b")
    await fleet.start()
    agents = await services(fleet, tmp_path)
    await agents["b"].apply(message("b", "a"), dry_run=False)
    await agents["a"].apply(message("a", "b"), dry_run=False)
    fleet.pump()
    for _ in range(3):
        fleet["a"].send(udp4("10.1.0.5", "10.2.0.7"))
    fleet.pump()

    status = agents["a"].status()
    assert status.data_plane and status.peers_up == 1 and status.peers_total == 1
    (ike,) = status.ike_sas
    assert ike.peer == "b" and ike.state == "established" and ike.initiator
    assert ike.spi_i and ike.spi_r and ike.proposal == "aes256gcm16-prfsha384-x25519"
    assert ike.remote_address == "192.0.2.2:500" and ike.established_at > 0
    assert ike.next_rekey_at > ike.established_at
    (child,) = ike.children
    assert child.state == "installed" and child.mode == "tunnel"
    assert child.local_ts == ["10.1.0.0/24"] and child.remote_ts == ["10.2.0.0/24"]
    assert child.packets_out == 3 and child.packets_in == 0
    (peer_child,) = agents["b"].status().ike_sas[0].children
    assert peer_child.packets_in == 3
    assert (peer_child.spi_in, peer_child.spi_out) == (child.spi_out, child.spi_in)


async def test_restarted_agent_restores_its_plan_and_tunnel(tmp_path: Path) -> None:
    fleet = Fleet("a", "b")
    await fleet.start()
    agents = await services(fleet, tmp_path)
    await agents["b"].apply(message("b", "a"), dry_run=False)
    await agents["a"].apply(message("a", "b"), dry_run=False)
    fleet.pump()
    assert fleet["a"].engine.peers_up() == 1

    await fleet["a"].restart()  # SIGKILL: nothing said to b
    restarted = AgentService("a", PlanStore(tmp_path / "a"), fleet["a"].engine, fleet["a"].hub)
    assert await restarted.restore() == []
    fleet.pump()
    assert restarted.status().peers_up == 1 and restarted.generation == 1
    packet = udp4("10.2.0.7", "10.1.0.5")
    fleet["b"].send(packet)
    fleet.pump()
    assert fleet["a"].tun.delivered == [packet]


async def test_rekey_on_a_live_loop_answers_when_the_exchange_is_done() -> None:
    """With the event loop's own clock (no fake time), Rekey waits for the new SAs."""
    net = MemoryNetwork()
    engines = {}
    for host in ("a", "b"):
        address = SITES[host][0]

        def endpoint(on_ike: IkeHandler, on_esp: EspHandler, address: str = address) -> Any:
            return MemoryEndpoint(net, on_ike, on_esp, host=address)

        engines[host] = Engine(MemoryTun(), endpoint, rng=random.Random(3))
        await engines[host].start()

    async def wire() -> None:
        while True:
            net.pump()
            await asyncio.sleep(0.005)

    pump = asyncio.create_task(wire())
    try:
        await engines["b"].put_in_force(node_plan("b", ["a"]))
        await engines["a"].put_in_force(node_plan("a", ["b"]))
        for _ in range(200):
            if engines["a"].peers_up() and engines["b"].peers_up():
                break
            await asyncio.sleep(0.01)
        (before,) = engines["a"].ike_sas()
        (outcome,) = await engines["a"].rekey(["b"], RekeyTarget.BOTH)
        assert outcome.ok, outcome.detail
        assert "child" in outcome.detail and "IKE" in outcome.detail
        (after,) = engines["a"].ike_sas()
        assert after.spi_i != before.spi_i
        assert after.children[0].spi_in != before.children[0].spi_in
        assert after.rekeyed_at > 0 and after.children[0].rekeyed_at > 0
    finally:
        pump.cancel()
        for engine in engines.values():
            await engine.stop()
