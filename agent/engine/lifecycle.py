"""What IKE events do to the peer sessions (mixed into the Engine).

Every event an IKE SA reports is dispatched here. An IKE SA coming up schedules its rekey
and, behind a NAT, its keepalives; two live IKE SAs for one peer are reduced to one; the
new IKE SA of a rekey takes the old one's place, with a fresh rekey timer; an IKE SA
that fails or dies hands its peer to the retry back-off. What child SA events do to the
data plane is in :mod:`.child_sas`, the rekey timers in :mod:`.rekey`.
"""

from __future__ import annotations

import dataclasses

from ..ike.admission import LogLimiter
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
from ..ike.ike_sa import IkeSa
from ..ike.states import IkeSaState
from ..io.udp import Address
from ..sink import NatState
from .child_sas import ChildSaInstallation
from .rekey import LIVENESS_ANSWERED
from .session import PeerSession, PeerState, SaKind, nat_state
from .untrusted import printable

NAT_NOTES = {
    NatState.UNSPECIFIED: "",
    NatState.NONE: "",
    NatState.DETECTED: " (NAT detected: UDP 4500)",
    NatState.FORCED: " (UDP 4500 forced, no NAT in sight)",
}
"""What the ike_up event and log line say of NAT (RFC 7296 section 2.23)."""

_WITH_REASON = (IkeSaFailed, IkeSaDeleted, ChildSaFailed, ChildSaDeleted, PeerErrorNotify)


class SaLifecycle(ChildSaInstallation):
    """IKE event handling; :class:`~.engine.Engine` provides the state and the I/O these
    methods use (child SAs and rekey timers come from the mixins this one extends)."""

    _last_port: dict[IkeSa, int]
    _created: dict[IkeSa, float]
    """When each IKE SA was created here (monotonic)."""
    untrusted_log: LogLimiter

    def _owner_of(self, sa: IkeSa) -> PeerSession | None:
        raise NotImplementedError

    def _adopt(self, sa: IkeSa, session: PeerSession | None) -> None:
        raise NotImplementedError

    def _schedule_retry(self, session: PeerSession, reason: str) -> None:
        raise NotImplementedError

    def _nat_keepalive(self, addr: Address, on: bool) -> None:
        raise NotImplementedError

    # -- IKE events -----------------------------------------------------------------------

    def _handle_event(self, sa: IkeSa, event: IkeEvent) -> None:
        session = self._owner_of(sa)
        if isinstance(event, _WITH_REASON):
            # A reason may quote what the other end sent (the identity it claims …).
            event = dataclasses.replace(event, reason=printable(event.reason))
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
        elif isinstance(event, IkeSaRekeyFailed):
            self._publish("peer_error", session.name, event.reason)
            self._on_ike_rekey_failed(sa, session, event)
        elif isinstance(event, PeerErrorNotify):
            self._publish("peer_error", session.name, event.reason)
        elif isinstance(event, LivenessAnswered):
            self._answer_liveness(session.name, LIVENESS_ANSWERED)

    def _on_ike_up(self, sa: IkeSa, session: PeerSession, event: IkeSaEstablished) -> None:
        if self.keylog is not None:
            self.keylog.ike_sa(session.name, "established", sa)
        current = session.ike
        replaced = current is not None and current is not sa and not current.is_closed
        if current is not sa:
            if current is None or current.is_closed or current in session.replacing:
                # A replacement we were waiting for (the plan changed here too).
                session.ike = sa
            else:
                self._resolve_duplicate(session, current, sa)
                if session.ike is not sa:
                    return
        session.peer_holds_nothing = event.initial_contact
        if replaced:
            # A Rekey call waiting for the IKE SA in force: a newer one replaces it.
            why = "the peer restarted" if event.initial_contact else "re-established"
            self._settle(
                session.name,
                SaKind.IKE,
                f"IKE {sa.spi_i.hex()}_i (replaced with a new IKE SA: {why})",
            )
        session.ike_established_at = self._wall()
        session.ike_established_mono = self.now()
        session.ike_rekeyed_at = 0.0
        self._schedule_ike_rekey(session)
        if event.nat_local and sa.peer is not None:
            # RFC 3948 section 4: the side behind the NAT keeps its mapping open.
            session.keepalive_to = sa.peer
            self._nat_keepalive(sa.peer, True)
        nat = NAT_NOTES[nat_state(sa, session.peer)]
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
            self._settle(session.name, SaKind.IKE, f"IKE {new.spi_i.hex()}_i")
        self._service(new)

    def _on_ike_gone(self, sa: IkeSa, session: PeerSession, reason: str, *, failed: bool) -> None:
        if sa in session.replacing:
            session.replacing.remove(sa)
            if session.ike is not sa:
                return
        if session.ike is not sa:
            if failed and not sa.is_initiator and sa.remote_identity is None:
                self._failed_unauthenticated(sa, session, reason)
            elif failed:
                session.note_error(reason, self._wall())
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
            self._remove_child(session, f"IKE SA gone: {reason}")
        dead = reason.startswith("peer dead")
        event = "ike_failed" if failed else "peer_dead" if dead else "ike_down"
        self._publish(event, session.name, reason)
        for kind in SaKind:
            self._settle(session.name, kind, f"IKE SA gone: {reason}", ok=False)
        self._answer_liveness(session.name, f"IKE SA gone: {reason}")
        if failed or dead or reason != "deleted by peer":
            self._schedule_retry(session, reason)
        else:
            session.state = PeerState.IDLE
            session.note_error(reason, self._wall())
            if session.always_on and session.initiates:
                self._schedule_retry(session, reason)

    def _failed_unauthenticated(self, sa: IkeSa, session: PeerSession, reason: str) -> None:
        """An IKE SA the other side started failed before it authenticated (a wrong key or
        proposals, or anyone at all: a stranger's IKE_SA_INIT from the peer's address, or
        routed to the plan's one NAT peer). Counted and reported at a bounded rate, never
        as the peer's ``last_error``: the peer's tunnel is not concerned."""
        session.unauthenticated_failures += 1
        source = f"{sa.peer[0]}:{sa.peer[1]}" if sa.peer is not None else "an unknown address"
        session.last_unauthenticated_failure = f"from {source}: {reason}"
        left_out = self.untrusted_log.admit(session.name, self.now())
        if left_out is None:
            return
        more = f" ({left_out} more since the last report)" if left_out else ""
        self._publish(
            "ike_failed_unauthenticated",
            session.name,
            f"IKE SA from {source} failed before authentication: {reason}{more}",
        )
