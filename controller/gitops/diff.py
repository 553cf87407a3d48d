"""The data-plane difference between two sets of plans (``vpnfleet diff --from --to``).

Host by host, through the one plan differ both sides share
(:func:`vpnfleet.protos.plan_diff.plan_changes`), so a change reads here as the agents
report it to ``apply --diff``. A host only in the new plans is added (everything in its
plan is), one only in the old plans is removed, and one whose plans differ only in
generation, content hash or source revision is unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from vpnfleet.protos.plan_diff import ChangeKind, PlanChange, plan_changes

from ..planner.model import NodePlan
from ..reports.results import ChangeLine
from ..transport import convert


@dataclass(frozen=True, slots=True)
class HostDiff:
    host: str
    kind: ChangeKind
    changes: tuple[ChangeLine, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "kind": self.kind.value,
            "changes": [c.to_json() for c in self.changes],
        }


@dataclass(slots=True)
class FleetDiff:
    hosts: list[HostDiff] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    from_revision: str = ""
    to_revision: str = ""

    @property
    def changed(self) -> bool:
        return bool(self.hosts)

    def to_json(self) -> dict[str, Any]:
        return {
            "from": self.from_revision,
            "to": self.to_revision,
            "hosts": [h.to_json() for h in self.hosts],
            "unchanged": list(self.unchanged),
        }


def change_line(change: PlanChange) -> ChangeLine:
    """A plan change as the controller prints it (the agents' answers read the same)."""
    return ChangeLine(change.section.value, change.name, change.kind.value, change.details)


def host_changes(old: NodePlan | None, new: NodePlan) -> list[ChangeLine]:
    """Every data-plane change from ``old`` to ``new`` for one host (``old`` None: the
    host is new)."""
    before = None if old is None else convert.plan_to_proto(old)
    return [change_line(c) for c in plan_changes(before, convert.plan_to_proto(new))]


def diff_plans(
    old: Mapping[str, NodePlan],
    new: Mapping[str, NodePlan],
    *,
    from_revision: str = "",
    to_revision: str = "",
) -> FleetDiff:
    """Per host, what changes between the ``old`` and the ``new`` plans."""
    result = FleetDiff(from_revision=from_revision, to_revision=to_revision)
    for host in sorted(set(old) | set(new)):
        a, b = old.get(host), new.get(host)
        if b is None:
            result.hosts.append(HostDiff(host, ChangeKind.REMOVED))
        elif a is None:
            result.hosts.append(HostDiff(host, ChangeKind.ADDED, tuple(host_changes(None, b))))
        elif changes := host_changes(a, b):
            result.hosts.append(HostDiff(host, ChangeKind.CHANGED, tuple(changes)))
        else:
            result.unchanged.append(host)
    return result
