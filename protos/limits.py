"""Limits on a plan's peer values, enforced by the planner (at file:line:col of the
inventory) and by the agent's plan validation alike.

Both sides read them here, so a plan the controller writes is a plan the agent takes.
Plain Python with no generated code: the controller's pure inventory and planner may
import it. Durations are whole seconds; the upper bounds are what the plan's ``uint32``
fields can carry.
"""

from __future__ import annotations

from dataclasses import dataclass

UINT32_MAX = 2**32 - 1


@dataclass(frozen=True, slots=True)
class Limit:
    """An inclusive range for one plan value; ``why`` explains the lower bound."""

    low: int
    high: int
    unit: str
    why: str = ""

    def problem(self, value: int) -> str | None:
        """What is wrong with ``value`` (to follow its name in a message), or None."""
        if value < self.low:
            why = f" ({self.why})" if self.why else ""
            return f"{value}{self.unit} is below the minimum of {self.low}{self.unit}{why}"
        if value > self.high:
            return f"{value}{self.unit} is above the maximum of {self.high}{self.unit}"
        return None


REKEY_SECONDS = Limit(10, UINT32_MAX, "s", "a shorter lifetime keeps the SA rekeying")
"""IKE and child SA rekey times (``ike_lifetime``, ``child_lifetime``)."""
REKEY_JITTER_SECONDS = Limit(0, UINT32_MAX, "s")
"""The random margin before each rekey (``rekey_jitter``); below every rekey time."""
DPD_DELAY_SECONDS = Limit(0, UINT32_MAX, "s")
"""Liveness check interval (``dpd_delay``); 0 turns the checks off."""
DPD_TIMEOUT_SECONDS = Limit(0, UINT32_MAX, "s")
"""Dead-peer timeout (``dpd_timeout``); not below the delay when checks are on."""
NAT_KEEPALIVE_SECONDS = Limit(0, UINT32_MAX, "s")
"""RFC 3948 section 4 keepalive interval (``nat_keepalive``); 0 sends none."""
IKE_FRAGMENT_SIZE = Limit(576, 65535, " bytes", "the IPv4 datagram every host accepts")
"""Largest IP datagram an IKE message may fill (RFC 7383 section 2.5.1)."""
DEFAULT_IKE_FRAGMENT_SIZE = 1280
"""The fragment size a plan's 0 stands for (strongSwan's ``fragment_size`` default)."""


def jitter_problem(rekey_seconds: int, jitter_seconds: int) -> str | None:
    """The jitter is drawn from each rekey time, so it must stay below it."""
    if jitter_seconds >= rekey_seconds:
        return (
            f"the rekey jitter {jitter_seconds}s is not below the rekey time {rekey_seconds}s "
            "(the SA could be rekeyed at once, again and again)"
        )
    return None


def dpd_problem(delay_seconds: int, timeout_seconds: int) -> str | None:
    """A peer must not be declared dead before the first liveness check could be answered."""
    if delay_seconds and timeout_seconds < delay_seconds:
        return (
            f"the DPD timeout {timeout_seconds}s is shorter than the DPD delay "
            f"{delay_seconds}s (a peer would be declared dead before it is checked)"
        )
    return None
