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

import datetime
import json
from collections.abc import Mapping
from typing import Any

from .model import ALL, UNGROUPED, Inventory
from .source import UnsafeText
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
    if isinstance(value, UnsafeText):  # as ansible-inventory shows a value never templated
        return {"__ansible_unsafe": str.__str__(value)}
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
        typed = getattr(value, "typed_keys", {})
        return {
            _plain_key(typed.get(k, k)): plain(v, show_secrets=show_secrets)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [plain(v, show_secrets=show_secrets) for v in value]
    return str(value)


def _host_vars(inventory: Inventory, host: str, show_secrets: bool) -> dict[str, Any]:
    written = inventory.resolve(host).written
    return {name: plain(value, show_secrets=show_secrets) for name, value in written.items()}


def host_vars(inventory: Inventory, host: str, show_secrets: bool = False) -> dict[str, Any]:
    """The variables the inventory sets for a host, resolved by precedence and as
    written, in plain JSON types (``--host H``); vpnfleet's defaults are left out."""
    return _host_vars(inventory, host, show_secrets)


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
    for host in inventory.hosts:
        variables = _host_vars(inventory, host, show_secrets)
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
