"""Traffic selector narrowing (RFC 7296 section 2.9).

The responder answers with the intersection of what the initiator proposed and
what its own policy allows; the initiator checks the answer is a subset of what
it proposed. Failures name both sides, as TS_UNACCEPTABLE.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from .constants import NotifyType
from .errors import ProtocolError
from .payloads import TrafficSelector


class TsUnacceptable(ProtocolError):
    def __init__(self, ours: Sequence[TrafficSelector], theirs: Sequence[TrafficSelector]) -> None:
        super().__init__(
            f"TS_UNACCEPTABLE: ours {format_selectors(ours)}, theirs {format_selectors(theirs)}",
            notify=NotifyType.TS_UNACCEPTABLE,
        )


def format_selector(ts: TrafficSelector) -> str:
    """strongSwan-like: 10.0.0.0/24, 10.0.0.1-10.0.0.9[17/500], 0.0.0.0/0[6]."""
    try:
        nets = list(ipaddress.summarize_address_range(ts.start_address, ts.end_address))
        text = str(nets[0]) if len(nets) == 1 else f"{ts.start_address}-{ts.end_address}"
    except (TypeError, ValueError):
        text = f"{ts.start_address}-{ts.end_address}"
    if ts.ip_protocol or (ts.start_port, ts.end_port) != (0, 65535):
        ports = (
            ""
            if (ts.start_port, ts.end_port) == (0, 65535)
            else (
                f"/{ts.start_port}"
                if ts.start_port == ts.end_port
                else f"/{ts.start_port}-{ts.end_port}"
            )
        )
        text += f"[{ts.ip_protocol}{ports}]"
    return text


def format_selectors(selectors: Sequence[TrafficSelector]) -> str:
    return "[" + ", ".join(format_selector(ts) for ts in selectors) + "]"


def intersect(a: TrafficSelector, b: TrafficSelector) -> TrafficSelector | None:
    if a.start_address.version != b.start_address.version:
        return None
    if a.ip_protocol and b.ip_protocol and a.ip_protocol != b.ip_protocol:
        return None
    start = max(int(a.start_address), int(b.start_address))
    end = min(int(a.end_address), int(b.end_address))
    low, high = max(a.start_port, b.start_port), min(a.end_port, b.end_port)
    if start > end or low > high:
        return None
    make = ipaddress.IPv4Address if a.start_address.version == 4 else ipaddress.IPv6Address
    return TrafficSelector(make(start), make(end), a.ip_protocol or b.ip_protocol, low, high)


def narrow(
    ours: Sequence[TrafficSelector], theirs: Sequence[TrafficSelector]
) -> list[TrafficSelector]:
    """All non-empty intersections, in the proposer's order; empty means unacceptable."""
    result: list[TrafficSelector] = []
    for proposed in theirs:
        for allowed in ours:
            common = intersect(proposed, allowed)
            if common is not None and common not in result:
                result.append(common)
    if not result:
        raise TsUnacceptable(ours, theirs)
    return result


def contains(outer: TrafficSelector, inner: TrafficSelector) -> bool:
    return intersect(outer, inner) == inner


def check_subset(proposed: Sequence[TrafficSelector], returned: Sequence[TrafficSelector]) -> None:
    """Initiator: each returned selector must lie within one we proposed."""
    if not returned or not all(any(contains(p, r) for p in proposed) for r in returned):
        raise TsUnacceptable(proposed, returned)
