"""Rekey timers, and the calls that start an exchange now and wait for its end: Rekey
and CheckLiveness (mixed into the Engine).

IKE and child SAs are rekeyed before they expire, at a jittered point (RFC 7296 section
2.8), and on request (Rekey, which waits for the exchange to end). A rekey that cannot
start yet (another exchange in flight) is tried again shortly. A liveness check on
request is the dead-peer check of section 1.4 sent at once.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Sequence

from ..ike.errors import LocalError
from ..ike.ike_sa import IkeSa
from ..ike.states import IkeSaState
from ..sink import LivenessOutcome, RekeyOutcome, RekeyTarget
from .clock import Scheduler
from .session import PeerSession

log = logging.getLogger(__name__)

REKEY_WAIT = 15.0
"""Seconds a Rekey call waits for the exchange to finish before answering."""

LIVENESS_ANSWERED = "answered"
"""What a liveness check's waiter is resolved with when the peer answered."""


class RekeyScheduling:
    """Rekey scheduling and the Rekey call; :class:`~.engine.Engine` provides the state
    and the I/O these methods use."""

    sessions: dict[str, PeerSession]
    _rng: random.Random
    _wall: Callable[[], float]
    stopped: bool
    _live: bool
    _waiters: dict[tuple[str, str], list[asyncio.Future[str]]]

    @property
    def scheduler(self) -> Scheduler:
        raise NotImplementedError

    def now(self) -> float:
        raise NotImplementedError

    def _service(self, sa: IkeSa) -> None:
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
            self._waiters.setdefault((name, "liveness"), []).append(fut)
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
