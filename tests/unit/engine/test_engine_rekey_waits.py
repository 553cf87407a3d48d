"""What a Rekey call answers, on the in-memory engine pair and fake time: it waits until
the SA in force when it was made is replaced by a newer one, whoever made it, and fails
when the SA goes without a successor.

- a rekey the peer refuses for now (TEMPORARY_FAILURE, RFC 7296 section 2.25) while the
  peer's own rekey of the same child follows: rekeyed, by the peer's exchange;
- the same refusal with nothing following: tried again after a short back-off;
- a peer that restarted and replaces the IKE SA with INITIAL_CONTACT (section 2.4): the
  new IKE SA's child is the rekey, answered as soon as it is installed;
- the child deleted by the peer meanwhile: failed, saying so.
"""

from __future__ import annotations

import pytest

from tests.support.engine_pair import Fleet, node_plan
from vpnfleet.agent.engine.rekey import REKEY_RETRY_FIRST, REKEY_WAIT
from vpnfleet.agent.sink import RekeyTarget


@pytest.fixture
async def ab() -> Fleet:
    fleet = Fleet("a", "b")
    await fleet.start()
    await fleet.mesh()
    return fleet


def details(fleet: Fleet, host: str, kind: str) -> list[str]:
    return [e.detail for e in fleet[host].events(kind)]


async def test_ours_refused_while_the_peer_rekeys_the_same_child_is_rekeyed(ab: Fleet) -> None:
    """b rekeys the IKE SA and then the child; a rekeys the child at the same moment. b,
    its IKE rekey in flight, refuses a's child rekey with TEMPORARY_FAILURE (and a, its
    child rekey in flight, b's IKE rekey); b's child rekey then goes through. a's call
    answers that its child was rekeyed, by the peer, with no second exchange of its own."""
    a, b = ab["a"], ab["b"]
    before = a.child_spis("b")
    b_ike = b.engine.start_rekey("a", RekeyTarget.IKE)
    b_child = b.engine.start_rekey("a", RekeyTarget.CHILD)
    ours = a.engine.start_rekey("b", RekeyTarget.CHILD)
    ab.pump()
    assert any("TEMPORARY_FAILURE" in d for d in details(ab, "a", "child_rekey_refused"))
    assert ours.done and b_child.done
    outcome = ours.result()
    assert outcome.ok, outcome
    assert "rekeyed by the peer" in outcome.detail, outcome.detail
    assert b_child.result().ok, b_child.result()
    after = a.child_spis("b")
    assert after != before and after == tuple(reversed(b.child_spis("a")))
    assert f"child {after[0]:08x}" in outcome.detail
    ab.advance(REKEY_RETRY_FIRST * 4)  # past the retry a would have made
    assert a.child_spis("b") == after, "a rekeyed again although the peer's rekey won"
    assert a.events("child_failed") == [] and a.events("child_down") == []
    # b's IKE rekey, refused by a (its child rekey in flight), went through on a retry.
    assert b_ike.done and b_ike.result().ok, b_ike.result()
    assert any("TEMPORARY_FAILURE" in d for d in details(ab, "b", "ike_rekey_refused"))


async def test_refused_rekey_is_tried_again_after_a_back_off(ab: Fleet) -> None:
    """The peer refuses with TEMPORARY_FAILURE (its IKE rekey in flight) and does not
    rekey the child itself: the retry after the back-off rekeys it."""
    a, b = ab["a"], ab["b"]
    before = a.child_spis("b")
    b.engine.start_rekey("a", RekeyTarget.IKE)
    ours = a.engine.start_rekey("b", RekeyTarget.CHILD)
    ab.pump()
    assert not ours.done
    assert a.child_spis("b") == before
    ab.advance(REKEY_RETRY_FIRST * 1.5)
    assert ours.done
    outcome = ours.result()
    after = a.child_spis("b")
    assert outcome.ok and outcome.detail == f"child {after[0]:08x}", outcome
    assert after != before and after == tuple(reversed(b.child_spis("a")))
    assert a.events("child_failed") == []


@pytest.mark.parametrize("target", [RekeyTarget.CHILD, RekeyTarget.BOTH])
async def test_peer_restart_with_initial_contact_settles_the_wait(
    ab: Fleet, target: RekeyTarget
) -> None:
    """b restarts (its SAs lost, no word to a); a's rekey request on the old IKE SA goes
    unanswered until b, starting again, sets up a new IKE SA with INITIAL_CONTACT. Its
    child replacing the old one is the rekey: a answers then, not after REKEY_WAIT."""
    a, b = ab["a"], ab["b"]
    before = a.child_spis("b")
    old_ike = a.engine.ike_sas()[0].spi_i
    await b.restart()
    await b.engine.put_in_force(node_plan("b", ["a"]))
    pending = a.engine.start_rekey("b", target)
    ab.pump()
    assert not pending.done
    ab.advance(REKEY_WAIT / 3)
    assert pending.done, "the wait outlived the SA it waited for"
    outcome = pending.result()
    assert outcome.ok, outcome
    after = a.child_spis("b")
    assert after != before and after == tuple(reversed(b.child_spis("a")))
    assert f"child {after[0]:08x} (replaced with a new IKE SA: the peer restarted)" in (
        outcome.detail
    )
    if target is RekeyTarget.BOTH:
        (report,) = a.engine.ike_sas()
        assert report.spi_i != old_ike
        assert f"IKE {report.spi_i:016x}_i (replaced with a new IKE SA" in outcome.detail
    assert a.engine.peers_up() == b.engine.peers_up() == 1


async def test_child_deleted_by_the_peer_fails_the_wait_saying_so(ab: Fleet) -> None:
    """b deletes the child while a's rekey of it is in flight: there is no successor, so
    a's call fails at once with the reason, and does not wait out REKEY_WAIT."""
    a, b = ab["a"], ab["b"]
    b_driver = b.engine.peers["a"]
    assert b_driver.ike is not None and b_driver.child is not None
    b_driver.ike.home.delete_child(b_driver.child.spi_in, ab.clock.now())
    b.engine.driver_of(b_driver.ike.home).service()
    pending = a.engine.start_rekey("b", RekeyTarget.CHILD)
    ab.pump()
    assert pending.done
    outcome = pending.result()
    assert not outcome.ok
    assert outcome.detail == "child SA deleted (deleted by peer), no new one", outcome.detail
