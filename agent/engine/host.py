"""The engine on a real host: a TUN device, UDP 500/4500 and the namespace's routes.

:func:`data_plane_choice` decides whether an agent process runs the engine or stays
plan-only. By default (``wanted`` None) the engine runs where a TUN device can be opened
and the process runs inside a named network namespace (``ip netns exec``, as the lab
and the tests start agents): one started by hand on a workstation or in a container
does not quietly take over its routes and send IKE to its plan's peers.
``data_plane: true`` in the agent's config or ``--data-plane`` forces it (a real
deployment, where the agent owns the host's IPsec), ``data_plane: false`` or
``--no-data-plane`` keeps plan-only mode (the flag wins over the config).
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from ..ike.admission import ResponderLimits
from ..io.nftables import NftError, NftTable, list_ruleset
from ..io.rawah import RawAhHandler, RawAhSocket
from ..io.rawesp import RawEspHandler, RawEspSocket
from ..io.routes import RouteError, RouteType, Routing
from ..io.sysctl import Sysctl
from ..io.tun_offload import OffloadTun
from ..io.udp import DatagramEndpoint, EspHandler, IkeHandler, UdpEndpoint, UdpError
from ..sink import EventHub
from .engine import Engine
from .forwarding import FORWARDING_RECORD, FORWARDING_SYSCTLS, ForwardingRecord, HostForwarding
from .host_firewall import Direction, Probe, check_ruleset
from .keylog import KeyLog
from .kill_switch import KILL_SWITCH_TABLE, KillSwitch, KillSwitchSettings
from .plan_routes import (
    FALLBACK_METRIC,
    MAIN_TABLE,
    OUR_PRIORITIES,
    THROW_METRIC,
    TUNNEL_TABLE,
    PlanRoutes,
    RouteTable,
)
from .translate import IkeCredentials

log = logging.getLogger(__name__)

DEFAULT_TUN_NAME = "vpnfleet0"
NETNS_DIR = "/run/netns"
DEFAULT_OWN_MARK = 0x1045
"""Firewall mark (SO_MARK) on the agent's UDP and raw ESP sockets: policy routing sends
these datagrams by the main table, never into the TUN (transport mode, see Engine), and
the kill switch lets them pass. ``firewall_mark`` in the agent's config. Its bits stay
clear of the marks other software on a host sets and tests: kube-proxy's masquerade
(0x4000) and drop (0x8000) bits, which would masquerade or drop the agent's own IKE and
ESP, Cilium's 0x0f00 nibble, and the upper 16 bits Calico, Weave and Tailscale use."""
KUBE_PROXY_MARK_BITS = 0x4000 | 0x8000
"""kube-proxy's masquerade and drop bits: a configured mark must not carry them."""


@dataclass(frozen=True)
class DataPlaneChoice:
    enabled: bool
    reason: str
    wanted: bool | None = None
    """What was asked (True: the data plane or nothing), None: the default rule."""


def named_netns() -> str | None:
    """The name ``ip netns add`` gave the network namespace this process runs in, if any
    (a bind mount under /run/netns of the same namespace inode)."""
    try:
        ours = os.stat("/proc/self/ns/net")
        names = os.listdir(NETNS_DIR)
    except OSError:
        return None
    for name in sorted(names):
        try:
            st = os.stat(os.path.join(NETNS_DIR, name))
        except OSError:
            continue
        if (st.st_dev, st.st_ino) == (ours.st_dev, ours.st_ino):
            return name
    return None


def _can_open_tun() -> str:
    """Empty when /dev/net/tun can be opened for a device, else why not."""
    try:
        fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
    except OSError as exc:
        return f"cannot open /dev/net/tun: {exc.strerror}"
    os.close(fd)
    if not has_net_admin():
        return "without CAP_NET_ADMIN (TUN devices, routes and nftables need it)"
    return ""


CAP_NET_ADMIN = 12
"""The capability's bit number (linux/capability.h)."""


def has_net_admin(status: str | None = None) -> bool:
    """Whether the process holds CAP_NET_ADMIN in its effective set (root, or a service
    unit's ``AmbientCapabilities=``), read from ``/proc/self/status`` (or ``status``)."""
    if status is None:
        try:
            with open("/proc/self/status") as file:
                status = file.read()
        except OSError:
            return os.geteuid() == 0
    for line in status.splitlines():
        if line.startswith("CapEff:"):
            return bool(int(line.split()[1], 16) >> CAP_NET_ADMIN & 1)
    return os.geteuid() == 0


def data_plane_choice(wanted: bool | None, setting: str = "--no-data-plane") -> DataPlaneChoice:
    """``setting``: what asked for ``wanted`` (a flag or the config file), for the reason."""
    if wanted is False:
        return DataPlaneChoice(False, f"plan only ({setting})", wanted)
    problem = _can_open_tun()
    if problem:
        if wanted:
            return DataPlaneChoice(False, f"no data plane: {problem}", wanted)
        return DataPlaneChoice(False, f"plan only: {problem}")
    netns = named_netns()
    if wanted is None and netns is None:
        return DataPlaneChoice(
            False,
            "plan only: not inside a named network namespace "
            "(give --data-plane to let the agent own this host's tunnels and routes)",
        )
    where = f" in network namespace {netns}" if netns else ""
    return DataPlaneChoice(True, f"data plane: TUN device, UDP 500/4500{where}", wanted)


def source_address(remote: str) -> str | None:
    """The address the kernel would send from towards ``remote`` (a route lookup by
    connecting a UDP socket, which sends nothing), or None without a route."""
    try:
        family = socket.AF_INET6 if ipaddress.ip_address(remote).version == 6 else socket.AF_INET
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.connect((remote, 9))
            return str(probe.getsockname()[0])
    except (OSError, ValueError):
        return None


class HostEngine:
    """``async with HostEngine(events) as engine``: the engine with a TUN device, a
    UdpEndpoint on ``listen`` (all addresses by default), ports 500/4500, and a raw ESP
    socket, all carrying ``own_mark``, netlink routes in ``tunnel_table`` and the kill
    switch (:mod:`.kill_switch`). The TUN device is the offloading one
    (``tun_offload.OffloadTun``: decrypted TCP segments reach the kernel joined, one
    pass of its receive path per run), and the sockets have buffers sized for line rate
    (``socket_buffers``) and batch their reads and sends (``mmsg``). On exit the sockets and
    the TUN device are released (the device's routes disappear with it); the
    policy-routing rules, the tunnel table's fallbacks and the kill switch stay, so
    that protected traffic stays in while no agent runs (see :func:`decommission`)."""

    def __init__(
        self,
        events: EventHub,
        *,
        tun_name: str = DEFAULT_TUN_NAME,
        listen: str = "0.0.0.0",
        ike_port: int = 500,
        natt_port: int = 4500,
        keylog: KeyLog | None = None,
        own_mark: int = DEFAULT_OWN_MARK,
        tunnel_table: int = TUNNEL_TABLE,
        ike_credentials: IkeCredentials | None = None,
        limits: ResponderLimits | None = None,
        state_dir: Path | None = None,
    ) -> None:
        """``state_dir``: where the forwarding sysctls' previous values are recorded
        (:mod:`.forwarding`); without it they are kept in memory only."""
        self.events = events
        self.state_dir = state_dir
        self.limits = limits
        self.ike_credentials = ike_credentials
        self.own_mark = own_mark
        self.tunnel_table = tunnel_table
        self.keylog = keylog
        self.tun_name = tun_name
        self.listen = listen
        self.ike_port = ike_port
        self.natt_port = natt_port
        self.engine: Engine | None = None
        self._routing: Routing | None = None
        self._tun: OffloadTun | None = None

    def _raw_esp(self, on_esp: RawEspHandler) -> RawEspSocket:
        return RawEspSocket(on_esp, host=self.listen, mark=self.own_mark)

    def _raw_ah(self, on_ah: RawAhHandler) -> RawAhSocket:
        return RawAhSocket(on_ah, host=self.listen, mark=self.own_mark)

    def _endpoint(self, on_ike: IkeHandler, on_esp: EspHandler) -> DatagramEndpoint:
        try:
            return UdpEndpoint(
                on_ike,
                on_esp,
                host=self.listen,
                ike_port=self.ike_port,
                natt_port=self.natt_port,
                mark=self.own_mark,
            )
        except UdpError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
            raise UdpError(
                exc.errno,
                f"{exc.strerror}: another program (an IKE daemon such as strongSwan's "
                "charon?) holds the port; stop it, or set ike_listen in the agent's config "
                "to an address it does not use",
            ) from None

    async def __aenter__(self) -> Engine:
        try:
            self._tun = OffloadTun(self.tun_name)
            self._routing = Routing()
            await self._routing.__aenter__()
            await check_host(self._routing, self.tunnel_table, self.own_mark, self._tun.name)
            await check_host_firewall(self.listen, (self.ike_port, self.natt_port))
            kill_switch = KillSwitch(
                NftTable(KILL_SWITCH_TABLE),
                KillSwitchSettings(self._tun.name, self.own_mark, (self.ike_port, self.natt_port)),
            )
            self.engine = Engine(
                self._tun,
                self._endpoint,
                routing=self._routing,
                events=self.events,
                source_address=source_address,
                keylog=self.keylog,
                own_mark=self.own_mark,
                ike_credentials=self.ike_credentials,
                make_raw=self._raw_esp,
                make_raw_ah=self._raw_ah,
                limits=self.limits,
                kill_switch=kill_switch,
                tunnel_table=self.tunnel_table,
                forwarding=host_forwarding(self.state_dir),
            )
            await self.engine.start()
        except BaseException:
            await self._close()
            raise
        log.info(
            "data plane on %s, UDP %d/%d, raw ESP", self._tun.name, self.ike_port, self.natt_port
        )
        return self.engine

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._close()

    async def _close(self) -> None:
        if self.engine is not None:
            try:
                await self.engine.stop()
            except Exception:
                log.exception("stopping the engine")
            self.engine = None
        if self._routing is not None:
            await self._routing.close()
            self._routing = None
        if self._tun is not None:
            self._tun.close()
            self._tun = None


class HostConflict(OSError):
    """The host already uses the routing table or firewall mark the agent is configured
    with, for rules or routes the agent did not make."""

    def __str__(self) -> str:
        return str(self.strerror)


async def check_host(routing: RouteTable, table: int, mark: int, tun_name: str) -> None:
    """Refuse (:class:`HostConflict`) a routing table or firewall mark that rules or routes
    of someone else's already use: the agent would route their traffic, or they its own.
    What an agent left (rules at its priorities, its fallbacks) is the agent's."""
    clashes = []
    for rule in await routing.rules():
        if rule.priority in OUR_PRIORITIES and rule.table in (MAIN_TABLE, table):
            continue
        if rule.table == table:
            clashes.append(f"rule {rule!s} looks up table {table}")
        elif rule.fwmark == mark:
            clashes.append(f"rule {rule!s} matches firewall mark {mark:#x}")
    for route in await routing.routes(table=table):
        ours = (
            (route.kind is RouteType.UNICAST and route.ifname == tun_name)
            or (route.kind is RouteType.UNREACHABLE and route.metric == FALLBACK_METRIC)
            or (route.kind is RouteType.THROW and route.metric == THROW_METRIC)
        )
        if not ours:
            clashes.append(
                f"route {route.kind} {route.prefix} dev {route.ifname} is in table {table}"
            )
    if clashes:
        raise HostConflict(
            errno.EEXIST,
            f"this host already uses routing table {table} or firewall mark {mark:#x} "
            f"({'; '.join(clashes)}); set routing_table and firewall_mark in the agent's "
            "config to ones nothing else uses",
        )


def host_forwarding(state_dir: Path | None) -> HostForwarding:
    """The forwarding sysctls of this network namespace, with their record in
    ``state_dir``."""
    record = ForwardingRecord(state_dir / FORWARDING_RECORD if state_dir is not None else None)
    return HostForwarding({v: Sysctl(name) for v, name in FORWARDING_SYSCTLS.items()}, record)


class HostFirewallBlocks(OSError):
    """The host's own nftables ruleset would drop the agent's IKE."""

    def __str__(self) -> str:
        return str(self.strerror)


async def check_host_firewall(listen: str, ports: tuple[int, ...]) -> None:
    """Refuse (:class:`HostFirewallBlocks`) to start where a base chain of the host's
    nftables ruleset surely drops IKE to or from ``ports`` in the family the agent
    listens on (:mod:`.host_firewall`), naming the table, chain and rule and what to add.
    A ruleset that cannot be read is not held against the host (logged)."""
    try:
        document = await list_ruleset()
    except NftError as exc:
        log.warning("not checked whether the host's firewall lets IKE through: %s", exc)
        return
    try:
        family = ipaddress.ip_address(listen).version
    except ValueError:
        family = 4
    probes = [Probe(d, family, p) for d in Direction for p in sorted(set(ports))]
    findings = check_ruleset(document if isinstance(document, dict) else {}, probes)
    if findings:
        raise HostFirewallBlocks(
            errno.EACCES,
            "the host's firewall would drop IKE, so no tunnel could come up: "
            + "; ".join(f.message() for f in findings),
        )


class AgentRunning(Exception):
    """Decommission refused: an agent still holds the data plane."""


async def decommission(
    tun_name: str = DEFAULT_TUN_NAME,
    own_mark: int = DEFAULT_OWN_MARK,
    tunnel_table: int = TUNNEL_TABLE,
    state_dir: Path | None = None,
) -> list[str]:
    """Remove what the agent's data plane leaves on the host when it stops: its policy
    rules, its routing table's routes and its nftables table (the kill switch), and put
    back the forwarding sysctls it turned on (as recorded in ``state_dir``). The TUN
    device is not persistent, so it is gone once no agent holds it; while one does the
    agent is running and :class:`AgentRunning` is raised with nothing changed. Returns
    what could not be removed (empty: the host is as the agent found it)."""
    async with Routing() as routing:
        try:
            await routing.link_index(tun_name)
        except RouteError:
            pass
        else:
            raise AgentRunning(
                f"the TUN device {tun_name} exists: an agent is running in this network "
                "namespace; stop it first (systemctl stop vpnfleet-agent)"
            )
        problems = await PlanRoutes(routing, tun_name, own_mark, table=tunnel_table).decommission()
    left = [f"{p.subject}: {p.message}" for p in problems]
    try:
        await NftTable(KILL_SWITCH_TABLE).delete()
    except OSError as exc:
        left.append(f"nftables table inet {KILL_SWITCH_TABLE}: {exc}")
    if state_dir is not None:
        left += host_forwarding(state_dir).restore()
    return left
