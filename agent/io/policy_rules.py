"""Policy-routing rules (``ip rule``) as values: what the agent asks of the kernel, and
what a dump of the kernel's rules reads back as.

Port ranges are matched by the kernel's FIB rules since Linux 4.17 (FRA_IP_PROTO,
FRA_SPORT_RANGE, FRA_DPORT_RANGE); :class:`PolicyRule` checks every field before any
netlink request, so a bad rule is an error naming the field.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from typing import Any


def parse_prefix(value: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    try:
        return ipaddress.ip_network(value, strict=True)
    except ValueError as exc:
        raise ValueError(f"bad prefix {value!r}: {exc}") from None


def check_table(table: int | None) -> None:
    if table is not None and not 1 <= table <= 0xFFFFFFFF:
        raise ValueError(f"routing table must be 1..4294967295, got {table}")


PORT_PROTOCOLS = frozenset({6, 17, 132})
"""TCP, UDP and SCTP: the protocols whose ports a policy-routing rule can match."""


@dataclass(frozen=True, slots=True)
class PolicyRule:
    """One policy-routing rule (``ip rule``): packets matching every field given look up
    ``table``. Port ranges are inclusive and need ``protocol`` to be TCP, UDP or SCTP."""

    priority: int
    table: int
    family: int = 4
    source: str | None = None
    """Source prefix, or None for any."""
    destination: str | None = None
    protocol: int = 0
    """IP protocol number; 0 for any."""
    source_ports: tuple[int, int] | None = None
    destination_ports: tuple[int, int] | None = None
    fwmark: int | None = None

    def __post_init__(self) -> None:
        if self.family not in (4, 6):
            raise ValueError(f"rule family must be 4 or 6, got {self.family}")
        check_table(self.table)
        if not 0 <= self.priority <= 0xFFFFFFFF:
            raise ValueError(f"rule priority must be 0..4294967295, got {self.priority}")
        for what, value in (("source", self.source), ("destination", self.destination)):
            if value is not None and parse_prefix(value).version != self.family:
                raise ValueError(f"rule {what} {value} is not an IPv{self.family} prefix")
        if not 0 <= self.protocol <= 255:
            raise ValueError(f"IP protocol must be 0..255, got {self.protocol}")
        for ports in (self.source_ports, self.destination_ports):
            if ports is None:
                continue
            if self.protocol not in PORT_PROTOCOLS:
                raise ValueError(
                    f"ports {ports[0]}-{ports[1]} need protocol tcp, udp or sctp, "
                    f"got {self.protocol}"
                )
            if not 0 <= ports[0] <= ports[1] <= 65535:
                raise ValueError(f"bad port range {ports[0]}-{ports[1]}")
        if self.fwmark is not None and not 1 <= self.fwmark <= 0xFFFFFFFF:
            raise ValueError(f"firewall mark must be 1..0xffffffff, got {self.fwmark}")

    def __str__(self) -> str:
        words = [f"{self.priority}: from {self.source or 'all'}"]
        if self.destination:
            words.append(f"to {self.destination}")
        if self.fwmark is not None:
            words.append(f"fwmark {self.fwmark:#x}")
        if self.protocol:
            words.append(f"ipproto {self.protocol}")
        for name, ports in (("sport", self.source_ports), ("dport", self.destination_ports)):
            if ports is not None:
                words.append(f"{name} {ports[0]}-{ports[1]}")
        words.append("lookup main" if self.table == 254 else f"lookup {self.table}")
        return ("-6 " if self.family == 6 else "") + " ".join(words)

    def netlink_args(self) -> dict[str, Any]:
        family = socket.AF_INET6 if self.family == 6 else socket.AF_INET
        args: dict[str, Any] = {"family": family, "table": self.table, "priority": self.priority}
        for key, value in (("src", self.source), ("dst", self.destination)):
            if value is not None:
                net = parse_prefix(value)
                args[key] = str(net.network_address)
                args[f"{key}_len"] = net.prefixlen
        if self.protocol:
            args["ip_proto"] = self.protocol
        if self.source_ports is not None:
            args["sport_range"] = f"{self.source_ports[0]}:{self.source_ports[1]}"
        if self.destination_ports is not None:
            args["dport_range"] = f"{self.destination_ports[0]}:{self.destination_ports[1]}"
        if self.fwmark is not None:
            args["fwmark"] = self.fwmark
        return args


# Rule attributes PolicyRule does not model: a rule with any of them is not one of ours.
_FOREIGN_RULE_ATTRS = (
    "FRA_IIFNAME",
    "FRA_OIFNAME",
    "FRA_GOTO",
    "FRA_UID_RANGE",
    "FRA_L3MDEV",
    "FRA_TUN_ID",
    "FRA_FLOW",
)
FR_ACT_TO_TBL = 1


def rule_from_netlink(msg: Any) -> PolicyRule | None:
    """The PolicyRule a dumped rule is, or None when it is something else (another
    action, an attribute PolicyRule does not model)."""
    if msg["action"] != FR_ACT_TO_TBL or any(msg.get(a) is not None for a in _FOREIGN_RULE_ATTRS):
        return None
    # The kernel reports every rule with these two, 0xffffffff meaning "not set".
    for unset_by_default in ("FRA_SUPPRESS_PREFIXLEN", "FRA_SUPPRESS_IFGROUP", "FRA_FWMASK"):
        if msg.get(unset_by_default) not in (None, 0xFFFFFFFF):
            return None
    if msg["tos"]:
        return None
    family = 6 if msg["family"] == socket.AF_INET6 else 4

    def prefix(key: str) -> str | None:
        length = msg[f"{key}_len"]
        if not length:
            return None
        return f"{msg.get(key)}/{length}"

    def ports(key: str) -> tuple[int, int] | None:
        value = msg.get(key)
        if not value:
            return None
        start, end = (int(p) for p in str(value).split(":"))
        return (start, end)

    try:
        return PolicyRule(
            priority=int(msg.get("priority") or 0),
            table=int(msg.get("table") or msg["table"]),
            family=family,
            source=prefix("src"),
            destination=prefix("dst"),
            protocol=int(msg.get("ip_proto") or 0),
            source_ports=ports("sport_range"),
            destination_ports=ports("dport_range"),
            fwmark=msg.get("fwmark") or None,
        )
    except ValueError:
        return None
