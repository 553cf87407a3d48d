"""What a Rekey call waits for, and how long: the results of the calls that start an
exchange now and wait for its end (Rekey, CheckLiveness).

A Rekey call waits until the SA in force when it was made has been replaced by a newer
one, whoever made it: our exchange, the peer's crossing one (RFC 7296 section 2.8.1), or
a new IKE SA with its child (a restarted peer's INITIAL_CONTACT, section 2.4). It fails
when the SA goes without a successor, when the peer refuses for good, or after
:data:`REKEY_WAIT` seconds, on the engine's clock. The waits themselves are kept and
settled by each peer's :class:`~.peer_driver.PeerDriver`.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from ..sink import RekeyOutcome, RekeyTarget
from .clock import TimerHandle
from .peer_state import SaKind

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
