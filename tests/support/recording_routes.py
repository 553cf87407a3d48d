"""A recording fake of the netlink layer (``agent.io.routes.Routing``) whose requests
can be made to fail as the kernel would refuse them."""

from __future__ import annotations

from vpnfleet.agent.engine.plan_routes import MAIN_TABLE
from vpnfleet.agent.io.policy_rules import PolicyRule
from vpnfleet.agent.io.routes import RouteEntry, RouteError, RouteType

Call = tuple[object, ...]


class RecordingRoutes:
    """Records every request; ``fail`` names methods that raise as netlink would;
    ``present_rules`` and ``present_routes`` are what a dump finds."""

    def __init__(self) -> None:
        self.calls: list[Call] = []
        self.fail: set[str] = set()
        self.present_rules: list[PolicyRule] = []
        self.present_routes: list[RouteEntry] = []

    def _record(self, name: str, *args: object) -> None:
        self.calls.append((name, *args))
        if name in self.fail:
            raise RouteError(1, f"{name}: EPERM Operation not permitted")

    async def link_up(self, ifname: str, mtu: int | None = None) -> None:
        self._record("link_up", ifname, mtu)

    async def add_route(
        self, prefix: str, ifname: str, *, table: int | None = None, source: str | None = None
    ) -> None:
        self._record("add_route", prefix, ifname, table, source)

    async def remove_route(self, prefix: str, ifname: str, *, table: int | None = None) -> None:
        self._record("remove_route", prefix, ifname, table)

    async def add_typed_route(
        self, prefix: str, kind: RouteType, *, table: int | None = None, metric: int | None = None
    ) -> None:
        self._record("add_typed_route", prefix, kind, table, metric)

    async def remove_typed_route(
        self, prefix: str, kind: RouteType, *, table: int | None = None, metric: int | None = None
    ) -> None:
        self._record("remove_typed_route", prefix, kind, table, metric)

    async def routes(
        self, *, table: int | None = None, ifname: str | None = None
    ) -> list[RouteEntry]:
        self._record("routes", table)
        return [r for r in self.present_routes if r.table == (table or MAIN_TABLE)]

    async def add_rule(self, rule: PolicyRule) -> None:
        self._record("add_rule", str(rule))

    async def remove_rule(self, rule: PolicyRule) -> None:
        self._record("remove_rule", str(rule))

    async def rules(self) -> list[PolicyRule]:
        self._record("rules")
        return list(self.present_rules)

    def take(self) -> list[Call]:
        calls, self.calls = self.calls, []
        return [c for c in calls if c[0] not in ("link_up", "rules", "routes")]
