"""IP forwarding, where the plan makes this host a gateway.

A host whose tunnel-mode SPD entries protect only its own addresses sends and receives
the protected traffic itself; one that protects a subnet behind it (a site's LAN, or a
hub relaying between spokes) forwards packets between that subnet and the TUN device,
which the kernel does only with ``net.ipv4.ip_forward`` (IPv4) or
``net.ipv6.conf.all.forwarding`` (IPv6) on. :func:`forwarding_families` says which
families a plan needs; :class:`HostForwarding` turns on only those, and only when they
are off.

Before it changes one, it writes the value it found to a record in the agent's state
dir (``forwarding.json``), once: an agent that restarts finds the record and keeps it,
so the value put back is the one from before the first agent. A plan that stops needing
a family puts that value back at once; stopping the agent does not (the routes, rules
and kill switch stay too), and :meth:`HostForwarding.restore` (``vpnfleet-agent cleanup``)
puts back every value recorded. A plan that needs no forwarding leaves the sysctls
alone. Note that the kernel copies ``net.ipv4.ip_forward`` and
``net.ipv6.conf.all.forwarding`` to every interface's ``forwarding`` when they are
written, so per-interface values set by hand do not survive either change.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Protocol

from vpnfleet.protos.files import write_atomically

from ..plan import AgentPlan, Mode, SpdAction
from ..sink import Problem, ProblemKind

log = logging.getLogger(__name__)

FORWARDING_SYSCTLS = {4: "net.ipv4.ip_forward", 6: "net.ipv6.conf.all.forwarding"}
"""The sysctl that turns forwarding on, per IP version."""
FORWARDING_RECORD = "forwarding.json"
"""In the state dir: ``{sysctl name: value before the agent changed it}``."""
ON = "1"


class SysctlValue(Protocol):
    """What forwarding needs of :class:`~vpnfleet.agent.io.sysctl.Sysctl`."""

    name: str

    def read(self) -> str: ...

    def write(self, value: str) -> None: ...


def forwarding_families(plan: AgentPlan) -> dict[int, str]:
    """The IP versions whose traffic this host forwards under ``plan``, each with the
    first local selector that makes it so: a PROTECT entry of a tunnel-mode peer whose
    local side is more than one of this host's own addresses (a subnet behind it, or
    another site's traffic it relays)."""
    tunnel = {p.name for p in plan.peers if p.mode is Mode.TUNNEL}
    own = set(plan.addresses)
    found: dict[int, str] = {}
    for entry in plan.spd:
        if entry.action is not SpdAction.PROTECT or entry.peer not in tunnel:
            continue
        local = entry.selector.local_prefix
        if local.num_addresses == 1 and local.network_address in own:
            continue
        found.setdefault(local.version, str(local))
    return found


class ForwardingRecord:
    """The values found before the agent changed them (``forwarding.json``); without a
    state dir (``path`` None) they are kept in memory only."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._memory: dict[str, str] = {}

    def load(self) -> dict[str, str]:
        if self.path is None:
            return dict(self._memory)
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise OSError(f"cannot read {self.path}: {exc}") from None
        if not isinstance(data, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in data.items()
        ):
            raise OSError(f"{self.path} is not a record of sysctl values; remove it")
        return data

    def save(self, values: Mapping[str, str]) -> None:
        if self.path is None:
            self._memory = dict(values)
        elif values:
            write_atomically(self.path, (json.dumps(dict(values), sort_keys=True) + "\n").encode())
        else:
            self.path.unlink(missing_ok=True)


Report = Callable[[str], None]


class HostForwarding:
    """Keeps the forwarding sysctls as the plan in force needs them (see the module's
    docstring); ``report`` is told of every change (the agent's event stream)."""

    def __init__(
        self,
        sysctls: Mapping[int, SysctlValue],
        record: ForwardingRecord,
        report: Report | None = None,
    ) -> None:
        self.sysctls = sysctls
        self.record = record
        self.report = report or log.info
        """Told of every change (the engine publishes it as a ``forwarding`` event)."""

    async def apply(self, plan: AgentPlan) -> list[Problem]:
        """Turn on what ``plan`` needs, put back what it no longer needs; return what
        failed as problems (kind PLAN: the gateway part of the plan is not in place)."""
        needed = forwarding_families(plan)
        problems: list[Problem] = []
        try:
            before = self.record.load()
        except OSError as exc:
            return [Problem(ProblemKind.PLAN, FORWARDING_RECORD, str(exc))]
        for version, sysctl in sorted(self.sysctls.items()):
            try:
                if version in needed:
                    self._turn_on(sysctl, before, needed[version])
                elif sysctl.name in before:
                    self._put_back(sysctl, before, "the plan no longer needs it")
            except OSError as exc:
                doing = "turn on" if version in needed else "put back"
                message = f"cannot {doing} {sysctl.name}: {exc}"
                if version in needed:
                    message += f" (traffic of {needed[version]} is not forwarded)"
                log.error("%s", message)
                problems.append(Problem(ProblemKind.PLAN, sysctl.name, message))
        return problems

    def _turn_on(self, sysctl: SysctlValue, before: dict[str, str], why: str) -> None:
        current = sysctl.read()
        if current == ON:
            return  # on already: ours from a previous run (recorded), or the host's
        if sysctl.name not in before:
            before[sysctl.name] = current
            self.record.save(before)  # first, so that a crash cannot lose the old value
            if self.record.path is None:
                log.warning(
                    "%s was %s: without a state dir this is not recorded, and "
                    "vpnfleet-agent cleanup cannot put it back",
                    sysctl.name,
                    current,
                )
        sysctl.write(ON)
        self._tell(f"{sysctl.name}={ON} (was {current}): the plan protects {why} behind this host")

    def _put_back(self, sysctl: SysctlValue, before: dict[str, str], why: str) -> None:
        value = before[sysctl.name]
        sysctl.write(value)
        del before[sysctl.name]
        self.record.save(before)
        self._tell(f"{sysctl.name}={value} put back: {why}")

    def restore(self) -> list[str]:
        """Put back every recorded value (decommission); returns what could not be."""
        try:
            before = self.record.load()
        except OSError as exc:
            return [str(exc)]
        left = []
        for sysctl in self.sysctls.values():
            if sysctl.name in before:
                try:
                    self._put_back(sysctl, before, "decommissioned")
                except OSError as exc:
                    left.append(f"{sysctl.name}: cannot put back {before[sysctl.name]}: {exc}")
        return left

    def _tell(self, message: str) -> None:
        self.report(message)
