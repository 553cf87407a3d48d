"""The host variable table: what each variable may hold, its normal form and its default.

Every definition of a variable is checked where it is written (inline in hosts.yaml, in
group_vars/ or host_vars/), so an error names the line that is wrong even when a more
specific level overrides it. Values come out normalised (durations as int seconds,
addresses in compressed form, prefixes in network form, lists as tuples); strings keep
their position (:class:`MarkedStr`) so later stages can point at a single list item.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from vpnfleet.protos import limits

from .errors import InventoryError, Mark, did_you_mean, misspelling_of
from .source import MarkedStr, key_mark, mark_of

USER_PREFIX = "x_"
"""Variables starting with this prefix belong to the operator and are passed through as-is."""

ANSIBLE_PREFIX = "ansible_"
"""Ansible's own variables (``ansible_host``, ``ansible_port``, ``ansible_user``,
``ansible_become*`` …): passed through as-is, for Ansible and for vpnfleet's SSH use."""

GROUP_PRIORITY = "ansible_group_priority"


@dataclass(frozen=True, slots=True)
class Var:
    """One variable definition after validation: normalised value and where it was written."""

    value: Any
    origin: Mark
    written: Any = None
    """The value as the file writes it (what Ansible shows), when ``value`` is normalised."""


class _Invalid(ValueError):
    """A value that does not fit its variable; message says what was expected."""

    def __init__(self, message: str, mark: Mark | None = None) -> None:
        super().__init__(message)
        self.mark = mark


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return repr(str(value)) if isinstance(value, str) else repr(value)


def _keep_mark(text: str, like: Any) -> str:
    """``text`` as a MarkedStr carrying the position of ``like`` when it had one."""
    mark = mark_of(like)
    if mark is None:
        return text
    out = MarkedStr(text)
    out.mark = mark
    return out


def _string(value: Any) -> str:
    if not isinstance(value, str) or isinstance(value, bool):
        raise _Invalid(f"expected a string, got {_describe(value)}")
    if not value.strip():
        raise _Invalid("expected a non-empty string")
    return value


def _choice(*choices: str) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        if not isinstance(value, str) or value not in choices:
            expected = " | ".join(choices)
            hint = did_you_mean(value, choices) if isinstance(value, str) else ""
            raise _Invalid(f"expected one of {expected}, got {_describe(value)}{hint}")
        return value

    return check


def _integer(low: int, high: int | None = None) -> Callable[[Any], int]:
    def check(value: Any) -> int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise _Invalid(f"expected an integer, got {_describe(value)}")
        if value < low or (high is not None and value > high):
            span = f"{low}..{high}" if high is not None else f">= {low}"
            raise _Invalid(f"expected an integer {span}, got {int(value)}")
        return int(value)

    return check


_BOOLEAN_WORDS = ("true", "false", "yes", "no", "on", "off")


def _boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        hint = ""
        if isinstance(value, str) and value.strip().lower() in _BOOLEAN_WORDS:
            # INI reads 'true' as text, as ansible-core does; only True and False are booleans
            hint = (
                " (text, not a boolean: write true or false unquoted in YAML, True or False in INI)"
            )
        raise _Invalid(f"expected true or false, got {_describe(value)}{hint}")
    return value


_DURATION = re.compile(r"(\d+)\s*([smhd]?)")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(value: Any) -> int:
    """Seconds from an int or a string like ``30s``, ``5m``, ``4h``, ``1d`` (strongSwan style)."""
    expected = "expected seconds (an integer) or a duration like 30s, 5m, 4h, 1d"
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise _Invalid(f"{expected}, got {_describe(value)}")
    if isinstance(value, int):
        if value < 0:
            raise _Invalid(f"{expected}, got a negative number {int(value)}")
        return int(value)
    match = _DURATION.fullmatch(value.strip())
    if not match:
        raise _Invalid(f"{expected}, got {_describe(value)}")
    return int(match.group(1)) * _UNIT_SECONDS[match.group(2)]


def _duration(limit: limits.Limit) -> Callable[[Any], int]:
    """A duration within the plan's limit for it (the agent checks the same one)."""

    def check(value: Any) -> int:
        seconds = parse_duration(value)
        problem = limit.problem(seconds)
        if problem is not None:
            raise _Invalid(problem)
        return seconds

    return check


def _address(value: Any) -> str:
    if not isinstance(value, str) or isinstance(value, bool):
        raise _Invalid(f"expected an IPv4 or IPv6 address string, got {_describe(value)}")
    try:
        address = ipaddress.ip_address(value.strip())
    except ValueError:
        hint = " (an address, not a prefix)" if "/" in value else ""
        raise _Invalid(f"{value!r} is not an IPv4 or IPv6 address{hint}") from None
    return _keep_mark(address.compressed, value)


def _prefix(value: Any) -> str:
    if not isinstance(value, str) or isinstance(value, bool):
        raise _Invalid(f"expected a CIDR prefix like 10.1.1.0/24, got {_describe(value)}")
    text = value.strip()
    if "/" not in text:
        raise _Invalid(f"{value!r} has no prefix length (expected a CIDR prefix like 10.1.1.0/24)")
    try:
        network = ipaddress.ip_network(text)
    except ValueError:
        try:
            loose = ipaddress.ip_network(text, strict=False)
        except ValueError:
            raise _Invalid(f"{value!r} is not a CIDR prefix like 10.1.1.0/24") from None
        raise _Invalid(f"{value!r} has host bits set (did you mean '{loose}'?)") from None
    return _keep_mark(network.compressed, value)


def _string_list(item: Callable[[Any], str], what: str) -> Callable[[Any], tuple[str, ...]]:
    def check(value: Any) -> tuple[str, ...]:
        if not isinstance(value, list):
            raise _Invalid(f"expected a list of {what}, got {_describe(value)}")
        out: list[str] = []
        for index, element in enumerate(value):
            try:
                out.append(item(element))
            except _Invalid as exc:
                raise _Invalid(f"item {index}: {exc}", mark_of(element)) from None
        return tuple(out)

    return check


IKE_VERSIONS = (1, 2)
"""The ``ike_version`` values: IKEv1 (RFC 2409) or IKEv2 (RFC 7296, the default)."""


def _ike_version(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value in IKE_VERSIONS:
        return int(value)
    hint = " (a number, not text: write ike_version: 1 unquoted)" if value in ("1", "2") else ""
    raise _Invalid(f"expected 1 (IKEv1) or 2 (IKEv2), got {_describe(value)}{hint}")


def _agent_address(value: Any) -> str:
    text = _string(value) if value != "" else ""
    if not text:
        return ""
    host, port = text, ""
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise _Invalid(f"expected 'host', 'host:port' or '[v6]:port', got {text!r}")
        port = rest[1:]
    elif text.count(":") == 1:
        host, port = text.split(":")
    if not host:
        raise _Invalid(f"expected 'host' or 'host:port', got {text!r} (empty host)")
    if port and (not port.isdigit() or not 1 <= int(port) <= 65535):
        raise _Invalid(f"expected a port 1..65535 after ':', got {port!r}")
    return text


@dataclass(frozen=True, slots=True)
class VarSpec:
    """One row of the variable table."""

    name: str
    check: Callable[[Any], Any]
    default: Any


DEFAULT_IKE_PROPOSALS = ("aes256gcm16-prfsha384-x25519",)
IKEV1_DEFAULT_IKE_PROPOSALS = ("aes256-sha256-modp2048",)
"""What an ``ike_version: 1`` host offers when no file sets ``ike_proposals``: IKEv1
phase 1 has no AEAD cipher (RFC 2409 Appendix A), so the IKEv2 default cannot serve."""

_TABLE: tuple[VarSpec, ...] = (
    VarSpec("address", _address, None),
    VarSpec("subnets", _string_list(_prefix, "CIDR prefixes"), ()),
    VarSpec("identity", _string, None),
    VarSpec("auth", _choice("psk", "pubkey"), "psk"),
    VarSpec("ike_proposals", _string_list(_string, "proposal strings"), DEFAULT_IKE_PROPOSALS),
    VarSpec("esp_proposals", _string_list(_string, "proposal strings"), ("aes256gcm16",)),
    # AH (RFC 4302) child proposals, none by default; see controller/planner/profile.py
    # for how they combine with esp_proposals.
    VarSpec("ah_proposals", _string_list(_string, "proposal strings"), ()),
    VarSpec("ike_version", _ike_version, 2),
    # IKEv1 only (RFC 2409 section 5.4): off unless asked for, see consistency.py.
    VarSpec("ike_aggressive", _boolean, False),
    VarSpec("mode", _choice("tunnel", "transport"), "tunnel"),
    VarSpec("start_action", _choice("start", "trap", "none"), "start"),
    VarSpec("ike_lifetime", _duration(limits.REKEY_SECONDS), 14400),
    VarSpec("child_lifetime", _duration(limits.REKEY_SECONDS), 3600),
    VarSpec("child_lifetime_bytes", _integer(0), 0),
    VarSpec("child_lifetime_packets", _integer(0), 0),
    VarSpec("rekey_jitter", _duration(limits.REKEY_JITTER_SECONDS), 60),
    VarSpec("dpd_delay", _duration(limits.DPD_DELAY_SECONDS), 30),
    VarSpec("dpd_timeout", _duration(limits.DPD_TIMEOUT_SECONDS), 150),
    VarSpec("nat", _boolean, False),
    VarSpec("force_encap", _boolean, False),
    VarSpec("nat_keepalive", _duration(limits.NAT_KEEPALIVE_SECONDS), 20),
    # RFC 7383: offer IKE fragmentation, and the largest IP datagram (headers included)
    # an IKE message may fill.
    VarSpec("ike_fragmentation", _boolean, True),
    VarSpec(
        "ike_fragment_size",
        _integer(limits.IKE_FRAGMENT_SIZE.low, limits.IKE_FRAGMENT_SIZE.high),
        limits.DEFAULT_IKE_FRAGMENT_SIZE,
    ),
    VarSpec("agent_port", _integer(1, 65535), 50051),
    VarSpec("agent_address", _agent_address, ""),
    VarSpec("psk_epoch", _integer(1), 1),
)

VARIABLES: Mapping[str, VarSpec] = {spec.name: spec for spec in _TABLE}

DEFAULT_MARK = Mark("<default>", 0, 0)
"""Origin of a value that no inventory file set."""


def host_defaults(host: str) -> dict[str, Any]:
    """Defaults for every host variable (``identity`` defaults to the host name).

    ``address`` has no default (it is required), so it does not appear here.
    """
    out = {spec.name: spec.default for spec in _TABLE if spec.default is not None}
    out["identity"] = host
    return out


def check_group_priority(value: Any) -> int:
    """``ansible_group_priority`` as ansible-core takes it (``int(value)``): an integer,
    or a string holding one (INI and quoted YAML values)."""
    text = value.strip() if isinstance(value, str) else None
    if isinstance(value, int) and not isinstance(value, bool):
        number = int(value)
    elif text and re.fullmatch(r"[+-]?\d+", text):
        number = int(text)
    else:
        raise _Invalid(f"expected an integer, got {_describe(value)}")
    return _integer(-(2**31), 2**31 - 1)(number)


def check_vars(
    variables: Mapping[str, Any], *, level: str, owner: str
) -> tuple[dict[str, Var], list[InventoryError]]:
    """Validate and normalise one mapping of variables written for a group or a host.

    ``level`` is "group" or "host"; ``owner`` names the group or host for messages.
    Returns the good definitions and every error.

    vpnfleet's variables are checked against the table; ``ansible_*`` and ``x_*`` names
    and any other name pass through untouched (an inventory shared with Ansible holds
    its roles' variables too), except a name that looks like a misspelling of one of
    vpnfleet's (:func:`.errors.misspelling_of`): that is refused with a did-you-mean.
    """
    good: dict[str, Var] = {}
    errors: list[InventoryError] = []
    for name, value in variables.items():
        where = key_mark(variables, name) or DEFAULT_MARK
        spec = VARIABLES.get(name)
        if spec is None:
            close = None
            if not name.startswith((USER_PREFIX, ANSIBLE_PREFIX)):
                close = misspelling_of(name, VARIABLES)
            if close is None:
                good[name] = Var(value, where)
            else:
                errors.append(
                    InventoryError(
                        f"{level} {owner!r}: unknown variable {name!r} (did you mean "
                        f"{close!r}? for a variable of your own, use a name less like it)",
                        where,
                    )
                )
            continue
        try:
            good[name] = Var(spec.check(value), where, value)
        except _Invalid as exc:
            errors.append(
                InventoryError(
                    f"{level} {owner!r}: {name}: {exc}", exc.mark or mark_of(value) or where
                )
            )
    return good, errors
