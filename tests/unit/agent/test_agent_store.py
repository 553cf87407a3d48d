"""PlanStore: atomic replacement, 0600, sidecar, and corrupt files set aside."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from vpnfleet.agent.convert import plan_from_bytes
from vpnfleet.agent.hollow import sample_plan
from vpnfleet.agent.plan import AgentPlan
from vpnfleet.agent.store import LoadResult, PlanStore, StoreError


def plan_bytes(epoch: int = 1) -> bytes:
    m = sample_plan("a1", "10.0.0.1", "10.1.0.0/24", [("b1", "10.0.0.2", "10.2.0.0/24")], 3, epoch)
    return m.SerializeToString(deterministic=True)


def load(store: PlanStore) -> LoadResult[AgentPlan]:
    return store.load(plan_from_bytes, lambda p: p.content_hash)


def save(store: PlanStore, data: bytes, applied_at: float = 1000.0) -> AgentPlan:
    plan = plan_from_bytes(data)
    store.save(
        data, generation=plan.generation, content_hash=plan.content_hash, applied_at=applied_at
    )
    return plan


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    store = PlanStore(tmp_path / "state")
    plan = save(store, plan_bytes())
    result = load(store)
    assert result.problems == ()
    assert result.stored is not None
    assert result.stored.plan == plan
    assert (result.stored.generation, result.stored.applied_at) == (3, 1000.0)
    assert stat.S_IMODE(store.plan_path.stat().st_mode) == 0o600
    meta = json.loads(store.sidecar_path.read_text())
    assert meta == {"generation": 3, "content_hash": plan.content_hash, "applied_at": 1000.0}


def test_nothing_stored(tmp_path: Path) -> None:
    result = load(PlanStore(tmp_path))
    assert result.stored is None and result.problems == ()


def test_failed_write_keeps_old_plan_and_leaves_no_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = PlanStore(tmp_path)
    old = save(store, plan_bytes(1))

    def broken_fsync(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(StoreError, match="No space left"):
        save(store, plan_bytes(2))
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plan.json", "plan.pb"]
    result = load(store)
    assert result.stored is not None and result.stored.plan == old


def test_crash_between_plan_and_sidecar(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = PlanStore(tmp_path)
    save(store, plan_bytes(1))
    real_replace = os.replace
    calls = []

    def replace_once(src: object, dst: object) -> None:
        calls.append(dst)
        if len(calls) == 2:  # the sidecar's rename
            raise OSError(5, "I/O error")
        real_replace(src, dst)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "replace", replace_once)
    with pytest.raises(StoreError):
        save(store, plan_bytes(2))
    monkeypatch.undo()
    result = load(store)
    assert result.stored is not None
    assert result.stored.plan == plan_from_bytes(plan_bytes(2))  # the plan file is the truth
    assert any("describes another plan" in p for p in result.problems)


def test_corrupt_plan_is_set_aside(tmp_path: Path) -> None:
    store = PlanStore(tmp_path)
    save(store, plan_bytes())
    data = store.plan_path.read_bytes()
    store.plan_path.write_bytes(data[: len(data) // 2])
    result = load(store)
    assert result.stored is None
    assert len(result.problems) == 1
    assert "unusable" in result.problems[0] and "corrupt or truncated" in result.problems[0]
    assert not store.plan_path.exists()
    assert (tmp_path / "plan.pb.corrupt").read_bytes() == data[: len(data) // 2]
    # A second start finds no plan and no new problem.
    assert load(store).stored is None and load(store).problems == ()


def test_garbage_sidecar_is_ignored(tmp_path: Path) -> None:
    store = PlanStore(tmp_path)
    save(store, plan_bytes())
    store.sidecar_path.write_text("{not json")
    result = load(store)
    assert result.stored is not None and result.stored.generation == 0
    assert any("unreadable" in p for p in result.problems)


def test_save_uses_nothing_planted_at_a_temporary_name(tmp_path: Path) -> None:
    """The temporary name used to be ``.plan.pb.tmp.PID``: a link planted there made the
    plan (PSKs) land wherever it pointed."""
    store = PlanStore(tmp_path / "state")
    store.directory.mkdir(mode=0o700)
    victim = tmp_path / "victim"
    victim.write_bytes(b"not yours\n")
    planted = store.directory / f".plan.pb.tmp.{os.getpid()}"
    planted.symlink_to(victim)
    data = plan_bytes()
    save(store, data)
    assert victim.read_bytes() == b"not yours\n"
    assert not store.plan_path.is_symlink() and store.plan_path.read_bytes() == data
    assert planted.is_symlink()


def test_save_refuses_a_directory_others_can_write(tmp_path: Path) -> None:
    directory = tmp_path / "shared"
    directory.mkdir()
    directory.chmod(0o777)
    store = PlanStore(directory)
    with pytest.raises(StoreError) as caught:
        save(store, plan_bytes())
    message = str(caught.value)
    assert f"refusing to write a private file in {directory}: it has mode 0777" in message
    assert list(directory.iterdir()) == []
