"""``vpnfleet rotate psk``: move every pair of the fleet to a new PSK epoch, hitlessly.

Both ends of a pair derive its PSK from the fleet master secret and the pair's epoch
(planner.credentials), so a new ``psk_epoch`` changes both ends' plans. An agent given a
changed peer keeps the old IKE SA and its child in force until a new IKE SA is up
(make-before-break, agent engine ``put_in_force``); only the pair's initiator starts
that new SA. Hence the staging: a pair's responder gets the new key first (it merely
starts answering with it, its old SA still carrying traffic), then its initiator, whose
new IKE_AUTH (RFC 7296 section 2.15) then meets a responder that already holds the same
key. Hosts are put in waves by that rule (a host comes after every peer it initiates
to); a set of hosts that initiate to each other in a ring cannot be ordered and shares
one wave, where an initiator may meet the old key once: its failed attempt leaves the
old SA in force and it retries.

After each wave the rotation waits until every tunnel a wave host initiates is
re-established (a newer IKE SA, child installed), so a failure stops the run at the
wave that caused it. Each agent's apply result is its acknowledgement; the journal
``STATE/rotation/psk.json`` records the target epoch and the acknowledged hosts after
every wave, so a run that was interrupted continues where it stopped.

The new epoch is written to the inventory (``group_vars/all.yaml``, key ``psk_epoch``)
before anything is pushed, so that a later ``apply`` compiles the same keys; commit it.
"""

from __future__ import annotations

import enum
import json
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from vpnfleet.protos.files import make_private_directory, mode_of, write_atomically

from ..delivery.health import AUTH_FAILED, Clock, FleetAccess
from ..fleet.operations import CompiledFleet
from ..planner.model import AuthMethod, NodePlan
from ..reports.results import EXIT_FAILED, AggregateResult
from ..reports.status import FleetStatus
from ..statedir.state import StateDir

JOURNAL_VERSION = 1
Report = Callable[[str], None]
J = TypeVar("J")


class RotationError(Exception):
    """A rotation that cannot start or continue; the message says why and what to do."""


class RotationKind(enum.StrEnum):
    """What a rotation replaces; the value names its journal and its ``rotate`` command."""

    PSK = "psk"
    CERTS = "certs"
    CA = "ca"


def journal_path(state: StateDir, kind: RotationKind) -> Path:
    """Where the rotation of ``kind`` keeps its journal."""
    return state.root / "rotation" / f"{kind}.json"


def load_journal(cls: type[J], path: Path) -> J | None:
    """A journal dataclass from ``path`` (None when there is none); a file of another
    version or shape is refused with its path named, never guessed at."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise RotationError(f"{path}: unreadable rotation journal ({exc})") from None
    if not isinstance(data, dict) or data.get("version") != JOURNAL_VERSION:
        raise RotationError(f"{path}: not a version {JOURNAL_VERSION} rotation journal")
    try:
        return cls(**data)
    except TypeError as exc:
        raise RotationError(f"{path}: malformed rotation journal ({exc})") from None


def save_journal(journal: Any, path: Path) -> None:
    """Write a journal dataclass atomically (private file: it names the fleet's hosts)."""
    make_private_directory(path.parent)
    write_atomically(path, json.dumps(asdict(journal), indent=1).encode())


@dataclass(slots=True)
class RotationJournal:
    """What a PSK rotation has done so far (``STATE/rotation/psk.json``)."""

    epoch: int
    from_epoch: int
    waves: list[list[str]]
    done: list[str] = field(default_factory=list)
    started_at: float = field(default_factory=time.time)
    finished_at: float = 0.0
    version: int = JOURNAL_VERSION

    @staticmethod
    def path(state: StateDir) -> Path:
        return journal_path(state, RotationKind.PSK)

    @classmethod
    def load(cls, state: StateDir) -> RotationJournal | None:
        return load_journal(cls, cls.path(state))

    def save(self, state: StateDir) -> None:
        save_journal(self, self.path(state))

    @property
    def finished(self) -> bool:
        return self.finished_at > 0


def inventory_epoch(fleet: CompiledFleet) -> int:
    """The largest ``psk_epoch`` any host of the inventory has."""
    inv = fleet.inventory
    return max((int(inv.resolve(h).vars.get("psk_epoch") or 0) for h in inv.hosts), default=0)


_EPOCH_LINE = re.compile(r"^psk_epoch\s*:")


def write_inventory_epoch(inventory_path: Path, epoch: int) -> Path:
    """Set ``psk_epoch: EPOCH`` in group_vars/all.yaml (other lines kept as they are)."""
    path = _inventory_file(inventory_path)
    group_vars = path.parent
    lines = path.read_text().splitlines() if path.exists() else []
    new = f"psk_epoch: {epoch}"
    if any(_EPOCH_LINE.match(ln) for ln in lines):
        lines = [new if _EPOCH_LINE.match(ln) else ln for ln in lines]
    else:
        lines.append(new)
    group_vars.mkdir(exist_ok=True)
    write_atomically(path, ("\n".join(lines) + "\n").encode(), mode_of(path))
    return path


def _inventory_file(inventory_path: Path) -> Path:
    root = inventory_path if inventory_path.is_dir() else inventory_path.parent
    for name in ("all.yaml", "all.yml"):
        if (root / "group_vars" / name).is_file():
            return root / "group_vars" / name
    return root / "group_vars" / "all.yaml"


def psk_pairs(plans: Mapping[str, NodePlan]) -> dict[tuple[str, str], int]:
    """(host, peer) -> PSK epoch, for every managed PSK peer of the plans."""
    return {
        (h, p.name): p.auth.epoch
        for h, plan in plans.items()
        for p in plan.peers
        if p.managed and p.auth is not None and p.auth.method is AuthMethod.PSK
    }


def staging_waves(plans: Mapping[str, NodePlan], hosts: Iterable[str]) -> list[list[str]]:
    """Hosts in waves: each host after every (managed, PSK) peer it initiates to.

    Hosts in an initiator ring cannot be ordered; they share the last wave.
    """
    order = list(hosts)
    chosen = set(order)
    after: dict[str, set[str]] = {h: set() for h in order}  # host -> peers that go first
    for h in order:
        for p in plans[h].peers:
            if p.initiator and p.name in chosen and p.managed and p.auth.method is AuthMethod.PSK:
                after[h].add(p.name)
    waves: list[list[str]] = []
    placed: set[str] = set()
    while len(placed) < len(order):
        wave = [h for h in order if h not in placed and after[h] <= placed]
        if not wave:
            wave = [h for h in order if h not in placed]
        waves.append(wave)
        placed.update(wave)
    return waves


def ike_times(status: FleetStatus) -> dict[tuple[str, str], float]:
    """(host, peer) -> established_at of the IKE SA in force, for established ones."""
    out = {}
    for h in status.hosts:
        if h.observed is None:
            continue
        for ike in h.observed.ike_sas:
            if ike.state == "established" and any(c.state == "installed" for c in ike.children):
                out[(h.host, ike.peer)] = ike.established_at
    return out


async def wait_reestablished(
    access: FleetAccess,
    part: CompiledFleet,
    tunnels: Mapping[tuple[str, str], float],
    timeout: float,
    clock: Clock,
    report: Report | None = None,
) -> str:
    """Poll until each (host, peer) of ``tunnels`` has an IKE SA newer than the time
    given (and a child installed): '' then, else why not."""
    deadline = clock.now() + timeout
    while True:
        status = await access.observe(part)
        times = ike_times(status)
        pending = [f"{h}->{p}" for (h, p), t in tunnels.items() if times.get((h, p), 0.0) <= t]
        if not pending:
            return ""
        bad = [
            f"{h.host}: peer {ike.peer}: {ike.last_error}"
            for h in status.hosts
            if h.observed is not None
            for ike in h.observed.ike_sas
            if (h.host, ike.peer) in tunnels and AUTH_FAILED in ike.last_error
        ]
        if clock.now() >= deadline:
            why = f"not re-established after {timeout:g}s: {', '.join(pending)}"
            return why + (" (" + "; ".join(bad) + ")" if bad else "")
        if report:
            report(f"  waiting for {len(pending)} tunnel(s) to re-establish: {pending[0]} …")
        await clock.sleep(0.2)


@dataclass(slots=True)
class RotationResult:
    """The outcome of one rotation run, whatever its kind."""

    epoch: int = 0  # psk only
    result: AggregateResult = field(default_factory=AggregateResult)
    waves: list[list[str]] = field(default_factory=list)
    resumed: bool = False
    skipped: list[str] = field(default_factory=list)  # acknowledged by an earlier run
    error: str = ""
    seconds: float = 0.0
    kind: RotationKind = RotationKind.PSK
    extra: dict[str, Any] = field(default_factory=dict)  # kind-specific JSON fields

    @property
    def exit_code(self) -> int:
        return EXIT_FAILED if self.error else self.result.exit_code

    def to_json(self) -> dict[str, Any]:
        data = self.result.to_json()
        data.update(kind=self.kind)
        if self.kind is RotationKind.PSK:
            data.update(epoch=self.epoch, waves=self.waves)
        data.update(self.extra)
        data.update(
            resumed=self.resumed,
            skipped=self.skipped,
            error=self.error,
            seconds=round(self.seconds, 3),
            exit_code=self.exit_code,
        )
        return data


def prepare_psk_rotation(
    inventory_path: Path,
    state: StateDir,
    compile_fleet: Callable[[], CompiledFleet],
    epoch: int | None = None,
) -> tuple[RotationJournal, CompiledFleet, bool]:
    """Find or start the journal and compile the plans at its epoch.

    Returns the journal, the new plans and whether an unfinished rotation is resumed.
    An unfinished journal is resumed (an ``epoch`` other than its own is refused);
    otherwise the inventory gets ``psk_epoch`` = ``epoch`` (default: one more than its
    largest) before the new plans are compiled.
    """
    journal = RotationJournal.load(state)
    if journal is not None and not journal.finished:
        if epoch is not None and epoch != journal.epoch:
            raise RotationError(
                f"an unfinished rotation to epoch {journal.epoch} is in "
                f"{RotationJournal.path(state)}: run it to the end (without --epoch) first"
            )
        fleet = compile_fleet()
        have = inventory_epoch(fleet)
        if have != journal.epoch:
            write_inventory_epoch(inventory_path, journal.epoch)
            fleet = compile_fleet()
        _check_epochs(fleet, journal.epoch)
        return journal, fleet, True
    current = compile_fleet()
    old = inventory_epoch(current)
    target = old + 1 if epoch is None else epoch
    if target <= old:
        raise RotationError(
            f"--epoch {target} is not above the inventory's psk_epoch {old}: "
            "a rotation only moves forward (an old epoch's keys may have leaked)"
        )
    path = _inventory_file(inventory_path)
    saved = path.read_bytes() if path.exists() else None
    mode = mode_of(path)
    write_inventory_epoch(inventory_path, target)
    try:
        fleet = compile_fleet()
        _check_epochs(fleet, target)
    except BaseException:
        # Nothing was pushed: leave the inventory as it was.
        if saved is None:
            path.unlink(missing_ok=True)
        else:
            write_atomically(path, saved, mode)
        raise
    journal = RotationJournal(target, old, staging_waves(fleet.plans, fleet.selected))
    journal.save(state)
    return journal, fleet, False


def _check_epochs(fleet: CompiledFleet, target: int) -> None:
    stale = sorted(
        f"{h}->{p} (epoch {e})" for (h, p), e in psk_pairs(fleet.plans).items() if e < target
    )
    if stale:
        raise RotationError(
            f"pairs still below epoch {target} after setting it in group_vars/all "
            f"(a host_vars or group psk_epoch overrides it): {', '.join(stale[:5])}"
        )


async def run_psk_rotation(
    journal: RotationJournal,
    fleet: CompiledFleet,
    state: StateDir,
    access: FleetAccess,
    *,
    resumed: bool = False,
    timeout: float = 60.0,
    clock: Clock | None = None,
    report: Report | None = None,
) -> RotationResult:
    """Push the new plans wave by wave, waiting for each wave's tunnels to come back."""
    clock = clock or Clock()
    started = clock.now()
    out = RotationResult(journal.epoch, waves=journal.waves, resumed=resumed)
    done = set(journal.done)
    out.skipped = [h for h in fleet.selected if h in done]
    if resumed and report:
        report(f"resuming rotation to epoch {journal.epoch}: {len(done)} host(s) already done")
    total = sum(len(w) for w in journal.waves)
    pairs = psk_pairs(fleet.plans)
    for index, wave in enumerate(journal.waves, 1):
        todo = [h for h in wave if h not in done]
        if not todo:
            continue
        unknown = [h for h in todo if h not in fleet.plans]
        if unknown:
            out.error = f"hosts of the journal no longer in the inventory: {', '.join(unknown)}"
            break
        if report:
            report(f"wave {index}/{len(journal.waves)}: {', '.join(todo)}")
        # Tunnels this wave re-establishes: those its hosts initiate to peers that hold
        # the new key already (earlier waves, or this one).
        ready = done | set(todo)
        tunnels_of = [
            (h, p.name)
            for h in todo
            for p in fleet.plans[h].peers
            if p.initiator and p.name in ready and (h, p.name) in pairs
        ]
        part = fleet.subset(todo)
        before = ike_times(await access.observe(part))
        tunnels = {t: before[t] for t in tunnels_of if t in before}
        pushed = await access.push(part)
        out.result.extend(pushed)
        acked = [r.host for r in pushed if not (r.failed or r.unreachable)]
        done.update(acked)
        journal.done = [h for w in journal.waves for h in w if h in done]
        journal.save(state)
        bad = [
            f"{r.host}: {r.outcome.value} {r.error}".rstrip() for r in pushed if r.host not in acked
        ]
        if bad:
            out.error = "no acknowledgement from " + "; ".join(bad)
            break
        why = await wait_reestablished(access, part, tunnels, timeout, clock, report)
        if why:
            out.error = f"wave {index}: {why}"
            break
        if report:
            report(f"  acknowledged: {len(journal.done)}/{total} host(s)")
    if not out.error:
        journal.finished_at = time.time()
        journal.save(state)
        if report:
            report(f"rotation to PSK epoch {journal.epoch} done")
    out.seconds = clock.now() - started
    return out
