"""The routes and policy-routing rules a plan asks for, kept in step with it.

A tunnel-mode peer's protected prefixes are routed into the TUN device in the main table.
A transport-mode peer's protected prefix is the peer's own address (RFC 4303 section
3.1.1 protects host-to-host traffic), which the engine's IKE and ESP datagrams go to as
well; were they to follow that route into the TUN, ESP would be encapsulated again. So
the endpoint's sockets carry a firewall mark (``own_mark``), a rule sends marked packets
to the main table first, and a later rule sends everything else for the prefix to
:data:`TRANSPORT_TABLE`, which routes it into the TUN (wg-quick keeps its own packets out
of its tunnel the same way).

The engine (the only owner of SA lifecycles) calls :meth:`PlanRoutes.apply` for every
plan put in force and :meth:`PlanRoutes.remove_all` when it stops. A failed netlink
request is logged and does not stop the others: the routes are a consequence of the plan,
which stays in force.
"""

from __future__ import annotations

import logging
from typing import Protocol

from ..io.routes import tunnel_mtu
from ..plan import AgentPlan, Mode, SpdAction
from . import translate

log = logging.getLogger(__name__)

MAIN_TABLE = 254
TRANSPORT_TABLE = 4500
"""The routing table holding transport-mode peers' routes into the TUN device."""
OWN_MARK_PRIORITY = 4500
"""Rule priority of ``fwmark OWN_MARK lookup main``: after the local table (priority 0),
before every transport-mode peer's rule."""
TRANSPORT_PRIORITY = 4501
"""Rule priority of ``to PEER lookup TRANSPORT_TABLE``."""


class RouteTable(Protocol):
    """What the engine needs from :class:`~vpnfleet.agent.io.routes.Routing`."""

    async def link_up(self, ifname: str, mtu: int | None = None) -> None: ...

    async def add_route(
        self, prefix: str, ifname: str, *, table: int | None = None, source: str | None = None
    ) -> None: ...

    async def remove_route(self, prefix: str, ifname: str, *, table: int | None = None) -> None: ...

    async def add_fwmark_rule(
        self, mark: int, table: int, *, priority: int | None = None
    ) -> None: ...

    async def remove_fwmark_rule(
        self, mark: int, table: int, *, priority: int | None = None
    ) -> None: ...

    async def add_destination_rule(self, prefix: str, table: int, *, priority: int) -> None: ...

    async def remove_destination_rule(self, prefix: str, table: int, *, priority: int) -> None: ...


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


class PlanRoutes:
    def __init__(
        self, routing: RouteTable, ifname: str, own_mark: int | None, underlay_mtu: int = 1500
    ) -> None:
        self.routing = routing
        self.ifname = ifname
        self.own_mark = own_mark
        """The firewall mark on the endpoint's sockets; transport-mode prefixes are routed
        into the TUN only when it is set (else the engine's own IKE would follow)."""
        self.underlay_mtu = underlay_mtu
        self.tunnel: set[str] = set()
        """Prefixes routed into the TUN in the main table."""
        self.transport: dict[str, str | None] = {}
        """Prefixes routed into the TUN through TRANSPORT_TABLE, with their source."""
        self.bypass_rule = False

    async def apply(self, plan: AgentPlan) -> None:
        transport = transport_prefixes(plan)
        # Never in the main table: a route there would take our own IKE and ESP too.
        wanted = set(translate.protected_prefixes(plan)) - set(transport)
        try:
            mtu = tunnel_mtu(self.underlay_mtu, translate.esp_overhead(plan))
            await self.routing.link_up(self.ifname, mtu)
        except (OSError, ValueError) as exc:
            log.error("cannot set %s up: %s", self.ifname, exc)
        for prefix in sorted(self.tunnel - wanted):
            await self._tunnel_route("remove", prefix)
        if transport and self.own_mark is None:
            for prefix in transport:
                log.error(
                    "transport mode needs a firewall mark on the agent's sockets: "
                    "%s is not routed into %s",
                    prefix,
                    self.ifname,
                )
            transport = {}
        if transport:
            # The bypass for our own datagrams goes in before any route that would take
            # them into the TUN; without it those routes would swallow our IKE and ESP.
            await self._own_mark_rule("add")
            if not self.bypass_rule:
                log.error("no bypass for the agent's own sockets: transport mode not routed")
                transport = {}
        for prefix in sorted(set(self.transport) - set(transport)):
            await self._transport_route("remove", prefix, None)
        for prefix in sorted(wanted - self.tunnel):
            await self._tunnel_route("add", prefix)
        for prefix, source in sorted(transport.items()):
            if prefix not in self.transport or self.transport[prefix] != source:
                await self._transport_route("add", prefix, source)
        if not transport and not self.transport:
            await self._own_mark_rule("remove")

    async def remove_all(self) -> None:
        for prefix in sorted(self.tunnel):
            await self._tunnel_route("remove", prefix)
        for prefix in sorted(self.transport):
            await self._transport_route("remove", prefix, None)
        await self._own_mark_rule("remove")

    async def _tunnel_route(self, action: str, prefix: str) -> None:
        try:
            if action == "add":
                await self.routing.add_route(prefix, self.ifname)
                self.tunnel.add(prefix)
            else:
                await self.routing.remove_route(prefix, self.ifname)
                self.tunnel.discard(prefix)
        except (OSError, ValueError) as exc:
            log.error("%s route %s via %s: %s", action, prefix, self.ifname, exc)

    async def _transport_route(self, action: str, prefix: str, source: str | None) -> None:
        try:
            if action == "add":
                if prefix in self.transport:  # a new source address: replace the route
                    await self.routing.remove_route(prefix, self.ifname, table=TRANSPORT_TABLE)
                self.transport.pop(prefix, None)
                await self.routing.add_route(
                    prefix, self.ifname, table=TRANSPORT_TABLE, source=source
                )
                try:
                    await self.routing.add_destination_rule(
                        prefix, TRANSPORT_TABLE, priority=TRANSPORT_PRIORITY
                    )
                except (OSError, ValueError):
                    # Not recorded, so the next plan tries again from the start.
                    await self.routing.remove_route(prefix, self.ifname, table=TRANSPORT_TABLE)
                    raise
                self.transport[prefix] = source
            else:
                await self.routing.remove_destination_rule(
                    prefix, TRANSPORT_TABLE, priority=TRANSPORT_PRIORITY
                )
                await self.routing.remove_route(prefix, self.ifname, table=TRANSPORT_TABLE)
                self.transport.pop(prefix, None)
        except (OSError, ValueError) as exc:
            log.error(
                "%s route %s via %s in table %d: %s",
                action,
                prefix,
                self.ifname,
                TRANSPORT_TABLE,
                exc,
            )

    async def _own_mark_rule(self, action: str) -> None:
        if self.own_mark is None or self.bypass_rule == (action == "add"):
            return
        try:
            if action == "add":
                await self.routing.add_fwmark_rule(
                    self.own_mark, MAIN_TABLE, priority=OWN_MARK_PRIORITY
                )
                self.bypass_rule = True
            else:
                await self.routing.remove_fwmark_rule(
                    self.own_mark, MAIN_TABLE, priority=OWN_MARK_PRIORITY
                )
                self.bypass_rule = False
        except (OSError, ValueError) as exc:
            log.error("%s rule fwmark %#x lookup main: %s", action, self.own_mark, exc)
