"""What the engine says about input nobody has authenticated.

Anyone who can send UDP to the agent can start an IKE SA with it and choose part of the
text its failure is reported with (the identity it claims, say). Such text is made
printable and bounded (:func:`printable`) before it reaches a log line or the status,
and lines about events a stranger can repeat at will go out at a bounded rate
(:class:`LogLimiter`), each saying how many were left out since the last.
"""

from __future__ import annotations

from dataclasses import dataclass, field

MAX_TEXT = 240
"""Characters of a reason kept for logs and status; the rest is cut off."""

LOG_INTERVAL = 10.0
"""Seconds between two log lines of one kind about unauthenticated input."""


def printable(text: str, limit: int = MAX_TEXT) -> str:
    """``text`` with every character that is not printable escaped (``\\n``, ``\\x1b``,
    ``\\u202e`` …) and cut to ``limit`` characters, the cut marked with ``…``."""
    if text.isprintable() and len(text) <= limit:
        return text
    out = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    return out if len(out) <= limit else out[: limit - 1] + "…"


@dataclass
class LogLimiter:
    """At most one log line per key every ``interval`` seconds (time is passed in)."""

    interval: float = LOG_INTERVAL
    _next: dict[str, float] = field(default_factory=dict)
    _left_out: dict[str, int] = field(default_factory=dict)

    def admit(self, key: str, now: float) -> int | None:
        """None when no line may go out for ``key`` now (the event is tallied); else how
        many were left out since the last line."""
        if now < self._next.get(key, float("-inf")):
            self._left_out[key] = self._left_out.get(key, 0) + 1
            return None
        self._next[key] = now + self.interval
        return self._left_out.pop(key, 0)
