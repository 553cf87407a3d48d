"""What ``vpnfleet inventory --graph | --host H | --list`` shows (as ansible-inventory does)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .model import ALL, Inventory
from .vault import Secret

MASK = "<secret>"


def _graph_line(text: str, depth: int) -> str:
    return "  |" * depth + "--" + text if depth else text


def _graph_group(inventory: Inventory, name: str, depth: int, out: list[str]) -> None:
    group = inventory.groups[name]
    out.append(_graph_line(f"@{name}:", depth))
    for child in sorted(group.children):
        _graph_group(inventory, child, depth + 1, out)
    if name != ALL:
        for host in sorted(group.hosts):
            out.append(_graph_line(host, depth + 1))


def graph(inventory: Inventory, group: str = ALL) -> str:
    """The group tree as text, children and hosts sorted by name, like ``--graph``::

    @all:
      |--@mesh:
      |  |--a1
      |--@ungrouped:
    """
    inventory.group_hosts(group)  # a clear error for an unknown group
    out: list[str] = []
    _graph_group(inventory, group, 0, out)
    return "\n".join(out)


def plain(value: Any, *, show_secrets: bool = False) -> Any:
    """``value`` as plain JSON types; secrets masked unless ``show_secrets``."""
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
    if isinstance(value, Mapping):
        return {str(k): plain(v, show_secrets=show_secrets) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v, show_secrets=show_secrets) for v in value]
    return str(value)


def host_vars(inventory: Inventory, host: str, show_secrets: bool = False) -> dict[str, Any]:
    """A host's resolved variables as a JSON-able dict, keys sorted (``--host H``)."""
    resolved = inventory.resolve(host)
    return {k: plain(resolved.vars[k], show_secrets=show_secrets) for k in sorted(resolved.vars)}


def inventory_list(inventory: Inventory, show_secrets: bool = False) -> dict[str, Any]:
    """The whole inventory as ``ansible-inventory --list`` lays it out."""
    out: dict[str, Any] = {
        "_meta": {
            "hostvars": {
                h: host_vars(inventory, h, show_secrets=show_secrets) for h in inventory.hosts
            }
        }
    }
    for name, group in inventory.groups.items():
        entry: dict[str, Any] = {}
        if group.children:
            entry["children"] = sorted(group.children)
        if group.hosts:
            entry["hosts"] = list(group.hosts)
        if entry or name == ALL:
            out[name] = entry
    return out
