"""One plan peer: its IKE SAs, its responder gate, its child SA, its timers.

A :class:`PeerDriver` is made for each peer of the plan in force. It owns the
:class:`~.sa_driver.SaDriver` of each of the peer's IKE SAs (two during a rekey or a
re-establishment), the responder gate its IKE_SA_INIT requests go through, the child
SA installed in the data plane (through :class:`~.plane.ChildSaPlane`), the rekey,
retry and activation timers, the back-off, and the waits of Rekey and CheckLiveness
calls. Its :class:`~.peer_state.PeerState` moves only through the table in
:mod:`.peer_state`.

IKE reports, the data plane follows: a child SA is installed as IKE reports it, rekeyed
make-before-break (RFC 7296 section 2.8: the initiator of the rekey switches its
outbound SA at once, the responder when the old SA's delete arrives), and removed when
IKE deletes it. A new IKE SA replacing the one that carries the child hands the child
over the same way. IKE and child SAs are rekeyed before they expire, at a jittered
point, and on request; a rekey the peer refuses for now (section 2.25) is tried again
after a bounded back-off. A Rekey call waits until the SA in force when it was made has
been replaced by a newer one, whoever made it; it fails when the SA goes without a
successor, when the peer refuses for good, or after :data:`~.rekey.REKEY_WAIT` seconds.

A peer the plan reaches with IKEv1 (RFC 2409) runs the IKEv1 core the same way, with
the differences IKEv1 makes: it has no rekey exchange, so the child is replaced by a new
Quick mode on the same ISAKMP SA (the responder switches at once, the initiator once
the responder surely holds the new SA; then the old one is deleted; both ends replacing
it at once keep the same one, :meth:`PeerDriver._v1_child_replaced`), and the ISAKMP SA
is reauthenticated by a new Main mode that keeps phase 2: it starts no Quick mode, both
ends move the child SAs over to it (:meth:`PeerDriver._v1_take_children`; strongSwan
does the same), and the old ISAKMP SA goes with a phase 1 Delete only, which deletes
no IPsec SA (RFC 2408 section 3.15). A new Main mode for a changed peer still brings
its own Quick mode (the child may change), as for a re-established IKEv2 peer. The
reauthentication is due at the plan's jittered rekey time, or earlier at the core's
``rekey_due`` (a peer's RESPONDER-LIFETIME may shorten the ISAKMP SA).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import random
from collections.abc import Mapping, Sequence
from typing import Protocol

from ..esp.sa import Lifetime
from ..esp.sa import Mode as EspMode
from ..ike.admission import HalfOpenTable, LogLimiter
from ..ike.child_sa import ChildSaState
from ..ike.config import IkeConfig
from ..ike.constants import NotifyType
from ..ike.constants import ProtocolId as IkeProtocolId
from ..ike.errors import CommandRefused
from ..ike.events import (
    ChildSaDeleted,
    ChildSaEstablished,
    ChildSaFailed,
    ChildSaRekeyed,
    IkeSaEstablished,
    IkeSaRekeyed,
    IkeSaRekeyFailed,
    PeerErrorNotify,
)
from ..ike.gate import IkeResponderGate
from ..ike.ike_sa import IkeSa
from ..ike.states import Role
from ..ike.v1.config import IkeV1Config
from ..ike.v1.constants import DOI_IPSEC, ProtocolId
from ..ike.v1.payloads import DeletePayload
from ..ike.v1.proposals import Lifetimes as V1Lifetimes
from ..ike.v1.sa import IkeV1Sa
from ..io.dataplane_model import SaStats
from ..io.udp import IKE_PORT, Address
from ..plan import Peer, StartAction
from ..sink import ChildSaReport, IkeSaReport, NatState, Problem, ProblemKind, RekeyTarget
from . import core, translate
from .clock import Scheduler, TimerHandle
from .core import IkeCore, established
from .keylog import KeyLog
from .peer_state import (
    BACKOFF_FIRST,
    BACKOFF_MAX,
    ChildRecord,
    PeerEvent,
    PeerState,
    SaKind,
    nat_state,
    next_state,
)
from .plane import ChildSaPlane
from .rekey import (
    KINDS,
    LIVENESS_ANSWERED,
    REKEY_RETRIES,
    REKEY_RETRY_FIRST,
    REKEY_WAIT,
    PendingRekey,
    Settled,
)
from .sa_driver import SaDriver, SaOwner
from .v1_gate import V1ResponderGate

log = logging.getLogger(__name__)

INITIAL_CONTACT_DELAY = 2.0
"""Seconds a just-started responder waits for its peer before initiating itself."""

RETRYABLE_REFUSALS = frozenset({NotifyType.TEMPORARY_FAILURE, NotifyType.CHILD_SA_NOT_FOUND})
"""Refusals of a child rekey that a collision produces (RFC 7296 section 2.25.1): the
peer is rekeying or deleting that SA (or rekeying the IKE SA), or has just replaced it."""

ACTIVATE_WAIT = 2.0
"""Seconds the responder of a new IKE SA replacing ours keeps sending on the old child
when the peer does not delete the old SA (within the old inbound SA's grace period)."""

REAUTH_DELETE_WAIT = 2.0
"""IKEv1: seconds after a reauthentication took the child SAs over before the old ISAKMP
SA is deleted (its initiator; the responder waits twice as long): the peer moves its own
child SAs when phase 1 completes there, and a phase 1 Delete must not overtake that."""

QUICK_ACTIVATE_TIMEOUTS = 3
"""IKEv1: retransmission timeouts the initiator of a Quick mode replacing the child waits
before sending on the new SA unasked (its responder holds it from message 3)."""

NAT_NOTES = {
    NatState.UNSPECIFIED: "",
    NatState.NONE: "",
    NatState.DETECTED: " (NAT detected: UDP 4500)",
    NatState.FORCED: " (UDP 4500 forced, no NAT in sight)",
}
"""What the ike_up event and log line say of NAT (RFC 7296 section 2.23)."""


def _reconfigure(sa: IkeCore, config: IkeConfig | IkeV1Config | None) -> bool:
    """Give ``sa`` the peer's new configuration (read from its next exchange on); False
    when it is of the other IKE version (the plan changed the peer's version)."""
    if isinstance(sa, IkeSa) and isinstance(config, IkeConfig):
        sa.config = config
        return True
    if isinstance(sa, IkeV1Sa) and isinstance(config, IkeV1Config):
        sa.config = config
        return True
    return False


def _rank(spi_in: bytes, spi_out: bytes) -> tuple[bytes, bytes]:
    """The order of two IKEv1 child SAs made at once for one old one: both ends see the
    same SPI pair (in and out swapped), so both keep the same one."""
    return max(spi_in, spi_out), min(spi_in, spi_out)


class PeerHost(Protocol):
    """What a peer's driver needs of the engine: clocks, randomness, the event hub, the
    SA registry, the data plane's child SA calls and NAT keepalives."""

    stopped: bool
    keylog: KeyLog | None
    untrusted_log: LogLimiter
    half_open: HalfOpenTable
    rng: random.Random

    @property
    def scheduler(self) -> Scheduler: ...

    @property
    def plane(self) -> ChildSaPlane | None:
        """The data plane's child SA calls (None before start)."""

    @property
    def raw_esp(self) -> bool:
        """Whether raw ESP (IP protocol 50) can be sent."""

    def now(self) -> float: ...

    def wall(self) -> float: ...

    def publish(self, kind: str, peer: str, detail: str) -> None: ...

    def adopt(self, sa: IkeCore, owner: SaOwner | None) -> SaDriver: ...

    def driver_of(self, sa: IkeCore) -> SaDriver:
        """The driver of ``sa`` (a stand-in when the SA was already forgotten)."""

    def nat_keepalive(self, addr: Address, on: bool) -> None: ...

    def ike_port(self) -> int: ...


class PeerDriver:
    """Drives one plan peer (see the module's doc); implements
    :class:`~.sa_driver.SaOwner` for its IKE SAs."""

    def __init__(
        self,
        peer: Peer,
        config: IkeConfig | IkeV1Config | None,
        local: str | None,
        host: PeerHost,
    ) -> None:
        self.peer = peer
        self.config = config
        """None when the peer cannot be configured (``last_error`` says why)."""
        self.local = local
        """Our outer address towards this peer."""
        self.host = host
        self.state = PeerState.IDLE
        self.current = True
        """False once the plan removed or replaced this driver: its timers do nothing."""
        self.gate: IkeResponderGate | V1ResponderGate | None = None
        """Where IKE_SA_INIT requests (IKEv1: first Main mode messages) for this peer are
        answered (None if unconfigured)."""
        self.drivers: dict[IkeCore, SaDriver] = {}
        """Every IKE SA of this peer that is not closed yet, oldest first."""
        self.ike: IkeCore | None = None
        """The IKE SA that carries the child SA (or is being set up for it)."""
        self.replacing: list[IkeCore] = []
        """Older IKE SAs to delete once ``ike`` has its child (make-before-break)."""
        self.child: ChildRecord | None = None
        self.attempts = 0
        """Failed attempts since the last success (for the back-off)."""
        self.ike_established_at = 0.0
        self.ike_established_mono = 0.0
        self.ike_rekeyed_at = 0.0
        self.next_ike_rekey_at = 0.0
        self.last_liveness_at = 0.0
        self.last_error = ""
        """Why the IKE SA we initiated, or the one in force, last failed (or why the peer
        cannot be configured); set through :meth:`note_error`."""
        self.last_error_at = 0.0
        """Wall-clock time of the first failure in the run ``last_error`` belongs to."""
        self.unauthenticated_failures = 0
        """IKE SAs the other side started that failed before it authenticated."""
        self.last_unauthenticated_failure = ""
        self.rekeying_child: bytes | None = None
        """spi_in of the child whose rekey we started, until our exchange ends."""
        self.rekey_retries: dict[SaKind, int] = {}
        """Retries of a rekey the peer refused for now (section 2.25), per SA kind."""
        self.replacement_pending = False
        """A changed peer's new IKE SA failed and the old one was kept: the retry makes a
        new one again (the peer may have been behind, e.g. its plan not yet changed)."""
        self.awaiting_activation: bytes | None = None
        """spi_in of a child the peer rekeyed or replaced by a new IKE SA: our new outbound
        SA waits for its delete."""
        self.peer_holds_nothing = False
        """The peer's new IKE SA came with INITIAL_CONTACT (RFC 7296 section 2.4): it has no
        other SA with us (it restarted), so its child is switched to at once."""
        self.held_down = False
        """The operator terminated this peer (``vpnfleet-agent terminate``): it is not
        started again (retry, initial contact) until ``initiate``. The peer may still start
        it, when its plan makes it the initiator, as with strongSwan."""
        self.keepalive_to: tuple[str, int] | None = None
        """Where NAT-keepalives go while we are behind a NAT (RFC 3948 section 4)."""
        self.ike_timer: TimerHandle | None = None
        self.child_timer: TimerHandle | None = None
        self.retry_timer: TimerHandle | None = None
        self.activation_timer: TimerHandle | None = None
        """Switches outbound anyway if the old SA's delete does not come."""
        self.rekey_retry_timers: dict[SaKind, TimerHandle] = {}
        """Try a refused rekey again."""
        self.waits: dict[SaKind, list[asyncio.Future[Settled]]] = {}
        """Rekey calls waiting for the SA of each kind to be replaced."""
        self.liveness_waits: list[asyncio.Future[str]] = []
        """Liveness checks waiting for the peer's answer."""
        self.v1_started: set[bytes] = set()
        """IKEv1: inbound SPIs of the Quick modes we started to replace the child."""
        self.v1_replaced: bytes | None = None
        """IKEv1: spi_in of the child a Quick mode replaced, until it is deleted (while
        it lives, another new child is a collision: both ends replaced it at once)."""
        self.v1_round_timer: TimerHandle | None = None
        """IKEv1: ends a child replacement (activates our outbound, deletes the old)."""
        self.v1_reauth_timer: TimerHandle | None = None
        """IKEv1: deletes the ISAKMP SA a reauthentication took the child SAs from."""
        self.ike_rekey_mono = 0.0
        """When ``ike_timer`` fires (the engine's monotonic clock)."""

    def __repr__(self) -> str:
        return f"PeerDriver({self.name!r}, {self.state.value})"

    # -- what it is ------------------------------------------------------------------------

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
        return sa is not None and established(sa) and self.child is not None

    def sas(self) -> list[IkeCore]:
        """The peer's IKE SAs not yet closed and forgotten, oldest first."""
        return list(self.drivers)

    def move(self, event: PeerEvent) -> None:
        """Move the state through the one table (raises on a transition it lacks)."""
        self.state = next_state(self.name, self.state, event)

    def backoff(self) -> float:
        """1, 2, 4 … 60 seconds after consecutive failures."""
        return min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** max(0, self.attempts - 1))

    def cancel_timers(self) -> None:
        for handle in (
            self.ike_timer,
            self.child_timer,
            self.retry_timer,
            self.activation_timer,
            self.v1_round_timer,
            self.v1_reauth_timer,
            *self.rekey_retry_timers.values(),
        ):
            if handle is not None:
                handle.cancel()
        self.ike_timer = self.child_timer = self.retry_timer = self.activation_timer = None
        self.v1_round_timer = self.v1_reauth_timer = None
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

    def _live(self) -> bool:
        return self.current and not self.host.stopped

    def _service(self, sa: IkeCore) -> None:
        driver = self.drivers.get(sa)
        (driver or self.host.driver_of(sa)).service()

    def delete_sa(self, sa: IkeCore) -> None:
        """Delete ``sa`` (an INFORMATIONAL delete, or a failure before it is up)."""
        now = self.host.now()
        try:
            if core.deletable(sa):
                sa.delete(now)
            elif not sa.is_closed and not core.deleting(sa):
                sa.fail("deleted by us before it was established")
        except CommandRefused as exc:
            log.debug("delete %r: %s", sa, exc)
        self._service(sa)

    def _adopt(self, sa: IkeCore) -> SaDriver:
        driver = self.host.adopt(sa, self)
        self.drivers[sa] = driver
        return driver

    def on_closed(self, driver: SaDriver) -> None:
        self.drivers.pop(driver.sa, None)
        self._settle_half_open(driver.sa)

    def _settle_half_open(self, sa: IkeCore) -> None:
        """An IKEv1 responder SA left the half-open state: its place in the agent's
        half-open table is free (the IKEv2 core gives its own back)."""
        if isinstance(self.gate, V1ResponderGate) and isinstance(sa, IkeV1Sa):
            self.gate.settled(sa)

    # -- coming and going with the plan -----------------------------------------------------

    def start(self, first: bool) -> None:
        """A peer new in the plan: start it if this side does (``first``: the agent's
        first plan since it started)."""
        if self.always_on and self.initiates:
            self.initiate()
        elif first and self.always_on:
            # Just started (a restart, say): the peer may still hold SAs with us that
            # we lost, and as the responder we would wait for its liveness check to
            # notice. Start once ourselves unless it does first (strongSwan's
            # INITIAL_CONTACT serves the same end).
            host = self.host
            self.retry_timer = host.scheduler.call_at(
                host.now() + INITIAL_CONTACT_DELAY, self._initial_contact
            )

    def take_over(self, old: PeerDriver) -> None:
        """A changed peer: this driver takes over ``old``'s SAs, which stay in force until
        the new IKE SA has its child (make-before-break), then are deleted."""
        old.cancel_timers()
        old.current = False
        self.child = old.child
        self.ike = old.ike
        self.state = old.state
        self.replacing = [sa for sa in old.sas() if not sa.is_closed]
        for sa in self.replacing:
            driver = old.drivers[sa]
            driver.owner = self
            self.drivers[sa] = driver
        old.drivers.clear()
        self._carry_over(old)
        for sa in list(self.replacing):
            if not established(sa) and not sa.is_initiator and _reconfigure(sa, self.config):
                # The peer's set-up in progress: most likely the peer got its new plan
                # first and is re-establishing with it. Deleting it would leave the
                # peer's IKE_AUTH unanswered until its retransmissions give up; it goes
                # on under the new configuration (read at IKE_AUTH, section 1.2).
                self.replacing.remove(sa)
                if self.ike is sa:
                    self.ike = None
                continue
            if not established(sa):
                # Not carrying traffic yet: no reason to keep it while the new one comes.
                self.replacing.remove(sa)
                if self.ike is sa:
                    self.ike = None
                self.delete_sa(sa)
        if self.ike is not None and self.ike not in self.replacing:
            self.replacing.append(self.ike)
        if self.initiates and (self.always_on or self.ike is not None):
            self.initiate()

    def _carry_over(self, old: PeerDriver) -> None:
        """What the SAs a changed peer keeps (until it is re-established, or for good if
        the peer initiates and does not) still need: their history for status, the
        calls waiting on them, and their rekeys at the times already drawn."""
        self.ike_established_at = old.ike_established_at
        self.ike_established_mono = old.ike_established_mono
        self.ike_rekeyed_at = old.ike_rekeyed_at
        self.next_ike_rekey_at = old.next_ike_rekey_at
        self.last_liveness_at = old.last_liveness_at
        self.unauthenticated_failures = old.unauthenticated_failures
        self.last_unauthenticated_failure = old.last_unauthenticated_failure
        self.keepalive_to = old.keepalive_to
        self.rekeying_child = old.rekeying_child
        self.awaiting_activation = old.awaiting_activation
        self.waits, old.waits = old.waits, {}
        self.liveness_waits, old.liveness_waits = old.liveness_waits, []
        host = self.host
        wall, now = host.wall(), host.now()
        sa = self.ike
        if sa is not None and established(sa) and old.next_ike_rekey_at:
            delay = max(1.0, old.next_ike_rekey_at - wall)
            self.ike_rekey_mono = now + delay
            self.ike_timer = host.scheduler.call_at(now + delay, self._timed_ike_rekey)
        child = self.child
        if child is not None and child.next_rekey_at:
            delay = max(1.0, child.next_rekey_at - wall)
            self.child_timer = host.scheduler.call_at(now + delay, self._timed_child_rekey)

    def update_in_place(self, peer: Peer, config: IkeConfig | IkeV1Config) -> None:
        """A change that is this end's own business (liveness checks, lifetimes,
        keepalives, the CAs it accepts): liveness timers follow at once, lifetimes apply
        to the SAs made from the next rekey on and trust to the next authentication
        (like a reloaded strongSwan connection)."""
        self.peer, self.config = peer, config
        gate = self.gate
        if (isinstance(gate, IkeResponderGate) and isinstance(config, IkeConfig)) or (
            isinstance(gate, V1ResponderGate) and isinstance(config, IkeV1Config)
        ):
            gate.config = config
        for sa, driver in list(self.drivers.items()):
            _reconfigure(sa, config)
            driver.arm()

    def remove(self) -> None:
        """The plan no longer has the peer: its child goes, its IKE SAs are deleted."""
        self.cancel_timers()
        self.move(PeerEvent.REMOVED)
        self.current = False
        self.gate = None
        if self.child is not None and self.host.plane is not None:
            self._remove_child("peer removed from the plan")
        for sa, driver in list(self.drivers.items()):
            driver.owner = None
            self.delete_sa(sa)
        self.drivers.clear()
        # Its SAs no longer report to this driver: a Rekey or liveness call waiting on
        # them is answered now rather than at its deadline.
        for kind in SaKind:
            self.settle(kind, "peer removed from the plan", ok=False)
        self.answer_liveness("peer removed from the plan")

    def stop(self) -> None:
        """The agent stops: timers end, every IKE SA is deleted (one send each)."""
        self.cancel_timers()
        for sa in self.sas():
            self.delete_sa(sa)

    # -- starting IKE SAs --------------------------------------------------------------------

    def initiate(self, *, quick_mode: bool = True) -> None:
        """A new IKE SA with the peer. ``quick_mode=False`` (IKEv1 reauthentication):
        no Quick mode follows phase 1, the child SAs are taken over instead."""
        if self.config is None:
            return
        host = self.host
        self.retry_timer = None
        if not self.peer.remote_addresses:
            # A peer with a dynamic address and no SA to learn one from: it must start.
            current = self.ike
            if current is None or current.peer is None:
                self.note_error("no address to initiate to (dynamic address)", host.wall())
                return
            remote, port = current.peer[0], current.peer[1]
        else:
            remote = str(self.peer.remote_addresses[0])
            port = self.peer.remote_port or IKE_PORT
        local = (self.local, host.ike_port()) if self.local else None
        # RFC 7296 section 2.4 (RFC 2407 section 4.6.3.3 for IKEv1): with no other IKE SA
        # up with this peer, tell it so; it then drops whatever it still holds with us
        # (we restarted, or lost ours).
        alone = not any(established(s) for s in self.drivers)
        sa: IkeCore
        if isinstance(self.config, IkeV1Config):
            config = self.config
            if config.initial_contact != alone:
                config = dataclasses.replace(config, initial_contact=alone)
            sa = IkeV1Sa(config, Role.INITIATOR, local, quick_mode=quick_mode)
        else:
            v2 = IkeSa(self.config, Role.INITIATOR, local)
            v2.initial_contact = alone
            sa = v2
        if self.ike is not None and not self.ike.is_closed:
            if self.ike not in self.replacing:
                self.replacing.append(self.ike)
        else:
            self.move(PeerEvent.INITIATED)
        self.ike = sa
        driver = self._adopt(sa)
        sa.initiate((str(remote), port), host.now())
        driver.service()

    def adopt_responder(self, sa: IkeCore) -> SaDriver:
        """An IKE SA our responder gate created for this peer."""
        return self._adopt(sa)

    def _initial_contact(self) -> None:
        self.retry_timer = None
        if not self._live() or self.held_down:
            return
        if any(not sa.is_closed for sa in self.drivers):
            # The peer's own set-up is under way (we answered its IKE_SA_INIT): it does
            # what initial contact would, and a second IKE SA would only be a duplicate.
            return
        if self.ike is None or self.ike.is_closed:
            self.host.publish("initial_contact", self.name, "no IKE SA since start: initiating")
            self.initiate()

    def on_acquire(self) -> None:
        """Traffic hit this peer's trap policy."""
        if self.peer.start_action is not StartAction.TRAP:
            return
        sa = self.ike
        if sa is not None and not sa.is_closed:
            return
        self.host.publish("acquire", self.name, "traffic for a trap policy")
        self.initiate()

    def _schedule_retry(self, reason: str) -> None:
        if self.held_down:
            self.move(PeerEvent.LEFT_IDLE)
            return
        host = self.host
        self.attempts += 1
        self.note_error(reason, host.wall())
        if not self._live():
            return
        if not (self.always_on and self.initiates):
            self.move(PeerEvent.LEFT_IDLE)
            return
        delay = self.backoff() * host.rng.uniform(0.9, 1.1)
        self.move(PeerEvent.RETRY_SCHEDULED)
        if self.retry_timer is not None:
            self.retry_timer.cancel()
        self.retry_timer = host.scheduler.call_at(host.now() + delay, self._retry)
        host.publish("peer_retry", self.name, f"in {delay:.1f} s after: {reason}")

    def _retry(self) -> None:
        self.retry_timer = None
        if not self._live() or self.held_down:
            return
        if not self.is_up or self.replacement_pending:
            self.initiate()

    def reauthenticate_after(self, delay: float, changed_at: float) -> None:
        """New IKE credentials: start a new IKE SA after ``delay`` unless the peer
        re-established since ``changed_at``."""
        if self.retry_timer is not None:
            self.retry_timer.cancel()
        host = self.host
        self.retry_timer = host.scheduler.call_at(
            host.now() + delay, lambda: self._reauthenticate(changed_at)
        )

    def _reauthenticate(self, changed_at: float) -> None:
        self.retry_timer = None
        if not self._live():
            return
        current = self.ike
        if current is not None and established(current) and self.ike_established_mono >= changed_at:
            return  # the peer re-established since: our new certificate is in use
        self.host.publish("reauthenticate", self.name, "new IKE certificate: initiating")
        self.initiate()

    # -- the operator's initiate and terminate ------------------------------------------------

    def initiate_by_operator(self) -> str:
        self.held_down = False
        current = self.ike
        if current is not None and not current.is_closed:
            if self.is_up:
                return f"{self.name}: IKE SA already established"
            return f"{self.name}: IKE SA already being set up ({current.state.value})"
        if self.retry_timer is not None:
            self.retry_timer.cancel()
        self.attempts = 0
        self.host.publish("initiate", self.name, "by the operator")
        self.initiate()
        return f"{self.name}: initiating"

    def terminate_by_operator(self) -> str:
        self.held_down = True
        if self.retry_timer is not None:
            self.retry_timer.cancel()
            self.retry_timer = None
        live = [sa for sa in self.drivers if not sa.is_closed]
        if not live:
            self.move(PeerEvent.LEFT_IDLE)
            return f"{self.name}: no IKE SA; not started again until initiate"
        self.host.publish(
            "terminate", self.name, f"by the operator: deleting {len(live)} IKE SA(s)"
        )
        for sa in live:
            self.delete_sa(sa)
        return f"{self.name}: deleting {len(live)} IKE SA(s); not started again until initiate"

    # -- IKE SA events (SaOwner) ------------------------------------------------------------

    def on_ike_up(self, driver: SaDriver, event: IkeSaEstablished) -> None:
        sa, host = driver.sa, self.host
        self._settle_half_open(sa)
        if host.keylog is not None:
            host.keylog.ike_sa(self.name, "established", sa)
        current = self.ike
        replaced = current is not None and current is not sa and not current.is_closed
        reauthenticated = isinstance(sa, IkeV1Sa) and any(
            s is not sa and established(s) for s in self.replacing
        )
        if reauthenticated:
            replaced = True  # IKEv1 has no IKE SA rekey: a new Main mode replaces it
        if current is not sa:
            if current is None or current.is_closed or current in self.replacing:
                # A replacement we were waiting for (the plan changed here too).
                self.ike = sa
            else:
                self._resolve_duplicate(current, driver)
                if self.ike is not sa:
                    return
        self.peer_holds_nothing = event.initial_contact
        if replaced:
            # A Rekey call waiting for the IKE SA in force: a newer one replaces it.
            why = "the peer restarted" if event.initial_contact else "re-established"
            self.settle(SaKind.IKE, f"IKE {sa.spi_i.hex()}_i (replaced with a new IKE SA: {why})")
        self.ike_established_at = host.wall()
        self.ike_established_mono = host.now()
        self.ike_rekeyed_at = host.wall() if reauthenticated else 0.0
        self._schedule_ike_rekey()
        if event.nat_local and sa.peer is not None:
            # RFC 3948 section 4: the side behind the NAT keeps its mapping open.
            self.keepalive_to = sa.peer
            host.nat_keepalive(sa.peer, True)
        nat = NAT_NOTES[nat_state(sa, self.peer)]
        host.publish(
            "ike_up", self.name, f"{event.proposal} {sa.spi_i.hex()}_i {sa.spi_r.hex()}_r{nat}"
        )
        if isinstance(sa, IkeV1Sa):
            self._v1_take_children(sa, event.initial_contact)

    def _v1_take_children(self, sa: IkeV1Sa, initial_contact: bool) -> None:
        """IKEv1 reauthentication keeps phase 2: the new ISAKMP SA adopts the child SAs of
        the one it replaces (their delete, replacement and liveness go over it from now
        on; the SAs themselves, and the data plane, do not change), and the old one is
        deleted after :data:`REAUTH_DELETE_WAIT` with a phase 1 Delete only. strongSwan
        5.9 does the same at both ends (it moves the CHILD_SAs of an ISAKMP SA with the
        same peer, hosts and identities to the new one when phase 1 completes, and
        deletes the old ISAKMP SA a little later). The responder adopts whenever the
        peer did not say INITIAL-CONTACT (a restarted peer holds none of them); when the
        initiator brings a Quick mode all the same (a changed peer, an older agent), it
        replaces the adopted child as any Quick mode does. The initiator of a
        reauthentication with nothing left to adopt starts the Quick mode itself."""
        child, host = self.child, self.host
        holder: IkeV1Sa | None = None
        if child is not None and not initial_contact and not (sa.is_initiator and sa.quick_mode):
            holder = next(
                (
                    s
                    for s in self.drivers
                    if s is not sa
                    and isinstance(s, IkeV1Sa)
                    and established(s)
                    and child.spi_in in s.children
                ),
                None,
            )
        if holder is None:
            if sa.is_initiator and not sa.quick_mode:
                sa.start_quick_mode(host.now())
                self._service(sa)
            return
        taken = sa.adopt_children(holder)
        if holder not in self.replacing:
            self.replacing.append(holder)
        host.publish(
            "children_adopted",
            self.name,
            f"{len(taken)} child SA(s) from {holder.spi_i.hex()}_i to {sa.spi_i.hex()}_i",
        )
        if self.v1_round_timer is None and child is not None:
            # A Quick mode round that ended while this phase 1 was under way found its
            # leftovers (the replaced child, a collision's loser) on no SA it could
            # delete them over; they came along, and go now, from where the peer looks.
            for spi in [s for s in sa.children if s != child.spi_in]:
                self._v1_delete_child(sa, spi)
        if self.v1_reauth_timer is not None:
            self.v1_reauth_timer.cancel()
        wait = REAUTH_DELETE_WAIT * (1 if sa.is_initiator else 2)
        self.v1_reauth_timer = host.scheduler.call_at(host.now() + wait, self._v1_reauth_over)

    def _v1_reauth_over(self) -> None:
        """The ISAKMP SAs a reauthentication replaced go (those left holding the child
        SA in force, if any, stay: nothing was adopted from them)."""
        self.v1_reauth_timer = None
        sa, child = self.ike, self.child
        if not self._live() or sa is None or not established(sa):
            return
        for old in list(self.replacing):
            if old is sa or (child is not None and child.spi_in in old.children):
                continue
            self.replacing.remove(old)
            self.delete_sa(old)

    def _v1_orphans(self, sa: IkeV1Sa, reason: str) -> None:
        """The peer deleted ``sa`` with a phase 1 Delete, which leaves its Quick mode SAs
        in place (RFC 2408 section 3.15): with the child in force among them they move to
        another ISAKMP SA with the peer (the peer moved them to a newer one, e.g. after
        reauthentications that crossed), else they are let go."""
        child = self.child
        target: IkeCore | None = None
        if child is not None and child.spi_in in sa.children:
            target = next(
                (
                    s
                    for s in (self.ike, *reversed(self.replacing), *self.drivers)
                    if s is not None and s is not sa and established(s)
                ),
                None,
            )
        if not isinstance(target, IkeV1Sa):
            sa.release_children(f"IKE SA deleted: {reason}")
            return  # ChildSaDeleted follow in this driver's service
        taken = target.adopt_children(sa)
        if self.ike is sa:
            self.ike = target
            if target in self.replacing:
                self.replacing.remove(target)
        self.host.publish(
            "children_adopted",
            self.name,
            f"{len(taken)} child SA(s) from {sa.spi_i.hex()}_i (deleted by the peer) "
            f"to {target.spi_i.hex()}_i",
        )

    def _resolve_duplicate(self, current: IkeCore, new: SaDriver) -> None:
        """Two live IKE SAs for one peer. Crossed set-ups keep, on both sides, the one
        with the larger initiator SPI; otherwise the new one replaces the old. Only SAs
        of opposite roles can have crossed; two we answered mean the peer started again.
        """
        # Set-ups that overlapped crossed (both sides initiated at once): both sides
        # then keep the same SA. One started after ours was up replaces it: the peer
        # restarted, or a changed plan re-established it.
        crossed = current.is_initiator != new.sa.is_initiator and (
            not established(current) or new.created < self.ike_established_mono
        )
        if crossed and current.spi_i > new.sa.spi_i:
            # The current one stays and keeps (or will get) the child: drop the new now.
            self.delete_sa(new.sa)
            return
        self.ike = new.sa
        if current not in self.replacing:
            self.replacing.append(current)

    def on_ike_rekeyed(self, old: SaDriver, new: SaDriver, event: IkeSaRekeyed) -> None:
        sa, host = old.sa, self.host
        self.drivers[new.sa] = new
        if event.carries_children and self.ike is sa:
            self.ike = new.sa
            self.ike_rekeyed_at = host.wall()
            self._schedule_ike_rekey()
            host.publish(
                "ike_rekeyed",
                self.name,
                f"{sa.spi_i.hex()}_i -> {new.sa.spi_i.hex()}_i {new.sa.spi_r.hex()}_r",
            )
            self.settle(SaKind.IKE, f"IKE {new.sa.spi_i.hex()}_i")

    def on_ike_gone(self, driver: SaDriver, reason: str, *, failed: bool) -> None:
        sa, host = driver.sa, self.host
        if isinstance(sa, IkeV1Sa) and sa.children:
            self._v1_orphans(sa, reason)
        if sa in self.replacing:
            self.replacing.remove(sa)
            if self.ike is not sa:
                return
        if self.ike is not sa:
            if failed and not sa.is_initiator and sa.remote_identity is None:
                self._failed_unauthenticated(sa, reason)
            elif failed:
                self.note_error(reason, host.wall())
                host.publish("ike_failed", self.name, reason)
            return
        fallback = next((s for s in reversed(self.replacing) if established(s)), None)
        if fallback is not None and self.child is not None:
            # Make-before-break failed to make: the old SA and its child stay in force.
            self.replacing.remove(fallback)
            self.ike = fallback
            self.replacement_pending = True
            host.publish("ike_failed", self.name, f"{reason} (previous SA kept)")
            self._schedule_retry(reason)
            self.move(PeerEvent.PREVIOUS_KEPT)
            return
        self.ike = None
        if self.keepalive_to is not None:
            host.nat_keepalive(self.keepalive_to, False)
            self.keepalive_to = None
        if self.ike_timer is not None:
            self.ike_timer.cancel()
            self.ike_timer = None
        if self.child is not None:
            self._remove_child(f"IKE SA gone: {reason}")
        dead = reason.startswith("peer dead")
        kind = "ike_failed" if failed else "peer_dead" if dead else "ike_down"
        host.publish(kind, self.name, reason)
        for sa_kind in SaKind:
            self.settle(sa_kind, f"IKE SA gone: {reason}", ok=False)
        self.answer_liveness(f"IKE SA gone: {reason}")
        if failed or dead or reason != "deleted by peer":
            self._schedule_retry(reason)
        else:
            self.move(PeerEvent.LEFT_IDLE)
            self.note_error(reason, host.wall())
            if self.always_on and self.initiates:
                self._schedule_retry(reason)

    def _failed_unauthenticated(self, sa: IkeCore, reason: str) -> None:
        """An IKE SA the other side started failed before it authenticated (a wrong key or
        proposals, or anyone at all: a stranger's IKE_SA_INIT from the peer's address, or
        routed to the plan's one NAT peer). Counted and reported at a bounded rate, never
        as the peer's ``last_error``: the peer's tunnel is not concerned."""
        host = self.host
        self.unauthenticated_failures += 1
        source = f"{sa.peer[0]}:{sa.peer[1]}" if sa.peer is not None else "an unknown address"
        self.last_unauthenticated_failure = f"from {source}: {reason}"
        left_out = host.untrusted_log.admit(self.name, host.now())
        if left_out is None:
            return
        more = f" ({left_out} more since the last report)" if left_out else ""
        host.publish(
            "ike_failed_unauthenticated",
            self.name,
            f"IKE SA from {source} failed before authentication: {reason}{more}",
        )

    def on_ike_rekey_failed(self, driver: SaDriver, event: IkeSaRekeyFailed) -> None:
        self.host.publish("peer_error", self.name, event.reason)
        sa = driver.sa
        if event.peer_rekey_stands or self.ike is not sa:
            return  # the SA is replaced all the same (IkeSaRekeyed settles the wait)
        if event.notify == NotifyType.TEMPORARY_FAILURE:
            delay = self._retry_rekey_later(SaKind.IKE, sa.spi_i)
            if delay is not None:
                self.host.publish(
                    "ike_rekey_refused", self.name, f"{event.reason}; again in {delay:.1f} s"
                )
                return
        self.settle(SaKind.IKE, event.reason, ok=False)

    def on_peer_error(self, event: PeerErrorNotify) -> None:
        self.host.publish("peer_error", self.name, event.reason)

    def on_liveness_answered(self) -> None:
        self.answer_liveness(LIVENESS_ANSWERED)

    # -- child SA events: the data plane follows ------------------------------------------------

    def on_child_up(self, driver: SaDriver, event: ChildSaEstablished) -> None:
        host, sa = self.host, driver.sa
        plane = host.plane
        assert plane is not None
        if self.ike is not sa:
            # A child on an SA we are about to drop; it goes with its SA.
            self.v1_started.discard(event.spi_in)
            return
        if (
            isinstance(sa, IkeV1Sa)
            and self.child is not None
            and self.child.spi_in in sa.children
            and self.child.mode == event.mode
        ):
            # Also after a reauthentication adopted the child: the initiator of a changed
            # peer's new Main mode brings a Quick mode all the same.
            self._v1_child_replaced(sa, event)
            return
        remote = sa.peer[0] if sa.peer else str(self.peer.remote_addresses[0])
        try:
            dest, encap, path = translate.esp_path(
                sa.encap, sa.peer, remote, host.raw_esp, ah=event.protocol == IkeProtocolId.AH
            )
            inbound, outbound = translate.sa_params(
                event, self._child_limits(sa, event.spi_in), self.local, remote
            )
        except translate.PeerConfigError as exc:
            self._refuse_child(sa, event, str(exc))
            return
        local = self.local if inbound.mode is EspMode.TRANSPORT else None
        old = self.child
        handover = (
            old is not None
            and old.path == (path, local)
            and old.mode == event.mode
            and any(s is not sa for s in self.replacing)
        )
        # A new IKE SA replacing the one that carries the child (a changed plan, new
        # credentials): the same make-before-break as a child rekey (RFC 7296 section
        # 2.8), the old inbound SA open through its grace period. Its initiator switches
        # outbound at once; its responder once the initiator surely holds the new SA:
        # the first packet arriving on it (the data plane switches), the old SA's delete,
        # or ACTIVATE_WAIT. A restarted peer, which holds no old SA, says so with
        # INITIAL_CONTACT (section 2.4): then the responder switches at once.
        # IKEv1 (RFC 2409 section 5.5): the new ISAKMP SA's initiator starts the Quick
        # mode and holds the child from message 2, its responder only from message 3;
        # so there the initiator is the one that waits.
        v1 = isinstance(sa, IkeV1Sa)
        self.v1_started.discard(event.spi_in)
        waits = sa.is_initiator if v1 else not sa.is_initiator
        wait = handover and waits and not self.peer_holds_nothing
        if handover:
            try:
                plane.rekey_child_sa(
                    self.name,
                    inbound,
                    outbound,
                    local_ts=translate.esp_selectors(event.local_ts),
                    remote_ts=translate.esp_selectors(event.remote_ts),
                    switch_outbound=not wait,
                )
            except ValueError as exc:  # the data plane lost the old child meanwhile
                log.info("%s: installing the new child afresh: %s", self.name, exc)
                handover = wait = False
        if not handover:
            plane.install_child_sa(
                self.name,
                inbound,
                outbound,
                dest,
                encap=encap,
                local=local,
                local_ts=translate.esp_selectors(event.local_ts),
                remote_ts=translate.esp_selectors(event.remote_ts),
            )
        if host.keylog is not None:
            host.keylog.child_sa(self.name, "installed", inbound, outbound)
        self.child = ChildRecord(
            event.spi_in,
            event.spi_out,
            event.proposal,
            event.mode,
            translate.describe_selectors(event.local_ts),
            translate.describe_selectors(event.remote_ts),
            host.wall(),
            path=(path, local),
        )
        self.rekeying_child = self.awaiting_activation = None
        if self.v1_round_timer is not None:
            # A replacement on the SA this child leaves is over with it.
            self.v1_round_timer.cancel()
            self.v1_round_timer = None
        self.v1_replaced = None
        if old is not None:
            # The child a Rekey call waits for was replaced with a new IKE SA's (the
            # peer restarted, or the tunnel was re-established): that is its rekey.
            why = "the peer restarted" if self.peer_holds_nothing else "re-established"
            self.settle(
                SaKind.CHILD, f"child {event.spi_in.hex()} (replaced with a new IKE SA: {why})"
            )
        self.peer_holds_nothing = False
        if self.activation_timer is not None:
            self.activation_timer.cancel()
            self.activation_timer = None
        self.move(PeerEvent.CHILD_UP)
        self.attempts = 0
        self.note_error("", host.wall())
        self.replacement_pending = False
        self._schedule_child_rekey()
        host.publish(
            "child_up",
            self.name,
            f"{event.proposal} {event.mode} in {event.spi_in.hex()} out {event.spi_out.hex()}",
        )
        if wait:
            assert old is not None
            self.awaiting_activation = old.spi_in
            self.activation_timer = host.scheduler.call_at(
                host.now() + ACTIVATE_WAIT, self._activation_overdue
            )
            return  # the old SAs go when the peer deletes them (or when overdue)
        self._delete_replaced(sa)

    def _refuse_child(self, sa: IkeCore, event: ChildSaEstablished, reason: str) -> None:
        """A child IKE established that this end cannot install (an AH child over a NAT,
        keys the data plane cannot take): nothing is installed, the child is deleted
        (RFC 7296 section 1.4.1), and the reason goes to status."""
        host = self.host
        log.warning("%s: child %s refused: %s", self.name, event.spi_in.hex(), reason)
        self.v1_started.discard(event.spi_in)
        try:
            sa.delete_child(event.spi_in, host.now())
        except Exception as exc:  # the SA may be closing; the refusal stands
            log.info("%s: cannot delete refused child: %s", self.name, exc)
        self.note_error(reason, host.wall())
        host.publish("child_failed", self.name, reason)

    def _v1_child_replaced(self, sa: IkeV1Sa, event: ChildSaEstablished) -> None:
        """IKEv1 has no rekey exchange: a new Quick mode on the same ISAKMP SA replaces
        the child, whoever started it, make-before-break. RFC 2409 section 5.5: the
        Quick mode's initiator holds the new SA from message 2, its responder from
        message 3. So the responder sends on the new SA at once; the initiator when
        traffic arrives on it (the data plane switches), when the peer deletes the old
        one, or after :data:`QUICK_ACTIVATE_TIMEOUTS` retransmission timeouts (message 3
        lost once is resent by then); the old one is deleted then.

        Both ends replacing the child at once make two new SAs for one old (a
        collision): both ends keep the one whose SPI pair ranks higher (:func:`_rank`;
        the pair is the same at both ends), the end that started the other deletes it,
        so exactly one pair stays in use."""
        host, child = self.host, self.child
        plane = host.plane
        assert plane is not None and child is not None
        ours = event.spi_in in self.v1_started
        if ours:
            self.rekeying_child = None
        # A replacement is under way until its timer ends it: another new child meanwhile
        # replaced the same old one too.
        collision = self.v1_round_timer is not None and self.v1_replaced != child.spi_in
        if collision and _rank(event.spi_in, event.spi_out) < _rank(child.spi_in, child.spi_out):
            # The other new SA stays (already installed); this one goes: now if we
            # started it, else when the replacement ends (its initiator deletes it first;
            # our delete is for the case its own went before we had the SA).
            log.info("%s: child %s lost a Quick mode collision", self.name, event.spi_in.hex())
            if ours:
                self._v1_delete_child(sa, event.spi_in)
                kept = f"child {child.spi_in.hex()} (the peer's simultaneous rekey was kept)"
                self.settle(SaKind.CHILD, kept)
            return
        loser = child.spi_in if collision else None
        if not collision:
            self.v1_replaced = child.spi_in
        remote = sa.peer[0] if sa.peer else str(self.peer.remote_addresses[0])
        inbound, outbound = translate.sa_params(
            event, self._child_limits(sa, event.spi_in), self.local, remote
        )
        # The Quick mode's responder switches at once, its initiator waits (see above);
        # after a collision too: the loser carries our traffic meanwhile.
        switch = not ours
        plane.rekey_child_sa(
            self.name,
            inbound,
            outbound,
            local_ts=translate.esp_selectors(event.local_ts),
            remote_ts=translate.esp_selectors(event.remote_ts),
            switch_outbound=switch,
        )
        if host.keylog is not None:
            host.keylog.child_sa(self.name, "rekeyed", inbound, outbound)
        old_in, old_out = child.spi_in, child.spi_out
        child.previous = (old_in, old_out)
        child.spi_in, child.spi_out, child.proposal = event.spi_in, event.spi_out, event.proposal
        child.rekeyed_at = host.wall()
        self.awaiting_activation = None if switch else old_in
        self._schedule_child_rekey()
        if self.v1_round_timer is not None:
            self.v1_round_timer.cancel()
        assert self.config is not None
        wait = QUICK_ACTIVATE_TIMEOUTS * self.config.retransmit_timeout * (1 if ours else 2)
        self.v1_round_timer = host.scheduler.call_at(host.now() + wait, self._v1_round_over)
        if loser is not None and loser in self.v1_started:
            self._v1_delete_child(sa, loser)  # ours lost: the peer's is kept
        host.publish(
            "child_rekeyed",
            self.name,
            f"{old_in.hex()} -> {event.spi_in.hex()} (out {event.spi_out.hex()})"
            + (" after a Quick mode collision" if collision else ""),
        )
        self.settle(
            SaKind.CHILD,
            f"child {event.spi_in.hex()}" + ("" if ours else " (rekeyed by the peer)"),
        )

    def _v1_round_over(self) -> None:
        """The replacement's time is up: our outbound moves to the new SA if it still
        waits, and every other Quick mode SA of the ISAKMP SA (the old one, a
        collision's loser) is deleted, if the peer has not done so."""
        self.v1_round_timer = None
        if not self._live():
            return
        if self.awaiting_activation is not None:
            self._activate()
        sa, child = self.ike, self.child
        self.v1_replaced = None
        if isinstance(sa, IkeV1Sa) and child is not None:
            for spi in [s for s in sa.children if s != child.spi_in]:
                self._v1_delete_child(sa, spi)

    def _v1_fall_back(self, sa: IkeV1Sa) -> bool:
        """The peer deleted the new child in force while a replacement was under way (a
        collision's loser, deleted before its winner reached us): the old one, still
        held by both ends, is installed again until the winner comes."""
        child, plane = self.child, self.host.plane
        assert child is not None and plane is not None
        kept = [c.established for spi, c in sa.children.items() if spi != child.spi_in]
        if not kept:
            return False
        event = next((e for e in kept if e.spi_in == self.v1_replaced), kept[-1])
        remote = sa.peer[0] if sa.peer else str(self.peer.remote_addresses[0])
        inbound, outbound = translate.sa_params(
            event, self._child_limits(sa, event.spi_in), self.local, remote
        )
        dest, encap, _ = translate.esp_path(
            sa.encap, sa.peer, remote, self.host.raw_esp, ah=event.protocol == IkeProtocolId.AH
        )
        plane.install_child_sa(
            self.name,
            inbound,
            outbound,
            dest,
            encap=encap,
            local=self.local if inbound.mode is EspMode.TRANSPORT else None,
            local_ts=translate.esp_selectors(event.local_ts),
            remote_ts=translate.esp_selectors(event.remote_ts),
        )
        log.info(
            "%s: child %s deleted by the peer, back on %s",
            self.name,
            child.spi_in.hex(),
            event.spi_in.hex(),
        )
        child.spi_in, child.spi_out, child.proposal = event.spi_in, event.spi_out, event.proposal
        self.v1_replaced = event.spi_in
        self.awaiting_activation = None
        return True

    def _v1_delete_child(self, sa: IkeV1Sa, spi_in: bytes) -> None:
        self.v1_started.discard(spi_in)
        try:
            sa.delete_child(spi_in, self.host.now())
        except CommandRefused as exc:
            log.debug("%s: delete child %s: %s", self.name, spi_in.hex(), exc)
        self._service(sa)

    def _delete_replaced(self, sa: IkeCore) -> None:
        for old in self.replacing:
            if old is not sa:
                if isinstance(sa, IkeV1Sa) and isinstance(old, IkeV1Sa):
                    self._v1_delete_children_of(old, sa)
                self.delete_sa(old)
        self.replacing = [s for s in self.replacing if s is not sa and not s.is_closed]

    def _v1_delete_children_of(self, old: IkeV1Sa, new: IkeV1Sa) -> None:
        """The Quick mode SAs of a replaced ISAKMP SA are deleted over the new one too:
        an IPsec SA may be deleted over any ISAKMP SA with the peer (RFC 2408 section
        3.15), and strongSwan moves them to the new ISAKMP SA on reauthentication and
        looks a Delete up there only."""
        spis = tuple(old.children)
        if not spis or not established(new):
            return
        new.send_informational([DeletePayload(DOI_IPSEC, ProtocolId.IPSEC_ESP, spis)])
        self._service(new)

    def _activate(self) -> None:
        self.awaiting_activation = None
        if self.activation_timer is not None:
            self.activation_timer.cancel()
            self.activation_timer = None
        plane = self.host.plane
        if plane is not None:
            with contextlib.suppress(ValueError):
                plane.activate_outbound(self.name)

    def _activation_overdue(self) -> None:
        self.activation_timer = None
        if not self._live():
            return
        if self.awaiting_activation is None or self.ike is None:
            return
        log.info("%s: the replaced IKE SA was not deleted by the peer in time", self.name)
        self._activate()
        self._delete_replaced(self.ike)

    def on_child_rekeyed(self, driver: SaDriver, event: ChildSaRekeyed) -> None:
        sa = driver.sa
        if isinstance(sa, IkeV1Sa):
            # The IKEv1 core names a new Quick mode SA of the child's policy a rekey of
            # the one it replaces; the engine starts those Quick modes itself and times
            # the switch and the old SA's delete (``_v1_child_replaced``), also when
            # the core's own rekey_child deleted the old SA already.
            child = self.child
            if self.ike is sa and child is not None and child.spi_in == event.old_spi_in:
                self._v1_child_replaced(sa, event.new)
            else:
                self.on_child_up(driver, event.new)
            return
        assert isinstance(sa, IkeSa)
        ours = event.initiator and self.rekeying_child == event.old_spi_in
        if ours:
            self.rekeying_child = None  # the exchange we started is over
        self._follow_child_rekey(sa, event)
        child = self.child
        if not ours:
            if self.rekeying_child == event.old_spi_in:
                answered = sa.children.get(event.old_spi_in)
                if answered is not None and answered.state is ChildSaState.REKEYING:
                    return  # crossing rekeys (2.8.1): ours is in flight and decides
                # Our rekey was still queued: the peer's went first and ours will not go
                # out (no crossing, section 2.8.1).
                self.rekeying_child = None
            elif self.rekeying_child is not None:
                return  # ours, of another SA, is in flight
            if child is not None and child.spi_in != event.old_spi_in:
                # Also while a refused rekey of ours waits for its retry: the SA is
                # replaced, whoever made the new one.
                self.settle(SaKind.CHILD, f"child {child.spi_in.hex()} (rekeyed by the peer)")
            return
        if child is None:
            self.settle(SaKind.CHILD, "no child SA left", ok=False)
        elif event.redundant:
            kept = f"child {child.spi_in.hex()} (the peer's simultaneous rekey was kept)"
            self.settle(SaKind.CHILD, kept)
        else:
            self.settle(SaKind.CHILD, f"child {event.new.spi_in.hex()}")

    def on_child_failed(self, event: ChildSaFailed) -> None:
        host = self.host
        rekeying, self.rekeying_child = self.rekeying_child, None
        child = self.child
        if rekeying is None:
            self.note_error(event.reason, host.wall())
            host.publish("child_failed", self.name, event.reason)
            return
        if child is not None and child.spi_in != rekeying:
            # The peer's rekey of the same SA went first and ours was refused: the
            # child is rekeyed all the same.
            host.publish("child_rekey_refused", self.name, f"{event.reason} (rekeyed by the peer)")
            detail = f"child {child.spi_in.hex()} (rekeyed by the peer; ours: {event.reason})"
            self.settle(SaKind.CHILD, detail)
            return
        if child is not None and event.notify in RETRYABLE_REFUSALS:
            delay = self._retry_rekey_later(SaKind.CHILD, rekeying)
            if delay is not None:
                # Section 2.25: refused while a collision settles; the peer's own
                # exchange usually replaces the SA before the retry is due.
                host.publish(
                    "child_rekey_refused", self.name, f"{event.reason}; again in {delay:.1f} s"
                )
                return
        self.note_error(event.reason, host.wall())
        host.publish("child_failed", self.name, event.reason)
        self.settle(SaKind.CHILD, event.reason, ok=False)

    def _follow_child_rekey(self, sa: IkeCore, event: ChildSaRekeyed) -> None:
        host = self.host
        plane = host.plane
        assert plane is not None
        old = event.old_spi_in
        child = self.child
        if child is None:
            return
        # Crossing rekeys (RFC 7296 section 2.8.1) make two SAs replacing one: the
        # second to arrive names the SA the first one replaced.
        crossed = child.previous is not None and child.previous[0] == old
        if child.spi_in != old and not crossed:
            return
        if event.redundant:
            # Our exchange lost: the peer's SA (installed when we answered it) stays and
            # ours is deleted next. Nobody sends on ours, and installing it would retire
            # the survivor's inbound SA in the data plane.
            log.info(
                "%s: child %s redundant after simultaneous rekey of %s",
                self.name,
                event.new.spi_in.hex(),
                old.hex(),
            )
            return
        new = event.new
        remote = sa.peer[0] if sa.peer else str(self.peer.remote_addresses[0])
        inbound, outbound = translate.sa_params(
            new, self._child_limits(sa, new.spi_in), self.local, remote
        )
        # Section 2.8: the initiator moves outbound traffic at once, the responder when
        # the old SA's delete shows the initiator holds the new SA. After a crossing
        # this is our winning SA; the peer's, installed first, is retired here.
        plane.rekey_child_sa(
            self.name,
            inbound,
            outbound,
            local_ts=translate.esp_selectors(new.local_ts),
            remote_ts=translate.esp_selectors(new.remote_ts),
            switch_outbound=event.initiator,
        )
        if host.keylog is not None:
            host.keylog.child_sa(self.name, "rekeyed", inbound, outbound)
        self.awaiting_activation = None if event.initiator else old
        child.previous = (old, event.old_spi_out)
        child.spi_in, child.spi_out, child.proposal = new.spi_in, new.spi_out, new.proposal
        child.rekeyed_at = host.wall()
        self._schedule_child_rekey()
        host.publish(
            "child_rekeyed",
            self.name,
            f"{event.old_spi_in.hex()} -> {new.spi_in.hex()} (out {new.spi_out.hex()})",
        )

    def on_child_deleted(self, event: ChildSaDeleted) -> None:
        self.v1_started.discard(event.spi_in)
        sa, child = self.ike, self.child
        if (
            isinstance(sa, IkeV1Sa)
            and child is not None
            and child.spi_in == event.spi_in
            and self.v1_round_timer is not None
            and event.reason in ("deleted by peer", "rekeyed")
            and self._v1_fall_back(sa)
        ):
            return
        if (
            isinstance(self.ike, IkeV1Sa)
            and self.awaiting_activation is not None
            and self.child is not None
            and event.spi_in != self.child.spi_in
            and self.host.plane is not None
        ):
            # IKEv1: the peer deleted the replaced child (or a collision's loser): it
            # holds the new SA, our outbound may move to it.
            self._activate()
            return
        if self.awaiting_activation == event.spi_in and self.host.plane is not None:
            # The rekey's initiator (or the new IKE SA's) deleted the old SA: it surely
            # has the new inbound SA.
            self._activate()
            return
        child = self.child
        if child is None or child.spi_in != event.spi_in:
            return  # an SA replaced by a rekey or a newer IKE SA
        previous = child.previous
        if (
            previous is not None
            and self.rekeying_child == previous[0]
            and self.awaiting_activation == previous[0]
        ):
            # The peer's SA, answered while our rekey of the same SA crossed it, lost
            # (section 2.8.1) and went before our own exchange ended: ours will replace
            # the old SA, which still carries our outbound traffic meanwhile.
            child.spi_in, child.spi_out = previous
            child.previous = None
            self.awaiting_activation = None
            return
        self._remove_child(f"child SA deleted ({event.reason}), no new one")
        self.host.publish("child_down", self.name, event.reason)

    def _remove_child(self, reason: str) -> None:
        """The child goes from the data plane; a Rekey call waiting for it fails with
        ``reason``."""
        self.settle(SaKind.CHILD, reason, ok=False)
        self.child = None
        self.rekeying_child = self.awaiting_activation = None
        if self.activation_timer is not None:
            self.activation_timer.cancel()
            self.activation_timer = None
        if self.child_timer is not None:
            self.child_timer.cancel()
            self.child_timer = None
        self._cancel_rekey_retry(SaKind.CHILD)
        plane = self.host.plane
        if plane is not None:
            with contextlib.suppress(ValueError):
                plane.remove_child_sa(self.name)

    def on_volume_limit(self, spi: int) -> None:
        """The data plane's soft volume limit of the SA with ``spi`` was reached."""
        child = self.child
        if child is None:
            return
        if spi in (int.from_bytes(child.spi_in, "big"), int.from_bytes(child.spi_out, "big")):
            try:
                self.rekey_child()
            except CommandRefused as exc:
                log.info("%s: volume rekey not started: %s", self.name, exc)

    # -- rekey timers ------------------------------------------------------------------------

    def _jittered(self, seconds: int, rand: int) -> float:
        """RFC 7296 section 2.8: rekey before expiry, at a random point so both sides do
        not start at once (strongSwan's rand_time)."""
        return max(1.0, seconds - self.host.rng.uniform(0, rand))

    def _schedule_ike_rekey(self) -> None:
        """At the plan's jittered rekey time; an IKEv1 ISAKMP SA no later than its
        ``rekey_due`` (the peer may have proposed or answered a shorter lifetime, RFC 2407
        section 4.6.3.1, and the core deletes the SA when it ends)."""
        if self.ike_timer is not None:
            self.ike_timer.cancel()
        host, life = self.host, self.peer.lifetimes
        delay = self._jittered(life.ike_rekey_seconds, life.rand_seconds)
        sa = self.ike
        due = sa.rekey_due if isinstance(sa, IkeV1Sa) else None
        if due is not None:
            delay = min(delay, max(0.0, due - host.now()))
        self.next_ike_rekey_at = host.wall() + delay
        self.ike_rekey_mono = host.now() + delay
        self.ike_timer = host.scheduler.call_at(self.ike_rekey_mono, self._timed_ike_rekey)

    def after_input(self, driver: SaDriver) -> None:
        """An IKEv1 RESPONDER-LIFETIME may have shortened the ISAKMP SA in force: its
        reauthentication moves up to the new ``rekey_due``."""
        sa = driver.sa
        if sa is not self.ike or not isinstance(sa, IkeV1Sa) or self.ike_timer is None:
            return
        due = sa.rekey_due
        if due is not None and due < self.ike_rekey_mono:
            self._schedule_ike_rekey()

    def _child_limits(self, sa: IkeCore, spi_in: bytes) -> Lifetime:
        """The data plane's limits of the child SA ``spi_in``: the plan's, and no longer
        than an IKEv1 Quick mode agreed (:func:`translate.child_lifetime`)."""
        agreed = self._v1_agreed(sa, spi_in)
        if agreed is None:
            return translate.child_lifetime(self.peer)
        return translate.child_lifetime(self.peer, agreed.seconds, agreed.kilobytes)

    @staticmethod
    def _v1_agreed(sa: IkeCore | None, spi_in: bytes) -> V1Lifetimes | None:
        if isinstance(sa, IkeV1Sa) and spi_in in sa.children:
            return sa.child_lifetime(spi_in)
        return None

    def _schedule_child_rekey(self) -> None:
        """At the plan's jittered rekey time; an IKEv1 child no later than nine tenths of
        the lifetime its Quick mode agreed (a responder may have answered a shorter one
        than offered, RFC 2407 section 4.6.3.1, and the peer's SA ends then)."""
        if self.child_timer is not None:
            self.child_timer.cancel()
        host, life = self.host, self.peer.lifetimes
        delay = self._jittered(life.child_rekey_seconds, life.rand_seconds)
        agreed = None if self.child is None else self._v1_agreed(self.ike, self.child.spi_in)
        if agreed is not None and agreed.seconds is not None:
            delay = min(delay, self._jittered(agreed.seconds * 9 // 10, agreed.seconds // 20))
        if self.child is not None:
            self.child.next_rekey_at = host.wall() + delay
        self.child_timer = host.scheduler.call_at(host.now() + delay, self._timed_child_rekey)

    def _timed_ike_rekey(self) -> None:
        self.ike_timer = None
        if not self._live():
            return
        try:
            self.rekey_retries[SaKind.IKE] = 0
            self.rekey_ike()
        except CommandRefused as exc:
            log.info("%s: scheduled rekey postponed: %s", self.name, exc)
            # Busy (another exchange, a crossing rekey): try again shortly.
            host = self.host
            self.ike_timer = host.scheduler.call_at(host.now() + 5.0, self._timed_ike_rekey)

    def _timed_child_rekey(self) -> None:
        self.child_timer = None
        if not self._live():
            return
        try:
            self.rekey_retries[SaKind.CHILD] = 0
            self.rekey_child()
        except CommandRefused as exc:
            log.info("%s: scheduled rekey postponed: %s", self.name, exc)
            host = self.host
            self.child_timer = host.scheduler.call_at(host.now() + 5.0, self._timed_child_rekey)

    def rekey_ike(self) -> None:
        sa = self.ike
        if sa is None:
            raise CommandRefused("no IKE SA")
        if isinstance(sa, IkeV1Sa):
            self._reauthenticate_v1(sa)
            return
        assert isinstance(sa, IkeSa)
        sa.rekey(self.host.now())
        self._service(sa)

    def _reauthenticate_v1(self, sa: IkeV1Sa) -> None:
        """IKEv1 has no rekey exchange: the ISAKMP SA is replaced by a new Main mode
        (RFC 2409 section 5), make-before-break, that keeps phase 2: no Quick mode
        follows it, the child SAs are taken over (:meth:`_v1_take_children`), then the
        old ISAKMP SA is deleted (phase 1 Delete only)."""
        if not established(sa):
            raise CommandRefused(f"cannot reauthenticate an IKEv1 SA in state {sa.state.value}")
        if any(s is not sa and not s.is_closed and not established(s) for s in self.drivers):
            # A new Main mode is under way already (ours, or the peer's reauthentication
            # crossing ours): when it is up it replaces this SA, which ends the wait.
            return
        self.host.publish("ike_reauthenticate", self.name, "IKEv1: new Main mode")
        self.initiate(quick_mode=self.child is None)

    def rekey_child(self) -> None:
        sa, child = self.ike, self.child
        if sa is None or child is None:
            raise CommandRefused("no child SA")
        if isinstance(sa, IkeV1Sa):
            if self.rekeying_child is not None:
                raise CommandRefused("a Quick mode replacing the child is already under way")
            spi = sa.start_quick_mode(self.host.now())
            self.v1_started.add(spi)
            self.rekeying_child = child.spi_in
            self._service(sa)
            return
        assert isinstance(sa, IkeSa)
        home = sa.home
        home.rekey_child(child.spi_in, self.host.now())
        self.rekeying_child = child.spi_in
        self._service(home)

    # -- the Rekey call's waits ----------------------------------------------------------------

    def not_rekeyable(self) -> str | None:
        """Why a Rekey or a liveness check of this peer cannot start (no tunnel up),
        None when it can."""
        sa = self.ike
        if sa is None or sa.is_closed:
            return f"peer is not up ({self.state.value})"
        if not established(sa):
            return f"peer is not up (IKE SA {sa.state.value})"
        if self.child is None:
            why = f": {self.last_error}" if self.last_error else ""
            return f"IKE SA is up but no child SA is installed{why}"
        return None

    def start_rekey(self, target: RekeyTarget) -> PendingRekey:
        """Start rekeying the peer's SAs of ``target``; the result settles as the SAs do,
        at the latest after :data:`~.rekey.REKEY_WAIT` seconds."""
        refusal = self.not_rekeyable()
        if refusal is not None:
            return PendingRekey.refused(self.name, refusal)
        pending = PendingRekey(self.name)
        loop = asyncio.get_running_loop()
        try:
            for kind in KINDS[target]:
                fut: asyncio.Future[Settled] = loop.create_future()
                self.waits.setdefault(kind, []).append(fut)
                pending.waits.append(fut)
                self.rekey_retries[kind] = 0
                if kind is SaKind.CHILD:
                    self.rekey_child()
                else:
                    self.rekey_ike()
        except CommandRefused as exc:
            self._drop_waits(pending.waits)
            return PendingRekey.refused(self.name, str(exc))
        host = self.host
        pending.timer = host.scheduler.call_at(
            host.now() + REKEY_WAIT, lambda: self._rekey_overdue(pending)
        )
        return pending

    def _rekey_overdue(self, pending: PendingRekey) -> None:
        self._drop_waits(pending.waits)
        for fut in pending.waits:
            if not fut.done():
                fut.set_result(Settled(False, f"rekey did not finish within {REKEY_WAIT:g} s"))

    def _drop_waits(self, futures: Sequence[asyncio.Future[Settled]]) -> None:
        for waits in self.waits.values():
            waits[:] = [f for f in waits if f not in futures]

    def settle(self, kind: SaKind, detail: str, ok: bool = True) -> None:
        """Every wait of a Rekey call for the SA of ``kind`` ends: the SA it waited for
        was replaced by a newer one (``ok``), or is gone or could not be replaced."""
        for fut in self.waits.pop(kind, []):
            if not fut.done():
                fut.set_result(Settled(ok, detail))

    def _retry_rekey_later(self, kind: SaKind, old: bytes) -> float | None:
        """Our rekey of the SA of ``kind`` (``old``: the child's spi_in, the IKE SA's
        local SPI) was refused for now (RFC 7296 section 2.25: the peer is rekeying or
        deleting it, or has another exchange in flight): try again after a back-off,
        unless the retries are used up (then None). The peer's own exchange usually
        settles it first; the retry then finds the SA replaced and is not sent."""
        done = self.rekey_retries.get(kind, 0)
        if done >= REKEY_RETRIES:
            return None
        host = self.host
        delay = REKEY_RETRY_FIRST * 2**done * host.rng.uniform(1.0, 1.5)
        self.rekey_retries[kind] = done + 1
        self._cancel_rekey_retry(kind)
        self.rekey_retry_timers[kind] = host.scheduler.call_at(
            host.now() + delay, lambda: self._retry_rekey(kind, old)
        )
        return delay

    def _cancel_rekey_retry(self, kind: SaKind) -> None:
        handle = self.rekey_retry_timers.pop(kind, None)
        if handle is not None:
            handle.cancel()

    def _retry_rekey(self, kind: SaKind, old: bytes) -> None:
        self.rekey_retry_timers.pop(kind, None)
        if not self._live():
            return
        current = self._current_spi(kind)
        if current is None:
            return  # gone: settled as failed when it went
        if current != old:
            what = f"child {current.hex()}" if kind is SaKind.CHILD else f"IKE {current.hex()}"
            self.settle(kind, f"{what} (rekeyed by the peer)")
            return
        try:
            if kind is SaKind.CHILD:
                self.rekey_child()
            else:
                self.rekey_ike()
        except CommandRefused as exc:
            self.settle(kind, str(exc), ok=False)

    def _current_spi(self, kind: SaKind) -> bytes | None:
        """What identifies the SA of ``kind`` in force: the child's spi_in, the IKE SA's
        initiator SPI; None when there is none."""
        if kind is SaKind.CHILD:
            return self.child.spi_in if self.child is not None else None
        sa = self.ike
        return sa.spi_i if sa is not None and established(sa) else None

    # -- liveness on request ---------------------------------------------------------------------

    def check_liveness(self, fut: asyncio.Future[str]) -> str | None:
        """Send an empty INFORMATIONAL request (RFC 7296 section 1.4) now; ``fut`` is
        resolved when it is answered or cannot be. Returns why it cannot be sent."""
        refusal = self.not_rekeyable()
        sa = self.ike
        if refusal is not None or sa is None:
            return refusal or "peer is not up"
        self.liveness_waits.append(fut)
        try:
            sa.check_liveness(self.host.now())
        except CommandRefused as exc:
            return str(exc)
        self._service(sa)
        return None

    def answer_liveness(self, detail: str) -> None:
        """Every liveness check waiting on the peer ends with ``detail``
        (:data:`~.rekey.LIVENESS_ANSWERED`, or why no answer can come)."""
        waits, self.liveness_waits = self.liveness_waits, []
        for fut in waits:
            if not fut.done():
                fut.set_result(detail)

    # -- status --------------------------------------------------------------------------------

    def report(self, stats: Mapping[tuple[int, str], SaStats]) -> IkeSaReport:
        sa = self.ike
        if sa is not None and sa.last_heard is not None:
            mono, wall = self.host.now(), self.host.wall()
            self.last_liveness_at = wall - (mono - sa.last_heard)
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
                ike_version=self.peer.ike_version,
            )
        state = "established" if established(sa) else str(sa.state.value)
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
            ike_version=self.peer.ike_version,
        )
