"""Time for the engine: one clock and one way to run a callback at a deadline.

The IKE core and the data plane take ``now`` as an argument; the engine reads it from a
:class:`Scheduler`. :class:`LoopScheduler` is the event loop itself (``loop.time``,
``loop.call_at``); :class:`ManualScheduler` runs callbacks only when a test advances
it, so lifetimes, retransmissions and liveness are tested without sleeping.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Callable
from typing import Protocol


class TimerHandle(Protocol):
    def cancel(self) -> None: ...


class Scheduler(Protocol):
    def now(self) -> float: ...

    def call_at(self, when: float, callback: Callable[[], None]) -> TimerHandle: ...


class LoopScheduler:
    """The running event loop's clock (monotonic) and timers."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop

    def now(self) -> float:
        return self.loop.time()

    def call_at(self, when: float, callback: Callable[[], None]) -> TimerHandle:
        return self.loop.call_at(when, callback)


class _ManualHandle:
    __slots__ = ("cancelled",)

    def __init__(self) -> None:
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class ManualScheduler:
    """Fake time: callbacks run in deadline order inside :meth:`advance`."""

    def __init__(self, start: float = 1000.0) -> None:
        self.time = start
        self._heap: list[tuple[float, int, _ManualHandle, Callable[[], None]]] = []
        self._order = itertools.count()

    def now(self) -> float:
        return self.time

    def call_at(self, when: float, callback: Callable[[], None]) -> TimerHandle:
        handle = _ManualHandle()
        heapq.heappush(self._heap, (when, next(self._order), handle, callback))
        return handle

    def next_deadline(self) -> float | None:
        while self._heap and self._heap[0][2].cancelled:
            heapq.heappop(self._heap)
        return self._heap[0][0] if self._heap else None

    def advance(self, seconds: float, between: Callable[[], None] | None = None) -> None:
        """Move time forward, running each due callback at its own deadline; ``between``
        runs after each one (tests deliver the datagrams it sent there)."""
        end = self.time + seconds
        while True:
            deadline = self.next_deadline()
            if deadline is None or deadline > end:
                break
            when, _, _handle, callback = heapq.heappop(self._heap)
            self.time = max(self.time, when)
            callback()
            if between is not None:
                between()
        self.time = end
