"""The SA driver on its own: two IKE SAs, each behind an SaDriver whose host is a
recorder on fake time and whose owner is a fake peer driver that notes each call."""

from __future__ import annotations

import pytest

from tests.support.engine_drivers import FakeOwner, Wire, pair
from tests.support.ike_peers import RIGHT, left_right
from vpnfleet.agent.ike.ike_sa import IkeSa
from vpnfleet.agent.ike.states import IkeSaState, Role


@pytest.fixture
def wire() -> Wire:
    return Wire()


def test_datagrams_in_events_out_to_the_owner(wire: Wire) -> None:
    initiator, responder, left, right = pair(wire)
    wire.pump()
    assert initiator.sa.state is IkeSaState.ESTABLISHED
    assert responder.sa.state is IkeSaState.ESTABLISHED
    assert left.kinds() == ["ike_up", "child_up"]
    assert right.kinds() == ["ike_up", "child_up"]
    assert left.calls[0][1] is initiator and right.calls[0][1] is responder
    assert responder.last_port == 500


def test_the_one_timer_retransmits_and_is_re_armed(wire: Wire) -> None:
    """RFC 7296 section 2.1: an unanswered request is sent again when the SA's timer
    (armed from get_timer()) fires on the clock; nothing is sent before."""
    initiator, _, left, _ = pair(wire, drop_from_right=True)
    assert len(wire.lost) == 1  # the IKE_SA_INIT response
    deadline = initiator.sa.get_timer()
    assert deadline is not None
    wire.clock.advance(deadline - wire.clock.now() - 0.01)
    assert wire.left.sent == []
    wire.clock.advance(0.02)
    assert len(wire.left.sent) == 1  # the retransmission, by the timer alone
    assert initiator.sa.get_timer() is not None and initiator.sa.get_timer() != deadline
    wire.pump()
    assert left.kinds() == ["ike_up", "child_up"]


def test_an_owner_failing_on_an_event_is_reported_and_the_sa_goes_on(wire: Wire) -> None:
    left_config, right_config = left_right()
    left, right = FakeOwner("right", fail_on="ike_up"), FakeOwner("left")
    wire.responder = (right_config, right)
    initiator = wire.left.adopt(IkeSa(left_config, Role.INITIATOR), left)
    initiator.sa.initiate(RIGHT, wire.clock.now())
    initiator.service()
    wire.pump()
    assert wire.left.failures == ["IkeSaEstablished"]
    assert left.kinds() == ["ike_up", "child_up"]  # the next event still came
    assert initiator.sa.state is IkeSaState.ESTABLISHED


def test_a_closed_sa_is_forgotten_and_its_owner_lets_go(wire: Wire) -> None:
    initiator, responder, left, right = pair(wire)
    wire.pump()
    initiator.sa.delete(wire.clock.now())
    initiator.service()
    wire.pump()
    assert initiator.sa.is_closed and responder.sa.is_closed
    assert initiator in wire.left.forgotten and responder in wire.right.forgotten
    assert wire.left.by_spi == {} == wire.right.by_spi
    assert left.kinds()[-2:] == ["ike_deleted", "closed"]
    assert right.kinds()[-1] == "closed"
    assert ("ike_deleted", "deleted by peer") in right.calls


def test_an_ike_rekey_gives_the_new_sa_a_driver_of_its_own(wire: Wire) -> None:
    """Section 2.18: the new IKE SA is adopted under the same owner and port."""
    initiator, responder, left, right = pair(wire)
    wire.pump()
    initiator.sa.rekey(wire.clock.now())
    initiator.service()
    wire.pump()
    (old, new) = next(arg for what, arg in left.calls if what == "ike_rekeyed")  # type: ignore[misc]
    assert old is initiator and new is not initiator
    assert new.owner is left and new.sa.state is IkeSaState.ESTABLISHED
    assert wire.left.by_spi[new.sa.local_spi] is new
    (_, theirs) = next(arg for what, arg in right.calls if what == "ike_rekeyed")  # type: ignore[misc]
    assert theirs.last_port == responder.last_port == 500


def test_an_sa_without_owner_only_finishes(wire: Wire) -> None:
    """A removed peer's SA: its events go nowhere, its delete still completes."""
    initiator, _, left, _ = pair(wire)
    calls = len(left.calls)
    initiator.owner = None
    initiator.sa.delete(wire.clock.now())
    initiator.service()
    wire.pump()
    assert initiator.sa.is_closed and len(left.calls) == calls
    assert initiator in wire.left.forgotten


def test_no_timer_is_armed_once_the_host_stopped(wire: Wire) -> None:
    initiator, _, _, _ = pair(wire)
    initiator.cancel_timer()
    wire.left.stopped = True
    initiator.arm()
    assert wire.clock.next_deadline() is None
