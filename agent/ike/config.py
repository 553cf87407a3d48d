"""What an IKE SA needs to know about its peer: identities, credentials, proposals,
the first child SA's policy and the retransmission schedule."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from .constants import IdType
from .errors import LocalError
from .payloads import IdPayload, TrafficSelector
from .proposals import EspProposal, IkeProposal


@dataclass(frozen=True)
class Identity:
    """An IKE identity (RFC 7296 section 3.5)."""

    id_type: int
    data: bytes

    @classmethod
    def parse(cls, text: str) -> Identity:
        """IP address, ``user@example.net`` (RFC822) or a host name (FQDN)."""
        try:
            address = ipaddress.ip_address(text)
        except ValueError:
            if not text:
                raise LocalError("empty identity") from None
            kind = IdType.ID_RFC822_ADDR if "@" in text else IdType.ID_FQDN
            return cls(kind, text.encode())
        kind = IdType.ID_IPV4_ADDR if address.version == 4 else IdType.ID_IPV6_ADDR
        return cls(kind, address.packed)

    @classmethod
    def from_payload(cls, payload: IdPayload) -> Identity:
        return cls(payload.id_type, payload.data)

    def __str__(self) -> str:
        if self.id_type in (IdType.ID_IPV4_ADDR, IdType.ID_IPV6_ADDR):
            return str(ipaddress.ip_address(self.data))
        if self.id_type in (IdType.ID_FQDN, IdType.ID_RFC822_ADDR):
            return self.data.decode(errors="replace")
        return f"id-type-{self.id_type}:{self.data.hex()}"


@dataclass(frozen=True)
class ChildConfig:
    name: str
    esp_proposals: tuple[EspProposal, ...]
    local_ts: tuple[TrafficSelector, ...]
    remote_ts: tuple[TrafficSelector, ...]
    mode: str = "tunnel"

    def __post_init__(self) -> None:
        if not self.esp_proposals:
            raise LocalError(f"child {self.name!r} has no ESP proposals")
        if not self.local_ts or not self.remote_ts:
            raise LocalError(f"child {self.name!r} needs local and remote traffic selectors")
        if self.mode not in ("tunnel", "transport"):
            raise LocalError(f"child {self.name!r}: mode {self.mode!r} is not tunnel or transport")


@dataclass(frozen=True)
class IkeConfig:
    local_id: Identity
    remote_id: Identity
    psk: bytes = field(repr=False)
    ike_proposals: tuple[IkeProposal, ...]
    child: ChildConfig
    retransmit_timeout: float = 2.0
    """Seconds before the first retransmission; doubled each time (section 2.1)."""
    retransmit_tries: int = 4
    """Retransmissions before the exchange, and the SA, are given up."""
    force_encap: bool = False
    """Claim a NAT in NAT detection so ESP is always UDP-encapsulated (section 2.23)."""

    def __post_init__(self) -> None:
        if not self.ike_proposals:
            raise LocalError("no IKE proposals configured")
        if not self.psk:
            raise LocalError("empty pre-shared key")


def selector(
    network: str, protocol: int = 0, ports: tuple[int, int] = (0, 65535)
) -> TrafficSelector:
    """A traffic selector for a prefix, e.g. ``selector("10.1.0.0/16")``."""
    net = ipaddress.ip_network(network, strict=False)
    return TrafficSelector(net[0], net[-1], protocol, ports[0], ports[1])
