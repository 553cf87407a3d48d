"""What child SA events do to the data plane (mixed into the Engine).

IKE reports, the data plane follows: a child SA is installed as IKE reports it (SPIs,
keys, selectors, encapsulation), rekeyed make-before-break (RFC 7296 section 2.8: the
initiator of the rekey switches its outbound SA at once, the responder when the old
SA's delete arrives), and removed when IKE deletes it. A new IKE SA replacing the one
that carries the child hands the child over the same way.
"""

from __future__ import annotations

import contextlib
import logging

from ..esp.sa import Mode as EspMode
from ..ike.child_sa import ChildSaState
from ..ike.constants import NotifyType
from ..ike.events import ChildSaDeleted, ChildSaEstablished, ChildSaFailed, ChildSaRekeyed
from ..ike.ike_sa import IkeSa
from ..io.dataplane import DataPlane, RawEspSender
from . import translate
from .keylog import KeyLog
from .rekey import RekeyScheduling
from .session import ChildRecord, PeerSession, PeerState, SaKind

log = logging.getLogger(__name__)

RETRYABLE_REFUSALS = frozenset({NotifyType.TEMPORARY_FAILURE, NotifyType.CHILD_SA_NOT_FOUND})
"""Refusals of a child rekey that a collision produces (RFC 7296 section 2.25.1): the
peer is rekeying or deleting that SA (or rekeying the IKE SA), or has just replaced it."""

ACTIVATE_WAIT = 2.0
"""Seconds the responder of a new IKE SA replacing ours keeps sending on the old child
when the peer does not delete the old SA (within the old inbound SA's grace period)."""


class ChildSaInstallation(RekeyScheduling):
    """Child SAs installed, handed over, rekeyed and removed in the data plane;
    :class:`~.engine.Engine` provides the state and the I/O these methods use."""

    dp: DataPlane | None
    raw: RawEspSender | None
    keylog: KeyLog | None

    def _delete_sa(self, sa: IkeSa) -> None:
        raise NotImplementedError

    # -- child SA events ------------------------------------------------------------------

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
        if old is not None:
            # The child a Rekey call waits for was replaced with a new IKE SA's (the
            # peer restarted, or the tunnel was re-established): that is its rekey.
            why = "the peer restarted" if session.peer_holds_nothing else "re-established"
            self._settle(
                session.name,
                SaKind.CHILD,
                f"child {event.spi_in.hex()} (replaced with a new IKE SA: {why})",
            )
        session.peer_holds_nothing = False
        if session.activation_timer is not None:
            session.activation_timer.cancel()
            session.activation_timer = None
        session.state = PeerState.UP
        session.attempts = 0
        session.note_error("", self._wall())
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
        child = session.child
        if not ours:
            if session.rekeying_child == event.old_spi_in:
                answered = sa.children.get(event.old_spi_in)
                if answered is not None and answered.state is ChildSaState.REKEYING:
                    return  # crossing rekeys (2.8.1): ours is in flight and decides
                # Our rekey was still queued: the peer's went first and ours will not go
                # out (no crossing, section 2.8.1).
                session.rekeying_child = None
            elif session.rekeying_child is not None:
                return  # ours, of another SA, is in flight
            if child is not None and child.spi_in != event.old_spi_in:
                # Also while a refused rekey of ours waits for its retry: the SA is
                # replaced, whoever made the new one.
                self._settle(
                    session.name, SaKind.CHILD, f"child {child.spi_in.hex()} (rekeyed by the peer)"
                )
            return
        if child is None:
            self._settle(session.name, SaKind.CHILD, "no child SA left", ok=False)
        elif event.redundant:
            kept = f"child {child.spi_in.hex()} (the peer's simultaneous rekey was kept)"
            self._settle(session.name, SaKind.CHILD, kept)
        else:
            self._settle(session.name, SaKind.CHILD, f"child {event.new.spi_in.hex()}")

    def _on_child_failed(self, session: PeerSession, event: ChildSaFailed) -> None:
        rekeying, session.rekeying_child = session.rekeying_child, None
        child = session.child
        if rekeying is None:
            session.note_error(event.reason, self._wall())
            self._publish("child_failed", session.name, event.reason)
            return
        if child is not None and child.spi_in != rekeying:
            # The peer's rekey of the same SA went first and ours was refused: the
            # child is rekeyed all the same.
            self._publish(
                "child_rekey_refused", session.name, f"{event.reason} (rekeyed by the peer)"
            )
            detail = f"child {child.spi_in.hex()} (rekeyed by the peer; ours: {event.reason})"
            self._settle(session.name, SaKind.CHILD, detail)
            return
        if child is not None and event.notify in RETRYABLE_REFUSALS:
            delay = self._retry_rekey_later(session, SaKind.CHILD, rekeying)
            if delay is not None:
                # Section 2.25: refused while a collision settles; the peer's own
                # exchange usually replaces the SA before the retry is due.
                self._publish(
                    "child_rekey_refused", session.name, f"{event.reason}; again in {delay:.1f} s"
                )
                return
        session.note_error(event.reason, self._wall())
        self._publish("child_failed", session.name, event.reason)
        self._settle(session.name, SaKind.CHILD, event.reason, ok=False)

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
        self._remove_child(session, f"child SA deleted ({event.reason}), no new one")
        self._publish("child_down", session.name, event.reason)

    def _remove_child(self, session: PeerSession, reason: str) -> None:
        """The child goes from the data plane; a Rekey call waiting for it fails with
        ``reason``."""
        self._settle(session.name, SaKind.CHILD, reason, ok=False)
        session.child = None
        session.rekeying_child = session.awaiting_activation = None
        if session.activation_timer is not None:
            session.activation_timer.cancel()
            session.activation_timer = None
        if session.child_timer is not None:
            session.child_timer.cancel()
            session.child_timer = None
        self._cancel_rekey_retry(session, SaKind.CHILD)
        if self.dp is not None:
            with contextlib.suppress(ValueError):
                self.dp.remove_child_sa(session.name)
