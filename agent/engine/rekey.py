"""Rekey timers, and the calls that start an exchange now and wait for its end: Rekey
and CheckLiveness (mixed into the Engine).

IKE and child SAs are rekeyed before they expire, at a jittered point (RFC 7296 section
2.8), and on request (Rekey). A rekey that cannot start yet (another exchange in flight)
is tried again shortly; a child rekey the peer refuses for now (TEMPORARY_FAILURE, or
CHILD_SA_NOT_FOUND while a collision settles: section 2.25) is tried again after a
bounded back-off.

A Rekey call waits until the SA in force when it was made has been replaced by a newer
one, whoever made it: our exchange, the peer's crossing one (section 2.8.1), or a new
IKE SA with its child (a restarted peer's INITIAL_CONTACT, section 2.4). It fails when
the SA goes without a successor, when the peer refuses for good, or after
:data:`REKEY_WAIT` seconds, on the engine's clock.
A liveness check on request (CheckLiveness) is the dead-peer check of section 1.4
sent at once, waited for up to the time the caller gives.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from ..ike.constants import NotifyType
from ..ike.errors import LocalError
from ..ike.events import IkeSaRekeyFailed
from ..ike.ike_sa import IkeSa
from ..ike.states import IkeSaState
from ..sink import LivenessOutcome, RekeyOutcome, RekeyTarget
from .clock import Scheduler, TimerHandle
from .session import PeerSession, SaKind

log = logging.getLogger(__name__)

REKEY_WAIT = 15.0
"""Seconds a Rekey call waits for the SA to be replaced before answering."""
REKEY_RETRY_FIRST = 0.5
"""Seconds before the first retry of a refused child rekey; each further one doubles
(with up to 50 % jitter, so two refused ends do not retry in step)."""
REKEY_RETRIES = 4
"""Retries of a refused rekey (0.5 + 1 + 2 + 4 s at least: within REKEY_WAIT)."""


KINDS = {
    RekeyTarget.CHILD: (SaKind.CHILD,),
    RekeyTarget.IKE: (SaKind.IKE,),
    RekeyTarget.BOTH: (SaKind.CHILD, SaKind.IKE),
}


@dataclass(frozen=True, slots=True)
class Settled:
    """How the wait for one SA ended."""

    ok: bool
    """The SA was replaced by a newer one."""
    detail: str
    """The new SA, and who replaced it; or why it was not replaced."""


@dataclass
class PendingRekey:
    """A Rekey call for one peer: one wait per SA kind, each settled by the engine."""

    peer: str
    waits: list[asyncio.Future[Settled]] = field(default_factory=list)
    refusal: str = ""
    """Why the rekey could not start (then there are no waits)."""
    timer: TimerHandle | None = None
    """Ends the waits after REKEY_WAIT."""

    @classmethod
    def refused(cls, peer: str, why: str) -> PendingRekey:
        return cls(peer, refusal=why)

    @property
    def done(self) -> bool:
        return all(f.done() for f in self.waits)

    def result(self) -> RekeyOutcome:
        """The outcome once :attr:`done`."""
        if self.refusal:
            return RekeyOutcome(self.peer, False, self.refusal)
        settled = [f.result() for f in self.waits]
        several = len(settled) > 1
        details = [s.detail if s.ok or not several else f"failed: {s.detail}" for s in settled]
        return RekeyOutcome(self.peer, all(s.ok for s in settled), "; ".join(details))

    async def outcome(self) -> RekeyOutcome:
        if self.waits:
            await asyncio.gather(*self.waits)
        if self.timer is not None:
            self.timer.cancel()
        return self.result()


LIVENESS_ANSWERED = "answered"
"""What a liveness check's waiter is resolved with when the peer answered."""


class RekeyScheduling:
    """Rekey scheduling and the Rekey call; :class:`~.engine.Engine` provides the state
    and the I/O these methods use."""

    sessions: dict[str, PeerSession]
    _rng: random.Random
    _wall: Callable[[], float]
    stopped: bool
    _waits: dict[tuple[str, SaKind], list[asyncio.Future[Settled]]]
    _liveness_waits: dict[str, list[asyncio.Future[str]]]

    @property
    def scheduler(self) -> Scheduler:
        raise NotImplementedError

    def now(self) -> float:
        raise NotImplementedError

    def _service(self, sa: IkeSa) -> None:
        raise NotImplementedError

    def _publish(self, kind: str, peer: str, detail: str) -> None:
        raise NotImplementedError

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
            session.rekey_retries[SaKind.IKE if ike else SaKind.CHILD] = 0
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
            pending = self.start_rekey(name, target)
            outcomes.append(await pending.outcome())
        return outcomes

    def start_rekey(self, name: str, target: RekeyTarget) -> PendingRekey:
        """Start rekeying ``name``'s SAs; the result settles as the SAs do (see
        :class:`PendingRekey`), at the latest after :data:`REKEY_WAIT` seconds."""
        session = self.sessions.get(name)
        refusal = self._not_rekeyable(session)
        if refusal is not None:
            return PendingRekey.refused(name, refusal)
        assert session is not None
        pending = PendingRekey(name)
        loop = asyncio.get_running_loop()
        try:
            for kind in KINDS[target]:
                fut: asyncio.Future[Settled] = loop.create_future()
                self._waits.setdefault((name, kind), []).append(fut)
                pending.waits.append(fut)
                session.rekey_retries[kind] = 0
                if kind is SaKind.CHILD:
                    self._rekey_child(session)
                else:
                    self._rekey_ike(session)
        except LocalError as exc:
            self._drop_waits(name, pending.waits)
            return PendingRekey.refused(name, str(exc))
        pending.timer = self.scheduler.call_at(
            self.now() + REKEY_WAIT, lambda: self._rekey_overdue(pending)
        )
        return pending

    def _rekey_overdue(self, pending: PendingRekey) -> None:
        self._drop_waits(pending.peer, pending.waits)
        for fut in pending.waits:
            if not fut.done():
                fut.set_result(Settled(False, f"rekey did not finish within {REKEY_WAIT:g} s"))

    def _drop_waits(self, peer: str, futures: Sequence[asyncio.Future[Settled]]) -> None:
        for kind in SaKind:
            waits = self._waits.get((peer, kind))
            if waits:
                waits[:] = [f for f in waits if f not in futures]

    def _settle(self, peer: str, kind: SaKind, detail: str, ok: bool = True) -> None:
        """Every wait of a Rekey call for ``peer``'s SA of ``kind`` ends: the SA it waited
        for was replaced by a newer one (``ok``), or is gone or could not be replaced."""
        for fut in self._waits.pop((peer, kind), []):
            if not fut.done():
                fut.set_result(Settled(ok, detail))

    def _waiting(self, peer: str, kind: SaKind) -> bool:
        return any(not f.done() for f in self._waits.get((peer, kind), ()))

    # -- a refused rekey -----------------------------------------------------------------

    def _retry_rekey_later(self, session: PeerSession, kind: SaKind, old: bytes) -> float | None:
        """Our rekey of ``session``'s SA of ``kind`` (``old``: the child's spi_in, the IKE
        SA's local SPI) was refused for now (RFC 7296 section 2.25: the peer is rekeying
        or deleting it, or has another exchange in flight): try again after a back-off,
        unless the retries are used up (then None). The peer's own exchange usually
        settles it first; the retry then finds the SA replaced and is not sent."""
        done = session.rekey_retries.get(kind, 0)
        if done >= REKEY_RETRIES:
            return None
        delay = REKEY_RETRY_FIRST * 2**done * self._rng.uniform(1.0, 1.5)
        session.rekey_retries[kind] = done + 1
        self._cancel_rekey_retry(session, kind)
        session.rekey_retry_timers[kind] = self.scheduler.call_at(
            self.now() + delay, lambda: self._retry_rekey(session, kind, old)
        )
        return delay

    @staticmethod
    def _cancel_rekey_retry(session: PeerSession, kind: SaKind) -> None:
        handle = session.rekey_retry_timers.pop(kind, None)
        if handle is not None:
            handle.cancel()

    def _retry_rekey(self, session: PeerSession, kind: SaKind, old: bytes) -> None:
        session.rekey_retry_timers.pop(kind, None)
        if self.stopped or self.sessions.get(session.name) is not session:
            return
        current = self._current_spi(session, kind)
        if current is None:
            return  # gone: settled as failed when it went
        if current != old:
            what = f"child {current.hex()}" if kind is SaKind.CHILD else f"IKE {current.hex()}"
            self._settle(session.name, kind, f"{what} (rekeyed by the peer)")
            return
        try:
            if kind is SaKind.CHILD:
                self._rekey_child(session)
            else:
                self._rekey_ike(session)
        except LocalError as exc:
            self._settle(session.name, kind, str(exc), ok=False)

    @staticmethod
    def _current_spi(session: PeerSession, kind: SaKind) -> bytes | None:
        """What identifies the SA of ``kind`` in force: the child's spi_in, the IKE SA's
        initiator SPI; None when there is none."""
        if kind is SaKind.CHILD:
            return session.child.spi_in if session.child is not None else None
        sa = session.ike
        return sa.spi_i if sa is not None and sa.state is IkeSaState.ESTABLISHED else None

    def _on_ike_rekey_failed(
        self, sa: IkeSa, session: PeerSession, event: IkeSaRekeyFailed
    ) -> None:
        if event.peer_rekey_stands or session.ike is not sa:
            return  # the SA is replaced all the same (IkeSaRekeyed settles the wait)
        if event.notify == NotifyType.TEMPORARY_FAILURE:
            delay = self._retry_rekey_later(session, SaKind.IKE, sa.spi_i)
            if delay is not None:
                self._publish(
                    "ike_rekey_refused", session.name, f"{event.reason}; again in {delay:.1f} s"
                )
                return
        self._settle(session.name, SaKind.IKE, event.reason, ok=False)

    async def check_liveness(self, peers: Sequence[str], wait: float) -> list[LivenessOutcome]:
        """Send an empty INFORMATIONAL request (RFC 7296 section 1.4) on the IKE SA in
        force with each of ``peers`` now, and report which answered within ``wait``
        seconds. A check already in flight (the periodic one) is waited for instead."""
        loop = asyncio.get_running_loop()
        asked: dict[str, asyncio.Future[str]] = {}
        answered_at: dict[str, float] = {}
        refused: dict[str, str] = {}
        started = self.now()
        for name in peers:
            session = self.sessions.get(name)
            refusal = self._not_rekeyable(session)
            if refusal is not None or session is None or session.ike is None:
                refused[name] = refusal or "peer is not up"
                continue
            fut: asyncio.Future[str] = loop.create_future()
            fut.add_done_callback(self._noting(answered_at, name))
            self._liveness_waits.setdefault(name, []).append(fut)
            try:
                session.ike.check_liveness(self.now())
            except LocalError as exc:
                refused[name] = str(exc)
                fut.cancel()
                continue
            asked[name] = fut
            self._service(session.ike)
        if asked:
            await asyncio.wait(asked.values(), timeout=wait)
            await asyncio.sleep(0)  # let the done callbacks note the time
        out = []
        for name in peers:
            waiter = asked.get(name)
            if waiter is None:
                out.append(LivenessOutcome(name, False, refused[name]))
            elif not waiter.done():
                waiter.cancel()
                out.append(LivenessOutcome(name, False, f"no answer within {wait:g} s"))
            elif waiter.cancelled() or waiter.result() != LIVENESS_ANSWERED:
                detail = "engine stopped" if waiter.cancelled() else waiter.result()
                out.append(LivenessOutcome(name, False, detail))
            else:
                rtt = max(0.0, answered_at.get(name, started) - started)
                out.append(LivenessOutcome(name, True, round_trip=rtt))
        return out

    def _answer_liveness(self, peer: str, detail: str) -> None:
        """Every liveness check waiting on ``peer`` ends with ``detail``
        (:data:`LIVENESS_ANSWERED`, or why no answer can come)."""
        for fut in self._liveness_waits.pop(peer, []):
            if not fut.done():
                fut.set_result(detail)

    def _noting(self, times: dict[str, float], name: str) -> Callable[[asyncio.Future[str]], None]:
        """A done callback that notes when ``name``'s waiter was resolved."""

        def note(_: asyncio.Future[str]) -> None:
            times.setdefault(name, self.now())

        return note

    @staticmethod
    def _not_rekeyable(session: PeerSession | None) -> str | None:
        """Why a Rekey or a liveness check of this peer cannot start (no tunnel up),
        None when it can."""
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
