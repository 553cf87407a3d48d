"""What is in force on the agents, decided from what they report, and the journal of a
staged apply.

The controller keeps no copy of what the agents run; git HEAD is not it either (a
``rotate psk`` puts plans in force before their commit, an interrupted staged apply
leaves hosts between two steps). So a run asks every agent for the content hash of its
plan in force (GetStatus) and sets it against the plans it can name:

* candidates — the new plans, then revisions (HEAD, ``REV^``): each host is taken to run
  the first candidate whose plan for it has that hash (:func:`match_candidates`);
* a journal of a staged apply (``STATE/staged/apply.json``): the hashes of each step's
  plans, and how many steps were put in force everywhere. When the agents' hashes lie on
  the journal's steps, the run goes on from there (:func:`journal_position`).

A host the agents report on with a hash none of these has is named, and the run does
not stage blindly: it stops with advice (``--rollback-rev`` names the revision in force).
A host without a plan, or unreachable, decides nothing.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from enum import Enum
from pathlib import Path

from vpnfleet.protos.files import make_private_directory, write_atomically

from ..reports.status import FleetStatus
from ..statedir.state import StateDir, StateError

JOURNAL_VERSION = 1
JOURNAL_FILE = "staged/apply.json"
Hashes = Mapping[str, str]  # host -> plan content hash


class InForceError(Exception):
    """What is in force cannot be told; the message says what differs and what to do."""


def observed_hashes(status: FleetStatus) -> dict[str, str | None]:
    """Each host's plan hash in force: "" for no plan, None when it did not answer."""
    return {h.host: (h.observed.content_hash if h.observed else None) for h in status.hosts}


@dataclass(frozen=True, slots=True)
class Candidate:
    """Plans that may be in force: ``label`` names them for people (a revision)."""

    label: str
    hashes: Hashes


class Basis(Enum):
    """How a host's plan in force was told."""

    MATCHED = "matched"  # its hash is a candidate's plan for it
    NO_PLAN = "no plan"  # the agent runs no plan yet
    UNREACHABLE = "unreachable"  # it did not answer
    UNKNOWN = "unknown"  # its hash is none of the candidates'


@dataclass(frozen=True, slots=True)
class HostInForce:
    host: str
    basis: Basis
    candidate: int = -1  # index into the candidates when MATCHED
    observed: str = ""


@dataclass(frozen=True, slots=True)
class InForce:
    """Per host, which candidate it runs."""

    candidates: tuple[Candidate, ...]
    hosts: tuple[HostInForce, ...]

    def on(self, basis: Basis) -> list[str]:
        return [h.host for h in self.hosts if h.basis is basis]

    def running(self, index: int) -> list[str]:
        return [h.host for h in self.hosts if h.basis is Basis.MATCHED and h.candidate == index]

    @property
    def unknown(self) -> list[str]:
        return self.on(Basis.UNKNOWN)

    def all_on(self, index: int) -> bool:
        """Every host that decides runs candidate ``index`` (and at least one does)."""
        matched = self.on(Basis.MATCHED)
        return bool(matched) and not self.unknown and matched == self.running(index)

    def most_hosts(self) -> int:
        """The candidate the most hosts run (the first on a tie), -1 when none."""
        counts = [len(self.running(i)) for i in range(len(self.candidates))]
        best = max(counts, default=0)
        return counts.index(best) if best else -1

    def describe_unknown(self) -> str:
        names = ", ".join(c.label for c in self.candidates)
        rows = [f"{h.host} runs plan {h.observed[:12]}" for h in self.hosts
                if h.basis is Basis.UNKNOWN]  # fmt: skip
        return f"{'; '.join(rows)}: the plan of none of {names}"


def match_candidates(
    observed: Mapping[str, str | None], hosts: Sequence[str], candidates: Sequence[Candidate]
) -> InForce:
    """Which candidate each of ``hosts`` runs: the first whose plan has its hash."""
    out = []
    for host in hosts:
        seen = observed.get(host)
        if seen is None:
            out.append(HostInForce(host, Basis.UNREACHABLE))
            continue
        if not seen:
            out.append(HostInForce(host, Basis.NO_PLAN))
            continue
        for index, candidate in enumerate(candidates):
            if candidate.hashes.get(host) == seen:
                out.append(HostInForce(host, Basis.MATCHED, index, seen))
                break
        else:
            out.append(HostInForce(host, Basis.UNKNOWN, observed=seen))
    return InForce(tuple(candidates), tuple(out))


# ---------------------------------------------------------------- the journal


@dataclass(slots=True)
class ApplyJournal:
    """A staged apply under way (``STATE/staged/apply.json``).

    ``previous`` names, per host, the revision whose plan was in force when the run
    started ("" when the host already ran the new plan); ``steps`` holds each step's
    plan hashes; ``done`` counts the steps put in force on every host."""

    target: str  # the new plans' revision (a commit, or "worktree")
    previous: dict[str, str]
    step_names: list[str]
    steps: list[dict[str, str]]
    previous_hashes: dict[str, str]
    done: int = 0
    command: str = "apply"
    started_at: float = field(default_factory=time.time)
    updated_at: float = field(default_factory=time.time)
    version: int = JOURNAL_VERSION

    @staticmethod
    def path(state: StateDir) -> Path:
        return state.root / JOURNAL_FILE

    @classmethod
    def load(cls, state: StateDir) -> ApplyJournal | None:
        path = cls.path(state)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise StateError(f"{path}: unreadable staged-apply journal ({exc})") from None
        if not isinstance(data, dict) or data.get("version") != JOURNAL_VERSION:
            raise StateError(f"{path}: not a version {JOURNAL_VERSION} staged-apply journal")
        try:
            journal = cls(**data)
        except TypeError as exc:
            raise StateError(f"{path}: malformed staged-apply journal ({exc})") from None
        if len(journal.steps) != len(journal.step_names) or not 0 <= journal.done <= len(
            journal.steps
        ):
            raise StateError(f"{path}: malformed staged-apply journal (steps do not add up)")
        return journal

    def save(self, state: StateDir) -> None:
        self.updated_at = time.time()
        path = self.path(state)
        make_private_directory(path.parent)
        write_atomically(path, json.dumps(asdict(self), indent=1).encode())

    @classmethod
    def remove(cls, state: StateDir) -> None:
        cls.path(state).unlink(missing_ok=True)

    @property
    def hosts(self) -> list[str]:
        return list(self.previous_hashes)

    def sequence(self) -> list[Hashes]:
        """The plans a host goes through: those in force at the start, then each step."""
        return [self.previous_hashes, *self.steps]


def journal_position(
    journal: ApplyJournal, observed: Mapping[str, str | None]
) -> tuple[int, dict[str, int]]:
    """The step to go on from (0-based index into the steps; ``len(steps)`` when every
    host runs the final plans), from the hashes the agents report, and where each host
    is (0: the plans in force at the start, k: step k's plans).

    A host may run the plans in force before the run (position 0) or any step's (k+1);
    batches mean hosts may be one step apart. The run goes on from the lowest position
    any host may be at: hosts already past it take the same plan again, unchanged.
    Unreachable hosts and hosts whose plan is on no position raise InForceError."""
    sequence = journal.sequence()
    lowest = len(sequence) - 1
    highest = 0
    where: dict[str, int] = {}
    for host in journal.hosts:
        seen = observed.get(host)
        if seen is None:
            raise InForceError(f"{host} did not answer: cannot tell which step it is at")
        positions = [i for i, hashes in enumerate(sequence) if hashes.get(host) == seen]
        if not positions:
            raise InForceError(
                f"{host} runs plan {seen[:12] or '(none)'}, neither the plan in force when "
                f"the staged apply of {journal.target[:12]} started nor one of its steps"
            )
        # A host whose plan no step changes matches every position: it bounds nothing.
        where[host] = max(positions)
        lowest = min(lowest, max(positions))
        highest = max(highest, min(positions))
    if highest > lowest + 1:
        raise InForceError(
            f"hosts are more than one step apart (at {lowest} and {highest} of "
            f"{len(sequence) - 1}): the steps were not taken in order"
        )
    return lowest, where
