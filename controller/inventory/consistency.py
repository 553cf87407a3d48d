"""Checks across variables and across hosts, on the resolved values.

A value can be fine where it is written and wrong beside another: a DPD timeout shorter
than its delay, a lifetime no longer than the rekey jitter, two hosts claiming
overlapping subnets (the planner would give both prefixes to the SPD of every peer, and
the wider one would capture the narrower one's traffic). Each error points at the
definition to change and names the other one's place, once per pair of definitions
however many hosts inherit them.

IKEv1 Aggressive Mode (``ike_aggressive``) is refused beside ``ike_version: 2`` and
warned of wherever it is used: it sends what Main Mode protects in the clear.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from vpnfleet.protos import limits

from .errors import InventoryError, InventoryWarning, Mark
from .model import Inventory, ResolvedHost
from .schema import DEFAULT_MARK
from .source import mark_of

_SHOWN_HOSTS = 5


def _at(mark: Mark) -> str:
    return "default" if mark == DEFAULT_MARK else f"set at {mark}"


def _hosts(names: list[str]) -> str:
    head = ", ".join(names[:_SHOWN_HOSTS])
    more = len(names) - _SHOWN_HOSTS
    word = "host" if len(names) == 1 else "hosts"
    return f"{word} {head}" + (f" and {more} more" if more > 0 else "")


@dataclass(slots=True)
class _Pair:
    """One pair of definitions found wrong together, and the hosts that inherit both."""

    make: Callable[[str], str]
    mark: Mark
    hosts: list[str] = field(default_factory=list)


def _pair_checks(host: ResolvedHost, found: dict[tuple[object, ...], _Pair]) -> None:
    v, origins = host.vars, host.origins

    def add(first: str, second: str, message: Callable[[str], str]) -> None:
        a, b = origins[first], origins[second]
        key = (first, second, a, b, v[first], v[second])
        pair = found.get(key)
        if pair is None:
            # The more specific definition is the one to look at; a default has no place.
            pair = found[key] = _Pair(message, a if a != DEFAULT_MARK else b)
        pair.hosts.append(host.name)

    if v["ike_aggressive"] and v["ike_version"] != 1:
        add(
            "ike_aggressive",
            "ike_version",
            lambda hosts: (
                f"ike_aggressive ({_at(origins['ike_aggressive'])}) asks for IKEv1 Aggressive "
                f"Mode, but ike_version is {v['ike_version']} ({_at(origins['ike_version'])}) "
                f"for {hosts}: IKEv2 has no such mode; set ike_version: 1 beside it, or "
                "remove ike_aggressive"
            ),
        )
    delay, timeout = int(v["dpd_delay"]), int(v["dpd_timeout"])
    if limits.dpd_problem(delay, timeout) is not None:
        add(
            "dpd_timeout",
            "dpd_delay",
            lambda hosts: (
                f"dpd_timeout {timeout}s ({_at(origins['dpd_timeout'])}) is shorter than "
                f"dpd_delay {delay}s ({_at(origins['dpd_delay'])}) for {hosts}: a peer would "
                "be declared dead before its liveness check could be answered; make "
                "dpd_timeout at least dpd_delay (or set dpd_delay: 0 to turn the checks off)"
            ),
        )
    jitter = int(v["rekey_jitter"])
    for name in ("ike_lifetime", "child_lifetime"):
        lifetime = int(v[name])
        if limits.jitter_problem(lifetime, jitter) is not None:
            add(name, "rekey_jitter", _jitter_message(name, lifetime, jitter, origins))


def _jitter_message(
    name: str, lifetime: int, jitter: int, origins: Mapping[str, Mark]
) -> Callable[[str], str]:
    def message(hosts: str) -> str:
        return (
            f"{name} {lifetime}s ({_at(origins[name])}) is not longer than rekey_jitter "
            f"{jitter}s ({_at(origins['rekey_jitter'])}) for {hosts}: the jitter is "
            "taken off each rekey time, so the SA could be rekeyed at once, again and "
            f"again; make {name} longer than rekey_jitter or rekey_jitter shorter"
        )

    return message


@dataclass(frozen=True, slots=True)
class _Prefix:
    network: ipaddress.IPv4Network | ipaddress.IPv6Network
    host: str
    mark: Mark | None


def _overlapping_subnets(resolved: list[ResolvedHost]) -> list[InventoryError]:
    """Every pair of hosts whose subnets overlap (a prefix inside or equal to another)."""
    prefixes = sorted(
        (
            _Prefix(ipaddress.ip_network(str(text)), host.name, mark_of(text))
            for host in resolved
            for text in host.vars.get("subnets") or ()
        ),
        key=lambda p: (p.network.version, int(p.network.network_address), p.network.prefixlen),
    )
    # Prefixes are nested or disjoint: in this order, the ones still open (whose last
    # address is not yet passed) all contain the next one.
    found: dict[tuple[_Prefix, _Prefix], list[tuple[str, str]]] = {}
    open_: list[_Prefix] = []
    for p in prefixes:
        while open_ and (
            open_[-1].network.version != p.network.version
            or int(open_[-1].network.broadcast_address) < int(p.network.network_address)
        ):
            open_.pop()
        for container in open_:
            if container.host != p.host:
                # Keyed by prefix and place: a definition inherited by many hosts is one.
                key = (
                    _Prefix(container.network, "", container.mark),
                    _Prefix(p.network, "", p.mark),
                )
                found.setdefault(key, []).append((container.host, p.host))
        open_.append(p)
    errors = []
    for (outer, inner), pairs in found.items():
        wide, wide_mark, narrow, narrow_mark = outer.network, outer.mark, inner.network, inner.mark
        if wide_mark is not None and wide_mark == narrow_mark:
            names = sorted({h for pair in pairs for h in pair})
            message = (
                f"subnets: {wide} (set at {wide_mark}) is given to {_hosts(names)}: each "
                "host must protect prefixes of its own (their tunnels would carry each "
                "other's traffic); set subnets per host, e.g. in host_vars/"
            )
        else:
            wide_host, narrow_host = pairs[0]
            also = f" (and {len(pairs) - 1} more such pairs)" if len(pairs) > 1 else ""
            if wide == narrow:
                what = f"is also a subnet of host {narrow_host!r} (at {narrow_mark}){also}"
                effect = f"traffic for {wide} would go to either"
            else:
                what = f"contains {narrow} of host {narrow_host!r} (at {narrow_mark}){also}"
                effect = f"{narrow_host}'s traffic would go into the tunnel to {wide_host}"
            message = (
                f"subnets of host {wide_host!r}: {wide} (at {wide_mark}) {what}: {effect} "
                "in every peer's SPD; give each host prefixes that do not overlap"
            )
        errors.append(InventoryError(message, wide_mark))
    return errors


def aggressive_mode_exposure(auth: str) -> str:
    """What IKEv1 Aggressive Mode gives away with ``auth`` (``psk`` or ``pubkey``): the
    planner says the same of an external peer's."""
    if auth == "psk":
        # RFC 2409 section 5.4: HASH_R travels in the clear in the second message, and
        # it is keyed by the PSK (SKEYID = prf(pre-shared-key, Ni_b | Nr_b)).
        return (
            "IKEv1 Aggressive Mode with a pre-shared key sends a hash keyed by the PSK in "
            "the clear (RFC 2409 section 5.4): anyone who sees it, or starts an exchange, "
            "can guess the key offline; prefer Main Mode (ike_aggressive: false)"
        )
    # RFC 2409 section 5: Main Mode encrypts the identities, Aggressive Mode does not.
    return (
        "IKEv1 Aggressive Mode sends both ends' identities in the clear (RFC 2409 "
        "section 5), where Main Mode encrypts them"
    )


def _aggressive_warnings(resolved: list[ResolvedHost]) -> list[InventoryWarning]:
    """A warning per ``ike_aggressive`` definition (and auth) in use, naming its hosts."""
    found: dict[tuple[Mark, str], list[str]] = {}
    for host in resolved:
        if host.vars["ike_aggressive"] and host.vars["ike_version"] == 1:
            key = (host.origins["ike_aggressive"], str(host.vars["auth"]))
            found.setdefault(key, []).append(host.name)
    return [
        InventoryWarning(
            f"ike_aggressive with auth {auth} for {_hosts(names)}: "
            f"{aggressive_mode_exposure(auth)}",
            mark,
        )
        for (mark, auth), names in found.items()
    ]


def check_resolved(inventory: Inventory) -> tuple[list[InventoryError], list[InventoryWarning]]:
    """Problems that only show once every host's variables are merged, and warnings."""
    resolved = [inventory.resolve(name) for name in inventory.hosts]
    found: dict[tuple[object, ...], _Pair] = {}
    for host in resolved:
        _pair_checks(host, found)
    errors = [InventoryError(p.make(_hosts(p.hosts)), p.mark) for p in found.values()]
    return errors + _overlapping_subnets(resolved), _aggressive_warnings(resolved)
