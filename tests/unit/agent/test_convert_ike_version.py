"""The agent reads a peer's IKE version (plan.proto Peer field 22) and IKEv1 Aggressive
Mode (field 23) into its plan, refuses what cannot be meant, and the engine gives each
peer the IKE core of its version."""

from __future__ import annotations

import pytest

from tests.support.engine_pair import Fleet, node_plan
from vpnfleet.agent.cli import _summary
from vpnfleet.agent.convert import plan_from_proto
from vpnfleet.agent.engine import translate
from vpnfleet.agent.hollow import sample_plan
from vpnfleet.agent.ike.config import IkeConfig
from vpnfleet.agent.ike.v1.config import IkeV1Config
from vpnfleet.agent.plan import IkeVersion, PlanRejected
from vpnfleet.protos import plan_pb2
from vpnfleet.protos.hashing import plan_content_hash


def plan_with(version: int, aggressive: bool = False, ike: str = "") -> plan_pb2.NodePlan:
    msg = sample_plan(
        "a1",
        "10.0.0.1",
        "10.1.0.0/24",
        [("b1", "10.0.0.2", "10.2.0.0/24"), ("c1", "10.0.0.3", "10.3.0.0/24")],
    )
    msg.peers[0].ike_version = version  # type: ignore[assignment]
    msg.peers[0].ike_aggressive = aggressive
    if ike:
        # aes256-sha256-modp2048 (RFC 2409 Appendix A: a CBC cipher, a hash, a group)
        del msg.peers[0].ike_proposals[:]
        msg.peers[0].ike_proposals.add(
            text=ike,
            transforms=[
                plan_pb2.Transform(type=1, id=12, key_length=256),
                plan_pb2.Transform(type=2, id=5),
                plan_pb2.Transform(type=3, id=12),
                plan_pb2.Transform(type=4, id=14),
            ],
        )
    msg.content_hash = plan_content_hash(msg)
    return msg


def test_unset_means_ikev2() -> None:
    b1, c1 = plan_from_proto(plan_with(plan_pb2.IKE_V2)).peers
    assert (b1.ike_version, b1.ike_aggressive) == (IkeVersion.V2, False)
    assert c1.ike_version is IkeVersion.V2


def test_ikev1_and_aggressive_are_read() -> None:
    b1, c1 = plan_from_proto(
        plan_with(plan_pb2.IKE_V1, aggressive=True, ike="aes256-sha256-modp2048")
    ).peers
    assert (b1.ike_version, b1.ike_aggressive) == (IkeVersion.V1, True)
    assert (c1.ike_version, c1.ike_aggressive) == (IkeVersion.V2, False)


def test_an_unknown_version_is_refused() -> None:
    with pytest.raises(PlanRejected) as caught:
        plan_from_proto(plan_with(7))
    assert caught.value.reasons == [
        "peer 'b1' ike_version: unknown or missing value 7 (expected one of v2, v1)"
    ]


def test_aggressive_mode_with_ikev2_is_refused() -> None:
    with pytest.raises(PlanRejected) as caught:
        plan_from_proto(plan_with(plan_pb2.IKE_V2, aggressive=True))
    assert caught.value.reasons == [
        "peer 'b1': ike_aggressive is an IKEv1 mode (RFC 2409 section 5); the peer is IKEv2"
    ]


def test_an_aead_ike_proposal_for_an_ikev1_peer_is_refused() -> None:
    """The sample plan's aes256gcm16-prfsha384-x25519 has no IKEv1 phase 1 form."""
    with pytest.raises(PlanRejected) as caught:
        plan_from_proto(plan_with(plan_pb2.IKE_V1))
    assert caught.value.reasons == [
        "peer 'b1': ike proposal 'aes256gcm16-prfsha384-x25519': AEAD encryption, which "
        "IKEv1 phase 1 does not have (RFC 2409 Appendix A)"
    ]


def test_translate_gives_each_peer_the_configuration_of_its_version() -> None:
    plan = plan_from_proto(plan_with(plan_pb2.IKE_V1, ike="aes256-sha256-modp2048"))
    b1, c1 = plan.peers
    v1 = translate.peer_config(plan, b1)
    assert isinstance(v1, IkeV1Config)
    assert [str(p) for p in v1.ike_proposals] == ["aes256-sha256-modp2048"]
    assert isinstance(translate.peer_config(plan, c1), IkeConfig)
    with pytest.raises(translate.PeerConfigError) as caught:
        translate.ike_config(plan, b1)
    assert str(caught.value) == "peer b1: an IKEv1 peer has no IKEv2 configuration"


def ikev1_towards(peer: str, plan: plan_pb2.NodePlan) -> None:
    for p in plan.peers:
        if p.name == peer:
            p.ike_version = plan_pb2.IKE_V1
            p.ike_proposals[0].text = "aes256-sha256-modp2048"
            del p.ike_proposals[0].transforms[:]
            p.ike_proposals[0].transforms.extend(
                [
                    plan_pb2.Transform(type=1, id=12, key_length=256),
                    plan_pb2.Transform(type=2, id=5),
                    plan_pb2.Transform(type=3, id=12),
                    plan_pb2.Transform(type=4, id=14),
                ]
            )


async def test_ends_that_disagree_on_the_version_make_no_tunnel_and_count_it() -> None:
    """a reaches b with IKEv1, b reaches a with IKEv2 (a plan the controller refuses):
    neither core takes the other's requests, each side counts them as wrong_version,
    and no tunnel of either version comes up; the IKEv2 peer c beside it does."""
    fleet = Fleet("a", "b", "c")
    await fleet.start()
    await fleet.apply("b", node_plan("b", ["a", "c"]))
    await fleet.apply("c", node_plan("c", ["a", "b"]))
    report = await fleet["a"].engine.put_in_force(
        node_plan("a", ["b", "c"], edit=lambda m: ikev1_towards("b", m))
    )
    assert report.failed_peers == ()
    fleet.advance(5)
    a, b = fleet["a"].engine, fleet["b"].engine
    assert a.peers["c"].is_up and a.peers_up() == 1
    assert not a.peers["b"].is_up and not b.peers["a"].is_up
    assert a.ike_counters()["wrong_version"] > 0
    assert b.ike_counters()["wrong_version"] > 0


@pytest.mark.parametrize("version", [plan_pb2.IKE_V1, plan_pb2.IKE_V2])
def test_a_sha1_phase_1_hash_is_taken_for_ikev1_peers_only(version: int) -> None:
    """RFC 2409 Appendix A: SHA-1 is an IKEv1 phase 1 hash; this agent's IKEv2 does not
    negotiate HMAC-SHA1-96 for an IKE SA (only for AH) nor its PRF, so an IKEv2 peer's
    IKE proposal with it is refused."""
    msg = plan_with(version, ike="aes256-sha1-modp2048")
    transforms = msg.peers[0].ike_proposals[0].transforms
    transforms[1].id, transforms[2].id = 2, 2  # PRF_HMAC_SHA1, AUTH_HMAC_SHA1_96
    msg.content_hash = plan_content_hash(msg)
    if version == plan_pb2.IKE_V1:
        b1 = plan_from_proto(msg).peers[0]
        assert [(t.type.name, t.id) for t in b1.ike_proposals[0].transforms][1:3] == [
            ("PRF", 2),
            ("INTEG", 2),
        ]
        return
    with pytest.raises(PlanRejected) as caught:
        plan_from_proto(msg)
    assert [r.split(": ", 1)[1] for r in caught.value.reasons] == [
        "PRF transform 2 is not implemented (have [5, 6, 7])",
        "INTEG transform 2 is not one IKE proposals may carry",
    ]


def test_the_agent_plan_summary_names_an_ikev1_peer() -> None:
    plan = plan_from_proto(
        plan_with(plan_pb2.IKE_V1, aggressive=True, ike="aes256-sha256-modp2048")
    )
    lines = [line for line in _summary(plan) if line.startswith("  peer ")]
    assert lines[0].startswith("  peer b1: 10.0.0.2 IKEv1 aggressive tunnel ")
    assert "IKEv" not in lines[1]
