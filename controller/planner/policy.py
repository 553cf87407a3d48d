"""The operator's SPD policies (``policies`` in topology.yaml)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from vpnfleet.controller.inventory import Mark, did_you_mean, mark_of

from .checks import PORTED, TopologyChecker, describe
from .model import SpdAction, TrafficSelector

_ANY_V4, _ANY_V6 = "0.0.0.0/0", "::/0"

POLICY_KEYS = (
    "name",
    "action",
    "local",
    "remote",
    "protocol",
    "local_ports",
    "remote_ports",
    "hosts",
    "peer",
)


@dataclass(frozen=True, slots=True)
class Policy:
    name: str
    action: SpdAction
    selectors: tuple[TrafficSelector, ...]
    hosts: frozenset[str]
    peer: str
    mark: Mark | None


def parse_policy(
    ck: TopologyChecker,
    externals: Mapping[str, Any],
    entry: Mapping[str, Any],
    what: str,
    unique: Callable[..., None],
) -> Policy | None:
    """One ``policies`` entry; "any" on both sides gives an IPv4 and an IPv6 selector."""
    ck.keys(entry, what, POLICY_KEYS, ("name", "action"))
    name = ck.string(entry, "name", what)
    unique(name, what, entry.get("name"))
    written = entry.get("action")
    actions = {"protect": SpdAction.PROTECT, "bypass": SpdAction.BYPASS}
    actions["discard"] = SpdAction.DISCARD
    action = actions.get(written) if isinstance(written, str) else None
    if written is not None and action is None:
        hint = did_you_mean(str(written), actions)
        ck.error(
            f"{what}: action: expected protect, bypass or discard, got {describe(written)}{hint}",
            written,
        )
    local = ck.prefix(entry.get("local"), f"{what}: local", allow_any=True)
    remote = ck.prefix(entry.get("remote"), f"{what}: remote", allow_any=True)
    protocol = ck.protocol(entry.get("protocol"), what)
    local_ports = ck.ports(entry.get("local_ports"), f"{what}: local_ports")
    remote_ports = ck.ports(entry.get("remote_ports"), f"{what}: remote_ports")
    hosts = ck.pattern(entry, "hosts", what)
    peer = ck.string(entry, "peer", what) or ""
    if protocol is not None and protocol not in PORTED:
        for key in ("local_ports", "remote_ports"):
            if entry.get(key) not in (None, "any"):
                ck.error(f"{what}: {key} only apply to tcp, udp or sctp", entry.get(key))
                local_ports = None
    if action is SpdAction.PROTECT and not peer:
        ck.error(f"{what}: a protect policy needs 'peer' (whose SA carries it)", entry)
        return None
    if action is not SpdAction.PROTECT and peer:
        ck.error(f"{what}: 'peer' only applies to protect policies", peer)
        return None
    if peer and peer not in externals and peer not in ck.inventory.hosts:
        choices = [*externals, *ck.inventory.hosts]
        ck.error(
            f"{what}: peer: no host or external peer {peer!r}{did_you_mean(peer, choices)}", peer
        )
        return None
    if None in (name, action, local, remote, protocol, local_ports, remote_ports, hosts):
        return None
    assert local is not None and remote is not None and protocol is not None
    assert local_ports is not None and remote_ports is not None and hosts is not None
    families = []
    v6 = ":" in local or ":" in remote
    v4 = (local != "any" and ":" not in local) or (remote != "any" and ":" not in remote)
    if v4 and v6:
        ck.error(f"{what}: local {local} and remote {remote} are of different IP versions", entry)
        return None
    if not v6:
        families.append(_ANY_V4)
    if not v4:
        families.append(_ANY_V6)
    selectors = tuple(
        TrafficSelector(
            local_prefix=any_ if local == "any" else local,
            remote_prefix=any_ if remote == "any" else remote,
            protocol=protocol,
            local_port_start=local_ports[0],
            local_port_end=local_ports[1],
            remote_port_start=remote_ports[0],
            remote_port_end=remote_ports[1],
        )
        for any_ in families
    )
    assert action is not None
    return Policy(str(name), action, selectors, frozenset(hosts), peer, mark_of(entry))
