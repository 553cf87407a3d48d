"""How a plan's peers come, change and go (mixed into the Engine).

A new plan is put in force as a difference (agent engine ``put_in_force``): a peer whose
change is this end's own business is updated in place (:func:`same_tunnel`); any other
change gives it a new session that takes over the old SAs, which stay in force until a
new IKE SA has its child (make-before-break); a removed peer's SAs are deleted. New IKE
credentials (a certificate rotation) re-establish the certificate peers the same way.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable

from ..ike.admission import HalfOpenTable
from ..ike.gate import IkeResponderGate
from ..ike.ike_sa import IkeSa
from ..ike.states import IkeSaState
from ..plan import AgentPlan, AuthMethod, Peer
from . import translate
from .lifecycle import SaLifecycle
from .session import PeerSession, PeerState

log = logging.getLogger(__name__)
INITIAL_CONTACT_DELAY = 2.0
"""Seconds a just-started responder waits for its peer before initiating itself."""


def same_tunnel(old: Peer, new: Peer) -> bool:
    """Whether ``new`` differs from ``old`` only in what this end decides alone: the
    liveness check (RFC 7296 section 2.4), lifetimes (not negotiated in IKEv2, section
    2.8), NAT keepalives (RFC 3948 section 4), whether an IKE_SA_INIT from an unknown
    address may be routed to the peer, and which CAs it accepts the peer's certificate
    from. Such a change needs no new SA."""
    auth = new.auth
    if old.auth.method is AuthMethod.PUBKEY and auth.method is AuthMethod.PUBKEY:
        auth = dataclasses.replace(
            auth,
            ca_fingerprint=old.auth.ca_fingerprint,
            accepted_ca_fingerprints=old.auth.accepted_ca_fingerprints,
        )
    local_only = dataclasses.replace(
        new,
        auth=auth,
        dpd=old.dpd,
        lifetimes=old.lifetimes,
        nat=dataclasses.replace(
            new.nat,
            keepalive_seconds=old.nat.keepalive_seconds,
            remote_behind_nat=old.nat.remote_behind_nat,
        ),
    )
    return local_only == old


class PeerChanges(SaLifecycle):
    """Peers added, changed and removed; :class:`~.engine.Engine` provides the state and
    the I/O these methods use."""

    plan: AgentPlan | None
    ike_credentials: translate.IkeCredentials | None
    _gates: dict[str, IkeResponderGate]
    half_open: HalfOpenTable
    _owner: dict[IkeSa, PeerSession | None]

    def _local_for(self, plan: AgentPlan, peer: Peer) -> str | None:
        raise NotImplementedError

    def _initiate(self, session: PeerSession) -> None:
        raise NotImplementedError

    def _initial_contact(self, session: PeerSession) -> None:
        raise NotImplementedError

    def _sas_of(self, session: PeerSession) -> list[IkeSa]:
        raise NotImplementedError

    def _arm(self, sa: IkeSa) -> None:
        raise NotImplementedError

    def _rebuild_address_map(self) -> None:
        raise NotImplementedError

    def _ike_port(self) -> int:
        raise NotImplementedError

    def _add_or_change_peer(
        self, plan: AgentPlan, peer: Peer, old: PeerSession | None, first: bool = False
    ) -> None:
        local = self._local_for(plan, peer)
        try:
            config = translate.ike_config(plan, peer, self.ike_credentials)
        except translate.PeerConfigError as exc:
            log.error("%s", exc)
            if old is not None:
                self._remove_peer(peer.name)
            session = PeerSession(peer, None, local)
            session.note_error(str(exc), self._wall())
            self.sessions[peer.name] = session
            self._publish("peer_error", peer.name, str(exc))
            return
        session = PeerSession(peer, config, local)
        self._gates[peer.name] = IkeResponderGate(
            config, local=(local, self._ike_port()) if local else None, table=self.half_open
        )
        if old is None:
            self.sessions[peer.name] = session
            self._publish("peer_added", peer.name, f"{peer.start_action.name.lower()}")
            if session.always_on and session.initiates:
                self._initiate(session)
            elif first and session.always_on:
                # Just started (a restart, say): the peer may still hold SAs with us that
                # we lost, and as the responder we would wait for its liveness check to
                # notice. Start once ourselves unless it does first (strongSwan's
                # INITIAL_CONTACT serves the same end).
                session.retry_timer = self.scheduler.call_at(
                    self.now() + INITIAL_CONTACT_DELAY, lambda: self._initial_contact(session)
                )
            return
        # Changed: the new session takes over the old SAs, which stay in force until the
        # new IKE SA has its child (make-before-break), then are deleted.
        old.cancel_timers()
        session.child = old.child
        session.ike = old.ike
        session.state = old.state
        session.replacing = [sa for sa in self._sas_of(old) if not sa.is_closed]
        for sa in session.replacing:
            self._owner[sa] = session
        self._carry_over(old, session)
        self.sessions[peer.name] = session
        self._publish("peer_changed", peer.name, "re-establishing")
        for sa in list(session.replacing):
            if sa.state is not IkeSaState.ESTABLISHED and not sa.is_initiator:
                # The peer's set-up in progress: most likely the peer got its new plan
                # first and is re-establishing with it. Deleting it would leave the
                # peer's IKE_AUTH unanswered until its retransmissions give up; it goes
                # on under the new configuration (read at IKE_AUTH, section 1.2).
                session.replacing.remove(sa)
                if session.ike is sa:
                    session.ike = None
                sa.config = config
                continue
            if sa.state is not IkeSaState.ESTABLISHED:
                # Not carrying traffic yet: no reason to keep it while the new one comes.
                session.replacing.remove(sa)
                if session.ike is sa:
                    session.ike = None
                self._delete_sa(sa)
        if session.ike is not None and session.ike not in session.replacing:
            session.replacing.append(session.ike)
        if session.initiates and (session.always_on or session.ike is not None):
            self._initiate(session)

    def _carry_over(self, old: PeerSession, session: PeerSession) -> None:
        """What the SAs a changed peer keeps (until it is re-established, or for good if
        the peer initiates and does not) still need: their history for status, and
        their rekeys at the times already drawn."""
        session.ike_established_at = old.ike_established_at
        session.ike_established_mono = old.ike_established_mono
        session.ike_rekeyed_at = old.ike_rekeyed_at
        session.next_ike_rekey_at = old.next_ike_rekey_at
        session.last_liveness_at = old.last_liveness_at
        session.unauthenticated_failures = old.unauthenticated_failures
        session.last_unauthenticated_failure = old.last_unauthenticated_failure
        session.keepalive_to = old.keepalive_to
        session.rekeying_child = old.rekeying_child
        session.awaiting_activation = old.awaiting_activation
        wall, now = self._wall(), self.now()
        sa = session.ike
        if sa is not None and sa.state is IkeSaState.ESTABLISHED and old.next_ike_rekey_at:
            delay = max(1.0, old.next_ike_rekey_at - wall)
            session.ike_timer = self.scheduler.call_at(
                now + delay, lambda: self._timed_rekey(session, ike=True)
            )
        child = session.child
        if child is not None and child.next_rekey_at:
            delay = max(1.0, child.next_rekey_at - wall)
            session.child_timer = self.scheduler.call_at(
                now + delay, lambda: self._timed_rekey(session, ike=False)
            )

    def _update_in_place(self, plan: AgentPlan, peer: Peer, session: PeerSession) -> bool:
        """Put a peer whose change is local (liveness checks, lifetimes, keepalives, the
        CAs it accepts, the plan's trust anchors) in force without touching its SAs:
        liveness timers follow at once, lifetimes apply to the SAs made from the next
        rekey on and trust to the next authentication (like a reloaded strongSwan
        connection).
        False when the new configuration cannot be made (the caller replaces the peer)."""
        try:
            config = translate.ike_config(plan, peer, self.ike_credentials)
        except translate.PeerConfigError:
            return False
        session.peer, session.config = peer, config
        gate = self._gates.get(peer.name)
        if gate is not None:
            gate.config = config
        for sa in self._sas_of(session):
            sa.config = config
            self._arm(sa)
        self._publish("peer_changed", peer.name, "updated in place (no new SA needed)")
        return True

    def _remove_peer(self, name: str) -> None:
        session = self.sessions.pop(name)
        session.cancel_timers()
        session.state = PeerState.DELETING
        self._gates.pop(name, None)
        if session.child is not None and self.dp is not None:
            self._remove_child(session, "peer removed from the plan")
        for sa in self._sas_of(session):
            self._owner[sa] = None
            self._delete_sa(sa)
        self._publish("peer_removed", name, "")

    # -- credential rotation -------------------------------------------------------------

    CREDENTIAL_HANDOVER_DELAY = 2.0
    """Seconds the plan's responder gives its peer to re-establish a certificate tunnel
    after our credentials changed, before starting the new IKE SA itself."""

    def replace_ike_credentials(self, credentials: translate.IkeCredentials) -> int:
        """Use ``credentials`` from now on and re-establish every certificate peer with
        them, make-before-break, as a changed peer (its SAs carry traffic until the new
        IKE SA has its child). PSK peers are not touched. Returns the number of
        certificate peers handed over.

        Where the plan makes the other side the initiator, the SA in force stays
        authenticated with our old certificate until a new one is made. The peer may be
        changing its credentials at the same moment and re-establish anyway (with our
        new certificate: the responder side already answers with it); both starting at
        once would cross (RFC 7296 section 2.8.1), so we start ourselves only if no new
        IKE SA came within :attr:`CREDENTIAL_HANDOVER_DELAY`."""
        self.ike_credentials = credentials
        plan = self.plan
        if plan is None or self.stopped:
            return 0
        count = 0
        changed_at = self.now()
        for peer in plan.peers:
            if peer.auth.method is not AuthMethod.PUBKEY:
                continue
            self._add_or_change_peer(plan, peer, self.sessions.get(peer.name))
            count += 1
            session = self.sessions[peer.name]
            current = session.ike
            if (
                session.config is not None
                and not session.initiates
                and current is not None
                and current.state is IkeSaState.ESTABLISHED
            ):
                if session.retry_timer is not None:
                    session.retry_timer.cancel()
                delay = self.CREDENTIAL_HANDOVER_DELAY * self._rng.uniform(0.9, 1.1)
                session.retry_timer = self.scheduler.call_at(
                    self.now() + delay, self._reauthenticate_later(session, changed_at)
                )
        self._rebuild_address_map()
        return count

    def _reauthenticate_later(self, session: PeerSession, changed_at: float) -> Callable[[], None]:
        return lambda: self._reauthenticate(session, changed_at)

    def _reauthenticate(self, session: PeerSession, changed_at: float) -> None:
        session.retry_timer = None
        if self.sessions.get(session.name) is not session or self.stopped:
            return
        current = session.ike
        if (
            current is not None
            and current.state is IkeSaState.ESTABLISHED
            and session.ike_established_mono >= changed_at
        ):
            return  # the peer re-established since: our new certificate is in use
        self._publish("reauthenticate", session.name, "new IKE certificate: initiating")
        self._initiate(session)
