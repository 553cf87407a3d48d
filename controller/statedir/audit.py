"""The audit log: every rollout the controller made, in SQLite in the state directory.

One row per rollout (a new revision, a drift correction, or a revision refused before
anything was pushed): the revision, the hosts, the changes per host, the outcome, the
errors and when it started and finished. Changes are the agents' own change lines,
which name credentials by reference and never carry key material.

Each call opens its own connection, so the serve loop and its HTTP thread can share one
:class:`AuditLog`; SQLite's locking serialises the writers.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

AUDIT_FILE = "audit.sqlite"
SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS rollouts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    revision TEXT NOT NULL,
    subject TEXT NOT NULL DEFAULT '',
    started_at REAL NOT NULL,
    finished_at REAL NOT NULL,
    outcome TEXT NOT NULL,
    hosts TEXT NOT NULL,
    changes TEXT NOT NULL,
    errors TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS rollouts_revision ON rollouts (revision);
"""


class AuditError(Exception):
    """The audit log cannot be opened or is not one of ours."""


@dataclass(frozen=True, slots=True)
class AuditEntry:
    kind: str  # "rollout" | "drift-correction" | "cert-renewal" | "join" …
    revision: str
    started_at: float
    finished_at: float
    outcome: str  # "ok" | "changed" | "failed" | "refused" | "unreachable"
    hosts: tuple[str, ...] = ()
    changes: Mapping[str, Sequence[str]] = field(default_factory=dict)  # host -> lines
    errors: tuple[str, ...] = ()
    subject: str = ""  # the commit's subject line
    id: int = 0

    @property
    def seconds(self) -> float:
        return self.finished_at - self.started_at

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "revision": self.revision,
            "subject": self.subject,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "seconds": round(self.seconds, 4),
            "outcome": self.outcome,
            "hosts": list(self.hosts),
            "changes": {h: list(lines) for h, lines in self.changes.items()},
            "errors": list(self.errors),
        }


class AuditLog:
    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            with self._connect() as db:
                version = db.execute("PRAGMA user_version").fetchone()[0]
                if version not in (0, SCHEMA_VERSION):
                    raise AuditError(
                        f"{path}: audit schema version {version}, this controller knows "
                        f"{SCHEMA_VERSION}"
                    )
                db.executescript(_SCHEMA)
                db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        except sqlite3.DatabaseError as exc:
            raise AuditError(f"{path}: not a usable audit log: {exc}") from None

    @classmethod
    def in_state(cls, state_root: Path) -> AuditLog:
        return cls(state_root / AUDIT_FILE)

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        with closing(sqlite3.connect(self.path, timeout=10.0)) as db, db:
            yield db

    def record(self, entry: AuditEntry) -> int:
        """Store ``entry``; returns its id."""
        with self._connect() as db:
            cur = db.execute(
                "INSERT INTO rollouts (kind, revision, subject, started_at, finished_at, "
                "outcome, hosts, changes, errors) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    entry.kind,
                    entry.revision,
                    entry.subject,
                    entry.started_at,
                    entry.finished_at,
                    entry.outcome,
                    json.dumps(list(entry.hosts)),
                    json.dumps({h: list(v) for h, v in entry.changes.items()}),
                    json.dumps(list(entry.errors)),
                ),
            )
            return int(cur.lastrowid or 0)

    def recent(self, limit: int = 50) -> list[AuditEntry]:
        """The newest ``limit`` entries, newest first."""
        with self._connect() as db:
            rows = db.execute(
                "SELECT id, kind, revision, subject, started_at, finished_at, outcome, hosts, "
                "changes, errors FROM rollouts ORDER BY id DESC LIMIT ?",
                (limit,),
            ).fetchall()
        return [_entry(row) for row in rows]

    def last_good_revision(self) -> str:
        """The revision of the newest rollout that was not refused or failed, or ""."""
        with self._connect() as db:
            row = db.execute(
                "SELECT revision FROM rollouts WHERE kind = 'rollout' "
                "AND outcome IN ('ok', 'changed') ORDER BY id DESC LIMIT 1"
            ).fetchone()
        return str(row[0]) if row else ""


def _entry(row: tuple[Any, ...]) -> AuditEntry:
    id_, kind, revision, subject, started, finished, outcome, hosts, changes, errors = row
    return AuditEntry(
        kind=kind,
        revision=revision,
        started_at=float(started),
        finished_at=float(finished),
        outcome=outcome,
        hosts=tuple(json.loads(hosts)),
        changes={h: tuple(v) for h, v in json.loads(changes).items()},
        errors=tuple(json.loads(errors)),
        subject=subject,
        id=int(id_),
    )
