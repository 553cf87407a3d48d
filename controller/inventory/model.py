"""The inventory model: Defaults, Group and Host, and an explicit resolve().

Precedence, lowest to highest, as in Ansible:

1. built-in defaults (:class:`Defaults`);
2. groups, ordered by depth (``all`` is 0, its children 1, …; a group's depth is its
   longest path from ``all``), then ``ansible_group_priority`` as the inventory source
   sets it in the group's vars (higher wins; in group_vars/ it is a plain variable, as
   in ansible-core), then name
   (later in alphabetical order wins, as Ansible sorts) — first every group's inline
   ``vars:`` from hosts.yaml in that order, then every group's ``group_vars/`` files in
   that order (Ansible's VARIABLE_PRECEDENCE: groups_inventory before
   groups_plugins_inventory), so ``group_vars/all.yaml`` beats a child group's inline
   vars, exactly as in Ansible;
3. the host: its inline vars from hosts.yaml (merged over every place it is listed, the
   later listing winning) and then its ``host_vars/`` files.

A later value replaces an earlier one whole: dicts and lists are never merged
(Ansible's default ``hash_behaviour=replace``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from . import limit
from .errors import InventoryError, InventoryWarning, Mark, did_you_mean
from .schema import DEFAULT_MARK, Var, host_defaults
from .source import MarkedDict

ALL = "all"
UNGROUPED = "ungrouped"


@dataclass(frozen=True, slots=True)
class Defaults:
    """Values every host gets when no inventory file sets them (the variable table)."""

    def for_host(self, host: str) -> dict[str, Any]:
        return host_defaults(host)


@dataclass(frozen=True, slots=True)
class Group:
    """A group as declared: direct members, its own vars, and its place in the tree."""

    name: str
    parents: tuple[str, ...] = ()
    children: tuple[str, ...] = ()
    hosts: tuple[str, ...] = ()  # direct members only, in file order
    vars: Mapping[str, Var] = field(default_factory=dict)  # inline, from hosts.yaml
    file_vars: Mapping[str, Var] = field(default_factory=dict)  # from group_vars/
    depth: int = 0
    priority: int = 1  # ansible_group_priority: breaks ties between groups of one depth
    mark: Mark | None = None

    def precedence_key(self) -> tuple[int, int, str]:
        return (self.depth, self.priority, self.name)


@dataclass(frozen=True, slots=True)
class Host:
    """A host as declared: the groups it is listed in directly and its own vars."""

    name: str
    groups: tuple[str, ...] = ()  # direct groups, in file order
    vars: Mapping[str, Var] = field(default_factory=dict)  # inline, from hosts.yaml
    file_vars: Mapping[str, Var] = field(default_factory=dict)  # from host_vars/
    mark: Mark | None = None


@dataclass(frozen=True, slots=True)
class ResolvedHost:
    """A host's variables after precedence: every variable of the table is present."""

    name: str
    groups: tuple[str, ...]  # every group incl. ancestors and "all", lowest precedence first
    vars: Mapping[str, Any]
    origins: Mapping[str, Mark]  # DEFAULT_MARK for values no file set
    mark: Mark | None = None  # where the host is first listed
    written: Mapping[str, Any] = field(default_factory=dict)
    """The variables a file sets, as written there (``4h`` where ``vars`` has 14400), in
    Ansible's order: what ``inventory --list`` shows."""


def ancestors(groups: Mapping[str, Group], names: Iterable[str]) -> set[str]:
    """The given groups and every group above them (the tree must have no cycle)."""
    seen: set[str] = set()
    stack = list(names)
    while stack:
        name = stack.pop()
        if name in seen or name not in groups:
            continue
        seen.add(name)
        stack.extend(groups[name].parents)
    return seen


def resolve(host: Host, groups: Mapping[str, Group], defaults: Defaults) -> ResolvedHost:
    """Merge one host's variables by precedence (see the module docstring)."""
    member_of = sorted(
        (groups[name] for name in ancestors(groups, host.groups)),
        key=Group.precedence_key,
    )
    merged: dict[str, Var] = {}
    for group in member_of:
        merged.update(group.vars)
    for group in member_of:
        merged.update(group.file_vars)
    merged.update(host.vars)
    merged.update(host.file_vars)
    # Keys in Ansible's order (each where a layer first sets it), then the defaults.
    values = {name: var.value for name, var in merged.items()}
    origins = {name: var.origin for name, var in merged.items()}
    written = {
        name: var.value if var.written is None else var.written for name, var in merged.items()
    }
    for name, value in defaults.for_host(host.name).items():
        if name not in values:
            values[name] = value
            origins[name] = DEFAULT_MARK
    return ResolvedHost(
        name=host.name,
        groups=tuple(g.name for g in member_of),
        vars=MappingProxyType(values),
        origins=MappingProxyType(origins),
        mark=host.mark,
        written=MappingProxyType(written),
    )


@dataclass(frozen=True, slots=True)
class Inventory:
    """A loaded, validated inventory; immutable. Build with ``load_inventory()``."""

    path: Path
    hosts: Mapping[str, Host]  # in file order
    groups: Mapping[str, Group]  # includes "all" and "ungrouped"
    topology: MarkedDict | None = None
    defaults: Defaults = field(default_factory=Defaults)
    warnings: tuple[InventoryWarning, ...] = ()  # read as Ansible reads it, likely unmeant
    _resolved: Mapping[str, ResolvedHost] = field(default_factory=dict, repr=False)

    @classmethod
    def build(
        cls,
        path: Path,
        hosts: Mapping[str, Host],
        groups: Mapping[str, Group],
        topology: MarkedDict | None = None,
        defaults: Defaults | None = None,
        warnings: Iterable[InventoryWarning] = (),
    ) -> Inventory:
        defaults = defaults or Defaults()
        resolved = {name: resolve(host, groups, defaults) for name, host in hosts.items()}
        return cls(
            path=path,
            hosts=MappingProxyType(dict(hosts)),
            groups=MappingProxyType(dict(groups)),
            topology=topology,
            defaults=defaults,
            warnings=tuple(warnings),
            _resolved=MappingProxyType(resolved),
        )

    def _unknown_host(self, name: str) -> InventoryError:
        return InventoryError(f"no host named {name!r}{did_you_mean(name, self.hosts)}")

    def resolve(self, host: str) -> ResolvedHost:
        """The host's variables merged by precedence, validated and with defaults."""
        try:
            return self._resolved[host]
        except KeyError:
            raise self._unknown_host(host) from None

    def group_hosts(self, group: str) -> list[str]:
        """Hosts of a group, including those of its descendants, in inventory order."""
        if group not in self.groups:
            raise InventoryError(f"no group named {group!r}{did_you_mean(group, self.groups)}")
        return [h for h in self.hosts if group in self._resolved[h].groups]

    def hosts_matching(self, pattern: str) -> list[str]:
        """Hosts selected by an Ansible ``--limit`` pattern, in inventory order."""
        return limit.match_hosts(self, pattern)

    def subset(self, names: Iterable[str]) -> Inventory:
        """A new inventory holding only ``names``; groups keep their shape, minus hosts."""
        keep = set(names)
        for name in keep:
            if name not in self.hosts:
                raise self._unknown_host(name)
        groups = {
            name: Group(
                name=g.name,
                parents=g.parents,
                children=g.children,
                hosts=tuple(h for h in g.hosts if h in keep),
                vars=g.vars,
                file_vars=g.file_vars,
                depth=g.depth,
                priority=g.priority,
                mark=g.mark,
            )
            for name, g in self.groups.items()
        }
        return Inventory(
            path=self.path,
            hosts=MappingProxyType({n: h for n, h in self.hosts.items() if n in keep}),
            groups=MappingProxyType(groups),
            topology=self.topology,
            defaults=self.defaults,
            warnings=self.warnings,
            _resolved=MappingProxyType({n: r for n, r in self._resolved.items() if n in keep}),
        )
