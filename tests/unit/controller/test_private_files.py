"""The controller's secret files (plan --emit, state, lab record, rotation journals)
go through the one safe writer (vpnfleet.protos.files): nothing planted at a temporary
name is used, 0600 whatever the umask, a shared directory is refused, every byte is
written even when the kernel takes them one at a time."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from vpnfleet.controller.fleet import operations
from vpnfleet.controller.fleet.operations import CompiledFleet
from vpnfleet.controller.lab import record
from vpnfleet.controller.rotate import rotation
from vpnfleet.controller.statedir.state import StateDir, StateError

LAB = Path(__file__).resolve().parents[3] / "inventories" / "lab"


@pytest.fixture
def state(tmp_path: Path) -> StateDir:
    return StateDir(tmp_path / "state")


@pytest.fixture
def fleet(state: StateDir) -> CompiledFleet:
    return operations.compile_fleet(LAB, state)


@pytest.fixture
def umask_000() -> Iterator[None]:
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def plan_bytes(fleet: CompiledFleet, host: str) -> bytes:
    return fleet.message(host).SerializeToString(deterministic=True)


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


@pytest.mark.parametrize("plant", ["symlink", "world-readable file"])
def test_emit_uses_nothing_planted_at_a_temporary_name(
    tmp_path: Path, fleet: CompiledFleet, plant: str
) -> None:
    """The temporary name used to be ``.NAME.tmpPID``: anyone able to guess it could make
    the PSKs land in a file of theirs, or through a link anywhere the writer can write."""
    out = tmp_path / "plans"
    out.mkdir(mode=0o700)
    victim = tmp_path / "victim"
    victim.write_bytes(b"not yours\n")
    planted = out / f".a1.plan.tmp{os.getpid()}"
    if plant == "symlink":
        planted.symlink_to(victim)
    else:
        planted.write_bytes(b"")
        planted.chmod(0o644)
    operations.emit_plans(fleet, out)
    assert victim.read_bytes() == b"not yours\n"
    plan = out / "a1.plan"
    assert not plan.is_symlink()
    assert plan.read_bytes() == plan_bytes(fleet, "a1")
    assert mode_of(plan) == 0o600
    # What was planted is left as it was (and holds nothing of ours).
    if plant == "symlink":
        assert planted.is_symlink()
    else:
        assert planted.read_bytes() == b""


def test_controller_files_are_0600_with_umask_000(
    tmp_path: Path, state: StateDir, fleet: CompiledFleet, umask_000: None
) -> None:
    out = tmp_path / "plans"
    written = operations.emit_plans(fleet, out)
    state.record_generation(7)
    record.write_json(state.root / "lab.json", {"state": "up"})
    journal = rotation.RotationJournal(2, 1, [["a4"], ["a3", "a2", "a1"]])
    journal.save(state)
    files = [
        *written,
        state.root / "generation",
        state.root / "lab.json",
        rotation.RotationJournal.path(state),
        state.secrets / "psk-master",
    ]
    assert {str(path): mode_of(path) for path in files} == {str(path): 0o600 for path in files}
    assert mode_of(out) == 0o700
    assert (state.root / "generation").read_text() == "7\n"
    assert rotation.RotationJournal.load(state) == journal


@pytest.mark.parametrize("mode", [0o777, 0o770, 0o1777])
def test_emit_refuses_a_directory_others_can_write(
    tmp_path: Path, fleet: CompiledFleet, mode: int
) -> None:
    out = tmp_path / "shared"
    out.mkdir()
    out.chmod(mode)  # a sticky bit (1777, like /tmp) does not make it private either
    with pytest.raises(StateError) as caught:
        operations.emit_plans(fleet, out)
    message = str(caught.value)
    assert f"cannot write plan files to {out}: refusing to write a private file in {out}" in (
        message
    )
    assert f"it has mode {mode:04o} (writable by group" in message
    assert f"chmod 700 {out}" in message
    assert list(out.iterdir()) == []  # nothing written


def test_emit_completes_short_writes(
    tmp_path: Path, fleet: CompiledFleet, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_write = os.write
    calls = 0

    def one_byte(fd: int, data: bytes) -> int:
        nonlocal calls
        calls += 1
        return real_write(fd, bytes(data[:1]))

    monkeypatch.setattr(os, "write", one_byte)
    operations.emit_plans(fleet, tmp_path / "plans")
    monkeypatch.undo()
    expected = plan_bytes(fleet, "a1")
    assert (tmp_path / "plans" / "a1.plan").read_bytes() == expected
    assert calls >= len(expected)


def test_a_secret_is_read_only_from_a_file_its_owner_alone_may_access(tmp_path: Path) -> None:
    from vpnfleet.protos.files import PrivateFileError, read_private

    secret = tmp_path / "secret"
    secret.write_bytes(b"k" * 100_000)
    secret.chmod(0o600)
    assert read_private(secret, "key file") == b"k" * 100_000
    for mode in (0o640, 0o604, 0o660):
        secret.chmod(mode)
        with pytest.raises(PrivateFileError, match=rf"key file {secret} is accessible by group"):
            read_private(secret, "key file")
    with pytest.raises(PrivateFileError, match="is not a regular file"):
        read_private(tmp_path, "key file")
    with pytest.raises(PrivateFileError, match=r"cannot read key file .*No such file"):
        read_private(tmp_path / "missing", "key file")
