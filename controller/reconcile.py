"""``vpnfleet serve``: follow a git branch and keep the fleet on its newest good revision.

The loop, every ``interval`` seconds or at once on a webhook:

1. read the branch head (fetched first when the branch has a remote);
2. on a new commit, compile the inventory at that commit; a commit that does not compile
   (or that the safety rails refuse) is recorded as failed in the audit log with its
   errors, nothing is pushed, and the last good revision stays in force;
3. otherwise push the plans (``operations.push_plans``) and record the rollout;
4. ask every agent for its status and compare the plan hash in force with the desired
   one: hosts that differ are drift, reported on ``/status`` and, with
   ``correct_drift``, pushed their desired plan again (recorded as a drift correction).

The HTTP side (:mod:`.serve_http`, in threads of its own) serves ``GET /status``, ``GET
/audit``, ``GET /metrics`` (Prometheus text) and ``POST /webhook``. It reads only what
the loop publishes under a lock, so an HTTP request never calls an agent itself.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from . import operations, rails, revisions
from .audit import AuditEntry, AuditLog
from .inventory import InventoryError, InventoryErrors
from .inventory.vault import Vault, VaultError
from .results import AggregateResult
from .rollout import DEFAULT_OPTIONS, RolloutOptions
from .serve_http import HttpOptions, HttpServer, parse_listen
from .state import StateDir, StateError
from .status import FleetStatus

Log = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class ServeOptions:
    inventory: Path  # the inventory directory inside the repository's working tree
    branch: str = "main"
    interval: float = 30.0
    correct_drift: bool = False
    force: bool = False  # push plans the safety rails refuse
    rollout: RolloutOptions = DEFAULT_OPTIONS
    timeout: float = operations.DEFAULT_TIMEOUT
    vault: Vault | None = None


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.polls = Counter("vpnfleet_polls", "Branch polls made.", registry=r)
        self.poll_errors = Counter(
            "vpnfleet_poll_errors", "Polls that could not read the branch.", registry=r
        )
        self.rollouts = Counter(
            "vpnfleet_rollouts", "Rollouts by kind and outcome.", ["kind", "outcome"], registry=r
        )
        self.rollout_seconds = Histogram(
            "vpnfleet_rollout_seconds", "Time from compile to the last agent's answer.", registry=r
        )
        self.last_rollout = Gauge(
            "vpnfleet_last_rollout_timestamp_seconds", "When the last rollout ended.", registry=r
        )
        self.hosts = Gauge(
            "vpnfleet_hosts", "Hosts by state against the revision in force.", ["state"],
            registry=r,
        )  # fmt: skip
        self.revision = Gauge(
            "vpnfleet_revision_info", "The revision in force (value 1).", ["revision"],
            registry=r,
        )  # fmt: skip


@dataclass(slots=True)
class Snapshot:
    """What the HTTP side may read: published by the loop under a lock."""

    branch: str = ""
    head: str = ""  # the newest commit seen on the branch
    in_force: str = ""  # the revision whose plans are desired
    last_error: str = ""
    drifted: list[str] = field(default_factory=list)
    status: dict[str, Any] | None = None
    started_at: float = field(default_factory=time.time)
    last_poll_at: float = 0.0


class Reconciler:
    def __init__(self, state: StateDir, options: ServeOptions, log: Log | None = None) -> None:
        self.state = state
        self.options = options
        self.log: Log = log or (lambda _m: None)
        self.repo = revisions.repo_root(options.inventory)
        self.audit = AuditLog.in_state(state.root)
        self.metrics = Metrics()
        self.fleet: operations.CompiledFleet | None = None
        self.seen: str = ""  # the last head acted on, good or bad
        self._lock = threading.Lock()
        self._snapshot = Snapshot(branch=options.branch)
        self._wake: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # ------------------------------------------------------------ what HTTP reads

    def snapshot_json(self) -> dict[str, Any]:
        with self._lock:
            s = self._snapshot
            return {
                "branch": s.branch,
                "head": s.head,
                "revision_in_force": s.in_force,
                "last_error": s.last_error,
                "drifted": list(s.drifted),
                "started_at": s.started_at,
                "last_poll_at": s.last_poll_at,
                "fleet": s.status,
            }

    def _publish(self, **changes: Any) -> None:
        with self._lock:
            for name, value in changes.items():
                setattr(self._snapshot, name, value)

    def audit_json(self, limit: int) -> dict[str, Any]:
        return {"rollouts": [e.to_json() for e in self.audit.recent(limit)]}

    def metrics_text(self) -> bytes:
        return bytes(generate_latest(self.metrics.registry))

    def wake(self) -> None:
        """Poll now (thread-safe; the webhook calls this)."""
        if self._loop is not None and self._wake is not None:
            self._loop.call_soon_threadsafe(self._wake.set)

    # ------------------------------------------------------------ the loop

    async def run(self, stop: asyncio.Event) -> None:
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        while not stop.is_set():
            # Cleared before the poll: a webhook that arrives during it polls again.
            self._wake.clear()
            try:
                await self.poll_once()
            except Exception as exc:  # a long-running service outlives one bad poll
                self.metrics.poll_errors.inc()
                self._publish(last_error=f"poll failed: {exc!r}")
                self.log(f"poll failed: {exc!r}")
            waits = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(self._wake.wait())]
            try:
                await asyncio.wait(
                    waits, timeout=self.options.interval, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                for w in waits:
                    w.cancel()

    async def poll_once(self) -> None:
        self.metrics.polls.inc()
        self._publish(last_poll_at=time.time())
        try:
            head = await asyncio.to_thread(revisions.branch_head, self.repo, self.options.branch)
        except revisions.RevisionError as exc:
            self.metrics.poll_errors.inc()
            self._publish(last_error=str(exc))
            self.log(f"poll failed: {exc}")
            head = ""
        if head and head != self.seen:
            self._publish(head=head)
            await self.roll_out(head)
            self.seen = head
        if self.fleet is not None:
            await self.check_drift()

    async def roll_out(self, revision: str) -> None:
        started = time.time()
        subject = await asyncio.to_thread(revisions.commit_subject, self.repo, revision)
        self.log(f"revision {revision[:12]} ({subject}): compiling")
        try:
            fleet = await asyncio.to_thread(
                operations.compile_fleet_at,
                self.options.inventory,
                self.state,
                revision,
                vault=self.options.vault,
            )
            violations = [] if self.options.force else operations.rail_violations(fleet)
            if violations:
                raise rails.RailError(violations)
        except InventoryErrors as exc:
            self._refused(revision, subject, started, [str(e) for e in exc.errors])
            return
        except (
            InventoryError,
            revisions.RevisionError,
            rails.RailError,
            StateError,
            VaultError,
        ) as exc:
            self._refused(revision, subject, started, str(exc).splitlines())
            return
        self.log(f"revision {revision[:12]}: pushing to {len(fleet.selected)} host(s)")
        result = await operations.push_plans(
            fleet,
            self.state,
            dry_run=False,
            options=self.options.rollout,
            timeout=self.options.timeout,
        )
        entry = self._record("rollout", revision, subject, started, fleet.selected, result)
        # The new plans are desired from now on, also where a host failed: drift
        # checking reports (and, if asked, retries) the hosts that did not take them.
        self.fleet = fleet
        self._publish(in_force=revision, last_error="; ".join(entry.errors))
        self.metrics.revision.clear()
        self.metrics.revision.labels(revision=revision).set(1)
        self.log(f"revision {revision[:12]}: {entry.outcome} in {entry.seconds:.2f}s")

    def _refused(self, revision: str, subject: str, started: float, errors: list[str]) -> None:
        entry = AuditEntry(
            kind="rollout",
            revision=revision,
            started_at=started,
            finished_at=time.time(),
            outcome="failed",
            errors=tuple(errors),
            subject=subject,
        )
        self.audit.record(entry)
        self.metrics.rollouts.labels(kind="rollout", outcome="failed").inc()
        self._publish(last_error=f"revision {revision[:12]} refused: " + "; ".join(errors))
        in_force = self._snapshot.in_force
        self.log(
            f"revision {revision[:12]} refused, nothing pushed; "
            f"{in_force[:12] or 'no revision'} stays in force:\n  " + "\n  ".join(errors)
        )

    def _record(
        self,
        kind: str,
        revision: str,
        subject: str,
        started: float,
        hosts: list[str],
        result: AggregateResult,
    ) -> AuditEntry:
        if result.failed_hosts or result.aborted:
            outcome = "failed"
        elif result.unreachable_hosts:
            outcome = "unreachable"
        elif any(r.changed for r in result):
            outcome = "changed"
        else:
            outcome = "ok"
        errors = [f"{r.host}: {r.error}" for r in result if r.error]
        if result.aborted:
            errors.append(result.aborted)
        entry = AuditEntry(
            kind=kind,
            revision=revision,
            started_at=started,
            finished_at=time.time(),
            outcome=outcome,
            hosts=tuple(hosts),
            changes={r.host: [str(c) for c in r.changes] for r in result if r.changes},
            errors=tuple(errors),
            subject=subject,
        )
        self.audit.record(entry)
        self.metrics.rollouts.labels(kind=kind, outcome=outcome).inc()
        self.metrics.rollout_seconds.observe(entry.seconds)
        self.metrics.last_rollout.set(entry.finished_at)
        return entry

    async def check_drift(self) -> FleetStatus | None:
        fleet = self.fleet
        if fleet is None:
            return None
        status = await operations.fleet_status(fleet, self.state, timeout=self.options.timeout)
        drifted = [h.host for h in status.hosts if h.observed is not None and not h.in_sync]
        counts: dict[str, int] = {"in sync": 0, "drift": 0, "no plan": 0, "unreachable": 0}
        for h in status.hosts:
            counts[h.state] = counts.get(h.state, 0) + 1
        for state_name, n in counts.items():
            self.metrics.hosts.labels(state=state_name.replace(" ", "_")).set(n)
        self._publish(drifted=drifted, status=status.to_json())
        if drifted and self.options.correct_drift:
            await self.correct(fleet, drifted)
        return status

    async def correct(self, fleet: operations.CompiledFleet, hosts: list[str]) -> None:
        started = time.time()
        revision = self._snapshot.in_force
        self.log(f"drift on {', '.join(hosts)}: re-applying revision {revision[:12]}")
        subset = operations.CompiledFleet(
            fleet.inventory,
            list(hosts),
            {h: fleet.plans[h] for h in hosts},
            {h: fleet.message(h) for h in hosts},
            {h: fleet.endpoints[h] for h in hosts},
        )
        result = await operations.push_plans(
            subset, self.state, dry_run=False, options=self.options.rollout,
            timeout=self.options.timeout,
        )  # fmt: skip
        self._record("drift-correction", revision, "", started, hosts, result)


# ---------------------------------------------------------------- serve


async def serve(
    state: StateDir,
    options: ServeOptions,
    listen: str,
    http_options: HttpOptions,
    *,
    stop: asyncio.Event,
    log: Log | None = None,
    on_listening: Callable[[str], None] | None = None,
) -> None:
    """Run the loop and the HTTP endpoints until ``stop`` is set."""
    reconciler = Reconciler(state, options, log)
    host, port = parse_listen(listen)
    http = HttpServer(reconciler, host, port, http_options, log)
    http.start()
    try:
        if on_listening is not None:
            on_listening(http.address)
        await reconciler.run(stop)
    finally:
        http.close()
