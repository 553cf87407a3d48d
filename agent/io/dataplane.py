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
* A flow cache maps the address/port bytes of plain IPv4 TCP/UDP packets (one bytes
  slice, one dict get) to the policy's ``Route``, whose bound ``encap`` and ``send``
  are swapped in place on install, rekey and removal; everything else takes the general
  path (``parse_ip_packet`` and ``Spd.lookup``) and fills the cache.
* ESP packets of one route and one size leave in one UDP GSO send (``UDP_SEGMENT``,
  ``UdpEndpoint.send_esp_batch``): the kernel routes and builds headers once per up to
  64 datagrams and splits them late. Over raw ESP the same run leaves in one
  ``sendmmsg`` (``RawEspSocket.send_esp_batch``); both sockets read with ``recvmmsg``.
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

Layout: the per-packet code is in :mod:`.outbound_path` (TUN -> ESP) and
:mod:`.inbound_path` (ESP -> TUN), installing, rekeying and removing child SAs in
:mod:`.child_sa_install`; :class:`DataPlane` inherits all three and holds the state they
share, the wiring, the SA timers and events, and the routes' socket binding.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from ..esp.sa import OutboundSa, SaExpired
from ..esp.sad import DEFAULT_REKEY_GRACE, InboundRemoved, Sad, SadEvent
from ..esp.spd import Action, Spd, SpdEntry
from .child_sa_install import ChildSaInstall
from .dataplane_model import DataPlaneCounters, DataPlaneStats, Encap, SaStats
from .inbound_check import InboundCheck
from .inbound_path import InboundPath
from .outbound_path import (
    FLOW_KEY_END,
    AcquireHandler,
    OutboundPath,
    Route,
    Verdict,
    drop_route,
)
from .tun import TunDevice
from .udp import DatagramEndpoint

log = logging.getLogger(__name__)

DEFAULT_ACQUIRE_INTERVAL = 1.0
"""Seconds between two acquires for one policy (the kernel's and charon's habit)."""

Clock = Callable[[], float]


class RawEspSender(Protocol):
    """What the data plane needs from a raw ESP socket (``rawesp.RawEspSocket``)."""

    def send_esp(self, data: bytes, addr: str) -> None: ...

    def send_esp_batch(self, packets: list[bytes], addr: str) -> None:
        """Send several ESP packets to one peer (in one system call where it can)."""


SaEventHandler = Callable[[str, SadEvent], None]
"""on_sa_event(policy, event): ``RekeyRequested``, ``SaExpired`` or ``InboundRemoved``."""


class DataPlane(ChildSaInstall, OutboundPath, InboundPath):
    """TUN and ESP sockets joined through the SPD and SAD.

    The engine calls :meth:`install_child_sa`, :meth:`rekey_child_sa`,
    :meth:`remove_child_sa`, :meth:`update_spd` and :meth:`stats`; it learns of trap hits
    through ``on_acquire`` and of lifetimes through ``on_sa_event``. Wire the sockets with
    ``on_esp=data_plane.receive_esp`` (UDP) / ``data_plane.receive_raw_esp`` (raw) and
    ``on_batch_end=data_plane.end_receive_batch``, and hand them over with
    :meth:`attach`. :meth:`start` registers the TUN reader and the SA timers on the loop;
    without it (in-memory tests) call :meth:`process_tun` and :meth:`handle_timer`
    directly.
    """

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
        self.on_acquire = on_acquire
        self.on_sa_event = on_sa_event
        self.acquire_interval = acquire_interval
        self.counters = DataPlaneCounters()
        self.inbound_drops: dict[str, int] = {}
        self.sad = Sad(rekey_grace)
        self.spd = Spd()
        self._routes: dict[str, Route] = {}
        self._drop_routes = {v: drop_route(v) for v in Verdict}
        self._spi_policy: dict[int, str] = {}
        self._outbound_policy: dict[int, str] = {}
        self._flows: dict[int, dict[bytes, Route]] = {p: {} for p in FLOW_KEY_END}
        self._checks: dict[bytes, InboundCheck] = {}
        self._endpoint: DatagramEndpoint | None = None
        self._raw: RawEspSender | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._housekeeping_pending = False
        self._housekeeping_handle: asyncio.Handle | None = None
        self._batch_now = 0.0
        self._errors_logged: set[str] = set()
        self._tun_fd = tun.fileno()
        # A TUN with virtio-net headers (tun_offload.OffloadTun) prefixes every read and
        # takes whole batches, so decrypted TCP segments reach the kernel joined.
        self._vnet_hdr_len: int = getattr(tun, "vnet_hdr_len", 0)
        self._tun_bufsize = max(tun.mtu, 1500) + 64 + self._vnet_hdr_len
        self._tun_write = self._make_tun_write()
        self._tun_write_batch: Callable[[list[bytes]], None] | None = getattr(
            tun, "write_batch", None
        )
        self._rx_pending: list[bytes] = []
        """Decrypted packets of the current receive batch, written when it ends."""
        self._sad_decap = self.sad.decap
        self._activate_on: dict[bytes, str] = {}
        """New inbound SPIs (4 octets) whose policy's outbound SA waits for activation:
        the first packet that opens on one shows the peer sends on its new SA, so it
        holds the inbound half of ours too (RFC 7296 section 2.8)."""
        self.update_spd(spd)

    # -- wiring --------------------------------------------------------------------------

    def attach(
        self, endpoint: DatagramEndpoint | None = None, raw: RawEspSender | None = None
    ) -> None:
        """Give the data plane its UDP endpoint and/or raw ESP socket to send through."""
        if endpoint is not None:
            self._endpoint = endpoint
        if raw is not None:
            self._raw = raw
        for route in self._routes.values():
            if route.outbound is not None:
                self._bind_send(route)

    def start(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Read the TUN device and run SA timers on ``loop`` (the running one by default)."""
        self._loop = loop or asyncio.get_running_loop()
        if self._tun_fd >= 0:
            self._loop.add_reader(self._tun_fd, self.process_tun)
        self._arm_timer()

    def stop(self) -> None:
        """Stop reading and cancel timers (what was decrypted is written first); the SAs
        stay installed."""
        self._flush_rx()
        self._housekeeping_pending = False
        if self._housekeeping_handle is not None:
            self._housekeeping_handle.cancel()
            self._housekeeping_handle = None
        if self._loop is not None and not self._loop.is_closed() and self._tun_fd >= 0:
            self._loop.remove_reader(self._tun_fd)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
            self._timer_at = None
        self._loop = None

    # -- the engine's API ---------------------------------------------------------------

    def update_spd(self, entries: Iterable[SpdEntry]) -> None:
        """Install the whole ordered SPD (a plan carries it whole); flows are re-looked-up."""
        self.spd.replace(entries)
        for entry in self.spd.entries:
            if entry.action is Action.PROTECT:
                self._route(entry.policy)
        self._clear_flows()

    def policies(self) -> list[str]:
        """Policies with an outbound SA installed."""
        return sorted(p for p, r in self._routes.items() if r.outbound is not None)

    def stats(self) -> DataPlaneStats:
        sas = [
            SaStats.of(self._routes[policy].peer_host, policy, out, None)
            for policy, out in self.sad.outbound_sas()
        ]
        for sa in self.sad.inbound_sas():
            policy = self._spi_policy.get(sa.spi, "")
            owner = self._routes.get(policy)
            peer = owner.peer_host if owner is not None else ""
            sas.append(SaStats.of(peer, policy, sa, self.sad.retiring(sa.spi)))
        counters = self.counters.as_dict()
        return DataPlaneStats(counters, dict(self.inbound_drops), sas)

    # -- outbound: TUN -> ESP ------------------------------------------------------------

    def process_tun(self) -> int:
        """Read and handle up to ``TUN_BATCH`` packets from the TUN device (the loop calls
        this when the fd is readable). Returns how many were read."""
        now = self.clock()
        fd = self._tun_fd
        count = sent = 0
        try:
            if fd >= 0:
                count, sent = self._drain_fd(fd, now)
            else:
                count = self._drain_device(now)
        except Exception as exc:  # the packet path must survive its own bugs
            self._internal_error("outbound", exc)
        counters = self.counters
        counters.tun_rx += count
        counters.esp_tx += sent
        self._housekeeping(now)
        return count

    # -- timers and events ---------------------------------------------------------------

    def handle_timer(self, now: float | None = None) -> None:
        """Run SA lifetimes and grace periods, then deliver events."""
        now = self.clock() if now is None else now
        self.sad.handle_timer(now)
        self._deliver_events()
        self._resync_routes()
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
            self._resync_routes()
        self._arm_timer()

    def _deliver_events(self) -> None:
        event = self.sad.next_event()
        while event is not None:
            self._dispatch(event)
            event = self.sad.next_event()

    def _dispatch(self, event: SadEvent) -> None:
        if isinstance(event, InboundRemoved):
            self._checks.pop(event.spi.to_bytes(4, "big"), None)
            policy = self._spi_policy.pop(event.spi, "")
            route = self._routes.get(policy)
            if route is not None and event.spi in route.inbound_spis:
                route.inbound_spis.remove(event.spi)
        elif event.direction == "in":
            policy = self._spi_policy.get(event.spi, "")
        else:
            policy = self._outbound_policy.get(event.spi, "")
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

    # -- routes --------------------------------------------------------------------------

    def _route(self, policy: str) -> Route:
        route = self._routes.get(policy)
        if route is None:
            route = self._routes[policy] = Route(policy)
        return route

    def _set_outbound(self, route: Route, sa: OutboundSa | None) -> None:
        route.outbound = sa
        if sa is None:
            route.encap = None
            route.send = None
            route.send_batch = None
            return
        self._bind_send(route)
        route.encap = sa.encap

    def _bind_send(self, route: Route) -> None:
        if route.encap_kind is Encap.RAW:
            route.send = self._no_socket if self._raw is None else self._raw.send_esp
        else:
            route.send = self._no_socket if self._endpoint is None else self._endpoint.send_esp
        if route.encap_kind is Encap.UDP and self._endpoint is not None:
            route.send_batch = self._endpoint.send_esp_batch
        elif route.encap_kind is Encap.RAW and self._raw is not None:
            route.send_batch = self._raw.send_esp_batch
        else:
            send = route.send

            def send_each(packets: list[bytes], dest: Any) -> None:
                for packet in packets:
                    send(packet, dest)

            route.send_batch = send_each

    def _no_socket(self, data: bytes, addr: Any) -> None:
        self.counters.encap_refused += 1

    def _resync_routes(self) -> None:
        """Follow the SAD after it removed expired SAs on its own."""
        for policy, route in self._routes.items():
            current = self.sad.outbound(policy)
            if current is not route.outbound:
                if route.outbound is not None:
                    self._outbound_policy.pop(route.outbound.spi, None)
                self._set_outbound(route, current)

    def _clear_flows(self) -> None:
        for table in self._flows.values():
            table.clear()

    # -- errors --------------------------------------------------------------------------

    def _internal_error(self, where: str, exc: Exception) -> None:
        self.counters.internal_errors += 1
        kind = f"{where}:{type(exc).__name__}"
        if kind not in self._errors_logged:
            self._errors_logged.add(kind)
            log.exception("data plane %s error (logged once per kind)", where, exc_info=exc)
