"""AH child SAs through the engine: two engines on an in-memory network and an in-memory
protocol-51 link, fake time. IKEv2 negotiates an AH child (RFC 7296 section 3.3.1), the
engine installs it in the data plane as AH SAs (never ESP), traffic crosses in tunnel
mode, a child rekey keeps it crossing, status and metrics name the protocol, the key log
writes its keys; forced UDP encapsulation refuses the AH child with "AH cannot cross
NAT: " in status and installs nothing."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from prometheus_client import generate_latest

from tests.support.ah_pair import AhLink
from tests.support.engine_pair import Fleet, PlanEdit, node_plan, udp4
from tests.unit.engine.test_engine_ikev1 import ikev1
from vpnfleet.agent.engine import Engine
from vpnfleet.agent.engine.keylog import KeyLog, ah_sa_record, tshark_options
from vpnfleet.agent.engine.translate import PeerConfigError, esp_overhead, esp_path
from vpnfleet.agent.esp.ah import AhParams, ah_length
from vpnfleet.agent.esp.transforms import Integrity
from vpnfleet.agent.ike.config import Mode
from vpnfleet.agent.ike.constants import ProtocolId
from vpnfleet.agent.ike.events import ChildSaEstablished
from vpnfleet.agent.ike.ike_sa import IkeSa
from vpnfleet.agent.ike.tasks.child_create import AH_NAT
from vpnfleet.agent.io.dataplane_model import Encap
from vpnfleet.agent.io.memory import MemoryEndpoint
from vpnfleet.agent.io.tunnel_mtu import tunnel_mtu
from vpnfleet.agent.metrics import agent_registry, agent_sources
from vpnfleet.agent.sink import RekeyTarget
from vpnfleet.protos import plan_pb2

SHA256 = [(3, 12, 0), (5, 0, 0)]  # AUTH_HMAC_SHA2_256_128, no ESN (RFC 7296 3.3.2)


def ah_only(*, force_encap: bool = False, v1: bool = False) -> PlanEdit:
    def edit(msg: plan_pb2.NodePlan) -> None:
        if v1:
            ikev1(msg)
        for peer in msg.peers:
            del peer.esp_proposals[:]
            peer.ah_proposals.add(
                text="sha256",
                transforms=[plan_pb2.Transform(type=t, id=n, key_length=k) for t, n, k in SHA256],
            )
            if force_encap:
                peer.nat.force_encap = True

    return edit


async def ah_fleet(keylog: KeyLog | None = None) -> tuple[Fleet, AhLink]:
    link = AhLink()
    fleet = Fleet("a", "b")
    for node in fleet.nodes.values():
        node.engine = Engine(
            node.tun,
            lambda on_ike, on_esp, node=node: MemoryEndpoint(  # type: ignore[misc]
                fleet.net, on_ike, on_esp, host=node.address
            ),
            scheduler=fleet.clock,
            events=node.hub,
            rng=random.Random(7),
            keylog=keylog if node.host == "a" else None,
            make_raw_ah=lambda on_ah, node=node: link.socket(node.address),  # type: ignore[misc]
        )
    await fleet.start()
    for node in fleet.nodes.values():
        assert node.engine.dp is not None
        link.planes[node.address] = node.engine.dp
    return fleet, link


def crosses(fleet: Fleet, link: AhLink, tag: bytes) -> bool:
    a, b = fleet["a"], fleet["b"]
    a.tun.delivered.clear()
    b.tun.delivered.clear()
    there = udp4("10.1.0.5", "10.2.0.7", b"a to b " + tag)
    back = udp4("10.2.0.7", "10.1.0.5", b"b to a " + tag)
    a.send(there)
    b.send(back)
    sent = list(link.queue_packets())
    link.pump()
    # Every packet on the wire is AH, IP protocol 51, between the outer addresses.
    assert all(p[9] == 51 for p in sent) and len(sent) == 2
    return b.tun.delivered == [there] and a.tun.delivered == [back]


async def test_ah_child_is_negotiated_installed_and_carries_traffic(tmp_path: Path) -> None:
    keylog = KeyLog.open(tmp_path / "keys.log")
    fleet, link = await ah_fleet(keylog)
    await fleet.mesh(a=ah_only(), b=ah_only())
    a, b = fleet["a"], fleet["b"]
    (report,) = a.engine.ike_sas()
    (child,) = report.children
    assert child.proposal == "AH:sha256" and child.state == "installed"
    assert a.engine.dp is not None
    stats = a.engine.dp.stats()
    assert {(s.protocol, s.direction) for s in stats.sas} == {("ah", "in"), ("ah", "out")}
    assert crosses(fleet, link, b"1")
    assert {s.spi: s.counters for s in stats.sas} and child.spi_in in {s.spi for s in stats.sas}
    # A child rekey (make-before-break) keeps AH and keeps the traffic crossing.
    old_in = child.spi_in
    fleet.rekey("a", "b", RekeyTarget.CHILD, within=2)
    new_in, _ = a.child_spis("b")
    assert new_in != old_in
    assert crosses(fleet, link, b"2")
    assert all(s.protocol == "ah" for s in a.engine.dp.stats().sas)
    # Metrics: the child's protocol and proposal.
    metrics = generate_latest(agent_registry(agent_sources("a", a.engine, lambda: None)))
    assert (
        b'child_sa_info{child="b",mode="tunnel",peer="b",proposal="AH:sha256",protocol="ah"} 1.0'
        in metrics
    ), metrics.decode()
    assert a.engine.raw_ah is not None
    sent = a.engine.raw_ah.counters.tx_ah
    assert sent >= 2
    assert f'raw_ah_socket_packets_total{{event="tx_ah"}} {sent:.1f}'.encode() in metrics
    # The key log: AH records as comments (Wireshark has no AH table), none for tshark.
    keylog.close()
    text = (tmp_path / "keys.log").read_text()
    ah_lines = [line for line in text.splitlines() if line.startswith("#ah_sa:")]
    assert len(ah_lines) == 4  # installed and rekeyed, two directions each
    assert f'"0x{new_in:08x}","sha256"' in text
    assert not [o for o in tshark_options(text) if "ah_sa" in o]
    assert b.engine.dp is not None


async def test_forced_udp_encapsulation_refuses_the_ah_child() -> None:
    fleet, link = await ah_fleet()
    await fleet.mesh(a=ah_only(force_encap=True), b=ah_only(force_encap=True))
    a = fleet["a"]
    assert a.engine.dp is not None
    assert a.engine.dp.stats().sas == []
    refusals = [e.detail for e in a.events("child_failed")]
    assert refusals and all(r.startswith(AH_NAT) for r in refusals), refusals
    (report,) = a.engine.ike_sas()
    assert report.last_error.startswith(AH_NAT)
    a.send(udp4("10.1.0.5", "10.2.0.7"))
    assert link.queue == []


async def test_engine_never_installs_an_ah_child_over_udp(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The IKE core already refuses AH once NAT detection found a NAT (or encapsulation
    # is forced); the engine refuses too, should an AH child reach it on such an SA.
    fleet, _ = await ah_fleet()
    await fleet.mesh(a=ah_only(), b=ah_only())
    a = fleet["a"]
    peer = a.engine.peers["b"]
    driver = next(d for d in a.engine._by_spi.values() if d.owner is peer)
    installed_before = a.child_spis("b")
    monkeypatch.setattr(IkeSa, "encap", property(lambda self: True))
    event = ChildSaEstablished(
        name="b",
        spi_in=bytes.fromhex("0000c001"),
        spi_out=bytes.fromhex("0000c002"),
        encr_id=0,
        encr_key_bits=0,
        integ_id=12,
        esn=False,
        encr_key_in=b"",
        integ_key_in=bytes(32),
        encr_key_out=b"",
        integ_key_out=bytes(32),
        local_ts=(),
        remote_ts=(),
        mode=Mode.TUNNEL,
        proposal="AH:sha256",
        protocol=ProtocolId.AH,
    )
    peer.on_child_up(driver, event)
    assert a.engine.dp is not None
    assert 0xC001 not in {s.spi for s in a.engine.dp.stats().sas}
    assert a.child_spis("b") == installed_before
    (refusal,) = [e.detail for e in a.events("child_failed")]
    assert refusal.startswith(AH_NAT) and "UDP encapsulation is forced" in refusal
    assert peer.last_error == refusal


async def test_ikev1_quick_mode_ah_child_carries_traffic() -> None:
    # RFC 2407 section 4.4.1: PROTO_IPSEC_AH in Quick mode; the same install path.
    fleet, link = await ah_fleet()
    await fleet.mesh(a=ah_only(v1=True), b=ah_only(v1=True))
    a = fleet["a"]
    (report,) = a.engine.ike_sas()
    (child,) = report.children
    assert child.state == "installed" and child.proposal.startswith("AH:sha256"), child
    assert a.engine.dp is not None
    assert {s.protocol for s in a.engine.dp.stats().sas} == {"ah"}
    assert crosses(fleet, link, b"v1")
    fleet.rekey("a", "b", RekeyTarget.CHILD, within=5)
    assert a.child_spis("b")[0] != child.spi_in
    assert crosses(fleet, link, b"v1 rekeyed")


def test_ah_path_is_ip_protocol_51_and_never_udp() -> None:
    assert esp_path(False, ("192.0.2.2", 500), "192.0.2.2", False, ah=True) == (
        "192.0.2.2",
        Encap.RAW,
        ("192.0.2.2", 0),
    )
    try:
        esp_path(True, ("192.0.2.2", 4500), "192.0.2.2", True, ah=True)
    except PeerConfigError as exc:
        assert str(exc).startswith(AH_NAT)
    else:
        raise AssertionError("AH over a NAT was given a path")


def test_ah_key_record() -> None:
    params = AhParams(0x1234, Integrity.AES128GMAC, bytes(range(20)), src="2001:db8::1", dst="*")
    assert ah_sa_record(params) == (
        '#ah_sa:"IPv6","2001:db8::1","*","0x00001234","aes128gmac",'
        '"0x000102030405060708090a0b0c0d0e0f10111213"'
    )


@pytest.mark.parametrize(
    ("integ_id", "integrity"),
    [
        (12, Integrity.HMAC_SHA2_256_128),
        (14, Integrity.HMAC_SHA2_512_256),
        (11, Integrity.AES256GMAC),
    ],
)
def test_tun_mtu_leaves_room_for_ah(integ_id: int, integrity: Integrity) -> None:
    # A full-size packet through an AH tunnel fits the underlay (raw sockets do not
    # fragment what is sent with IP_HDRINCL): outer IPv4 + AH (RFC 4302 section 2).
    def edit(msg: plan_pb2.NodePlan) -> None:
        for peer in msg.peers:
            del peer.esp_proposals[:]
            peer.ah_proposals.add(
                text=integrity.value,
                transforms=[plan_pb2.Transform(type=3, id=integ_id), plan_pb2.Transform(type=5)],
            )

    plan = node_plan("a", ["b"], edit=edit)
    inner = tunnel_mtu(1500, esp_overhead(plan))
    assert 20 + ah_length(integrity, 4) + inner <= 1500
