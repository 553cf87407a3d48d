"""Random Ansible YAML inventory directories, and random ``--limit`` patterns for them.

:func:`inventories` is a hypothesis strategy of :class:`Generated`: a directory layout
(``hosts.yaml``, ``group_vars/``, ``host_vars/``, each vars source a file or a directory
of files) given as ``{relative path: text}``, plus limit patterns. Groups nest up to
:data:`MAX_DEPTH` deep (a group may have several parents), hosts sit in several groups,
``ansible_group_priority`` is set inline, and variables of every YAML type and spelling
(strings, ints in hex, octal and sexagesimal, floats, infinities, NaN, booleans as
``yes``/``off``, nulls, dates and timestamps, lists and nested mappings) are set at every
level: inline host and group vars, and group_vars/ and host_vars/ files and directories.
The YAML text is written here, spelling by spelling, so both readers parse the same text.

Every inventory is one vpnfleet accepts: each host has its own ``address``, variables of
the operator's own start with ``x_``, and vpnfleet's own variables get valid values
(durations sometimes written as text: ``4h``).

:class:`Features` switches on what needs more of vpnfleet than the common ground.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass, field
from typing import Any

import yaml
from hypothesis import strategies as st

MAX_DEPTH = 6  # groups below "all"


@dataclass(frozen=True)
class Features:
    """What the generator may use beyond the common ground (all on: the whole issue)."""

    regex_from_start: bool = True  # `~regex` terms that match inside names, not at the start
    mixed_separators: bool = True  # `a:b,c`: Ansible splits at commas only
    subscripts: bool = True  # `group[0]`, `group[1:2]`, `group[-1]`
    priority_in_group_vars: bool = True  # ansible_group_priority in group_vars/ files
    connection_vars: bool = True  # ansible_host, ansible_port, ansible_user, ... anywhere
    vars_file_types: bool = True  # .json and extensionless vars files, README/backup beside
    unknown_group_vars: bool = True  # group_vars/ for a group the inventory lacks
    merge_keys: bool = True  # `<<: *anchor` with overrides
    duplicate_keys: bool = True  # the same key twice in a mapping (the last one counts)
    non_string_keys: bool = True  # true, 2, 1.5, null as mapping keys
    unsafe_tag: bool = True  # !unsafe strings
    ini: bool = True  # the hosts file in INI form (hosts or hosts.ini) instead of YAML
    host_ranges: bool = True  # `web[01:03]`, `db-[a:c]` standing for several hosts


@dataclass
class Generated:
    """One inventory: its files and the limit patterns to try on it."""

    files: dict[str, str]
    source: str  # the hosts file: hosts.yaml, or hosts / hosts.ini (INI)
    patterns: list[str]
    hosts: list[str]
    groups: list[str]
    notes: list[str] = field(default_factory=list)  # features this example uses

    def __repr__(self) -> str:  # what hypothesis prints for a counterexample
        parts = [f"# uses: {', '.join(self.notes) or 'common ground only'}"]
        for path, text in sorted(self.files.items()):
            parts.append(f"==> {path} <==\n{text}")
        parts.append(f"patterns: {self.patterns!r}")
        return "\n".join(parts)


# ----------------------------------------------------------------- YAML values


@dataclass(frozen=True)
class Raw:
    """A scalar exactly as written (a spelling)."""

    text: str


@dataclass(frozen=True)
class Map:
    items: tuple[tuple[str, Any], ...]  # (key as written, value)
    flow: bool = False


@dataclass(frozen=True)
class Seq:
    items: tuple[Any, ...]
    flow: bool = False


@dataclass(frozen=True)
class Block:
    """A literal (|) or folded (>) block scalar."""

    style: str
    lines: tuple[str, ...]


SPELLINGS = (
    # integers: decimal, signed, hex, YAML 1.1 octal and binary, underscores, sexagesimal
    "0",
    "7",
    "-3",
    "+12",
    "0x1F",
    "017",
    "0b101",
    "1_000",
    "190:20:30",
    "12345678901234567890",
    # floats
    "1.5",
    "-0.25",
    ".5",
    "1.0e+3",
    "6.8523015e+5",
    "1_000.5",
    ".inf",
    "-.Inf",
    ".nan",
    # booleans, YAML 1.1 spellings included
    "true",
    "false",
    "True",
    "FALSE",
    "yes",
    "No",
    "on",
    "OFF",
    # nulls
    "null",
    "~",
    "Null",
    # dates and timestamps
    "2020-01-02",
    "2001-12-14t21:59:43.10-05:00",
    "2001-12-14 21:59:43",
    "2002-12-14T21:59:43Z",
    # strings that look like something else, quoted, or plain
    "'123'",
    '"true"',
    "'2020-01-02'",
    "y",
    "n",
    "hello",
    "a b c",
    "é",
    '"tab\\there"',
    "'it''s'",
    "10.0.0.1",
    "2001:db8::1",
    "1.2.3",
    "0o17",
    "0x",
    "1e3",
)

_plain_words = st.from_regex(r"[a-z][a-z0-9 _.-]{0,10}[a-z0-9]", fullmatch=True)
_any_text = st.text(
    alphabet=st.characters(whitelist_categories=("L", "N", "P", "S", "Zs")), max_size=12
)


def _quoted(text: str) -> Raw:
    return Raw(json.dumps(text, ensure_ascii=False))  # JSON strings are YAML double-quoted


@functools.cache
def scalars() -> st.SearchStrategy[Any]:
    return st.one_of(
        st.sampled_from(SPELLINGS).map(Raw),
        _any_text.map(_quoted),
        st.integers(-(2**40), 2**40).map(lambda n: Raw(str(n))),
        st.floats(allow_nan=False, allow_infinity=False, width=64).map(lambda f: Raw(repr(f))),
        st.builds(
            Block,
            st.sampled_from(["|", ">", "|-", ">+"]),
            st.lists(_plain_words, min_size=1, max_size=3).map(tuple),
        ),
    )


def _reads_as_text(word: str) -> bool:
    """Whether YAML reads ``word`` as a string (``no``, ``on``, ``null`` are not)."""
    return isinstance(yaml.safe_load(word), str)


def _keys(features: Features) -> st.SearchStrategy[str]:
    keys = st.from_regex(r"[a-z][a-z0-9_]{0,5}", fullmatch=True)
    if not features.non_string_keys:
        keys = keys.filter(_reads_as_text)
    if features.non_string_keys:
        return st.one_of(keys, st.sampled_from(["true", "False", "2", "10", "1.5", "null"]))
    return keys


@functools.cache
def values(features: Features) -> st.SearchStrategy[Any]:
    """Any YAML value: scalars, lists and mappings nested a few levels."""

    def extend(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
        return st.one_of(
            st.builds(Seq, st.lists(inner, max_size=4).map(tuple), st.booleans()),
            st.builds(
                Map,
                st.lists(
                    st.tuples(_keys(features), inner),
                    max_size=4,
                    unique_by=None if features.duplicate_keys else (lambda kv: kv[0]),
                ).map(tuple),
                st.booleans(),
            ),
        )

    return st.recursive(scalars(), extend, max_leaves=8)


def _flow(value: Any) -> str:
    if isinstance(value, Raw):
        return value.text
    if isinstance(value, Map):
        return "{" + ", ".join(f"{k}: {_flow(v)}" for k, v in value.items) + "}"
    if isinstance(value, Seq):
        return "[" + ", ".join(_flow(v) for v in value.items) + "]"
    raise TypeError(value)


def _block_lines(key: str, value: Any, indent: int) -> list[str]:
    """``key: value`` at ``indent`` spaces, the value in block style where it asks."""
    pad = " " * indent
    if isinstance(value, Block):
        return [f"{pad}{key}: {value.style}", *(f"{pad}  {line}" for line in value.lines)]
    if isinstance(value, Raw) and value.text.startswith(("!", "&", "*")):
        return [f"{pad}{key}: {value.text}"]
    if isinstance(value, Map) and value.items and not value.flow:
        out = [f"{pad}{key}:"]
        for k, v in value.items:
            out += _block_lines(k, v, indent + 2)
        return out
    if (
        isinstance(value, Seq)
        and value.items
        and not value.flow
        and not any(isinstance(v, Block) for v in value.items)
    ):
        out = [f"{pad}{key}:"]
        for item in value.items:
            if isinstance(item, Map) and item.items and not item.flow:
                first, *rest = item.items
                out += _item_lines(first, rest, indent + 2)
            else:
                out.append(f"{pad}  - {_flow_or_quoted(item)}")
        return out
    return [f"{pad}{key}: {_flow_or_quoted(value)}"]


def _item_lines(first: tuple[str, Any], rest: list[tuple[str, Any]], indent: int) -> list[str]:
    lines = _block_lines(first[0], first[1], indent + 2)
    lines[0] = " " * indent + "- " + lines[0].lstrip()
    for k, v in rest:
        lines += _block_lines(k, v, indent + 2)
    return lines


def _flow_or_quoted(value: Any) -> str:
    if isinstance(value, Block):  # inside flow style: the same lines as a quoted string
        return json.dumps(" ".join(value.lines))
    if isinstance(value, Map | Seq):
        return _flow(
            Map(tuple((k, _as_flow_leaf(v)) for k, v in value.items))
            if isinstance(value, Map)
            else Seq(tuple(_as_flow_leaf(v) for v in value.items))
        )
    return _flow(value)


def _as_flow_leaf(value: Any) -> Any:
    if isinstance(value, Block):
        return Raw(json.dumps(" ".join(value.lines)))
    if isinstance(value, Map):
        return Map(tuple((k, _as_flow_leaf(v)) for k, v in value.items), True)
    if isinstance(value, Seq):
        return Seq(tuple(_as_flow_leaf(v) for v in value.items), True)
    return value


def mapping_lines(variables: list[tuple[str, Any]], indent: int) -> list[str]:
    out: list[str] = []
    for key, value in variables:
        out += _block_lines(key, value, indent)
    return out


# ----------------------------------------------------------------- vpnfleet's own variables

_OWN = {
    "mode": ["tunnel", "transport"],
    "start_action": ["start", "trap", "none"],
    "auth": ["psk"],
    "nat": ["true", "false", "yes", "off"],
    "force_encap": ["true", "false"],
    "ike_fragmentation": ["true", "no"],
    "psk_epoch": ["1", "2", "0x10"],
    "ike_version": ["1", "2", "0x2"],
    # false spellings only: ike_aggressive true beside the default ike_version 2 is a
    # (deliberate) vpnfleet error, which the parity test does not look for.
    "ike_aggressive": ["false", "no", "off"],
    "agent_port": ["50051", "2222"],
    "child_lifetime_bytes": ["0", "1000000"],
    "ike_lifetime": ["4h", "3600", "90m", "1d", "7200s"],
    "child_lifetime": ["1h", "1800", "45m"],
    "nat_keepalive": ["20s", "30", "1m"],
}

_CONNECTION = {
    "ansible_host": ["192.0.2.7", "gw.example.net"],
    "ansible_port": ["22", "2222"],
    "ansible_user": ["root", "deploy"],
    "ansible_connection": ["ssh", "local"],
    "ansible_become": ["true", "no"],
    "ansible_python_interpreter": ["/usr/bin/python3"],
    "ansible_ssh_private_key_file": ["~/.ssh/id_ed25519"],
}

_USER_NAMES = ("x_a", "x_b", "x_c", "x_list", "x_map", "x_date", "x_nested")


@functools.cache
def variables(features: Features) -> st.SearchStrategy[list[tuple[str, Any]]]:
    """A mapping of variables (names repeat across levels, so precedence is exercised)."""
    user = st.tuples(st.sampled_from(_USER_NAMES), values(features))
    own = st.sampled_from(sorted(_OWN)).flatmap(
        lambda name: st.tuples(st.just(name), st.sampled_from(_OWN[name]).map(Raw))
    )
    kinds = [user, user, own]
    if features.connection_vars:
        kinds.append(
            st.sampled_from(sorted(_CONNECTION)).flatmap(
                lambda name: st.tuples(st.just(name), st.sampled_from(_CONNECTION[name]).map(Raw))
            )
        )
    return st.lists(st.one_of(kinds), max_size=4, unique_by=lambda kv: kv[0])


# INI values: one token each. Inline host values are Python literals to Ansible
# (1, True, [1,2] ...), those of [group:vars] sections are strings.
_INI_TOKENS = (
    "1",
    "-2",
    "1.5",
    "True",
    "False",
    "None",
    "word",
    "'quoted'",
    "[1,2]",
    "{'k':1}",
    "2020-01-02",
    "0x1F",
    "yes",
    "4h",
    "a=b",
)
_INI_OWN = {
    "mode": ["tunnel", "transport"],
    "start_action": ["start", "trap", "none"],
    "auth": ["psk"],
    "ike_lifetime": ["4h", "3600", "90m"],
    "child_lifetime": ["1h", "45m"],
}


@functools.cache
def ini_variables() -> st.SearchStrategy[list[tuple[str, Any]]]:
    user = st.tuples(st.sampled_from(_USER_NAMES), st.sampled_from(_INI_TOKENS).map(Raw))
    own = st.sampled_from(sorted(_INI_OWN)).flatmap(
        lambda name: st.tuples(st.just(name), st.sampled_from(_INI_OWN[name]).map(Raw))
    )
    return st.lists(st.one_of(user, user, own), max_size=3, unique_by=lambda kv: kv[0])


# ----------------------------------------------------------------- the inventory


# Names YAML reads as text: a host `on:` would be the boolean true to both readers.
_host_names = st.from_regex(
    r"[a-z][a-z0-9]{0,3}(-[a-z0-9]{1,2})?(\.[a-z][a-z0-9]{0,2})?", fullmatch=True
)
_group_names = st.from_regex(r"[a-z][a-z0-9_]{0,5}(-[a-z0-9]{1,2})?", fullmatch=True)
_host_names = _host_names.filter(_reads_as_text)
_group_names = _group_names.filter(_reads_as_text)
_RESERVED = {"all", "ungrouped", "localhost", "vars", "hosts", "children"}


@dataclass
class _Group:
    name: str
    parents: list[str]  # [] for a child of all
    home: str  # the parent under which its definition is written ("all" at the top)
    level: int
    hosts: list[str] = field(default_factory=list)
    vars_parts: list[list[tuple[str, Any]]] = field(default_factory=list)
    priority: int | None = None
    key_order: tuple[str, ...] = ("vars", "hosts", "children")


def _vars_sources(
    draw: st.DrawFn,
    features: Features,
    kind: str,
    name: str,
    files: dict[str, str],
    notes: list[str],
    required: list[tuple[str, Any]],
) -> None:
    """group_vars/NAME or host_vars/NAME: none, a file, or a directory of files (the
    ``required`` variables first in the first file read)."""
    layout = draw(st.sampled_from(["none", "none", "file", "dir"]))
    if layout == "none" and required:
        layout = "file"
    if layout == "none":
        return
    suffixes = [".yaml", ".yml"]
    if features.vars_file_types:
        suffixes += [".json", ""]
    if kind == "group_vars" and features.priority_in_group_vars and draw(st.booleans()):
        required = [*required, ("ansible_group_priority", Raw(str(draw(st.integers(-3, 12)))))]
        notes.append("priority_in_group_vars")
    if layout == "file":
        suffix = draw(st.sampled_from(suffixes))
        if suffix in (".json", ""):
            notes.append("vars_file_types")
        body = required + draw(variables(features))
        files[f"{kind}/{name}{suffix}"] = _vars_text(body, suffix, draw, features, notes)
        return
    for index in range(draw(st.integers(1, 3))):
        sub = draw(st.sampled_from(["", "", "sub/"])) if index else ""
        suffix = draw(st.sampled_from(suffixes))
        if suffix in (".json", ""):
            notes.append("vars_file_types")
        body = (required if index == 0 else []) + draw(variables(features))
        files[f"{kind}/{name}/{sub}{index:02d}-{draw(_group_names)}{suffix}"] = _vars_text(
            body, suffix, draw, features, notes
        )
    if features.vars_file_types and draw(st.booleans()):
        files[f"{kind}/{name}/README.md"] = "# notes, not variables\n"
        files[f"{kind}/{name}/old.yaml~"] = "x_a: backup\n"
        notes.append("vars_file_types")


def _vars_text(
    body: list[tuple[str, Any]], suffix: str, draw: st.DrawFn, features: Features, notes: list[str]
) -> str:
    if suffix == ".json":
        # JSON is YAML: a flow mapping of the same values, quoted where JSON needs it.
        flow = _flow_or_quoted(Map(tuple((json.dumps(k), v) for k, v in body), True))
        return flow + "\n" if body else "{}\n"
    lines = mapping_lines(body, 0)
    if features.merge_keys and body and draw(st.booleans()):
        notes.append("merge_keys")
        lines += ["x_defaults: &defaults", *mapping_lines(body, 2), "x_merged:", "  <<: *defaults"]
        lines += mapping_lines(body[:1], 2)  # an override of a merged key
    if features.duplicate_keys and body and draw(st.booleans()):
        notes.append("duplicate_keys")
        lines += mapping_lines(body[-1:], 0)
    if features.unsafe_tag and draw(st.booleans()):
        notes.append("unsafe_tag")
        lines.append("x_unsafe: !unsafe '{{ not templated }}'")
    return "\n".join(lines) + "\n" if lines else "---\n"


@st.composite
def inventories(draw: st.DrawFn, features: Features = Features()) -> Generated:
    notes: list[str] = []
    hosts = draw(
        st.lists(_host_names, min_size=1, max_size=7, unique=True).filter(
            lambda names: not _RESERVED & set(names)
        )
    )
    group_names = draw(
        st.lists(_group_names, max_size=9, unique=True).filter(
            lambda names: not (_RESERVED | set(hosts)) & set(names)
        )
    )
    ini = features.ini and draw(st.booleans())
    if ini:
        notes.append("ini")
    inline_vars = ini_variables() if ini else variables(features)
    # Host ranges: a family of hosts written as one pattern, in the same groups.
    families: dict[str, tuple[str, list[str]]] = {}  # member -> (pattern, members)
    if features.host_ranges and draw(st.booleans()):
        notes.append("host_ranges")
        prefix = draw(st.from_regex(r"r[a-z]{1,3}", fullmatch=True))
        count = draw(st.integers(2, 4))
        if draw(st.booleans()):
            members = [f"{prefix}{n:02d}" for n in range(1, count + 1)]
            key = f"{prefix}[01:{count:02d}]"
        else:
            members = [f"{prefix}-{chr(ord('a') + n)}" for n in range(count)]
            key = f"{prefix}-[a:{members[-1][-1]}]"
        if not (set(members) & (set(hosts) | set(group_names))):
            hosts += members
            for member in members:
                families[member] = (key, members)
    groups: dict[str, _Group] = {}
    for name in group_names:
        candidates = [g.name for g in groups.values() if g.level < MAX_DEPTH]
        parents = (
            draw(st.lists(st.sampled_from(candidates), max_size=3, unique=True))
            if candidates
            else []
        )
        level = 1 + max((groups[p].level for p in parents), default=0)
        home = draw(st.sampled_from(parents)) if parents else "all"
        groups[name] = _Group(name, parents, home, level)
        groups[name].key_order = tuple(draw(st.permutations(["vars", "hosts", "children"])))
        if draw(st.booleans()):
            groups[name].priority = draw(st.integers(-3, 12))
        groups[name].vars_parts = draw(st.lists(inline_vars, max_size=2))

    # Memberships: each host in zero or more groups (zero: listed under all).
    memberships: dict[str, list[str]] = {}
    for host in hosts:
        chosen = (
            draw(st.lists(st.sampled_from(group_names), max_size=3, unique=True))
            if group_names
            else []
        )
        if host in families and families[host][1][0] != host:  # as its family's first
            chosen = [g for g in memberships[families[host][1][0]] if g != "all"]
        memberships[host] = chosen or ["all"]
        for chosen_group in chosen:
            groups[chosen_group].hosts.append(host)
    order = draw(st.permutations(hosts))
    for group in groups.values():
        group.hosts.sort(key=order.index)

    # Host inline vars: per listing, and the address once (inline or in host_vars).
    files: dict[str, str] = {}
    host_inline: dict[tuple[str, str], list[tuple[str, Any]]] = {}
    for index, host in enumerate(hosts):
        address = (
            "address",
            Raw(f"10.{index // 250}.{index % 250 + 1}.{draw(st.integers(1, 254))}"),
        )
        listings = memberships[host]
        for listing in listings:
            host_inline[(host, listing)] = draw(inline_vars)
            if host in families:  # one pattern, one set of inline variables
                first = families[host][1][0]
                host_inline[(host, listing)] = host_inline.get((first, listing), [])
        in_files = host in families or draw(st.booleans())
        if not in_files:
            where = draw(st.sampled_from(listings))
            host_inline[(host, where)] = [address, *host_inline[(host, where)]]
        _vars_sources(
            draw, features, "host_vars", host, files, notes, [address] if in_files else []
        )

    for name in ["all", *group_names]:
        _vars_sources(draw, features, "group_vars", name, files, notes, [])
    if features.unknown_group_vars and draw(st.booleans()):
        files["group_vars/nosuchgroup.yaml"] = "x_a: 1\n"
        notes.append("unknown_group_vars")

    all_vars = draw(inline_vars)
    if ini:
        source = draw(st.sampled_from(["hosts", "hosts.ini"]))
        files[source] = _hosts_ini(groups, memberships, host_inline, all_vars, families)
    else:
        source = "hosts.yaml"
        files[source] = _hosts_yaml(groups, memberships, host_inline, all_vars, families, draw)
    patterns = draw(
        st.lists(limit_patterns(hosts, group_names, features, notes), min_size=1, max_size=6)
    )
    return Generated(files, source, patterns, hosts, group_names, sorted(set(notes)))


def _hosts_yaml(
    groups: dict[str, _Group],
    memberships: dict[str, list[str]],
    host_inline: dict[tuple[str, str], list[tuple[str, Any]]],
    all_vars: list[tuple[str, Any]],
    families: dict[str, tuple[str, list[str]]],
    draw: st.DrawFn,
) -> str:
    def host_lines(group: str, indent: int) -> list[str]:
        out: list[str] = []
        for host, written in _listed(groups, memberships, families, group):
            inline = host_inline.get((host, group), [])
            if inline:
                out.append(" " * indent + f"{written}:")
                out += mapping_lines(inline, indent + 2)
            else:
                out.append(" " * indent + f"{written}:" + draw(st.sampled_from(["", " {}", " ~"])))
        return out

    def group_lines(name: str, indent: int) -> list[str]:
        g = groups[name]
        body: list[str] = []
        for key in g.key_order:
            pad = " " * (indent + 2)
            if key == "vars":
                var_lines: list[tuple[str, Any]] = [kv for part in g.vars_parts[:1] for kv in part]
                if g.priority is not None:
                    var_lines = [*var_lines, ("ansible_group_priority", Raw(str(g.priority)))]
                if var_lines:
                    body += [pad + "vars:", *mapping_lines(var_lines, indent + 4)]
            elif key == "hosts":
                lines = host_lines(name, indent + 4)
                if lines:
                    body += [pad + "hosts:", *lines]
            else:
                kids = child_lines(name, indent + 4)
                if kids:
                    body += [pad + "children:", *kids]
        return [" " * indent + f"{name}:", *body] if body else [" " * indent + f"{name}: {{}}"]

    def child_lines(parent: str, indent: int) -> list[str]:
        out: list[str] = []
        for child in (
            g for g in groups.values() if parent in g.parents or (parent == "all" and not g.parents)
        ):
            if child.home == parent:
                out += group_lines(child.name, indent)
            else:  # named here too; a second part of its vars may be written here
                extra = child.vars_parts[1:2]
                if extra and extra[0]:
                    out += [" " * indent + f"{child.name}:", " " * (indent + 2) + "vars:"]
                    out += mapping_lines(extra[0], indent + 4)
                else:
                    out.append(" " * indent + f"{child.name}:")
        return out

    lines = ["all:"]
    if all_vars:
        lines += ["  vars:", *mapping_lines(all_vars, 4)]
    top_hosts = host_lines("all", 4)
    if top_hosts:
        lines += ["  hosts:", *top_hosts]
    kids = child_lines("all", 4)
    if kids:
        lines += ["  children:", *kids]
    return "\n".join(lines) + "\n"


def _listed(
    groups: dict[str, _Group],
    memberships: dict[str, list[str]],
    families: dict[str, tuple[str, list[str]]],
    group: str,
) -> list[tuple[str, str]]:
    """(host, as written) for a group's listing: a family once, as its range pattern."""
    members = (
        groups[group].hosts
        if group != "all"
        else [h for h in memberships if "all" in memberships[h]]
    )
    out: list[tuple[str, str]] = []
    seen: set[str] = set()
    for host in members:
        written = families[host][0] if host in families else host
        if written not in seen:
            seen.add(written)
            out.append((host, written))
    return out


def _ini_pairs(variables: list[tuple[str, Any]]) -> list[str]:
    return [f"{name}={value.text}" for name, value in variables]


def _hosts_ini(
    groups: dict[str, _Group],
    memberships: dict[str, list[str]],
    host_inline: dict[tuple[str, str], list[tuple[str, Any]]],
    all_vars: list[tuple[str, Any]],
    families: dict[str, tuple[str, list[str]]],
) -> str:
    """The same inventory in Ansible's INI form."""

    def host_lines(group: str) -> list[str]:
        return [
            " ".join([written, *_ini_pairs(host_inline.get((host, group), []))])
            for host, written in _listed(groups, memberships, families, group)
        ]

    lines = host_lines("all")  # before any section: ungrouped
    if all_vars:
        lines += ["", "[all:vars]", *_ini_pairs(all_vars)]
    for group in groups.values():
        lines += ["", f"[{group.name}]", *host_lines(group.name)]
        group_vars = [kv for part in group.vars_parts for kv in part]
        if group.priority is not None:
            group_vars.append(("ansible_group_priority", Raw(str(group.priority))))
        if group_vars:
            lines += [f"[{group.name}:vars]", *_ini_pairs(group_vars)]
        kids = [g.name for g in groups.values() if group.name in g.parents]
        if kids:
            lines += [f"[{group.name}:children]", *kids]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------- limit patterns


def limit_patterns(
    hosts: list[str], group_names: list[str], features: Features, notes: list[str]
) -> st.SearchStrategy[str]:
    """Patterns of one to four terms: names, globs, ``~regex``, subscripts, each maybe
    with ``&`` or ``!``, joined by ``,`` or ``:``."""
    names = hosts + group_names

    def glob(name: str) -> st.SearchStrategy[tuple[str, str]]:
        made = [name[:1] + "*", "*" + name[-1:], "?" + name[1:], f"[{name[0]}x]*", name[:2] + "*"]
        return st.tuples(st.just("glob"), st.sampled_from(made))

    def regex(name: str) -> st.SearchStrategy[tuple[str, str]]:
        anchored = [f"~^{name[:1]}", f"~^{name[:2]}.*", f"~^{re.escape(name)}$", "~^[a-m]"]
        inside = [f"~{re.escape(name[1:])}", f"~.{re.escape(name[-1:])}", "~[0-9]"]
        return st.one_of(
            st.tuples(st.just("regex"), st.sampled_from(anchored)),
            *(
                [st.tuples(st.just("regex_from_start"), st.sampled_from(inside))]
                if features.regex_from_start
                else []
            ),
        )

    kinds: list[st.SearchStrategy[tuple[str, str]]] = [
        st.tuples(st.just("name"), st.sampled_from([*names, "all", "*"])),
        st.tuples(st.just("name"), st.sampled_from([*names, "nosuch"])),  # nothing, sometimes
        st.sampled_from(names).flatmap(glob),
        st.sampled_from(names).flatmap(regex),
    ]
    if features.subscripts and group_names:
        subscript = st.sampled_from(["[0]", "[1]", "[-1]", "[0:1]", "[1:]"])
        kinds.append(
            st.tuples(
                st.just("subscripts"),
                st.tuples(st.sampled_from(group_names), subscript).map("".join),
            )
        )
    term = st.tuples(st.sampled_from(["", "", "", "&", "!"]), st.one_of(kinds))

    @st.composite
    def pattern(draw: st.DrawFn) -> str:
        parts = draw(st.lists(term, min_size=1, max_size=4))
        if features.mixed_separators and len(parts) > 2 and draw(st.booleans()):
            seps = [draw(st.sampled_from([",", ":"])) for _ in parts[1:]]
        else:
            seps = [draw(st.sampled_from([",", ":"]))] * (len(parts) - 1)
        if len(set(seps)) > 1:
            notes.append("mixed_separators")
        notes.extend(kind for _, (kind, _) in parts if kind in ("regex_from_start", "subscripts"))
        texts = [prefix + text for prefix, (_, text) in parts]
        return texts[0] + "".join(sep + text for sep, text in zip(seps, texts[1:], strict=True))

    return pattern()
