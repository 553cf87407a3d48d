"""The peer driver on its own: its state table driven by events only, then one driver
on a recording host with an in-memory data plane, its IKE carried by a wire to a bare
responder SA on fake time."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from tests.support.engine_drivers import FakeOwner, PeerHostRecorder, Wire
from tests.support.engine_pair import node_plan
from vpnfleet.agent.engine import translate
from vpnfleet.agent.engine.peer_driver import PeerDriver
from vpnfleet.agent.engine.peer_state import (
    TRANSITIONS,
    PeerEvent,
    PeerState,
    PeerStateError,
    next_state,
)
from vpnfleet.agent.ike.states import IkeSaState
from vpnfleet.agent.sink import RekeyTarget

LIVE = (PeerState.IDLE, PeerState.CONNECTING, PeerState.UP, PeerState.RETRY_WAIT)

EXPECTED = {
    PeerEvent.INITIATED: PeerState.CONNECTING,
    PeerEvent.CHILD_UP: PeerState.UP,
    PeerEvent.PREVIOUS_KEPT: PeerState.UP,
    PeerEvent.RETRY_SCHEDULED: PeerState.RETRY_WAIT,
    PeerEvent.LEFT_IDLE: PeerState.IDLE,
    PeerEvent.REMOVED: PeerState.DELETING,
}


@pytest.mark.parametrize("state", LIVE)
@pytest.mark.parametrize("event", list(PeerEvent))
def test_every_live_state_takes_every_event(state: PeerState, event: PeerEvent) -> None:
    assert next_state("b", state, event) is EXPECTED[event]


@pytest.mark.parametrize("event", list(PeerEvent))
def test_a_removed_peer_takes_no_event_and_the_error_names_all_three(event: PeerEvent) -> None:
    with pytest.raises(PeerStateError) as caught:
        next_state("b", PeerState.DELETING, event)
    assert str(caught.value) == f"peer b: no transition from deleting on {event.value}"


def test_the_table_covers_every_state() -> None:
    assert set(TRANSITIONS) == set(PeerState)


def test_a_driver_moves_only_through_the_table() -> None:
    plan = node_plan("a", ["b"])
    driver = PeerDriver(plan.peers[0], None, None, PeerHostRecorder(Wire().clock))
    assert driver.state is PeerState.IDLE
    for event, state in [
        (PeerEvent.INITIATED, PeerState.CONNECTING),
        (PeerEvent.RETRY_SCHEDULED, PeerState.RETRY_WAIT),
        (PeerEvent.INITIATED, PeerState.CONNECTING),
        (PeerEvent.CHILD_UP, PeerState.UP),
        (PeerEvent.REMOVED, PeerState.DELETING),
    ]:
        driver.move(event)
        assert driver.state is state
    with pytest.raises(PeerStateError, match="peer b: no transition from deleting on initiated"):
        driver.move(PeerEvent.INITIATED)


def driver_and_wire() -> tuple[PeerDriver, PeerHostRecorder, Wire]:
    """a's driver for its peer b, on the left of a wire whose right answers as b."""
    wire = Wire(PeerHostRecorder)
    host = wire.left
    assert isinstance(host, PeerHostRecorder)
    plan_a, plan_b = node_plan("a", ["b"]), node_plan("b", ["a"])
    peer = plan_a.peers[0]
    config = translate.ike_config(plan_a, peer, None)
    driver = PeerDriver(peer, config, translate.local_address(plan_a, peer), host)
    wire.responder = (translate.ike_config(plan_b, plan_b.peers[0], None), FakeOwner("a"))
    return driver, host, wire


def test_up_then_deleted_by_the_peer_then_retried_after_the_back_off() -> None:
    driver, host, wire = driver_and_wire()
    assert driver.always_on and driver.initiates  # a < b: a initiates, start=start
    driver.initiate()
    assert driver.state is PeerState.CONNECTING
    wire.pump()
    assert driver.state is PeerState.UP and driver.is_up
    assert host.memory_plane.calls == ["install b"]
    assert host.kinds() == ["ike_up", "child_up"]
    assert driver.sas() == [driver.ike]

    (theirs,) = wire.responders
    theirs.sa.delete(wire.clock.now())
    theirs.service()
    wire.pump()
    assert driver.child is None and driver.ike is None
    assert host.memory_plane.calls == ["install b", "remove b"]
    assert driver.state is PeerState.RETRY_WAIT  # always on and ours to start
    assert host.kinds()[-2:] == ["ike_down", "peer_retry"]
    assert driver.sas() == [] and host.by_spi == {}

    wire.clock.advance(driver.backoff() * 1.1)
    assert driver.state is PeerState.CONNECTING
    wire.pump()
    assert driver.state is PeerState.UP
    assert host.memory_plane.calls == ["install b", "remove b", "install b"]


def test_failures_back_off_and_the_peer_tells_why() -> None:
    driver, host, wire = driver_and_wire()
    config, owner = wire.responder or (None, None)
    assert config is not None and owner is not None
    wire.responder = (dataclasses.replace(config, psk=b"wrong"), owner)
    driver.initiate()
    wire.pump()
    assert driver.state is PeerState.RETRY_WAIT and driver.attempts == 1
    assert "AUTHENTICATION_FAILED" in driver.last_error
    assert driver.problem is not None and driver.problem.subject == "b"
    wire.clock.advance(driver.backoff() * 1.1)
    wire.pump()
    assert driver.attempts == 2 and driver.backoff() == 2.0
    assert host.memory_plane.calls == []


async def test_a_rekey_call_settles_when_the_child_is_replaced() -> None:
    driver, host, wire = driver_and_wire()
    driver.initiate()
    wire.pump()
    assert driver.child is not None
    before = driver.child.spi_in
    pending = driver.start_rekey(RekeyTarget.CHILD)
    wire.pump()
    assert pending.done
    outcome = pending.result()
    assert outcome.ok and outcome.detail == f"child {driver.child.spi_in.hex()}"
    assert driver.child.spi_in != before
    assert host.memory_plane.calls == ["install b", "rekey b"]
    assert driver.ike is not None and driver.ike.state is IkeSaState.ESTABLISHED


async def test_a_call_waiting_on_a_removed_peer_is_answered_at_once() -> None:
    driver, _host, wire = driver_and_wire()
    driver.initiate()
    wire.pump()
    pending = driver.start_rekey(RekeyTarget.CHILD)
    liveness = asyncio.get_running_loop().create_future()
    assert driver.check_liveness(liveness) is None
    assert not pending.done and not liveness.done()
    driver.remove()
    assert pending.done
    outcome = pending.result()
    assert not outcome.ok and outcome.detail == "peer removed from the plan"
    assert liveness.result() == "peer removed from the plan"


def test_removed_from_the_plan_its_child_and_sas_go() -> None:
    driver, host, wire = driver_and_wire()
    driver.initiate()
    wire.pump()
    (sa,) = driver.sas()
    driver.remove()
    wire.pump()
    assert driver.state is PeerState.DELETING and not driver.current
    assert host.memory_plane.calls == ["install b", "remove b"]
    assert sa.is_closed and host.by_spi == {}
