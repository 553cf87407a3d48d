"""vpnfleet's version and the version-skew rule between a controller and its agents.

The rule: an agent accepts plans from a controller of its own major.minor version or of
the next minor version (same major); patch releases never matter. So a controller can
be upgraded first and still drive every agent of the previous minor release while
``vpnfleet upgrade`` brings them up to its own version, host by host, and a host rolled
back to the previous minor release keeps taking plans. Anything else is refused by the
agent before it reads the plan, with a message naming both versions and what to do:
a controller two or more minor versions (or a major version) ahead must upgrade the
agents to its own version first (``vpnfleet upgrade`` installs them over SSH, not
through plans), and a controller older than the agent, or one that sends no version,
must itself be upgraded.

The controller sends its version with every ApplyPlan (``controller_version``); the
agent judges it with :func:`plan_skew`. Both sides read their own version with
:func:`installed_version`.
"""

from __future__ import annotations

import enum
import functools
from importlib.metadata import PackageNotFoundError, version

from packaging.version import InvalidVersion, Version

DISTRIBUTION = "vpnfleet"
UNKNOWN = "unknown"


@functools.cache
def installed_version() -> str:
    """The version of the installed vpnfleet package (``unknown`` when none is), as it
    was when this process first asked: an upgrade replaces the files under a running
    process, which keeps running the code it loaded."""
    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:
        return UNKNOWN


class Skew(enum.Enum):
    SAME = "same minor version"
    CONTROLLER_AHEAD = "controller one minor version ahead"
    AGENT_TOO_OLD = "controller too far ahead of the agent"
    CONTROLLER_TOO_OLD = "controller older than the agent"
    UNREADABLE = "a version that cannot be read"

    @property
    def accepted(self) -> bool:
        return self in (Skew.SAME, Skew.CONTROLLER_AHEAD)


def _release(text: str) -> tuple[int, int] | None:
    try:
        parsed = Version(text)
    except InvalidVersion:
        return None
    return parsed.major, parsed.minor


def plan_skew(agent: str, controller: str) -> Skew:
    """How a controller at version ``controller`` stands to an agent at ``agent``."""
    if not controller:
        return Skew.CONTROLLER_TOO_OLD  # it predates the rule: it sends no version
    ours, theirs = _release(agent), _release(controller)
    if ours is None or theirs is None:
        return Skew.UNREADABLE
    if ours[0] != theirs[0]:
        return Skew.AGENT_TOO_OLD if theirs > ours else Skew.CONTROLLER_TOO_OLD
    ahead = theirs[1] - ours[1]
    if ahead == 0:
        return Skew.SAME
    if ahead == 1:
        return Skew.CONTROLLER_AHEAD
    return Skew.AGENT_TOO_OLD if ahead > 1 else Skew.CONTROLLER_TOO_OLD


def skew_refusal(agent: str, controller: str) -> str:
    """Why an agent at ``agent`` refuses plans from a controller at ``controller``, with
    what to do; empty when it accepts them."""
    skew = plan_skew(agent, controller)
    if skew.accepted:
        return ""
    said = controller or "no version (a controller older than the version-skew rule)"
    head = f"agent {agent} refuses plans from controller {said}: "
    rule = "an agent takes plans from a controller of its own minor version or the next one"
    if skew is Skew.AGENT_TOO_OLD:
        return (
            head + f"{rule}; upgrade this agent to {controller} with "
            "`vpnfleet upgrade -i INVENTORY -l HOST`"
        )
    if skew is Skew.CONTROLLER_TOO_OLD:
        return head + f"{rule}; upgrade the controller to {agent} or the next minor version"
    return head + f"{rule}; run released versions of both (MAJOR.MINOR.PATCH)"
