"""The routes and policy-routing rules a plan asks for, kept in step with it.

With a firewall mark on the endpoint's sockets (``own_mark``), every route into the TUN
device lives in :data:`TUNNEL_TABLE`, reached by policy-routing rules; the main table is
left to the host's own (cleartext) routes. From first to last priority:

* ``OWN_MARK_PRIORITY``: ``fwmark OWN_MARK lookup main``. The agent's own IKE and ESP
  datagrams never enter the TUN, even when a protected prefix covers a peer's underlay
  address (a transport-mode peer, RFC 4303 section 3.1.1, or 0.0.0.0/0); were they to,
  ESP would be encapsulated again (wg-quick keeps its own packets out of its tunnel the
  same way).
* ``ORDERED_PRIORITY + i`` for SPD entry ``i``, up to the last BYPASS entry: a BYPASS
  entry becomes ``from LOCAL to REMOTE [ipproto P] [sport a-b] [dport c-d] lookup main``
  so its traffic leaves in the clear (RFC 4301 section 4.4.1), and every PROTECT or
  DISCARD entry before it a rule of the same shape to ``TUNNEL_TABLE``, so the SPD's
  first match still decides.
* ``TUNNEL_PRIORITY``: ``to PREFIX lookup TUNNEL_TABLE`` for every remote prefix of a
  PROTECT or DISCARD entry (the data plane reading the TUN applies the SPD in full).

``TUNNEL_TABLE`` holds, per such prefix, the route into the TUN and an ``unreachable``
route of :data:`FALLBACK_METRIC` behind it. The kernel removes the TUN's routes when the
device disappears (the agent killed); the fallback then keeps protected traffic from
following the main table out in the clear until the next agent routes it again. Own
site subnets inside a routed prefix get ``throw`` routes, so that the host still reaches
its own sites through the main table. The first :meth:`PlanRoutes.apply` after a start
takes what a predecessor left at these priorities and in this table as its own (an agent
that stops, cleanly or killed, leaves its rules and fallbacks in place: fail closed),
keeps what the plan wants (no moment without the fallback) and removes the rest;
:meth:`PlanRoutes.decommission` (``vpnfleet-agent cleanup``) removes everything.

Without the mark, protected prefixes are routed into the TUN in the main table as
before: transport mode and bypass entries then cannot be honoured (logged).

The engine (the only owner of SA lifecycles) calls :meth:`PlanRoutes.apply` for every
plan put in force, and nothing when it stops. A failed netlink
request is logged and does not stop the others: the routes are a consequence of the plan,
which stays in force; what failed is tried again with the next apply. :meth:`apply`
returns what failed, and what the plan asks that cannot be done, as problems (kinds
:data:`~vpnfleet.agent.sink.PUT_IN_FORCE_KINDS`) for the agent's status.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

from ..io.policy_rules import PORT_PROTOCOLS, PolicyRule
from ..io.routes import RouteEntry, RouteType
from ..io.tunnel_mtu import tunnel_mtu
from ..plan import AgentPlan, Mode, SpdAction, SpdEntry
from ..sink import Problem, ProblemKind
from . import translate

log = logging.getLogger(__name__)

MAIN_TABLE = 254
TUNNEL_TABLE = 4500
"""The default routing table holding the routes into the TUN device (with ``own_mark``;
``routing_table`` in the agent's config)."""
OWN_MARK_PRIORITY = 4500
"""Rule priority of ``fwmark OWN_MARK lookup main``: after the local table (priority 0),
before every other rule of ours."""
ORDERED_PRIORITY = 4501
"""Rule priority of SPD entry 0; entry ``i`` gets ``ORDERED_PRIORITY + i``."""
ORDERED_SLOTS = 20000
"""How many SPD entries can get a rule at their own position; bypass entries past it are
not honoured (logged)."""
TUNNEL_PRIORITY = ORDERED_PRIORITY + ORDERED_SLOTS
"""Rule priority of ``to PREFIX lookup TUNNEL_TABLE``: after every ordered rule, before
the main table (32766)."""
OUR_PRIORITIES = range(OWN_MARK_PRIORITY, TUNNEL_PRIORITY + 1)
FALLBACK_METRIC = 0x7FFFFFFF
"""Metric of the ``unreachable`` route behind each route into the TUN: far above the
kernel's defaults (0 for IPv4, 1024 for IPv6), so the TUN route wins while it exists."""
THROW_METRIC = 1
"""Explicit, because IPv6 would record a route added without one under 1024."""
_FULL_PORTS = (0, 65535)


class RouteTable(Protocol):
    """What the engine needs from :class:`~vpnfleet.agent.io.routes.Routing`."""

    async def link_up(self, ifname: str, mtu: int | None = None) -> None: ...

    async def add_route(
        self, prefix: str, ifname: str, *, table: int | None = None, source: str | None = None
    ) -> None: ...

    async def remove_route(self, prefix: str, ifname: str, *, table: int | None = None) -> None: ...

    async def add_typed_route(
        self, prefix: str, kind: RouteType, *, table: int | None = None, metric: int | None = None
    ) -> None: ...

    async def remove_typed_route(
        self, prefix: str, kind: RouteType, *, table: int | None = None, metric: int | None = None
    ) -> None: ...

    async def routes(
        self, *, table: int | None = None, ifname: str | None = None
    ) -> list[RouteEntry]: ...

    async def add_rule(self, rule: PolicyRule) -> None: ...

    async def remove_rule(self, rule: PolicyRule) -> None: ...

    async def rules(self) -> list[PolicyRule]: ...


@dataclass(frozen=True, slots=True)
class TunRoute:
    """A route into the TUN device."""

    prefix: str
    table: int | None
    """None: the main table."""
    source: str | None
    """The preferred source address (transport mode: ours towards the peer)."""


@dataclass(frozen=True, slots=True, order=True)
class TypedRoute:
    """A route without a device: ``unreachable`` fallbacks and ``throw`` exceptions."""

    prefix: str
    kind: RouteType
    table: int
    metric: int


@dataclass(frozen=True, slots=True)
class PolicyRouting:
    """Everything a plan asks of the routing tables; a pure function of the plan."""

    tun_routes: frozenset[TunRoute] = frozenset()
    typed_routes: frozenset[TypedRoute] = frozenset()
    rules: frozenset[PolicyRule] = frozenset()
    problems: tuple[Problem, ...] = ()
    """What the plan asks that cannot be done (kind PLAN)."""
    unmarked_bypass: tuple[str, ...] = field(default=())
    """Bypass entries not honoured for want of ``own_mark``."""


def transport_prefixes(plan: AgentPlan) -> dict[str, str | None]:
    """Protected remote prefixes of transport-mode peers, each with our address towards
    that peer (the preferred source of its route into the TUN)."""
    peers = {p.name: p for p in plan.peers if p.mode is Mode.TRANSPORT}
    out: dict[str, str | None] = {}
    for entry in plan.spd:
        peer = peers.get(entry.peer)
        if entry.action is SpdAction.PROTECT and peer is not None:
            out[str(entry.selector.remote_prefix)] = translate.local_address(plan, peer)
    return out


def routed_prefixes(plan: AgentPlan) -> list[str]:
    """Remote prefixes whose traffic goes into the TUN with ``own_mark``: those of PROTECT
    entries, and those of DISCARD entries (the data plane drops and counts it there; in
    the main table it could leave in the clear)."""
    wanted = (SpdAction.PROTECT, SpdAction.DISCARD)
    return list(
        dict.fromkeys(str(e.selector.remote_prefix) for e in plan.spd if e.action in wanted)
    )


def own_subnets_inside(plan: AgentPlan) -> list[str]:
    """This host's own site subnets that lie inside a routed remote prefix: the host
    reaches them through the main table (``throw`` routes), not through the tunnel."""
    nets = [ipaddress.ip_network(p) for p in routed_prefixes(plan)]
    return [
        str(subnet)
        for subnet in plan.subnets
        if any(
            subnet.version == net.version and subnet != net and subnet.subnet_of(net)  # type: ignore[arg-type]
            for net in nets
        )
    ]


def selector_rule(entry: SpdEntry, priority: int, table: int) -> PolicyRule | None:
    """The rule matching the outbound packets of ``entry``'s selector (RFC 4301 section
    4.4.1: local address and port are the source's). When a rule cannot say it exactly
    (ports of a protocol other than TCP, UDP or SCTP, e.g. ICMP type and code), a PROTECT
    or DISCARD entry gets a wider rule (the data plane checks the rest) and a BYPASS entry
    none (None): a wider bypass would let other traffic out in the clear."""
    sel = entry.selector
    if sel.local_prefix.version != sel.remote_prefix.version:
        return None
    restricted = [p for p in (sel.local_ports, sel.remote_ports) if p not in (_FULL_PORTS, (0, 0))]
    exact_ports = sel.protocol in PORT_PROTOCOLS
    if restricted and not exact_ports and entry.action is SpdAction.BYPASS:
        return None
    sport = sel.local_ports if exact_ports and sel.local_ports != _FULL_PORTS else None
    dport = sel.remote_ports if exact_ports and sel.remote_ports != _FULL_PORTS else None
    return PolicyRule(
        priority=priority,
        table=table,
        family=sel.remote_prefix.version,
        source=str(sel.local_prefix) if sel.local_prefix.prefixlen else None,
        destination=str(sel.remote_prefix) if sel.remote_prefix.prefixlen else None,
        protocol=sel.protocol,
        source_ports=sport,
        destination_ports=dport,
    )


def policy_routing(
    plan: AgentPlan, own_mark: int | None, ifname: str, table: int = TUNNEL_TABLE
) -> PolicyRouting:
    """What ``plan`` asks of the routing tables (see the module's docstring), with
    ``table`` as the tunnel table."""
    transport = transport_prefixes(plan)
    bypass = [e.name for e in plan.spd if e.action is SpdAction.BYPASS]
    if own_mark is None:
        unmarked = tuple(
            Problem(
                ProblemKind.PLAN,
                prefix,
                f"transport mode needs a firewall mark on the agent's sockets: {prefix} is "
                f"not routed into {ifname}",
            )
            for prefix in transport
        )
        # Never in the main table: a route there would take our own IKE and ESP too.
        main = [p for p in translate.protected_prefixes(plan) if p not in transport]
        return PolicyRouting(
            tun_routes=frozenset(TunRoute(p, None, None) for p in main),
            problems=unmarked,
            unmarked_bypass=tuple(bypass),
        )
    routed = routed_prefixes(plan)
    if not routed:
        return PolicyRouting()
    tun_routes = {TunRoute(p, table, transport.get(p)) for p in routed}
    typed = {TypedRoute(p, RouteType.UNREACHABLE, table, FALLBACK_METRIC) for p in routed}
    nets = [ipaddress.ip_network(p) for p in routed]
    for subnet in own_subnets_inside(plan):
        typed.add(TypedRoute(subnet, RouteType.THROW, table, THROW_METRIC))
    rules = {PolicyRule(OWN_MARK_PRIORITY, MAIN_TABLE, family=f, fwmark=own_mark) for f in (4, 6)}
    rules |= {
        PolicyRule(TUNNEL_PRIORITY, table, family=n.version, destination=str(n)) for n in nets
    }
    problems: list[Problem] = []
    last = max((i for i, e in enumerate(plan.spd) if e.action is SpdAction.BYPASS), default=-1)
    if last >= ORDERED_SLOTS:
        problems.append(
            Problem(
                ProblemKind.PLAN,
                f"spd[{ORDERED_SLOTS}:]",
                f"SPD bypass entries past position {ORDERED_SLOTS} are not honoured: their "
                "traffic follows the routes into the TUN",
            )
        )
        last = -1
    for i, entry in enumerate(plan.spd[: last + 1]):
        is_bypass = entry.action is SpdAction.BYPASS
        lookup = MAIN_TABLE if is_bypass else table
        rule = selector_rule(entry, ORDERED_PRIORITY + i, lookup)
        if rule is None:
            problems.append(
                Problem(
                    ProblemKind.PLAN,
                    entry.name,
                    f"SPD entry {entry.name!r} ({entry.selector}) cannot be a policy-routing "
                    "rule: its traffic follows the routes into the TUN",
                )
            )
            continue
        rules.add(rule)
    return PolicyRouting(frozenset(tun_routes), frozenset(typed), frozenset(rules), tuple(problems))


class PlanRoutes:
    def __init__(
        self,
        routing: RouteTable,
        ifname: str,
        own_mark: int | None,
        underlay_mtu: int = 1500,
        table: int = TUNNEL_TABLE,
    ) -> None:
        self.routing = routing
        self.table = table
        """The tunnel table (``routing_table`` in the agent's config)."""
        self.ifname = ifname
        self.own_mark = own_mark
        """The firewall mark on the endpoint's sockets; without it every route into the
        TUN is in the main table and transport mode and bypass entries are not honoured."""
        self.underlay_mtu = underlay_mtu
        self.tun_routes: set[TunRoute] = set()
        """What is installed (recorded once the kernel said yes)."""
        self.typed_routes: set[TypedRoute] = set()
        self.rules: set[PolicyRule] = set()
        self.adopted = False
        """Whether what a predecessor left has been looked for (first apply)."""
        self._told_unmarked_bypass = False
        self._failed: list[Problem] = []
        """What the kernel refused in the reconcile under way."""

    async def apply(self, plan: AgentPlan) -> list[Problem]:
        """Bring the device, routes and rules in step with ``plan``; return every problem
        of :data:`~vpnfleet.agent.sink.PUT_IN_FORCE_KINDS` there is now (empty: all in place)."""
        found: list[Problem] = []
        try:
            mtu = tunnel_mtu(self.underlay_mtu, translate.esp_overhead(plan))
            await self.routing.link_up(self.ifname, mtu)
        except (OSError, ValueError) as exc:
            log.error("cannot set %s up: %s", self.ifname, exc)
            found.append(Problem(ProblemKind.TUN, self.ifname, f"cannot set it up: {exc}"))
        want = policy_routing(plan, self.own_mark, self.ifname, self.table)
        for problem in want.problems:
            log.error("%s", problem.message)
        found += want.problems
        if want.unmarked_bypass:
            message = (
                f"SPD bypass entries ({', '.join(want.unmarked_bypass)}) need a firewall mark "
                f"on the agent's sockets: without it their traffic follows the routes into "
                f"{self.ifname} and is dropped there"
            )
            found.append(Problem(ProblemKind.PLAN, "bypass entries", message))
            if not self._told_unmarked_bypass:
                self._told_unmarked_bypass = True
                log.error("%s", message)
        if not self.adopted:
            found += await self._adopt()
        found += await self._reconcile(want)
        return found

    async def remove_all(self) -> list[Problem]:
        return await self._reconcile(PolicyRouting())

    async def decommission(self) -> list[Problem]:
        """Remove every rule and route of ours, those a previous agent left included."""
        found = [] if self.adopted else await self._adopt()
        return found + await self.remove_all()

    async def _adopt(self) -> list[Problem]:
        """Take as ours what a predecessor killed before its clean-up left: rules at our
        priorities that look up the main or the tunnel table, and the tunnel table's
        routes without a device or through our TUN. The reconcile that follows keeps
        what the plan wants and removes the rest."""
        try:
            rules = await self.routing.rules()
            routes = await self.routing.routes(table=self.table)
        except (OSError, ValueError) as exc:
            log.error("cannot read the rules and table %d left from before: %s", self.table, exc)
            return [
                Problem(
                    ProblemKind.ROUTE,
                    f"table {self.table}",
                    f"cannot read the rules and routes left from before: {exc}",
                )
            ]
        self.adopted = True
        for rule in rules:
            if rule.priority in OUR_PRIORITIES and rule.table in (MAIN_TABLE, self.table):
                self.rules.add(rule)
        for route in routes:
            if route.kind is RouteType.UNICAST:
                if route.ifname == self.ifname:
                    self.tun_routes.add(TunRoute(route.prefix, self.table, route.source))
            elif route.metric is not None:
                self.typed_routes.add(
                    TypedRoute(route.prefix, route.kind, self.table, route.metric)
                )
        if self.rules or self.tun_routes or self.typed_routes:
            log.info(
                "found %d rules and %d routes of a previous run; keeping what the plan wants",
                len(self.rules),
                len(self.tun_routes) + len(self.typed_routes),
            )
        return []

    async def _reconcile(self, want: PolicyRouting) -> list[Problem]:
        """Add first what keeps traffic out of the clear (the own-mark rule before any
        route into the TUN, fallbacks before the routes they back), then remove what the
        plan no longer wants, in the reverse order. Returns what the kernel refused."""
        self._failed = []
        mark_rules = {r for r in want.rules | self.rules if r.fwmark is not None}
        add_rules = want.rules - self.rules
        drop_rules = self.rules - want.rules
        for rule in sorted(add_rules & mark_rules, key=_rule_order):
            await self._do("add", self._add_rule, rule)
        for typed in sorted(want.typed_routes - self.typed_routes):
            await self._do("add", self._add_typed, typed)
        stale = self.tun_routes - want.tun_routes
        new = want.tun_routes - self.tun_routes
        moved = {(r.prefix, r.table) for r in new}
        # A route whose source changes is replaced: the kernel would keep the old one.
        for route in sorted((r for r in stale if (r.prefix, r.table) in moved), key=_tun_order):
            await self._do("remove", self._remove_tun, route)
        for route in sorted(new, key=_tun_order):
            await self._do("add", self._add_tun, route)
        for rule in sorted(add_rules - mark_rules, key=_rule_order):
            await self._do("add", self._add_rule, rule)
        for rule in sorted(drop_rules - mark_rules, key=_rule_order):
            await self._do("remove", self._remove_rule, rule)
        for route in sorted(self.tun_routes - want.tun_routes, key=_tun_order):
            await self._do("remove", self._remove_tun, route)
        for typed in sorted(self.typed_routes - want.typed_routes):
            await self._do("remove", self._remove_typed, typed)
        for rule in sorted(drop_rules & mark_rules, key=_rule_order):
            await self._do("remove", self._remove_rule, rule)
        return self._failed

    async def _do(
        self,
        action: str,
        step: Callable[[TunRoute | TypedRoute | PolicyRule], Awaitable[None]],
        item: TunRoute | TypedRoute | PolicyRule,
    ) -> None:
        try:
            await step(item)
        except (OSError, ValueError) as exc:
            what = _describe(item, self.ifname)
            log.error("%s %s: %s", action, what, exc)
            kind = ProblemKind.POLICY_RULE if isinstance(item, PolicyRule) else ProblemKind.ROUTE
            self._failed.append(Problem(kind, what, f"cannot {action} it: {exc}"))

    async def _add_rule(self, rule: TunRoute | TypedRoute | PolicyRule) -> None:
        assert isinstance(rule, PolicyRule)
        await self.routing.add_rule(rule)
        self.rules.add(rule)

    async def _remove_rule(self, rule: TunRoute | TypedRoute | PolicyRule) -> None:
        assert isinstance(rule, PolicyRule)
        await self.routing.remove_rule(rule)
        self.rules.discard(rule)

    async def _add_typed(self, route: TunRoute | TypedRoute | PolicyRule) -> None:
        assert isinstance(route, TypedRoute)
        await self.routing.add_typed_route(
            route.prefix, route.kind, table=route.table, metric=route.metric
        )
        self.typed_routes.add(route)

    async def _remove_typed(self, route: TunRoute | TypedRoute | PolicyRule) -> None:
        assert isinstance(route, TypedRoute)
        await self.routing.remove_typed_route(
            route.prefix, route.kind, table=route.table, metric=route.metric
        )
        self.typed_routes.discard(route)

    async def _add_tun(self, route: TunRoute | TypedRoute | PolicyRule) -> None:
        assert isinstance(route, TunRoute)
        await self.routing.add_route(
            route.prefix, self.ifname, table=route.table, source=route.source
        )
        self.tun_routes.add(route)

    async def _remove_tun(self, route: TunRoute | TypedRoute | PolicyRule) -> None:
        assert isinstance(route, TunRoute)
        await self.routing.remove_route(route.prefix, self.ifname, table=route.table)
        self.tun_routes.discard(route)


def _tun_order(route: TunRoute) -> tuple[str, int, str]:
    return (route.prefix, route.table or 0, route.source or "")


def _rule_order(rule: PolicyRule) -> tuple[int, int, str]:
    return (rule.priority, rule.family, str(rule))


def _describe(item: TunRoute | TypedRoute | PolicyRule, ifname: str) -> str:
    if isinstance(item, PolicyRule):
        return f"rule {item}"
    if isinstance(item, TypedRoute):
        return f"route {item.kind} {item.prefix} in table {item.table}"
    where = "" if item.table is None else f" in table {item.table}"
    return f"route {item.prefix} via {ifname}{where}"
