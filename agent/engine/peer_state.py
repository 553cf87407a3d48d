"""The vocabulary of a plan peer's driver: its states and their one transition table
(h11's ``_state.py`` shape), the child SA record it keeps, and what NAT detection found."""

from __future__ import annotations

import enum
import ipaddress
from dataclasses import dataclass

from ..ike.config import Mode
from ..io.udp import IKE_PORT
from ..plan import Peer
from ..sink import NatState
from .core import IkeCore

BACKOFF_FIRST = 1.0
BACKOFF_MAX = 60.0


class SaKind(enum.Enum):
    """The SAs of a peer a rekey is about."""

    CHILD = "child"
    IKE = "IKE"


class PeerState(enum.Enum):
    """Where a plan peer stands (the ``state`` of its status while no IKE SA is up)."""

    IDLE = "idle"
    """Nothing to do until traffic (trap) or the peer (responder) starts it."""
    CONNECTING = "connecting"
    UP = "up"
    RETRY_WAIT = "retry-wait"
    """A failed or dead peer, waiting for its back-off before the next attempt."""
    DELETING = "deleting"
    """Removed from the plan: its SAs are being deleted; nothing moves it any more."""


class PeerEvent(enum.Enum):
    """What happens to a plan peer that moves its :class:`PeerState`."""

    INITIATED = "initiated"
    """We sent IKE_SA_INIT with no IKE SA of the peer's in force."""
    CHILD_UP = "child-up"
    """A child SA was installed: traffic flows."""
    PREVIOUS_KEPT = "previous-kept"
    """A replacement IKE SA failed; the previous one and its child stay in force."""
    RETRY_SCHEDULED = "retry-scheduled"
    """A failure whose next attempt waits for the back-off."""
    LEFT_IDLE = "left-idle"
    """Gone with nothing to retry: held down, responder-only, or deleted by the peer."""
    REMOVED = "removed"
    """The plan no longer has the peer."""


_LIVE = (PeerState.IDLE, PeerState.CONNECTING, PeerState.UP, PeerState.RETRY_WAIT)

TRANSITIONS: dict[PeerState, dict[PeerEvent, PeerState]] = {
    # Every event may come in every live state: the peer may initiate, fail, come up or
    # leave the plan whatever we were doing. A removed peer's driver gets no events.
    state: {
        PeerEvent.INITIATED: PeerState.CONNECTING,
        PeerEvent.CHILD_UP: PeerState.UP,
        PeerEvent.PREVIOUS_KEPT: PeerState.UP,
        PeerEvent.RETRY_SCHEDULED: PeerState.RETRY_WAIT,
        PeerEvent.LEFT_IDLE: PeerState.IDLE,
        PeerEvent.REMOVED: PeerState.DELETING,
    }
    for state in _LIVE
}
TRANSITIONS[PeerState.DELETING] = {}
"""(state, event) -> the next state: every move of a peer's state, in one place."""


class PeerStateError(Exception):
    """A peer's driver was moved by an event its state has no transition for (our bug)."""


def next_state(peer: str, state: PeerState, event: PeerEvent) -> PeerState:
    """The state ``event`` moves ``peer`` to from ``state``; raises :class:`PeerStateError`
    naming the three when the table has no such transition."""
    try:
        return TRANSITIONS[state][event]
    except KeyError:
        raise PeerStateError(
            f"peer {peer}: no transition from {state.value} on {event.value}"
        ) from None


def nat_state(sa: IkeCore, peer: Peer) -> NatState:
    """What NAT detection (RFC 7296 section 2.23) found on ``sa``, apart from what was
    forced. Our own address rewritten is a NAT for certain, and so is the peer's when
    the plan says it is behind one or its datagrams come from another address or port
    than the plan's. The peer's NAT-D hash saying its address was rewritten while its
    datagrams come from the very address and port the plan knows it by is encapsulation
    the peer forces (strongSwan's ``encap = yes`` sends a random hash): forced."""
    nat = sa.nat
    if nat is None:
        return NatState.NONE
    if nat.local_behind_nat:
        return NatState.DETECTED
    if nat.remote_behind_nat:
        if peer.nat.remote_behind_nat or nat.peer_address is None:
            return NatState.DETECTED
        host, port = nat.peer_address
        known = ipaddress.ip_address(host) in peer.remote_addresses
        in_sight = not known or port != (peer.remote_port or IKE_PORT)
        return NatState.DETECTED if in_sight else NatState.FORCED
    return NatState.FORCED if nat.forced else NatState.NONE


@dataclass
class ChildRecord:
    """The child SA installed in the data plane for this peer (one per peer)."""

    spi_in: bytes
    spi_out: bytes
    proposal: str
    mode: Mode
    local_ts: tuple[str, ...]
    remote_ts: tuple[str, ...]
    established_at: float
    """Wall-clock time (for status)."""
    rekeyed_at: float = 0.0
    next_rekey_at: float = 0.0
    """Wall-clock time the scheduled rekey is due."""
    previous: tuple[bytes, bytes] | None = None
    """(spi_in, spi_out) of the SA this one replaced by a rekey: when both ends rekeyed
    it at once (RFC 7296 section 2.8.1) the other new SA refers to it too."""
    path: tuple[tuple[str, int], str | None] | None = None
    """Where the data plane sends it and from which local address (transport mode): a
    re-established child on the same path is switched to like a rekey."""
