"""The last good plan on disk, so an agent restarts with it after a reboot or while the
controller is away.

STATE/plan.pb holds the plan as received (the deterministic protobuf serialisation), mode
0600 because it carries PSKs; STATE/plan.json is a small sidecar (generation, content
hash, applied_at) for people and tools. Both are replaced atomically
(vpnfleet.protos.files), so a crash leaves either the old file or the new one, never
half of one; the directory must be one only its owner can write to.

The store holds bytes and knows nothing of protobuf: :meth:`PlanStore.load` takes the
parser, and a file the parser refuses is moved aside as ``plan.pb.corrupt`` and reported,
so the agent starts with no plan instead of crashing or running half a plan.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Generic, TypeVar

from vpnfleet.protos.files import make_private_directory, write_atomically

T = TypeVar("T")

log = logging.getLogger(__name__)

PLAN_FILE = "plan.pb"
SIDECAR_FILE = "plan.json"


class StoreError(Exception):
    """The plan could not be written (disk full, permissions …)."""


@dataclass(frozen=True, slots=True)
class StoredPlan(Generic[T]):
    plan: T
    generation: int
    content_hash: str
    applied_at: float


@dataclass(frozen=True, slots=True)
class LoadResult(Generic[T]):
    stored: StoredPlan[T] | None
    # What was wrong with the files on disk, for the operator; empty when all was well.
    problems: tuple[str, ...] = field(default=())


class PlanStore:
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    @property
    def plan_path(self) -> Path:
        return self.directory / PLAN_FILE

    @property
    def sidecar_path(self) -> Path:
        return self.directory / SIDECAR_FILE

    def save(self, data: bytes, *, generation: int, content_hash: str, applied_at: float) -> None:
        """Persist a plan that has been validated; raise :class:`StoreError` on failure,
        leaving the previous plan on disk."""
        sidecar = {"generation": generation, "content_hash": content_hash, "applied_at": applied_at}
        try:
            make_private_directory(self.directory)
            write_atomically(self.plan_path, data)
            # The plan file is the truth; a crash before this line leaves a stale sidecar,
            # which load() notices by the hash and ignores.
            write_atomically(self.sidecar_path, (json.dumps(sidecar) + "\n").encode())
        except OSError as exc:
            raise StoreError(f"cannot persist the plan in {self.directory}: {exc}") from exc

    def load(self, parse: Callable[[bytes], T], hash_of: Callable[[T], str]) -> LoadResult[T]:
        """The stored plan, or None with the reason; never raises for bad files."""
        try:
            data = self.plan_path.read_bytes()
        except FileNotFoundError:
            return LoadResult(None)
        except OSError as exc:
            return LoadResult(None, (f"cannot read {self.plan_path}: {exc.strerror}",))
        try:
            plan = parse(data)
        except Exception as exc:  # any parser failure means the file cannot be trusted
            aside = self._set_aside()
            return LoadResult(
                None,
                (f"stored plan {self.plan_path} is unusable and was moved to {aside}: {exc}",),
            )
        content_hash = hash_of(plan)
        meta, problem = self._read_sidecar()
        problems: list[str] = [problem] if problem else []
        if meta is not None and meta.get("content_hash") != content_hash:
            problems.append(
                f"{self.sidecar_path} describes another plan (interrupted write?); "
                "using the plan file"
            )
            meta = None
        if meta is None:
            generation = 0
            applied_at = self.plan_path.stat().st_mtime
        else:
            try:
                generation = int(str(meta.get("generation", 0)))
                applied_at = float(str(meta.get("applied_at", 0.0)))
            except ValueError:
                problems.append(f"{self.sidecar_path} has bad numbers; ignoring it")
                generation, applied_at = 0, self.plan_path.stat().st_mtime
        return LoadResult(StoredPlan(plan, generation, content_hash, applied_at), tuple(problems))

    def _read_sidecar(self) -> tuple[dict[str, object] | None, str]:
        try:
            meta = json.loads(self.sidecar_path.read_text())
        except FileNotFoundError:
            return None, f"{self.sidecar_path} is missing"
        except (OSError, ValueError) as exc:
            return None, f"{self.sidecar_path} is unreadable ({exc}); ignoring it"
        if not isinstance(meta, dict):
            return None, f"{self.sidecar_path} is not a JSON object; ignoring it"
        return meta, ""

    def _set_aside(self) -> Path:
        aside = self.plan_path.with_name(PLAN_FILE + ".corrupt")
        if aside.exists():
            aside = self.plan_path.with_name(f"{PLAN_FILE}.corrupt.{int(time.time())}")
        try:
            os.replace(self.plan_path, aside)
        except OSError as exc:
            log.error("cannot move the corrupt plan aside: %s", exc)
            return self.plan_path
        return aside
