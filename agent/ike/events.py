"""Events the IKE core hands out (aioquic style: small dataclasses, read via next_event).

Keys leave the core only inside these events.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .payloads import TrafficSelector

Address = tuple[str, int]


@dataclass(frozen=True)
class IkeSaEstablished:
    spi_i: bytes
    """Initiator's IKE SPI."""
    spi_r: bytes
    """Responder's IKE SPI."""
    proposal: str
    """The negotiated IKE proposal in strongSwan notation."""
    local_id: str
    remote_id: str
    peer: Address
    """Where the peer's datagrams come from."""
    nat_local: bool = False
    """A NAT rewrites our address (or we faked one to force encapsulation)."""
    nat_remote: bool = False
    """A NAT rewrites the peer's address."""


@dataclass(frozen=True)
class IkeSaFailed:
    reason: str
    """Why, in the field's words, e.g. ``AUTHENTICATION_FAILED: ...``."""
    notify: int | None = None
    """The RFC 7296 error Notify type behind the failure, when there is one."""


@dataclass(frozen=True)
class ChildSaEstablished:
    name: str
    """The child configuration's name."""
    spi_in: bytes
    """SPI we chose: the peer sends to it."""
    spi_out: bytes
    """SPI the peer chose: we send to it."""
    encr_id: int
    encr_key_bits: int
    integ_id: int | None
    esn: bool
    encr_key_in: bytes = field(repr=False)
    """Decryption key material for inbound ESP (AEAD keys include the 4-byte salt)."""
    integ_key_in: bytes = field(repr=False)
    encr_key_out: bytes = field(repr=False)
    integ_key_out: bytes = field(repr=False)
    local_ts: tuple[TrafficSelector, ...]
    remote_ts: tuple[TrafficSelector, ...]
    mode: str
    """``tunnel`` or ``transport``."""
    proposal: str
    encap: bool = False
    """ESP goes in UDP (RFC 3948) on port 4500 because a NAT was detected."""


@dataclass(frozen=True)
class ChildSaFailed:
    name: str
    reason: str
    notify: int | None = None


IkeEvent = IkeSaEstablished | IkeSaFailed | ChildSaEstablished | ChildSaFailed
