"""``lab up``, ``down``, ``status`` and ``exec`` as functions the CLI and tests call.

``up`` checks everything it can before it creates anything (root, the lab name, the
inventory and its plans, clashes with other labs and with the root namespace's routes),
then builds the network, enrols and starts the agents under the supervisor, applies the
inventory through the same code as ``vpnfleet apply`` (agents reached at the lab's
endpoints), waits for convergence and pings every pair the plans decide.
"""

from __future__ import annotations

import asyncio
import enum
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

from .. import operations, pki
from ..inventory import load_inventory
from ..planner import build_plans
from ..results import AggregateResult
from ..state import StateDir
from ..status import FleetStatus
from . import external, netns, owner, reach, supervisor
from .layout import (
    NETNS_PREFIX,
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
POLL = 0.25
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


def _leftovers(name: str) -> list[str]:
    prefix = netns_prefix(name)
    found = [ns for ns in netns.list_netns() if ns.startswith(prefix)]
    if netns.link_exists(root_link_name(name)):
        found.append(f"link {root_link_name(name)}")
    return found


def _taken_message(other: owner.LabOwner) -> str:
    return (
        f"a lab named {other.name!r} runs on this machine, made with {other.describe()}: "
        f"lab names are machine-wide (its namespaces are {netns_prefix(other.name)}*). Use "
        f"another --name, or take that lab down with `{other.down_command}`"
        + ("" if other.recorded else f" (or `vpnfleet lab down --name {other.name} --force`)")
    )


def _route_clash_message(underlay: str, clashes: list[str]) -> str:
    for line in clashes:
        words = line.split()
        dev = words[words.index("dev") + 1] if "dev" in words[:-1] else ""
        if not dev.startswith(NETNS_PREFIX):
            continue
        other = dev.removeprefix(NETNS_PREFIX)
        who = owner.read_owner(other)
        made = f", made with {who.describe()}" if who else ""
        down = f"`{who.down_command}`" if who else f"`vpnfleet lab down --name {other}`"
        return (
            f"the lab's underlay {underlay} overlaps the underlay of lab {other!r}{made} "
            f"({line}). Two labs on the same addresses cannot run at once: the controller "
            "reaches each lab's agents at their inventory addresses through a route in "
            "this machine's own namespace, and `vpnfleet --state LAB/controller status` "
            f"relies on it. Take lab {other!r} down first ({down}), or give this "
            "inventory other addresses"
        )
    return (
        f"the lab's underlay {underlay} overlaps routes of this machine "
        f"({'; '.join(clashes)}): the lab would hijack that traffic"
    )


def _check_free(state: StateDir, layout: LabLayout) -> None:
    directory = lab_dir(state, layout.name)
    if directory.exists():
        raise LabError(
            f"a lab named {layout.name!r} already exists ({directory}): use another --name "
            f"or remove it with `vpnfleet lab down --name {layout.name}`"
        )
    left = _leftovers(layout.name)
    other = owner.read_owner(layout.name)
    if other is not None and not other.owns(directory.absolute()):
        if other.recorded or left:
            raise LabError(_taken_message(other))
    elif other is not None and left:
        raise LabError(
            f"leftovers of a lab named {layout.name!r} of this state directory exist "
            f"({', '.join(left)}): remove them with `vpnfleet lab down --name {layout.name}`"
        )
    elif left:
        raise LabError(
            f"leftovers of a lab named {layout.name!r} exist ({', '.join(left)}) and no "
            f"state directory owns them: remove them with "
            f"`vpnfleet lab down --name {layout.name} --force`"
        )
    clashes = netns.root_routes_overlapping(layout.underlay)
    if clashes:
        raise LabError(_route_clash_message(layout.underlay, clashes))


def _claim(state: StateDir, layout: LabLayout, directory: Path) -> None:
    """Record this state directory as the owner of the lab's name, after its lab record
    and before anything is made on the machine. An owner whose record is gone and who
    left nothing is replaced (an owner writes its record before it claims)."""
    other = owner.claim(layout.name, directory, state.root)
    if other is not None and not other.recorded and not _leftovers(layout.name):
        owner.release(layout.name, other.lab_dir)
        other = owner.claim(layout.name, directory, state.root)
    if other is not None and not other.owns(directory):
        raise LabError(_taken_message(other))


def prepare(inventory: Path, name: str) -> LabLayout:
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
    return layout


def _agent_config(record: LabRecord, layout: LabLayout, host: str, keylog: bool) -> dict[str, str]:
    h = layout.hosts[host]
    agent_dir = record.agent_dir(host)
    config = agent_dir / "agent.yaml"
    # Metrics on the namespace's own loopback: `lab exec HOST -- curl` reaches them.
    config.write_text(
        f"name: {host}\nlisten: '{h.listen}'\nstate_dir: .\nmetrics_listen: '{LAB_METRICS}'\n"
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
    """The inventory compiled with the lab's state, agents reached at the lab's endpoints."""
    fleet = operations.compile_fleet(Path(record.data["inventory"]), record.controller_state)
    hosts = record.data["layout"]["hosts"]
    for host in fleet.selected:
        if host in hosts:
            fleet.endpoints[host] = str(hosts[host]["endpoint"])
    return fleet


def converged(status: FleetStatus) -> bool:
    """Every agent runs the desired plan and, where it has a data plane, all peers are up."""
    for h in status.hosts:
        if not h.in_sync or h.observed is None:
            return False
        if h.observed.data_plane and h.observed.peers_up < h.observed.peers_total:
            return False
    return True


async def _converge(
    fleet: operations.CompiledFleet, state: StateDir, timeout: float, progress: Progress
) -> tuple[FleetStatus, bool]:
    deadline = time.monotonic() + timeout
    last = ""
    while True:
        status = await operations.fleet_status(fleet, state, timeout=2.0)
        done = converged(status)
        in_sync = sum(h.in_sync for h in status.hosts)
        up = sum(h.observed.peers_up for h in status.hosts if h.observed)
        total = sum(h.observed.peers_total for h in status.hosts if h.observed)
        line = f"converging: {in_sync}/{len(status.hosts)} agents in sync, peers up {up}/{total}"
        if line != last:
            progress(line)
            last = line
        if done or time.monotonic() >= deadline:
            return status, done
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
    layout = prepare(inventory, name)
    _check_free(state, layout)
    directory = lab_dir(state, name).absolute()
    record = LabRecord.create(directory, name, inventory)
    try:
        _claim(state, layout, directory)
    except BaseException:
        shutil.rmtree(directory, ignore_errors=True)
        raise
    record.set(layout=layout.to_json(), keylog=keylog)
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
    ctl = record.controller_state
    ctl.ensure()
    if not operations.ca_exists(ctl):
        pki.init_ca(ctl.root)
    pki.ensure_controller_cert(ctl.root)
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
    _wait_listening(record, list(layout.hosts), AGENT_START_TIMEOUT)
    seconds["agents"] = time.monotonic() - mark
    progress(f"agents listening ({seconds['agents']:.1f}s)")

    mark = time.monotonic()
    fleet = lab_fleet(record)
    result = await operations.push_plans(fleet, ctl, dry_run=False)
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
    forced_from: str = ""
    """With ``--force``, the state directory that owned the lab, when it was another."""

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


def _stop_supervisors(
    name: str, directory: Path, record: LabRecord | None, *, any_owner: bool
) -> int:
    found = (
        supervisor.find_supervisors(name=name)
        if any_owner
        else supervisor.find_supervisors(lab_dir=directory)
    )
    pids = set(found)
    for candidate in (
        supervisor.read_pid(directory),
        record.data.get("supervisor_pid") if record else None,
    ):
        if isinstance(candidate, int) and supervisor.is_supervisor_of(candidate, directory):
            pids.add(candidate)
    if not pids:
        return 0
    # SIGTERM first: the supervisor stops its agents gracefully.
    left = netns.kill_and_wait(sorted(pids), signal.SIGTERM, supervisor.STOP_GRACE + 2)
    netns.kill_and_wait(left, signal.SIGKILL)
    return len(pids)


def _check_ours(state: StateDir, name: str, directory: Path, record: LabRecord | None) -> None:
    """Refuse to remove what another state directory's lab owns, or what nobody does."""
    other = owner.read_owner(name)
    if other is not None and not other.owns(directory):
        stale = (
            f" This state directory's own record of a lab {name!r} is of one whose "
            f"namespaces are gone: delete {directory}"
            if record is not None
            else ""
        )
        raise LabError(
            f"lab {name!r} on this machine belongs to {other.describe()}, not to "
            f"{state.root.absolute()}: take it down with `{other.down_command}`; "
            f"`vpnfleet lab down --name {name} --force` removes it from here anyway." + stale
        )
    if other is None and record is None:
        left = _leftovers(name)
        if left:
            raise LabError(
                f"{', '.join(left)} exist, but no lab of {state.root.absolute()} made them "
                f"and no state directory is recorded as their owner ({owner.OWNERS_DIR}): if "
                f"they are leftovers, remove them with `vpnfleet lab down --name {name} --force`"
            )


def down(
    state: StateDir, name: str = DEFAULT_NAME, progress: Progress = _quiet, *, force: bool = False
) -> DownResult:
    """Remove everything of lab ``name``, from its record and by name; idempotent.

    Refused when another state directory owns the name (see :mod:`.owner`), or when
    namespaces of the name exist that nobody owns; ``force`` removes them anyway (the
    other owner's lab directory stays, and its ``lab status`` says its lab is gone)."""
    check_root()
    check_lab_name(name)
    directory = lab_dir(state, name).absolute()
    record = LabRecord.load(directory) if directory.exists() else None
    other = owner.read_owner(name)
    if not force:
        _check_ours(state, name, directory, record)
    result = DownResult(name)
    if other is not None and not other.owns(directory):
        result.forced_from = str(other.state_dir)
        progress(f"removing lab {name} of {other.describe()} (--force)")
    result.processes += _stop_supervisors(name, directory, record, any_owner=force)
    result.processes += external.stop_charons(record, progress)
    recorded = [str(r["name"]) for r in record.resources("netns")] if record else []
    prefix = netns_prefix(name)
    present = netns.list_netns()
    # Hosts first, the bridge last: order does not matter to the kernel, but it reads well.
    names = [n for n in recorded if n in present]
    names += sorted(n for n in present if n.startswith(prefix) and n not in names)
    for ns in reversed(names):
        result.processes += netns.delete_netns(ns)
        result.namespaces.append(ns)
        progress(f"removed namespace {ns}")
    links = {root_link_name(name)}
    if record:
        links.update(str(r["name"]) for r in record.resources("link"))
    for link in sorted(links):
        if netns.link_exists(link):
            netns.ip("link", "delete", link, check=False)
            result.links.append(link)
            progress(f"removed link {link}")
    if directory.exists():
        shutil.rmtree(directory)
        result.removed_dir = str(directory)
        progress(f"removed {directory}")
    # Last: until now a crash leaves the owner recorded beside what is left.
    owner.release(name, None if force else directory)
    return result


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
    other = owner.read_owner(name)
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
            f"lab name {name!r} now belongs to {other.describe()}; "
            f"`vpnfleet lab down --name {name}` here would be refused: delete {record.path}"
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
    other = owner.read_owner(name)
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
