"""A peer's RFC 7383 fragmentation settings reach its IkeConfig."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from tests.support.engine_pair import node_plan
from vpnfleet.agent.engine import translate
from vpnfleet.agent.engine.engine import same_tunnel
from vpnfleet.protos import plan_pb2


def test_defaults_reach_the_ike_config() -> None:
    plan = node_plan("a", ["b"])
    (peer,) = plan.peers
    config = translate.ike_config(plan, peer)
    assert (config.fragmentation, config.fragment_size) == (True, 1280)


def test_plan_settings_reach_the_ike_config() -> None:
    def edit(msg: plan_pb2.NodePlan) -> None:
        msg.peers[0].ike_fragmentation_off = True
        msg.peers[0].ike_fragment_size = 1400

    plan = node_plan("a", ["b"], edit=edit)
    (peer,) = plan.peers
    config = translate.ike_config(plan, peer)
    assert (config.fragmentation, config.fragment_size) == (False, 1400)


def test_a_size_the_ike_core_refuses_names_the_peer() -> None:
    # plan_from_proto refuses such a plan; a Peer built in code gets the IKE core's check.
    plan = node_plan("a", ["b"])
    (peer,) = plan.peers
    with pytest.raises(translate.PeerConfigError) as info:
        translate.ike_config(plan, replace(peer, ike_fragment_size=100))
    assert str(info.value) == "peer b: fragment_size must be 256 to 65535 bytes, got 100"


@pytest.mark.parametrize(
    "change", [{"ike_fragmentation": False}, {"ike_fragment_size": 1400}], ids=["off", "size"]
)
def test_a_change_is_put_in_force_with_a_new_ike_sa(change: dict[str, Any]) -> None:
    # Fragmentation support is announced in IKE_SA_INIT (RFC 7383 section 2.3), so the
    # SA in force keeps what it negotiated; a new one (make-before-break) takes the change.
    (peer,) = node_plan("a", ["b"]).peers
    assert not same_tunnel(peer, replace(peer, **change))
