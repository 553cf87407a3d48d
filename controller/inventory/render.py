"""What ``vpnfleet inventory --graph | --host H | --list`` shows: what ansible-inventory
shows for the same inventory, in the same shape, order and JSON text.

- Variables are those the inventory sets, as ansible-inventory resolves them, and as
  written (``dpd_delay: 30s`` stays ``"30s"``); vpnfleet's own defaults for what no file
  sets are not shown (Ansible knows nothing of them).
- Groups and hosts keep the order they are declared in, with ``ungrouped`` first among
  the children of ``all``; a group with neither hosts nor children gets no entry of its
  own in ``--list`` (it is still named among its parent's children); ``all`` lists no
  hosts.
- The JSON text is ansible-inventory's: four spaces of indent, keys sorted, non-ASCII
  characters as they are, dates and timestamps in ISO 8601, and keys that are not
  strings (``true``, ``2``, ``1.5``, ``null``) written as JSON writes them; a document
  whose keys cannot be sorted (strings beside numbers) is written unsorted, as
  ansible-inventory then writes it.
"""

from __future__ import annotations

import contextlib
import datetime
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .errors import InventoryError, Mark
from .model import ALL, UNGROUPED, Inventory
from .schema import DEFAULT_MARK, VARIABLES
from .source import MarkedDict, VaultText, load_yaml_file
from .vault import Secret

MASK = "<secret>"


def children(inventory: Inventory, name: str) -> list[str]:
    """A group's child groups in ansible-inventory's order: as declared, except that
    ``ungrouped`` always comes first under ``all`` (Ansible makes it before reading)."""
    kids = list(inventory.groups[name].children)
    if name == ALL and UNGROUPED in kids:
        kids.remove(UNGROUPED)
        kids.insert(0, UNGROUPED)
    return kids


def _graph_line(text: str, depth: int) -> str:
    return "  |" * depth + "--" + text if depth else text


def _graph_group(inventory: Inventory, name: str, depth: int, out: list[str]) -> None:
    out.append(_graph_line(f"@{name}:", depth))
    for child in children(inventory, name):
        _graph_group(inventory, child, depth + 1, out)
    if name != ALL:
        for host in inventory.groups[name].hosts:
            out.append(_graph_line(host, depth + 1))


def graph(inventory: Inventory, group: str = ALL) -> str:
    """The group tree as text, like ``ansible-inventory --graph``::

    @all:
      |--@ungrouped:
      |--@mesh:
      |  |--a1
    """
    inventory.group_hosts(group)  # a clear error for an unknown group
    out: list[str] = []
    _graph_group(inventory, group, 0, out)
    return "\n".join(out)


def _plain_key(key: Any) -> Any:
    """A mapping key as JSON takes it: strings, numbers, booleans and null stay what they
    are (JSON writes ``true``, ``2``, ``1.5``, ``null``, as for ansible-inventory)."""
    if isinstance(key, bool) or key is None:
        return key
    if isinstance(key, str):
        return str.__str__(key)
    if isinstance(key, int):
        return int(key)
    if isinstance(key, float):
        return float(key)
    if isinstance(key, datetime.date):
        return key.isoformat()
    return str(key)


def plain(value: Any, *, show_secrets: bool = False) -> Any:
    """``value`` as plain JSON types; secrets masked unless ``show_secrets``; dates and
    timestamps as ISO 8601 text."""
    if isinstance(value, Secret):
        return str.__str__(value) if show_secrets else MASK
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, datetime.date):  # datetime.datetime is a date too
        return value.isoformat()
    if isinstance(value, Mapping):
        return {_plain_key(k): plain(v, show_secrets=show_secrets) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v, show_secrets=show_secrets) for v in value]
    return str(value)


class _Written:
    """Values as the inventory's files write them, found by the position of their key.

    The model holds vpnfleet's own variables in their normal form (``4h`` as 14400
    seconds, addresses compressed); Ansible shows what is written, and so does this.
    Each file is read once.
    """

    def __init__(self) -> None:
        self._files: dict[str, dict[Mark, Any]] = {}

    def _index(self, value: Any, found: dict[Mark, Any], seen: set[int]) -> None:
        if id(value) in seen:  # an alias: its values are indexed already
            return
        seen.add(id(value))
        if isinstance(value, MarkedDict):
            for key, item in value.items():
                found.setdefault(value.key_marks[key], item)
                self._index(item, found, seen)
        elif isinstance(value, list):
            for item in value:
                self._index(item, found, seen)

    def at(self, mark: Mark, resolved: Any) -> Any:
        """What is written after the key at ``mark``, else ``resolved`` (a value that
        came sealed, or a file that changed or went away since it was loaded)."""
        found = self._files.get(mark.path)
        if found is None:
            found = self._files[mark.path] = {}
            with contextlib.suppress(InventoryError):
                self._index(load_yaml_file(Path(mark.path)), found, set())
        written = found.get(mark, resolved)
        return resolved if isinstance(written, VaultText) else written


def _host_vars(
    inventory: Inventory, host: str, written: _Written, show_secrets: bool
) -> dict[str, Any]:
    resolved = inventory.resolve(host)
    out: dict[str, Any] = {}
    for name, value in resolved.vars.items():
        origin = resolved.origins[name]
        if origin == DEFAULT_MARK:
            continue
        if name in VARIABLES:  # normalised by the loader; others are kept as written
            value = written.at(origin, value)
        out[name] = plain(value, show_secrets=show_secrets)
    return out


def host_vars(inventory: Inventory, host: str, show_secrets: bool = False) -> dict[str, Any]:
    """The variables the inventory sets for a host, resolved by precedence and as
    written, in plain JSON types (``--host H``); vpnfleet's defaults are left out."""
    return _host_vars(inventory, host, _Written(), show_secrets)


def _group_entries(inventory: Inventory, name: str, seen: set[str], out: dict[str, Any]) -> None:
    """Each group's entry, parent before children, every group once (ansible-inventory's
    order, which its output keeps when keys cannot be sorted)."""
    entry: dict[str, Any] = {}
    out[name] = entry
    if name != ALL:
        entry["hosts"] = list(inventory.groups[name].hosts)
    entry["children"] = children(inventory, name)
    for child in entry["children"]:
        if child not in seen:
            _group_entries(inventory, child, seen, out)
            seen.add(child)
    for key in [k for k, v in entry.items() if not v]:
        del entry[key]
    if not entry:
        del out[name]


def inventory_list(inventory: Inventory, show_secrets: bool = False) -> dict[str, Any]:
    """The whole inventory as ``ansible-inventory --list`` lays it out: one entry per
    group with hosts or children, and ``_meta.hostvars`` for every host with variables."""
    out: dict[str, Any] = {}
    _group_entries(inventory, ALL, set(), out)
    hostvars: dict[str, Any] = {}
    written = _Written()
    for host in inventory.hosts:
        variables = _host_vars(inventory, host, written, show_secrets)
        if variables:
            hostvars[host] = variables
    out["_meta"] = {"hostvars": hostvars}
    return out


def dumps(data: Any) -> str:
    """``data`` as ansible-inventory writes its JSON (see the module docstring)."""
    options: dict[str, Any] = {"indent": 4, "ensure_ascii": False}
    try:
        return json.dumps(data, sort_keys=True, **options)
    except TypeError:  # keys of kinds that do not compare, such as "a" and 2
        return json.dumps(data, sort_keys=False, **options)
