"""The IKE core as the engine drives it: one protocol that the IKEv2 ``IkeSa``
(agent/ike/ike_sa.py) and the IKEv1 ``IkeV1Sa`` (agent/ike/v1/sa.py) both satisfy.

Both are sans-I/O: datagrams and timer expiries in (``now`` on the engine's monotonic
clock), datagrams, one timer deadline and the events of agent/ike/events.py out. The
:class:`~.sa_driver.SaDriver` and :class:`~.peer_driver.PeerDriver` see an SA only
through :class:`IkeCore`; what only one version has (the IKEv2 IKE SA rekey of RFC 7296
section 1.3.2, the IKEv1 Quick mode started on an established ISAKMP SA) is reached
where the version is known, with the type narrowed.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum
from typing import Protocol

from ..ike.config import Identity
from ..ike.events import Address, IkeEvent
from ..ike.nat import NatResult
from ..ike.states import IkeSaState
from ..ike.v1.sa import IkeV1Sa, V1State
from ..plan import IkeVersion


class IkeCore(Protocol):
    """One IKE SA of either version, as the engine's drivers use it."""

    @property
    def state(self) -> Enum:
        """``IkeSaState`` or ``V1State``; :func:`established` reads either."""

    @property
    def spi_i(self) -> bytes:
        """The initiator's SPI (IKEv2) or cookie (IKEv1, RFC 2408 section 3.1)."""

    @property
    def spi_r(self) -> bytes: ...

    @property
    def local_spi(self) -> bytes:
        """The SPI or cookie we chose: what the engine routes datagrams by."""

    @property
    def is_initiator(self) -> bool: ...

    @property
    def is_closed(self) -> bool: ...

    @property
    def encap(self) -> bool:
        """IKE and ESP in UDP 4500 (NAT found or forced)."""

    @property
    def peer(self) -> Address | None: ...

    @property
    def nat(self) -> NatResult | None: ...

    @property
    def last_heard(self) -> float | None: ...

    @property
    def remote_identity(self) -> Identity | None:
        """The identity the peer authenticated with (None before)."""

    @property
    def proposal(self) -> object | None:
        """The negotiated IKE proposal; its ``str`` is strongSwan's notation."""

    @property
    def dropped(self) -> int: ...

    @property
    def children(self) -> Mapping[bytes, object]:
        """The SA's child SAs by the inbound SPI we chose."""

    def initiate(self, peer: Address, now: float) -> None: ...

    def receive_datagram(
        self, data: bytes, addr: Address, now: float, wall: float | None = None
    ) -> None:
        """A datagram for this SA; ``wall``, the wall-clock time beside the monotonic
        ``now``, is what certificates are checked at (RFC 5280 section 6.1.3)."""

    def handle_timer(self, now: float) -> None: ...

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]: ...

    def get_timer(self) -> float | None: ...

    def next_event(self) -> IkeEvent | None: ...

    def delete(self, now: float) -> None: ...

    def delete_child(self, spi_in: bytes, now: float) -> None: ...

    def check_liveness(self, now: float) -> None: ...

    def fail(self, reason: str, notify: int | None = None) -> None: ...


def version_of(sa: IkeCore) -> IkeVersion:
    return IkeVersion.V1 if isinstance(sa, IkeV1Sa) else IkeVersion.V2


def established(sa: IkeCore) -> bool:
    """The SA is up and carries (or may carry) child SAs."""
    return sa.state is IkeSaState.ESTABLISHED or sa.state is V1State.ESTABLISHED


def deletable(sa: IkeCore) -> bool:
    """The SA can be deleted with a Delete message (else it fails locally, if open)."""
    return sa.state in (IkeSaState.ESTABLISHED, IkeSaState.REKEYED, V1State.ESTABLISHED)


def deleting(sa: IkeCore) -> bool:
    """Our Delete is in flight (IKEv2 only: an IKEv1 Delete is one message)."""
    return sa.state is IkeSaState.DELETING
