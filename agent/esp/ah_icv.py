"""The IP packet as AH sees it (RFC 4302): where the AH header goes or is, and the copy
of the packet its ICV is computed over, with the mutable fields zeroed.

Sans-I/O helpers for ``ah.py``; they never raise on packet content: a packet they cannot
read gives None.

Where AH sits (RFC 4302 section 3.1): after the IPv4 header; in IPv6 after the
hop-by-hop, routing and fragment headers and after destination options that precede a
routing header (destination options after the last routing header follow AH). A
fragment header before AH means an unreassembled fragment, which AH never processes
(section 3.4.1), so it is refused, as is an IPv4 fragment.

What the ICV covers (section 3.3.3.1):

- IPv4 base header (3.3.3.1.1.1): version, IHL, total length, identification,
  protocol, source and destination are included; DSCP/ECN, flags, fragment offset,
  TTL and header checksum are zeroed.
- IPv4 options (3.3.3.1.1.2, Appendix A.1): each option is a unit, included when its
  type octet (copy, class and number together) is one Appendix A.1 lists as immutable
  (EOL, NOP, Security, Extended Security, Commercial Security, Router Alert, Sender
  Directed Multi-Destination Delivery), zeroed whole otherwise, so options the table
  does not know are zeroed too. Appendix A.1 puts Loose and Strict Source Route among
  the zeroed options; what is "mutable but predictable" about them is the destination
  address (3.3.3.1.1.1), which the sender therefore sets to the final destination (the
  last address of the route) for its ICV, as the packet will arrive. Octets after an
  End of Options List are included as they are.
- IPv6 base header (3.3.3.1.2.1): traffic class, flow label and hop limit zeroed.
- IPv6 hop-by-hop and destination options (3.3.3.1.2.2): an option whose type has the
  "may change en route" bit (0x20, RFC 8200 section 4.2) has its data zeroed; its type
  and length are included.
- IPv6 routing headers type 0 and 2 (Appendix A.2): mutable but predictable; the
  sender computes its ICV over the header as the final destination will receive it
  (all segments visited, the destination address the last one). Other routing types
  are refused: their mutability is not defined here.
- The AH header itself with the ICV zeroed (section 3.3.3.2). Explicit padding after
  the ICV is included as it is (section 3.3.3.2.1). With AES-GMAC the 8-byte IV before
  the tag is included (it is an input to the algorithm, RFC 4543 section 4); only the
  tag is zeroed.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

IPPROTO_AH = 51

_HOP_BY_HOP = 0
_ROUTING = 43
_FRAGMENT = 44
_DEST_OPTS = 60
_MAX_EXTENSIONS = 8

IMMUTABLE_IPV4_OPTIONS = frozenset({0x00, 0x01, 0x82, 0x85, 0x86, 0x94, 0x95})
"""RFC 4302 Appendix A.1: the option type octets included in the ICV."""
_EOL = 0x00
_NOP = 0x01
_LSRR = 0x83
_SSRR = 0x89
_CHANGES_EN_ROUTE = 0x20
_PAD1 = 0
_PREDICTABLE_ROUTING_TYPES = frozenset({0, 2})


class IpLayout(NamedTuple):
    """Where AH is (a received packet) or goes (a packet to protect)."""

    version: int
    at: int
    """Offset of the AH header, or where it goes: the end of the headers before it."""
    next_header_at: int
    """Offset of the octet naming the protocol at ``at`` (IPv4's protocol field, the
    IPv6 header's next header, or that of the last extension header before ``at``)."""
    next_header: int
    """That octet's value: 51 in a received AH packet."""
    end: int
    """End of the packet as its header says (octets after it, link padding, are not
    part of it)."""


def _ipv4_extent(packet: bytes) -> tuple[int, int] | None:
    """``(header_length, total_length)`` of a readable IPv4 packet that is no fragment."""
    if len(packet) < 20 or packet[0] >> 4 != 4:
        return None
    header_length = (packet[0] & 0x0F) * 4
    total = int.from_bytes(packet[2:4], "big")
    if header_length < 20 or total < header_length or total > len(packet):
        return None
    if packet[6] & 0x20 or (packet[6] & 0x1F) or packet[7]:
        return None  # more fragments, or an offset: not a whole packet
    return header_length, total


def _ipv6_end(packet: bytes) -> int | None:
    if len(packet) < 40 or packet[0] >> 4 != 6:
        return None
    end = 40 + int.from_bytes(packet[4:6], "big")
    # A payload length of 0 is a jumbogram (RFC 2675), not carried here.
    if end == 40 or end > len(packet):
        return None
    return end


def plain_ah_end(packet: bytes) -> int:
    """Where ``packet`` ends (as its header says) when it is a whole IPv4 packet without
    options, or an IPv6 packet without extension headers, with AH right after its IP
    header: the common case, read here without building an ``IpLayout``. 0 for any
    other packet (``received_layout`` reads those)."""
    size = len(packet)
    if size >= 20 and packet[0] == 0x45:
        if packet[9] != IPPROTO_AH or packet[6] & 0x3F or packet[7]:
            return 0  # another protocol, or a fragment
        end = packet[2] << 8 | packet[3]
        return end if 20 <= end <= size else 0
    if size >= 40 and packet[0] >> 4 == 6 and packet[6] == IPPROTO_AH:
        end = 40 + (packet[4] << 8 | packet[5])
        return end if 40 < end <= size else 0
    return 0


def received_layout(packet: bytes) -> IpLayout | None:
    """Find the header in front of AH in a received packet; None if the IP header or
    the IPv6 extension headers before AH cannot be read, or the packet is a fragment.
    ``next_header`` is 51 when AH follows."""
    if not packet:
        return None
    version = packet[0] >> 4
    if version == 4:
        extent = _ipv4_extent(packet)
        if extent is None:
            return None
        return IpLayout(4, extent[0], 9, packet[9], extent[1])
    end = _ipv6_end(packet)
    if end is None:
        return None
    at, next_header_at = 40, 6
    for _ in range(_MAX_EXTENSIONS):
        next_header = packet[next_header_at]
        if next_header not in (_HOP_BY_HOP, _ROUTING, _DEST_OPTS):
            if next_header == _FRAGMENT:
                return None
            return IpLayout(6, at, next_header_at, next_header, end)
        if at + 8 > end:
            return None
        next_header_at = at
        at += (packet[at + 1] + 1) * 8
        if at > end:
            return None
    return None


def sending_layout(packet: bytes) -> IpLayout | None:
    """Where AH goes in a packet to protect in transport mode (RFC 4302 section 3.1.1);
    None if the packet cannot be read or is a fragment."""
    if not packet:
        return None
    version = packet[0] >> 4
    if version == 4:
        extent = _ipv4_extent(packet)
        if extent is None:
            return None
        return IpLayout(4, extent[0], 9, packet[9], extent[1])
    end = _ipv6_end(packet)
    if end is None:
        return None
    # Walk the extension headers AH may follow; AH goes after the last hop-by-hop or
    # routing header (so destination options before a routing header come before it).
    at, next_header_at = 40, 6
    insert_at, insert_next_header_at = at, next_header_at
    for _ in range(_MAX_EXTENSIONS):
        next_header = packet[next_header_at]
        if next_header == _FRAGMENT:
            return None
        if next_header not in (_HOP_BY_HOP, _ROUTING, _DEST_OPTS):
            break
        if at + 8 > end:
            return None
        next_header_at = at
        at += (packet[at + 1] + 1) * 8
        if at > end:
            return None
        if next_header != _DEST_OPTS:
            insert_at, insert_next_header_at = at, next_header_at
    else:
        return None
    return IpLayout(6, insert_at, insert_next_header_at, packet[insert_next_header_at], end)


def canonical(
    packet: bytes | bytearray, layout: IpLayout, icv_at: int, icv_length: int, *, sending: bool
) -> bytearray | None:
    """The packet (up to ``layout.end``) as the ICV sees it: mutable fields zeroed, the
    ``icv_length`` octets at ``icv_at`` zeroed and, when ``sending``, predictable fields
    set as they will arrive. None if an option or extension header is malformed or a
    routing header is of a type whose mutability is not known."""
    data = bytearray(packet[: layout.end])
    if layout.version == 4:
        if not _zero_ipv4(data, layout.at, sending):
            return None
    elif not _zero_ipv6(data, layout.at, sending):
        return None
    data[icv_at : icv_at + icv_length] = bytes(icv_length)
    return data


# Masks over the base headers: 0 where a field is mutable (sections 3.3.3.1.1.1 and
# 3.3.3.1.2.1). IPv4: DSCP/ECN (octet 1), flags and fragment offset (6-7), TTL (8),
# header checksum (10-11). IPv6: traffic class and flow label (the low half of octet 0
# and octets 1-3), hop limit (7).
_IPV4_IMMUTABLE = int.from_bytes(bytes.fromhex("ff00ffffffff000000ff0000") + b"\xff" * 8, "big")
_IPV6_IMMUTABLE = int.from_bytes(bytes.fromhex("f0000000ffffff00") + b"\xff" * 32, "big")


def zeroed_ipv4_base(packet: bytes | bytearray) -> bytes:
    """The first 20 octets of ``packet`` (an IPv4 header) with the mutable fields of the
    base header zeroed."""
    return (int.from_bytes(packet[:20], "big") & _IPV4_IMMUTABLE).to_bytes(20, "big")


def zeroed_ipv6_base(packet: bytes | bytearray) -> bytes:
    """The first 40 octets of ``packet`` (the IPv6 header) with its mutable fields
    zeroed."""
    return (int.from_bytes(packet[:40], "big") & _IPV6_IMMUTABLE).to_bytes(40, "big")


def _zero_ipv4(data: bytearray, header_length: int, sending: bool) -> bool:
    data[:20] = zeroed_ipv4_base(data)
    at = 20
    while at < header_length:
        kind = data[at]
        if kind == _EOL:
            break
        if kind == _NOP:
            at += 1
            continue
        if at + 1 >= header_length:
            return False
        length = data[at + 1]
        if length < 2 or at + length > header_length:
            return False
        if sending and kind in (_LSRR, _SSRR):
            # RFC 791 section 3.1: pointer (from the option's start, 1-based) to the next
            # address; past the route data the route is done and the destination final.
            pointer = data[at + 2] if length > 2 else 0
            if length >= 7 and (length - 3) % 4 == 0 and 4 <= pointer <= length - 3:
                data[16:20] = data[at + length - 4 : at + length]
        if kind not in IMMUTABLE_IPV4_OPTIONS:
            data[at : at + length] = bytes(length)
        at += length
    return True


def _zero_ipv6(data: bytearray, ah_at: int, sending: bool) -> bool:
    data[:40] = zeroed_ipv6_base(data)
    at, next_header = 40, data[6]
    while at < ah_at:
        length = (data[at + 1] + 1) * 8
        if next_header in (_HOP_BY_HOP, _DEST_OPTS):
            if not _zero_options(data, at + 2, at + length):
                return False
        elif next_header == _ROUTING:
            if not _predict_routing(data, at, length, sending):
                return False
        else:
            return False
        next_header = data[at]
        at += length
    return at == ah_at


def _zero_options(data: bytearray, at: int, end: int) -> bool:
    """RFC 8200 section 4.2 TLVs: zero the data of options that may change en route."""
    while at < end:
        kind = data[at]
        if kind == _PAD1:
            at += 1
            continue
        if at + 2 > end:
            return False
        length = data[at + 1]
        if at + 2 + length > end:
            return False
        if kind & _CHANGES_EN_ROUTE:
            data[at + 2 : at + 2 + length] = bytes(length)
        at += 2 + length
    return True


def _predict_routing(data: bytearray, at: int, length: int, sending: bool) -> bool:
    """RFC 4302 Appendix A.2: routing types 0 and 2 as the final destination sees them."""
    if data[at + 2] not in _PREDICTABLE_ROUTING_TYPES:
        return False
    segments_left = data[at + 3]
    count = (length - 8) // 16
    if segments_left > count or (length - 8) % 16:
        return False
    if sending and segments_left:
        # RFC 8200 section 4.4 / RFC 6275 section 6.4: each visited hop swaps the
        # destination with the next address. At the end the destination is the last
        # address and the list holds the ones visited, the current destination first.
        first = at + 8
        addresses = [bytes(data[first + 16 * i : first + 16 * (i + 1)]) for i in range(count)]
        visited = count - segments_left
        final = addresses[-1]
        addresses = [*addresses[:visited], bytes(data[24:40]), *addresses[visited:-1]]
        data[first : first + 16 * count] = b"".join(addresses)
        data[24:40] = final
        data[at + 3] = 0
    return True


def ipv4_checksum(header: bytes | bytearray) -> int:
    """RFC 1071 one's complement sum of an IPv4 header whose checksum field is zero."""
    return checksum_of_sum(sum(struct.unpack(f"!{len(header) // 2}H", header)))


def checksum_of_sum(total: int) -> int:
    """RFC 1071: the checksum field for ``total``, the plain sum of a header's 16-bit
    words with the checksum field zero (so a sender can keep a partial sum)."""
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF
