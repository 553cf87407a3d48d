"""What the engine keeps per plan peer: the IKE SAs it owns, the child SA in force, the
timers it runs, and how it reports them for GetStatus."""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field

from ..ike.config import IkeConfig, Mode
from ..ike.ike_sa import IkeSa
from ..ike.states import IkeSaState
from ..io.dataplane_model import SaStats
from ..io.udp import IKE_PORT
from ..plan import Peer, StartAction
from ..sink import ChildSaReport, IkeSaReport, NatState, Problem, ProblemKind
from .clock import TimerHandle

BACKOFF_FIRST = 1.0
BACKOFF_MAX = 60.0


class SaKind(enum.Enum):
    """The SAs of a peer a rekey is about."""

    CHILD = "child"
    IKE = "IKE"


class PeerState(enum.Enum):
    IDLE = "idle"
    """Nothing to do until traffic (trap) or the peer (responder) starts it."""
    CONNECTING = "connecting"
    UP = "up"
    RETRY_WAIT = "retry-wait"
    """A failed or dead peer, waiting for its back-off before the next attempt."""
    DELETING = "deleting"


def nat_state(sa: IkeSa, peer: Peer) -> NatState:
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


@dataclass
class PeerSession:
    peer: Peer
    config: IkeConfig | None
    """None when the peer cannot be configured (``last_error`` says why)."""
    local: str | None
    """Our outer address towards this peer."""
    state: PeerState = PeerState.IDLE
    ike: IkeSa | None = None
    """The IKE SA that carries the child SA (or is being set up for it)."""
    replacing: list[IkeSa] = field(default_factory=list)
    """Older IKE SAs to delete once ``ike`` has its child (make-before-break)."""
    child: ChildRecord | None = None
    attempts: int = 0
    """Failed attempts since the last success (for the back-off)."""
    ike_established_at: float = 0.0
    ike_established_mono: float = 0.0
    ike_rekeyed_at: float = 0.0
    next_ike_rekey_at: float = 0.0
    last_liveness_at: float = 0.0
    last_error: str = ""
    """Why the IKE SA we initiated, or the one in force, last failed (or why the peer
    cannot be configured); set through :meth:`note_error`."""
    last_error_at: float = 0.0
    """Wall-clock time of the first failure in the run ``last_error`` belongs to."""
    unauthenticated_failures: int = 0
    """IKE SAs the other side started that failed before it authenticated."""
    last_unauthenticated_failure: str = ""
    rekeying_child: bytes | None = None
    """spi_in of the child whose rekey we started, until our exchange ends."""
    rekey_retries: dict[SaKind, int] = field(default_factory=dict)
    """Retries of a rekey the peer refused for now (section 2.25), per SA kind."""
    replacement_pending: bool = False
    """A changed peer's new IKE SA failed and the old one was kept: the retry makes a
    new one again (the peer may have been behind, e.g. its plan not yet changed)."""
    awaiting_activation: bytes | None = None
    """spi_in of a child the peer rekeyed or replaced by a new IKE SA: our new outbound
    SA waits for its delete."""
    peer_holds_nothing: bool = False
    """The peer's new IKE SA came with INITIAL_CONTACT (RFC 7296 section 2.4): it has no
    other SA with us (it restarted), so its child is switched to at once."""
    held_down: bool = False
    """The operator terminated this peer (``vpnfleet-agent terminate``): it is not
    started again (retry, initial contact) until ``initiate``. The peer may still start
    it, when its plan makes it the initiator, as with strongSwan."""
    keepalive_to: tuple[str, int] | None = None
    """Where NAT-keepalives go while we are behind a NAT (RFC 3948 section 4)."""
    ike_timer: TimerHandle | None = None
    child_timer: TimerHandle | None = None
    retry_timer: TimerHandle | None = None
    activation_timer: TimerHandle | None = None
    """Switches outbound anyway if the old SA's delete does not come."""
    rekey_retry_timers: dict[SaKind, TimerHandle] = field(default_factory=dict)
    """Try a refused rekey again."""

    @property
    def name(self) -> str:
        return self.peer.name

    @property
    def always_on(self) -> bool:
        return self.peer.start_action is StartAction.START

    @property
    def initiates(self) -> bool:
        """Whether this side starts the IKE SA: the plan's initiator, or anyone for trap."""
        return self.peer.initiator or self.peer.start_action is StartAction.TRAP

    @property
    def is_up(self) -> bool:
        sa = self.ike
        return sa is not None and sa.state is IkeSaState.ESTABLISHED and self.child is not None

    def backoff(self) -> float:
        """1, 2, 4 … 60 seconds after consecutive failures."""
        return min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** max(0, self.attempts - 1))

    def cancel_timers(self) -> None:
        for handle in (
            self.ike_timer,
            self.child_timer,
            self.retry_timer,
            self.activation_timer,
            *self.rekey_retry_timers.values(),
        ):
            if handle is not None:
                handle.cancel()
        self.ike_timer = self.child_timer = self.retry_timer = self.activation_timer = None
        self.rekey_retry_timers.clear()

    def note_error(self, reason: str, now: float) -> None:
        """Record why the peer failed (empty: it came up); ``now`` is wall-clock time."""
        if not reason:
            self.last_error, self.last_error_at = "", 0.0
            return
        if not self.last_error:
            self.last_error_at = now
        self.last_error = reason

    @property
    def problem(self) -> Problem | None:
        """An IKE problem while the peer is not up and its last attempt failed."""
        if self.is_up or not self.last_error:
            return None
        return Problem(ProblemKind.IKE, self.name, self.last_error, self.last_error_at)

    def report(self, stats: Mapping[tuple[int, str], SaStats]) -> IkeSaReport:
        sa = self.ike
        children: tuple[ChildSaReport, ...] = ()
        child = self.child
        if child is not None:
            spi_in = int.from_bytes(child.spi_in, "big")
            spi_out = int.from_bytes(child.spi_out, "big")
            inbound = stats.get((spi_in, "in"))
            outbound = stats.get((spi_out, "out"))
            cin = inbound.counters if inbound else {}
            cout = outbound.counters if outbound else {}
            children = (
                ChildSaReport(
                    name=self.name,
                    state="installed" if inbound and outbound else "missing",
                    spi_in=spi_in,
                    spi_out=spi_out,
                    proposal=child.proposal,
                    mode=child.mode,
                    local_ts=child.local_ts,
                    remote_ts=child.remote_ts,
                    established_at=child.established_at,
                    rekeyed_at=child.rekeyed_at,
                    next_rekey_at=child.next_rekey_at,
                    bytes_in=cin.get("bytes_in", 0),
                    bytes_out=cout.get("bytes_out", 0),
                    packets_in=cin.get("packets_in", 0),
                    packets_out=cout.get("packets_out", 0),
                    replay_drops=cin.get("replay_drops", 0),
                    integrity_failures=cin.get("integrity_failures", 0),
                    policy_drops=cin.get("policy_drops", 0),
                ),
            )
        if sa is None or sa.is_closed:
            return IkeSaReport(
                peer=self.name,
                state=self.state.value,
                local_address=self.local or "",
                remote_address=str(self.peer.remote_addresses[0])
                if self.peer.remote_addresses
                else "any",
                initiator=self.peer.initiator,
                last_error=self.last_error,
                children=children,
                unauthenticated_failures=self.unauthenticated_failures,
                last_unauthenticated_failure=self.last_unauthenticated_failure,
            )
        state = sa.state.value if sa.state is not IkeSaState.ESTABLISHED else "established"
        return IkeSaReport(
            peer=self.name,
            state=state,
            spi_i=int.from_bytes(sa.spi_i, "big"),
            spi_r=int.from_bytes(sa.spi_r, "big"),
            proposal=str(sa.proposal) if sa.proposal else "",
            local_address=self.local or "",
            remote_address=f"{sa.peer[0]}:{sa.peer[1]}" if sa.peer else "",
            initiator=sa.is_initiator,
            nat=nat_state(sa, self.peer),
            established_at=self.ike_established_at,
            rekeyed_at=self.ike_rekeyed_at,
            next_rekey_at=self.next_ike_rekey_at,
            last_liveness_at=self.last_liveness_at,
            last_error=self.last_error,
            children=children,
            unauthenticated_failures=self.unauthenticated_failures,
            last_unauthenticated_failure=self.last_unauthenticated_failure,
        )
