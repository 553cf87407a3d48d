"""``vpnfleet serve``: follow a git branch and keep the fleet on its newest good revision.

The loop, every ``interval`` seconds or at once on a webhook:

1. read the followed ref (:func:`revisions.branch_head`: ``refs/remotes/REMOTE/BRANCH``
   after a fetch when the branch has a remote, else ``refs/heads/BRANCH``), named with
   its commit in the log, on ``/status`` and in every log line about a rollout; a local
   branch ahead of it is named and not followed;
2. on a new commit, compile the inventory at that commit; a commit that does not compile
   (or that the safety rails refuse) is recorded as failed in the audit log with its
   errors, nothing is pushed, and the last good revision stays in force;
3. the revision in force is the one whose plans the agents run (told from their plan
   hashes on the first rollout, among the followed commit, the local branch, HEAD and
   the audit log's last rollout; then the last one rolled out). A commit that does not
   descend from it is a rollback: refused (audit log, ``/status``, log) unless ``allow_rollback``;
4. otherwise put the plans in force as ``apply`` does (:mod:`staged_apply`): a change
   both ends of a pair must agree on goes in the three steps of :mod:`staging`,
   journaled; anything else is pushed at once. The rollout is recorded. It holds the
   state directory's lock (:mod:`state_lock`), as a drift correction does: while
   ``apply``, ``rotate`` or ``rekey`` holds it, the push waits for the next poll and
   the log says who holds it;
5. ask every agent for its status and compare the plan hash in force with the desired
   one: hosts that differ are drift, reported on ``/status``, logged (again when the
   set of hosts changes, else at most every ``drift_log_interval`` seconds) and, with
   ``correct_drift``, pushed their desired plan again (recorded as a drift correction);
6. with ``renewal``, renew the agents' certificates that status shows due (or finish an
   interrupted certificate rotation), as ``vpnfleet renew`` does (:mod:`.cert_renewal`),
   under the lock, recorded as a ``cert-renewal``.

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

from ..delivery import staged_apply
from ..delivery.canary import staging_lines
from ..delivery.health import AgentAccess, HealthGate
from ..delivery.in_force import (
    ApplyJournal,
    Candidate,
    InForceError,
    match_candidates,
    observed_hashes,
)
from ..fleet import operations, rails, revisions
from ..fleet.rollout import DEFAULT_OPTIONS, RolloutOptions, batches
from ..inventory import InventoryError, InventoryErrors
from ..inventory.vault import Vault, VaultError
from ..planner import Planner
from ..reports.results import AggregateResult
from ..reports.status import FleetStatus
from ..rotate.cert_renewal import RenewalWindow, due_certificates, renew_due_certificates
from ..rotate.cert_rotation import AgentCredentialAccess, CertJournal
from ..rotate.rotation import RotationKind
from ..statedir.audit import AuditEntry, AuditLog
from ..statedir.state import StateDir, StateError
from ..statedir.state_lock import LockHeld, StateLock
from .serve_http import HttpOptions, HttpServer, parse_listen

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
    allow_rollback: bool = False  # push a commit that does not descend from the one in force
    gate: HealthGate = field(default_factory=lambda: HealthGate(require_traffic=False))
    drift_log_interval: float = 300.0
    renewal: RenewalWindow | None = None  # renew agents' certificates when due (cert_renewal)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.polls = Counter("vpnfleet_polls", "Branch polls made.", registry=r)
        self.polls_skipped = Counter(
            "vpnfleet_polls_skipped", "Polls skipped: another command held the lock.", registry=r
        )
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
    ref: str = ""  # the exact ref followed
    local_note: str = ""  # what the local branch has that is not followed
    head: str = ""  # the newest commit seen on the followed ref
    refused: str = ""  # the last rollback refused, and why
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
        self.fleet: operations.CompiledFleet | None = None  # the plans in force
        # Every revision is planned by this one planner, one at a time (from the loop).
        self.planner = Planner()
        self.in_force: str = ""  # the revision in force ("" while none is known)
        self.in_force_checked = False  # asked the agents what they run
        self.followed: revisions.BranchHead | None = None
        self.seen: str = ""  # the last head acted on, good or bad
        self.clock: Callable[[], float] = time.monotonic
        self._drift_logged: tuple[list[str], float] | None = None
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
                "ref": s.ref,
                "local_branch": s.local_note,
                "head": s.head,
                "refused": s.refused,
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
            head = None
        if head is not None:
            self._follow(head)
        if head is not None and head.commit != self.seen:
            self._publish(head=head.commit)
            lock = self._lock_for(f"the rollout of {self._name(head.commit)}")
            if lock is None:
                return  # tried again at the next poll: seen is not moved
            try:
                await self.roll_out(head)
            finally:
                lock.release()
            self.seen = head.commit
        if self.fleet is not None:
            status = await self.check_drift()
            if status is not None and self.options.renewal is not None:
                await self.renew_certificates(status, self.options.renewal)

    def _lock_for(self, what: str) -> StateLock | None:
        """The state directory's lock for a push, or None (logged) while another command
        holds it. Reading the branch and the agents' status needs no lock."""
        lock = StateLock(self.state, "serve")
        try:
            lock.acquire()
        except LockHeld as exc:
            self.metrics.polls_skipped.inc()
            self.log(f"poll skipped, {what} waits for the next poll: {exc}")
            return None
        return lock

    def _follow(self, head: revisions.BranchHead) -> None:
        """Say which ref is followed, at start and whenever it or the local branch moves."""
        before = self.followed
        self.followed = head
        note = head.local_note()
        if before is None or before.ref != head.ref:
            self.log(f"following {head.describe()}")
        if note and (before is None or before.local_note() != note):
            self.log(note)
        self._publish(ref=head.ref, local_note=note)

    def _name(self, revision: str) -> str:
        """``REF COMMIT`` for the followed ref's commits, ``revision COMMIT`` for others."""
        if self.followed is not None and revision == self.followed.commit:
            return f"{self.followed.ref} {revision[:12]}"
        return f"revision {revision[:12]}"

    async def roll_out(self, head: revisions.BranchHead) -> None:
        revision = head.commit
        name = self._name(revision)
        started = time.time()
        subject = await asyncio.to_thread(revisions.commit_subject, self.repo, revision)
        self.log(f"{name} ({subject}): compiling")
        try:
            fleet = await asyncio.to_thread(self.compile, revision)
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
        if not self.in_force_checked:
            await self._find_in_force(fleet, head)
        rollback = await asyncio.to_thread(self._rollback, revision)
        if rollback and not self.options.allow_rollback:
            self._refused(revision, subject, started, [rollback], rollback=True)
            return
        if rollback:
            self.log(f"{name}: {rollback}; pushed all the same (--allow-rollback)")
        decision = await self._decide(fleet)
        for note in decision.notes:
            self.log(f"{name}: {note}")
        staging = decision.staging(fleet)
        steps = len(staging.steps) if staging is not None else 0
        regression = ""
        if staging is not None and decision.start < steps:
            self.log(f"{name}: staging a pair change in {steps} steps to {len(fleet.selected)} "
                     "host(s)")  # fmt: skip
            access = AgentAccess(
                self.state, RolloutOptions(forks=self.options.rollout.forks), self.options.timeout
            )
            staged = await staged_apply.run(
                fleet,
                decision,
                staging,
                access,
                batches(fleet.selected, self.options.rollout.serial),
                state=self.state,
                gate=self.options.gate,
                report=lambda line: self.log(f"{name}: {line}"),
                command="serve",
            )
            result, regression = staged.result, staged.regression
        else:
            if staging is not None:
                for line in staging_lines(staging):
                    self.log(f"{name}: {line}")
            if decision.journal is not None:
                ApplyJournal.remove(self.state)
            self.log(f"{name}: pushing to {len(fleet.selected)} host(s)")
            result = await operations.push_plans(
                fleet,
                self.state,
                dry_run=False,
                options=self.options.rollout,
                timeout=self.options.timeout,
            )
        entry = self._record("rollout", revision, subject, started, fleet.selected, result)
        if regression:
            # Walked back to the plans in force: they stay desired.
            self._publish(last_error=f"{name}: {regression}")
            self.log(f"{name}: regression, rolled back; {self._name(self.in_force)} stays "
                     "in force")  # fmt: skip
            return
        # The new plans are desired from now on, also where a host failed: drift
        # checking reports (and, if asked, retries) the hosts that did not take them.
        self.fleet = fleet
        self.in_force = revision
        self._publish(in_force=revision, last_error="; ".join(entry.errors), refused="")
        self.metrics.revision.clear()
        self.metrics.revision.labels(revision=revision).set(1)
        self.log(f"{name}: {entry.outcome} in {entry.seconds:.2f}s")

    def compile(self, revision: str) -> operations.CompiledFleet:
        """The fleet as planned at ``revision``, by the planner kept across revisions: a
        commit that changes one host re-plans that host's pairs, not the fleet."""
        return operations.compile_fleet_at(
            self.options.inventory,
            self.state,
            revision,
            vault=self.options.vault,
            planner=self.planner,
        )

    async def _find_in_force(
        self, fleet: operations.CompiledFleet, head: revisions.BranchHead
    ) -> None:
        """The revision whose plans most agents run, among the followed commit, the local
        branch, HEAD and the last revision rolled out (told from their plan hashes)."""
        self.in_force_checked = True
        last = await asyncio.to_thread(self.audit.last_good_revision)
        refs = [head.commit, head.local_commit, "HEAD", last]
        known: list[tuple[str, operations.CompiledFleet]] = []
        for ref in refs:
            if not ref:
                continue
            try:
                compiled = await asyncio.to_thread(self.compile, ref)
            except (InventoryErrors, InventoryError, revisions.RevisionError, VaultError):
                continue
            commit = staged_apply.target_of(compiled)
            if all(commit != k for k, _ in known):
                known.append((commit, compiled))
        status = await operations.fleet_status(fleet, self.state, timeout=self.options.timeout)
        candidates = [Candidate(c[:12], staged_apply.hashes(f)) for c, f in known]
        found = match_candidates(observed_hashes(status), fleet.selected, candidates)
        best = found.most_hosts()
        if best < 0:
            labels = ", ".join(c.label for c in candidates) or "any revision"
            self.log(f"in force on the agents: no plan of {labels}; this rollout is not staged")
            return
        self.in_force, self.fleet = known[best]
        self._publish(in_force=self.in_force)
        others = [h.host for h in found.hosts if h.host not in found.running(best)]
        self.log(
            f"in force on the agents: {self._name(self.in_force)} "
            f"({', '.join(found.running(best))})"
            + (f"; not on {', '.join(others)}" if others else "")
        )

    def _rollback(self, revision: str) -> str:
        """'' when ``revision`` descends from the revision in force, else why not."""
        if not self.in_force or self.in_force == revision:
            return ""
        try:
            if revisions.is_ancestor(self.repo, self.in_force, revision):
                return ""
        except revisions.RevisionError as exc:
            return f"not pushed: {exc}"
        older = ""
        try:
            if revisions.is_ancestor(self.repo, revision, self.in_force):
                older = ", it is older"
        except revisions.RevisionError:
            pass
        return (
            f"rollback: {revision[:12]} does not descend from the revision in force "
            f"{self.in_force[:12]}{older}; start serve with --allow-rollback to push it"
        )

    async def _decide(self, fleet: operations.CompiledFleet) -> staged_apply.Decision:
        """The plans in force per host, as apply tells them (an interrupted staged run
        goes on); a host that drifts is taken to run the revision in force."""
        previous = self.fleet
        if previous is None:
            return staged_apply.Decision(None)
        known = staged_apply.Known(self.in_force, previous)
        status = await operations.fleet_status(fleet, self.state, timeout=self.options.timeout)
        try:
            journal = ApplyJournal.load(self.state)
            return staged_apply.decide(
                fleet, observed_hashes(status), [known], journal, self.compile
            )
        except (InForceError, StateError) as exc:
            decision = staged_apply.from_revision(fleet, known)
            decision.notes.append(f"{exc}; taking {self.in_force[:12]}'s plans as in force")
            return decision

    def _refused(
        self,
        revision: str,
        subject: str,
        started: float,
        errors: list[str],
        *,
        rollback: bool = False,
    ) -> None:
        """Record a commit not pushed: one that does not compile or that the rails refuse
        (outcome failed), or a rollback (outcome refused)."""
        outcome = "refused" if rollback else "failed"
        entry = AuditEntry(
            kind="rollout",
            revision=revision,
            started_at=started,
            finished_at=time.time(),
            outcome=outcome,
            errors=tuple(errors),
            subject=subject,
        )
        self.audit.record(entry)
        self.metrics.rollouts.labels(kind="rollout", outcome=outcome).inc()
        name = self._name(revision)
        message = f"{name} refused: " + "; ".join(errors)
        self._publish(last_error=message)
        if rollback:
            self._publish(refused=message)
        in_force = self._snapshot.in_force
        self.log(
            f"{name} refused, nothing pushed; "
            f"{self._name(in_force) if in_force else 'no revision'} stays in force:\n  "
            + "\n  ".join(errors)
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
        self._log_drift(status, drifted)
        if drifted and self.options.correct_drift:
            lock = self._lock_for(f"the drift correction of {', '.join(drifted)}")
            if lock is not None:
                try:
                    await self.correct(fleet, drifted)
                finally:
                    lock.release()
        return status

    def _log_drift(self, status: FleetStatus, drifted: list[str]) -> None:
        """Drift in the log: when the set of drifting hosts changes, else at most every
        ``drift_log_interval`` seconds."""
        now = self.clock()
        last = self._drift_logged
        if not drifted:
            if last is not None and last[0]:
                self.log(f"drift gone: every host runs {self._name(self.in_force)}'s plans")
            self._drift_logged = None
            return
        recent = last is not None and now - last[1] < self.options.drift_log_interval
        if last is not None and last[0] == drifted and recent:
            return
        self._drift_logged = (drifted, now)
        rows = [
            f"{h.host} runs plan {h.observed.content_hash[:12] or '(none)'}"
            for h in status.hosts
            if h.host in drifted and h.observed is not None
        ]
        self.log(
            f"drift: {len(drifted)} host(s) differ from {self._name(self.in_force)}'s plans: "
            + "; ".join(rows)
        )

    async def renew_certificates(self, status: FleetStatus, window: RenewalWindow) -> None:
        """Renew the certificates that are due in ``status`` (or finish an interrupted
        certificate rotation) through :mod:`.cert_renewal`, under the state directory's
        lock; recorded in the audit log as a ``cert-renewal``."""
        fleet = self.fleet
        unfinished = CertJournal.load(self.state, RotationKind.CERTS)
        due = due_certificates(status, window, time.time())
        if fleet is None or (not due and (unfinished is None or unfinished.finished)):
            return
        lock = self._lock_for("the renewal of certificates")
        if lock is None:
            return
        started = time.time()
        try:
            access = AgentCredentialAccess(self.state, self.options.rollout, self.options.timeout)
            result = await renew_due_certificates(
                self.state, lambda: fleet, access, window, options=self.options.rollout,
                report=self.log,
            )  # fmt: skip
        finally:
            lock.release()
        if result.error:
            self.log(f"certificate renewal stopped: {result.error}")
        if result.rotation is not None:
            rotation = result.rotation
            if rotation.error:
                self.log(f"certificate renewal stopped: {rotation.error}")
            hosts = sorted({r.host for r in rotation.result})
            revision = self._snapshot.in_force
            self._record("cert-renewal", revision, "", started, hosts, rotation.result)

    async def correct(self, fleet: operations.CompiledFleet, hosts: list[str]) -> None:
        started = time.time()
        revision = self._snapshot.in_force
        self.log(f"drift on {', '.join(hosts)}: re-applying {self._name(revision)}")
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
