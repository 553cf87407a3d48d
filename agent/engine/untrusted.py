"""What the engine says about input nobody has authenticated.

Anyone who can send UDP to the agent can start an IKE SA with it and choose part of the
text its failure is reported with (the identity it claims, say). Such text is made
printable and bounded (:func:`printable`) before it reaches a log line or the status,
and lines about events a stranger can repeat at will go out at a bounded rate
(:class:`~vpnfleet.agent.ike.admission.LogLimiter`), each saying how many were left out
since the last.
"""

from __future__ import annotations

MAX_TEXT = 240
"""Characters of a reason kept for logs and status; the rest is cut off."""


def printable(text: str, limit: int = MAX_TEXT) -> str:
    """``text`` with every character that is not printable escaped (``\\n``, ``\\x1b``,
    ``\\u202e`` …) and cut to ``limit`` characters, the cut marked with ``…``."""
    if text.isprintable() and len(text) <= limit:
        return text
    out = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    return out if len(out) <= limit else out[: limit - 1] + "…"
