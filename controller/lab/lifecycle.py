"""``lab up``, ``down``, ``status`` and ``exec`` as functions the CLI and tests call.

``up`` checks everything it can before it creates anything (root, the lab name, the
inventory and its plans, leftovers), takes a key and a management subnet of its own on
this machine (:mod:`.owner`), then builds the network, enrols and starts the agents
under the supervisor, records where the controller reaches them in the lab's controller
state, applies the inventory through the same code as ``vpnfleet apply``, waits for
convergence and pings every pair the plans decide.
"""

from __future__ import annotations

import asyncio
import enum
import ipaddress
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..fleet import operations
from ..fleet.rollout import RolloutOptions
from ..inventory import Inventory, load_inventory
from ..planner import NodePlan, build_plans
from ..reports.results import AggregateResult
from ..reports.status import FleetStatus, HostStatus
from ..statedir import pki
from ..statedir.state import StateDir
from . import external, netns, owner, reach, supervisor
from .layout import (
    LabError,
    LabLayout,
    check_lab_name,
    netns_prefix,
    plan_layout,
    root_link_name,
)
from .record import SUPERVISOR_PID, LabRecord, lab_dir, labs_root

Progress = Callable[[str], None]
DEFAULT_NAME = "lab"
DEFAULT_TIMEOUT = 60.0
AGENT_START_TIMEOUT = 30.0
AGENT_START_EACH = 1.0
"""More seconds per agent: they all start at once, each importing the agent (about 0.7 s
of CPU), so 100 agents on a 2-core machine take about a minute to listen."""
POLL = 0.25
PUSH_OPTIONS = RolloutOptions(forks=50)
"""Every agent at once (up to 50): an agent whose plan comes late leaves its peers'
initiations waiting, and all agents share this machine's CPU anyway."""
PUSH_TIMEOUT = 30.0
"""Seconds an ApplyPlan may take: on a machine running 100 agents that set up thousands
of SAs at once, an agent answers late (it does answer; asked again, it has the plan)."""
PUSH_RETRY = operations.PushRetry(attempts=5, first_delay=0.5, max_delay=4.0)
"""An agent that refused or missed its first ApplyPlan (busy starting, restarted by the
supervisor) is asked again: 5 attempts over about 7.5 s."""
LAB_METRICS = "127.0.0.1:9477"
# With `lab up --keylog`: each agent's key log, in its directory (agents/<host>/).
KEYLOG_FILE = "keys.log"


def _quiet(_message: str) -> None:
    pass


@dataclass(slots=True)
class UpResult:
    name: str
    lab_dir: Path
    layout: LabLayout
    apply: AggregateResult
    status: FleetStatus
    converged: bool
    pairs: list[reach.ReachPair]
    seconds: dict[str, float] = field(default_factory=dict)
    keylogs: dict[str, Path] = field(default_factory=dict)
    """Host -> its agent's key log, with ``--keylog``."""

    @property
    def data_plane(self) -> bool:
        return any(h.observed is not None and h.observed.data_plane for h in self.status.hosts)

    @property
    def exit_code(self) -> int:
        if not self.converged:
            return 3
        if self.data_plane and any(p.result == reach.FAIL for p in self.pairs):
            return 5
        return 0

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "lab_dir": str(self.lab_dir),
            "layout": self.layout.to_json(),
            "apply": self.apply.to_json(),
            "status": self.status.to_json(),
            "converged": self.converged,
            "data_plane": self.data_plane,
            "reachability": [p.to_json() for p in self.pairs],
            "seconds": self.seconds,
            "keylogs": {host: str(path) for host, path in self.keylogs.items()},
        }


def check_root() -> None:
    if os.geteuid() != 0:
        raise LabError(
            "the lab needs root: it creates network namespaces, veth links and nftables "
            "tables (run it with sudo)"
        )


def existing_labs(state: StateDir) -> list[str]:
    root = labs_root(state)
    return sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []


def _leftovers(key: str) -> list[str]:
    """Namespaces and the root link of lab key ``key`` that exist on this machine."""
    prefix = netns_prefix(key)
    found = [ns for ns in netns.list_netns() if ns.startswith(prefix)]
    if netns.link_exists(root_link_name(key)):
        found.append(f"link {root_link_name(key)}")
    return found


def _check_free(state: StateDir, name: str) -> None:
    directory = lab_dir(state, name)
    if directory.exists():
        raise LabError(
            f"a lab named {name!r} already exists ({directory}): use another --name "
            f"or remove it with `vpnfleet lab down --name {name}`"
        )
    left = _leftovers(name)
    if left and owner.read_owner(name) is None:
        raise LabError(
            f"leftovers of a lab named {name!r} exist ({', '.join(left)}) and no "
            f"state directory owns them: remove them with "
            f"`vpnfleet lab down --name {name} --force`"
        )


def _claim(state: StateDir, prepared: Prepared, directory: Path) -> LabLayout:
    """Take a key and a management subnet for the lab (after its lab record, before
    anything is made on the machine), and lay the lab out with them."""
    draft = prepared.layout
    version = ipaddress.ip_network(draft.underlay).version
    mine = owner.claim(
        draft.name,
        directory,
        state.root,
        version=version,
        hosts=len(draft.hosts),
        avoid=[*draft.networks(), *netns.root_routes(version)],
        in_use=lambda key: bool(_leftovers(key)),
    )
    return plan_layout(
        draft.name,
        prepared.inventory,
        prepared.plans,
        key=mine.key,
        mgmt=ipaddress.ip_network(mine.mgmt),
    )


@dataclass(frozen=True, slots=True)
class Prepared:
    """The inventory, its plans (throwaway secrets) and the lab's layout before it has a
    key and management subnet of its own."""

    inventory: Inventory
    plans: dict[str, NodePlan]
    layout: LabLayout


def prepare(inventory: Path, name: str) -> Prepared:
    """Every check that needs no change on the machine; raises before anything exists."""
    check_root()
    inv = load_inventory(inventory)
    # Plans with a throwaway secret and CA: only to validate the inventory and learn
    # addresses (certificate peers need a trust anchor; the lab's own CA comes later).
    with tempfile.TemporaryDirectory(prefix="vpnfleet-lab-check-") as scratch:
        pki.init_ca(Path(scratch))
        anchor = pki.load_ca(Path(scratch))[2]
    plans = build_plans(inv, master_secret=bytes(32), trust_anchors=(anchor,))
    layout = plan_layout(name, inv, plans)
    if layout.externals:
        external.check_installed()
    return Prepared(inv, plans, layout)


def _agent_config(record: LabRecord, layout: LabLayout, host: str, keylog: bool) -> dict[str, str]:
    h = layout.hosts[host]
    agent_dir = record.agent_dir(host)
    config = agent_dir / "agent.yaml"
    # Metrics on the namespace's own loopback: `lab exec HOST -- curl` reaches them.
    # IKE and raw ESP/AH sockets are of one IP version: the underlay's.
    config.write_text(
        f"name: {host}\nlisten: '{h.listen}'\nstate_dir: .\nmetrics_listen: '{LAB_METRICS}'\n"
        + ("ike_listen: '::'\n" if ":" in h.address else "")
        + (f"keylog: {KEYLOG_FILE}\n" if keylog else "")
    )
    return {
        "host": host,
        "netns": h.netns,
        "config": str(config),
        "log": str(agent_dir / "agent.log"),
    }


def _wait_listening(record: LabRecord, hosts: list[str], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    waiting = set(hosts)
    while waiting and time.monotonic() < deadline:
        for host in list(waiting):
            log = record.agent_dir(host) / "agent.log"
            try:
                text = log.read_text(errors="replace")
            except OSError:
                continue
            if f"vpnfleet-agent {host} listening on" in text:
                waiting.discard(host)
        if waiting:
            time.sleep(0.05)
    if waiting:
        host = sorted(waiting)[0]
        tail = (record.agent_dir(host) / "agent.log").read_text(errors="replace")[-800:]
        raise LabError(
            f"agents {', '.join(sorted(waiting))} did not start within {timeout:g}s; "
            f"{host}'s log ends with: {tail.strip() or '(empty)'}"
        )


def lab_fleet(record: LabRecord) -> operations.CompiledFleet:
    """The inventory compiled with the lab's controller state, which says where the
    agents answer (their management addresses)."""
    return operations.compile_fleet(Path(record.data["inventory"]), record.controller_state)


def host_converged(h: HostStatus) -> bool:
    """The agent runs the desired plan and, where it has a data plane, all peers are up."""
    if not h.in_sync or h.observed is None:
        return False
    return not h.observed.data_plane or h.observed.peers_up >= h.observed.peers_total


def converged(status: FleetStatus) -> bool:
    """Every agent runs the desired plan and, where it has a data plane, all peers are up."""
    return all(host_converged(h) for h in status.hosts)


async def _converge(
    fleet: operations.CompiledFleet, state: StateDir, timeout: float, progress: Progress
) -> tuple[FleetStatus, bool]:
    """Poll until every agent has converged. Only the agents not there yet are asked
    again (a status of every SA costs each agent and the controller more as the mesh
    grows); once none is left, every agent is asked once more to confirm."""
    deadline = time.monotonic() + timeout
    last = ""
    latest: dict[str, HostStatus] = {}
    pending = list(fleet.selected)
    while True:
        confirming = not pending
        asked = fleet if confirming else fleet.subset(pending)
        polled = await operations.fleet_status(asked, state, timeout=2.0)
        latest.update((h.host, h) for h in polled.hosts)
        status = FleetStatus([latest[h] for h in fleet.selected])
        pending = [h.host for h in status.hosts if not host_converged(h)]
        done = confirming and not pending
        in_sync = sum(h.in_sync for h in status.hosts)
        up = sum(h.observed.peers_up for h in status.hosts if h.observed)
        total = sum(h.observed.peers_total for h in status.hosts if h.observed)
        line = f"converging: {in_sync}/{len(status.hosts)} agents in sync, peers up {up}/{total}"
        if line != last:
            progress(line)
            last = line
        if done or (pending and time.monotonic() >= deadline):
            return status, done
        if pending:
            await asyncio.sleep(POLL)


async def up(
    inventory: Path,
    state: StateDir,
    name: str = DEFAULT_NAME,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    keep_on_failure: bool = False,
    keylog: bool = False,
    progress: Progress = _quiet,
) -> UpResult:
    """Build the lab; on an error while building, remove what was made (unless told not
    to). With ``keylog`` every agent writes its SA keys to ``agents/<host>/keys.log``."""
    started = time.monotonic()
    prepared = prepare(inventory, name)
    _check_free(state, name)
    directory = lab_dir(state, name).absolute()
    record = LabRecord.create(directory, name, inventory)
    try:
        layout = _claim(state, prepared, directory)
    except BaseException:
        owner.release_of(directory)
        shutil.rmtree(directory, ignore_errors=True)
        raise
    record.set(key=layout.key, layout=layout.to_json(), keylog=keylog)
    if layout.key != name:
        progress(
            f"another lab named {name!r} runs on this machine, of "
            + ", ".join(o.describe() for o in owner.named(name) if not o.owns(directory))
            + f": this lab's namespaces are {layout.prefix}*"
        )
    try:
        return await _build(record, layout, timeout, progress, started)
    except BaseException:
        if not keep_on_failure:
            progress("failed: removing what was made")
            down(state, name)
        raise


async def _build(
    record: LabRecord, layout: LabLayout, timeout: float, progress: Progress, started: float
) -> UpResult:
    seconds: dict[str, float] = {}
    mark = time.monotonic()
    netns.build_network(record, layout, progress)
    seconds["network"] = time.monotonic() - mark
    if layout.externals:
        mark = time.monotonic()
        external.build(record, layout, progress)
        seconds["external_peers"] = time.monotonic() - mark
    mark = time.monotonic()
    pinned = netns.pin_neighbours(layout)
    seconds["neighbours"] = time.monotonic() - mark
    progress(f"{pinned} permanent neighbour entries on the bridge's links")

    mark = time.monotonic()
    ctl = record.controller_state
    ctl.ensure()
    if not operations.ca_exists(ctl):
        pki.init_ca(ctl.root)
    pki.ensure_controller_cert(ctl.root)
    # Every later command with --state LAB/controller reaches the agents there.
    ctl.record_agent_addresses({h.host: h.mgmt_address for h in layout.hosts.values()})
    agents = []
    keylog = bool(record.data.get("keylog"))
    for host, h in layout.hosts.items():
        pki.enroll_local(ctl.root, record.agent_dir(host), host, h.address)
        agents.append(_agent_config(record, layout, host, keylog))
    record.set(agents=agents)
    progress(f"enrolled {len(agents)} agents with the lab's fleet CA")
    keylogs = keylog_paths(record)
    if keylogs:
        progress(
            f"key logs on (secret keys: delete them when done): "
            f"{record.path / 'agents' / '*' / KEYLOG_FILE}"
        )
    record.add("process", role="supervisor", pid_file=str(record.path / SUPERVISOR_PID))
    pid = supervisor.start_detached(record.path)
    record.set(supervisor_pid=pid)
    progress(f"supervisor {pid} starting {len(agents)} agents")
    _wait_listening(
        record, list(layout.hosts), AGENT_START_TIMEOUT + AGENT_START_EACH * len(layout.hosts)
    )
    seconds["agents"] = time.monotonic() - mark
    progress(f"agents listening ({seconds['agents']:.1f}s)")

    mark = time.monotonic()
    fleet = lab_fleet(record)
    result = await operations.push_plans(
        fleet,
        ctl,
        dry_run=False,
        options=PUSH_OPTIONS,
        timeout=PUSH_TIMEOUT,
        retry=PUSH_RETRY,
        notice=progress,
    )
    for r in result:
        progress(f"apply {r.host}: {r.outcome.value}" + (f" ({r.error})" if r.error else ""))
    seconds["apply"] = time.monotonic() - mark

    mark = time.monotonic()
    status, done = await _converge(fleet, ctl, timeout, progress)
    seconds["converge"] = time.monotonic() - mark
    record.set(state="up" if done else "not converged")

    mark = time.monotonic()
    pairs = reach.expected_pairs(fleet.plans, layout)
    probes = sum(1 for p in pairs if p.expect == "bypass")
    extra = f" and sending {probes} bypass probes" if probes else ""
    progress(f"pinging {len(pairs) - probes} site pairs{extra}")
    pairs = await reach.ping_pairs(pairs, layout)
    if done:
        # Once more, so the SA counters shown include the pings that just crossed.
        status = await operations.fleet_status(fleet, ctl, timeout=2.0)
    seconds["reachability"] = time.monotonic() - mark
    seconds["total"] = time.monotonic() - started
    return UpResult(layout.name, record.path, layout, result, status, done, pairs, seconds, keylogs)


def keylog_paths(record: LabRecord) -> dict[str, Path]:
    """Host -> its agent's key log, when the lab was made with ``--keylog``."""
    if not record.data.get("keylog"):
        return {}
    return {
        str(a["host"]): record.agent_dir(str(a["host"])) / KEYLOG_FILE
        for a in record.data["agents"]
    }


# ---------------------------------------------------------------- down


@dataclass(slots=True)
class DownResult:
    name: str
    namespaces: list[str] = field(default_factory=list)
    links: list[str] = field(default_factory=list)
    processes: int = 0
    removed_dir: str = ""
    forced_from: list[str] = field(default_factory=list)
    """With ``--force``, the state directories whose labs of the name were removed."""

    @property
    def anything(self) -> bool:
        return bool(self.namespaces or self.links or self.processes or self.removed_dir)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "namespaces": self.namespaces,
            "links": self.links,
            "processes": self.processes,
            "removed_dir": self.removed_dir,
            "forced_from": self.forced_from,
        }


def _record_key(record: LabRecord | None, held: owner.LabOwner | None, name: str) -> str:
    """The key of this state directory's lab ``name``: from its record, else from what the
    machine records for its directory (a crash before the record had it), else the name
    (records written before labs had keys)."""
    if record is not None and record.data.get("key"):
        return str(record.data["key"])
    return held.key if held is not None else name


def _stop_supervisors(pids: set[int]) -> int:
    if not pids:
        return 0
    # SIGTERM first: the supervisor stops its agents gracefully.
    left = netns.kill_and_wait(sorted(pids), signal.SIGTERM, supervisor.STOP_GRACE + 2)
    netns.kill_and_wait(left, signal.SIGKILL)
    return len(pids)


def _supervisors_of(directory: Path, record: LabRecord | None) -> set[int]:
    pids = set(supervisor.find_supervisors(lab_dir=directory))
    for candidate in (
        supervisor.read_pid(directory),
        record.data.get("supervisor_pid") if record else None,
    ):
        if isinstance(candidate, int) and supervisor.is_supervisor_of(candidate, directory):
            pids.add(candidate)
    return pids


def _remove(
    key: str,
    directory: Path | None,
    record: LabRecord | None,
    result: DownResult,
    progress: Progress,
    supervisors: set[int] | None = None,
) -> None:
    """Stop the lab's processes, delete its namespaces and link (from its record, and by
    its key), then forget what it holds on the machine (``directory`` None: leftovers of
    no lab directory, found by key; ``supervisors`` found by the caller)."""
    if supervisors is None:
        supervisors = _supervisors_of(directory, record) if directory is not None else set()
    pids = supervisors
    result.processes += _stop_supervisors(pids)
    result.processes += external.stop_charons(record, progress)
    recorded = [str(r["name"]) for r in record.resources("netns")] if record else []
    prefix = netns_prefix(key)
    present = netns.list_netns()
    # Hosts first, the bridge last: order does not matter to the kernel, but it reads well.
    names = [n for n in recorded if n in present and n.startswith(prefix)]
    names += sorted(n for n in present if n.startswith(prefix) and n not in names)
    for ns in reversed(names):
        result.processes += netns.delete_netns(ns)
        result.namespaces.append(ns)
        progress(f"removed namespace {ns}")
    links = {root_link_name(key)}
    if record:
        links.update(str(r["name"]) for r in record.resources("link"))
    for link in sorted(links):
        if netns.link_exists(link):
            netns.ip("link", "delete", link, check=False)
            result.links.append(link)
            progress(f"removed link {link}")
    # Last: until now a crash leaves the owner recorded beside what is left.
    owner.release(key, directory)


def _others_message(state: StateDir, name: str, others: list[owner.LabOwner]) -> str:
    labs = "; ".join(f"{o.describe()}: `{o.down_command}`" for o in others)
    them = "them" if len(others) > 1 else "it"
    return (
        f"{state.root.absolute()} has no lab named {name!r}; labs of that name on this "
        f"machine belong to {labs}. `vpnfleet lab down --name {name} --force` removes "
        f"{them} from here anyway"
    )


def down(
    state: StateDir, name: str = DEFAULT_NAME, progress: Progress = _quiet, *, force: bool = False
) -> DownResult:
    """Remove everything of this state directory's lab ``name``, from its record and by
    its key; idempotent.

    Labs of the same name of other state directories are left alone: when this state
    directory has no lab ``name`` and another has, or namespaces of the name exist that
    nobody owns, it is refused; ``force`` removes them anyway (the other owners' lab
    directories stay, and their ``lab status`` says their lab is gone)."""
    check_root()
    check_lab_name(name)
    directory = lab_dir(state, name).absolute()
    record = LabRecord.load(directory) if directory.exists() else None
    held = owner.owner_of(directory)
    result = DownResult(name)
    if record is None and held is None:
        _down_elsewhere(state, name, result, progress, force=force)
    else:
        key = _record_key(record, held, name)
        holder = owner.read_owner(key)
        if holder is not None and not holder.owns(directory):
            # The key went to another lab after this one's namespaces were removed from
            # outside: nothing on the machine is this lab's any more.
            result.processes += _stop_supervisors(_supervisors_of(directory, record))
            progress(f"its namespaces {netns_prefix(key)}* are {holder.describe()}'s: left alone")
        else:
            _remove(key, directory, record, result, progress)
    if directory.exists():
        shutil.rmtree(directory)
        result.removed_dir = str(directory)
        progress(f"removed {directory}")
    return result


def _down_elsewhere(
    state: StateDir, name: str, result: DownResult, progress: Progress, *, force: bool
) -> None:
    """``lab down`` of a name this state directory has no lab of."""
    others = owner.named(name)
    unreadable = owner.read_owner(name) is None and owner.owner_path(name).exists()
    unowned = _leftovers(name) if owner.read_owner(name) is None else []
    if not force:
        if others:
            raise LabError(_others_message(state, name, others))
        if unowned or unreadable:
            what = ", ".join(unowned) or f"{owner.owner_path(name)} (unreadable)"
            raise LabError(
                f"{what} exist, but no lab of {state.root.absolute()} made them and no "
                f"state directory is recorded as their owner ({owner.OWNERS_DIR}): if they "
                f"are leftovers, remove them with `vpnfleet lab down --name {name} --force`"
            )
        return
    for other in others:
        progress(f"removing lab {name} of {other.describe()} (--force)")
        result.forced_from.append(str(other.state_dir))
        _remove(other.key, other.lab_dir, LabRecord.load(other.lab_dir), result, progress)
    if unowned or unreadable:
        # Supervisors of labs called ``name`` that no recorded lab owns.
        kept = {o.lab_dir for o in owner.owners()}
        strays = {
            pid
            for pid in supervisor.find_supervisors(name=name)
            if not any(supervisor.is_supervisor_of(pid, d) for d in kept)
        }
        _remove(name, None, None, result, progress, strays)


# ---------------------------------------------------------------- status and exec


class LabHealth(enum.Enum):
    """Whether what the lab record describes is on this machine."""

    PRESENT = "present"
    PARTIAL = "partial"  # some of its namespaces are gone
    GONE = "gone"  # every namespace is gone
    TAKEN = "taken"  # its name belongs to another state directory's lab now


@dataclass(slots=True)
class LabStatus:
    name: str
    lab_dir: Path
    state: str
    health: LabHealth
    problem: str  # what is wrong and what to do, when health is not PRESENT
    namespaces: dict[str, bool]  # recorded namespace -> present
    supervisor_pid: int | None
    supervisor_alive: bool
    agents: dict[str, dict[str, Any]]  # host -> pid, alive, restarts, netns
    fleet: FleetStatus | None
    fleet_error: str = ""
    externals: dict[str, dict[str, Any]] = field(default_factory=dict)
    """External peer -> charon pid, alive, and its IKE SAs (name, state, children)."""

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "lab_dir": str(self.lab_dir),
            "state": self.state,
            "health": self.health.value,
            "problem": self.problem,
            "namespaces": self.namespaces,
            "supervisor": {"pid": self.supervisor_pid, "alive": self.supervisor_alive},
            "agents": self.agents,
            "fleet": self.fleet.to_json() if self.fleet else None,
            "fleet_error": self.fleet_error,
            "externals": self.externals,
        }


def load(state: StateDir, name: str) -> LabRecord:
    directory = lab_dir(state, name).absolute()
    record = LabRecord.load(directory)
    if record is None or not record.data.get("layout"):
        labs = existing_labs(state)
        known = f" (labs here: {', '.join(labs)})" if labs else " (no labs here)"
        raise LabError(f"no lab named {name!r} in {labs_root(state)}{known}")
    return record


async def status(state: StateDir, name: str = DEFAULT_NAME) -> LabStatus:
    check_root()
    check_lab_name(name)
    record = load(state, name)
    hosts = record.data["layout"]["hosts"]
    other = owner.read_owner(_record_key(record, None, name))
    taken = other is not None and not other.owns(record.path)
    present = set() if taken else set(netns.list_netns())
    spaces = {str(r["name"]): str(r["name"]) in present for r in record.resources("netns")}
    health, problem = _health(record, spaces, other if taken else None)
    sup_pid = supervisor.read_pid(record.path)
    sup_alive = sup_pid is not None and supervisor.is_supervisor_of(sup_pid, record.path)
    sup_state = supervisor.read_state(record.path) or {}
    agents: dict[str, dict[str, Any]] = {}
    for host, h in hosts.items():
        info = dict(sup_state.get("agents", {}).get(host, {}))
        pid = info.get("pid")
        info["alive"] = bool(sup_alive and isinstance(pid, int) and netns.pid_alive(pid))
        info.setdefault("netns", h["netns"])
        agents[host] = info
    fleet_status, error = None, ""
    if health in (LabHealth.GONE, LabHealth.TAKEN):
        # Its addresses lead nowhere, or to another lab's agents.
        error = problem
    else:
        try:
            fleet = lab_fleet(record)
            fleet_status = await operations.fleet_status(
                fleet, record.controller_state, timeout=3.0
            )
        except Exception as exc:
            error = str(exc)
    externals: dict[str, dict[str, Any]] = {}
    for r in record.resources("charon"):
        pid = r.get("pid")
        alive = isinstance(pid, int) and netns.pid_alive(pid) and external.is_charon(pid)
        peer: dict[str, Any] = {"pid": pid, "alive": alive, "netns": r.get("netns"), "sas": []}
        if alive:
            try:
                peer["sas"] = await asyncio.to_thread(external.list_sas, Path(str(r["dir"])))
            except LabError as exc:
                peer["error"] = str(exc)
        externals[str(r.get("name"))] = peer
    return LabStatus(
        name,
        record.path,
        str(record.data.get("state", "")),
        health,
        problem,
        spaces,
        sup_pid,
        sup_alive,
        agents,
        fleet_status,
        error,
        externals,
    )


def _health(
    record: LabRecord, spaces: dict[str, bool], other: owner.LabOwner | None
) -> tuple[LabHealth, str]:
    name = record.name
    if other is not None:
        return LabHealth.TAKEN, (
            f"this lab's namespaces were removed from outside this state directory, and "
            f"their names ({other.key}) now belong to {other.describe()}; "
            f"`vpnfleet lab down --name {name}` clears this lab's record and leaves that "
            "lab alone"
        )
    missing = [n for n, ok in spaces.items() if not ok]
    if spaces and len(missing) == len(spaces):
        return LabHealth.GONE, (
            f"every namespace of this lab is gone (removed from outside this state "
            f"directory, e.g. by `lab down --force`, or the machine restarted): "
            f"`vpnfleet lab down --name {name}` clears its record"
        )
    if missing:
        return LabHealth.PARTIAL, (
            f"namespaces {', '.join(missing)} are gone: the lab is broken; "
            f"`vpnfleet lab down --name {name}` and `lab up` again"
        )
    return LabHealth.PRESENT, ""


def exec_argv(state: StateDir, name: str, host: str, command: list[str]) -> list[str]:
    """``ip netns exec`` argv running ``command`` inside lab host ``host``."""
    check_root()
    check_lab_name(name)
    record = load(state, name)
    other = owner.read_owner(_record_key(record, None, name))
    if other is not None and not other.owns(record.path):
        raise LabError(
            f"lab {name!r} on this machine belongs to {other.describe()}, not to "
            f"{state.root.absolute()}: its namespaces are not this lab's"
        )
    layout = record.data["layout"]
    # External peers too, e.g. to ping or capture from the partner's side.
    hosts = {**layout.get("externals", {}), **layout["hosts"]}
    if host not in hosts:
        raise LabError(f"lab {name} has no host {host!r}; its hosts: {', '.join(sorted(hosts))}")
    if not command:
        raise LabError("give the command to run after `--`, e.g. `lab exec a1 -- ip addr`")
    return ["ip", "netns", "exec", str(hosts[host]["netns"]), *command]


def run_exec(state: StateDir, name: str, host: str, command: list[str]) -> int:
    return subprocess.run(exec_argv(state, name, host, command), check=False).returncode
