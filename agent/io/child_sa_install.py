"""The data plane's child SA pairs: installing, rekeying and removing them.

A pair is installed per protect policy (:meth:`ChildSaTable.install`), replaced
make-before-break on a rekey (:meth:`ChildSaTable.rekey`, RFC 7296 section 2.8; the SAD
keeps the old inbound SA for its grace period) and removed with
:meth:`ChildSaTable.remove`, after which the policy's traffic traps again. Each change
updates the policy's ``outbound_path.Route`` in place, so the flow caches never go
stale. The table owns the routes, which SPI belongs to which policy, the inbound
selector checks of tunnel-mode SAs, and the rekeyed outbound SAs waiting for their
peer; the SAD (``esp.sad``) holds the SAs themselves.

A pair is ESP (``SaParams``) or AH (``AhParams``, RFC 4302). An AH pair travels over IP
(protocol 51, ``Encap.RAW``); its SAs take and give whole IP packets in both modes, so its
route carries them whole (``outbound_path.AhEncap``); tunnel-mode selectors are checked
by an ``InboundCheck`` as ESP's are, transport-mode ones by the SA.
A rekey keeps the protocol and the mode.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from ..esp.ah import AhParams, InboundAhSa, OutboundAhSa
from ..esp.replay import DEFAULT_WINDOW_SIZE
from ..esp.sa import InboundSa, Mode, OutboundSa
from ..esp.sad import AnyInboundSa, AnyOutboundSa, Sad
from ..esp.spd import TrafficSelector
from .dataplane_model import (
    ChildSaParams,
    Encap,
    SaStats,
    check_pair,
    check_peer,
    transport_addresses,
)
from .inbound_check import InboundCheck
from .outbound_path import AhEncap, Route
from .udp import Address


class ChildSaTable:
    """The child SA pairs of each protect policy, their routes and their SPIs.

    ``bind_send`` points a route that has an outbound SA at the socket its
    encapsulation uses (``DataPlane`` owns the sockets). ``deliver_events`` hands the
    SAD's queued events on; the table calls it where an install removes the policy's
    old SAs, so their removal is reported (and :meth:`forget_inbound` called) before the
    new pair, which may reuse an inbound SPI, is in place. Otherwise delivering events and
    re-arming the SAD's timer after a change is the caller's.
    """

    def __init__(
        self,
        sad: Sad,
        *,
        bind_send: Callable[[Route], None],
        deliver_events: Callable[[], None],
    ) -> None:
        self.sad = sad
        self._bind_send = bind_send
        self._deliver_events = deliver_events
        self._routes: dict[str, Route] = {}
        self._spi_policy: dict[int, str] = {}
        """Inbound SPI -> policy, retiring SPIs included."""
        self._outbound_policy: dict[int, str] = {}
        self.checks: dict[bytes, InboundCheck] = {}
        """Inbound selector checks of tunnel-mode SAs (ESP and AH) by SPI (4 octets); the
        inbound path
        reads this very dict per packet, so it is changed in place, never rebound."""
        self.activate_on: dict[bytes, str] = {}
        """New inbound SPIs (4 octets) whose policy's outbound SA waits for activation:
        the first packet that opens on one shows the peer sends on its new SA, so it
        holds the inbound half of ours too (RFC 7296 section 2.8). Read per packet by
        the inbound path, so changed in place, never rebound."""

    # -- routes --------------------------------------------------------------------------

    def route(self, policy: str) -> Route:
        """The route of protect policy ``policy``, made on first use."""
        route = self._routes.get(policy)
        if route is None:
            route = self._routes[policy] = Route(policy)
        return route

    def routes(self) -> Iterable[Route]:
        return self._routes.values()

    def inbound_route(self, spi: int) -> Route | None:
        """The route of the policy that inbound SPI ``spi`` belongs to."""
        return self._routes.get(self._spi_policy.get(spi, ""))

    def inbound_policy(self, spi: int) -> str:
        return self._spi_policy.get(spi, "")

    def outbound_policy(self, spi: int) -> str:
        return self._outbound_policy.get(spi, "")

    def forget_inbound(self, spi: int) -> str:
        """The SAD removed inbound SA ``spi``: drop what the table kept for it; returns
        the policy it served ("" if none)."""
        self.checks.pop(spi.to_bytes(4, "big"), None)
        policy = self._spi_policy.pop(spi, "")
        route = self._routes.get(policy)
        if route is not None and spi in route.inbound_spis:
            route.inbound_spis.remove(spi)
        return policy

    def resync(self) -> None:
        """Follow the SAD after it removed expired SAs on its own."""
        for policy, route in self._routes.items():
            current = self.sad.outbound(policy)
            if current is not route.outbound:
                if route.outbound is not None:
                    self._outbound_policy.pop(route.outbound.spi, None)
                self._set_outbound(route, current)

    def _set_outbound(self, route: Route, sa: AnyOutboundSa | None) -> None:
        route.outbound = sa
        if sa is None:
            route.encap = None
            route.send = None
            route.send_batch = None
            return
        self._bind_send(route)
        route.encap = AhEncap(sa).encap if isinstance(sa, OutboundAhSa) else sa.encap

    def policies(self) -> list[str]:
        """Policies with an outbound SA installed."""
        return sorted(p for p, r in self._routes.items() if r.outbound is not None)

    def sa_stats(self) -> list[SaStats]:
        sas = [
            SaStats.of(self._routes[policy].peer_host, policy, out, None)
            for policy, out in self.sad.outbound_sas()
        ]
        for sa in self.sad.inbound_sas():
            policy = self._spi_policy.get(sa.spi, "")
            owner = self._routes.get(policy)
            peer = owner.peer_host if owner is not None else ""
            sas.append(SaStats.of(peer, policy, sa, self.sad.retiring(sa.spi)))
        return sas

    # -- changes -------------------------------------------------------------------------

    def install(
        self,
        policy: str,
        inbound: ChildSaParams,
        outbound: ChildSaParams,
        peer: str | Address,
        *,
        encap: Encap = Encap.UDP,
        local: str | None = None,
        local_ts: Sequence[TrafficSelector] = (),
        remote_ts: Sequence[TrafficSelector] = (),
        replay_window: int = DEFAULT_WINDOW_SIZE,
        now: float,
    ) -> None:
        """Install a child SA pair for ``policy``, replacing any SAs the policy had.

        ``peer`` is the peer's address: ``(host, port)`` or a bare host (port 4500) for
        UDP encapsulation, a bare host for raw ESP. ``local_ts``/``remote_ts`` are the
        negotiated traffic selectors every decrypted packet must match (RFC 4301 section
        5.2). ESP transport mode (IPv4 only) needs ``local``, this host's outer address.
        An AH pair (``AhParams``) needs ``encap=Encap.RAW`` and a bare host; it carries
        IPv4 and IPv6 in both modes. Raises ValueError naming what is wrong, and then
        changes nothing.
        """
        check_pair(policy, inbound, outbound)
        ah = isinstance(outbound, AhParams)
        dest, host = check_peer(peer, encap, ah=ah)
        # ESP transport: the path hands the SA the segment and rebuilds the inbound IPv4
        # header; AH works on whole packets in either mode.
        transport = outbound.mode is Mode.TRANSPORT and not ah
        local_packed = peer_packed = b""
        if transport:
            local_packed, peer_packed = transport_addresses(policy, local, host)
        owner = self._spi_policy.get(inbound.spi)
        if owner is not None and owner != policy:
            raise ValueError(
                f"inbound SPI 0x{inbound.spi:08x} is already installed for policy {owner!r}"
            )
        new_in, check = self._new_inbound(inbound, now, replay_window, local_ts, remote_ts)
        new_out = _outbound_sa(outbound, now)
        route = self.route(policy)
        if route.outbound is not None or route.inbound_spis:
            self.remove(policy)
            self._deliver_events()
        # After the old pair's removal was reported: it drops the check of its SPI,
        # which the new pair may reuse.
        self._add_check(new_in, check)
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

    def rekey(
        self,
        policy: str,
        inbound: ChildSaParams,
        outbound: ChildSaParams,
        *,
        local_ts: Sequence[TrafficSelector] | None = None,
        remote_ts: Sequence[TrafficSelector] | None = None,
        replay_window: int = DEFAULT_WINDOW_SIZE,
        switch_outbound: bool = True,
        now: float,
    ) -> None:
        """Make-before-break (``Sad.rekey``): the new inbound SA first, the outbound
        switch at once, the old inbound SA kept for the SAD's grace period. Selectors
        default to the current inbound SA's.

        With ``switch_outbound=False`` (the rekey responder) the new outbound SA waits
        for :meth:`activate`, called once the initiator surely has its inbound
        half (when its DELETE for the old SA arrives, as charon does), so nothing the
        responder sends on the new SPI reaches a peer that cannot open it yet."""
        route = self._routes.get(policy)
        if route is None or route.outbound is None:
            raise ValueError(f"policy {policy!r} has no child SA to rekey")
        check_pair(policy, inbound, outbound)
        if isinstance(outbound, AhParams) != isinstance(route.outbound, OutboundAhSa):
            raise ValueError(f"policy {policy!r}: a rekey cannot change the protocol")
        if outbound.mode is not route.outbound.mode:
            raise ValueError(f"policy {policy!r}: a rekey cannot change the mode")
        if inbound.spi in self._spi_policy:
            raise ValueError(f"inbound SPI 0x{inbound.spi:08x} is already installed")
        old = self.sad.inbound(route.inbound_spis[-1]) if route.inbound_spis else None
        if local_ts is None or remote_ts is None:
            local_ts, remote_ts = route.local_ts, route.remote_ts
        new_in, check = self._new_inbound(inbound, now, replay_window, local_ts, remote_ts)
        self._add_check(new_in, check)
        route.local_ts, route.remote_ts = tuple(local_ts), tuple(remote_ts)
        new_out = _outbound_sa(outbound, now)
        # An outbound SA still waiting from an earlier rekey (crossed replacements) is out
        # of the game either way: a packet on its inbound half must not bring it back.
        self._drop_pending(route, policy)
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
            self.activate_on[inbound.spi.to_bytes(4, "big")] = policy
        route.inbound_spis.append(inbound.spi)
        self._spi_policy[inbound.spi] = policy
        self._outbound_policy[outbound.spi] = policy

    def _new_inbound(
        self,
        params: ChildSaParams,
        now: float,
        replay_window: int,
        local_ts: Sequence[TrafficSelector],
        remote_ts: Sequence[TrafficSelector],
    ) -> tuple[AnyInboundSa, InboundCheck | None]:
        """The inbound SA and, in tunnel mode with selectors, the check that stands in
        for the SA's own (registered with :meth:`_add_check` once installing is sure)."""
        if bool(local_ts) != bool(remote_ts):
            raise ValueError("give both local and remote traffic selectors, or neither")
        if isinstance(params, AhParams):
            if params.mode is Mode.TRANSPORT or not local_ts:
                ah = InboundAhSa(
                    params, now, replay_window=replay_window, local_ts=local_ts, remote_ts=remote_ts
                )
                return ah, None
            ah = InboundAhSa(params, now, replay_window=replay_window)
            return ah, InboundCheck(ah, local_ts, remote_ts)
        if params.mode is Mode.TRANSPORT or not local_ts:
            sa = InboundSa(
                params, now, replay_window=replay_window, local_ts=local_ts, remote_ts=remote_ts
            )
            return sa, None
        # Tunnel mode: the SA skips its own per-packet parse; InboundCheck caches flows.
        sa = InboundSa(params, now, replay_window=replay_window)
        return sa, InboundCheck(sa, local_ts, remote_ts)

    def _add_check(self, sa: AnyInboundSa, check: InboundCheck | None) -> None:
        if check is not None:
            self.checks[sa.spi.to_bytes(4, "big")] = check

    def activate(self, policy: str) -> None:
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

    def remove(self, policy: str) -> None:
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
        self._drop_pending(route, policy)
        self._set_outbound(route, None)

    def _drop_pending(self, route: Route, policy: str) -> None:
        if route.pending is not None:
            self._outbound_policy.pop(route.pending.spi, None)
            route.pending = None
        self._forget_activation(policy)

    def _forget_activation(self, policy: str) -> None:
        for spi, waiting in list(self.activate_on.items()):
            if waiting == policy:
                del self.activate_on[spi]


def _outbound_sa(params: ChildSaParams, now: float) -> AnyOutboundSa:
    if isinstance(params, AhParams):
        return OutboundAhSa(params, now)
    return OutboundSa(params, now)
