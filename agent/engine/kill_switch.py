"""The kill switch: an nftables table of the agent's own that drops the cleartext of
every protected selector on the interfaces other than the TUN device.

Routing already sends protected traffic into the TUN device, and the tunnel table's
``unreachable`` fallbacks keep it from the main table when the device is gone. The kill
switch is the second, independent guard (RFC 4301 section 4.4.1: what the SPD says to
protect or discard never leaves in the clear), one that needs no process alive: it is
installed with the first plan, replaced whole (one nftables transaction, so there is no
moment without it) whenever the plan changes, left in place when the agent stops,
restarts or is upgraded, and only removed by ``vpnfleet-agent cleanup`` (decommission).

Outbound (hooks output and forward): a packet leaving through an interface other than
the TUN device and loopback that matches a PROTECT or DISCARD entry is dropped; the
agent's own IKE and ESP datagrams carry ``own_mark`` and pass. Inbound (hooks input
and forward): a packet arriving on such an interface that matches the reverse of a
PROTECT or DISCARD entry is dropped (RFC 4301 section 5.2: protected traffic that
arrives unprotected is discarded); ESP, AH and the agent's IKE ports pass, since they are
how protected traffic arrives; so do IPv6 link-local traffic and neighbour discovery
(:data:`LINK_SCOPE`), which no route takes into the tunnel. The entries are matched in
the SPD's order, so a BYPASS entry before them accepts its traffic (the first match
decides). The host's own site subnets inside a protected prefix pass, as routing
``throw``s them to the main table.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from ..io.policy_rules import PolicyRule
from ..plan import AgentPlan, SpdAction
from ..sink import Problem, ProblemKind
from .plan_routes import MAIN_TABLE, own_subnets_inside, selector_rule

KILL_SWITCH_TABLE = "vpnfleet_agent"
"""The name of the agent's nftables table (family inet: IPv4 and IPv6)."""


LINK_SCOPE = (
    "ip6 saddr fe80::/10 accept",
    "ip6 daddr { fe80::/10, ff02::/16 } accept",
    "icmpv6 type { nd-router-solicit, nd-router-advert, nd-neighbor-solicit, "
    "nd-neighbor-advert, nd-redirect } accept",
)
"""What never leaves the link, and IPv6 neighbour discovery (RFC 4861): the kernel's
local table sends it on the underlay whatever the SPD says (a ``::/0`` selector
included), and the underlay needs it to carry ESP at all."""


class FirewallTable(Protocol):
    """What the kill switch needs from :class:`~vpnfleet.agent.io.nftables.NftTable`."""

    async def replace(self, body: str) -> None: ...


@dataclass(frozen=True, slots=True)
class KillSwitchSettings:
    tun_name: str
    own_mark: int
    """The firewall mark on the agent's sockets: its own IKE and ESP pass."""
    ike_ports: tuple[int, ...]
    """The UDP ports the agent receives IKE and ESP-in-UDP on."""


def _quoted(name: str) -> str:
    if not name or any(not (c.isalnum() or c in "-_.") for c in name):
        raise ValueError(f"interface name {name!r} cannot be written in an nftables rule")
    return f'"{name}"'


def _match(rule: PolicyRule, inbound: bool) -> str:
    """nftables match expressions for ``rule``'s packets (reversed when ``inbound``)."""
    ip = "ip6" if rule.family == 6 else "ip"
    here, there = rule.source, rule.destination
    here_ports, there_ports = rule.source_ports, rule.destination_ports
    if inbound:
        here, there = there, here
        here_ports, there_ports = there_ports, here_ports
    words = [f"meta nfproto ipv{rule.family}"]
    if here is not None:
        words.append(f"{ip} saddr {here}")
    if there is not None:
        words.append(f"{ip} daddr {there}")
    if rule.protocol:
        words.append(f"meta l4proto {rule.protocol}")
    for name, ports in (("sport", here_ports), ("dport", there_ports)):
        if ports is not None:
            words.append(f"th {name} {ports[0]}-{ports[1]}")
    return " ".join(words)


def _selector_rules(plan: AgentPlan, inbound: bool) -> list[str]:
    lines = []
    for subnet in own_subnets_inside(plan):
        ip = "ip6" if ":" in subnet else "ip"
        lines.append(f"{ip} {'saddr' if inbound else 'daddr'} {subnet} accept")
    for entry in plan.spd:
        rule = selector_rule(entry, 0, MAIN_TABLE)
        if rule is None:
            # Not expressible exactly: a BYPASS entry then passes nothing of its own (a
            # later PROTECT entry's rule may drop its traffic: closed, not open).
            continue
        verdict = "accept" if entry.action is SpdAction.BYPASS else "counter drop"
        lines.append(f"{_match(rule, inbound)} {verdict}")
    return lines


def _chain(name: str, lines: Iterable[str], hook: str | None = None) -> list[str]:
    out = [f"\tchain {name} {{"]
    if hook is not None:
        out.append(f"\t\ttype filter hook {hook} priority filter; policy accept;")
    out += [f"\t\t{line}" for line in lines]
    out.append("\t}")
    return out


def kill_switch_ruleset(plan: AgentPlan, settings: KillSwitchSettings) -> str:
    """The body of the agent's table for ``plan`` (a pure function of both)."""
    tun = _quoted(settings.tun_name)
    ports = ", ".join(str(p) for p in sorted(set(settings.ike_ports)))
    protected = any(e.action is not SpdAction.BYPASS for e in plan.spd)
    lines = [
        *_chain("protected_out", _selector_rules(plan, inbound=False) if protected else []),
        *_chain("protected_in", _selector_rules(plan, inbound=True) if protected else []),
        *_chain(
            "output",
            [
                f'oifname {{ "lo", {tun} }} accept',
                f"meta mark {settings.own_mark:#x} accept",
                *LINK_SCOPE,
                "jump protected_out",
            ],
            "output",
        ),
        *_chain(
            "input",
            [
                f'iifname {{ "lo", {tun} }} accept',
                "meta l4proto esp accept",
                f"udp dport {{ {ports} }} accept",
                "meta l4proto ah accept",
                *LINK_SCOPE,
                "jump protected_in",
            ],
            "input",
        ),
        *_chain(
            "forward",
            [
                f"iifname {tun} accept",
                f"oifname {tun} accept",
                "jump protected_out",
                "jump protected_in",
            ],
            "forward",
        ),
    ]
    return "\n".join(lines) + "\n"


class KillSwitch:
    """Keeps the agent's nftables table in step with the plan in force."""

    def __init__(self, table: FirewallTable, settings: KillSwitchSettings) -> None:
        self.table = table
        self.settings = settings
        self._installed: str | None = None
        """The body the kernel last accepted from this process (None: none yet)."""

    async def apply(self, plan: AgentPlan) -> list[Problem]:
        """Install the table for ``plan`` (nothing to do when it is already in place);
        return what went wrong as problems for the agent's status."""
        try:
            body = kill_switch_ruleset(plan, self.settings)
        except ValueError as exc:
            return [self._problem(f"cannot be written: {exc}")]
        if body == self._installed:
            return []
        try:
            await self.table.replace(body)
        except OSError as exc:
            # The previous table, if any, stays whole (one transaction).
            return [self._problem(f"cannot be installed: {exc}")]
        self._installed = body
        return []

    @staticmethod
    def _problem(message: str) -> Problem:
        return Problem(
            ProblemKind.POLICY_RULE,
            f"nftables table inet {KILL_SWITCH_TABLE}",
            f"the kill switch {message}; protected traffic is kept in by the routes only",
        )
