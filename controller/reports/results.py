"""Per-host results of an operation and their aggregate, in the manner of Ansible's recap.

A :class:`HostResult` says what happened on one host: whether anything changed, whether
it failed or could not be reached, the list of changes (never secret values) and how
long it took. :class:`AggregateResult` collects them in the order hosts were given and
knows the exit code a command should end with.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any


class Outcome(enum.Enum):
    OK = "ok"
    CHANGED = "changed"
    FAILED = "failed"
    UNREACHABLE = "unreachable"
    SKIPPED = "skipped"


@dataclass(frozen=True, slots=True)
class ChangeLine:
    """One change on a host: section (peer, spd, identity …), name, kind and details."""

    section: str
    name: str
    kind: str  # "added" | "removed" | "changed"
    details: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "section": self.section,
            "name": self.name,
            "kind": self.kind,
            "details": list(self.details),
        }

    def __str__(self) -> str:
        sign = {"added": "+", "removed": "-", "changed": "~"}.get(self.kind, "?")
        text = f"{sign} {self.section} {self.name}"
        if self.details:
            text += ": " + "; ".join(self.details)
        return text


@dataclass(frozen=True, slots=True)
class HostResult:
    host: str
    outcome: Outcome
    changes: tuple[ChangeLine, ...] = ()
    error: str = ""
    seconds: float = 0.0
    generation: int = 0
    content_hash: str = ""
    warnings: tuple[str, ...] = ()
    """What the operator should know that does not fail the host (a plan-only agent)."""

    @property
    def changed(self) -> bool:
        return self.outcome is Outcome.CHANGED

    @property
    def failed(self) -> bool:
        return self.outcome is Outcome.FAILED

    @property
    def unreachable(self) -> bool:
        return self.outcome is Outcome.UNREACHABLE

    def to_json(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "outcome": self.outcome.value,
            "changed": self.changed,
            "changes": [c.to_json() for c in self.changes],
            "error": self.error,
            "seconds": round(self.seconds, 4),
            "generation": self.generation,
            "content_hash": self.content_hash,
            "warnings": list(self.warnings),
        }


# Exit codes follow Ansible's: 2 when a host failed, 4 when hosts were only unreachable.
EXIT_OK = 0
EXIT_FAILED = 2
EXIT_UNREACHABLE = 4


@dataclass(slots=True)
class AggregateResult:
    results: dict[str, HostResult] = field(default_factory=dict)
    aborted: str = ""  # why the run stopped early (max fail percentage), if it did

    def add(self, result: HostResult) -> None:
        self.results[result.host] = result

    def extend(self, results: Iterable[HostResult]) -> None:
        for r in results:
            self.add(r)

    def __iter__(self) -> Iterator[HostResult]:
        return iter(self.results.values())

    def __len__(self) -> int:
        return len(self.results)

    def hosts(self, outcome: Outcome) -> list[str]:
        return [r.host for r in self if r.outcome is outcome]

    @property
    def failed_hosts(self) -> list[str]:
        return self.hosts(Outcome.FAILED)

    @property
    def unreachable_hosts(self) -> list[str]:
        return self.hosts(Outcome.UNREACHABLE)

    @property
    def exit_code(self) -> int:
        if self.failed_hosts or self.aborted:
            return EXIT_FAILED
        if self.unreachable_hosts:
            return EXIT_UNREACHABLE
        return EXIT_OK

    def counts(self) -> dict[str, int]:
        out = {o.value: 0 for o in Outcome}
        for r in self:
            out[r.outcome.value] += 1
        return out

    def recap_lines(self) -> list[str]:
        """Ansible's closing recap: one line per host with its counters."""
        width = max((len(h) for h in self.results), default=0)
        lines = []
        for r in self:
            c = {o: int(r.outcome is o) for o in Outcome}
            ok = c[Outcome.OK] + c[Outcome.CHANGED]
            lines.append(
                f"{r.host:<{width}} : ok={ok:<3} changed={c[Outcome.CHANGED]:<3} "
                f"unreachable={c[Outcome.UNREACHABLE]:<3} failed={c[Outcome.FAILED]:<3} "
                f"skipped={c[Outcome.SKIPPED]}"
            )
        return lines

    def to_json(self) -> dict[str, Any]:
        return {
            "hosts": [r.to_json() for r in self],
            "counts": self.counts(),
            "aborted": self.aborted,
            "exit_code": self.exit_code,
        }
