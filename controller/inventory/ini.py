"""Ansible's INI inventory (``hosts.ini``, or ``hosts`` with no extension), read into
the same marked structure a YAML inventory loads as, so one loader serves both.

As ansible-core reads it: lines before any section list hosts of ``ungrouped``;
``[group]`` lists hosts (``name [key=value …]``, host ranges and ``name:port``, which
sets ``ansible_port``), ``[group:vars]`` holds ``key=value`` lines and
``[group:children]`` names child groups, declared anywhere in the file. Values are read
as Python literals where they are one (``3``, ``True``, ``[1, 2]``, ``'text'``) and as
strings otherwise, in host lines and in ``:vars`` sections alike. Lines starting with
``#`` or ``;`` are comments; on a host line ``#`` starts a comment too. A section that
names a group before it is declared (``[g:vars]``, or ``g`` under ``[p:children]``)
needs a ``[g]`` or ``[g:children]`` section somewhere in the file.
"""

from __future__ import annotations

import ast
import re
import shlex
import warnings
from dataclasses import dataclass, field
from typing import Any

from .errors import InventoryError, Mark
from .source import MarkedDict, marked

_SECTION = re.compile(r"\[([^:\]\s]+)(?::(\w+))?\]\s*(?:#.*)?")
_GROUP_NAME = re.compile(r"([^:\]\s]+)\s*(?:#.*)?")
_KINDS = ("hosts", "vars", "children")


def _literal(text: str) -> Any:
    """An INI value as Ansible types it: a Python literal when it is one, else the text."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SyntaxWarning)
            value = ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return text
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, set | frozenset | complex):
        return text  # no inventory value is one; keep what was written
    return value


@dataclass
class _Section:
    """Where a group was first named with each kind of section, for errors at the end."""

    mark: Mark
    kind: str
    parents: list[str] = field(default_factory=list)


def _child(parent: MarkedDict, key: str, mark: Mark) -> MarkedDict:
    """The mapping under ``key`` (a group's entry, or its ``hosts``/``vars``/``children``),
    made where it is first named."""
    if key not in parent:
        child = MarkedDict()
        child.mark, child.key_marks = mark, {}
        parent[key] = child
        parent.key_marks[key] = mark
    child = parent[key]
    assert isinstance(child, MarkedDict)
    return child


def _set(target: MarkedDict, key: str, value: Any, key_at: Mark, value_at: Mark) -> None:
    target[key] = marked(value, value_at)
    target.key_marks[key] = key_at


def load_ini_text(text: str, path: str) -> MarkedDict:
    """The inventory in ``text`` as ``{group: {hosts:, vars:, children:}}``; the first
    problem raises :class:`InventoryError` at its line (Ansible stops there too)."""
    groups = MarkedDict()
    groups.mark, groups.key_marks = Mark(path, 1, 1), {}
    declared: set[str] = {"all", "ungrouped"}  # always there, or by [group], [group:children]
    pending: dict[str, _Section] = {}  # named before being declared
    group, kind = "ungrouped", "hosts"
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        column = len(raw) - len(raw.lstrip()) + 1
        at = Mark(path, number, column)
        if not line or line[0] in "#;":
            continue
        section = _SECTION.fullmatch(line)
        if section:
            group, kind = section.group(1), section.group(2) or "hosts"
            if kind not in _KINDS:
                raise InventoryError(
                    f"section [{section.group(1)}:{kind}]: unknown kind {kind!r}, expected "
                    f"[{section.group(1)}], [{section.group(1)}:vars] or "
                    f"[{section.group(1)}:children]",
                    at,
                )
            _child(groups, group, at)
            if kind == "vars":
                if group not in declared:
                    pending.setdefault(group, _Section(at, kind))
            else:
                declared.add(group)
                pending.pop(group, None)
            continue
        if line.startswith("["):
            raise InventoryError(
                f"invalid section header {line!r}: expected [group], [group:vars] or "
                "[group:children], with no spaces inside the brackets",
                at,
            )
        entry = _child(groups, group, at)
        if kind == "hosts":
            _host_line(_child(entry, "hosts", at), raw, line, at)
        elif kind == "vars":
            key, sep, value = line.partition("=")
            if not sep or not key.strip():
                raise InventoryError(f"expected key=value in [{group}:vars], got {line!r}", at)
            value_at = Mark(path, number, raw.index("=") + 2)
            _set(_child(entry, "vars", at), key.strip(), _literal(value.strip()), at, value_at)
        else:
            child_match = _GROUP_NAME.fullmatch(line)
            if not child_match:
                raise InventoryError(
                    f"expected a group name in [{group}:children], got {line!r}", at
                )
            child = child_match.group(1)
            children = _child(entry, "children", at)
            children[child] = None
            children.key_marks[child] = at
            if child not in declared:
                pending.setdefault(child, _Section(at, kind)).parents.append(group)
    for name, first in pending.items():
        if first.kind == "vars":
            raise InventoryError(
                f"section [{name}:vars] for a group that is never declared: add a "
                f"[{name}] or [{name}:children] section",
                first.mark,
            )
        raise InventoryError(
            f"[{first.parents[0]}:children] names group {name!r}, which is never declared: "
            f"add a [{name}] or [{name}:children] section",
            first.mark,
        )
    return groups


def _host_line(hosts: MarkedDict, raw: str, line: str, at: Mark) -> None:
    """``name [key=value …]``: the host key (kept verbatim, as a YAML hosts: key is;
    ranges and ports are expanded by the loader) and its variables."""
    try:
        words = shlex.split(line, comments=True)
    except ValueError as exc:
        raise InventoryError(f"cannot read host line: {exc}", at) from None
    if not words:
        return
    first = words[0]
    if first.endswith(":"):
        raise InventoryError(
            f"host {first!r} ends in ':' (reserved for a port, as in {first}22); "
            "is this a YAML file named like an INI one?",
            at,
        )
    variables = hosts.get(first)
    if not isinstance(variables, MarkedDict):
        variables = MarkedDict()
        variables.mark, variables.key_marks = at, {}
    search_from = raw.find(first) + len(first)
    for word in words[1:]:
        key, sep, value = word.partition("=")
        if not sep or not key:
            raise InventoryError(f"host {first!r}: expected key=value, got {word!r}", at)
        found = raw.find(key, search_from)
        key_at = Mark(at.path, at.line, found + 1) if found >= 0 else at
        search_from = max(search_from, found + len(key))
        value_at = Mark(at.path, at.line, key_at.column + len(key) + 1)
        _set(variables, key, _literal(value), key_at, value_at)
    hosts[first] = variables
    hosts.key_marks[first] = at
