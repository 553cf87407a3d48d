"""What the data plane and the engine exchange: the encapsulation choice, the acquire
event of a trap policy, counters and stats, and the checks on a child SA's install
arguments (so a bad install raises ValueError naming the fault and changes nothing).
"""

from __future__ import annotations

import enum
import ipaddress
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from ..esp.ah import AhParams, InboundAhSa, OutboundAhSa
from ..esp.sa import InboundSa, OutboundSa, SaParams
from ..esp.spd import PacketInfo
from .udp import NATT_PORT, Address


class Encap(enum.StrEnum):
    """How IPsec travels to a peer."""

    UDP = "udp"
    """ESP in UDP on port 4500 (RFC 3948), through NATs. Never AH."""
    RAW = "raw"
    """Directly over IP, where no NAT was found: ESP as protocol 50 (RFC 4303), AH as
    protocol 51 (RFC 4302; AH always travels so)."""


ChildSaParams = SaParams | AhParams
"""One SA of a child: ESP (``SaParams``) or AH (``AhParams``); both SAs of a pair are of
one protocol."""


@dataclass(frozen=True)
class Acquire:
    """A packet matched a protect (trap) entry whose policy has no outbound SA yet."""

    policy: str
    packet: PacketInfo
    """The triggering packet's selectors (RFC 4301 section 5.1: the engine may narrow
    the child SA's traffic selectors to it, RFC 7296 section 2.9)."""


@dataclass(slots=True)
class DataPlaneCounters:
    """Per-reason packet counts for the whole data plane (per-SA ones live in the SAs)."""

    tun_rx: int = 0
    """Packets read from the TUN device."""
    tun_tx: int = 0
    """Decrypted packets written to the TUN device."""
    esp_tx: int = 0
    """ESP and AH packets handed to a socket (the per-SA counters tell them apart)."""
    esp_rx: int = 0
    """ESP packets handed to the SAD."""
    ah_rx: int = 0
    """AH packets (protocol 51) handed to the SAD."""
    bypass_misrouted: int = 0
    """Read from the TUN but matched a bypass entry: routed into the tunnel by mistake."""
    discarded: int = 0
    """Matched a discard entry."""
    no_policy: int = 0
    """Matched no SPD entry (RFC 4301: discard)."""
    unparsable: int = 0
    """Read from the TUN but not a readable IPv4/IPv6 packet."""
    no_sa: int = 0
    """Matched a protect entry whose policy has no outbound SA (trap: acquire sent)."""
    acquires: int = 0
    encap_refused: int = 0
    """The outbound SA refused (hard lifetime reached, sequence numbers used up)."""
    transport_unsupported: int = 0
    """A transport-mode SA was asked to carry a packet it cannot (IPv6, options)."""
    esp_rx_dropped: int = 0
    """ESP packets the SAD dropped (reasons in ``DataPlaneStats.inbound_drops``)."""
    ah_rx_dropped: int = 0
    """AH packets the SAD dropped (reasons with ESP's in ``inbound_drops``)."""
    internal_errors: int = 0
    """A packet-path bug caught so the loop keeps running (logged once per kind)."""
    outbound_activated_by_peer: int = 0
    """Waiting outbound SAs switched to by the first packet on their inbound partner."""

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class SaStats:
    """One installed SA as ``stats()`` reports it."""

    policy: str
    spi: int
    direction: str
    peer: str
    mode: str
    counters: dict[str, int]
    retiring_at: float | None = None
    """Inbound only: when a rekeyed-away SA stops accepting."""
    protocol: str = "esp"
    """"esp" or "ah"."""

    @classmethod
    def of(
        cls,
        peer: str,
        policy: str,
        sa: InboundSa | OutboundSa | InboundAhSa | OutboundAhSa,
        retiring_at: float | None,
    ) -> SaStats:
        counters = {f.name: getattr(sa.counters, f.name) for f in fields(sa.counters)}
        direction = sa.direction.value
        protocol = "ah" if isinstance(sa, InboundAhSa | OutboundAhSa) else "esp"
        return cls(policy, sa.spi, direction, peer, sa.mode.value, counters, retiring_at, protocol)


@dataclass(frozen=True)
class DataPlaneStats:
    counters: dict[str, int]
    inbound_drops: dict[str, int]
    """SAD drops by reason (``esp.sa.Drop`` values; unknown SPIs among them)."""
    sas: list[SaStats] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_peer(peer: str | Address, encap: Encap, *, ah: bool = False) -> tuple[str | Address, str]:
    """What ``send`` takes for this peer, and the peer's host. AH (``ah``) travels over
    IP only (``Encap.RAW``): UDP encapsulation (RFC 3948) is ESP's, and AH's ICV covers
    the addresses a NAT rewrites (RFC 4302 section 3.3.3.1)."""
    if not isinstance(encap, Encap):
        raise ValueError(f"encap must be one of {[e.value for e in Encap]}, got {encap!r}")
    if ah and encap is not Encap.RAW:
        raise ValueError(
            "AH cannot cross NAT: it travels directly over IP (protocol 51), "
            f"never in UDP; install it with encap={Encap.RAW!s}"
        )
    if encap is Encap.RAW:
        if not isinstance(peer, str):
            raise ValueError(f"raw ESP needs a bare peer host, got {peer!r}")
        host: str = peer
        dest: str | Address = peer
    elif isinstance(peer, str):
        host, dest = peer, (peer, NATT_PORT)
    else:
        if len(peer) != 2 or not isinstance(peer[1], int) or not 1 <= peer[1] <= 65535:
            raise ValueError(f"peer must be (host, port 1..65535), got {peer!r}")
        host, dest = peer[0], (peer[0], peer[1])
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"peer address {host!r} is not an IP address") from None
    return dest, host


def check_pair(policy: str, inbound: ChildSaParams, outbound: ChildSaParams) -> None:
    if not policy:
        raise ValueError("a child SA needs the policy name it serves")
    if isinstance(inbound, AhParams) != isinstance(outbound, AhParams):
        raise ValueError(f"policy {policy!r}: one SA of the pair is AH, the other ESP")
    if inbound.mode is not outbound.mode:
        raise ValueError(
            f"policy {policy!r}: inbound SA is {inbound.mode} mode, outbound is {outbound.mode}"
        )


def transport_addresses(policy: str, local: str | None, peer: str) -> tuple[bytes, bytes]:
    if local is None:
        raise ValueError(f"policy {policy!r}: transport mode needs the local address")
    try:
        return ipaddress.IPv4Address(local).packed, ipaddress.IPv4Address(peer).packed
    except ValueError:
        raise ValueError(
            f"policy {policy!r}: transport mode here carries IPv4 only, "
            f"got local {local!r} and peer {peer!r}"
        ) from None


def ipv4_header(src: bytes, dst: bytes, protocol: int, payload: bytes) -> bytes:
    """A 20-byte IPv4 header for ``payload`` (RFC 791 section 3.1), checksum per RFC 1071."""
    total = 20 + len(payload)
    header = bytearray(20)
    header[0] = 0x45
    header[2:4] = total.to_bytes(2, "big")
    header[8] = 64
    header[9] = protocol
    header[12:16] = src
    header[16:20] = dst
    checksum = sum(int.from_bytes(header[i : i + 2], "big") for i in range(0, 20, 2))
    while checksum >> 16:
        checksum = (checksum & 0xFFFF) + (checksum >> 16)
    header[10:12] = (~checksum & 0xFFFF).to_bytes(2, "big")
    return bytes(header)
