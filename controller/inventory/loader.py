"""Read an inventory directory, validate all of it, and build the model.

Layout (Ansible's): one inventory source — ``hosts.yaml`` or ``hosts.yml`` (``all:`` with
``hosts:``, ``children:``, ``vars:``), or ``hosts.ini`` or ``hosts`` in Ansible's INI
format (see :mod:`.ini`); host entries may be ranges and carry a port (see
:mod:`.hostpattern`). Then ``group_vars/<group>`` and ``host_vars/<host>`` found as
ansible-core finds them: the first of ``<name>`` (a file, or a directory read
recursively in sorted order), ``<name>.yml``, ``<name>.yaml``, ``<name>.json``; inside a
directory, files with one of those extensions or none, skipping hidden names, names
ending in ``~`` and subdirectories with an extension. Vars files for a name the
inventory does not have are ignored, as Ansible ignores them (a warning when the name
is close to one it has). An optional ``topology.yaml`` is kept raw (with positions)
for the planner.

``ansible_group_priority`` orders groups only where the inventory source sets it in a
group's vars; written in a vars file or for a host it is an ordinary variable, as in
ansible-core.

Nothing is built from a bad inventory: every problem found is collected and raised
together as :class:`InventoryErrors`, each with file:line:column and what was expected.
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
import re
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vpnfleet.protos.identity import CONTROLLER_NAME, is_controller_name

from .consistency import check_resolved
from .errors import (
    InventoryError,
    InventoryErrors,
    InventoryWarning,
    Mark,
    did_you_mean,
    misspelling_of,
)
from .hostpattern import HostPatternError, expand_host_entry
from .ini import load_ini_text
from .model import ALL, UNGROUPED, Defaults, Group, Host, Inventory
from .schema import DEFAULT_MARK, GROUP_PRIORITY, Var, check_group_priority, check_vars
from .source import (
    FileOpener,
    MarkedDict,
    MarkedInt,
    VaultText,
    key_mark,
    load_yaml_file,
    mark_of,
    read_text,
)
from .vault import Vault, VaultError

log = logging.getLogger(__name__)

YAML_HOSTS_FILES = ("hosts.yaml", "hosts.yml")
INI_HOSTS_FILES = ("hosts.ini", "hosts")
HOSTS_FILES = (*YAML_HOSTS_FILES, *INI_HOSTS_FILES)
YAML_SOURCE_SUFFIXES = (".yaml", ".yml", ".json")  # other names are read as INI, as Ansible
TOPOLOGY_FILE = "topology.yaml"
VARS_SUFFIXES = ("", ".yml", ".yaml", ".json")  # ansible-core's order of look-up
GROUP_KEYS = ("hosts", "children", "vars")
PORT_VAR = "ansible_port"

# Names end up in --limit patterns (":,&!~*?[" are pattern syntax) and in IKE identities.
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
_NAME_RULE = "letters, digits, '_', '.' and '-' (not starting with '.' or '-')"


def _type_name(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, str):
        return f"the string {str(value)!r}"
    return f"the value {value!r}"


@dataclass
class _GroupDraft:
    name: str
    mark: Mark | None
    parents: list[str] = field(default_factory=list)
    children: dict[str, Mark | None] = field(default_factory=dict)  # child -> edge mark
    hosts: list[str] = field(default_factory=list)
    var_maps: list[dict[str, Any]] = field(default_factory=list)
    priority: int = 1  # ansible_group_priority, from the inventory source only


@dataclass
class _HostDraft:
    name: str
    mark: Mark | None
    groups: list[str] = field(default_factory=list)
    var_maps: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class _Draft:
    """What hosts.yaml declares, before validation of variables."""

    hosts_file: Path
    groups: dict[str, _GroupDraft] = field(default_factory=dict)
    hosts: dict[str, _HostDraft] = field(default_factory=dict)
    errors: list[InventoryError] = field(default_factory=list)
    warnings: list[InventoryWarning] = field(default_factory=list)
    # Hosts whose address may be hidden by another error: no "has no address" for them.
    address_unclear: set[str] = field(default_factory=set)
    # False when hosts.yaml could not be read as a whole: then names in group_vars/ and
    # host_vars/ cannot be checked against it without flooding the report.
    readable: bool = True
    vault: FileOpener | None = None  # opens files encrypted whole with ansible-vault

    def group(self, name: str, mark: Mark | None) -> _GroupDraft:
        if name not in self.groups:
            self.groups[name] = _GroupDraft(name, mark)
        return self.groups[name]

    def check_name(self, kind: str, name: str, mark: Mark | None) -> bool:
        if _NAME.fullmatch(name):
            return True
        self.errors.append(InventoryError(f"{kind} name {name!r} may only use {_NAME_RULE}", mark))
        return False

    def parse_group(self, name: str, entry: Any, mark: Mark | None) -> None:
        group = self.group(name, mark)
        if entry is None:
            return
        if not isinstance(entry, dict):
            self.errors.append(
                InventoryError(
                    f"group {name!r}: expected a mapping with hosts, children or vars, "
                    f"got {_type_name(entry)}",
                    mark_of(entry) or mark,
                )
            )
            return
        for key, value in entry.items():
            where = key_mark(entry, key)
            if key not in GROUP_KEYS:
                hint = did_you_mean(key, GROUP_KEYS)
                extra = " (hosts must be listed under 'hosts:')" if not hint else ""
                self.errors.append(
                    InventoryError(
                        f"group {name!r}: unknown key {key!r}, expected hosts, children or "
                        f"vars{hint}{extra}",
                        where,
                    )
                )
                continue
            if value is None:
                continue
            if isinstance(value, str) and key != "vars":
                value = {value: None}  # one name, as ansible-core allows
            if not isinstance(value, dict):
                what = {"hosts": "host names", "children": "group names", "vars": "variables"}
                hint = ""
                if isinstance(value, list) and key != "vars":
                    hint = (
                        f" (ansible-core refuses a list here too: write each name as a key "
                        f"ending in ':', e.g. '{key}: {{a1: , a2: }}')"
                    )
                self.errors.append(
                    InventoryError(
                        f"group {name!r}: '{key}' must be a mapping of {what[key]}, "
                        f"got {_type_name(value)}{hint}",
                        mark_of(value) or where,
                    )
                )
                continue
            if key == "vars":
                self.take_priority(group, value)
                group.var_maps.append(value)
            elif key == "hosts":
                for entry_text, host_vars in value.items():
                    self.parse_host_entry(group, entry_text, host_vars, key_mark(value, entry_text))
            else:
                for child, child_entry in value.items():
                    child_mark = key_mark(value, child)
                    if not self.check_name("group", child, child_mark):
                        continue
                    self.parse_group(child, child_entry, child_mark)
                    group.children.setdefault(child, child_mark)
                    if name not in self.groups[child].parents:
                        self.groups[child].parents.append(name)

    def take_priority(self, group: _GroupDraft, variables: dict[str, Any]) -> None:
        """``ansible_group_priority`` in a group's vars in the inventory source orders the
        group and is not a variable (ansible-core's Group.set_variable)."""
        if GROUP_PRIORITY not in variables:
            return
        where = key_mark(variables, GROUP_PRIORITY)
        value = variables.pop(GROUP_PRIORITY)
        try:
            group.priority = check_group_priority(value)
        except ValueError as exc:
            self.errors.append(
                InventoryError(f"group {group.name!r}: {GROUP_PRIORITY}: {exc}", where)
            )

    def parse_host_entry(
        self, group: _GroupDraft, text: str, host_vars: Any, mark: Mark | None
    ) -> None:
        """One ``hosts:`` key (or INI host line): a name, a range, either with ``:port``."""
        try:
            entry = expand_host_entry(text)
        except HostPatternError as exc:
            self.errors.append(InventoryError(f"host {text!r}: {exc}", mark))
            return
        for name in entry.names:
            self.parse_host(group, name, host_vars, mark, entry.port)

    def parse_host(
        self,
        group: _GroupDraft,
        name: str,
        host_vars: Any,
        mark: Mark | None,
        port: int | None = None,
    ) -> None:
        if not self.check_name("host", name, mark):
            return
        host = self.hosts.get(name)
        if host is None:
            host = self.hosts[name] = _HostDraft(name, mark)
            if port is not None:
                # ansible-core sets the port of a host:port entry where the host is first
                # listed; variables written for the host beside it or later win over it.
                host.var_maps.append(_port_var(port, mark))
        if group.name not in host.groups:
            host.groups.append(group.name)
            group.hosts.append(name)
        if host_vars is None:
            return
        if not isinstance(host_vars, dict):
            self.address_unclear.add(name)
            self.errors.append(
                InventoryError(
                    f"host {name!r}: expected a mapping of variables, got {_type_name(host_vars)}",
                    mark_of(host_vars) or mark,
                )
            )
            return
        host.var_maps.append(host_vars)


def _port_var(port: int, mark: Mark | None) -> MarkedDict:
    """``ansible_port`` as a host:port entry sets it, placed at the entry."""
    out = MarkedDict()
    value = MarkedInt(port)
    out.mark = value.mark = mark or DEFAULT_MARK
    out[PORT_VAR] = value
    out.key_marks = {PORT_VAR: out.mark}
    return out


def _parse_hosts_file(draft: _Draft, data: Any) -> None:
    path = str(draft.hosts_file)
    if data is None:
        draft.errors.append(
            InventoryError("no hosts defined (expected 'all:' with 'hosts:')", Mark(path, 1, 1))
        )
        return
    if not isinstance(data, dict):
        draft.readable = False
        draft.errors.append(
            InventoryError(
                f"expected a mapping with 'all:' at the top, got {_type_name(data)}",
                mark_of(data) or Mark(path, 1, 1),
            )
        )
        return
    for name, entry in data.items():
        where = key_mark(data, name)
        if name in GROUP_KEYS:
            draft.errors.append(
                InventoryError(f"'{name}:' at the top level belongs under 'all:'", where)
            )
            continue
        if draft.check_name("group", name, where):
            draft.parse_group(name, entry, where)


def _check_host_names(draft: _Draft) -> None:
    """Host names become TLS and IKE names, which are compared without letter case
    (RFC 4343): two hosts whose names differ only in case would each pass for the other,
    and a host named like the controller would be given a certificate bearing its name."""
    first: dict[str, _HostDraft] = {}
    for name, host in draft.hosts.items():
        if is_controller_name(name):
            draft.errors.append(
                InventoryError(
                    f"host name {name!r} is reserved: {CONTROLLER_NAME} (in any letter case) "
                    "names the controller's certificate, no host may bear it; rename the host",
                    host.mark,
                )
            )
            continue
        other = first.setdefault(name.lower(), host)
        if other is not host:
            at = f" (at {other.mark})" if other.mark else ""
            draft.errors.append(
                InventoryError(
                    f"host {name!r} and host {other.name!r}{at} differ only in "
                    "letter case; TLS and IKE compare names without case, so each would pass "
                    "for the other: rename one of them",
                    host.mark,
                )
            )


def _find_cycles(draft: _Draft) -> None:
    """Report every group that is its own ancestor, naming the path; then cut the loop."""
    state: dict[str, int] = {}  # 1 on the current path, 2 finished
    path: list[str] = []
    reported: set[frozenset[str]] = set()
    cut: list[tuple[str, str]] = []

    def visit(name: str) -> None:
        state[name] = 1
        path.append(name)
        for child, mark in draft.groups[name].children.items():
            if state.get(child) == 1:
                loop = [*path[path.index(child) :], child]
                key = frozenset(loop)
                if key not in reported:
                    reported.add(key)
                    draft.errors.append(
                        InventoryError(
                            f"group cycle: {' -> '.join(loop)} "
                            f"(group {child!r} would be its own ancestor)",
                            mark,
                        )
                    )
                cut.append((name, child))
            elif child not in state:
                visit(child)
        path.pop()
        state[name] = 2

    roots = [ALL] if ALL in draft.groups else []
    for name in [*roots, *draft.groups]:
        if name not in state:
            visit(name)
    for parent, child in cut:
        draft.groups[parent].children.pop(child, None)
        draft.groups[child].parents.remove(parent)


def _attach_implicit_groups(draft: _Draft) -> None:
    """``all`` holds every top group and ``ungrouped`` every host with no other group."""
    all_group = draft.group(ALL, Mark(str(draft.hosts_file), 1, 1))
    ungrouped = draft.group(UNGROUPED, all_group.mark)
    for group in draft.groups.values():
        if group.name != ALL and not group.parents:
            group.parents.append(ALL)
            all_group.children.setdefault(group.name, None)
    for host in draft.hosts.values():
        host.groups = [g for g in host.groups if g != ALL]
        if not host.groups:
            host.groups = [UNGROUPED]
        elif UNGROUPED in host.groups and len(host.groups) > 1:
            host.groups.remove(UNGROUPED)
    all_group.hosts = []
    ungrouped.hosts = [h.name for h in draft.hosts.values() if UNGROUPED in h.groups]
    for group in draft.groups.values():
        group.hosts = [h for h in group.hosts if group.name in draft.hosts[h].groups]


def _depths(draft: _Draft) -> dict[str, int]:
    """Each group's longest distance from ``all`` (Ansible's group depth)."""
    depth: dict[str, int] = {}

    def of(name: str) -> int:
        if name not in depth:
            parents = draft.groups[name].parents
            depth[name] = max((of(p) + 1 for p in parents), default=0)
        return depth[name]

    for name in draft.groups:
        of(name)
    return depth


def _dir_files(directory: Path) -> list[Path]:
    """The vars files of a ``group_vars/<name>/`` directory, as ansible-core lists them:
    sorted names, level by level; hidden names and names ending in ``~`` skipped;
    subdirectories without an extension read recursively; files with no extension or
    ``.yml``, ``.yaml``, ``.json`` read, any other skipped."""
    out: list[Path] = []
    for entry in sorted(directory.iterdir(), key=lambda p: p.name):
        if entry.name.startswith(".") or entry.name.endswith("~"):
            continue
        if entry.is_dir():
            if not entry.suffix:
                out.extend(_dir_files(entry))
        elif entry.is_file() and entry.suffix in VARS_SUFFIXES:
            out.append(entry)
    return out


def _vars_files(directory: Path, name: str, errors: list[InventoryError]) -> list[Path]:
    """The files holding ``name``'s vars in ``group_vars/`` or ``host_vars/``: ansible-core
    takes the first of ``name`` (file or directory), ``name.yml``, ``name.yaml``,
    ``name.json`` and ignores the rest; two of them is refused here, naming both."""
    entries = [directory / f"{name}{suffix}" for suffix in VARS_SUFFIXES]
    entries = [e for e in entries if e.exists()]
    if not entries:
        return []
    if len(entries) > 1:
        shown = [f"{e.name}{'/' if e.is_dir() else ''}" for e in entries]
        errors.append(
            InventoryError(
                f"{' and '.join(shown)} both define {name!r}; keep one of them (Ansible "
                f"would read only {shown[0]})",
                Mark(str(entries[1]), 1, 1),
            )
        )
    first = entries[0]
    return _dir_files(first) if first.is_dir() else [first]


def _read_vars_tree(
    directory: Path,
    kind: str,
    known: Collection[str],
    draft: _Draft,
) -> dict[str, list[tuple[Path, MarkedDict]]]:
    """``group_vars/`` or ``host_vars/``: name -> [(file, variables)] in Ansible's order,
    for every group (or host) of the inventory that has vars files."""
    errors = draft.errors
    if not directory.exists():
        return {}
    if not directory.is_dir():
        errors.append(InventoryError("expected a directory", Mark(str(directory), 1, 1)))
        return {}
    if draft.readable:
        _warn_unused_vars(directory, kind, known, draft.warnings)
    out: dict[str, list[tuple[Path, MarkedDict]]] = {}
    for name in known:
        loaded: list[tuple[Path, MarkedDict]] = []
        for file in _vars_files(directory, name, errors):
            try:
                data = load_yaml_file(file, draft.warnings, draft.vault)
            except InventoryError as exc:
                errors.append(exc)
                continue
            if data is None:
                continue
            if not isinstance(data, MarkedDict):
                errors.append(
                    InventoryError(
                        f"expected a mapping of variables, got {_type_name(data)}",
                        mark_of(data) or Mark(str(file), 1, 1),
                    )
                )
                continue
            loaded.append((file, data))
        if loaded:
            out[name] = loaded
    return out


def _warn_unused_vars(
    directory: Path, kind: str, known: Collection[str], warnings: list[InventoryWarning]
) -> None:
    """A vars file or directory for a name the inventory lacks is ignored (as in Ansible);
    when the name is close to one it has, that is most likely a typo: say so."""
    for entry in sorted(directory.iterdir()):
        if entry.name.startswith(".") or entry.name.endswith("~"):
            continue
        if entry.suffix in VARS_SUFFIXES:
            name = entry.stem
        elif entry.is_dir():
            name = entry.name  # host_vars/gw.example.net/
        else:
            continue  # README.md, all.yaml.bak …: never anyone's vars
        if name in known:
            continue
        close = misspelling_of(name, known)
        if close:
            warnings.append(
                InventoryWarning(
                    f"{kind}_vars for {name!r}, but the inventory has no {kind} named "
                    f"{name!r} (did you mean {close!r}?); ignored, as Ansible ignores it",
                    Mark(str(entry), 1, 1),
                )
            )


def _walk_vault(
    value: Any,
    vault: Vault | None,
    errors: list[InventoryError],
    opened: dict[int, tuple[Any, Any]],
) -> Any:
    """``value`` with every ``!vault`` text inside opened; failures become errors.

    YAML aliases share one object between places, so ``opened`` (by identity, across
    the whole inventory) keeps what each distinct value became: a shared value is
    walked — and a shared sealed text decrypted or reported — once, however many paths
    lead to it, instead of once per path (exponential in nested aliases). Each entry
    holds the value itself too, so its identity cannot be reused while the walk runs.
    """
    if not isinstance(value, VaultText | dict | list):
        return value
    if id(value) in opened:
        return opened[id(value)][1]
    opened[id(value)] = (value, value)  # a container opens in place; a cycle ends here
    if isinstance(value, VaultText):
        result: Any = value
        if vault is None:
            errors.append(
                InventoryError(
                    "encrypted value (!vault) but no vault password or key file was given",
                    value.mark,
                )
            )
        else:
            try:
                result = vault.decrypt(value)
            except VaultError as exc:
                errors.append(exc)
        opened[id(value)] = (value, result)
        return result
    if isinstance(value, dict):
        for key in list(value):
            value[key] = _walk_vault(value[key], vault, errors, opened)
    else:
        for index, item in enumerate(value):
            value[index] = _walk_vault(item, vault, errors, opened)
    return value


def _open_vars(
    maps: list[dict[str, Any]],
    vault: Vault | None,
    errors: list[InventoryError],
    opened: dict[int, tuple[Any, Any]],
) -> None:
    """Open vault values in place; a top-level variable that stays sealed is dropped."""
    for variables in maps:
        for key in list(variables):
            variables[key] = _walk_vault(variables[key], vault, errors, opened)
            if isinstance(variables[key], VaultText):
                del variables[key]


def _validated(
    maps: list[dict[str, Any]], level: str, owner: str, errors: list[InventoryError]
) -> dict[str, Var]:
    merged: dict[str, Var] = {}
    for variables in maps:
        good, bad = check_vars(variables, level=level, owner=owner)
        merged.update(good)
        errors.extend(bad)
    return merged


def _file_maps(tree: dict[str, list[tuple[Path, MarkedDict]]], name: str) -> list[dict[str, Any]]:
    return [data for _, data in tree.get(name, [])]


def _address_unclear(maps: list[dict[str, Any]], good: dict[str, Var]) -> bool:
    """A rejected key that is (or looks like) ``address`` hides whether one was meant."""
    rejected = {key for variables in maps for key in variables if key not in good}
    return any(difflib.get_close_matches(key, ["address"], cutoff=0.6) for key in rejected)


def _check_addresses(inventory: Inventory, unclear: set[str], errors: list[InventoryError]) -> None:
    seen: dict[str, tuple[str, Mark]] = {}
    for name in inventory.hosts:
        host = inventory.resolve(name)
        if "address" not in host.vars:
            if name in unclear:
                continue
            errors.append(
                InventoryError(
                    f"host {name!r} has no address (expected 'address: <IPv4 or IPv6>' in "
                    f"its vars, host_vars/{name}.yaml or a group's vars)",
                    host.mark,
                )
            )
            continue
        address, origin = host.vars["address"], host.origins["address"]
        if address in seen:
            other, other_origin = seen[address]
            errors.append(
                InventoryError(
                    f"duplicate address {address}: host {name!r} (at {origin}) and host "
                    f"{other!r} (at {other_origin}) use the same underlay address",
                    origin,
                )
            )
        else:
            seen[address] = (name, origin)


def _hosts_file(root: Path, errors: list[InventoryError]) -> Path:
    """The inventory source: ``root`` itself when it is a file, else the one of
    :data:`HOSTS_FILES` in it (two of them is refused: which one is meant is unclear)."""
    if root.is_file():
        return root
    found = [root / name for name in HOSTS_FILES if (root / name).is_file()]
    if len(found) > 1:
        errors.append(
            InventoryError(
                f"{' and '.join(f.name for f in found)} are both inventory sources; keep one "
                f"(vpnfleet reads {found[0].name})",
                Mark(str(found[1]), 1, 1),
            )
        )
    return found[0] if found else root / HOSTS_FILES[0]


def _read_hosts_file(draft: _Draft) -> None:
    path = draft.hosts_file
    try:
        if path.suffix in YAML_SOURCE_SUFFIXES:
            data = load_yaml_file(path, draft.warnings, draft.vault)
        else:
            data = load_ini_text(read_text(path), str(path))
        _parse_hosts_file(draft, data)
    except InventoryError as exc:
        draft.readable = False
        draft.errors.append(exc)


def load_inventory(path: Path | str, *, vault: Vault | None = None) -> Inventory:
    """Load and validate the inventory at ``path`` (a directory, or its inventory source).

    Raises :class:`InventoryErrors` listing every problem found; warnings (what Ansible
    reads but likely was not meant) are logged and kept in ``Inventory.warnings``.
    """
    root = Path(path)
    early: list[InventoryError] = []
    hosts_file = _hosts_file(root, early)
    root = hosts_file.parent
    draft = _Draft(hosts_file, vault=vault)
    errors = draft.errors
    errors.extend(early)

    if not root.is_dir():
        raise InventoryErrors([InventoryError(f"inventory directory {root} does not exist")])
    if not hosts_file.is_file():
        names = ", ".join(HOSTS_FILES)
        raise InventoryErrors(
            [InventoryError(f"no inventory source in {root} (expected one of {names})")]
        )
    _read_hosts_file(draft)

    opened: dict[int, tuple[Any, Any]] = {}  # what each loaded value became (_walk_vault)
    if vault is not None:
        vault.new_run()  # the cap on Argon2id derivations counts per load
    topology: MarkedDict | None = None
    topology_path = root / TOPOLOGY_FILE
    if topology_path.exists():
        try:
            raw = load_yaml_file(topology_path, draft.warnings, vault)
        except InventoryError as exc:
            errors.append(exc)
        else:
            if raw is None:
                raw = MarkedDict()
                raw.mark, raw.key_marks = Mark(str(topology_path), 1, 1), {}
            if isinstance(raw, MarkedDict):
                topology = _walk_vault(raw, vault, errors, opened)
            else:
                errors.append(
                    InventoryError(
                        f"expected a mapping, got {_type_name(raw)}",
                        mark_of(raw) or Mark(str(topology_path), 1, 1),
                    )
                )

    _find_cycles(draft)
    _attach_implicit_groups(draft)
    _check_host_names(draft)
    for name, host in draft.hosts.items():
        if name in draft.groups:
            group_mark = draft.groups[name].mark
            errors.append(
                InventoryError(
                    f"{name!r} is used both as a host name and as a group name "
                    f"(group at {group_mark}); names must be unique",
                    host.mark,
                )
            )
    group_files = _read_vars_tree(root / "group_vars", "group", draft.groups, draft)
    host_files = _read_vars_tree(root / "host_vars", "host", draft.hosts, draft)

    for g in draft.groups.values():
        _open_vars([*g.var_maps, *_file_maps(group_files, g.name)], vault, errors, opened)
    for h in draft.hosts.values():
        _open_vars([*h.var_maps, *_file_maps(host_files, h.name)], vault, errors, opened)

    depth = _depths(draft)
    groups = {
        g.name: Group(
            name=g.name,
            parents=tuple(g.parents),
            children=tuple(g.children),
            hosts=tuple(g.hosts),
            vars=_validated(g.var_maps, "group", g.name, errors),
            file_vars=_validated(_file_maps(group_files, g.name), "group", g.name, errors),
            depth=depth[g.name],
            priority=g.priority,
            mark=g.mark,
        )
        for g in draft.groups.values()
    }
    hosts: dict[str, Host] = {}
    for h in draft.hosts.values():
        inline = _validated(h.var_maps, "host", h.name, errors)
        from_files = _validated(_file_maps(host_files, h.name), "host", h.name, errors)
        if _address_unclear(
            [*h.var_maps, *_file_maps(host_files, h.name)], {**inline, **from_files}
        ):
            draft.address_unclear.add(h.name)
        hosts[h.name] = Host(h.name, tuple(h.groups), inline, from_files, h.mark)
    inventory = Inventory.build(root, hosts, groups, topology, Defaults(), draft.warnings)
    _check_addresses(inventory, draft.address_unclear, errors)
    resolved_errors, resolved_warnings = check_resolved(inventory)
    errors.extend(resolved_errors)
    warnings = sorted([*draft.warnings, *resolved_warnings], key=_position)
    inventory = dataclasses.replace(inventory, warnings=tuple(warnings))
    for warning in warnings:
        log.warning("warning: %s", warning)
    if errors:
        # File by file, top to bottom: the order an operator fixes them in.
        errors.sort(key=_position)
        raise InventoryErrors(errors)
    return inventory


def _position(item: InventoryError | InventoryWarning) -> tuple[str, int, int]:
    mark = item.mark
    return (mark.path, mark.line, mark.column) if mark else ("", 0, 0)
