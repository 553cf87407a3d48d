"""What the controller's commands do, as functions tests can call.

Each operation first compiles the whole inventory (so a bad inventory stops the run
before any agent is contacted), then works on the hosts selected by ``--limit``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vpnfleet.protos.files import make_private_directory, write_atomically

from ..inventory import Inventory, InventoryErrors, limit_hosts, load_inventory
from ..inventory.vault import Vault
from ..planner import IkeVersion, Planner
from ..reports.results import AggregateResult, ChangeLine, HostResult, Outcome
from ..reports.status import FAULTS, ApplyAnswer, FleetStatus, HostStatus, LivenessView, ProblemKind
from ..statedir import pki
from ..statedir.state import StateDir, StateError
from ..transport import convert
from ..transport.client import AgentClient, AgentUnreachable
from . import rails, revisions
from .rollout import DEFAULT_OPTIONS, RolloutOptions, run_rollout

DEFAULT_TIMEOUT = 10.0

log = logging.getLogger(__name__)


@dataclass(slots=True)
class CompiledFleet:
    """Plans for the selected hosts, with their messages and where their agents listen."""

    inventory: Inventory
    selected: list[str]
    plans: dict[str, Any]  # host -> planner NodePlan
    messages: dict[str, Any] = field(default_factory=dict)  # host -> plan_pb2.NodePlan
    endpoints: dict[str, str] = field(default_factory=dict)
    retired: tuple[str, ...] = ()  # decommissioned hosts the inventory still lists

    def message(self, host: str) -> Any:
        msg = self.messages.get(host)
        if msg is None:
            msg = self.messages[host] = convert.plan_to_proto(self.plans[host])
        return msg

    def subset(self, hosts: Iterable[str]) -> CompiledFleet:
        """The same compile restricted to ``hosts`` (messages stay shared, so cached)."""
        names = list(hosts)
        return CompiledFleet(
            self.inventory,
            names,
            {h: self.plans[h] for h in names},
            self.messages,
            {h: self.endpoints[h] for h in names},
            self.retired,
        )


def agent_endpoint(vars_: Any, recorded: str = "") -> str:
    """``address:port`` of a host's agent: at ``recorded`` (the state directory's address
    for it), else ``agent_address``, else the host's ``address``; on ``agent_port``."""
    explicit = str(vars_.get("agent_address") or "")
    port = int(vars_.get("agent_port") or 50051)
    if explicit and not recorded:
        return explicit if ":" in explicit.rstrip("]").split("]")[-1] else f"{explicit}:{port}"
    address = recorded or str(vars_["address"])
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def compile_fleet(
    inventory_path: Path,
    state: StateDir,
    *,
    limit: str | None = None,
    vault: Vault | None = None,
    revision: str = "worktree",
    retire: Iterable[str] = (),
    planner: Planner | None = None,
) -> CompiledFleet:
    """Load, validate and plan the whole inventory; select the ``limit`` hosts. Hosts
    decommissioned (and those in ``retire``: a dry run of a decommission) are left out.

    ``planner`` is kept across compiles by whoever plans more than once (``serve``, a
    command that compiles several revisions): it re-plans only what changed. Without
    it the plans are made from scratch; they are equal either way."""
    inventory = load_inventory(inventory_path, vault=vault)
    inventory, retired = without_retired(inventory, state, retire)
    selected = limit_hosts(inventory, limit) if limit else list(inventory.hosts)
    anchors: tuple[bytes, ...] = ()
    crls: tuple[bytes, ...] = ()
    if ca_exists(state):
        anchors = pki.plan_anchors(state.root)  # two while a CA rotation runs
        crls = pki.fleet_crls(state.root)
    plans = (planner or Planner()).plan(
        inventory,
        master_secret=state.master_secret(),
        trust_anchors=anchors,
        crls=crls,
        generation=state.current_generation() + 1,
        revision=revision,
    )
    recorded = state.agent_addresses()
    endpoints = {
        h: agent_endpoint(inventory.resolve(h).vars, recorded.get(h, "")) for h in selected
    }
    return CompiledFleet(
        inventory, selected, {h: plans[h] for h in selected}, {}, endpoints, retired
    )


def without_retired(
    inventory: Inventory, state: StateDir, retire: Iterable[str] = ()
) -> tuple[Inventory, tuple[str, ...]]:
    """The inventory without its decommissioned hosts (and ``retire``: those a dry run
    of ``decommission`` would retire), and the names of those left out.

    A decommissioned host still listed is left out with a warning rather than refused:
    decommissioning comes first and the inventory edit follows (often through a review),
    and every apply in between must go on serving the rest of the fleet without giving
    the retired host back its tunnels. Nothing is planned for it, no peer names it."""
    retired = state.retired_hosts()
    for host in inventory.hosts:
        if host in retired:
            log.warning(
                "warning: %s was decommissioned at %s and is left out of every plan: "
                "remove it from the inventory",
                host,
                retired[host],
            )
    gone = set(retired) | set(retire)
    listed = tuple(h for h in inventory.hosts if h in gone)
    if not listed:
        return inventory, ()
    return inventory.subset(h for h in inventory.hosts if h not in gone), listed


def compile_fleet_at(
    inventory_path: Path,
    state: StateDir,
    ref: str | None,
    *,
    limit: str | None = None,
    vault: Vault | None = None,
    planner: Planner | None = None,
) -> CompiledFleet:
    """:func:`compile_fleet` on the inventory as it is at git revision ``ref``.

    Plans carry the commit hash as ``source_revision``. Without ``ref`` this is the
    working tree, as :func:`compile_fleet`.
    """
    if ref is None:
        return compile_fleet(inventory_path, state, limit=limit, vault=vault, planner=planner)
    with revisions.inventory_at(inventory_path, ref) as checkout:
        return compile_fleet(
            checkout.path,
            state,
            limit=limit,
            vault=vault,
            revision=checkout.revision,
            planner=planner,
        )


def previous_fleet(
    inventory_path: Path,
    state: StateDir,
    ref: str,
    *,
    limit: str | None = None,
    vault: Vault | None = None,
    planner: Planner | None = None,
) -> tuple[CompiledFleet | None, str]:
    """The plans in force, taken to be those of revision ``ref`` (what a staged apply
    starts from and a rollback restores): the fleet, or None and why it cannot be had."""
    try:
        fleet = compile_fleet_at(
            inventory_path, state, ref, limit=limit, vault=vault, planner=planner
        )
        return fleet, ""
    except revisions.RevisionError as exc:
        return None, str(exc)
    except InventoryErrors as exc:
        return None, f"the inventory at {ref} does not compile: {exc.errors[0]}"


def rail_violations(fleet: CompiledFleet) -> list[rails.RailViolation]:
    """Plans of the selected hosts that would cut the controller off (see rails)."""
    return rails.check_fleet(fleet.plans, fleet.endpoints, fleet.selected)


def emit_plans(fleet: CompiledFleet, out_dir: Path) -> list[Path]:
    """Write one plan file per selected host (0600: plans hold PSKs) into ``out_dir``,
    made 0700 when missing; a directory others can write to is refused (StateError)."""
    written = []
    try:
        make_private_directory(out_dir)
        for host in fleet.selected:
            path = out_dir / f"{host}.plan"
            write_atomically(path, fleet.message(host).SerializeToString(deterministic=True))
            written.append(path)
    except OSError as exc:
        raise StateError(f"cannot write plan files to {out_dir}: {exc.strerror or exc}") from None
    return written


def ca_exists(state: StateDir) -> bool:
    return (state.pki / pki.CA_CERT).exists()


def missing_ca_advice(state: StateDir, inventory: Path | None) -> str:
    """What to do when the state directory holds no fleet CA.

    The usual cause is a state directory other than the one meant: a lab keeps its
    controller state in ``STATE/labs/NAME/controller``, so a lab built from the same
    inventory is named with the ``--state`` that reaches its agents.
    """
    from ..lab.record import LabRecord, labs_root

    where = f"no fleet CA in {state.root}"
    labs = []
    root = labs_root(state)
    if root.is_dir():
        for directory in sorted(p for p in root.iterdir() if p.is_dir()):
            record = LabRecord.load(directory)
            if record is not None:
                labs.append(record)
    wanted = str(inventory.resolve()) if inventory is not None else None
    for record in labs:
        if wanted is not None and record.data.get("inventory") == wanted:
            return (
                f"{where}; the lab {record.name!r} runs this inventory with its own controller "
                f"state: `vpnfleet --state {record.controller_state.root} COMMAND ...`"
            )
    if labs:
        names = ", ".join(f"{r.name} (--state {r.controller_state.root})" for r in labs)
        return (
            f"{where}; labs kept here have their own controller state: {names}. "
            "For a fleet of your own, run `vpnfleet ca init` and enrol the agents"
        )
    return f"{where}: run `vpnfleet ca init` and enrol the agents"


def client_credentials(state: StateDir) -> pki.TlsCredentials:
    """The controller's TLS credentials, refusing agents whose certificate is revoked."""
    creds = pki.ensure_controller_cert(state.root)
    return dataclasses.replace(creds, revoked=pki.revoked_keys(state.root))


@dataclass(frozen=True, slots=True)
class PushRetry:
    """How often ApplyPlan is tried again on the agents it failed on or did not reach,
    with a back-off that doubles from ``first_delay`` up to ``max_delay``."""

    attempts: int = 5
    """In all, the first included."""
    first_delay: float = 0.5
    max_delay: float = 4.0

    def __post_init__(self) -> None:
        if self.attempts < 1 or self.first_delay < 0 or self.max_delay < self.first_delay:
            raise ValueError(f"bad retry policy {self!r}: attempts >= 1, 0 <= first <= max")

    def delays(self) -> list[float]:
        """The wait before each attempt after the first."""
        return [min(self.first_delay * 2**i, self.max_delay) for i in range(self.attempts - 1)]


RETRIED = (Outcome.FAILED, Outcome.UNREACHABLE)


async def push_plans(
    fleet: CompiledFleet,
    state: StateDir,
    *,
    dry_run: bool,
    options: RolloutOptions = DEFAULT_OPTIONS,
    progress: Callable[[HostResult], None] | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    retry: PushRetry | None = None,
    notice: Callable[[str], None] | None = None,
) -> AggregateResult:
    """ApplyPlan on every selected agent (``dry_run``: only ask what would change).

    With ``retry``, the agents that failed or could not be reached are asked again after
    each back-off delay (``notice`` gets a line per host and attempt saying why); the
    result holds each host's last answer, and a host that never succeeded says after how
    many attempts."""
    creds = client_credentials(state)
    advanced: set[str] = set()  # agents that put the new plan in force (failed or not)

    async def one(host: str) -> HostResult:
        started = time.monotonic()
        msg = fleet.message(host)
        try:
            async with AgentClient(host, fleet.endpoints[host], creds, timeout=timeout) as c:
                resp = await c.apply_plan(convert.apply_request(msg, dry_run))
        except AgentUnreachable as exc:
            return HostResult(
                host, Outcome.UNREACHABLE, error=str(exc), seconds=time.monotonic() - started
            )
        except Exception as exc:
            return HostResult(
                host, Outcome.FAILED, error=str(exc), seconds=time.monotonic() - started
            )
        answer = convert.apply_answer(resp)
        if answer.changed and not dry_run:
            advanced.add(host)
        return apply_result(host, answer, dry_run, time.monotonic() - started)

    result = await run_rollout(fleet.selected, one, options, progress)
    if retry is not None:
        result = await _retry_pushes(result, one, options, progress, retry, notice)
    if not dry_run and advanced:
        state.record_generation(state.current_generation() + 1)
    return result


async def _retry_pushes(
    result: AggregateResult,
    one: Callable[[str], Awaitable[HostResult]],
    options: RolloutOptions,
    progress: Callable[[HostResult], None] | None,
    retry: PushRetry,
    notice: Callable[[str], None] | None,
) -> AggregateResult:
    delays = retry.delays()
    for attempt, delay in enumerate(delays, start=2):
        again = [r for r in result if r.outcome in RETRIED]
        if not again or result.aborted:
            break
        for r in again:
            if notice is not None:
                notice(
                    f"apply {r.host}: {r.outcome.value} ({r.error or 'no reason given'}); "
                    f"attempt {attempt} of {retry.attempts} in {delay:g} s"
                )
        await asyncio.sleep(delay)
        retried = await run_rollout([r.host for r in again], one, options, progress)
        result.extend(retried)
    if retry.attempts > 1:
        for r in [r for r in result if r.outcome in RETRIED]:
            result.add(dataclasses.replace(r, error=f"{r.error} (after {retry.attempts} attempts)"))
    return result


def apply_result(host: str, answer: ApplyAnswer, dry_run: bool, seconds: float) -> HostResult:
    """One host's ApplyPlan answer as a result: failed when the agent reports that the
    plan in force is not all in place (a route or rule the kernel refused …), naming it."""
    changes = answer.changes
    outcome = Outcome.CHANGED if (answer.changed or (dry_run and changes)) else Outcome.OK
    faults = [str(p) for p in answer.problems if p.kind in FAULTS]
    warnings = tuple(
        "plan only: the agent runs no data plane, so no tunnel of this plan comes up "
        "(`data_plane: true` in its config, or `serve --data-plane`)"
        for p in answer.problems
        if p.kind is ProblemKind.PLAN_ONLY
    )[:1]
    error = ""
    if faults and not dry_run:
        outcome = Outcome.FAILED
        error = "the agent reports problems with the plan in force: " + "; ".join(faults)
    return HostResult(
        host,
        outcome,
        changes=changes,
        error=error,
        seconds=seconds,
        generation=answer.generation,
        content_hash=answer.content_hash,
        warnings=warnings,
    )


async def fleet_status(
    fleet: CompiledFleet,
    state: StateDir,
    *,
    forks: int = 50,
    timeout: float = DEFAULT_TIMEOUT,
) -> FleetStatus:
    creds = client_credentials(state)
    statuses: dict[str, HostStatus] = {}

    async def one(host: str) -> HostResult:
        desired = fleet.message(host).content_hash
        endpoint = fleet.endpoints[host]
        try:
            async with AgentClient(host, endpoint, creds, timeout=timeout) as c:
                view = convert.status_from_proto(await c.get_status())
        except Exception as exc:
            statuses[host] = HostStatus(host, desired, None, str(exc), endpoint)
            return HostResult(host, Outcome.UNREACHABLE, error=str(exc))
        statuses[host] = HostStatus(host, desired, view, endpoint=endpoint)
        return HostResult(host, Outcome.OK)

    await run_rollout(fleet.selected, one, RolloutOptions(forks=forks))
    return FleetStatus([statuses[h] for h in fleet.selected])


async def fleet_liveness(
    fleet: CompiledFleet,
    state: StateDir,
    *,
    wait: float,
    forks: int = 50,
    timeout: float = DEFAULT_TIMEOUT,
) -> dict[str, tuple[LivenessView, ...] | str]:
    """Ask every selected agent to check now that each of its peers answers on the IKE SA
    in force (CheckLiveness, waiting up to ``wait`` seconds): host -> the answers, or
    why the agent could not be asked."""
    creds = client_credentials(state)
    request = convert.liveness_request("", wait)
    out: dict[str, tuple[LivenessView, ...] | str] = {}

    async def one(host: str) -> HostResult:
        try:
            async with AgentClient(
                host, fleet.endpoints[host], creds, timeout=max(timeout, wait + 1)
            ) as c:
                out[host] = convert.liveness_from_proto(await c.check_liveness(request))
        except Exception as exc:
            out[host] = str(exc)
            return HostResult(host, Outcome.UNREACHABLE, error=str(exc))
        return HostResult(host, Outcome.OK)

    await run_rollout(fleet.selected, one, RolloutOptions(forks=forks))
    return out


def _ports(start: int, end: int) -> str:
    if (start, end) in ((0, 65535), (0, 0)):
        return "any"
    return str(start) if start == end else f"{start}-{end}"


def plan_summary(fleet: CompiledFleet, host: str) -> dict[str, Any]:
    """A plan as JSON-able data for people and scripts; credentials by reference only."""
    plan = fleet.plans[host]
    msg = fleet.message(host)
    peers = []
    for p in plan.peers:
        peers.append(
            {
                "name": p.name,
                "address": ",".join(p.remote_addresses) or "any",
                "dynamic_address": p.dynamic_address,
                "auth": p.auth.reference if p.auth else "",
                "ike": [x.text for x in p.ike_proposals],
                "esp": [x.text for x in p.esp_proposals],
                "ike_version": 1 if p.ike_version is IkeVersion.V1 else 2,
                "ike_aggressive": p.ike_aggressive,
                "mode": p.mode.name.lower(),
                "start": p.start_action.name.lower(),
                "initiator": p.initiator,
                "managed": p.managed,
                "local_ts": list(p.local_ts),
                "remote_ts": list(p.remote_ts),
            }
        )
    spd = []
    for e in plan.spd:
        s = e.selector
        spd.append(
            {
                "name": e.name,
                "action": e.action.name.lower(),
                "local": s.local_prefix,
                "remote": s.remote_prefix,
                "protocol": str(s.protocol) if s.protocol else "any",
                "ports": _ports(s.local_port_start, s.local_port_end)
                + "→"
                + _ports(s.remote_port_start, s.remote_port_end),
                "peer": e.peer,
            }
        )
    return {
        "host": host,
        "generation": msg.generation,
        "content_hash": msg.content_hash,
        "identity": plan.identity.value if plan.identity else "",
        "addresses": list(plan.addresses),
        "subnets": list(plan.subnets),
        "endpoint": fleet.endpoints[host],
        "peers": peers,
        "spd": spd,
    }


async def rekey_fleet(
    fleet: CompiledFleet,
    state: StateDir,
    *,
    target: str = "both",
    peer_pattern: str = "",
    options: RolloutOptions = DEFAULT_OPTIONS,
    progress: Callable[[HostResult], None] | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> AggregateResult:
    """Ask every selected agent to rekey its SAs (``target``: both, ike or child).

    Agents rekey make-before-break; a host whose agent cannot rekey one of its peers is
    a failed result naming the peer and why.
    """
    creds = client_credentials(state)
    request = convert.rekey_request(target, peer_pattern)

    async def one(host: str) -> HostResult:
        started = time.monotonic()
        try:
            async with AgentClient(host, fleet.endpoints[host], creds, timeout=timeout) as c:
                resp = await c.rekey(request)
        except AgentUnreachable as exc:
            return HostResult(
                host, Outcome.UNREACHABLE, error=str(exc), seconds=time.monotonic() - started
            )
        except Exception as exc:
            return HostResult(
                host, Outcome.FAILED, error=str(exc), seconds=time.monotonic() - started
            )
        rows = convert.rekey_results(resp)
        changes = tuple(
            ChangeLine("rekey", peer, "changed" if ok else "failed", (detail,) if detail else ())
            for peer, ok, detail in rows
        )
        bad = [f"{peer}: {detail}" for peer, ok, detail in rows if not ok]
        return HostResult(
            host,
            Outcome.FAILED if bad else Outcome.CHANGED,
            changes=changes,
            error="; ".join(bad),
            seconds=time.monotonic() - started,
        )

    return await run_rollout(fleet.selected, one, options, progress)
