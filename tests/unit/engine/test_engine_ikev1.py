"""Two engines with an IKEv1 peer (RFC 2409) on an in-memory network and fake time:
Main mode and Quick mode bring the child up in the same data plane as IKEv2's; the
child is replaced by a new Quick mode make-before-break, phase 1 is replaced by a new
Main mode; deletes, strangers and version mix-ups are counted, not fatal."""

from __future__ import annotations

import asyncio
import itertools
import random
from pathlib import Path

import pytest
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.engine_pair import (
    Fleet,
    Traffic,
    enrolled,
    node_plan,
    udp4,
    with_credentials,
)
from vpnfleet.agent.control import sas_json
from vpnfleet.agent.ctl_cli import sas_lines
from vpnfleet.agent.engine import translate
from vpnfleet.agent.engine.keylog import KeyLog
from vpnfleet.agent.ike.admission import ResponderLimits
from vpnfleet.agent.ike.ike_sa import IkeSa
from vpnfleet.agent.ike.states import Role
from vpnfleet.agent.ike.v1 import quick
from vpnfleet.agent.ike.v1.config import IkeV1Config
from vpnfleet.agent.ike.v1.sa import IkeV1Sa
from vpnfleet.agent.io.memory import Datagram
from vpnfleet.agent.metrics import agent_registry, agent_sources
from vpnfleet.agent.plan import IkeVersion
from vpnfleet.agent.service import AgentService
from vpnfleet.agent.sink import RekeyTarget
from vpnfleet.agent.store import PlanStore
from vpnfleet.controller.reports.status import FleetStatus, HostStatus, sa_rows
from vpnfleet.controller.statedir import pki
from vpnfleet.controller.transport.convert import status_from_proto
from vpnfleet.protos import plan_pb2


def ikev1(msg: plan_pb2.NodePlan) -> None:
    """Every peer of the plan over IKEv1 with aes256-sha256-modp2048 in phase 1."""
    for p in msg.peers:
        p.ike_version = plan_pb2.IKE_V1
        del p.ike_proposals[:]
        p.ike_proposals.add(
            text="aes256-sha256-modp2048",
            transforms=[
                plan_pb2.Transform(type=1, id=12, key_length=256),
                plan_pb2.Transform(type=2, id=5),
                plan_pb2.Transform(type=3, id=12),
                plan_pb2.Transform(type=4, id=14),
            ],
        )


@pytest.fixture
async def ab() -> Fleet:
    fleet = Fleet("a", "b")
    await fleet.start()
    await fleet.mesh(a=ikev1, b=ikev1)
    return fleet


def v1_sa(fleet: Fleet, host: str, peer: str) -> IkeV1Sa:
    sa = fleet[host].engine.peers[peer].ike
    assert isinstance(sa, IkeV1Sa)
    return sa


async def test_ikev1_tunnel_comes_up_and_carries_packets(ab: Fleet) -> None:
    a, b = ab["a"], ab["b"]
    assert a.engine.peers_up() == 1 and b.engine.peers_up() == 1
    (report,) = a.engine.ike_sas()
    assert report.state == "established" and report.ike_version is IkeVersion.V1
    assert report.proposal == "aes256-sha256-modp2048"
    a_in, a_out = a.child_spis("b")
    assert b.child_spis("a") == (a_out, a_in)
    packet = udp4("10.1.0.5", "10.2.0.7")
    a.send(packet)
    ab.pump()
    assert b.tun.delivered == [packet]
    reply = udp4("10.2.0.7", "10.1.0.5", b"back")
    b.send(reply)
    ab.pump()
    assert a.tun.delivered == [reply]


def one_pair(fleet: Fleet) -> tuple[int, int]:
    """The child pair both ends have in force (and in their IKEv1 core: nothing else)."""
    a_in, a_out = fleet["a"].child_spis("b")
    assert fleet["b"].child_spis("a") == (a_out, a_in)
    for host, peer, spi in (("a", "b", a_in), ("b", "a", a_out)):
        assert list(v1_sa(fleet, host, peer).children) == [spi.to_bytes(4, "big")]
    return a_in, a_out


def is_quick_mode(data: bytes) -> bool:
    return len(data) > 28 and data[17] == 0x10 and data[18] == 32  # RFC 2408 3.1: QUICK


async def test_child_rekey_is_a_new_quick_mode_make_before_break(ab: Fleet) -> None:
    """RFC 2409 section 5.5: a new Quick mode on the same ISAKMP SA; the old pair is
    deleted once the new one carries traffic; not one packet is lost either way."""
    a, b = ab["a"], ab["b"]
    before = one_pair(ab)
    cookies = v1_sa(ab, "a", "b").spi_i
    traffic = Traffic(ab, a, b)
    outcome = ab.rekey("a", "b", RekeyTarget.CHILD, within=0.5)
    assert outcome.ok, outcome.detail
    for _ in range(20):
        traffic.tick()
        ab.advance(0.5)
    traffic.settle()
    after = one_pair(ab)
    assert after != before and v1_sa(ab, "a", "b").spi_i == cookies
    assert [e.peer for e in a.events("child_rekeyed")] == ["b"]
    assert [e.peer for e in b.events("child_rekeyed")] == ["a"]
    (child,) = a.engine.ike_sas()[0].children
    assert child.replay_drops == child.integrity_failures == 0


async def test_a_lost_third_message_loses_no_packet(ab: Fleet) -> None:
    """The Quick mode initiator holds the new SA from message 2, its responder only
    from message 3: with message 3 lost once, the initiator keeps sending on the old
    SA until the responder surely has the new one."""
    a, b = ab["a"], ab["b"]
    before = one_pair(ab)
    seen: list[bytes] = []
    lost: list[bytes] = []

    def drop_third(d: Datagram) -> bool:
        if d.dst[0] == b.address and is_quick_mode(d.data):
            seen.append(d.data)
            if len(seen) == 2:  # message 1, then message 3
                lost.append(d.data)
                return True
        return False

    traffic = Traffic(ab, a, b)
    ab.net.drop = drop_third
    assert ab.rekey("a", "b", RekeyTarget.CHILD, within=0.5).ok
    for _ in range(20):
        traffic.tick()
        ab.advance(0.5)
    ab.net.drop = None
    traffic.settle()
    assert lost and one_pair(ab) != before


async def test_phase1_reauthentication_keeps_phase_2_and_deletes_the_old(ab: Fleet) -> None:
    """IKEv1 has no IKE SA rekey: a new Main mode and no Quick mode; both ends move the
    child pair to the new ISAKMP SA (unchanged: same SPIs, nothing installed anew), and
    the old ISAKMP SA goes with a phase 1 Delete only. Not one packet is lost; the
    child's later delete goes over the new ISAKMP SA and reaches the peer."""
    a, b = ab["a"], ab["b"]
    old_a, old_b = v1_sa(ab, "a", "b"), v1_sa(ab, "b", "a")
    before = one_pair(ab)
    quick: list[bytes] = []
    traffic = Traffic(ab, a, b)
    round_ = ab.net.reorder

    def watch(batch: list[Datagram]) -> list[Datagram]:
        quick.extend(d.data for d in batch if is_quick_mode(d.data))
        assert round_ is not None
        return round_(batch)

    ab.net.reorder = watch
    outcome = ab.rekey("a", "b", RekeyTarget.IKE, within=1)
    assert outcome.ok, outcome.detail
    for _ in range(20):
        traffic.tick()
        ab.advance(0.5)
    traffic.settle()
    new_a, new_b = v1_sa(ab, "a", "b"), v1_sa(ab, "b", "a")
    assert new_a is not old_a and new_b is not old_b and new_a.spi_i == new_b.spi_i
    assert old_a.is_closed and old_b.is_closed  # the old ISAKMP SA is gone at both ends
    assert not quick  # no Quick mode: phase 2 was kept, not made again
    assert one_pair(ab) == before  # the same child pair, now on the new ISAKMP SA
    assert [e.peer for e in a.events("children_adopted")] == ["b"]
    assert [e.peer for e in b.events("children_adopted")] == ["a"]
    assert not a.events("child_rekeyed") and not a.events("child_down")
    assert len(a.engine.peers["b"].sas()) == 1 and len(b.engine.peers["a"].sas()) == 1
    assert a.engine.peers_up() == 1 and b.engine.peers_up() == 1
    (child,) = a.engine.ike_sas()[0].children
    assert child.replay_drops == child.integrity_failures == 0
    # Later exchanges for the child go over the new ISAKMP SA: a rekey, then a delete.
    assert ab.rekey("a", "b", RekeyTarget.CHILD, within=0.5).ok
    ab.advance(10)
    after = one_pair(ab)
    assert after != before
    new_a.delete_child(after[0].to_bytes(4, "big"), ab.clock.now())
    a.engine.peers["b"]._service(new_a)
    ab.pump()
    assert not new_b.children


@pytest.mark.parametrize("seed", range(4))
async def test_both_ends_reauthenticating_at_once_leave_one_isakmp_sa(ab: Fleet, seed: int) -> None:
    """Both ends start a new Main mode at once (a fleet-wide rekey): the crossing
    ISAKMP SAs resolve to the same one at both ends, with one child pair, under
    reordering; the calls both succeed and no packet is lost afterwards."""
    rng = random.Random(seed)
    a, b = ab["a"], ab["b"]
    old = v1_sa(ab, "a", "b").spi_i
    ab.net.reorder = lambda batch: rng.sample(batch, len(batch))
    pa = a.engine.start_rekey("b", RekeyTarget.IKE)
    pb = b.engine.start_rekey("a", RekeyTarget.IKE)
    ab.advance(15)
    ab.net.reorder = None
    ab.advance(15)
    assert pa.done and pb.done
    assert pa.result().ok and pb.result().ok, (pa.result(), pb.result())
    assert v1_sa(ab, "a", "b").spi_i == v1_sa(ab, "b", "a").spi_i != old
    assert len(a.engine.peers["b"].sas()) == 1 and len(b.engine.peers["a"].sas()) == 1
    one_pair(ab)
    packet = udp4("10.1.0.5", "10.2.0.7")
    a.send(packet)
    ab.pump()
    assert b.tun.delivered[-1:] == [packet]


async def test_a_reauthentication_right_after_a_child_rekey_deletes_the_old(ab: Fleet) -> None:
    """The new Main mode comes while the replaced child is still kept: the old ISAKMP SA
    and both of its Quick mode SAs are deleted all the same (over the new ISAKMP SA
    too, where strongSwan looks for them), leaving one of each at both ends."""
    a, b = ab["a"], ab["b"]
    traffic = Traffic(ab, a, b)
    # b's own Deletes are lost (as charon sends none for SAs it sees replaced): a must
    # delete what it replaced itself.
    ab.net.drop = lambda d: d.src[0] == b.address and d.data[17:19] == b"\x10\x05"
    assert ab.rekey("a", "b", RekeyTarget.CHILD, within=0.5).ok
    traffic.tick()
    ab.advance(1.5)  # the old child's end is due in a second or so
    assert ab.rekey("a", "b", RekeyTarget.IKE, within=0.5).ok
    for _ in range(20):
        traffic.tick()
        ab.advance(0.5)
    ab.net.drop = None
    traffic.settle()
    assert len(a.engine.peers["b"].sas()) == 1 and len(b.engine.peers["a"].sas()) == 1
    one_pair(ab)


async def test_a_quick_mode_round_ending_during_a_reauthentication_deletes_the_old(
    ab: Fleet,
) -> None:
    """The Quick mode round ends (when the replaced child is due to go) while a new
    Main mode is still under way: the replaced child moves to the new ISAKMP SA with
    the one in force, and is deleted from there (seen in the lab against strongSwan,
    which kept it as REKEYED)."""
    a, b = ab["a"], ab["b"]
    traffic = Traffic(ab, a, b)
    held = [False]

    def lost(d: Datagram) -> bool:
        # b's own Deletes are lost (charon sends none for SAs it sees replaced), and
        # while ``held``, b's Main mode answers.
        exchange = d.data[17:19]
        return d.src[0] == b.address and (
            exchange == b"\x10\x05" or (held[0] and exchange == b"\x10\x02")
        )

    ab.net.drop = lost
    assert ab.rekey("a", "b", RekeyTarget.CHILD, within=0.5).ok
    driver = a.engine.peers["b"]
    assert driver.v1_round_timer is not None
    traffic.tick()
    ab.advance(2.0)
    held[0] = True
    pending = a.engine.start_rekey("b", RekeyTarget.IKE)
    ab.advance(1.5)
    assert driver.v1_round_timer is None, "the round should have ended meanwhile"
    assert not pending.done
    held[0] = False
    for _ in range(20):
        traffic.tick()
        ab.advance(0.5)
    ab.net.drop = None
    traffic.settle()
    assert pending.done and pending.result().ok, pending.result()
    assert [e.peer for e in a.events("children_adopted")] == ["b"]
    assert len(a.engine.peers["b"].sas()) == 1 and len(b.engine.peers["a"].sas()) == 1
    one_pair(ab)


async def test_timed_rekeys_run_on_their_own(ab: Fleet) -> None:
    """The plan's lifetimes (with jitter) replace child and ISAKMP SA before expiry."""
    a = ab["a"]
    before = one_pair(ab)
    life = a.engine.peers["b"].peer.lifetimes
    ab.advance(life.ike_rekey_seconds + 60)
    assert one_pair(ab) != before
    assert a.events("child_rekeyed")
    assert a.events("ike_reauthenticate") or ab["b"].events("ike_reauthenticate")
    assert a.engine.peers_up() == 1 and ab["b"].engine.peers_up() == 1


@pytest.mark.parametrize("seed", range(12))
async def test_both_ends_replacing_the_child_at_once_leave_one_pair(ab: Fleet, seed: int) -> None:
    """A collision: both ends start a Quick mode for the same child at once, under
    reordering and the loss of some Quick mode messages. Both ends end with the same
    single pair, in the data plane and in the core."""
    rng = random.Random(seed)
    a, b = ab["a"], ab["b"]
    before = one_pair(ab)
    ab.net.reorder = lambda batch: rng.sample(batch, len(batch))
    budget = [2]

    def lossy(d: Datagram) -> bool:
        if is_quick_mode(d.data) and budget[0] and rng.random() < 0.3:
            budget[0] -= 1
            return True
        return False

    ab.net.drop = lossy
    pa = a.engine.start_rekey("b", RekeyTarget.CHILD)
    pb = b.engine.start_rekey("a", RekeyTarget.CHILD)
    ab.advance(20)
    ab.net.drop = ab.net.reorder = None
    ab.advance(20)
    assert pa.done and pb.done
    assert pa.result().ok and pb.result().ok, (pa.result(), pb.result())
    after = one_pair(ab)
    assert after != before
    packet = udp4("10.1.0.5", "10.2.0.7")
    a.send(packet)
    ab.pump()
    assert b.tun.delivered[-1:] == [packet]


async def test_a_quick_mode_that_lost_a_collision_does_not_take_the_outbound_back(
    ab: Fleet, monkeypatch: pytest.MonkeyPatch
) -> None:
    """a starts a Quick mode (P1); b answers it and, before P1's third message reaches
    it, starts its own (P2), which ranks higher (SPIs drawn in increasing order here).
    b sends on P1 as soon as it holds it; a takes P2 with an outbound switch at once,
    and b's packets on P1 still reach it afterwards: they must not move a's outbound
    back to P1, which a deletes as the loser (the tunnel would then be one-way)."""
    counter = itertools.count(0x10000)
    real = quick.random_bytes
    monkeypatch.setattr(
        quick, "random_bytes", lambda n: next(counter).to_bytes(4, "big") if n == 4 else real(n)
    )
    a, b = ab["a"], ab["b"]
    traffic = Traffic(ab, a, b)
    pa = a.engine.start_rekey("b", RekeyTarget.CHILD)
    ab.net.pump(max_rounds=1)  # P1's first message reaches b, its answer is on the way
    pb = b.engine.start_rekey("a", RekeyTarget.CHILD)
    for _ in range(40):
        traffic.tick()
        ab.advance(0.25)
    traffic.settle()
    assert pa.result().ok and pb.result().ok, (pa.result(), pb.result())
    a_in, a_out = one_pair(ab)
    # The pair that stayed is b's P2: drawn after both of P1's SPIs.
    assert min(a_in, a_out) > 0x10001
    assert [e.peer for e in a.events("child_rekeyed")] == ["b", "b"]


async def test_delete_takes_the_tunnel_down_on_both_ends(ab: Fleet) -> None:
    a, b = ab["a"], ab["b"]
    a.engine.terminate_peer("b")
    ab.pump()
    assert a.engine.peers_up() == 0 and b.engine.peers_up() == 0
    assert [e.peer for e in b.events("child_down")] == ["a"]
    assert b.engine.peers["a"].ike is None


async def test_an_ikev1_stranger_is_counted_and_dropped(ab: Fleet) -> None:
    """A first Main mode message from an address no plan peer has makes no SA; one
    naming a responder cookie we never chose neither."""
    a = ab["a"]
    config = a.engine.peers["b"].config
    assert isinstance(config, IkeV1Config)
    stranger = IkeV1Sa(config, Role.INITIATOR)
    stranger.initiate(("192.0.2.1", 500), 0.0)
    ((data, _),) = stranger.datagrams_to_send(0.0)
    counters = a.engine.ike_counters()
    a.engine._on_ike(data, ("198.51.100.9", 500), 500)
    a.engine._on_ike(data[:8] + b"\x01" * 8 + data[16:], ("192.0.2.2", 500), 500)
    after = a.engine.ike_counters()
    assert after["no_peer"] == counters["no_peer"] + 1
    assert after["unknown_spi"] == counters["unknown_spi"] + 1
    assert a.engine.admission().half_open == 0
    assert a.engine.peers_up() == 1 and len(a.engine.peers["b"].sas()) == 1


async def test_an_ikev1_responder_sa_holds_a_half_open_place_until_it_is_up() -> None:
    """The half-open caps of admission.py count IKEv1 responder SAs too: a first
    message from the peer's address takes a place, refused over the per-source cap."""
    limits = ResponderLimits(half_open_per_source=1)
    fleet = Fleet("a", "b", limits=limits)
    await fleet.start()
    await fleet.apply("a", node_plan("a", ["b"], edit=ikev1))
    a = fleet["a"].engine
    config = a.peers["b"].config
    assert isinstance(config, IkeV1Config)
    firsts = []
    for _ in range(2):
        other = IkeV1Sa(config, Role.INITIATOR)
        other.initiate(("192.0.2.1", 500), 0.0)
        firsts.append(other.datagrams_to_send(0.0)[0][0])
    for data in firsts:
        a._on_ike(data, ("192.0.2.2", 500), 500)
    report = a.admission()
    assert report.half_open == 1
    assert dict((x.name, x.refused) for x in report.limits)["half_open_per_source"] == 1
    fleet.advance(config.half_open_timeout + 1)
    assert a.admission().half_open == 0


async def test_an_ikev2_request_for_an_ikev1_peer_is_refused(ab: Fleet) -> None:
    """The plan says b is reached with IKEv1: an IKE_SA_INIT from b's address makes no
    IKEv2 SA; it is counted as wrong_version and the IKEv1 tunnel stays."""
    a = ab["a"]
    v2_plan = node_plan("b", ["a"])
    v2 = IkeSa(translate.ike_config(v2_plan, v2_plan.peers[0]), Role.INITIATOR)
    v2.initiate(("192.0.2.1", 500), 0.0)
    ((data, _),) = v2.datagrams_to_send(0.0)
    a.engine._on_ike(data, ("192.0.2.2", 500), 500)
    assert a.engine.ike_counters()["wrong_version"] == 1
    assert a.engine.peers_up() == 1 and len(a.engine.peers["b"].sas()) == 1


async def test_status_names_ikev1_from_agent_to_the_fleet_table(ab: Fleet, tmp_path: Path) -> None:
    """GetStatus carries the version (IkeSaStatus.ike_version); the controller's SA
    table says IKEv1 in the state column; the JSON form names it too."""
    a = ab["a"]
    msg = AgentService("a", PlanStore(tmp_path), a.engine, a.hub).status()
    (ike,) = msg.ike_sas
    assert ike.ike_version == plan_pb2.IKE_V1
    assert ike.spi_i == int.from_bytes(v1_sa(ab, "a", "b").icookie, "big")
    view = status_from_proto(msg)
    fleet = FleetStatus([HostStatus("a", msg.content_hash, view)])
    (row,) = sa_rows(fleet)
    assert row[2] == "established IKEv1"
    assert fleet.to_json()["hosts"][0]["observed"]["ike_sas"][0]["ike_version"] == "V1"


async def test_the_key_log_has_the_isakmp_line(tmp_path: Path) -> None:
    """keylog.py writes Wireshark's ikev1_decryption_table record (initiator cookie,
    encryption key; agent/ike/v1/export.py) for each ISAKMP SA, and esp_sa lines."""
    fleet = Fleet("a", "b")
    log = KeyLog.open(tmp_path / "keys")
    fleet["a"].engine.keylog = log
    await fleet.start()
    await fleet.mesh(a=ikev1, b=ikev1)
    sa = v1_sa(fleet, "a", "b")
    assert sa.keys is not None
    lines = (tmp_path / "keys").read_text().splitlines()
    record = f"ikev1_decryption_table:{sa.icookie.hex()},{sa.keys.enc_key.hex()}"
    assert record in lines
    assert sum(line.startswith("esp_sa:") for line in lines) == 2


async def test_liveness_is_an_rfc3706_r_u_there(ab: Fleet) -> None:
    """CheckLiveness on an IKEv1 peer sends R-U-THERE and takes the R-U-THERE-ACK."""
    check = asyncio.create_task(ab["a"].engine.check_liveness(["b"], 5))
    await asyncio.sleep(0)
    assert ab.net.in_flight == 1
    ab.pump()
    (outcome,) = await check
    assert outcome.answered and outcome.detail == "", outcome


async def test_a_silent_ikev1_peer_is_declared_dead_and_retried(ab: Fleet) -> None:
    a, b = ab["a"], ab["b"]
    ab.net.drop = lambda d: d.dst[0] == b.address
    check = asyncio.create_task(a.engine.check_liveness(["b"], 600))
    await asyncio.sleep(0)
    ab.advance(400)  # R-U-THERE retransmitted on a doubling timeout, then given up
    (outcome,) = await check
    assert not outcome.answered and outcome.detail.startswith("IKE SA gone: peer dead")
    assert [e.peer for e in a.events("peer_dead")] == ["b"]
    ab.net.drop = None
    ab.advance(120)  # a initiates again (back-off); b takes the new SA over
    assert a.engine.peers_up() == 1 and b.engine.peers_up() == 1
    one_pair(ab)


async def test_an_ikev2_message_naming_an_ikev1_cookie_is_not_routed_to_it(ab: Fleet) -> None:
    """The engine routes by the cookie or SPI that is ours, but never an IKEv2 message
    to an IKEv1 SA (or the reverse): it is counted as for an unknown SPI."""
    a = ab["a"]
    sa = v1_sa(ab, "a", "b")
    header = bytearray(sa.icookie + sa.rcookie + bytes(12))
    header[17] = 0x20  # IKEv2 (RFC 7296 section 3.1)
    header[18], header[19] = 37, 0x20  # INFORMATIONAL response
    header[24:28] = (28).to_bytes(4, "big")
    before = a.engine.ike_counters()["unknown_spi"]
    a.engine._on_ike(bytes(header), ("192.0.2.2", 500), 500)
    assert a.engine.ike_counters()["unknown_spi"] == before + 1
    assert sa.dropped == 0 and a.engine.peers_up() == 1


async def test_a_restarted_ikev1_initiator_brings_the_tunnel_back(ab: Fleet) -> None:
    """The restarted end says INITIAL-CONTACT (RFC 2407 section 4.6.3.3): the other end
    takes the new ISAKMP SA and child at once and drops the stale ones."""
    a, b = ab["a"], ab["b"]
    old = b.child_spis("a")
    await a.restart()
    await a.engine.put_in_force(node_plan("a", ["b"], edit=ikev1))
    ab.advance(5)
    assert a.engine.peers_up() == 1 and b.engine.peers_up() == 1
    assert b.child_spis("a") != old
    one_pair(ab)
    assert len(b.engine.peers["a"].sas()) == 1
    packet = udp4("10.2.0.7", "10.1.0.5")
    b.send(packet)
    ab.pump()
    assert a.tun.delivered == [packet]


async def test_a_peer_moved_from_ikev2_to_ikev1_is_replaced_make_before_break() -> None:
    """A plan change of the version re-establishes the peer like any other change: the
    IKEv2 SA carries traffic until the IKEv1 one has its child, then is deleted."""
    fleet = Fleet("a", "b")
    await fleet.start()
    await fleet.mesh()
    a, b = fleet["a"], fleet["b"]
    assert isinstance(a.engine.peers["b"].ike, IkeSa)
    traffic = Traffic(fleet, a, b)
    # The responder first, as a rollout would; the initiator's change re-establishes.
    await fleet.apply("b", node_plan("b", ["a"], 2, edit=ikev1))
    await fleet.apply("a", node_plan("a", ["b"], 2, edit=ikev1))
    for _ in range(20):
        traffic.tick()
        fleet.advance(0.5)
    traffic.settle()
    assert isinstance(a.engine.peers["b"].ike, IkeV1Sa)
    assert len(a.engine.peers["b"].sas()) == 1 and len(b.engine.peers["a"].sas()) == 1
    one_pair(fleet)
    (report,) = a.engine.ike_sas()
    assert report.ike_version is IkeVersion.V1


async def test_a_peer_rekeying_the_child_its_own_way_is_followed(ab: Fleet) -> None:
    """A peer that replaces the child with the core's own rekey (as charon does: a new
    Quick mode, then a Delete of the old SA) is followed: the new SA takes the traffic,
    the old goes, and no packet is lost on the way."""
    a, b = ab["a"], ab["b"]
    before = one_pair(ab)
    traffic = Traffic(ab, a, b)
    sa_b = v1_sa(ab, "b", "a")
    sa_b.rekey_child(before[1].to_bytes(4, "big"), b.engine.now())
    b.engine.driver_of(sa_b).service()
    for _ in range(20):
        traffic.tick()
        ab.advance(0.5)
    traffic.settle()
    after = one_pair(ab)
    assert after != before
    assert [e.peer for e in a.events("child_rekeyed")] == ["b"]


async def test_ikev1_peers_authenticate_with_fleet_certificates(tmp_path: Path) -> None:
    """``auth: pubkey`` over IKEv1: Main mode with ECDSA signatures (RFC 4754) and the
    agents' enrolled certificates, checked against the plan's trust anchor."""
    ca_pem = pki.init_ca(tmp_path / "ca", "ecdsa-p256").cert_path.read_bytes()

    def v1_pubkey(msg: plan_pb2.NodePlan) -> None:
        ikev1(msg)
        del msg.trust_anchors[:]
        msg.trust_anchors.append(ca_pem)
        for peer in msg.peers:
            peer.auth.CopyFrom(
                plan_pb2.Credential(
                    method=plan_pb2.AUTH_METHOD_PUBKEY,
                    reference="cert:fleet-ca",
                    ca_fingerprint=pki.fingerprint(ca_pem),
                )
            )

    fleet = Fleet("a", "b")
    for host in ("a", "b"):
        with_credentials(fleet, host, enrolled(tmp_path / "ca", tmp_path / host, host))
    await fleet.start()
    await fleet.mesh(a=v1_pubkey, b=v1_pubkey)
    a, b = fleet["a"], fleet["b"]
    assert a.engine.peers_up() == 1 and b.engine.peers_up() == 1, a.engine.ike_sas()
    config = a.engine.peers["b"].config
    assert isinstance(config, IkeV1Config) and config.certificates is not None
    one_pair(fleet)


async def test_aggressive_mode_where_the_plan_says_so() -> None:
    """``ike_aggressive``: phase 1 in three messages (RFC 2409 section 5.4); the
    responder's gate takes an Aggressive mode first message and no Main mode one."""

    def aggressive(msg: plan_pb2.NodePlan) -> None:
        ikev1(msg)
        for p in msg.peers:
            p.ike_aggressive = True

    fleet = Fleet("a", "b")
    await fleet.start()
    await fleet.mesh(a=aggressive, b=aggressive)
    a, b = fleet["a"], fleet["b"]
    assert a.engine.peers_up() == 1 and b.engine.peers_up() == 1
    one_pair(fleet)
    # A Main mode first message for the Aggressive mode peer is refused by its gate.
    main = node_plan("a", ["b"], edit=ikev1)
    config = translate.ike_v1_config(main, main.peers[0])
    other = IkeV1Sa(config, Role.INITIATOR)
    other.initiate(("192.0.2.2", 500), 0.0)
    ((data, _),) = other.datagrams_to_send(0.0)
    refused = b.engine.ike_counters()["refused"]
    b.engine._on_ike(data, ("192.0.2.1", 500), 500)
    assert b.engine.ike_counters()["refused"] == refused + 1
    assert len(b.engine.peers["a"].sas()) == 1


async def test_the_local_sas_command_says_ikev1(ab: Fleet) -> None:
    """``vpnfleet-agent sas`` (swanctl --list-sas's layout) names the version."""
    answer = {"now": ab["a"].engine.wall(), "ike_sas": sas_json(ab["a"].engine.ike_sas())}
    head = next(sas_lines(answer))
    sa = v1_sa(ab, "a", "b")
    assert head == f"b: ESTABLISHED, IKEv1, {sa.icookie.hex()}_i* {sa.rcookie.hex()}_r"


async def test_metrics_show_the_ikev1_sa_its_version_and_its_child_traffic(ab: Fleet) -> None:
    """Prometheus sees an IKEv1 peer as it sees an IKEv2 one (the same reports), with
    ``vpnfleet_ike_sa_version`` telling them apart."""
    a, b = ab["a"], ab["b"]
    packet = udp4("10.1.0.5", "10.2.0.7")
    a.send(packet)
    ab.pump()
    assert b.tun.delivered == [packet]
    text = generate_latest(agent_registry(agent_sources("b", b.engine, lambda: None))).decode()
    got = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert got[("vpnfleet_ike_sa_version", (("peer", "a"),))] == 1
    assert got[("vpnfleet_ike_sa_state", (("peer", "a"), ("state", "established")))] == 1
    packets = "vpnfleet_child_sa_packets_total"
    (child,) = {dict(labels)["child"] for name, labels in got if name == packets}
    key = (("child", child), ("direction", "in"), ("peer", "a"))
    assert got[(packets, key)] == 1


def test_the_plans_volume_limit_is_offered_in_quick_mode() -> None:
    """RFC 2407 section 4.5: the child's hard volume limit (10% past the plan's
    ``child_rekey_bytes``, where the engine rekeys) goes out as a kilobyte lifetime; a
    plan without one offers seconds only."""

    def volume(msg: plan_pb2.NodePlan) -> None:
        ikev1(msg)
        for p in msg.peers:
            p.lifetimes.child_rekey_bytes = 10_000_000

    plan = node_plan("a", ["b"], edit=volume)
    assert translate.ike_v1_config(plan, plan.peers[0]).child_lifetime_kb == 10743
    plan = node_plan("a", ["b"], edit=ikev1)
    assert translate.ike_v1_config(plan, plan.peers[0]).child_lifetime_kb is None
