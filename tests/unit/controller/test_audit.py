"""The audit log: entries round-trip through SQLite and survive reopening."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from vpnfleet.controller.statedir.audit import AUDIT_FILE, AuditEntry, AuditError, AuditLog


def entry(revision: str, outcome: str, **kw: object) -> AuditEntry:
    return AuditEntry(
        kind=str(kw.pop("kind", "rollout")),
        revision=revision,
        started_at=1000.0,
        finished_at=1002.5,
        outcome=outcome,
        **kw,  # type: ignore[arg-type]
    )


def test_round_trip(tmp_path: Path) -> None:
    log = AuditLog.in_state(tmp_path)
    original = entry(
        "a" * 40,
        "changed",
        hosts=("h1", "h2"),
        changes={"h1": ("+ peer h2",), "h2": ("+ peer h1", "~ spd h1")},
        errors=(),
        subject="add h2",
    )
    new_id = log.record(original)
    (back,) = log.recent()
    assert back.id == new_id > 0
    assert back.hosts == ("h1", "h2")
    assert dict(back.changes) == {"h1": ("+ peer h2",), "h2": ("+ peer h1", "~ spd h1")}
    assert (back.revision, back.outcome, back.subject) == ("a" * 40, "changed", "add h2")
    assert back.seconds == 2.5
    assert back.to_json()["changes"] == {"h1": ["+ peer h2"], "h2": ["+ peer h1", "~ spd h1"]}


def test_survives_reopen_newest_first_and_last_good(tmp_path: Path) -> None:
    log = AuditLog.in_state(tmp_path)
    log.record(entry("r1", "changed"))
    log.record(entry("r2", "failed", errors=("hosts.yaml:3:1: invalid YAML",)))
    log.record(entry("r1", "changed", kind="drift-correction"))
    del log

    reopened = AuditLog(tmp_path / AUDIT_FILE)
    rows = reopened.recent()
    assert [(r.kind, r.revision, r.outcome) for r in rows] == [
        ("drift-correction", "r1", "changed"),
        ("rollout", "r2", "failed"),
        ("rollout", "r1", "changed"),
    ]
    assert rows[1].errors == ("hosts.yaml:3:1: invalid YAML",)
    assert reopened.last_good_revision() == "r1"
    assert [r.revision for r in reopened.recent(limit=1)] == ["r1"]


def test_empty_log_has_no_good_revision(tmp_path: Path) -> None:
    log = AuditLog.in_state(tmp_path)
    assert log.recent() == [] and log.last_good_revision() == ""


def test_not_a_database_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / AUDIT_FILE).write_bytes(b"this is not sqlite, just some bytes" * 100)
    with pytest.raises(AuditError, match="not a usable audit log"):
        AuditLog.in_state(tmp_path)


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    with closing(sqlite3.connect(tmp_path / AUDIT_FILE)) as db:
        db.execute("PRAGMA user_version = 99")
    with pytest.raises(AuditError, match="schema version 99"):
        AuditLog.in_state(tmp_path)
