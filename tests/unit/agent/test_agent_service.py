"""AgentService.apply without the network: order of checks, idempotence, dry run, events."""

from __future__ import annotations

from pathlib import Path

import pytest

from vpnfleet.agent.hollow import sample_plan
from vpnfleet.agent.plan import PlanRejected
from vpnfleet.agent.service import AgentService, WrongHost
from vpnfleet.agent.sink import PlanOnlySink, RekeyTarget
from vpnfleet.agent.store import PlanStore
from vpnfleet.protos import plan_pb2

PEERS = [("b1", "10.0.0.2", "10.2.0.0/24")]


def make(tmp_path: Path) -> tuple[AgentService, PlanOnlySink]:
    sink = PlanOnlySink()
    return AgentService("a1", PlanStore(tmp_path), sink, clock=lambda: 1234.0), sink


def plan(epoch: int = 1, generation: int = 1, host: str = "a1") -> plan_pb2.NodePlan:
    return sample_plan(host, "10.0.0.1", "10.1.0.0/24", PEERS, generation, epoch)


async def test_apply_persists_then_puts_in_force(tmp_path: Path) -> None:
    service, sink = make(tmp_path)
    resp = await service.apply(plan(), dry_run=False)
    assert resp.changed and resp.generation == 1
    assert {(c.section, c.name) for c in resp.changes} >= {("peer", "b1"), ("spd", "protect-b1")}
    assert sink.plan is not None and sink.plan.content_hash == resp.content_hash
    assert (tmp_path / "plan.pb").exists()


async def test_same_plan_twice_changes_nothing(tmp_path: Path) -> None:
    service, sink = make(tmp_path)
    await service.apply(plan(), dry_run=False)
    before = (tmp_path / "plan.pb").stat().st_mtime_ns
    resp = await service.apply(plan(generation=2), dry_run=False)
    assert not resp.changed and list(resp.changes) == []
    assert resp.generation == 1  # nothing was written, so generation 1 stays in force
    assert (tmp_path / "plan.pb").stat().st_mtime_ns == before
    assert len(sink.plans) == 1


async def test_dry_run_lists_changes_and_persists_nothing(tmp_path: Path) -> None:
    service, sink = make(tmp_path)
    first = await service.apply(plan(), dry_run=False)
    resp = await service.apply(plan(epoch=2, generation=2), dry_run=True)
    assert resp.changed
    assert [list(c.details) for c in resp.changes] == [["auth psk:a1/b1/epoch-1 -> epoch-2"]]
    assert resp.content_hash == first.content_hash  # still the plan in force
    assert service.store.load(lambda b: b, lambda b: "").stored is not None
    assert sink.plan is not None and sink.plan.content_hash == first.content_hash


async def test_refused_plan_leaves_plan_in_force(tmp_path: Path) -> None:
    service, sink = make(tmp_path)
    good = await service.apply(plan(), dry_run=False)
    bad = plan(epoch=2)
    bad.peers[0].auth.psk = b""  # without rehashing: corrupt in transit
    with pytest.raises(PlanRejected):
        await service.apply(bad, dry_run=False)
    assert service.plan is not None and service.plan.content_hash == good.content_hash
    assert sink.plan is not None and sink.plan.content_hash == good.content_hash


async def test_plan_for_another_host(tmp_path: Path) -> None:
    service, _ = make(tmp_path)
    with pytest.raises(WrongHost, match="plan is for host 'z9', this agent is 'a1'"):
        await service.apply(plan(host="z9"), dry_run=False)
    assert not (tmp_path / "plan.pb").exists()


async def test_restore_after_restart(tmp_path: Path) -> None:
    service, _ = make(tmp_path)
    resp = await service.apply(plan(generation=7), dry_run=False)
    again, sink = make(tmp_path)
    assert await again.restore() == []
    assert again.generation == 7 and again.applied_at == 1234.0
    assert sink.plan is not None and sink.plan.content_hash == resp.content_hash


async def test_a_plan_after_a_restart_is_diffed_against_the_restored_one(tmp_path: Path) -> None:
    service, _ = make(tmp_path)
    await service.apply(plan(), dry_run=False)
    again, _ = make(tmp_path)
    await again.restore()
    resp = await again.apply(plan(epoch=2, generation=2), dry_run=True)
    assert [(c.section, c.name, list(c.details)) for c in resp.changes] == [
        ("peer", "b1", ["auth psk:a1/b1/epoch-1 -> epoch-2"])
    ]


async def test_restore_ignores_plan_of_other_host(tmp_path: Path) -> None:
    service, _ = make(tmp_path)
    await service.apply(plan(), dry_run=False)
    other = AgentService("b1", PlanStore(tmp_path), PlanOnlySink())
    problems = await other.restore()
    assert other.plan is None
    assert any("stored plan is for host 'a1'" in p for p in problems)


async def test_plan_applied_event_is_published(tmp_path: Path) -> None:
    service, _ = make(tmp_path)
    queue = service.events.subscribe()
    await service.apply(plan(generation=4), dry_run=False)
    event = queue.get_nowait()
    assert event.kind == "plan_applied" and "generation 0 -> 4" in event.detail


async def test_status_and_rekey_without_data_plane(tmp_path: Path) -> None:
    service, sink = make(tmp_path)
    await service.apply(plan(), dry_run=False)
    status = service.status()
    assert (status.host, status.peers_total, status.data_plane) == ("a1", 1, False)
    results = await sink.rekey(["b1"], RekeyTarget.BOTH)
    assert [(r.peer, r.ok, r.detail) for r in results] == [
        ("b1", False, "no data plane in this agent")
    ]


class FakeContext:
    async def abort(self, code: object, details: str) -> None:
        raise AssertionError(f"aborted: {details}")


async def test_watch_status_unsubscribes_when_the_stream_ends(tmp_path: Path) -> None:
    from vpnfleet.protos import agent_pb2

    service, _ = make(tmp_path)
    stream = service.WatchStatus(
        agent_pb2.WatchStatusRequest(interval_seconds=60),
        FakeContext(),
    )
    first = await anext(stream)
    assert first.WhichOneof("event") == "status" and first.status.host == "a1"
    await service.apply(plan(), dry_run=False)
    second = await anext(stream)
    assert second.sa_event.kind == "plan_applied"
    assert service.events.watchers == 1
    await stream.aclose()  # what gRPC does when the client cancels
    assert service.events.watchers == 0
