"""Links, addresses, routes and policy-routing rules for the data plane (netlink through
pyroute2's asyncio client, so it runs inside the agent's event loop).

Everything acts on the network namespace the process runs in (the lab starts each agent
with ``ip netns exec``). Every change is idempotent: adding what already exists, or
removing what is already gone, is not an error, so a plan can be applied twice. Other
failures raise :class:`RouteError` naming the object and the kernel's reason.

The TUN MTU arithmetic (:func:`tunnel_mtu`, :class:`EspOverhead`, the suites'
overheads) is in :mod:`.tunnel_mtu`.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from types import TracebackType
from typing import Any, TypeVar

from pyroute2 import AsyncIPRoute, NetlinkError

from .policy_rules import PolicyRule, check_table, parse_prefix, rule_from_netlink


class RouteError(OSError):
    """A netlink request failed for a reason other than the object already being in the
    requested state."""


class NoSuchInterface(RouteError):
    """No interface of that name in this network namespace (errno ENODEV)."""

    def __init__(self, ifname: str) -> None:
        super().__init__(errno.ENODEV, f"no interface named {ifname!r} in this namespace")


_T = TypeVar("_T")


def _interface(value: str) -> ipaddress.IPv4Interface | ipaddress.IPv6Interface:
    try:
        return ipaddress.ip_interface(value)
    except ValueError as exc:
        raise ValueError(f"bad interface address {value!r}: {exc}") from None


def _source(value: str, net: ipaddress.IPv4Network | ipaddress.IPv6Network) -> str:
    try:
        address = ipaddress.ip_address(value)
    except ValueError as exc:
        raise ValueError(f"bad source address {value!r}: {exc}") from None
    if address.version != net.version:
        raise ValueError(f"source address {value} is not of the family of {net}")
    return str(address)


def _family(net: ipaddress.IPv4Network | ipaddress.IPv6Network) -> int:
    return socket.AF_INET6 if net.version == 6 else socket.AF_INET


async def _collect(result: Any) -> list[Any]:
    # pyroute2's asyncio client returns lists for some requests and async generators
    # for dumps.
    if hasattr(result, "__aiter__"):
        return [item async for item in result]
    return list(result)


class RouteType(StrEnum):
    """The route types (RTN_* in linux/rtnetlink.h) this agent installs or reads back;
    the value is the name ``ip route`` shows. Apart from unicast none has a device:
    ``blackhole`` drops silently, ``unreachable`` drops and tells the sender, ``throw``
    ends the lookup in this table so the next policy-routing rule is tried."""

    UNICAST = "unicast"
    BLACKHOLE = "blackhole"
    UNREACHABLE = "unreachable"
    PROHIBIT = "prohibit"
    THROW = "throw"


_RTN = {
    RouteType.UNICAST: 1,
    RouteType.BLACKHOLE: 6,
    RouteType.UNREACHABLE: 7,
    RouteType.PROHIBIT: 8,
    RouteType.THROW: 9,
}
_ROUTE_TYPE_BY_RTN = {number: kind for kind, number in _RTN.items()}
"""The RTN_* number netlink carries for each route type."""


@dataclass(frozen=True)
class RouteEntry:
    prefix: str
    ifname: str | None
    table: int
    metric: int | None
    kind: RouteType = RouteType.UNICAST
    source: str | None = None
    """The preferred source address (``ip route ... src``), if any."""


class Routing:
    """Netlink access for one network namespace: ``async with Routing() as routing``.

    The index of each interface named in a change is looked up once and kept: a route
    install is then one netlink request. A kept index the kernel no longer knows (the
    device went away, and may be back under a new index, as a TUN device recreated after
    an agent restart) is dropped at the first request it fails with ENODEV, and that
    request is made again with the index looked up anew. The kernel allocates interface
    indexes cyclically (the next after the last given), so a kept index does not come to
    name another device."""

    def __init__(self) -> None:
        self._ipr: Any = None
        self._indexes: dict[str, int] = {}
        """Interface name -> index, as last looked up."""

    async def __aenter__(self) -> Routing:
        self._ipr = AsyncIPRoute()
        await self._ipr.setup_endpoint()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._ipr is not None:
            self._ipr.close()
            self._ipr = None

    @property
    def ipr(self) -> Any:
        if self._ipr is None:
            raise RuntimeError("Routing used outside 'async with' (or after close)")
        return self._ipr

    async def link_index(self, ifname: str) -> int:
        """The index of ``ifname`` as the kernel has it now (and kept for later changes);
        :class:`NoSuchInterface` if there is none."""
        found = await self.ipr.link_lookup(ifname=ifname)
        if not found:
            self._indexes.pop(ifname, None)
            raise NoSuchInterface(ifname)
        index = self._indexes[ifname] = int(found[0])
        return index

    async def _on_link(
        self,
        ifname: str,
        request: Callable[[int], Awaitable[_T]],
        stale: tuple[int, ...] = (errno.ENODEV,),
    ) -> _T:
        """``request(index)`` with the kept index of ``ifname``; once more with the index
        looked up anew if the kept one may be stale (the request fails with an errno of
        ``stale``)."""
        kept = self._indexes.get(ifname)
        if kept is None:
            return await request(await self.link_index(ifname))
        try:
            return await request(kept)
        except (RouteError, NetlinkError) as exc:
            code = exc.errno if isinstance(exc, RouteError) else exc.code
            if code not in stale:
                raise
            if await self.link_index(ifname) == kept:
                raise  # the index was right: that is the kernel's answer
        return await request(self._indexes[ifname])

    async def link_up(self, ifname: str, mtu: int | None = None) -> None:
        """Set the link up, and its MTU when given (e.g. from :func:`tunnel_mtu`)."""
        if mtu is not None and not 68 <= mtu <= 65535:
            raise ValueError(f"MTU must be 68..65535, got {mtu}")
        extra: dict[str, Any] = {"mtu": mtu} if mtu is not None else {}

        async def set_up(index: int) -> None:
            await self._request(
                f"set link {ifname} up", self.ipr.link, "set", index=index, state="up", **extra
            )

        await self._on_link(ifname, set_up)

    async def link_mtu(self, ifname: str) -> int:
        async def get(index: int) -> list[Any]:
            return await _collect(await self.ipr.link("get", index=index))

        links = await self._on_link(ifname, get)
        return int(links[0].get("mtu"))

    async def add_address(self, ifname: str, address: str) -> None:
        """Add ``address`` ("10.0.0.1/24" or a bare host address) to ``ifname``."""
        iface = _interface(address)

        async def add(index: int) -> None:
            await self._request(
                f"add address {iface} to {ifname}",
                self.ipr.addr,
                "add",
                index=index,
                address=str(iface.ip),
                prefixlen=iface.network.prefixlen,
                ignore=(errno.EEXIST,),
            )

        await self._on_link(ifname, add)

    async def remove_address(self, ifname: str, address: str) -> None:
        iface = _interface(address)

        async def remove(index: int) -> None:
            await self._request(
                f"remove address {iface} from {ifname}",
                self.ipr.addr,
                "del",
                index=index,
                address=str(iface.ip),
                prefixlen=iface.network.prefixlen,
                ignore=(errno.EADDRNOTAVAIL, errno.ENOENT, errno.ESRCH),
            )

        await self._on_link(ifname, remove)

    async def addresses(self, ifname: str) -> list[str]:
        index = await self.link_index(ifname)
        found = await _collect(await self.ipr.addr("dump", index=index))
        return [f"{a.get('address')}/{a['prefixlen']}" for a in found]

    async def add_route(
        self,
        prefix: str,
        ifname: str,
        *,
        table: int | None = None,
        metric: int | None = None,
        source: str | None = None,
    ) -> None:
        """Route ``prefix`` through ``ifname``, preferring ``source`` as the address of
        packets sent without one (``ip route ... src``). An identical route is left alone;
        a route for the same prefix, table and metric through another device is an error."""
        net = parse_prefix(prefix)
        check_table(table)
        preferred = _source(source, net) if source is not None else None
        args = self._route_args(net, table, metric)
        if preferred is not None:
            args["prefsrc"] = preferred

        async def add(index: int) -> None:
            try:
                await self.ipr.route("add", oif=index, **args)
            except NetlinkError as exc:
                if exc.code != errno.EEXIST:
                    raise RouteError(
                        exc.code, f"add route {net} dev {ifname}: {_reason(exc)}"
                    ) from None
                await self._check_existing(net, ifname, table, metric)

        await self._on_link(ifname, add)

    async def _check_existing(
        self,
        net: ipaddress.IPv4Network | ipaddress.IPv6Network,
        ifname: str,
        table: int | None,
        metric: int | None,
    ) -> None:
        """The kernel said EEXIST to a route into ``ifname``: fine if the route there is
        that one, an error if it goes through another device."""
        existing = await self._find_route(net, table, metric)
        if existing is not None and existing.ifname not in (ifname, None):
            raise RouteError(
                errno.EEXIST,
                f"add route {net} dev {ifname}: the prefix is already routed via "
                f"{existing.ifname} in table {existing.table}",
            )

    async def remove_route(
        self, prefix: str, ifname: str, *, table: int | None = None, metric: int | None = None
    ) -> None:
        net = parse_prefix(prefix)
        check_table(table)
        args = self._route_args(net, table, metric)
        gone = (errno.ESRCH, errno.ENOENT)

        async def remove(index: int) -> None:
            await self._request(
                f"remove route {net} dev {ifname}", self.ipr.route, "del", oif=index, **args
            )

        try:
            # No such route through a kept index may be the route through the device
            # recreated under a new index: asked again with the index looked up anew.
            await self._on_link(ifname, remove, stale=(errno.ENODEV, *gone))
        except NoSuchInterface:
            # The device is gone, and the kernel removed its routes with it.
            return
        except RouteError as exc:
            if exc.errno not in gone:
                raise

    async def routes(
        self, *, table: int | None = None, ifname: str | None = None
    ) -> list[RouteEntry]:
        """Unicast routes in ``table`` (main by default), optionally only via ``ifname``."""
        check_table(table)
        want = await self.link_index(ifname) if ifname is not None else None
        names = {
            int(link["index"]): link.get("ifname")
            for link in await _collect(await self.ipr.link("dump"))
        }
        out: list[RouteEntry] = []
        for family in (socket.AF_INET, socket.AF_INET6):
            dump = await self.ipr.route("dump", family=family, table=table or 254)
            for route in await _collect(dump):
                oif = route.get("oif")
                if want is not None and oif != want:
                    continue
                kind = _ROUTE_TYPE_BY_RTN.get(route["type"])
                if kind is None:  # local, broadcast, multicast...: the kernel's own
                    continue
                dst = route.get("dst") or ("0.0.0.0" if family == socket.AF_INET else "::")
                out.append(
                    RouteEntry(
                        prefix=f"{dst}/{route['dst_len']}",
                        # Typed routes carry the loopback device in IPv6: not a nexthop.
                        ifname=names.get(oif)
                        if oif is not None and kind is RouteType.UNICAST
                        else None,
                        table=int(route.get("table")),
                        metric=route.get("priority"),
                        kind=kind,
                        source=route.get("prefsrc"),
                    )
                )
        return out

    async def add_typed_route(
        self, prefix: str, kind: RouteType, *, table: int | None = None, metric: int | None = None
    ) -> None:
        """``ip route add KIND PREFIX [table T] [metric M]`` for a route without a device
        (any :class:`RouteType` but unicast); an identical route already there is left
        alone."""
        args = self._typed_route_args(prefix, kind, table, metric)
        await self._request(
            f"add route {kind} {prefix}", self.ipr.route, "add", ignore=(errno.EEXIST,), **args
        )

    async def remove_typed_route(
        self, prefix: str, kind: RouteType, *, table: int | None = None, metric: int | None = None
    ) -> None:
        args = self._typed_route_args(prefix, kind, table, metric)
        await self._request(
            f"remove route {kind} {prefix}",
            self.ipr.route,
            "del",
            ignore=(errno.ESRCH, errno.ENOENT),
            **args,
        )

    async def add_rule(self, rule: PolicyRule) -> None:
        """Install ``rule``; the same rule already there is left alone."""
        await self._request(
            f"add rule {rule}", self.ipr.rule, "add", ignore=(errno.EEXIST,), **rule.netlink_args()
        )

    async def remove_rule(self, rule: PolicyRule) -> None:
        await self._request(
            f"remove rule {rule}",
            self.ipr.rule,
            "del",
            ignore=(errno.ENOENT, errno.ESRCH),
            **rule.netlink_args(),
        )

    async def rules(self) -> list[PolicyRule]:
        """Every IPv4 and IPv6 rule that looks a table up and that :class:`PolicyRule`
        can describe (others, e.g. with an input interface, are left out)."""
        out: list[PolicyRule] = []
        for family in (socket.AF_INET, socket.AF_INET6):
            for msg in await _collect(await self.ipr.rule("dump", family=family)):
                rule = rule_from_netlink(msg)
                if rule is not None:
                    out.append(rule)
        return out

    async def add_fwmark_rule(self, mark: int, table: int, *, priority: int | None = None) -> None:
        """``ip rule add fwmark MARK lookup TABLE`` (IPv4 and IPv6)."""
        for kwargs in self._rule_args(mark, table, priority):
            await self._request(
                f"add rule fwmark {mark:#x} table {table}",
                self.ipr.rule,
                "add",
                ignore=(errno.EEXIST,),
                **kwargs,
            )

    async def remove_fwmark_rule(
        self, mark: int, table: int, *, priority: int | None = None
    ) -> None:
        for kwargs in self._rule_args(mark, table, priority):
            await self._request(
                f"remove rule fwmark {mark:#x} table {table}",
                self.ipr.rule,
                "del",
                ignore=(errno.ENOENT, errno.ESRCH),
                **kwargs,
            )

    async def add_destination_rule(self, prefix: str, table: int, *, priority: int) -> None:
        """``ip rule add to PREFIX lookup TABLE priority PRIORITY``."""
        args = self._destination_rule_args(prefix, table, priority)
        await self._request(
            f"add rule to {prefix} table {table}",
            self.ipr.rule,
            "add",
            ignore=(errno.EEXIST,),
            **args,
        )

    async def remove_destination_rule(self, prefix: str, table: int, *, priority: int) -> None:
        args = self._destination_rule_args(prefix, table, priority)
        await self._request(
            f"remove rule to {prefix} table {table}",
            self.ipr.rule,
            "del",
            ignore=(errno.ENOENT, errno.ESRCH),
            **args,
        )

    async def fwmark_rules(self) -> list[tuple[int, int, int | None]]:
        """(mark, table, priority) of every IPv4 fwmark rule."""
        rules = await _collect(await self.ipr.rule("dump", family=socket.AF_INET))
        return [
            (int(r.get("fwmark")), int(r.get("table")), r.get("priority"))
            for r in rules
            if r.get("fwmark") is not None
        ]

    # -- internals -----------------------------------------------------------------------

    @staticmethod
    def _route_args(
        net: ipaddress.IPv4Network | ipaddress.IPv6Network,
        table: int | None,
        metric: int | None,
    ) -> dict[str, Any]:
        """A route's arguments but its device (``oif``)."""
        args: dict[str, Any] = {"dst": str(net), "family": _family(net)}
        if table is not None:
            args["table"] = table
        if metric is not None:
            if not 0 <= metric <= 0xFFFFFFFF:
                raise ValueError(f"route metric must be 0..4294967295, got {metric}")
            args["priority"] = metric
        return args

    @staticmethod
    def _typed_route_args(
        prefix: str, kind: RouteType, table: int | None, metric: int | None
    ) -> dict[str, Any]:
        net = parse_prefix(prefix)
        check_table(table)
        if kind is RouteType.UNICAST or not isinstance(kind, RouteType):
            typed = ", ".join(sorted(t for t in RouteType if t is not RouteType.UNICAST))
            raise ValueError(f"route type must be one of {typed}, got {kind!r}")
        args: dict[str, Any] = {"dst": str(net), "family": _family(net), "type": kind.value}
        if table is not None:
            args["table"] = table
        if metric is not None:
            if not 0 <= metric <= 0xFFFFFFFF:
                raise ValueError(f"route metric must be 0..4294967295, got {metric}")
            args["priority"] = metric
        return args

    @staticmethod
    def _rule_args(mark: int, table: int, priority: int | None) -> list[dict[str, Any]]:
        if not 1 <= mark <= 0xFFFFFFFF:
            raise ValueError(f"firewall mark must be 1..0xffffffff, got {mark}")
        check_table(table)
        if priority is not None and not 0 <= priority <= 0xFFFFFFFF:
            raise ValueError(f"rule priority must be 0..4294967295, got {priority}")
        out = []
        for family in (socket.AF_INET, socket.AF_INET6):
            args: dict[str, Any] = {"family": family, "fwmark": mark, "table": table}
            if priority is not None:
                args["priority"] = priority
            out.append(args)
        return out

    @staticmethod
    def _destination_rule_args(prefix: str, table: int, priority: int) -> dict[str, Any]:
        net = parse_prefix(prefix)
        check_table(table)
        if not 0 <= priority <= 0xFFFFFFFF:
            raise ValueError(f"rule priority must be 0..4294967295, got {priority}")
        return {
            "family": _family(net),
            "dst": str(net.network_address),
            "dst_len": net.prefixlen,
            "table": table,
            "priority": priority,
        }

    async def _find_route(
        self,
        net: ipaddress.IPv4Network | ipaddress.IPv6Network,
        table: int | None,
        metric: int | None,
    ) -> RouteEntry | None:
        for entry in await self.routes(table=table):
            if entry.prefix == str(net) and (metric is None or entry.metric == metric):
                return entry
        return None

    async def _request(
        self, what: str, method: Any, *args: Any, ignore: tuple[int, ...] = (), **kwargs: Any
    ) -> None:
        try:
            await _collect(await method(*args, **kwargs))
        except NetlinkError as exc:
            if exc.code in ignore:
                return
            raise RouteError(exc.code, f"{what}: {_reason(exc)}") from None


def _reason(exc: NetlinkError) -> str:
    try:
        return errno.errorcode.get(exc.code, str(exc.code)) + " " + str(exc.args[1])
    except (IndexError, TypeError):
        return str(exc)
