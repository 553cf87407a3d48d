"""The Agent gRPC service: ApplyPlan, GetStatus, WatchStatus and Rekey.

ApplyPlan follows one order and never skips a step: parse and validate the plan whole,
check it is for this host, compare its content hash with the plan in force, persist it,
then put it in force through the :class:`~vpnfleet.agent.sink.PlanSink`. Any refusal
leaves the plan in force untouched. Applies are serialised by a lock so two controllers
racing cannot interleave persist and put-in-force.
"""

from __future__ import annotations

import asyncio
import fnmatch
import logging
import time
from collections.abc import AsyncGenerator, Callable
from importlib.metadata import PackageNotFoundError, version

import grpc

from vpnfleet.protos import agent_pb2, agent_pb2_grpc, plan_pb2

from . import convert
from .plan import AgentPlan, PlanRejected, plan_diff
from .sink import EventHub, PlanSink, SaEventReport
from .store import PlanStore, StoreError

log = logging.getLogger(__name__)

DEFAULT_WATCH_INTERVAL = 5.0
MIN_WATCH_INTERVAL = 0.1


def agent_version() -> str:
    try:
        return version("vpnfleet")
    except PackageNotFoundError:
        return "unknown"


def stored_plan_hash(plan: AgentPlan) -> str:
    return plan.content_hash


class AgentService(agent_pb2_grpc.AgentServicer):
    def __init__(
        self,
        host: str,
        store: PlanStore,
        sink: PlanSink,
        events: EventHub | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.host = host
        self.store = store
        self.sink = sink
        self.events = events or EventHub()
        self._clock = clock
        self._started = time.monotonic()
        self._lock = asyncio.Lock()
        self.plan: AgentPlan | None = None
        self.generation = 0
        self.applied_at = 0.0

    async def restore(self) -> list[str]:
        """Put the persisted plan back in force; return problems found on disk."""
        result = self.store.load(convert.plan_from_bytes, stored_plan_hash)
        problems = list(result.problems)
        stored = result.stored
        if stored is not None and stored.plan.host != self.host:
            problems.append(
                f"stored plan is for host {stored.plan.host!r}, this agent is {self.host!r}; "
                "ignoring it"
            )
            stored = None
        for problem in problems:
            log.warning("%s: %s", self.host, problem)
        if stored is not None:
            await self.sink.put_in_force(stored.plan)
            self.plan = stored.plan
            self.generation = stored.generation
            self.applied_at = stored.applied_at
            log.info(
                "%s: restored plan generation %d (%s)",
                self.host,
                self.generation,
                self.plan.content_hash[:12],
            )
        return problems

    # -- ApplyPlan -------------------------------------------------------------------

    async def apply(self, msg: plan_pb2.NodePlan, dry_run: bool) -> agent_pb2.ApplyPlanResponse:
        """The ApplyPlan logic without gRPC status handling (also used by ``run --plan``).

        Raises PlanRejected, WrongHost or StoreError; the plan in force is then untouched.
        """
        new = convert.plan_from_proto(msg)
        if new.host != self.host:
            raise WrongHost(f"plan is for host {new.host!r}, this agent is {self.host!r}")
        async with self._lock:
            if self.plan is not None and self.plan.content_hash == new.content_hash:
                return self._response(False, [])
            changes = plan_diff(self.plan, new)
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
            await self.sink.put_in_force(new)
            old_generation = self.generation
            self.plan, self.generation, self.applied_at = new, new.generation, now
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

    def _response(
        self, changed: bool, changes: list[agent_pb2.Change]
    ) -> agent_pb2.ApplyPlanResponse:
        return agent_pb2.ApplyPlanResponse(
            changed=changed,
            changes=changes,
            generation=self.generation,
            content_hash=self.plan.content_hash if self.plan else "",
        )

    async def ApplyPlan(
        self, request: agent_pb2.ApplyPlanRequest, context: grpc.aio.ServicerContext
    ) -> agent_pb2.ApplyPlanResponse:
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
        return agent_pb2.AgentStatus(
            host=self.host,
            generation=self.generation,
            content_hash=self.plan.content_hash if self.plan else "",
            plan_applied_at=self.applied_at,
            agent_version=agent_version(),
            uptime_seconds=time.monotonic() - self._started,
            peers_total=len(self.plan.peers) if self.plan else 0,
            peers_up=self.sink.peers_up(),
            ike_sas=[convert.ike_sa_to_proto(sa) for sa in self.sink.ike_sas()],
            data_plane=self.sink.data_plane,
        )

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
        pattern = request.peer_pattern or "*"
        names = [p.name for p in (self.plan.peers if self.plan else ())]
        chosen = [n for n in names if fnmatch.fnmatchcase(n, pattern)]
        if not chosen:
            await context.abort(
                grpc.StatusCode.NOT_FOUND,
                f"no peer matches {pattern!r} (the plan in force has {len(names)} peers)",
            )
        target = convert.rekey_target_from_proto(request.target)
        results = await self.sink.rekey(chosen, target)
        return convert.rekey_results_to_proto(results)


class WrongHost(Exception):
    """A plan compiled for another host."""
