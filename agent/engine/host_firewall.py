"""Would the host's own firewall drop IKE? Read from the namespace's nftables ruleset
(``nft -j list ruleset``) before the agent starts.

Every base chain on the ``input`` and ``output`` hooks sees the agent's IKE and
ESP-in-UDP datagrams, whatever its priority: a drop in any of them drops the datagram,
the agent's own table's accept notwithstanding. For each such chain of a table that is
not the agent's, the chain is walked as nftables would for a first datagram from a peer
(``ct state new``, no ``ct status`` bit, UDP to our port 500 or 4500 inbound; from
it to the same port outbound) in the address
family the agent listens on, following ``jump`` and ``goto``. A rule that surely matches
decides: accept passes, drop or reject refuses; reaching the end of the chain decides by
its policy.

The walk is conservative, as a refusal stops the agent: what it cannot tell (an address,
an interface, a named set, a rate limit, an expression it does not know) may match, so
an accept behind it passes the datagram, and a drop behind it is not held against the
ruleset. Only a drop the datagram cannot avoid refuses. iptables-nft rulesets show here
as nftables tables too; their ``xt`` matches are expressions the walk does not know.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .kill_switch import KILL_SWITCH_TABLE

MAX_DEPTH = 16
"""Jumps followed from a base chain; deeper is taken as a possible accept."""
L4_NUMBERS = {"tcp": 6, "udp": 17, "icmp": 1, "ipv6-icmp": 58, "icmpv6": 58, "esp": 50, "ah": 51}
UDP = 17
_FAMILIES = {"ip": (4,), "ip6": (6,), "inet": (4, 6)}
_NFPROTO = {"ipv4": 4, "ipv6": 6, 2: 4, 10: 6}


class Direction(enum.Enum):
    INPUT = "input"
    OUTPUT = "output"


@dataclass(frozen=True, slots=True)
class Probe:
    """A first IKE datagram of the agent: inbound to ``port``, or outbound from it to
    the peer's ``port``."""

    direction: Direction
    family: int
    port: int


class Tri(enum.Enum):
    YES = "yes"
    NO = "no"
    MAYBE = "maybe"


class Outcome(enum.Enum):
    ACCEPT = "accept"
    MAYBE_ACCEPT = "maybe accept"
    DROP = "drop"
    CONTINUE = "continue"
    """Fell off the end of a regular chain (or returned)."""


@dataclass(frozen=True, slots=True)
class Block:
    """Where a probe is surely dropped: a rule (``handle``) or a base chain's policy."""

    family: str
    table: str
    chain: str
    handle: int | None
    """None: the base chain's policy."""
    rule: str
    """The rule as nft would write it, roughly; empty for the policy."""


@dataclass(frozen=True, slots=True)
class FirewallFinding:
    """Probes a base chain drops, with the rule or policy that drops them."""

    base: str
    """``FAMILY TABLE CHAIN`` of the base chain (hook input or output)."""
    direction: Direction
    block: Block
    ports: tuple[int, ...]
    families: tuple[int, ...]

    def message(self) -> str:
        ports = " and ".join(str(p) for p in self.ports)
        ip = "/".join(f"IPv{f}" for f in self.families)
        field = "dport" if self.direction is Direction.INPUT else "sport"
        where = f"{self.block.family} {self.block.table} {self.block.chain}"
        wanted = f"udp {field} {{ {', '.join(str(p) for p in self.ports)} }} accept"
        if self.block.handle is None:
            what = f"chain {where} ({self.direction.value} hook) ends in policy drop"
            insert = f"nft add rule {where} {wanted}"
            place = "to it"
        else:
            what = f"rule {self.block.rule!r} (handle {self.block.handle}) in chain {where}"
            insert = f"nft insert rule {where} position {self.block.handle} {wanted}"
            place = "before it"
        verb = "received" if self.direction is Direction.INPUT else "sent"
        return (
            f"{what} drops IKE {verb} on UDP {ports} ({ip}); add `{wanted}` {place} "
            f"(`{insert}`, and the same in the host's firewall configuration)"
        )


class _Ruleset:
    def __init__(self, items: Iterable[Mapping[str, Any]]) -> None:
        self.chains: dict[tuple[str, str, str], Mapping[str, Any]] = {}
        self.rules: dict[tuple[str, str, str], list[Mapping[str, Any]]] = {}
        for item in items:
            if "chain" in item:
                c = item["chain"]
                self.chains[(c["family"], c["table"], c["name"])] = c
            elif "rule" in item:
                r = item["rule"]
                self.rules.setdefault((r["family"], r["table"], r["chain"]), []).append(r)


def check_ruleset(document: Mapping[str, Any], probes: Sequence[Probe]) -> list[FirewallFinding]:
    """What in ``document`` (``nft -j list ruleset``) surely drops one of ``probes``,
    grouped per base chain and dropping rule; empty: nothing does."""
    ruleset = _Ruleset(i for i in document.get("nftables", []) if isinstance(i, Mapping))
    found: dict[tuple[str, Direction, Block], list[Probe]] = {}
    for key, chain in ruleset.chains.items():
        family, table, _ = key
        if table == KILL_SWITCH_TABLE and family == "inet":
            continue
        hook = chain.get("hook")
        for probe in probes:
            if hook != probe.direction.value or probe.family not in _FAMILIES.get(family, ()):
                continue
            outcome, block = _walk(ruleset, key, probe, 0)
            if outcome is Outcome.CONTINUE and chain.get("policy") == "drop":
                outcome, block = Outcome.DROP, Block(family, table, key[2], None, "")
            if outcome is Outcome.DROP and block is not None:
                base = " ".join(key)
                found.setdefault((base, probe.direction, block), []).append(probe)
    return [
        FirewallFinding(
            base,
            direction,
            block,
            tuple(sorted({p.port for p in probes})),
            tuple(sorted({p.family for p in probes})),
        )
        for (base, direction, block), probes in found.items()
    ]


def _walk(
    ruleset: _Ruleset, key: tuple[str, str, str], probe: Probe, depth: int
) -> tuple[Outcome, Block | None]:
    if depth > MAX_DEPTH:
        return Outcome.MAYBE_ACCEPT, None
    for rule in ruleset.rules.get(key, []):
        matched = Tri.YES
        for expr in rule.get("expr", []):
            if not isinstance(expr, Mapping) or len(expr) != 1:
                matched = _and(matched, Tri.MAYBE)
                continue
            (name, value), *_ = expr.items()
            if name == "match":
                matched = _and(matched, _match(value, probe))
            elif name in ("limit", "quota", "numgen", "xt"):
                matched = _and(matched, Tri.MAYBE)
            elif name in ("accept", "drop", "reject", "jump", "goto", "return", "queue", "vmap"):
                if matched is Tri.NO:
                    break
                outcome, block = _verdict(ruleset, key, rule, name, value, matched, probe, depth)
                if outcome is not None:
                    return outcome, block
                break
            if matched is Tri.NO:
                break
    return Outcome.CONTINUE, None


def _verdict(
    ruleset: _Ruleset,
    key: tuple[str, str, str],
    rule: Mapping[str, Any],
    name: str,
    value: Any,
    matched: Tri,
    probe: Probe,
    depth: int,
) -> tuple[Outcome | None, Block | None]:
    """The outcome of a rule whose match is ``matched`` (YES or MAYBE), None to go on."""
    sure = matched is Tri.YES
    if name == "vmap":
        return _vmap(ruleset, key, rule, value, matched, probe, depth)
    if name == "accept":
        return (Outcome.ACCEPT if sure else Outcome.MAYBE_ACCEPT), None
    if name in ("drop", "reject"):
        if sure:
            family, table, chain = key
            handle = rule.get("handle")
            return Outcome.DROP, Block(family, table, chain, handle, _show(rule.get("expr", [])))
        return None, None
    if name == "queue" or (name == "return" and not sure):
        return Outcome.MAYBE_ACCEPT, None  # a program decides, or the rest is skipped
    if name == "return":
        return Outcome.CONTINUE, None
    target = value.get("target") if isinstance(value, Mapping) else None
    if not isinstance(target, str):
        return Outcome.MAYBE_ACCEPT, None
    outcome, reached = _walk(ruleset, (key[0], key[1], target), probe, depth + 1)
    if not sure:
        if outcome in (Outcome.ACCEPT, Outcome.MAYBE_ACCEPT):
            return Outcome.MAYBE_ACCEPT, None
        return None, None
    if outcome is Outcome.CONTINUE:
        return (None, None) if name == "jump" else (Outcome.CONTINUE, None)
    return outcome, reached


def _vmap(
    ruleset: _Ruleset,
    key: tuple[str, str, str],
    rule: Mapping[str, Any],
    value: Any,
    matched: Tri,
    probe: Probe,
    depth: int,
) -> tuple[Outcome | None, Block | None]:
    """A verdict map: the element the probe's key selects, when it can be told."""
    elements = value.get("data", {}).get("set") if isinstance(value, Mapping) else None
    if not isinstance(elements, list):
        return Outcome.MAYBE_ACCEPT, None
    possible = []
    for element in elements:
        if not (isinstance(element, list) and len(element) == 2):
            return Outcome.MAYBE_ACCEPT, None
        hit = _match({"op": "==", "left": value.get("key"), "right": element[0]}, probe)
        hit = _and(hit, matched)
        if hit is Tri.NO:
            continue
        (name, verdict), *_ = element[1].items()
        possible.append((hit, name, verdict))
    for hit, name, verdict in possible:
        outcome, block = _verdict(ruleset, key, rule, name, verdict, hit, probe, depth)
        if outcome is not None:
            return outcome, block
    return None, None


def _and(a: Tri, b: Tri) -> Tri:
    if Tri.NO in (a, b):
        return Tri.NO
    if Tri.MAYBE in (a, b):
        return Tri.MAYBE
    return Tri.YES


def _match(match: Any, probe: Probe) -> Tri:
    """Whether a ``match`` expression holds for the probe's datagram."""
    if not isinstance(match, Mapping):
        return Tri.MAYBE
    left, op, right = match.get("left"), match.get("op"), match.get("right")
    if not isinstance(left, Mapping) or len(left) != 1:
        return Tri.MAYBE
    (kind, what), *_ = left.items()
    if not isinstance(what, Mapping):
        return Tri.MAYBE
    if kind == "payload":
        protocol, field = what.get("protocol"), what.get("field")
        if (protocol == "ip" and probe.family != 4) or (protocol == "ip6" and probe.family != 6):
            return Tri.NO
        if protocol in ("ip", "ip6") and field in ("protocol", "nexthdr"):
            return _compare(op, right, _l4(UDP))
        if protocol in ("udp", "th") and field in ("sport", "dport"):
            # A first datagram out goes to the peer's port, the same as ours; one in may
            # come from any port (a peer behind a NAT).
            known = field == "dport" or probe.direction is Direction.OUTPUT
            return _compare(op, right, [probe.port]) if known else Tri.MAYBE
        if protocol in ("udp", "th", "ip", "ip6", None):
            return Tri.MAYBE
        return Tri.NO  # a header the datagram has not (tcp, icmp …): never matches
    if kind == "meta":
        key = what.get("key")
        if key == "l4proto":
            return _compare(op, right, _l4(UDP))
        if key == "nfproto":
            return _compare(op, right, ["ipv4" if probe.family == 4 else "ipv6", probe.family])
        if key in ("iif", "iifname", "oif", "oifname"):
            # Datagrams to and from peers never cross loopback; other names may be theirs.
            loopback_only = _values(right) == ["lo"]
            if loopback_only and op in ("==", "in"):
                return Tri.NO
            if loopback_only and op == "!=":
                return Tri.YES
        return Tri.MAYBE
    if kind == "ct" and what.get("key") == "state" and "dir" not in what:
        return _compare(op, right, ["new"])
    if kind == "ct" and what.get("key") == "status" and "dir" not in what:
        # A first datagram to the host's own port: no status bit (dnat, snat …) set yet.
        return _compare(op, right, [])
    return Tri.MAYBE


def _l4(number: int) -> list[Any]:
    return [number, *(name for name, n in L4_NUMBERS.items() if n == number)]


def _values(right: Any) -> list[Any] | None:
    """The atoms of a right-hand side (values and ranges), None when it cannot be told
    (a named set, a prefix, an expression)."""
    if isinstance(right, (int, str)) and not (isinstance(right, str) and right.startswith("@")):
        return [right]
    if isinstance(right, Mapping) and "set" in right:
        right = right["set"]
    if isinstance(right, Mapping) and "range" in right:
        return [right]
    if isinstance(right, list):
        out: list[Any] = []
        for item in right:
            atoms = _values(item)
            if atoms is None:
                return None
            out += atoms
        return out
    return None


def _compare(op: Any, right: Any, ours: list[Any]) -> Tri:
    atoms = _values(right)
    if atoms is None or op not in ("==", "in", "!="):
        return Tri.MAYBE
    hit = False
    for atom in atoms:
        if isinstance(atom, Mapping):
            low, high = atom["range"]
            hit = hit or any(isinstance(v, int) and low <= v <= high for v in ours)
        else:
            hit = hit or atom in ours
    return Tri.YES if hit == (op != "!=") else Tri.NO


def _show(exprs: Sequence[Any]) -> str:
    """A rule's expressions, roughly as ``nft list`` writes them (for messages)."""
    words = []
    for expr in exprs:
        if not isinstance(expr, Mapping) or len(expr) != 1:
            words.append("…")
            continue
        (name, value), *_ = expr.items()
        if name == "match" and isinstance(value, Mapping):
            op = "" if value.get("op") in ("==", "in") else f"{value.get('op')} "
            words.append(f"{_show_left(value.get('left'))} {op}{_show_right(value.get('right'))}")
        elif name in ("jump", "goto") and isinstance(value, Mapping):
            words.append(f"{name} {value.get('target')}")
        else:
            words.append(name)
    return " ".join(words)


def _show_left(left: Any) -> str:
    if isinstance(left, Mapping) and len(left) == 1:
        (kind, what), *_ = left.items()
        if isinstance(what, Mapping):
            if kind == "payload":
                return f"{what.get('protocol')} {what.get('field')}"
            return f"{kind} {what.get('key')}"
    return "…"


def _show_right(right: Any) -> str:
    if isinstance(right, Mapping) and "set" in right:
        return "{ " + ", ".join(_show_right(v) for v in right["set"]) + " }"
    if isinstance(right, Mapping) and "range" in right:
        return "-".join(str(v) for v in right["range"])
    if isinstance(right, list):
        return ",".join(_show_right(v) for v in right)
    return str(right)
