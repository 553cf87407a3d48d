"""Two engines with an IKEv1 peer (RFC 2409) on an in-memory network and fake time:
Main mode and Quick mode bring the child up in the same data plane as IKEv2's; the
child is replaced by a new Quick mode make-before-break, phase 1 is replaced by a new
Main mode; deletes, strangers and version mix-ups are counted, not fatal."""

from __future__ import annotations

import pytest

from tests.support.engine_pair import Fleet, udp4
from vpnfleet.agent.ike.v1.sa import IkeV1Sa
from vpnfleet.agent.plan import IkeVersion
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
