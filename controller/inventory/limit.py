"""Ansible host patterns: ``--limit`` and the patterns of topology.yaml.

Splitting (as ansible-core's ``split_host_pattern``): a pattern holding a comma is split
at commas only (``a1:a2,a3`` is the two terms ``a1:a2`` and ``a3``); one without a comma
is a single term when it reads as one address (an IPv6 address such as ``fe80::1``, a
name or address with a ``:port``, a name with a ``[1:3]`` range), and is otherwise split
at colons and whitespace outside ``[...]``.

Each term is a host name, a group name, a glob (``fnmatch``: ``*``, ``?``, ``[...]``),
``~regex`` (``re.match``: anchored at the start of the name, not at its end), or
``all``. Globs and regexes are tried on group names (``all`` and ``ungrouped``
included) and, when no group matched or the term is a glob or regex (or holds a
``.``), on host names. A non-regex term may end in a subscript over the hosts it
selects, in the group's host order (below): ``[0]``, ``[-1]``, ``[1:3]`` (both ends
included), ``[2:]``. A term prefixed with ``&`` intersects, with ``!`` excludes. Plain
terms are applied first, then intersections, then exclusions, whatever order they are
written in; a pattern with only ``&``/``!`` terms starts from ``all``.

A group's host order is ansible-core's: the group's own hosts, then its children's,
breadth first (children in the order written; ``all`` has ``ungrouped`` first). Where
several groups of one level have children, ansible-core's order of the next level is
not stable between runs; the order here is that of the parents.

``--limit`` also takes ``@FILE`` (a retry file: one term per line, the path relative to
the current directory); patterns written in topology.yaml do not, as a play's
``hosts:`` does not.

The hosts selected are returned in inventory order: like ansible-core, a limit filters
the hosts of a run and never reorders them.

Unlike ansible-core (which warns and carries on), a term that selects no host — a name
that is neither a host nor a group, a glob or regex matching nothing, a subscript past
the end of its hosts — is an error, with a did-you-mean for names: a misspelt
exclusion would otherwise reach the very host it was meant to spare.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from . import model
from .errors import InventoryError, did_you_mean

if TYPE_CHECKING:
    from .model import Inventory

# What makes a term a glob or a regex, so that it is tried on host names even when it
# matched groups ("." as ansible-core counts it).
_WILD = (".", "?", "*", "[")

# The single-address forms that keep a comma-free pattern whole (ansible-core's
# parse_address with ranges allowed): [HOST]:PORT, HOST:PORT, then an IPv4 address, an
# IPv6 address or a host name, each of which may hold [a:b] ranges.
_BRACKETED_PORT = re.compile(r"\[(.+)\]:([0-9]+)")
_HOST_PORT = re.compile(r"((?:[^:\[\]]|\[[^\]]*\])*):([0-9]+)")
_NUMERIC_RANGE = r"\[[0-9]+:[0-9]+(?::[0-9]+)?\]"
_HEX_PART = r"(?:[0-9a-f]{1,4}|\[[0-9a-f]+:[0-9a-f]+(?::[0-9]+)?\])"
# The IPv6 forms, from 1:2:3:4:5:6:7:8 to :: and the IPv4-in-IPv6 ones. ansible-core
# matches them at the start of the text only (all but the last form), so "fe80::1:a1"
# or "a1::x" count as one address there, and so here.
_IPV6_FORMS = [
    r"(?:{0}:){{7}}{0}",  # 1:2:3:4:5:6:7:8
    r"(?:{0}:){{1,6}}:",  # 1:2::
    r"(?:{0}:)(?::{0}){{1,6}}",  # 1::8 ... with 2 to 7 groups in all
    r"(?:{0}:){{2}}(?::{0}){{1,5}}",
    r"(?:{0}:){{3}}(?::{0}){{1,4}}",
    r"(?:{0}:){{4}}(?::{0}){{1,3}}",
    r"(?:{0}:){{5}}(?::{0}){{1,2}}",
    r"(?:{0}:){{6}}(?::{0})",
    r":(?::{0}){{1,6}}",  # ::8
    r"{0}?::",  # 1::, ::
    r"(?:0:){{6}}(?:{0}\.){{3}}{0}",  # IPv4 in IPv6
    r"::(?:ffff:)?(?:{0}\.){{3}}{0}",
    r"(?:0:){{5}}ffff:(?:{0}\.){{3}}{0}$",
]
_IPV6 = re.compile("|".join(form.format(_HEX_PART) for form in _IPV6_FORMS), re.I)
_NAME_RANGE = r"\[(?:[a-z]:[a-z]|[0-9]+:[0-9]+)(?::[0-9]+)?\]"
_IPV4_PART = rf"(?:[01]?[0-9]{{1,2}}|2[0-4][0-9]|25[0-5]|{_NUMERIC_RANGE})"
_IPV4 = re.compile(rf"(?:{_IPV4_PART}\.){{3}}{_IPV4_PART}")
_LABEL = rf"(?:\w|{_NAME_RANGE})(?:[\w-]|{_NAME_RANGE})*(?<![_-])"
_HOSTNAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*", re.I)
# Colon-separated terms: runs of anything but whitespace, ":" and brackets, or whole
# bracketed expressions.
_COLON_TERM = re.compile(r"(?:[^\s:\[\]]|\[[^\]]*\])+")
# TERM[i], TERM[a:b], TERM[a:] (and the older TERM[a-b]).
_SUBSCRIPT = re.compile(r"(.+)\[(?:(-?[0-9]+)|([0-9]+)([:-])([0-9]*))\]")


class LimitError(InventoryError):
    """A ``--limit`` pattern that is malformed or names nothing in the inventory."""


def is_single_address(text: str) -> bool:
    """Whether ``text`` reads as one host (with an optional port and ranges), so that
    its colons do not separate terms."""
    for form in (_BRACKETED_PORT, _HOST_PORT):  # both, in turn: "[h:1]:2" is "h"
        found = form.fullmatch(text)
        if found:
            text = found.group(1)
    return bool(_IPV4.fullmatch(text) or _IPV6.match(text) or _HOSTNAME.fullmatch(text))


def split_pattern(pattern: str) -> list[str]:
    """The terms of a pattern, in the order written (empty terms dropped)."""
    if "," in pattern:
        terms = pattern.split(",")
    elif is_single_address(pattern):
        terms = [pattern]
    else:
        terms = _COLON_TERM.findall(pattern)
    return [term.strip() for term in terms if term.strip()]


def limit_terms(pattern: str, cwd: Path | None = None) -> list[str]:
    """The terms of a ``--limit``: :func:`split_pattern`, with each ``@FILE`` replaced by
    the file's lines (a retry file: one term a line, blank lines skipped). A relative
    path is taken from ``cwd`` (default: the current directory)."""
    terms: list[str] = []
    for term in split_pattern(pattern):
        if not term.startswith("@"):
            terms.append(term)
            continue
        if not term[1:]:
            raise LimitError(f"limit {pattern!r}: '@' needs a file name (a retry file)")
        path = Path(term[1:])
        if cwd is not None and not path.is_absolute():
            path = cwd / path
        if path.is_dir():
            raise LimitError(
                f"limit {pattern!r}: {term!r} is a directory; @ takes a file of host "
                "names, one a line"
            )
        try:
            lines = path.read_text(encoding="utf-8").split("\n")
        except FileNotFoundError:
            raise LimitError(f"limit {pattern!r}: no limit file {str(path)!r}") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise LimitError(f"limit {pattern!r}: cannot read limit file {path}: {exc}") from None
        names = [line.strip() for line in lines if line.strip()]
        if not names:
            raise LimitError(
                f"limit {pattern!r}: limit file {str(path)!r} names no host (refused: "
                "ansible-core would take it as no limit at all, every host)"
            )
        terms.extend(names)
    return terms


@dataclass(frozen=True, slots=True)
class Subscript:
    """``[start]`` (``end`` None) or ``[start:end]`` with ``end`` included; -1 is the last."""

    start: int
    end: int | None

    def apply(self, hosts: list[str]) -> list[str]:
        """The hosts the subscript picks (ansible-core's arithmetic: ``[a:0]`` is ``[a]``);
        an index out of range gives nothing."""
        if self.end:
            end = len(hosts) - 1 if self.end == -1 else self.end
            return hosts[self.start : end + 1]
        if -len(hosts) <= self.start < len(hosts):
            return [hosts[self.start]]
        return []


def split_subscript(term: str) -> tuple[str, Subscript | None]:
    """``mesh[1:3]`` -> (``mesh``, its subscript); a regex term never has one."""
    found = None if term.startswith("~") else _SUBSCRIPT.fullmatch(term)
    if not found:
        return term, None
    expr, index, start, _sep, end = found.groups()
    if index is not None:
        return expr, Subscript(int(index), None)
    return expr, Subscript(int(start), int(end) if end else -1)


def _children(inventory: Inventory, group: str) -> list[str]:
    children = list(inventory.groups[group].children)
    if group == model.ALL and model.UNGROUPED in inventory.groups:
        children = [model.UNGROUPED, *(c for c in children if c != model.UNGROUPED)]
    return children


def group_host_order(inventory: Inventory, group: str) -> list[str]:
    """The hosts of ``group`` and its descendants in ansible-core's order: the group's
    own hosts, then its children's, breadth first (what ``group[0]`` counts in)."""
    ordered = [group, *_children(inventory, group)]
    seen: set[str] = set()
    level = list(ordered)
    while level:
        seen.update(level)
        following: list[str] = []
        for parent in level:
            for child in _children(inventory, parent):
                if child not in seen and child not in following:
                    following.append(child)
        ordered.extend(following)
        level = following
    hosts: list[str] = []
    taken: set[str] = set()
    for name in ordered:
        for host in inventory.groups[name].hosts:
            if host not in taken:
                taken.add(host)
                hosts.append(host)
    return hosts


def _group_order(inventory: Inventory) -> list[str]:
    """Group names in ansible-core's order: ``all``, ``ungrouped``, then as declared."""
    first = [g for g in (model.ALL, model.UNGROUPED) if g in inventory.groups]
    return [*first, *(g for g in inventory.groups if g not in first)]


class _Matcher:
    def __init__(self, inventory: Inventory, pattern: str) -> None:
        self.inventory = inventory
        self.pattern = pattern

    def refuse(self, message: str) -> LimitError:
        return LimitError(f"limit {self.pattern!r}: {message}")

    def enumerate(self, expr: str, term: str) -> list[str]:
        """Hosts of the groups ``expr`` matches, then the hosts it matches (in the order
        ansible-core lists them, repeats kept: a subscript counts them)."""
        try:
            regex = re.compile(expr[1:] if expr.startswith("~") else fnmatch.translate(expr))
        except re.error as exc:
            raise self.refuse(f"bad regular expression {term!r}: {exc}") from None
        groups = [g for g in _group_order(self.inventory) if regex.match(g)]
        found = [h for g in groups for h in group_host_order(self.inventory, g)]
        if not groups or expr.startswith("~") or any(c in expr for c in _WILD):
            found.extend(h for h in self.inventory.hosts if regex.match(h))
        if not groups and not found:
            if expr.startswith("~") or any(c in expr for c in "*?["):
                raise self.refuse(
                    f"{term!r} matches no host or group (a term that selects nothing is "
                    "refused: fix it or leave it out)"
                )
            hint = did_you_mean(expr, [*self.inventory.hosts, *self.inventory.groups])
            if ":" in expr and "," in self.pattern:
                hint += " (a pattern holding a comma is split at commas only, as in Ansible)"
            raise self.refuse(f"no host or group named {expr!r}{hint}")
        return found

    def term_hosts(self, term: str) -> list[str]:
        expr, subscript = split_subscript(term)
        found = self.enumerate(expr, term)
        if subscript is None or not found:
            return found
        picked = subscript.apply(found)
        if not picked:
            raise self.refuse(
                f"{term!r} selects nothing: {expr!r} lists {len(found)} host(s), counted "
                "from 0 (a subscript past the end is refused)"
            )
        return picked


def match_terms(inventory: Inventory, terms: list[str], pattern: str) -> list[str]:
    """Hosts selected by ``terms`` (as :func:`split_pattern` or :func:`limit_terms`
    give them), in inventory order; ``pattern`` is what errors quote."""
    if not terms:
        raise LimitError(f"limit {pattern!r} is empty (expected a host, group or glob)")
    matcher = _Matcher(inventory, pattern)
    plain = [t for t in terms if t[0] not in "&!"]
    narrowing = [t for t in terms if t[0] == "&"] + [t for t in terms if t[0] == "!"]
    selected: set[str] = set()
    for term in plain or [model.ALL]:
        if term in inventory.hosts:
            selected.add(term)
        else:
            selected.update(matcher.term_hosts(term))
    for term in narrowing:
        if not term[1:].strip():
            raise LimitError(f"limit {pattern!r}: {term!r} needs a name after {term[0]!r}")
        these = set(matcher.term_hosts(term[1:].strip()))
        selected = selected & these if term[0] == "&" else selected - these
    return [h for h in inventory.hosts if h in selected]


def match_hosts(inventory: Inventory, pattern: str) -> list[str]:
    """Hosts selected by a host pattern (as in topology.yaml), in inventory order."""
    return match_terms(inventory, split_pattern(pattern), pattern)


def limit_hosts(inventory: Inventory, pattern: str, cwd: Path | None = None) -> list[str]:
    """Hosts selected by a ``--limit`` (``@FILE`` read), in inventory order."""
    return match_terms(inventory, limit_terms(pattern, cwd), pattern)
