"""Installing, rekeying and removing the data plane's child SA pairs (the engine's API).

A pair is installed per protect policy (``install_child_sa``), replaced
make-before-break on a rekey (``rekey_child_sa``, RFC 7296 section 2.8; the SAD keeps
the old inbound SA for its grace period) and removed with ``remove_child_sa``, after
which the policy's traffic traps again. Each change updates the policy's
``outbound_path.Route`` in place, so the flow caches never go stale.
:class:`ChildSaInstall` holds this code; ``dataplane.DataPlane`` inherits it and
provides the state it reads.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ..esp.replay import DEFAULT_WINDOW_SIZE
from ..esp.sa import InboundSa, Mode, OutboundSa, SaParams
from ..esp.sad import Sad
from ..esp.spd import TrafficSelector
from .dataplane_model import (
    DataPlaneCounters,
    Encap,
    check_pair,
    check_peer,
    transport_addresses,
)
from .inbound_check import InboundCheck
from .outbound_path import Route
from .udp import Address


class ChildSaInstall:
    """The child SA pairs of each policy and their SPIs (mixed into ``DataPlane``)."""

    clock: Callable[[], float]
    counters: DataPlaneCounters
    sad: Sad
    _routes: dict[str, Route]
    _spi_policy: dict[int, str]
    _outbound_policy: dict[int, str]
    _checks: dict[bytes, InboundCheck]
    _activate_on: dict[bytes, str]

    def _route(self, policy: str) -> Route:
        raise NotImplementedError

    def _set_outbound(self, route: Route, sa: OutboundSa | None) -> None:
        raise NotImplementedError

    def _after_change(self) -> None:
        raise NotImplementedError

    def install_child_sa(
        self,
        policy: str,
        inbound: SaParams,
        outbound: SaParams,
        peer: str | Address,
        *,
        encap: Encap = Encap.UDP,
        local: str | None = None,
        local_ts: Sequence[TrafficSelector] = (),
        remote_ts: Sequence[TrafficSelector] = (),
        replay_window: int = DEFAULT_WINDOW_SIZE,
        now: float | None = None,
    ) -> None:
        """Install a child SA pair for ``policy``, replacing any SAs the policy had.

        ``peer`` is the peer's address: ``(host, port)`` or a bare host (port 4500) for
        UDP encapsulation, a bare host for raw ESP. ``local_ts``/``remote_ts`` are the
        negotiated traffic selectors every decrypted packet must match (RFC 4301 section
        5.2). Transport mode (IPv4 only) needs ``local``, this host's outer address.
        Raises ValueError naming what is wrong, and then changes nothing.
        """
        now = self.clock() if now is None else now
        dest, host = check_peer(peer, encap)
        check_pair(policy, inbound, outbound)
        transport = outbound.mode is Mode.TRANSPORT
        local_packed = peer_packed = b""
        if transport:
            local_packed, peer_packed = transport_addresses(policy, local, host)
        owner = self._spi_policy.get(inbound.spi)
        if owner is not None and owner != policy:
            raise ValueError(
                f"inbound SPI 0x{inbound.spi:08x} is already installed for policy {owner!r}"
            )
        new_in = self._new_inbound(inbound, now, replay_window, local_ts, remote_ts)
        new_out = OutboundSa(outbound, now)
        route = self._route(policy)
        if route.outbound is not None or route.inbound_spis:
            self.remove_child_sa(policy)
        self.sad.add_inbound(new_in)
        self.sad.set_outbound(policy, new_out)
        route.inbound_spis.append(inbound.spi)
        self._spi_policy[inbound.spi] = policy
        self._outbound_policy[outbound.spi] = policy
        route.dest = dest
        route.peer_host = host
        route.encap_kind = encap
        route.transport = transport
        route.local_packed = local_packed
        route.peer_packed = peer_packed
        route.acquire_after = -float("inf")
        route.local_ts, route.remote_ts = tuple(local_ts), tuple(remote_ts)
        self._set_outbound(route, new_out)
        self._after_change()

    def rekey_child_sa(
        self,
        policy: str,
        inbound: SaParams,
        outbound: SaParams,
        *,
        local_ts: Sequence[TrafficSelector] | None = None,
        remote_ts: Sequence[TrafficSelector] | None = None,
        replay_window: int = DEFAULT_WINDOW_SIZE,
        switch_outbound: bool = True,
        now: float | None = None,
    ) -> None:
        """Make-before-break (``Sad.rekey``): the new inbound SA first, the outbound
        switch at once, the old inbound SA kept for the SAD's grace period. Selectors
        default to the current inbound SA's.

        With ``switch_outbound=False`` (the rekey responder) the new outbound SA waits
        for :meth:`activate_outbound`, called once the initiator surely has its inbound
        half (when its DELETE for the old SA arrives, as charon does), so nothing the
        responder sends on the new SPI reaches a peer that cannot open it yet."""
        now = self.clock() if now is None else now
        route = self._routes.get(policy)
        if route is None or route.outbound is None:
            raise ValueError(f"policy {policy!r} has no child SA to rekey")
        check_pair(policy, inbound, outbound)
        if (outbound.mode is Mode.TRANSPORT) != route.transport:
            raise ValueError(f"policy {policy!r}: a rekey cannot change the mode")
        if inbound.spi in self._spi_policy:
            raise ValueError(f"inbound SPI 0x{inbound.spi:08x} is already installed")
        old = self.sad.inbound(route.inbound_spis[-1]) if route.inbound_spis else None
        if local_ts is None or remote_ts is None:
            local_ts, remote_ts = route.local_ts, route.remote_ts
        new_in = self._new_inbound(inbound, now, replay_window, local_ts, remote_ts)
        route.local_ts, route.remote_ts = tuple(local_ts), tuple(remote_ts)
        new_out = OutboundSa(outbound, now)
        if switch_outbound:
            old_spi = None if old is None else old.spi
            previous = self.sad.rekey(policy, new_in, new_out, old_spi, now)
            if previous is not None:
                self._outbound_policy.pop(previous.spi, None)
            self._set_outbound(route, new_out)
        else:
            self.sad.add_inbound(new_in)
            if old is not None:
                self.sad.retire_inbound(old.spi, now)
            route.pending = new_out
            self._forget_activation(policy)
            self._activate_on[inbound.spi.to_bytes(4, "big")] = policy
        route.inbound_spis.append(inbound.spi)
        self._spi_policy[inbound.spi] = policy
        self._outbound_policy[outbound.spi] = policy
        self._after_change()

    def _new_inbound(
        self,
        params: SaParams,
        now: float,
        replay_window: int,
        local_ts: Sequence[TrafficSelector],
        remote_ts: Sequence[TrafficSelector],
    ) -> InboundSa:
        if bool(local_ts) != bool(remote_ts):
            raise ValueError("give both local and remote traffic selectors, or neither")
        if params.mode is Mode.TRANSPORT or not local_ts:
            return InboundSa(
                params, now, replay_window=replay_window, local_ts=local_ts, remote_ts=remote_ts
            )
        # Tunnel mode: the SA skips its own per-packet parse; InboundCheck caches flows.
        sa = InboundSa(params, now, replay_window=replay_window)
        self._checks[sa.spi.to_bytes(4, "big")] = InboundCheck(sa, local_ts, remote_ts)
        return sa

    def activate_outbound(self, policy: str) -> None:
        """Switch ``policy`` to the outbound SA a ``switch_outbound=False`` rekey left
        waiting."""
        route = self._routes.get(policy)
        if route is None or route.pending is None:
            raise ValueError(f"policy {policy!r} has no outbound SA waiting")
        self._forget_activation(policy)
        new_out, route.pending = route.pending, None
        previous = self.sad.set_outbound(policy, new_out)
        if previous is not None:
            self._outbound_policy.pop(previous.spi, None)
        self._set_outbound(route, new_out)
        self._after_change()

    def remove_child_sa(self, policy: str) -> None:
        """Remove every SA of ``policy`` (current and retiring); its SPD entry stays, so
        its traffic traps again."""
        route = self._routes.get(policy)
        if route is None or (route.outbound is None and not route.inbound_spis):
            raise ValueError(f"policy {policy!r} has no child SA")
        out = self.sad.remove_outbound(policy)
        if out is not None:
            self._outbound_policy.pop(out.spi, None)
        for spi in list(route.inbound_spis):
            self.sad.remove_inbound(spi, "deleted")
        if route.pending is not None:
            self._outbound_policy.pop(route.pending.spi, None)
            route.pending = None
        self._forget_activation(policy)
        self._set_outbound(route, None)
        self._after_change()

    def _forget_activation(self, policy: str) -> None:
        for spi, waiting in list(self._activate_on.items()):
            if waiting == policy:
                del self._activate_on[spi]

    def _activate_on_first_packet(self, spi: bytes) -> None:
        policy = self._activate_on.get(spi)
        if policy is not None:
            self.activate_outbound(policy)
            self.counters.outbound_activated_by_peer += 1
