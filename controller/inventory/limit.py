"""Ansible ``--limit`` host patterns.

A pattern is a list of terms separated by ``:`` or ``,``. Each term is a host name, a
group name, a glob (``fnmatch``: ``*``, ``?``, ``[...]``) over host and group names,
``~regex`` (searched in host and group names), or ``all`` / ``*``. A term prefixed with
``&`` intersects, with ``!`` excludes. As in Ansible, plain terms are applied first, then
intersections, then exclusions, whatever order they are written in; a pattern with only
``&``/``!`` terms starts from ``all``. Unlike Ansible (which warns), a term that matches
nothing is an error, with a did-you-mean for names.
"""

from __future__ import annotations

import fnmatch
import re
from typing import TYPE_CHECKING

from .errors import InventoryError, did_you_mean

if TYPE_CHECKING:
    from .model import Inventory

_GLOB_CHARS = frozenset("*?[")


class LimitError(InventoryError):
    """A ``--limit`` pattern that is malformed or names nothing in the inventory."""


def split_pattern(pattern: str) -> list[str]:
    """The terms of a pattern, in the order written (empty terms dropped)."""
    return [term.strip() for term in re.split(r"[:,]", pattern) if term.strip()]


def _term_hosts(inventory: Inventory, term: str, pattern: str) -> list[str]:
    hosts = list(inventory.hosts)
    if term in ("all", "*"):
        return hosts
    if term in inventory.hosts:
        return [term]
    if term in inventory.groups:
        return inventory.group_hosts(term)
    if term.startswith("~"):
        try:
            regex = re.compile(term[1:])
        except re.error as exc:
            raise LimitError(f"limit {pattern!r}: bad regular expression {term!r}: {exc}") from None
        names = [h for h in hosts if regex.search(h)]
        groups = [g for g in inventory.groups if regex.search(g)]
    elif _GLOB_CHARS & set(term):
        names = fnmatch.filter(hosts, term)
        groups = fnmatch.filter(inventory.groups, term)
    else:
        hint = did_you_mean(term, [*inventory.hosts, *inventory.groups])
        raise LimitError(f"limit {pattern!r}: no host or group named {term!r}{hint}")
    if not names and not groups:
        raise LimitError(f"limit {pattern!r}: {term!r} matches no host or group")
    selected = set(names)
    for group in groups:
        selected.update(inventory.group_hosts(group))
    return [h for h in hosts if h in selected]


def match_hosts(inventory: Inventory, pattern: str) -> list[str]:
    """Hosts selected by ``pattern``, in inventory order."""
    terms = split_pattern(pattern)
    if not terms:
        raise LimitError(f"limit {pattern!r} is empty (expected a host, group or glob)")
    plain = [t for t in terms if t[0] not in "&!"]
    narrowing = [t for t in terms if t[0] == "&"] + [t for t in terms if t[0] == "!"]
    selected: set[str] = set()
    for term in plain or ["all"]:
        selected.update(_term_hosts(inventory, term, pattern))
    for term in narrowing:
        if not term[1:].strip():
            raise LimitError(f"limit {pattern!r}: {term!r} needs a name after {term[0]!r}")
        these = set(_term_hosts(inventory, term[1:].strip(), pattern))
        selected = selected & these if term[0] == "&" else selected - these
    return [h for h in inventory.hosts if h in selected]
