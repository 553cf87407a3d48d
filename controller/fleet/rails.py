"""Safety rails: refuse plans that would cut the controller off from a host.

Two paths must stay in the clear on every host: the controller's gRPC session to the
agent (TCP to the agent's address and ``agent_port``, from the controller's own source
address) and SSH (TCP port 22 to each of the host's addresses, from the same source).
A plan whose SPD would protect or discard either path leaves the operator with no way to
reach the host if the tunnel does not come up, so it is refused unless forced.

The check follows the SPD's first-match rule (RFC 4301 section 4.4.1): the path is a
set of packets (one local address and port, one remote address, any ephemeral remote
port); entries are walked in order, and the path is safe once a BYPASS entry covers all
of it. A PROTECT or DISCARD entry that any packet of the path reaches first is a
violation. A bypass covering only part of the path (some remote ports) does not make the
rest safe, so a later protect or discard still counts.

:func:`check_plan` is pure; :func:`controller_source_address` asks the kernel which
source address it would use (a connected UDP socket: routing only, no packet sent).
"""

from __future__ import annotations

import enum
import ipaddress
import socket
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any

from ..planner.model import NodePlan, SpdAction, SpdEntry

TCP = 6
SSH_PORT = 22
# Clients pick their source port from the ephemeral range; a selector has to cover all
# of it to catch (or to clear) every session. RFC 6335 section 6 puts dynamic ports at
# 49152-65535, but Linux starts at 32768 and other stacks at 1024: take the widest.
EPHEMERAL = (1024, 65535)

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class PathKind(enum.StrEnum):
    """Which control connection a path carries."""

    GRPC = "grpc"
    SSH = "ssh"


@dataclass(frozen=True, slots=True)
class ControlPath:
    """A TCP path from the controller to a host that the host's SPD must leave alone."""

    kind: PathKind
    host: str
    local_address: str  # the host's side
    local_port: int
    remote_address: str  # the controller's side

    def __str__(self) -> str:
        what = "controller↔agent gRPC" if self.kind is PathKind.GRPC else "SSH"
        return f"{what} path tcp {self.remote_address} -> {self.local_address}:{self.local_port}"


@dataclass(frozen=True, slots=True)
class RailViolation:
    host: str
    path: ControlPath
    entry: str  # the SPD entry's name (policy:NAME for operator policies)
    action: SpdAction

    def __str__(self) -> str:
        verb = "protect" if self.action is SpdAction.PROTECT else "discard"
        return f"host {self.host}: SPD entry {self.entry!r} would {verb} the {self.path}"


class RailError(Exception):
    """Plans refused by the safety rails; ``--force`` overrides."""

    def __init__(self, violations: Iterable[RailViolation]) -> None:
        self.violations = list(violations)
        super().__init__(str(self))

    def __str__(self) -> str:
        lines = [
            f"refused: {len(self.violations)} plan entr"
            f"{'y' if len(self.violations) == 1 else 'ies'} would cut the controller off "
            "(add a bypass policy before them, or give --force):"
        ]
        lines += [f"  {v}" for v in self.violations]
        return "\n".join(lines)


@cache
def _span(prefix: str) -> tuple[int, int, int]:
    """(IP version, first, last address as integers) of a prefix; version 0 if invalid."""
    try:
        net = ipaddress.ip_network(prefix, strict=False)
    except ValueError:
        return (0, 0, -1)
    return (net.version, int(net.network_address), int(net.broadcast_address))


@cache
def _point(address: str) -> tuple[int, int]:
    ip = ipaddress.ip_address(address)
    return (ip.version, int(ip))


@cache
def _inside(address: str, prefix: str) -> bool:
    # Integer ranges, parsed once per distinct string: fleets repeat the same prefixes
    # across thousands of SPD entries, and ipaddress objects are slow to build.
    version, value = _point(address)
    net_version, first, last = _span(prefix)
    return version == net_version and first <= value <= last


def _coverage(entry: SpdEntry, path: ControlPath) -> str:
    """How much of ``path`` the entry's selector matches: "none", "part" or "all"."""
    sel = entry.selector
    if not _inside(path.remote_address, sel.remote_prefix):
        return "none"
    if not _inside(path.local_address, sel.local_prefix):
        return "none"
    if sel.protocol not in (0, TCP):
        return "none"
    if sel.protocol == 0:
        # No protocol, no ports (RFC 4301 section 4.4.1.1): the whole path matches.
        return "all"
    if not sel.local_port_start <= path.local_port <= sel.local_port_end:
        return "none"
    low, high = EPHEMERAL
    if sel.remote_port_end < low or sel.remote_port_start > high:
        return "none"
    if sel.remote_port_start <= low and sel.remote_port_end >= high:
        return "all"
    return "part"


def check_path(plan: NodePlan, path: ControlPath) -> RailViolation | None:
    """The first SPD entry that protects or discards part of ``path``, if any."""
    for entry in plan.spd:
        cover = _coverage(entry, path)
        if cover == "none":
            continue
        if entry.action is SpdAction.BYPASS:
            if cover == "all":
                return None
            continue
        if entry.action in (SpdAction.PROTECT, SpdAction.DISCARD):
            return RailViolation(plan.host, path, entry.name, entry.action)
    return None


def check_plan(plan: NodePlan, paths: Iterable[ControlPath]) -> list[RailViolation]:
    """Every path of ``paths`` that ``plan`` would protect or discard, in path order."""
    pending = list(enumerate(paths))
    remotes = {p.remote_address for _, p in pending}
    found: dict[int, RailViolation] = {}
    # One walk of the SPD for all paths: most entries (the peers' subnets) are passed
    # over on the controller's address alone, and a large mesh has one per peer.
    for entry in plan.spd:
        if not pending:
            break
        prefix = entry.selector.remote_prefix
        for remote in remotes:
            if _inside(remote, prefix):
                break
        else:
            continue
        still = []
        for index, path in pending:
            cover = _coverage(entry, path)
            if cover == "none" or entry.action not in _DECIDING:
                still.append((index, path))
            elif entry.action is SpdAction.BYPASS:
                if cover == "part":
                    still.append((index, path))  # the rest of the path goes on
            else:
                found[index] = RailViolation(plan.host, path, entry.name, entry.action)
        pending = still
    return [found[i] for i in sorted(found)]


_DECIDING = (SpdAction.BYPASS, SpdAction.PROTECT, SpdAction.DISCARD)


def split_endpoint(endpoint: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` -> (host, port)."""
    if endpoint.startswith("["):
        host, _, rest = endpoint[1:].partition("]")
        return host, int(rest.lstrip(":"))
    host, _, port = endpoint.rpartition(":")
    return host, int(port)


def controller_source_address(target: str, port: int = 9) -> str:
    """The source address the kernel would pick to reach ``target``.

    connect() on a UDP socket only consults the routing table; nothing is sent.
    """
    family = socket.AF_INET6 if ":" in target else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        s.connect((target, port))
        return str(s.getsockname()[0]).split("%")[0]


def _address(text: str) -> IpAddress | None:
    try:
        return ipaddress.ip_address(text.split("%")[0])
    except ValueError:
        return None


def _resolve(name: str) -> str | None:
    if _address(name) is not None:
        return name
    try:
        info = socket.getaddrinfo(name, None, proto=socket.IPPROTO_TCP)
    except OSError:
        return None
    return str(info[0][4][0]) if info else None


def control_paths(
    plan: NodePlan, endpoint: str, source_address: Callable[[str], str | None]
) -> list[ControlPath]:
    """The gRPC path to the agent at ``endpoint`` and the SSH path to each host address."""
    paths: list[ControlPath] = []
    agent_host, agent_port = split_endpoint(endpoint)
    agent_ip = _resolve(agent_host)
    controller = source_address(agent_ip) if agent_ip is not None else None
    if agent_ip is not None and controller is not None:
        paths.append(ControlPath(PathKind.GRPC, plan.host, agent_ip, agent_port, controller))
    ssh_targets = dict.fromkeys([*plan.addresses, *([agent_ip] if agent_ip else [])])
    for address in ssh_targets:
        if _address(address) is None:
            continue
        controller = source_address(address)
        if controller is None:
            continue  # no route from here: there is no path to cut
        paths.append(ControlPath(PathKind.SSH, plan.host, address, SSH_PORT, controller))
    return paths


def check_fleet(
    plans: Mapping[str, NodePlan],
    endpoints: Mapping[str, str],
    hosts: Iterable[str] | None = None,
    *,
    source_address: Callable[[str], str] = controller_source_address,
) -> list[RailViolation]:
    """Violations of every plan of ``hosts`` (default: all), in host order."""
    cache: dict[str, str | None] = {}

    def cached(target: str) -> str | None:
        if target not in cache:
            try:
                cache[target] = source_address(target)
            except OSError:
                cache[target] = None
        return cache[target]

    out: list[RailViolation] = []
    for host in hosts if hosts is not None else plans:
        out += check_plan(plans[host], control_paths(plans[host], endpoints[host], cached))
    return out


def to_json(violations: Iterable[RailViolation]) -> list[dict[str, Any]]:
    return [
        {
            "host": v.host,
            "entry": v.entry,
            "action": v.action.name.lower(),
            "path": v.path.kind,
            "local": f"{v.path.local_address}:{v.path.local_port}",
            "remote": v.path.remote_address,
            "message": str(v),
        }
        for v in violations
    ]
