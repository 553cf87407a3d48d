"""Quick mode ID payloads as traffic selectors (RFC 2409 section 5.5, RFC 2407
section 4.6.2): IDci and IDcr name one address, subnet or range, one protocol and one
port (0: any) each way.
"""

from __future__ import annotations

import ipaddress

from ..errors import LocalError, ProtocolError
from ..payloads import TrafficSelector
from .constants import IdType, NotifyType
from .payloads import IdPayload

_ADDR = {4: IdType.IPV4_ADDR, 6: IdType.IPV6_ADDR}
_SUBNET = {4: IdType.IPV4_ADDR_SUBNET, 6: IdType.IPV6_ADDR_SUBNET}
_RANGE = {4: IdType.IPV4_ADDR_RANGE, 6: IdType.IPV6_ADDR_RANGE}


def id_for_selector(ts: TrafficSelector) -> IdPayload:
    """The ID payload for a selector: an address, a subnet when the range is one, else
    a range. IKEv1 names one port or all of them."""
    if ts.start_port == ts.end_port:
        port = ts.start_port
    elif (ts.start_port, ts.end_port) == (0, 65535):
        port = 0
    else:
        raise LocalError(
            f"IKEv1 ID payloads carry one port or all; {ts.start_port}-{ts.end_port} cannot go"
        )
    version = ts.start_address.version
    start, end = ts.start_address, ts.end_address
    if start == end:
        return IdPayload(_ADDR[version], ts.ip_protocol, port, start.packed)
    nets = _networks(start, end)
    if len(nets) == 1:
        net = nets[0]
        data = net.network_address.packed + net.netmask.packed
        return IdPayload(_SUBNET[version], ts.ip_protocol, port, data)
    return IdPayload(_RANGE[version], ts.ip_protocol, port, start.packed + end.packed)


def _networks(
    start: ipaddress.IPv4Address | ipaddress.IPv6Address,
    end: ipaddress.IPv4Address | ipaddress.IPv6Address,
) -> list[ipaddress.IPv4Network] | list[ipaddress.IPv6Network]:
    if isinstance(start, ipaddress.IPv4Address) and isinstance(end, ipaddress.IPv4Address):
        return list(ipaddress.summarize_address_range(start, end))
    if isinstance(start, ipaddress.IPv6Address) and isinstance(end, ipaddress.IPv6Address):
        return list(ipaddress.summarize_address_range(start, end))
    raise LocalError(f"selector {start}-{end} mixes address families")


def _address(data: bytes, what: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    try:
        return ipaddress.ip_address(data)
    except ValueError:
        raise ProtocolError(
            f"{what}: {len(data)} bytes are not an address",
            notify=NotifyType.INVALID_ID_INFORMATION,
        ) from None


def selector_for_id(payload: IdPayload, what: str) -> TrafficSelector:
    """The selector an IDci/IDcr names; other ID types are refused with
    INVALID_ID_INFORMATION (RFC 2407 section 4.6.2.1)."""
    kind, data = payload.id_type, payload.data
    sizes = {
        IdType.IPV4_ADDR: 4,
        IdType.IPV6_ADDR: 16,
        IdType.IPV4_ADDR_SUBNET: 8,
        IdType.IPV6_ADDR_SUBNET: 32,
        IdType.IPV4_ADDR_RANGE: 8,
        IdType.IPV6_ADDR_RANGE: 32,
    }
    expected = sizes.get(kind)  # type: ignore[call-overload]
    if expected is None:
        raise ProtocolError(
            f"{what}: ID type {kind} does not name addresses",
            notify=NotifyType.INVALID_ID_INFORMATION,
        )
    if len(data) != expected:
        raise ProtocolError(
            f"{what}: ID type {kind} needs {expected} bytes, got {len(data)}",
            notify=NotifyType.INVALID_ID_INFORMATION,
        )
    half = expected // 2
    if kind in (IdType.IPV4_ADDR, IdType.IPV6_ADDR):
        start = end = _address(data, what)
    elif kind in (IdType.IPV4_ADDR_SUBNET, IdType.IPV6_ADDR_SUBNET):
        bits = 8 * half
        mask = int.from_bytes(data[half:], "big")
        prefix = bits - (~mask & ((1 << bits) - 1)).bit_length()
        if mask != ((1 << bits) - 1) ^ ((1 << (bits - prefix)) - 1):
            raise ProtocolError(
                f"{what}: {data[half:].hex()} is not a netmask",
                notify=NotifyType.INVALID_ID_INFORMATION,
            )
        net = ipaddress.ip_network((_address(data[:half], what), prefix), strict=False)
        start, end = net[0], net[-1]
    else:
        start, end = _address(data[:half], what), _address(data[half:], what)
        if int(start) > int(end):
            raise ProtocolError(
                f"{what}: range {start}-{end} is empty", notify=NotifyType.INVALID_ID_INFORMATION
            )
    low, high = (payload.port, payload.port) if payload.port else (0, 65535)
    return TrafficSelector(start, end, payload.protocol, low, high)
