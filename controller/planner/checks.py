"""Validation helpers for topology.yaml: every error collected, each at file:line:col."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from typing import Any

from vpnfleet.controller.inventory import (
    Inventory,
    InventoryError,
    InventoryWarning,
    Mark,
    did_you_mean,
    key_mark,
    mark_of,
)

from .model import IkeVersion, Proposal
from .proposals import ProposalError, ProposalKind, parse_proposal

PROTOCOLS = {
    "any": 0,
    "icmp": 1,
    "tcp": 6,
    "udp": 17,
    "gre": 47,
    "esp": 50,
    "ah": 51,
    "icmpv6": 58,
    "ipv6-icmp": 58,
    "sctp": 132,
}
PORTED = (6, 17, 132)
_ANY_V4, _ANY_V6 = "0.0.0.0/0", "::/0"


def describe(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return repr(value) if not isinstance(value, str) else repr(str(value))


class TopologyChecker:
    """Collects every topology error, each at its file:line:col."""

    def __init__(self, inventory: Inventory, top_mark: Mark | None) -> None:
        self.inventory = inventory
        self.errors: list[InventoryError] = []
        self.warnings: list[InventoryWarning] = []
        self.top_mark = top_mark

    def error(self, message: str, where: Any = None, *, at: Mark | None = None) -> None:
        self.errors.append(InventoryError(message, at or mark_of(where) or self.top_mark))

    def warn(self, message: str, where: Any = None) -> None:
        """Something that plans but is likely unwise (as the loader's warnings)."""
        self.warnings.append(InventoryWarning(message, mark_of(where) or self.top_mark))

    def entries(self, top: Mapping[str, Any], key: str) -> list[Mapping[str, Any]]:
        value = top.get(key)
        if value is None:
            return []
        if not isinstance(value, list):
            self.error(f"{key}: expected a list, got {describe(value)}", value)
            return []
        out: list[Mapping[str, Any]] = []
        for index, item in enumerate(value):
            if not isinstance(item, dict):
                self.error(
                    f"{key}[{index}]: expected a mapping, got {describe(item)}", item or value
                )
                continue
            out.append(item)
        return out

    def keys(
        self, entry: Mapping[str, Any], what: str, allowed: Sequence[str], required: Sequence[str]
    ) -> bool:
        ok = True
        for key in entry:
            if key not in allowed:
                hint = did_you_mean(key, allowed) or f" (expected {', '.join(allowed)})"
                self.error(f"{what}: unknown key {key!r}{hint}", at=key_mark(entry, key))
                ok = False
        for key in required:
            if entry.get(key) in (None, ""):
                self.error(f"{what}: missing {key!r}", entry)
                ok = False
        return ok

    def string(self, entry: Mapping[str, Any], key: str, what: str) -> str | None:
        value = entry.get(key)
        if value is None:
            return None
        if not isinstance(value, str) or not value.strip():
            self.error(f"{what}: {key}: expected a non-empty string, got {describe(value)}", value)
            return None
        return value

    def group(self, entry: Mapping[str, Any], key: str, what: str) -> list[str] | None:
        name = self.string(entry, key, what)
        if name is None:
            return None
        if name not in self.inventory.groups:
            hint = did_you_mean(name, self.inventory.groups)
            self.error(f"{what}: {key}: no group named {name!r}{hint}", name)
            return None
        return self.inventory.group_hosts(name)

    def host(self, entry: Mapping[str, Any], key: str, what: str) -> str | None:
        name = self.string(entry, key, what)
        if name is None:
            return None
        if name not in self.inventory.hosts:
            hint = did_you_mean(name, self.inventory.hosts)
            self.error(f"{what}: {key}: no host named {name!r} in the inventory{hint}", name)
            return None
        return name

    def pattern(self, entry: Mapping[str, Any], key: str, what: str) -> list[str] | None:
        text = self.string(entry, key, what)
        if text is None:
            return list(self.inventory.hosts) if key not in entry else None
        try:
            return self.inventory.hosts_matching(text)
        except InventoryError as exc:
            self.error(f"{what}: {key}: {exc.message}", text)
            return None

    def prefix(self, value: Any, what: str, *, allow_any: bool = False) -> str | None:
        if allow_any and (value is None or value == "any"):
            return "any"
        if not isinstance(value, str):
            self.error(f"{what}: expected a CIDR prefix, got {describe(value)}", value)
            return None
        try:
            return ipaddress.ip_network(value.strip()).compressed
        except ValueError:
            try:
                loose = ipaddress.ip_network(value.strip(), strict=False)
            except ValueError:
                self.error(f"{what}: {value!r} is not a CIDR prefix like 10.1.0.0/16", value)
            else:
                self.error(f"{what}: {value!r} has host bits set (did you mean '{loose}'?)", value)
            return None

    def prefixes(self, entry: Mapping[str, Any], key: str, what: str) -> tuple[str, ...] | None:
        value = entry.get(key)
        if value is None:
            return ()
        if not isinstance(value, list):
            self.error(f"{what}: {key}: expected a list of CIDR prefixes", value)
            return None
        out = [self.prefix(item, f"{what}: {key}[{i}]") for i, item in enumerate(value)]
        good = [p for p in out if p is not None]
        return tuple(good) if len(good) == len(out) else None

    def proposals(
        self,
        entry: Mapping[str, Any],
        key: str,
        what: str,
        kind: ProposalKind,
        version: IkeVersion | None = IkeVersion.V2,
    ) -> tuple[Proposal, ...]:
        """The proposals of ``entry[key]`` read for IKE ``version`` (None: the version
        is itself wrong, and the proposals are not checked)."""
        value = entry.get(key)
        if value is None:
            return ()
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            self.error(f"{what}: {key}: expected a list of proposal strings", value)
            return ()
        out = []
        if version is None:
            return ()
        for item in value:
            try:
                out.append(parse_proposal(item, kind, version))
            except ProposalError as exc:
                self.error(f"{what}: {key}: {exc}", item or value)
        return tuple(out)

    def ports(self, value: Any, what: str) -> tuple[int, int] | None:
        if value is None or value == "any":
            return (0, 65535)
        text = str(value).strip()
        low, sep, high = text.partition("-")
        try:
            start, end = int(low), int(high) if sep else int(low)
        except ValueError:
            self.error(f"{what}: expected a port like 80 or a range like 1000-2000", value)
            return None
        if not (0 <= start <= end <= 65535):
            self.error(f"{what}: {text!r} is not a port range within 0-65535", value)
            return None
        return (start, end)

    def protocol(self, value: Any, what: str) -> int | None:
        if value is None:
            return 0
        if isinstance(value, int) and not isinstance(value, bool):
            if 0 <= value <= 255:
                return int(value)
        elif isinstance(value, str) and value.lower() in PROTOCOLS:
            return PROTOCOLS[value.lower()]
        hint = did_you_mean(value, PROTOCOLS) if isinstance(value, str) else ""
        self.error(
            f"{what}: protocol: expected a name ({', '.join(PROTOCOLS)}) or a number "
            f"0..255, got {describe(value)}{hint}",
            value,
        )
        return None
