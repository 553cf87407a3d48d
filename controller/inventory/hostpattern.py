"""Host entries as Ansible writes them: ranges (``web[01:20]``, ``db-[a:f]``,
``s[1:10:2]``) and a port (``a1:2222``), in YAML keys and INI lines alike.

The rules are ansible-core's: a ``:PORT`` suffix is a port only when what precedes it
is a valid host name or IPv4 address (ranges allowed), or is bracketed (``[v6]:22``);
a range is ``[begin:end]`` or ``[begin:end:step]`` over integers (a begin with leading
zeros pads every name to its width; begin and end must then have the same width) or
over single letters (``a`` … ``z`` then ``A`` … ``Z``); several ranges in one entry
multiply out, the first varying slowest; an empty begin counts from 0.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass

_NUMERIC_RANGE = r"\[(?:[0-9]+:[0-9]+)(?::[0-9]+)?\]"
_ALNUM_RANGE = r"\[(?:[a-z]:[a-z]|[0-9]+:[0-9]+)(?::[0-9]+)?\]"
_LABEL = rf"(?:[\w]|{_ALNUM_RANGE})(?:[\w_-]|{_ALNUM_RANGE})*(?<![_-])"
_HOSTNAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*", re.I)
_IPV4_PART = rf"(?:[01]?[0-9]{{1,2}}|2[0-4][0-9]|25[0-5]|{_NUMERIC_RANGE})"
_IPV4 = re.compile(rf"(?:{_IPV4_PART}\.){{3}}{_IPV4_PART}")
_BRACKETED_PORT = re.compile(r"\[(.+)\]:([0-9]+)")
_HOST_PORT = re.compile(r"((?:[^:\[\]]|\[[^\]]*\])*):([0-9]+)")


class HostPatternError(ValueError):
    """A host entry that cannot be expanded; the message says why."""


@dataclass(frozen=True, slots=True)
class HostEntry:
    """What one host entry stands for: its host names, and the port it sets (if any)."""

    names: tuple[str, ...]
    port: int | None


def _split_port(text: str) -> tuple[str, int | None]:
    """``(host, port)`` when ``text`` ends in a port Ansible would take; else no port."""
    for pattern in (_BRACKETED_PORT, _HOST_PORT):
        match = pattern.fullmatch(text)
        if match:
            host, port = match.group(1), int(match.group(2))
            if pattern is _BRACKETED_PORT or _HOSTNAME.fullmatch(host) or _IPV4.fullmatch(host):
                return host, port
            return text, None
    return text, None


def _expand(pattern: str) -> list[str]:
    """Every name a pattern with ``[...]`` ranges stands for, in Ansible's order."""
    if "[" not in pattern:
        return [pattern]
    head, _, rest = pattern.partition("[")
    body, closed, tail = rest.partition("]")
    if not closed:
        raise HostPatternError(f"range in {pattern!r} has no closing ']'")
    bounds = body.split(":")
    if len(bounds) not in (2, 3):
        raise HostPatternError(
            f"range [{body}] in {pattern!r}: expected [begin:end] or [begin:end:step]"
        )
    begin, end = bounds[0] or "0", bounds[1]
    step_text = bounds[2] if len(bounds) == 3 else "1"
    if not end:
        raise HostPatternError(f"range [{body}] in {pattern!r} has no end")
    try:
        step = int(step_text)
    except ValueError:
        raise HostPatternError(f"range [{body}] in {pattern!r}: step must be a number") from None
    if step < 1:
        raise HostPatternError(f"range [{body}] in {pattern!r}: step must be 1 or more")
    width = len(begin) if begin.startswith("0") and len(begin) > 1 else 0
    if width and len(end) != width:
        raise HostPatternError(
            f"range [{body}] in {pattern!r}: begin and end must have the same width "
            f"when begin has leading zeros (e.g. [01:20])"
        )
    letters = string.ascii_letters
    items: list[str]
    if begin in letters and end in letters and len(begin) == len(end) == 1:
        first, last = letters.index(begin), letters.index(end)
        if first > last:
            raise HostPatternError(f"range [{body}] in {pattern!r}: begin is after end")
        items = list(letters[first : last + 1 : step])
    elif begin.isdigit() and end.isdigit():
        items = [str(n).zfill(width) for n in range(int(begin), int(end) + 1, step)]
    else:
        raise HostPatternError(
            f"range [{body}] in {pattern!r}: expected numbers ([1:20]) or single letters ([a:f])"
        )
    out: list[str] = []
    for item in items:
        out.extend(_expand(f"{head}{item}{tail}"))
    return out


def expand_host_entry(text: str) -> HostEntry:
    """The host names and port of one host entry (a YAML ``hosts:`` key or the first
    word of an INI host line). Raises :class:`HostPatternError`."""
    pattern, port = _split_port(text)
    return HostEntry(tuple(_expand(pattern)), port)
