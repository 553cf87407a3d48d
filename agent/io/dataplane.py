"""The userspace ESP data plane: TUN <-> SPD/SAD <-> UDP 4500 (RFC 3948) or raw ESP.

Outbound: the host routes only protected prefixes into the TUN device, so every packet
read from it is looked up in the SPD (RFC 4301 section 5.1):

* protect -> the policy's current outbound SA seals it, and it leaves through UDP 4500
  or a raw protocol-50 socket to the policy's peer; with no SA installed yet the entry
  acts as a *trap*: the packet is dropped and an :class:`Acquire` asks the engine to
  negotiate one (strongSwan's trap policies, the kernel's ACQUIRE), at most once per
  ``acquire_interval`` per policy;
* bypass -> dropped and counted in ``bypass_misrouted``: a bypassed packet should have
  been routed around the tunnel, so one reaching the TUN means a route is wrong;
* discard, or no entry at all (RFC 4301 section 4.4.1: no match means discard) ->
  dropped and counted.

Inbound: an ESP packet from either socket is opened by the SAD (SPI lookup, anti-replay,
ICV, the SA's traffic selectors, RFC 4301 section 5.2) and the inner packet is written
to the TUN device. Every drop is counted (per SA in :mod:`..esp`, here per reason) and
nothing raises out of the packet path.

Speed (the hot paths are written for it; see ``bench/esp_throughput.py``). Most of the
cost per packet is the kernel's (a UDP send through the stack, a TUN write through IP
and TCP), so the design cuts system calls and kernel passes, not only Python work:

* The TUN fd is drained until EAGAIN (at most ``TUN_BATCH`` packets per wakeup, so the
  receive side is not starved), with one clock read per batch.
* A flow cache maps the address/port bytes of plain IPv4 TCP, UDP and ICMP packets
  (``esp.spd.FLOW_KEY_END``; one bytes slice, one dict get) to the policy's ``Route``,
  whose bound ``encap`` and ``send`` are swapped in place on install, rekey and removal;
  everything else takes the general path (``parse_ip_packet`` and ``Spd.lookup``) and
  fills the cache.
* ESP packets of one route and one size leave in one UDP GSO send (``UDP_SEGMENT``,
  ``UdpEndpoint.send_esp_batch``): the kernel routes and builds headers once per up to
  64 datagrams and splits them late. Over raw ESP the same run leaves in one
  ``sendmmsg`` (``RawEspSocket.send_esp_batch``); both sockets read with ``recvmmsg``.
  A wake-up's first packet is not held: it leaves before the read that finds the TUN
  empty, so a lone packet (a ping, an ACK) waits for nothing.
* Decrypted packets of one socket read batch go to the TUN together; with
  ``tun_offload.OffloadTun`` in-order TCP segments of one flow are joined into one
  GSO packet, so the kernel's TCP receive path runs once per run of segments.
* Tunnel-mode inbound selector checks use a flow cache (``inbound_check``); SA events
  raised on the packet path (volume lifetimes) are collected once per batch.

One process owns every SA it uses: an SPI's sequence-number space and replay window are
never shared between processes (RFC 4303 section 3.3.3 forbids a repeated sequence
number, and with AES-GCM a repeat would also repeat the nonce). On this 2-core machine
one process per host is the right shape: in a bulk transfer one host's process seals and
the other's opens, so the two processes already use both cores next to iperf3 and the
kernel; more workers (a multi-queue TUN) would only add contention here. Where more
cores are free, the split that keeps each SPI single-owner is by SA (flows hashed to
workers by policy, each worker owning whole SA pairs), not a shared SA.

Time is one clock throughout (``clock``, ``time.monotonic`` by default, which is also
what asyncio's default loop reads); timers are armed relative to it.

AH (RFC 4302, IP protocol 51) rides the same paths: a child installed with ``AhParams``
seals whole packets through ``outbound_path.AhEncap`` and leaves through the raw AH
socket (``rawah.RawAhSocket``); AH packets from it come in through :meth:`receive_ah`
to the SAD's ``decap_ah``. AH never travels in UDP.

Layout: :class:`DataPlane` owns three parts and the SAD and SPD they share:

* ``outbound`` (:class:`.outbound_path.OutboundPath`, TUN -> ESP): the SPD and the
  routes, never the SAD;
* ``inbound`` (:class:`.inbound_path.InboundPath`, ESP -> TUN): the SAD's ``decap`` and
  what the table keeps per inbound SPI, never the SPD;
* ``sas`` (:class:`.child_sa_install.ChildSaTable`): the child SA pairs, their routes and
  SPIs; the engine's install / rekey / activate / remove calls land there.

``DataPlane`` itself holds the wiring (which socket a route sends through), the SA
timers and the SAD's events, and hands each part the callbacks it needs (a part never
holds the ``DataPlane``). The sockets call the inbound path's bound methods directly
(``receive_esp`` and the rest are those bound methods), so composing adds no call per
packet.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

from ..esp.ah import OutboundAhSa
from ..esp.replay import DEFAULT_WINDOW_SIZE
from ..esp.sa import Direction, SaExpired
from ..esp.sad import DEFAULT_REKEY_GRACE, InboundRemoved, Sad, SadEvent
from ..esp.spd import Action, Spd, SpdEntry, TrafficSelector
from .child_sa_install import ChildSaTable
from .dataplane_model import ChildSaParams, DataPlaneCounters, DataPlaneStats, Encap
from .inbound_path import InboundPath
from .outbound_path import AcquireHandler, OutboundPath, Route
from .tun import TunDevice
from .udp import Address, BatchEndHandler, DatagramEndpoint

log = logging.getLogger(__name__)

DEFAULT_ACQUIRE_INTERVAL = 1.0
"""Seconds between two acquires for one policy (the kernel's and charon's habit)."""

Clock = Callable[[], float]


class RawEspSender(Protocol):
    """What the data plane needs from a raw ESP socket (``rawesp.RawEspSocket``)."""

    on_batch_end: BatchEndHandler | None

    def send_esp(self, data: bytes, addr: str) -> None: ...

    def send_esp_batch(self, packets: list[bytes], addr: str) -> None:
        """Send several ESP packets to one peer (in one system call where it can)."""


class RawAhSender(Protocol):
    """What the data plane needs from a raw AH socket (``rawah.RawAhSocket``)."""

    on_batch_end: BatchEndHandler | None

    def send_ah(self, packet: bytes, addr: str) -> None: ...

    def send_ah_batch(self, packets: list[bytes], addr: str) -> None:
        """Send several whole AH packets to one peer (in one system call where it can)."""


SaEventHandler = Callable[[str, SadEvent], None]
"""on_sa_event(policy, event): ``RekeyRequested``, ``SaExpired`` or ``InboundRemoved``."""


class DataPlane:
    """TUN and ESP sockets joined through the SPD and SAD.

    The engine calls :meth:`install_child_sa`, :meth:`rekey_child_sa`,
    :meth:`activate_outbound`, :meth:`remove_child_sa`, :meth:`update_spd` and
    :meth:`stats`; it learns of trap hits through ``on_acquire`` and of lifetimes
    through ``on_sa_event``. Make the sockets with ``on_esp=data_plane.receive_esp``
    (UDP) / ``data_plane.receive_raw_esp`` (raw) / ``data_plane.receive_ah`` and hand
    them over with :meth:`attach`, which has them report each read's end to
    :meth:`end_receive_batch`. :meth:`start` registers the TUN reader and the SA timers
    on the loop; without it (in-memory tests) call :meth:`process_tun` and
    :meth:`handle_timer` directly.
    """

    receive_esp: Callable[[bytes, Address], None]
    """One ESP packet (from the SPI on) that arrived over UDP 4500 from an address."""
    receive_raw_esp: Callable[[bytes, str], None]
    """One ESP packet that arrived directly over IP (protocol 50) from a host."""
    receive_ah: Callable[[bytes, str], None]
    """One AH packet (IP protocol 51, the whole IP packet) that arrived from a host."""
    end_receive_batch: Callable[[], None]
    """The socket read batch that fed ``receive_esp`` ended: write what it decrypted to
    the TUN and deliver SA events now."""

    def __init__(
        self,
        tun: TunDevice,
        *,
        spd: Iterable[SpdEntry] = (),
        clock: Clock = time.monotonic,
        on_acquire: AcquireHandler | None = None,
        on_sa_event: SaEventHandler | None = None,
        rekey_grace: float = DEFAULT_REKEY_GRACE,
        acquire_interval: float = DEFAULT_ACQUIRE_INTERVAL,
    ) -> None:
        if acquire_interval < 0:
            raise ValueError(f"acquire interval must be >= 0 seconds, got {acquire_interval}")
        self.tun = tun
        self.clock = clock
        self.on_sa_event = on_sa_event
        self.counters = DataPlaneCounters()
        self.inbound_drops: dict[str, int] = {}
        self.sad = Sad(rekey_grace)
        self.spd = Spd()
        self._endpoint: DatagramEndpoint | None = None
        self._raw: RawEspSender | None = None
        self._raw_ah: RawAhSender | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._errors_logged: set[str] = set()
        self._tun_fd = tun.fileno()
        """The fd the loop reads, kept: a closed TUN reports -1 but must be unregistered."""
        self.sas = ChildSaTable(
            self.sad, bind_send=self._bind_send, deliver_events=self._deliver_events
        )
        self.outbound = OutboundPath(
            tun,
            self.spd,
            self.counters,
            route_for=self.sas.route,
            report_error=self._internal_error,
            on_acquire=on_acquire,
            acquire_interval=acquire_interval,
        )
        self.inbound = InboundPath(
            tun,
            clock,
            self.sad.decap,
            self.sad.decap_ah,
            self.counters,
            self.inbound_drops,
            checks=self.sas.checks,
            activate_on=self.sas.activate_on,
            inbound_route=self.sas.inbound_route,
            on_peer_activation=self._activated_by_peer,
            after_batch=self._housekeeping,
            report_error=self._internal_error,
        )
        # The sockets call these per packet: the inbound path's own bound methods, so no
        # call through DataPlane is added per packet (a delegating method would cost
        # about 50 ns of some 6.8 us per received packet, ~1%, in-memory).
        self.receive_esp = self.inbound.receive_esp
        self.receive_raw_esp = self.inbound.receive_raw_esp
        self.receive_ah = self.inbound.receive_ah
        self.end_receive_batch = self.inbound.end_receive_batch
        self.update_spd(spd)

    @property
    def on_acquire(self) -> AcquireHandler | None:
        """on_acquire(acquire): a packet hit a protect policy with no outbound SA."""
        return self.outbound.on_acquire

    @on_acquire.setter
    def on_acquire(self, handler: AcquireHandler | None) -> None:
        self.outbound.on_acquire = handler

    # -- wiring --------------------------------------------------------------------------

    def attach(
        self,
        endpoint: DatagramEndpoint | None = None,
        raw: RawEspSender | None = None,
        raw_ah: RawAhSender | None = None,
    ) -> None:
        """Give the data plane its UDP endpoint, raw ESP socket and/or raw AH socket to
        send through. Each reports the end of every read to :meth:`end_receive_batch` from
        then on, so decrypted packets reach the TUN in the read's own wake-up."""
        for receiver in (endpoint, raw, raw_ah):
            if receiver is not None:
                receiver.on_batch_end = self.end_receive_batch
                self.inbound.batch_ends_reported = True
        if endpoint is not None:
            self._endpoint = endpoint
        if raw is not None:
            self._raw = raw
        if raw_ah is not None:
            self._raw_ah = raw_ah
        for route in self.sas.routes():
            if route.outbound is not None:
                self._bind_send(route)

    def start(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Read the TUN device and run SA timers on ``loop`` (the running one by default)."""
        self._loop = loop or asyncio.get_running_loop()
        self.inbound.start(self._loop)
        if self._tun_fd >= 0:
            self._loop.add_reader(self._tun_fd, self.process_tun)
            self.inbound.read_tun = self.process_tun
        self._arm_timer()

    def stop(self) -> None:
        """Stop reading and cancel timers (what was decrypted is written first); the SAs
        stay installed."""
        self.inbound.stop()
        self.inbound.read_tun = None
        if self._loop is not None and not self._loop.is_closed() and self._tun_fd >= 0:
            self._loop.remove_reader(self._tun_fd)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
            self._timer_at = None
        self._loop = None

    def _bind_send(self, route: Route) -> None:
        """Point ``route`` at the socket its protocol and encapsulation use."""
        send: Callable[[bytes, Any], None] | None = None
        send_batch: Callable[[list[bytes], Any], None] | None = None
        if isinstance(route.outbound, OutboundAhSa):
            if self._raw_ah is not None:
                send, send_batch = self._raw_ah.send_ah, self._raw_ah.send_ah_batch
        elif route.encap_kind is Encap.RAW:
            if self._raw is not None:
                send, send_batch = self._raw.send_esp, self._raw.send_esp_batch
        elif self._endpoint is not None:
            send, send_batch = self._endpoint.send_esp, self._endpoint.send_esp_batch
        if send is None or send_batch is None:
            send = self._no_socket

            def send_each(packets: list[bytes], dest: Any) -> None:
                for packet in packets:
                    self._no_socket(packet, dest)

            send_batch = send_each
        route.send = send
        route.send_batch = send_batch

    def _no_socket(self, data: bytes, addr: Any) -> None:
        self.counters.encap_refused += 1

    # -- the engine's API ---------------------------------------------------------------

    def update_spd(self, entries: Iterable[SpdEntry]) -> None:
        """Install the whole ordered SPD (a plan carries it whole); flows are re-looked-up."""
        self.spd.replace(entries)
        for entry in self.spd.entries:
            if entry.action is Action.PROTECT:
                self.sas.route(entry.policy)
        self.outbound.clear_flows()

    def install_child_sa(
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
        now: float | None = None,
    ) -> None:
        """Install a child SA pair for ``policy`` (:meth:`ChildSaTable.install`, which
        says what the arguments are), then deliver the SAD's events."""
        self.sas.install(
            policy,
            inbound,
            outbound,
            peer,
            encap=encap,
            local=local,
            local_ts=local_ts,
            remote_ts=remote_ts,
            replay_window=replay_window,
            now=self.clock() if now is None else now,
        )
        self._after_change()

    def rekey_child_sa(
        self,
        policy: str,
        inbound: ChildSaParams,
        outbound: ChildSaParams,
        *,
        local_ts: Sequence[TrafficSelector] | None = None,
        remote_ts: Sequence[TrafficSelector] | None = None,
        replay_window: int = DEFAULT_WINDOW_SIZE,
        switch_outbound: bool = True,
        now: float | None = None,
    ) -> None:
        """Rekey ``policy``'s child SA make-before-break (:meth:`ChildSaTable.rekey`;
        with ``switch_outbound=False`` the new outbound SA waits for
        :meth:`activate_outbound`), then deliver the SAD's events."""
        self.sas.rekey(
            policy,
            inbound,
            outbound,
            local_ts=local_ts,
            remote_ts=remote_ts,
            replay_window=replay_window,
            switch_outbound=switch_outbound,
            now=self.clock() if now is None else now,
        )
        self._after_change()

    def activate_outbound(self, policy: str) -> None:
        """Switch ``policy`` to the outbound SA a ``switch_outbound=False`` rekey left
        waiting."""
        self.sas.activate(policy)
        self._after_change()

    def remove_child_sa(self, policy: str) -> None:
        """Remove every SA of ``policy`` (current and retiring); its SPD entry stays, so
        its traffic traps again."""
        self.sas.remove(policy)
        self._after_change()

    def policies(self) -> list[str]:
        """Policies with an outbound SA installed."""
        return self.sas.policies()

    def stats(self) -> DataPlaneStats:
        counters = self.counters.as_dict()
        return DataPlaneStats(counters, dict(self.inbound_drops), self.sas.sa_stats())

    # -- outbound: TUN -> ESP ------------------------------------------------------------

    def process_tun(self) -> int:
        """Read and handle up to ``TUN_BATCH`` packets from the TUN device (the loop calls
        this when the fd is readable). Returns how many were read."""
        now = self.clock()
        count = sent = 0
        try:
            count, sent = self.outbound.read(now)
        except Exception as exc:  # the packet path must survive its own bugs
            self._internal_error("outbound", exc)
        counters = self.counters
        counters.tun_rx += count
        counters.esp_tx += sent
        self._housekeeping(now)
        return count

    def _activated_by_peer(self, policy: str) -> None:
        # The first packet on a waiting SA's inbound partner (see ChildSaTable.activate_on).
        self.activate_outbound(policy)
        self.counters.outbound_activated_by_peer += 1

    # -- timers and events ---------------------------------------------------------------

    def handle_timer(self, now: float | None = None) -> None:
        """Run SA lifetimes and grace periods, then deliver events."""
        now = self.clock() if now is None else now
        self.sad.handle_timer(now)
        self._deliver_events()
        self.sas.resync()
        self._arm_timer()

    def _housekeeping(self, now: float) -> None:
        # Events raised on the packet path (volume lifetimes, sequence exhaustion).
        event = self.sad.next_event()
        if event is None:
            return
        expired = False
        while event is not None:
            expired = expired or isinstance(event, SaExpired)
            self._dispatch(event)
            event = self.sad.next_event()
        if expired:
            self.sad.handle_timer(now)
            self._deliver_events()
            self.sas.resync()
        self._arm_timer()

    def _deliver_events(self) -> None:
        event = self.sad.next_event()
        while event is not None:
            self._dispatch(event)
            event = self.sad.next_event()

    def _dispatch(self, event: SadEvent) -> None:
        if isinstance(event, InboundRemoved):
            policy = self.sas.forget_inbound(event.spi)
        elif event.direction is Direction.INBOUND:
            policy = self.sas.inbound_policy(event.spi)
        else:
            policy = self.sas.outbound_policy(event.spi)
        if self.on_sa_event is not None:
            try:
                self.on_sa_event(policy, event)
            except Exception as exc:
                self._internal_error("on_sa_event", exc)

    def _arm_timer(self) -> None:
        if self._loop is None:
            return
        deadline = self.sad.get_timer()
        if deadline == self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_at = deadline
        if deadline is not None:
            delay = max(0.0, deadline - self.clock())
            self._timer = self._loop.call_later(delay, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        self.handle_timer()

    def _after_change(self) -> None:
        self._deliver_events()
        self._arm_timer()

    # -- errors --------------------------------------------------------------------------

    def _internal_error(self, where: str, exc: Exception) -> None:
        self.counters.internal_errors += 1
        kind = f"{where}:{type(exc).__name__}"
        if kind not in self._errors_logged:
            self._errors_logged.add(kind)
            log.exception("data plane %s error (logged once per kind)", where, exc_info=exc)
