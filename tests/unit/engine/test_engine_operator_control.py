"""The operator's initiate and terminate (``vpnfleet-agent initiate|terminate PEER``) in
the engine, on the in-memory network and fake time: a terminated peer stays down past
every retry its plan would make, and initiate brings it back."""

from __future__ import annotations

import pytest

from tests.support.engine_pair import Fleet
from vpnfleet.agent.engine.peer_state import PeerState
from vpnfleet.agent.sink import PeerControl, PeerControlError


async def test_terminate_holds_the_peer_down_until_initiate() -> None:
    fleet = Fleet("a", "b")
    await fleet.start()
    await fleet.mesh()
    a, b = fleet["a"].engine, fleet["b"].engine
    assert isinstance(a, PeerControl)
    assert a.peers["b"].is_up and b.peers["a"].is_up

    said = a.terminate_peer("b")  # a is the plan's initiator towards b
    fleet.pump()
    assert said == "b: deleting 1 IKE SA(s); not started again until initiate"
    assert [e.detail for e in fleet["a"].events("terminate", "b")] == [
        "by the operator: deleting 1 IKE SA(s)"
    ]
    fleet.advance(600)  # ten minutes: longer than any back-off the plan would retry at
    assert not a.peers["b"].is_up and not b.peers["a"].is_up
    assert a.peers["b"].state is PeerState.IDLE
    assert [r.children for r in a.ike_sas()] == [()]
    assert not fleet["a"].events("ike_up", "b")[1:]  # only the first one, before terminate

    assert a.initiate_peer("b") == "b: initiating"
    fleet.advance(2)
    assert a.peers["b"].is_up and b.peers["a"].is_up
    assert len(fleet["a"].events("ike_up", "b")) == 2
    assert a.initiate_peer("b") == "b: IKE SA already established"


async def test_terminate_of_a_peer_without_sa_and_unknown_peers() -> None:
    fleet = Fleet("a", "b")
    await fleet.start()
    await fleet.mesh()
    a = fleet["a"].engine
    a.terminate_peer("b")
    fleet.pump()
    assert a.terminate_peer("b") == "b: no IKE SA; not started again until initiate"
    with pytest.raises(PeerControlError, match=r"no peer 'c' in the plan in force \(peers: b\)"):
        a.initiate_peer("c")
    with pytest.raises(PeerControlError, match="no peer 'c'"):
        a.terminate_peer("c")
