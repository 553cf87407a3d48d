"""The outbound half of the data plane: TUN -> SPD -> outbound SA -> socket.

:class:`Route` is where a protect policy's packets go; the flow cache maps packets to
routes, and the child SA table (``child_sa_install.ChildSaTable``) updates routes in
place on install, rekey and removal, so no cached flow goes stale.
:class:`OutboundPath` reads the TUN device and sends what it reads (see the speed notes
in ``dataplane``'s docstring); it knows the SPD and the routes, not the SAD. An AH
route's ``encap`` is an :class:`AhEncap`'s: the same call, whole IP packets in and out.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Callable
from typing import Any

from ..esp.ah import OutboundAhSa
from ..esp.sa import Drop, Mode, OutboundSa
from ..esp.spd import FLOW_KEY_END, Action, PacketInfo, Spd, TrafficSelector, parse_ip_packet
from .dataplane_model import Acquire, DataPlaneCounters, Encap
from .tun import TunDevice
from .udp import GSO_MAX_BYTES, GSO_MAX_SEGMENTS

TUN_BATCH = 256
"""Most packets read from the TUN device per wakeup before yielding to the event loop."""
FLOW_CACHE_LIMIT = 65536
AcquireHandler = Callable[[Acquire], None]


class Verdict(enum.Enum):
    BYPASS = "bypass"
    DISCARD = "discard"
    NO_POLICY = "no-policy"


class AhEncap:
    """An outbound AH SA (``esp.ah``) behind the ESP SA's ``encap(packet, next_header,
    now) -> bytes | None``, so routes and both send paths treat the two alike. AH takes
    the whole IP packet in both modes (``next_header`` is not needed) and gives the
    whole packet to send; a refusal (the SA counts why) gives None.

    Transport mode keeps the packet's own IPv4 header, identification included, and the
    identification is in the ICV; the raw socket's kernel would replace an
    identification of 0 (``rawah``), so such a packet, whole and unfragmented
    (RFC 6864 section 4.1 lets its source choose any value), gets one of ours first.
    """

    __slots__ = ("_ident", "_transport", "sa")

    def __init__(self, sa: OutboundAhSa) -> None:
        self.sa = sa
        self._transport = sa.mode is Mode.TRANSPORT
        self._ident = 0

    def encap(self, packet: bytes, next_header: int, now: float) -> bytes | None:
        if self._transport and packet[4:6] == b"\x00\x00" and packet[:1] and packet[0] >> 4 == 4:
            self._ident = self._ident % 0xFFFF + 1
            packet = packet[:4] + self._ident.to_bytes(2, "big") + packet[6:]
        result = self.sa.encap(packet, now)
        return None if isinstance(result, Drop) else result


class Route:
    """Where a protect policy's packets go; the packet path reads it through the flow
    cache, so install/rekey/remove update it in place and no cache entry goes stale."""

    __slots__ = (
        "acquire_after",
        "dest",
        "encap",
        "encap_kind",
        "inbound_spis",
        "local_packed",
        "local_ts",
        "outbound",
        "peer_host",
        "peer_packed",
        "pending",
        "policy",
        "remote_ts",
        "send",
        "send_batch",
        "transport",
        "verdict",
    )

    def __init__(self, policy: str) -> None:
        self.policy = policy
        self.verdict: Verdict | None = None
        """None for a protect route; a drop verdict for the shared non-protect routes."""
        self.outbound: OutboundSa | OutboundAhSa | None = None
        self.pending: OutboundSa | OutboundAhSa | None = None
        """A rekeyed outbound SA waiting for ``activate_outbound``."""
        self.encap: Callable[[bytes, int, float], bytes | None] | None = None
        """The current outbound SA's bound ``encap``; None while there is no SA (trap)."""
        self.send: Callable[[bytes, Any], None] | None = None
        self.send_batch: Callable[[list[bytes], Any], None] | None = None
        self.dest: Any = None
        """What ``send`` takes: ``(host, port)`` for UDP, the host for raw ESP and AH."""
        self.encap_kind = Encap.UDP
        self.peer_host = ""
        self.transport = False
        """ESP transport mode (the SA takes the segment); False for AH in either mode."""
        self.local_packed = b""
        self.peer_packed = b""
        """Transport mode: the outer addresses, for the rebuilt inbound IPv4 header."""
        self.inbound_spis: list[int] = []
        """Current inbound SPI last; earlier ones are retiring."""
        self.local_ts: tuple[TrafficSelector, ...] = ()
        self.remote_ts: tuple[TrafficSelector, ...] = ()
        """The negotiated selectors, kept for a rekey that does not restate them."""
        self.acquire_after = -float("inf")


def drop_route(verdict: Verdict) -> Route:
    route = Route(f"<{verdict.value}>")
    route.verdict = verdict
    return route


class OutboundPath:
    """Reading the TUN device and sending what it gives: the flow cache, the SPD lookup
    for packets the cache does not know, and trap-policy acquires."""

    def __init__(
        self,
        tun: TunDevice,
        spd: Spd,
        counters: DataPlaneCounters,
        *,
        route_for: Callable[[str], Route],
        report_error: Callable[[str, Exception], None],
        on_acquire: AcquireHandler | None,
        acquire_interval: float,
    ) -> None:
        self.tun = tun
        self.spd = spd
        """Read through on every lookup (never a bound ``lookup``): tests replace it."""
        self.counters = counters
        self.on_acquire = on_acquire
        self.acquire_interval = acquire_interval
        self._route_for = route_for
        """The protect policy's route, made on first use (``ChildSaTable.route``)."""
        self._report_error = report_error
        self._flows: dict[int, dict[bytes, Route]] = {p: {} for p in FLOW_KEY_END}
        self._drop_routes = {v: drop_route(v) for v in Verdict}
        self._tun_fd = tun.fileno()
        # A TUN with virtio-net headers (tun_offload.OffloadTun) prefixes every read.
        self._vnet_hdr_len: int = getattr(tun, "vnet_hdr_len", 0)
        self._tun_bufsize = max(tun.mtu, 1500) + 64 + self._vnet_hdr_len

    def read(self, now: float) -> tuple[int, int]:
        """Read and handle up to ``TUN_BATCH`` packets; returns (packets read, ESP
        packets the fast path sent)."""
        if self._tun_fd >= 0:
            return self._drain_fd(self._tun_fd, now)
        return self._drain_device(now), 0

    def clear_flows(self) -> None:
        """Forget every cached flow (the SPD changed)."""
        for table in self._flows.values():
            table.clear()

    def cached_flows(self) -> int:
        return sum(len(table) for table in self._flows.values())

    def _drain_fd(self, fd: int, now: float) -> tuple[int, int]:
        """Read until EAGAIN or ``TUN_BATCH``; returns (packets read, sent fast)."""
        count = sent = 0
        # ESP packets of one route held for one GSO send (UDP_SEGMENT): equal lengths,
        # the last may be shorter. Held only within this wakeup, and never the wakeup's
        # first packet, which leaves at once: a lone packet (a ping, an ACK) does not
        # wait for the read that finds the TUN empty, and its raised BlockingIOError.
        held: list[bytes] = []
        held_route: Route | None = None
        held_size = held_limit = 0
        try:
            while count < TUN_BATCH:
                packet = os.read(fd, self._tun_bufsize)
                count += 1
                if self._vnet_hdr_len:
                    packet = packet[self._vnet_hdr_len :]
                # Plain IPv4 (IHL 5), TCP, UDP or ICMP, not a later fragment: the flow
                # cache, keyed as FLOW_KEY_END says (inlined: the per-packet path).
                if (
                    packet[:1] == b"\x45"
                    and len(packet) >= 24
                    and not (packet[6] & 0x1F or packet[7])
                ):
                    protocol = packet[9]
                    if protocol == 6:
                        route = self._flows[6].get(packet[12:24])
                    elif protocol == 17:
                        route = self._flows[17].get(packet[12:24])
                    elif protocol == 1:
                        route = self._flows[1].get(packet[12:20])
                    else:
                        route = None
                    if route is not None:
                        encap = route.encap
                        if encap is not None and not route.transport:
                            esp = encap(packet, 4, now)
                            if esp is not None:
                                sent += 1
                                if count == 1:
                                    route.send(esp, route.dest)  # type: ignore[misc]
                                    continue
                                length = len(esp)
                                if (
                                    route is held_route
                                    and length <= held_size
                                    and len(held) < held_limit
                                ):
                                    held.append(esp)
                                    if length < held_size:  # a shorter one ends a run
                                        route.send_batch(held, route.dest)  # type: ignore[misc]
                                        held = []
                                        held_route = None
                                    continue
                                if held_route is not None:
                                    held_route.send_batch(held, held_route.dest)  # type: ignore[misc]
                                held = [esp]
                                held_route = route
                                held_size = length
                                held_limit = min(GSO_MAX_SEGMENTS, GSO_MAX_BYTES // length)
                                continue
                if held_route is not None:  # keep a flow's order across both paths
                    held_route.send_batch(held, held_route.dest)  # type: ignore[misc]
                    held = []
                    held_route = None
                self._outbound_slow(packet, now)
        except BlockingIOError:
            pass  # drained: the read that raised got no packet
        if held_route is not None:
            held_route.send_batch(held, held_route.dest)  # type: ignore[misc]
        return count, sent

    def _drain_device(self, now: float) -> int:
        count = 0
        while count < TUN_BATCH:
            packet = self.tun.read()
            if packet is None:
                break
            count += 1
            self._outbound_slow(packet, now)
        return count

    def _outbound_slow(self, packet: bytes, now: float) -> None:
        """Everything the fast path did not finish: classify, cache, act, count."""
        info = parse_ip_packet(packet)
        if info is None:
            self.counters.unparsable += 1
            return
        route = self._classify(info)
        if (
            info.version == 4
            and info.protocol in FLOW_KEY_END
            and packet[0] == 0x45
            and not (packet[6] & 0x1F or packet[7])
        ):
            table = self._flows[info.protocol]
            if len(table) >= FLOW_CACHE_LIMIT:
                table.clear()
            table[packet[12 : FLOW_KEY_END[info.protocol]]] = route
        verdict = route.verdict
        if verdict is not None:
            counters = self.counters
            if verdict is Verdict.BYPASS:
                counters.bypass_misrouted += 1
            elif verdict is Verdict.DISCARD:
                counters.discarded += 1
            else:
                counters.no_policy += 1
            return
        encap = route.encap
        if encap is None:
            self._trap(route, info, now)
            return
        if route.transport:
            self._send_transport(route, packet, info, now)
            return
        esp = encap(packet, 4 if info.version == 4 else 41, now)
        if esp is None:
            self.counters.encap_refused += 1
            return
        route.send(esp, route.dest)  # type: ignore[misc]
        self.counters.esp_tx += 1

    def _classify(self, info: PacketInfo) -> Route:
        entry = self.spd.lookup(info)
        if entry is None:
            return self._drop_routes[Verdict.NO_POLICY]
        if entry.action is Action.BYPASS:
            return self._drop_routes[Verdict.BYPASS]
        if entry.action is Action.DISCARD:
            return self._drop_routes[Verdict.DISCARD]
        return self._route_for(entry.policy)

    def _trap(self, route: Route, info: PacketInfo, now: float) -> None:
        self.counters.no_sa += 1
        if now < route.acquire_after:
            return
        route.acquire_after = now + self.acquire_interval
        self.counters.acquires += 1
        if self.on_acquire is not None:
            try:
                self.on_acquire(Acquire(route.policy, info))
            except Exception as exc:
                self._report_error("on_acquire", exc)

    def _send_transport(self, route: Route, packet: bytes, info: PacketInfo, now: float) -> None:
        # RFC 4303 section 3.1.1: transport mode protects the upper-layer segment; the
        # outer header is the socket's. Only plain IPv4 is carried here.
        if info.version != 4 or packet[0] != 0x45:
            self.counters.transport_unsupported += 1
            return
        esp = route.encap(packet[20:], info.protocol, now)  # type: ignore[misc]
        if esp is None:
            self.counters.encap_refused += 1
            return
        route.send(esp, route.dest)  # type: ignore[misc]
        self.counters.esp_tx += 1
