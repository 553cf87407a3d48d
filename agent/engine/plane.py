"""The data plane as the engine's drivers see it: a narrow protocol of child SA calls.

A :class:`~.peer_driver.PeerDriver` installs, hands over, activates and removes its
peer's child SA through :class:`ChildSaPlane` and nothing else; the engine reads the
SAs' counters through it for status. ``agent.io.dataplane.DataPlane`` satisfies it
structurally; unit tests put an in-memory recorder in its place. Keys cross here as
``SaParams`` (ESP) or ``AhParams`` (AH) that the IKE core's events carried (RFC 7296
section 2.17), never as calls from the IKE core into ESP.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from ..esp.spd import TrafficSelector
from ..io.dataplane_model import ChildSaParams, DataPlaneStats, Encap
from ..io.udp import Address


class ChildSaPlane(Protocol):
    """Install / rekey / activate / remove the child SA of a policy (one per plan peer,
    named by the peer), and the counters of every SA for status."""

    def install_child_sa(
        self,
        policy: str,
        inbound: ChildSaParams,
        outbound: ChildSaParams,
        peer: str | Address,
        *,
        encap: Encap = ...,
        local: str | None = None,
        local_ts: Sequence[TrafficSelector] = (),
        remote_ts: Sequence[TrafficSelector] = (),
    ) -> None:
        """Install a child SA pair for ``policy``, replacing any SAs it had."""

    def rekey_child_sa(
        self,
        policy: str,
        inbound: ChildSaParams,
        outbound: ChildSaParams,
        *,
        local_ts: Sequence[TrafficSelector] | None = None,
        remote_ts: Sequence[TrafficSelector] | None = None,
        switch_outbound: bool = True,
    ) -> None:
        """Make-before-break (RFC 7296 section 2.8): the new inbound SA first, the
        outbound one now or when :meth:`activate_outbound` is called; raises ValueError
        when ``policy`` has no child SA to rekey."""

    def activate_outbound(self, policy: str) -> None:
        """Switch to the outbound SA a ``switch_outbound=False`` rekey left waiting;
        raises ValueError when none waits."""

    def remove_child_sa(self, policy: str) -> None:
        """Remove every SA of ``policy``; raises ValueError when it has none."""

    def stats(self) -> DataPlaneStats:
        """Counters of the data plane and of each SA."""
