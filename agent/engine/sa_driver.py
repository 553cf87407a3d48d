"""One IKE SA on the engine's clock and sockets: the asyncio adapter around a sans-I/O
IKE core of either version (:class:`~.core.IkeCore`: the IKEv2 ``IkeSa`` or the IKEv1
``IkeV1Sa``), aioquic's protocol-per-connection.

An :class:`SaDriver` feeds the SA its datagrams and timer expiries, flushes what the SA
queued to send, re-arms the SA's one timer from ``get_timer()`` after every input, and
turns each event the SA reports into one call on the :class:`SaOwner` (the peer's
driver) that owns it. An SA with no owner (its peer left the plan) only finishes its
delete. Everything an SA driver needs of the engine is the narrow :class:`SaHost`.
"""

from __future__ import annotations

import dataclasses
from typing import Protocol

from ..ike.events import (
    ChildSaDeleted,
    ChildSaEstablished,
    ChildSaFailed,
    ChildSaRekeyed,
    IkeEvent,
    IkeSaDeleted,
    IkeSaEstablished,
    IkeSaFailed,
    IkeSaRekeyed,
    IkeSaRekeyFailed,
    LivenessAnswered,
    PeerErrorNotify,
)
from ..io.udp import Address
from .clock import Scheduler, TimerHandle
from .core import IkeCore
from .keylog import KeyLog
from .untrusted import printable


class SaOwner(Protocol):
    """What an IKE SA's events become: calls on the driver of the peer that owns it."""

    @property
    def name(self) -> str: ...

    def on_ike_up(self, driver: SaDriver, event: IkeSaEstablished) -> None: ...

    def on_ike_rekeyed(self, old: SaDriver, new: SaDriver, event: IkeSaRekeyed) -> None: ...

    def on_ike_gone(self, driver: SaDriver, reason: str, *, failed: bool) -> None: ...

    def on_ike_rekey_failed(self, driver: SaDriver, event: IkeSaRekeyFailed) -> None: ...

    def on_child_up(self, driver: SaDriver, event: ChildSaEstablished) -> None: ...

    def on_child_rekeyed(self, driver: SaDriver, event: ChildSaRekeyed) -> None: ...

    def on_child_deleted(self, event: ChildSaDeleted) -> None: ...

    def on_child_failed(self, event: ChildSaFailed) -> None: ...

    def on_peer_error(self, event: PeerErrorNotify) -> None: ...

    def on_liveness_answered(self) -> None: ...

    def on_closed(self, driver: SaDriver) -> None:
        """The SA is closed and forgotten: the owner lets go of it."""

    def after_input(self, driver: SaDriver) -> None:
        """The SA took an input and its events were handled: deadlines the SA keeps
        (an IKEv1 ISAKMP SA's ``rekey_due``) may have moved."""


class SaHost(Protocol):
    """What an SA driver needs of the engine: its clocks, its sockets and its registry
    of SAs by SPI."""

    stopped: bool
    keylog: KeyLog | None

    @property
    def scheduler(self) -> Scheduler: ...

    def now(self) -> float: ...

    def wall(self) -> float: ...

    def send_ike(self, driver: SaDriver, data: bytes, addr: Address) -> None:
        """Send one datagram ``driver``'s SA queued (the port follows the SA's NAT-T)."""

    def adopt(self, sa: IkeCore, owner: SaOwner | None) -> SaDriver:
        """Route datagrams for ``sa``'s SPI to a new driver owned by ``owner``."""

    def forget(self, driver: SaDriver) -> None:
        """``driver``'s SA is closed: no more routing to it."""

    def event_failed(self, driver: SaDriver, event: IkeEvent) -> None:
        """Handling ``event`` raised (our own bug): logged with its traceback, counted."""


_WITH_REASON = (IkeSaFailed, IkeSaDeleted, ChildSaFailed, ChildSaDeleted, PeerErrorNotify)


class SaDriver:
    """Drives one IKE SA: input in, datagrams out, one timer, events to its owner."""

    __slots__ = ("_due", "_timer", "created", "host", "last_port", "owner", "sa")

    def __init__(self, sa: IkeCore, owner: SaOwner | None, host: SaHost) -> None:
        self.sa = sa
        self.owner = owner
        """The peer's driver; None once its peer left the plan (the SA finishes its delete)."""
        self.host = host
        self.created = host.now()
        """When the SA was created here (the engine's monotonic clock)."""
        self.last_port = 0
        """Our local port the SA's last datagram arrived on (500 or 4500, RFC 3948)."""
        self._timer: TimerHandle | None = None
        self._due: float | None = None

    def __repr__(self) -> str:
        return f"SaDriver({self.sa!r}, owner={self.owner.name if self.owner else None})"

    # -- input ----------------------------------------------------------------------------

    def receive(self, data: bytes, addr: Address, local_port: int) -> None:
        """A datagram routed here by our SPI."""
        self.last_port = local_port
        host = self.host
        self.sa.receive_datagram(data, addr, host.now(), host.wall())
        self.service()

    def _on_timer(self) -> None:
        self._timer = self._due = None
        self.sa.handle_timer(self.host.now())
        self.service()

    # -- output ---------------------------------------------------------------------------

    def service(self) -> None:
        """After any input: send what the SA queued, hand its events to the owner, re-arm
        its timer (or forget it once closed)."""
        host = self.host
        sa = self.sa
        for data, addr in sa.datagrams_to_send(host.now()):
            host.send_ike(self, data, addr)
        while (event := sa.next_event()) is not None:
            try:
                self._handle(event)
            except Exception:
                host.event_failed(self, event)
        if self.owner is not None and not sa.is_closed:
            self.owner.after_input(self)
        self.arm()

    def _handle(self, event: IkeEvent) -> None:
        if isinstance(event, _WITH_REASON):
            # A reason may quote what the other end sent (the identity it claims …).
            event = dataclasses.replace(event, reason=printable(event.reason))
        if isinstance(event, IkeSaRekeyed):
            self._rekeyed(event)
            return
        owner = self.owner
        if owner is None:
            return  # an SA of a removed peer finishing its delete
        match event:
            case IkeSaEstablished():
                owner.on_ike_up(self, event)
            case ChildSaEstablished():
                owner.on_child_up(self, event)
            case ChildSaRekeyed():
                owner.on_child_rekeyed(self, event)
            case ChildSaDeleted():
                owner.on_child_deleted(event)
            case ChildSaFailed():
                owner.on_child_failed(event)
            case IkeSaFailed():
                owner.on_ike_gone(self, event.reason, failed=True)
            case IkeSaDeleted():
                owner.on_ike_gone(self, event.reason, failed=False)
            case IkeSaRekeyFailed():
                owner.on_ike_rekey_failed(self, event)
            case PeerErrorNotify():
                owner.on_peer_error(event)
            case LivenessAnswered():
                owner.on_liveness_answered()

    def _rekeyed(self, event: IkeSaRekeyed) -> None:
        """RFC 7296 section 2.18: the new IKE SA takes over; it gets a driver of its own,
        under the same owner, answering on the same port."""
        host, owner = self.host, self.owner
        new = host.adopt(event.new_sa, owner)
        if host.keylog is not None:
            host.keylog.ike_sa(owner.name if owner else "-", "rekeyed", new.sa)
        if self.last_port:
            new.last_port = self.last_port
        if owner is not None:
            owner.on_ike_rekeyed(self, new, event)
        new.service()

    def arm(self) -> None:
        """Re-arm the one timer from the SA's deadline; a closed SA is forgotten."""
        sa = self.sa
        if sa.is_closed:
            self.cancel_timer()
            self.host.forget(self)
            if self.owner is not None:
                self.owner.on_closed(self)
            return
        deadline = sa.get_timer()
        if self._timer is not None:
            if self._due == deadline:
                return
            self._timer.cancel()
            self._timer = self._due = None
        if deadline is not None and not self.host.stopped:
            self._timer = self.host.scheduler.call_at(deadline, self._on_timer)
            self._due = deadline

    def cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._due = None
