"""The Agent gRPC service: ApplyPlan, GetStatus, WatchStatus, Rekey, and credential
rotation (PrepareEnrollment, InstallCredentials).

ApplyPlan follows one order and never skips a step: parse and validate the plan whole,
check it is for this host, compare its content hash with the plan in force, persist it,
then put it in force through the :class:`~vpnfleet.agent.sink.PlanSink`. Any refusal
leaves the plan in force untouched. Applies are serialised by a lock so two controllers
racing cannot interleave persist and put-in-force.
"""

from __future__ import annotations

import asyncio
import datetime
import fnmatch
import logging
import time
from collections.abc import AsyncGenerator, Callable
from pathlib import Path
from typing import NamedTuple, Protocol, runtime_checkable

import grpc
from cryptography import x509

from vpnfleet.protos import agent_pb2, agent_pb2_grpc, plan_pb2
from vpnfleet.protos.plan_diff import plan_changes
from vpnfleet.protos.versions import installed_version, skew_refusal

from . import convert
from .cert_expiry import certificate_expiries
from .crl import RevokedSet
from .engine.translate import CredentialError, IkeCredentials, ike_identity
from .enroll import (
    CredentialChange,
    CredentialFiles,
    CredentialPrecondition,
    CredentialRefused,
    check_install,
    commit_install,
    current_fingerprints,
    prepare_enrollment,
)
from .ike.signatures import identity_in_certificate
from .plan import AgentPlan, AuthMethod, PlanRejected
from .sink import PUT_IN_FORCE_KINDS, EventHub, PlanReport, PlanSink, SaEventReport
from .store import PlanStore, StoreError

log = logging.getLogger(__name__)

DEFAULT_WATCH_INTERVAL = 5.0
MIN_WATCH_INTERVAL = 0.1
LIVENESS_WAIT = 5.0
"""Seconds CheckLiveness waits for the answers when the request names no wait."""
LIVENESS_WAIT_MAX = 30.0


class PlanOnDisk(NamedTuple):
    """The persisted plan: its message (what the next plan is diffed against) and the
    plan it validates to."""

    message: plan_pb2.NodePlan
    plan: AgentPlan


def parse_plan_on_disk(data: bytes) -> PlanOnDisk:
    msg = convert.parse_plan_message(data)
    return PlanOnDisk(msg, convert.plan_from_proto(msg))


def plan_on_disk_hash(stored: PlanOnDisk) -> str:
    return stored.plan.content_hash


TlsWatcher = Callable[[bytes, bytes, bytes], None]
"""Told (certificate, key, CA bundle; PEM) when InstallCredentials changes the TLS set."""


@runtime_checkable
class IkeCredentialSink(Protocol):
    """A sink with a data plane that can swap the IKE credentials (the engine)."""

    def replace_ike_credentials(self, credentials: IkeCredentials) -> int: ...


class AgentService(agent_pb2_grpc.AgentServicer):
    def __init__(
        self,
        host: str,
        store: PlanStore,
        sink: PlanSink,
        events: EventHub | None = None,
        clock: Callable[[], float] = time.time,
        credentials: CredentialFiles | None = None,
        version: str | None = None,
    ) -> None:
        """``credentials``: where this agent's keys and certificates are, for
        PrepareEnrollment and InstallCredentials (None: both are refused). ``version``:
        the agent's version, judged against the controller's by the version-skew rule
        (default: the installed package's)."""
        self.host = host
        self.version = installed_version() if version is None else version
        self.credentials = credentials
        self.tls_watchers: list[TlsWatcher] = []
        self.store = store
        self.sink = sink
        self.events = events or EventHub()
        self._clock = clock
        self._started = time.monotonic()
        self._lock = asyncio.Lock()
        self.plan: AgentPlan | None = None
        self.plan_message: plan_pb2.NodePlan | None = None
        """The plan in force as it was handed in; a new plan is diffed against it."""
        self.generation = 0
        self.applied_at = 0.0

    async def restore(self) -> list[str]:
        """Put the persisted plan back in force; return problems found on disk."""
        result = self.store.load(parse_plan_on_disk, plan_on_disk_hash)
        problems = list(result.problems)
        stored = result.stored
        if stored is not None and stored.plan.plan.host != self.host:
            problems.append(
                f"stored plan is for host {stored.plan.plan.host!r}, this agent is "
                f"{self.host!r}; ignoring it"
            )
            stored = None
        for problem in problems:
            log.warning("%s: %s", self.host, problem)
        if stored is not None:
            self._note(await self.sink.put_in_force(stored.plan.plan), stored.generation)
            self.plan, self.plan_message = stored.plan.plan, stored.plan.message
            self.generation = stored.generation
            self.applied_at = stored.applied_at
            log.info(
                "%s: restored plan generation %d (%s)",
                self.host,
                self.generation,
                self.plan.content_hash[:12],
            )
        return problems

    def revoked(self) -> RevokedSet:
        """The certificates the CRLs of the plan in force revoke (none without a plan)."""
        return frozenset() if self.plan is None else self.plan.revoked

    # -- ApplyPlan -------------------------------------------------------------------

    async def apply(self, msg: plan_pb2.NodePlan, dry_run: bool) -> agent_pb2.ApplyPlanResponse:
        """The ApplyPlan logic without gRPC status handling (also used by ``run --plan``).

        Raises PlanRejected, WrongHost or StoreError; the plan in force is then untouched.
        """
        wall = datetime.datetime.fromtimestamp(self._clock(), datetime.UTC)
        new = convert.plan_from_proto(msg, now=wall)
        if new.host != self.host:
            raise WrongHost(f"plan is for host {new.host!r}, this agent is {self.host!r}")
        async with self._lock:
            if self.plan is not None and self.plan.content_hash == new.content_hash:
                if not dry_run and any(p.kind in PUT_IN_FORCE_KINDS for p in self.sink.problems()):
                    # The same plan, not all of it in place (a route refused): try again.
                    self._note(await self.sink.put_in_force(self.plan), self.generation)
                return self._response(False, [])
            changes = plan_changes(self.plan_message, msg)
            if dry_run:
                return self._response(True, convert.changes_to_proto(changes))
            now = self._clock()
            # fsync off the event loop: other agents (hollow) and streams keep running.
            await asyncio.to_thread(
                self.store.save,
                msg.SerializeToString(deterministic=True),
                generation=new.generation,
                content_hash=new.content_hash,
                applied_at=now,
            )
            self._note(await self.sink.put_in_force(new), new.generation)
            old_generation = self.generation
            self.plan, self.generation, self.applied_at = new, new.generation, now
            self.plan_message = plan_pb2.NodePlan()
            self.plan_message.CopyFrom(msg)  # the caller's message may change later
        log.info(
            "%s: plan generation %d (%s) in force, %d changes",
            self.host,
            new.generation,
            new.content_hash[:12],
            len(changes),
        )
        self.events.publish(
            SaEventReport(
                "plan_applied",
                detail=f"generation {old_generation} -> {new.generation}, {len(changes)} changes",
                time=now,
            )
        )
        return self._response(True, convert.changes_to_proto(changes))

    def _note(self, report: PlanReport, generation: int) -> None:
        """A plan put in force with parts of it not in force: said in the log; the
        ApplyPlan response and the status carry the same problems (``sink.problems()``)."""
        if not report.complete:
            log.warning(
                "%s: plan generation %d in force, not all of it: %s",
                self.host,
                generation,
                report.summary(),
            )

    def _response(
        self, changed: bool, changes: list[agent_pb2.Change]
    ) -> agent_pb2.ApplyPlanResponse:
        return agent_pb2.ApplyPlanResponse(
            changed=changed,
            changes=changes,
            generation=self.generation,
            content_hash=self.plan.content_hash if self.plan else "",
            problems=convert.problems_to_proto(self.sink.problems()),
        )

    async def ApplyPlan(
        self, request: agent_pb2.ApplyPlanRequest, context: grpc.aio.ServicerContext
    ) -> agent_pb2.ApplyPlanResponse:
        refusal = skew_refusal(self.version, request.controller_version)
        if refusal:
            log.warning("%s: %s", self.host, refusal)
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, refusal)
        try:
            return await self.apply(request.plan, request.dry_run)
        except PlanRejected as exc:
            log.warning("%s: refused a plan: %s", self.host, "; ".join(exc.reasons))
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except WrongHost as exc:
            log.warning("%s: refused a plan: %s", self.host, exc)
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
        except StoreError as exc:
            log.error("%s: %s", self.host, exc)
            await context.abort(
                grpc.StatusCode.INTERNAL, f"{exc}; the previous plan stays in force"
            )
        raise AssertionError("context.abort returned")  # pragma: no cover

    # -- status ------------------------------------------------------------------------

    def status(self) -> agent_pb2.AgentStatus:
        status = agent_pb2.AgentStatus(
            host=self.host,
            generation=self.generation,
            content_hash=self.plan.content_hash if self.plan else "",
            plan_applied_at=self.applied_at,
            agent_version=self.version,
            uptime_seconds=time.monotonic() - self._started,
            peers_total=len(self.plan.peers) if self.plan else 0,
            peers_up=self.sink.peers_up(),
            ike_sas=[convert.ike_sa_to_proto(sa) for sa in self.sink.ike_sas()],
            data_plane=self.sink.data_plane,
            ike_counters=self.sink.ike_counters(),
            unmatched_ike_sa_init=convert.unmatched_to_proto(self.sink.unmatched_ike_sa_init()),
            problems=convert.problems_to_proto(self.sink.problems()),
            drops=convert.drops_to_proto(self.sink.drops()),
            certificates=convert.certificates_to_proto(certificate_expiries(self.credentials)),
        )
        admission = self.sink.admission()
        if admission is not None:
            status.admission.CopyFrom(convert.admission_to_proto(admission))
        return status

    async def GetStatus(
        self, request: agent_pb2.GetStatusRequest, context: grpc.aio.ServicerContext
    ) -> agent_pb2.AgentStatus:
        return self.status()

    async def WatchStatus(
        self, request: agent_pb2.WatchStatusRequest, context: grpc.aio.ServicerContext
    ) -> AsyncGenerator[agent_pb2.StatusEvent, None]:
        interval = request.interval_seconds or DEFAULT_WATCH_INTERVAL
        if interval < MIN_WATCH_INTERVAL:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"interval_seconds {interval} is below the minimum {MIN_WATCH_INTERVAL}",
            )
        queue = self.events.subscribe()
        try:
            yield agent_pb2.StatusEvent(time=self._clock(), status=self.status())
            deadline = time.monotonic() + interval
            while True:
                # Cancellation (client gone, server stopping) arrives as CancelledError here.
                timeout = max(0.0, deadline - time.monotonic())
                try:
                    event = await asyncio.wait_for(queue.get(), timeout)
                except TimeoutError:
                    yield agent_pb2.StatusEvent(time=self._clock(), status=self.status())
                    deadline = time.monotonic() + interval
                    continue
                yield convert.event_to_proto(event)
        finally:
            self.events.unsubscribe(queue)

    async def Rekey(
        self, request: agent_pb2.RekeyRequest, context: grpc.aio.ServicerContext
    ) -> agent_pb2.RekeyResponse:
        chosen = await self._peers_matching(request.peer_pattern, context)
        target = convert.rekey_target_from_proto(request.target)
        results = await self.sink.rekey(chosen, target)
        return convert.rekey_results_to_proto(results)

    async def _peers_matching(self, pattern: str, context: grpc.aio.ServicerContext) -> list[str]:
        """The plan's peers whose names match ``pattern`` (all when empty); NOT_FOUND when
        none does."""
        pattern = pattern or "*"
        names = [p.name for p in (self.plan.peers if self.plan else ())]
        chosen = [n for n in names if fnmatch.fnmatchcase(n, pattern)]
        if not chosen:
            await context.abort(
                grpc.StatusCode.NOT_FOUND,
                f"no peer matches {pattern!r} (the plan in force has {len(names)} peers)",
            )
        return chosen

    async def CheckLiveness(
        self, request: agent_pb2.CheckLivenessRequest, context: grpc.aio.ServicerContext
    ) -> agent_pb2.CheckLivenessResponse:
        chosen = await self._peers_matching(request.peer_pattern, context)
        wait = request.wait_seconds or LIVENESS_WAIT
        if not 0 < wait <= LIVENESS_WAIT_MAX:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"wait_seconds must be above 0 and at most {LIVENESS_WAIT_MAX:g}, not {wait:g}",
            )
        results = await self.sink.check_liveness(chosen, wait)
        return convert.liveness_results_to_proto(results)

    # -- credential rotation -------------------------------------------------------------

    async def PrepareEnrollment(
        self, request: agent_pb2.PrepareEnrollmentRequest, context: grpc.aio.ServicerContext
    ) -> agent_pb2.PrepareEnrollmentResponse:
        files = await self._credential_files(context)
        try:
            async with self._lock:
                tls_csr, ike_csr = await asyncio.to_thread(
                    prepare_enrollment,
                    files,
                    self.host,
                    request.tls,
                    request.ike,
                    request.key_type,
                )
        except CredentialRefused as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except OSError as exc:
            await context.abort(
                grpc.StatusCode.INTERNAL, f"cannot stage keys in {files.state_dir}: {exc}"
            )
        kinds = [k for k, on in (("TLS", request.tls), ("IKE", request.ike)) if on]
        log.info("%s: staged new %s key pairs", self.host, " and ".join(kinds))
        return agent_pb2.PrepareEnrollmentResponse(tls_csr=tls_csr, ike_csr=ike_csr)

    async def InstallCredentials(
        self, request: agent_pb2.InstallCredentialsRequest, context: grpc.aio.ServicerContext
    ) -> agent_pb2.InstallCredentialsResponse:
        files = await self._credential_files(context)
        callers = context.auth_context().get("x509_pem_cert", ())
        async with self._lock:
            try:
                change = await asyncio.to_thread(
                    check_install,
                    files,
                    self.host,
                    request.tls_cert,
                    request.ike_cert,
                    request.ca_bundle,
                    callers[0] if callers else None,
                )
                ike = self._new_ike(files, change)
                await asyncio.to_thread(commit_install, files, change)
            except CredentialRefused as exc:
                log.warning("%s: refused credentials: %s", self.host, exc)
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
            except CredentialPrecondition as exc:
                log.warning("%s: refused credentials: %s", self.host, exc)
                await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
            except OSError as exc:
                log.error("%s: cannot install credentials: %s", self.host, exc)
                await context.abort(
                    grpc.StatusCode.INTERNAL,
                    f"cannot write the credentials in {files.state_dir}: {exc}; the agent "
                    "finishes or drops the install when it next starts",
                )
            reestablished = self._put_in_use(files, change, ike)
        tls_fp, ike_fp, ca_fps = current_fingerprints(files)
        return agent_pb2.InstallCredentialsResponse(
            tls_fingerprint=tls_fp,
            ike_fingerprint=ike_fp,
            ca_fingerprints=",".join(ca_fps),
            peers_reestablished=reestablished,
        )

    async def _credential_files(self, context: grpc.aio.ServicerContext) -> CredentialFiles:
        if self.credentials is None:
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                "this agent runs without a state dir for its credentials",
            )
        assert self.credentials is not None
        return self.credentials

    def _new_ike(self, files: CredentialFiles, change: CredentialChange) -> IkeCredentials | None:
        if change.ike_pem is None:
            return None
        try:
            ike = IkeCredentials.from_pem(*change.ike_pem, "InstallCredentials")
        except CredentialError as exc:
            raise CredentialRefused(str(exc)) from None
        self._check_ike_identities(ike.certificate, files.ike_cert)
        return ike

    def _check_ike_identities(self, new: x509.Certificate, in_use: Path) -> None:
        """Refuse an IKE certificate that would break certificate peers of the plan the
        one in use serves: it must carry the local identity each of them uses."""
        if self.plan is None:
            return
        try:
            current: x509.Certificate | None = x509.load_pem_x509_certificate(in_use.read_bytes())
        except (OSError, ValueError):
            current = None
        for peer in self.plan.peers:
            if peer.auth.method is not AuthMethod.PUBKEY:
                continue
            local_id = ike_identity(peer.local_id)
            if identity_in_certificate(local_id.id_type, local_id.data, new):
                continue
            if current is not None and not identity_in_certificate(
                local_id.id_type, local_id.data, current
            ):
                continue  # broken already; the new certificate breaks nothing more
            raise CredentialPrecondition(
                f"the IKE certificate does not carry the identity {local_id} that peer "
                f"{peer.name} authenticates us with; that peer would fail"
            )

    def _put_in_use(
        self, files: CredentialFiles, change: CredentialChange, ike: IkeCredentials | None
    ) -> int:
        if change.empty:
            return 0
        if change.tls_changed:
            cert, key, ca = (p.read_bytes() for p in (files.tls_cert, files.tls_key, files.ca))
            for watcher in self.tls_watchers:
                watcher(cert, key, ca)
            log.info("%s: new TLS credentials in use for the next connections", self.host)
        reestablished = 0
        if ike is not None and isinstance(self.sink, IkeCredentialSink):
            reestablished = self.sink.replace_ike_credentials(ike)
        if ike is not None:
            log.info(
                "%s: new IKE certificate in use, %d certificate peers re-established",
                self.host,
                reestablished,
            )
        self.events.publish(
            SaEventReport(
                "credentials_installed",
                detail=f"tls {'new' if change.tls_changed else 'kept'}, "
                f"ike {'new' if ike is not None else 'kept'}, {reestablished} peers",
                time=self._clock(),
            )
        )
        return reestablished


class WrongHost(Exception):
    """A plan compiled for another host."""
