"""NAT detection (RFC 7296 section 2.23).

Each IKE_SA_INIT message carries NAT_DETECTION_SOURCE_IP and _DESTINATION_IP:
SHA-1(SPIi | SPIr | IP | port) of the addresses the sender thinks it is using,
with the SPIs as they appear in that message's header. A mismatch on receipt
means a NAT rewrote the address: then IKE moves to port 4500 and ESP is
UDP-encapsulated (RFC 3948).
"""

from __future__ import annotations

import hmac
import ipaddress
from dataclasses import dataclass

from .constants import NotifyType
from .events import Address
from .payloads import NotifyPayload, Payload
from .transforms import random_bytes, sha1

NAT_T_PORT = 4500


def nat_hash(spi_i: bytes, spi_r: bytes, address: Address) -> bytes:
    ip, port = address
    return sha1(spi_i + spi_r + ipaddress.ip_address(ip).packed + port.to_bytes(2, "big"))


def nat_notifies(
    spi_i: bytes, spi_r: bytes, source: Address, destination: Address, *, fake_source: bool
) -> list[Payload]:
    """Our two notifies; ``fake_source`` claims a NAT to force UDP encapsulation
    (what strongSwan's ``encap = yes`` does)."""
    src = random_bytes(20) if fake_source else nat_hash(spi_i, spi_r, source)
    return [
        NotifyPayload(NotifyType.NAT_DETECTION_SOURCE_IP, src),
        NotifyPayload(NotifyType.NAT_DETECTION_DESTINATION_IP, nat_hash(spi_i, spi_r, destination)),
    ]


@dataclass(frozen=True)
class NatResult:
    local_behind_nat: bool
    """Our address was rewritten on the way (their DESTINATION hash is not ours)."""
    remote_behind_nat: bool
    """Their address was rewritten (no SOURCE hash matches where the datagram came from).
    A peer that forces encapsulation sends a random SOURCE hash and looks the same."""
    peer_address: Address | None = None
    """Where the peer's IKE_SA_INIT datagram came from (its SOURCE hash was checked
    against it). Its address being one the peer is known by means no NAT is in sight."""
    forced: bool = False
    """We faked our SOURCE hash to force UDP encapsulation (``force_encap``): the peer
    then believes we are behind a NAT, and both sides use port 4500."""

    @property
    def detected(self) -> bool:
        """NAT detection found an address rewritten (what we faked does not count)."""
        return self.local_behind_nat or self.remote_behind_nat

    @property
    def any(self) -> bool:
        """IKE and ESP move to UDP 4500: a NAT was detected, or we forced it."""
        return self.detected or self.forced


def detect(
    payloads: list[Payload], spi_i: bytes, spi_r: bytes, local: Address, remote: Address
) -> NatResult | None:
    """Check the peer's notifies against the addresses we saw; None if it sent none."""
    sources = [
        p.data
        for p in payloads
        if isinstance(p, NotifyPayload) and p.notify_type == NotifyType.NAT_DETECTION_SOURCE_IP
    ]
    destinations = [
        p.data
        for p in payloads
        if isinstance(p, NotifyPayload) and p.notify_type == NotifyType.NAT_DETECTION_DESTINATION_IP
    ]
    if not sources or not destinations:
        return None
    ours = nat_hash(spi_i, spi_r, local)
    theirs = nat_hash(spi_i, spi_r, remote)
    return NatResult(
        local_behind_nat=not any(hmac.compare_digest(ours, d) for d in destinations),
        remote_behind_nat=not any(hmac.compare_digest(theirs, s) for s in sources),
        peer_address=remote,
    )
