"""What IKE events do to the data plane and the peer sessions (mixed into the Engine).

IKE reports, the data plane follows: a child SA is installed as IKE reports it (SPIs,
keys, selectors, encapsulation), rekeyed make-before-break (RFC 7296 section 2.8: the
initiator of the rekey switches its outbound SA at once, the responder when the old
SA's delete arrives), and removed when IKE deletes it. Rekeys are scheduled before
expiry with jitter (and on request, for Rekey); an IKE SA that fails or dies hands its
peer to the retry back-off.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable, Sequence

from ..esp.sa import Mode as EspMode
from ..ike.child_sa import ChildSaState
from ..ike.errors import LocalError
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
    PeerErrorNotify,
)
from ..ike.ike_sa import IkeSa
from ..ike.states import IkeSaState
from ..io.dataplane import DataPlane, RawEspSender
from ..io.udp import Address
from ..sink import RekeyOutcome, RekeyTarget
from . import translate
from .clock import Scheduler
from .keylog import KeyLog
from .session import ChildRecord, PeerSession, PeerState

log = logging.getLogger(__name__)

REKEY_WAIT = 15.0
"""Seconds a Rekey call waits for the exchange to finish before answering."""
ACTIVATE_WAIT = 2.0
"""Seconds the responder of a new IKE SA replacing ours keeps sending on the old child
when the peer does not delete the old SA (within the old inbound SA's grace period)."""


class SaLifecycle:
    """IKE event handling and rekey scheduling; :class:`~.engine.Engine` provides the
    state and the I/O these methods use."""

    dp: DataPlane | None
    raw: RawEspSender | None
    sessions: dict[str, PeerSession]
    _rng: random.Random
    _wall: Callable[[], float]
    _last_port: dict[IkeSa, int]
    stopped: bool
    _live: bool
    _waiters: dict[tuple[str, str], list[asyncio.Future[str]]]
    _created: dict[IkeSa, float]
    """When each IKE SA was created here (monotonic)."""
    keylog: KeyLog | None

    @property
    def scheduler(self) -> Scheduler:
        raise NotImplementedError

    def now(self) -> float:
        raise NotImplementedError

    def _owner_of(self, sa: IkeSa) -> PeerSession | None:
        raise NotImplementedError

    def _adopt(self, sa: IkeSa, session: PeerSession | None) -> None:
        raise NotImplementedError

    def _service(self, sa: IkeSa) -> None:
        raise NotImplementedError

    def _delete_sa(self, sa: IkeSa) -> None:
        raise NotImplementedError

    def _schedule_retry(self, session: PeerSession, reason: str) -> None:
        raise NotImplementedError

    def _publish(self, kind: str, peer: str, detail: str) -> None:
        raise NotImplementedError

    def _nat_keepalive(self, addr: Address, on: bool) -> None:
        raise NotImplementedError

    def _resolve_waiters(self, peer: str, kind: str, detail: str, ok: bool = True) -> None:
        raise NotImplementedError

    # -- IKE events -----------------------------------------------------------------------

    def _handle_event(self, sa: IkeSa, event: IkeEvent) -> None:
        session = self._owner_of(sa)
        if isinstance(event, IkeSaRekeyed):
            self._on_ike_rekeyed(sa, session, event)
            return
        if session is None:
            return  # an SA of a removed peer finishing its delete
        if isinstance(event, IkeSaEstablished):
            self._on_ike_up(sa, session, event)
        elif isinstance(event, ChildSaEstablished):
            self._on_child_up(sa, session, event)
        elif isinstance(event, ChildSaRekeyed):
            self._on_child_rekeyed(sa, session, event)
        elif isinstance(event, ChildSaDeleted):
            self._on_child_deleted(session, event)
        elif isinstance(event, ChildSaFailed):
            self._on_child_failed(session, event)
        elif isinstance(event, IkeSaFailed):
            self._on_ike_gone(sa, session, event.reason, failed=True)
        elif isinstance(event, IkeSaDeleted):
            self._on_ike_gone(sa, session, event.reason, failed=False)
        elif isinstance(event, PeerErrorNotify):
            self._publish("peer_error", session.name, event.reason)

    def _on_ike_up(self, sa: IkeSa, session: PeerSession, event: IkeSaEstablished) -> None:
        if self.keylog is not None:
            self.keylog.ike_sa(session.name, "established", sa)
        current = session.ike
        if current is not sa:
            if current is None or current.is_closed or current in session.replacing:
                # A replacement we were waiting for (the plan changed here too).
                session.ike = sa
            else:
                self._resolve_duplicate(session, current, sa)
                if session.ike is not sa:
                    return
        session.peer_holds_nothing = event.initial_contact
        session.ike_established_at = self._wall()
        session.ike_established_mono = self.now()
        session.ike_rekeyed_at = 0.0
        self._schedule_ike_rekey(session)
        if event.nat_local and sa.peer is not None:
            # RFC 3948 section 4: the side behind the NAT keeps its mapping open.
            session.keepalive_to = sa.peer
            self._nat_keepalive(sa.peer, True)
        nat = " (NAT detected: UDP 4500)" if sa.encap else ""
        self._publish(
            "ike_up",
            session.name,
            f"{event.proposal} {sa.spi_i.hex()}_i {sa.spi_r.hex()}_r{nat}",
        )

    def _resolve_duplicate(self, session: PeerSession, current: IkeSa, new: IkeSa) -> None:
        """Two live IKE SAs for one peer. Crossed set-ups keep, on both sides, the one
        with the larger initiator SPI; otherwise the new one replaces the old. Only SAs
        of opposite roles can have crossed; two we answered mean the peer started again.
        """
        # Set-ups that overlapped crossed (both sides initiated at once): both sides
        # then keep the same SA. One started after ours was up replaces it: the peer
        # restarted, or a changed plan re-established it.
        crossed = current.is_initiator != new.is_initiator and (
            current.state is not IkeSaState.ESTABLISHED
            or self._created.get(new, 0.0) < session.ike_established_mono
        )
        if crossed and current.spi_i > new.spi_i:
            # The current one stays and keeps (or will get) the child: drop the new now.
            self._delete_sa(new)
            return
        session.ike = new
        if current not in session.replacing:
            session.replacing.append(current)

    def _on_child_up(self, sa: IkeSa, session: PeerSession, event: ChildSaEstablished) -> None:
        assert self.dp is not None
        if session.ike is not sa:
            # A child on an SA we are about to drop; it goes with its SA.
            return
        remote = sa.peer[0] if sa.peer else str(session.peer.remote_addresses[0])
        inbound, outbound = translate.sa_params(
            event, translate.child_lifetime(session.peer), session.local, remote
        )
        dest, encap, path = translate.esp_path(sa.encap, sa.peer, remote, self.raw is not None)
        local = session.local if inbound.mode is EspMode.TRANSPORT else None
        old = session.child
        handover = (
            old is not None
            and old.path == (path, local)
            and old.mode == event.mode
            and any(s is not sa for s in session.replacing)
        )
        # A new IKE SA replacing the one that carries the child (a changed plan, new
        # credentials): the same make-before-break as a child rekey (RFC 7296 section
        # 2.8), the old inbound SA open through its grace period. Its initiator switches
        # outbound at once; its responder once the initiator surely holds the new SA:
        # the first packet arriving on it (the data plane switches), the old SA's delete,
        # or ACTIVATE_WAIT. A restarted peer, which holds no old SA, says so with
        # INITIAL_CONTACT (section 2.4): then the responder switches at once.
        wait = handover and not sa.is_initiator and not session.peer_holds_nothing
        if handover:
            try:
                self.dp.rekey_child_sa(
                    session.name,
                    inbound,
                    outbound,
                    local_ts=translate.esp_selectors(event.local_ts),
                    remote_ts=translate.esp_selectors(event.remote_ts),
                    switch_outbound=not wait,
                )
            except ValueError as exc:  # the data plane lost the old child meanwhile
                log.info("%s: installing the new child afresh: %s", session.name, exc)
                handover = wait = False
        if not handover:
            self.dp.install_child_sa(
                session.name,
                inbound,
                outbound,
                dest,
                encap=encap,
                local=local,
                local_ts=translate.esp_selectors(event.local_ts),
                remote_ts=translate.esp_selectors(event.remote_ts),
            )
        if self.keylog is not None:
            self.keylog.child_sa(session.name, "installed", inbound, outbound)
        session.child = ChildRecord(
            event.spi_in,
            event.spi_out,
            event.proposal,
            event.mode,
            translate.describe_selectors(event.local_ts),
            translate.describe_selectors(event.remote_ts),
            self._wall(),
            path=(path, local),
        )
        session.rekeying_child = session.awaiting_activation = None
        session.peer_holds_nothing = False
        if session.activation_timer is not None:
            session.activation_timer.cancel()
            session.activation_timer = None
        session.state = PeerState.UP
        session.attempts = 0
        session.last_error = ""
        session.replacement_pending = False
        self._schedule_child_rekey(session)
        self._publish(
            "child_up",
            session.name,
            f"{event.proposal} {event.mode} in {event.spi_in.hex()} out {event.spi_out.hex()}",
        )
        if wait:
            assert old is not None
            session.awaiting_activation = old.spi_in
            session.activation_timer = self.scheduler.call_at(
                self.now() + ACTIVATE_WAIT, lambda: self._activation_overdue(session)
            )
            return  # the old SAs go when the peer deletes them (or when overdue)
        self._delete_replaced(session, sa)

    def _delete_replaced(self, session: PeerSession, sa: IkeSa) -> None:
        for old in session.replacing:
            if old is not sa:
                self._delete_sa(old)
        session.replacing = [s for s in session.replacing if s is not sa and not s.is_closed]

    def _activate(self, session: PeerSession) -> None:
        session.awaiting_activation = None
        if session.activation_timer is not None:
            session.activation_timer.cancel()
            session.activation_timer = None
        if self.dp is not None:
            with contextlib.suppress(ValueError):
                self.dp.activate_outbound(session.name)

    def _activation_overdue(self, session: PeerSession) -> None:
        session.activation_timer = None
        if self.stopped or self.sessions.get(session.name) is not session:
            return
        if session.awaiting_activation is None or session.ike is None:
            return
        log.info("%s: the replaced IKE SA was not deleted by the peer in time", session.name)
        self._activate(session)
        self._delete_replaced(session, session.ike)

    def _on_child_rekeyed(self, sa: IkeSa, session: PeerSession, event: ChildSaRekeyed) -> None:
        ours = event.initiator and session.rekeying_child == event.old_spi_in
        if ours:
            session.rekeying_child = None  # the exchange we started is over
        self._follow_child_rekey(sa, session, event)
        if not ours and session.rekeying_child == event.old_spi_in:
            answered = sa.children.get(event.old_spi_in)
            if answered is None or answered.state is not ChildSaState.REKEYING:
                # Our rekey was still queued: the peer's went first and ours will not go
                # out (no crossing, section 2.8.1); the child is rekeyed all the same.
                session.rekeying_child = None
                child = session.child
                spi = child.spi_in.hex() if child is not None else event.new.spi_in.hex()
                self._resolve_waiters(session.name, "child", f"child {spi} (rekeyed by the peer)")
            return
        if not ours:
            return  # a Rekey call waits for its own exchange, not for one it answered
        child = session.child
        if child is None:
            self._resolve_waiters(session.name, "child", "no child SA left", ok=False)
        elif event.redundant:
            kept = f"child {child.spi_in.hex()} (the peer's simultaneous rekey was kept)"
            self._resolve_waiters(session.name, "child", kept)
        else:
            self._resolve_waiters(session.name, "child", f"child {event.new.spi_in.hex()}")

    def _on_child_failed(self, session: PeerSession, event: ChildSaFailed) -> None:
        rekeying, session.rekeying_child = session.rekeying_child, None
        session.last_error = event.reason
        self._publish("child_failed", session.name, event.reason)
        if rekeying is None:
            return
        child = session.child
        if child is not None and child.previous is not None and child.previous[0] == rekeying:
            # The peer's rekey of the same SA went first and ours was refused: the
            # child is rekeyed all the same.
            detail = f"child {child.spi_in.hex()} (rekeyed by the peer; ours: {event.reason})"
            self._resolve_waiters(session.name, "child", detail)
        else:
            self._resolve_waiters(session.name, "child", event.reason, ok=False)

    def _follow_child_rekey(self, sa: IkeSa, session: PeerSession, event: ChildSaRekeyed) -> None:
        assert self.dp is not None
        old = event.old_spi_in
        child = session.child
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
                session.name,
                event.new.spi_in.hex(),
                old.hex(),
            )
            return
        new = event.new
        remote = sa.peer[0] if sa.peer else str(session.peer.remote_addresses[0])
        inbound, outbound = translate.sa_params(
            new, translate.child_lifetime(session.peer), session.local, remote
        )
        # Section 2.8: the initiator moves outbound traffic at once, the responder when
        # the old SA's delete shows the initiator holds the new SA. After a crossing
        # this is our winning SA; the peer's, installed first, is retired here.
        self.dp.rekey_child_sa(
            session.name,
            inbound,
            outbound,
            local_ts=translate.esp_selectors(new.local_ts),
            remote_ts=translate.esp_selectors(new.remote_ts),
            switch_outbound=event.initiator,
        )
        if self.keylog is not None:
            self.keylog.child_sa(session.name, "rekeyed", inbound, outbound)
        session.awaiting_activation = None if event.initiator else old
        child.previous = (old, event.old_spi_out)
        child.spi_in, child.spi_out, child.proposal = new.spi_in, new.spi_out, new.proposal
        child.rekeyed_at = self._wall()
        self._schedule_child_rekey(session)
        self._publish(
            "child_rekeyed",
            session.name,
            f"{event.old_spi_in.hex()} -> {new.spi_in.hex()} (out {new.spi_out.hex()})",
        )

    def _on_child_deleted(self, session: PeerSession, event: ChildSaDeleted) -> None:
        if session.awaiting_activation == event.spi_in and self.dp is not None:
            # The rekey's initiator (or the new IKE SA's) deleted the old SA: it surely
            # has the new inbound SA.
            self._activate(session)
            return
        child = session.child
        if child is None or child.spi_in != event.spi_in:
            return  # an SA replaced by a rekey or a newer IKE SA
        previous = child.previous
        if (
            previous is not None
            and session.rekeying_child == previous[0]
            and session.awaiting_activation == previous[0]
        ):
            # The peer's SA, answered while our rekey of the same SA crossed it, lost
            # (section 2.8.1) and went before our own exchange ended: ours will replace
            # the old SA, which still carries our outbound traffic meanwhile.
            child.spi_in, child.spi_out = previous
            child.previous = None
            session.awaiting_activation = None
            return
        self._remove_child(session)
        self._publish("child_down", session.name, event.reason)

    def _remove_child(self, session: PeerSession) -> None:
        session.child = None
        session.rekeying_child = session.awaiting_activation = None
        if session.activation_timer is not None:
            session.activation_timer.cancel()
            session.activation_timer = None
        if session.child_timer is not None:
            session.child_timer.cancel()
            session.child_timer = None
        if self.dp is not None:
            with contextlib.suppress(ValueError):
                self.dp.remove_child_sa(session.name)

    def _on_ike_rekeyed(self, sa: IkeSa, session: PeerSession | None, event: IkeSaRekeyed) -> None:
        new = event.new_sa
        self._adopt(new, session)
        if self.keylog is not None:
            self.keylog.ike_sa(session.name if session else "-", "rekeyed", new)
        if sa in self._last_port:
            self._last_port[new] = self._last_port[sa]
        if session is not None and event.carries_children and session.ike is sa:
            session.ike = new
            session.ike_rekeyed_at = self._wall()
            self._schedule_ike_rekey(session)
            self._publish(
                "ike_rekeyed",
                session.name,
                f"{sa.spi_i.hex()}_i -> {new.spi_i.hex()}_i {new.spi_r.hex()}_r",
            )
            self._resolve_waiters(session.name, "ike", f"IKE {new.spi_i.hex()}_i")
        self._service(new)

    def _on_ike_gone(self, sa: IkeSa, session: PeerSession, reason: str, *, failed: bool) -> None:
        if sa in session.replacing:
            session.replacing.remove(sa)
            if session.ike is not sa:
                return
        if session.ike is not sa:
            if failed:  # a responder SA that never came up (wrong key, proposals …)
                session.last_error = reason
                self._publish("ike_failed", session.name, reason)
            return
        fallback = next(
            (s for s in reversed(session.replacing) if s.state is IkeSaState.ESTABLISHED), None
        )
        if fallback is not None and session.child is not None:
            # Make-before-break failed to make: the old SA and its child stay in force.
            session.replacing.remove(fallback)
            session.ike = fallback
            session.replacement_pending = True
            self._publish("ike_failed", session.name, f"{reason} (previous SA kept)")
            self._schedule_retry(session, reason)
            session.state = PeerState.UP
            return
        session.ike = None
        if session.keepalive_to is not None:
            self._nat_keepalive(session.keepalive_to, False)
            session.keepalive_to = None
        if session.ike_timer is not None:
            session.ike_timer.cancel()
            session.ike_timer = None
        if session.child is not None:
            self._remove_child(session)
        dead = reason.startswith("peer dead")
        kind = "ike_failed" if failed else "peer_dead" if dead else "ike_down"
        self._publish(kind, session.name, reason)
        for key in ((session.name, "ike"), (session.name, "child")):
            self._resolve_waiters(*key, f"IKE SA gone: {reason}", ok=False)
        if failed or dead or reason != "deleted by peer":
            self._schedule_retry(session, reason)
        else:
            session.state = PeerState.IDLE
            session.last_error = reason
            if session.always_on and session.initiates:
                self._schedule_retry(session, reason)

    # -- rekey scheduling ---------------------------------------------------------------

    def _jittered(self, seconds: int, rand: int) -> float:
        """RFC 7296 section 2.8: rekey before expiry, at a random point so both sides do
        not start at once (strongSwan's rand_time)."""
        return max(1.0, seconds - self._rng.uniform(0, rand))

    def _schedule_ike_rekey(self, session: PeerSession) -> None:
        if session.ike_timer is not None:
            session.ike_timer.cancel()
        life = session.peer.lifetimes
        delay = self._jittered(life.ike_rekey_seconds, life.rand_seconds)
        session.next_ike_rekey_at = self._wall() + delay
        session.ike_timer = self.scheduler.call_at(
            self.now() + delay, lambda: self._timed_rekey(session, ike=True)
        )

    def _schedule_child_rekey(self, session: PeerSession) -> None:
        if session.child_timer is not None:
            session.child_timer.cancel()
        life = session.peer.lifetimes
        delay = self._jittered(life.child_rekey_seconds, life.rand_seconds)
        if session.child is not None:
            session.child.next_rekey_at = self._wall() + delay
        session.child_timer = self.scheduler.call_at(
            self.now() + delay, lambda: self._timed_rekey(session, ike=False)
        )

    def _timed_rekey(self, session: PeerSession, *, ike: bool) -> None:
        if ike:
            session.ike_timer = None
        else:
            session.child_timer = None
        if self.stopped or self.sessions.get(session.name) is not session:
            return
        try:
            if ike:
                self._rekey_ike(session)
            else:
                self._rekey_child(session)
        except LocalError as exc:
            log.info("%s: scheduled rekey postponed: %s", session.name, exc)
            # Busy (another exchange, a crossing rekey): try again shortly.
            handle = self.scheduler.call_at(
                self.now() + 5.0, lambda: self._timed_rekey(session, ike=ike)
            )
            if ike:
                session.ike_timer = handle
            else:
                session.child_timer = handle

    async def rekey(self, peers: Sequence[str], target: RekeyTarget) -> list[RekeyOutcome]:
        outcomes: list[RekeyOutcome] = []
        for name in peers:
            outcomes.append(await self._rekey_one(name, target))
        return outcomes

    async def _rekey_one(self, name: str, target: RekeyTarget) -> RekeyOutcome:
        session = self.sessions.get(name)
        refusal = self._not_rekeyable(session)
        if refusal is not None:
            return RekeyOutcome(name, False, refusal)
        assert session is not None
        waits: list[asyncio.Future[str]] = []
        loop = asyncio.get_running_loop()
        try:
            if target in (RekeyTarget.CHILD, RekeyTarget.BOTH):
                fut = loop.create_future()
                self._waiters.setdefault((name, "child"), []).append(fut)
                waits.append(fut)
                self._rekey_child(session)
            if target in (RekeyTarget.IKE, RekeyTarget.BOTH):
                fut = loop.create_future()
                self._waiters.setdefault((name, "ike"), []).append(fut)
                waits.append(fut)
                self._rekey_ike(session)
        except LocalError as exc:
            return RekeyOutcome(name, False, str(exc))
        if not self._live:
            return RekeyOutcome(name, True, "rekey started")
        try:
            details = await asyncio.wait_for(asyncio.gather(*waits), REKEY_WAIT)
        except TimeoutError:
            return RekeyOutcome(name, False, f"rekey did not finish within {REKEY_WAIT:g} s")
        ok = not any(d.startswith("failed:") for d in details)
        return RekeyOutcome(name, ok, "; ".join(details))

    @staticmethod
    def _not_rekeyable(session: PeerSession | None) -> str | None:
        """Why a Rekey of this peer cannot start, None when it can."""
        if session is None:
            return "peer is not up (not in the plan in force)"
        sa = session.ike
        if sa is None or sa.is_closed:
            return f"peer is not up ({session.state.value})"
        if sa.state is not IkeSaState.ESTABLISHED:
            return f"peer is not up (IKE SA {sa.state.value})"
        if session.child is None:
            why = f": {session.last_error}" if session.last_error else ""
            return f"IKE SA is up but no child SA is installed{why}"
        return None

    def _rekey_ike(self, session: PeerSession) -> None:
        sa = session.ike
        if sa is None:
            raise LocalError("no IKE SA")
        sa.rekey(self.now())
        self._service(sa)

    def _rekey_child(self, session: PeerSession) -> None:
        sa, child = session.ike, session.child
        if sa is None or child is None:
            raise LocalError("no child SA")
        home = sa.home
        home.rekey_child(child.spi_in, self.now())
        session.rekeying_child = child.spi_in
        self._service(home)
