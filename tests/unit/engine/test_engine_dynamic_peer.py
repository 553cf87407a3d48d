"""A peer with no fixed address (plan ``dynamic_address``, an external peer declared
``address: any``): its IKE_SA_INIT is taken from whatever source it comes, IKE_AUTH
checks its identity, and requests no peer claims are counted, with their sources, in
the agent's status."""

from __future__ import annotations

from pathlib import Path

from tests.support.engine_pair import SITES, Fleet, node_plan, udp4
from vpnfleet.agent.engine.incoming import UnmatchedSources
from vpnfleet.agent.io.memory import nat_translate
from vpnfleet.agent.service import AgentService
from vpnfleet.agent.store import PlanStore
from vpnfleet.protos import plan_pb2

# b plays a gateway behind a NAT whose public address no plan names.
NAT_PUBLIC = "203.0.113.50"


def answering_b(msg: plan_pb2.NodePlan) -> None:
    """a's plan: b has no address, a only answers it and knows it by its identity."""
    for peer in msg.peers:
        if peer.name == "b":
            del peer.remote_addresses[:]
            peer.dynamic_address = True
            peer.initiator = False
            peer.start_action = plan_pb2.START_ACTION_NONE
            peer.managed = False


def initiating(msg: plan_pb2.NodePlan) -> None:
    for peer in msg.peers:
        peer.initiator = True


async def test_peer_with_no_address_is_answered_from_any_source_and_known_by_identity() -> None:
    # a answers two peers: c at its plan address, b from wherever b's NAT puts it.
    fleet = Fleet("a", "b", "c")
    fleet.net.translate = nat_translate(SITES["b"][0], NAT_PUBLIC)
    await fleet.start()
    a, b, c = fleet["a"], fleet["b"], fleet["c"]

    def answering(msg: plan_pb2.NodePlan) -> None:
        answering_b(msg)
        for peer in msg.peers:
            peer.initiator = False

    await fleet.apply("a", node_plan("a", ["b", "c"], edit=answering))
    assert {r.peer: r.remote_address for r in a.engine.ike_sas()} == {
        "b": "any",
        "c": SITES["c"][0],
    }
    await fleet.apply("b", node_plan("b", ["a"], edit=initiating))
    await fleet.apply("c", node_plan("c", ["a"], edit=initiating))
    fleet.advance(2)

    assert a.engine.peers_up() == 2 and b.engine.peers_up() == 1 and c.engine.peers_up() == 1
    ike = {r.peer: r for r in a.engine.ike_sas()}
    assert ike["b"].state == "established" and not ike["b"].initiator
    assert ike["b"].remote_address.startswith(f"{NAT_PUBLIC}:")  # the NAT's mapping
    assert ike["c"].remote_address == f"{SITES['c'][0]}:500"
    assert a.engine.counters["ike_no_peer"] == 0
    packet, reply = udp4("10.1.0.5", "10.2.0.7"), udp4("10.2.0.7", "10.1.0.5", b"back")
    a.send(packet)
    fleet.pump()
    b.send(reply)
    fleet.pump()
    assert b.tun.delivered == [packet] and a.tun.delivered == [reply]


async def test_another_identity_from_an_unknown_source_is_refused_at_ike_auth() -> None:
    # c knows the key a holds for b, but it is not b: IKE_AUTH names c (RFC 7296 2.15).
    fleet = Fleet("a", "c")
    await fleet.start()
    a, c = fleet["a"], fleet["c"]
    await fleet.apply("a", node_plan("a", ["b"], edit=answering_b))
    b_key = node_plan("a", ["b"]).peers[0].auth.psk

    def impostor(msg: plan_pb2.NodePlan) -> None:
        initiating(msg)
        msg.peers[0].auth.psk = b_key

    await fleet.apply("c", node_plan("c", ["a"], edit=impostor))
    fleet.advance(2)
    assert a.engine.peers_up() == 0 and c.engine.peers_up() == 0
    (ike,) = a.engine.ike_sas()
    assert ike.peer == "b" and ike.state != "established"
    assert any("AUTHENTICATION_FAILED" in e.detail for e in c.events())


async def test_unmatched_ike_sa_init_shows_in_the_status(tmp_path: Path) -> None:
    # a initiates to b and answers nobody; c is in no plan of a's.
    fleet = Fleet("a", "b", "c")
    await fleet.start()
    a, c = fleet["a"], fleet["c"]
    service = AgentService("a", PlanStore(tmp_path / "a"), a.engine, a.hub)
    await service.restore()
    before = service.status().unmatched_ike_sa_init
    assert before.count == 0 and list(before.recent) == []
    await fleet.apply("a", node_plan("a", ["b"]))
    await fleet.apply("c", node_plan("c", ["a"], edit=initiating))
    fleet.advance(1.5)  # c's first request and one retransmission (section 2.1)

    status = service.status().unmatched_ike_sa_init
    assert status.count == 2
    (source,) = status.recent
    assert (source.address, source.port, source.count) == (SITES["c"][0], 500, 2)
    assert source.last_at > 0
    assert c.engine.peers_up() == 0


def test_unmatched_sources_keep_the_newest_few() -> None:
    now = [1000.0]
    sources = UnmatchedSources(lambda: now[0], keep=3)
    for i in range(5):
        now[0] += 1
        sources.record((f"198.51.100.{i}", 500))
    now[0] += 1
    sources.record(("198.51.100.2", 500))  # again: moves to the front
    report = sources.report(6)
    assert report.count == 6
    assert [(s.address, s.count, s.last_at) for s in report.recent] == [
        ("198.51.100.2", 2, 1006.0),
        ("198.51.100.4", 1, 1005.0),
        ("198.51.100.3", 1, 1004.0),
    ]
