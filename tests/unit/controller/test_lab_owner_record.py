"""The owner record of a lab name (controller/lab/owner.py), in a directory of the test's
own: the first claim wins whole, a second one gets the owner back and changes nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vpnfleet.controller.lab import LabError, owner


@pytest.fixture(autouse=True)
def owners_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    where = tmp_path / "run"
    monkeypatch.setattr(owner, "OWNERS_DIR", where)
    return where


def test_the_first_claim_wins_and_a_second_gets_the_owner(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    assert owner.claim("demo", a / "labs" / "demo", a) is None
    other = owner.claim("demo", b / "labs" / "demo", b)
    assert other == owner.LabOwner("demo", a / "labs" / "demo", a)
    assert other.owns(a / "labs" / "demo") and not other.owns(b / "labs" / "demo")
    assert owner.read_owner("demo") == other
    assert other.down_command == f"vpnfleet --state {a} lab down --name demo"
    assert "whose lab record is gone" in other.describe()
    (a / "labs" / "demo").mkdir(parents=True)
    (a / "labs" / "demo" / "lab.json").write_text("{}")
    assert other.recorded and "gone" not in other.describe()


def test_the_record_is_whole_and_names_the_state_directory(
    tmp_path: Path, owners_dir: Path
) -> None:
    state = tmp_path / "state with space"
    owner.claim("ux", state / "labs" / "ux", state)
    data = json.loads((owners_dir / "ux.json").read_text())
    assert data == {"name": "ux", "lab_dir": str(state / "labs" / "ux"), "state_dir": str(state)}
    recorded = owner.read_owner("ux")
    assert recorded is not None and f"--state '{state}' lab down" in recorded.down_command
    assert sorted(p.name for p in owners_dir.iterdir()) == ["ux.json"]


def test_release_and_an_unreadable_record(owners_dir: Path, tmp_path: Path) -> None:
    mine = tmp_path / "labs" / "ux"
    owner.claim("ux", mine, tmp_path)
    owner.release("ux", tmp_path / "other" / "labs" / "ux")
    assert owner.read_owner("ux") == owner.LabOwner("ux", mine, tmp_path)
    owner.release("ux", mine)
    owner.release("ux", mine)
    assert owner.read_owner("ux") is None
    owner.claim("ux", mine, tmp_path)
    owner.release("ux", None)
    assert owner.read_owner("ux") is None
    (owners_dir / "ux.json").write_text("{not json")
    assert owner.read_owner("ux") is None
    with pytest.raises(LabError, match=r"cannot be read.*--force"):
        owner.claim("ux", tmp_path / "labs" / "ux", tmp_path)
