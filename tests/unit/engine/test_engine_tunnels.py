"""The engine on an in-memory network: plans in, tunnels up, packets across, plan
differences applied without disturbing untouched peers."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from tests.support.engine_pair import Fleet, agent_service, behind_nat, node_plan, udp4
from vpnfleet.agent import convert
from vpnfleet.agent.io.memory import nat_translate
from vpnfleet.agent.plan import AuthMethod
from vpnfleet.agent.sink import IkeSaReport, NatState, RekeyTarget
from vpnfleet.protos import agent_pb2, plan_pb2


@pytest.fixture
async def ab() -> Fleet:
    fleet = Fleet("a", "b")
    await fleet.start()
    await fleet.mesh()
    return fleet


async def test_tunnel_comes_up_and_carries_packets_both_ways(ab: Fleet) -> None:
    a, b = ab["a"], ab["b"]
    assert a.engine.peers_up() == 1 and b.engine.peers_up() == 1
    assert [e.peer for e in a.events("child_up")] == ["b"]
    (report,) = a.engine.ike_sas()
    assert report.state == "established" and report.initiator
    assert report.proposal.startswith("aes256gcm16")
    a_in, a_out = a.child_spis("b")
    b_in, b_out = b.child_spis("a")
    assert (a_in, a_out) == (b_out, b_in)

    packet = udp4("10.1.0.5", "10.2.0.7")
    a.send(packet)
    ab.pump()
    assert b.tun.delivered == [packet]
    reply = udp4("10.2.0.7", "10.1.0.5", b"and back")
    b.send(reply)
    ab.pump()
    assert a.tun.delivered == [reply]

    (child,) = a.engine.ike_sas()[0].children
    assert child.packets_out == 1 and child.packets_in == 1
    assert child.bytes_out == len(packet) and child.bytes_in == len(reply)
    assert child.integrity_failures == 0 and child.replay_drops == 0


async def test_same_plan_twice_changes_nothing(ab: Fleet) -> None:
    a = ab["a"]
    before = a.child_spis("b")
    await ab.apply("a", node_plan("a", ["b"]))
    ab.advance(1)
    assert a.child_spis("b") == before
    assert a.events("peer_changed") == []


async def test_changed_peer_is_replaced_and_the_other_is_untouched() -> None:
    fleet = Fleet("a", "b", "c")
    await fleet.start()
    await fleet.mesh()
    a, b, c = fleet["a"], fleet["b"], fleet["c"]
    assert a.engine.peers_up() == 2
    ab_before, ac_before = a.child_spis("b"), a.child_spis("c")

    def second_esp_proposal(msg: plan_pb2.NodePlan) -> None:
        # A negotiated change (a local one, like the liveness delay, keeps the SAs).
        for peer in msg.peers:
            if peer.name in ("a", "c"):
                extra = peer.esp_proposals.add()
                extra.CopyFrom(peer.esp_proposals[0])
                extra.text = "aes128gcm16"
                extra.transforms[0].key_length = 128

    # Both ends of a<->c get the change; the responder first, as a rollout would.
    await fleet.apply("c", node_plan("c", ["a", "b"], 2, edit=second_esp_proposal))
    await fleet.apply("a", node_plan("a", ["b", "c"], 2, edit=second_esp_proposal))
    fleet.advance(1)

    assert a.child_spis("b") == ab_before
    assert b.child_spis("a") == (ab_before[1], ab_before[0])
    ac_after = a.child_spis("c")
    assert ac_after != ac_before
    assert c.child_spis("a") == (ac_after[1], ac_after[0])
    assert [e.peer for e in a.events("peer_changed")] == ["c"]
    # The old IKE SA was deleted, on both sides; one IKE SA each remains.
    assert len(a.engine.peers["c"].sas()) == 1
    assert len(c.engine.peers["a"].sas()) == 1
    packet = udp4("10.1.0.1", "10.3.0.1")
    a.send(packet)
    fleet.pump()
    assert c.tun.delivered == [packet]


async def test_removed_peer_is_deleted() -> None:
    fleet = Fleet("a", "b", "c")
    await fleet.start()
    await fleet.mesh()
    a, c = fleet["a"], fleet["c"]
    ab_before = a.child_spis("b")
    await fleet.apply("a", node_plan("a", ["b"], 2))
    fleet.advance(1)
    assert "c" not in a.engine.peers
    assert a.engine.dp is not None and a.engine.dp.policies() == ["b"]
    assert a.child_spis("b") == ab_before
    assert [e.kind for e in c.events(peer="a")][-1] == "ike_down"
    assert c.engine.peers_up() == 1  # c still has b
    # Traffic for the removed peer no longer leaves a.
    sent = fleet.net.delivered
    a.send(udp4("10.1.0.1", "10.3.0.1"))
    fleet.pump()
    assert fleet.net.delivered == sent


async def test_dead_peer_is_found_and_retried_with_back_off(ab: Fleet) -> None:
    a = ab["a"]
    ab.net.drop = lambda d: True  # the link goes down
    ab.advance(30 + 130)  # DPD delay, then the liveness check's retransmissions
    (dead,) = a.events("peer_dead")
    assert dead.peer == "b" and "peer dead" in dead.detail
    assert a.engine.peers_up() == 0
    assert a.engine.dp is not None and a.engine.dp.policies() == []
    retries = a.events("peer_retry")
    assert retries and retries[0].detail.startswith("in ")
    # Back-off grows 1, 2, 4 … (each attempt also waits for its own retransmissions).
    ab.advance(600)
    delays = [float(e.detail.split()[1]) for e in a.events("peer_retry")]
    assert delays[1] > delays[0] * 1.5 and max(delays) <= 66
    ab.net.drop = None
    ab.advance(130)
    assert a.engine.peers_up() == 1 and ab["b"].engine.peers_up() == 1
    packet = udp4("10.1.0.9", "10.2.0.9")
    a.send(packet)
    ab.pump()
    assert ab["b"].tun.delivered[-1] == packet


async def test_scheduled_child_and_ike_rekeys_keep_traffic(ab: Fleet) -> None:
    a, b = ab["a"], ab["b"]
    before = a.child_spis("b")
    ab.advance(3600)  # child_rekey_seconds (less up to rand_seconds of jitter)
    assert a.events("child_rekeyed") or b.events("child_rekeyed")
    after = a.child_spis("b")
    assert after != before and b.child_spis("a") == (after[1], after[0])
    ab.advance(10)  # the rekey responder's outbound switch, retiring the old SA
    packet = udp4("10.1.0.5", "10.2.0.7")
    a.send(packet)
    ab.pump()
    b.send(udp4("10.2.0.7", "10.1.0.5"))
    ab.pump()
    assert b.tun.delivered == [packet] and len(a.tun.delivered) == 1
    spi_i = a.engine.ike_sas()[0].spi_i
    ab.advance(14400)
    assert a.events("ike_rekeyed") or b.events("ike_rekeyed")
    assert a.engine.ike_sas()[0].spi_i != spi_i
    assert a.engine.peers_up() == 1 and b.engine.peers_up() == 1
    a.send(packet)
    ab.pump()
    assert b.tun.delivered[-1] == packet


async def test_rekey_on_request(ab: Fleet) -> None:
    a, b = ab["a"], ab["b"]
    before = a.child_spis("b")
    outcome = ab.rekey("a", "b", RekeyTarget.CHILD)
    assert outcome.ok, outcome.detail
    ab.pump()
    assert a.child_spis("b") != before
    assert b.child_spis("a") == tuple(reversed(a.child_spis("b")))
    missing = ab.rekey("a", "nobody", RekeyTarget.BOTH)
    assert not missing.ok and "not up" in missing.detail


async def test_trap_peer_starts_on_first_packet() -> None:
    fleet = Fleet("a", "b")
    await fleet.start()

    def trap(msg: plan_pb2.NodePlan) -> None:
        for peer in msg.peers:
            peer.start_action = plan_pb2.START_ACTION_TRAP

    await fleet.mesh(a=trap, b=trap)
    a, b = fleet["a"], fleet["b"]
    assert a.engine.peers_up() == 0 and fleet.net.delivered == 0
    a.send(udp4("10.1.0.5", "10.2.0.7"))  # dropped, but it triggers the negotiation
    fleet.pump()
    assert a.events("acquire") and a.engine.peers_up() == 1 and b.engine.peers_up() == 1
    packet = udp4("10.1.0.5", "10.2.0.7", b"second")
    a.send(packet)
    fleet.pump()
    assert b.tun.delivered == [packet]


async def test_garbage_is_counted_and_dropped(ab: Fleet) -> None:
    a, b = ab["a"], ab["b"]
    assert b.engine.endpoint is not None
    endpoint = b.engine.endpoint
    target = (a.address, 500)
    endpoint.send_raw(b"\x01\x02", target, via_4500=False)  # type: ignore[attr-defined]
    endpoint.send_raw(bytes(range(40)), target, via_4500=False)  # type: ignore[attr-defined]
    endpoint.send_raw(b"\x00" * 4 + bytes(40), (a.address, 4500))  # type: ignore[attr-defined]
    endpoint.send_raw(b"\xde\xad\xbe\xef" + bytes(60), (a.address, 4500))  # type: ignore[attr-defined]
    ab.pump()
    assert a.engine.endpoint is not None
    assert a.engine.endpoint.counters.rx_short == 1
    assert a.engine.counters["ike_unknown_spi"] + a.engine.counters["ike_malformed"] == 2
    assert a.engine.dp is not None and a.engine.dp.stats().inbound_drops.get("unknown_spi", 0) == 1
    # The tunnel does not notice.
    packet = udp4("10.1.0.5", "10.2.0.7")
    a.send(packet)
    ab.pump()
    assert b.tun.delivered == [packet] and a.engine.peers_up() == 1


async def test_restarted_initiator_brings_the_tunnel_back(ab: Fleet) -> None:
    a, b = ab["a"], ab["b"]
    old = b.child_spis("a")
    await a.restart()
    await a.engine.put_in_force(node_plan("a", ["b"]))
    ab.pump()
    assert a.engine.peers_up() == 1
    assert b.child_spis("a") != old
    assert b.child_spis("a") == tuple(reversed(a.child_spis("b")))
    packet = udp4("10.2.0.7", "10.1.0.5")
    b.send(packet)
    ab.pump()
    assert a.tun.delivered == [packet]


async def test_peer_that_cannot_be_configured_is_reported(ab: Fleet) -> None:
    plan = node_plan("a", ["b"], 2)
    (peer,) = plan.peers
    pubkey = replace(peer, auth=replace(peer.auth, method=AuthMethod.PUBKEY))
    await ab.apply("a", replace(plan, peers=(pubkey,), content_hash="edited"))
    (report,) = ab["a"].engine.ike_sas()
    # The fleet's engines carry no IKE certificate here (see test_engine_certs.py).
    assert "pubkey authentication needs this agent's IKE certificate" in report.last_error
    assert ab["a"].engine.peers_up() == 0
    assert [e.peer for e in ab["a"].events("peer_error")] == ["b"]


async def test_crossed_initiations_settle_on_one_ike_sa() -> None:
    """Both ends of a trap peer see traffic at once and both initiate (RFC 7296 section
    2.8 leaves duplicate IKE SAs to the implementation): both must keep the same one."""
    fleet = Fleet("a", "b")
    await fleet.start()

    def trap(msg: plan_pb2.NodePlan) -> None:
        for peer in msg.peers:
            peer.start_action = plan_pb2.START_ACTION_TRAP

    await fleet.mesh(a=trap, b=trap)
    a, b = fleet["a"], fleet["b"]
    a.tun.inject(udp4("10.1.0.5", "10.2.0.7"))
    b.tun.inject(udp4("10.2.0.7", "10.1.0.5"))
    assert a.engine.dp is not None and b.engine.dp is not None
    a.engine.dp.process_tun()
    b.engine.dp.process_tun()
    fleet.advance(2)
    assert a.engine.peers_up() == 1 and b.engine.peers_up() == 1
    assert b.child_spis("a") == tuple(reversed(a.child_spis("b")))
    # Both delete the same duplicate; crossing deletes may wait out a retransmission.
    fleet.advance(200)
    assert b.child_spis("a") == tuple(reversed(a.child_spis("b")))
    assert len(a.engine.peers["b"].sas()) == 1
    assert len(b.engine.peers["a"].sas()) == 1
    packet = udp4("10.1.0.5", "10.2.0.7", b"after the crossing")
    a.send(packet)
    fleet.pump()
    assert b.tun.delivered == [packet]


async def test_behind_a_nat_ike_and_esp_move_to_udp_4500() -> None:
    """RFC 7296 section 2.23 / RFC 3948: a's address is rewritten on the way, so IKE
    moves to port 4500 after IKE_SA_INIT and ESP goes in UDP to the NAT's mapping. b's
    plan says a is behind a NAT: only then is an IKE_SA_INIT from the NAT's address,
    which is none of a's, routed to it."""
    fleet = Fleet("a", "b")
    fleet.net.translate = nat_translate("192.0.2.1", "198.51.100.1")
    await fleet.start()
    await fleet.mesh(b=behind_nat("a"))
    a, b = fleet["a"], fleet["b"]
    assert a.engine.peers_up() == 1 and b.engine.peers_up() == 1
    (ike_a,) = a.engine.ike_sas()
    (ike_b,) = b.engine.ike_sas()
    assert ike_a.nat is NatState.DETECTED and ike_b.nat is NatState.DETECTED
    assert ike_a.remote_address == "192.0.2.2:4500"
    assert ike_b.remote_address.startswith("198.51.100.1:")  # the NAT's mapping
    assert "NAT detected" in a.events("ike_up")[0].detail
    packet, reply = udp4("10.1.0.5", "10.2.0.7"), udp4("10.2.0.7", "10.1.0.5", b"back")
    a.send(packet)
    fleet.pump()
    b.send(reply)
    fleet.pump()
    assert b.tun.delivered == [packet] and a.tun.delivered == [reply]


def force_encap(msg: plan_pb2.NodePlan) -> None:
    for peer in msg.peers:
        peer.nat.force_encap = True


async def test_forced_encapsulation_without_a_nat_is_reported_forced_not_detected(
    tmp_path: Path,
) -> None:
    """RFC 7296 section 2.23: a forces UDP 4500 by faking its NAT-D source hash (what
    strongSwan's encap = yes does). No NAT is on the way: a reports what it forced, and b
    -- which sees a random hash from the address its plan knows a by -- reports the
    peer's forcing too, not a NAT."""
    fleet = Fleet("a", "b")
    await fleet.start()
    await fleet.mesh(a=force_encap)
    a, b = fleet["a"], fleet["b"]
    assert a.engine.peers_up() == 1 and b.engine.peers_up() == 1
    (ike_a,) = a.engine.ike_sas()
    (ike_b,) = b.engine.ike_sas()
    assert ike_a.remote_address == "192.0.2.2:4500"  # forced: UDP 4500 all the same
    assert (ike_a.nat, ike_b.nat) == (NatState.FORCED, NatState.FORCED)
    assert "NAT detected" not in a.events("ike_up")[0].detail
    assert "forced" in a.events("ike_up")[0].detail
    status = agent_service(a, tmp_path).status()
    assert status.ike_sas[0].nat == agent_pb2.IkeSaStatus.FORCED
    assert not status.ike_sas[0].nat_detected


def test_a_peer_without_an_ike_sa_has_no_nat_to_tell() -> None:
    msg = convert.ike_sa_to_proto(IkeSaReport(peer="b", state="retry-wait"))
    assert msg.nat == agent_pb2.IkeSaStatus.NAT_UNSPECIFIED and not msg.nat_detected


async def test_without_nat_or_forcing_nat_is_none(ab: Fleet) -> None:
    for node in (ab["a"], ab["b"]):
        (ike,) = node.engine.ike_sas()
        assert ike.nat is NatState.NONE and ike.remote_address.endswith(":500")


async def test_restarted_responder_does_not_wait_for_the_peers_liveness_check(ab: Fleet) -> None:
    a, b = ab["a"], ab["b"]
    ab.advance(60)  # the SA has been up a while: what b's restart leaves stale at a
    await b.restart()
    await b.engine.put_in_force(node_plan("b", ["a"]))
    ab.advance(3)  # b's initial-contact delay; a's DPD (30 s, then 128 s) has not fired
    assert [e.peer for e in b.events("initial_contact")] == ["a"]
    assert a.engine.peers_up() == 1 and b.engine.peers_up() == 1
    assert b.child_spis("a") == tuple(reversed(a.child_spis("b")))
    packet = udp4("10.1.0.5", "10.2.0.7")
    a.send(packet)
    ab.pump()
    assert b.tun.delivered == [packet]
    assert a.events("peer_dead") == []
