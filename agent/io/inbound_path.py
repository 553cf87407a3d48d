"""The inbound half of the data plane: ESP socket -> SAD -> inbound checks -> TUN.

An ESP packet from either socket (UDP 4500, RFC 3948, or raw protocol 50) is opened by
the SAD (SPI lookup, anti-replay, ICV; RFC 4301 section 5.2), checked against the
selectors of the SA it arrived on (``inbound_check`` for tunnel mode), and the inner
packet is held for the TUN device; transport-mode segments get an IPv4 header rebuilt
from the SA's outer addresses. The packets of one socket read batch are written
together once it ends: the socket calls :meth:`InboundPath.end_receive_batch` after its
last packet, so a lone packet (a ping) reaches the TUN within the same wake-up. Until
the data plane says its receivers do that (``batch_ends_reported``), a batch also ends
on the next event-loop iteration; once they do, no callback is scheduled per read (a
cancelled one still cost the loop an extra turn, with an ``epoll_wait``, per ping).
:class:`InboundPath` is this per-packet code (see the speed notes in ``dataplane``'s
docstring); it knows the SAD's ``decap`` and what the child SA table
keeps per inbound SPI, not the SPD.

AH packets (protocol 51, the whole IP packet as received) take the same way through the
SAD's ``decap_ah``: what it gives, the inner packet (tunnel) or the packet without AH
(transport), is already what the TUN takes; tunnel-mode selectors are checked here by
the SA's ``InboundCheck`` (keyed by SPI, as ESP's), transport-mode ones by the SA.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Mapping

from ..esp.ah import AhDecapResult
from ..esp.ah_icv import received_layout
from ..esp.sa import DecapResult, Drop
from .dataplane_model import DataPlaneCounters, ipv4_header
from .inbound_check import InboundCheck
from .outbound_path import Route
from .tun import TunDevice
from .udp import Address


class InboundPath:
    """Opening ESP packets and writing what they hold to the TUN device, one socket
    read batch at a time.

    From the child SA table it reads, per packet, ``checks`` (tunnel-mode selector
    checks by SPI) and ``activate_on`` (SPIs whose first packet switches their policy's
    waiting outbound SA, which ``on_peer_activation(policy)`` does), and for transport
    mode ``inbound_route(spi)``. ``after_batch(now)`` runs once each batch is written
    (the data plane delivers SA events raised on the packet path there).
    """

    def __init__(
        self,
        tun: TunDevice,
        clock: Callable[[], float],
        decap: Callable[[bytes, float], DecapResult],
        decap_ah: Callable[[bytes, float], AhDecapResult],
        counters: DataPlaneCounters,
        inbound_drops: dict[str, int],
        *,
        checks: Mapping[bytes, InboundCheck],
        activate_on: Mapping[bytes, str],
        inbound_route: Callable[[int], Route | None],
        on_peer_activation: Callable[[str], None],
        after_batch: Callable[[float], None],
        report_error: Callable[[str, Exception], None],
    ) -> None:
        self.tun = tun
        self.clock = clock
        self.counters = counters
        self.inbound_drops = inbound_drops
        self._sad_decap = decap
        self._sad_decap_ah = decap_ah
        self._checks = checks
        self._activate_on = activate_on
        self._inbound_route = inbound_route
        self._on_peer_activation = on_peer_activation
        self._after_batch = after_batch
        self._report_error = report_error
        self._loop: asyncio.AbstractEventLoop | None = None
        self.batch_ends_reported = False
        """Every receiver calls :meth:`end_receive_batch` after its read's packets."""
        self.read_tun: Callable[[], object] | None = None
        """Called after a batch was written to the TUN (the data plane's TUN read, while
        the loop watches the TUN): what the kernel answered to it in the write itself,
        a ping's reply or TCP's ACKs, is read and sent in this wake-up instead of the
        loop's next turn (one ``epoll_wait`` less on a ping's path)."""
        self._batch_open = False
        self._batch_end_handle: asyncio.Handle | None = None
        self._batch_now = 0.0
        self._rx_pending: list[bytes] = []
        """Decrypted packets of the current receive batch, written when it ends."""
        self._tun_fd = tun.fileno()
        # A TUN with virtio-net headers (tun_offload.OffloadTun) takes whole batches, so
        # decrypted TCP segments reach the kernel joined.
        self._vnet_hdr_len: int = getattr(tun, "vnet_hdr_len", 0)
        self._tun_write = self._make_tun_write()
        self._tun_write_batch: Callable[[list[bytes]], None] | None = getattr(
            tun, "write_batch", None
        )

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """End receive batches on ``loop`` when the socket does not say they ended."""
        self._loop = loop

    def stop(self) -> None:
        """Write what was decrypted and forget the loop."""
        self._flush_rx()
        self._batch_open = False
        if self._batch_end_handle is not None:
            self._batch_end_handle.cancel()
            self._batch_end_handle = None
        self._loop = None

    def receive_esp(self, data: bytes, addr: Address) -> None:
        """One ESP packet (from the SPI on) that arrived over UDP 4500 from ``addr``."""
        # One clock read per socket read batch: the batch ends in _end_batch.
        in_batch = self._batch_open
        now = self._batch_now if in_batch else self.clock()
        try:
            self._open(data, now)
        except Exception as exc:  # the packet path must survive its own bugs
            self._report_error("inbound", exc)
        if not in_batch:
            self._batch_now = now
            self._schedule_batch_end()

    def _open(self, data: bytes, now: float) -> None:
        result = self._sad_decap(data, now)
        self.counters.esp_rx += 1
        if isinstance(result, Drop):
            self._count_inbound_drop(result)
            return
        payload, next_header = result
        if self._activate_on:
            policy = self._activate_on.get(data[:4])
            if policy is not None:
                self._on_peer_activation(policy)
        if next_header == 4 or next_header == 41:
            check = self._checks.get(data[:4])
            if check is not None and not check.allows(payload):
                self._count_inbound_drop(Drop.POLICY)
                return
            self._rx_pending.append(payload)
        elif not self._deliver_transport(data, payload, next_header):
            return
        self.counters.tun_tx += 1

    def receive_ah(self, data: bytes, host: str) -> None:
        """One AH packet (IP protocol 51, IP header first) that arrived from ``host``."""
        in_batch = self._batch_open
        now = self._batch_now if in_batch else self.clock()
        try:
            self._open_ah(data, now)
        except Exception as exc:  # the packet path must survive its own bugs
            self._report_error("inbound", exc)
        if not in_batch:
            self._batch_now = now
            self._schedule_batch_end()

    def _open_ah(self, data: bytes, now: float) -> None:
        result = self._sad_decap_ah(data, now)
        counters = self.counters
        counters.ah_rx += 1
        if isinstance(result, Drop):
            self._count_ah_drop(result)
            return
        if self._checks or self._activate_on:
            spi = _ah_spi(data)
            if self._activate_on:
                policy = self._activate_on.get(spi)
                if policy is not None:
                    self._on_peer_activation(policy)
            check = self._checks.get(spi)
            if check is not None and not check.allows(result):
                self._count_ah_drop(Drop.POLICY)
                return
        self._rx_pending.append(result)
        counters.tun_tx += 1

    def _count_ah_drop(self, drop: Drop) -> None:
        self.counters.ah_rx_dropped += 1
        reason = drop.value
        self.inbound_drops[reason] = self.inbound_drops.get(reason, 0) + 1

    def receive_raw_esp(self, data: bytes, host: str) -> None:
        """One ESP packet that arrived directly over IP (protocol 50) from ``host``."""
        self.receive_esp(data, (host, 0))

    def _deliver_transport(self, esp: bytes, payload: bytes, protocol: int) -> bool:
        # Transport mode: rebuild an IPv4 header around the segment from the SA's outer
        # addresses (the peer's as source, ours as destination; RFC 4303 section 3.1.1).
        route = self._inbound_route(int.from_bytes(esp[:4], "big"))
        if route is None or not route.transport:
            self.counters.transport_unsupported += 1
            return False
        header = ipv4_header(route.peer_packed, route.local_packed, protocol, payload)
        self._rx_pending.append(header + payload)
        return True

    def _count_inbound_drop(self, drop: Drop) -> None:
        self.counters.esp_rx_dropped += 1
        reason = drop.value
        self.inbound_drops[reason] = self.inbound_drops.get(reason, 0) + 1

    def end_receive_batch(self) -> None:
        """The socket read batch that fed :meth:`receive_esp` ended: write what it
        decrypted to the TUN and deliver SA events now."""
        if not self._batch_open:
            return
        handle = self._batch_end_handle
        if handle is not None:
            handle.cancel()
        self._end_batch()

    def _schedule_batch_end(self) -> None:
        # Decrypted packets go to the TUN together once the batch is done, and events are
        # delivered: at end_receive_batch, or failing that on the next loop iteration
        # (with no wait) for a receiver that does not report its batch ends.
        self._batch_open = True
        if self.batch_ends_reported:
            return
        if self._loop is not None:
            self._batch_end_handle = self._loop.call_soon(self._end_batch)
        else:
            self._end_batch()

    def _end_batch(self) -> None:
        self._batch_open = False
        self._batch_end_handle = None
        wrote = bool(self._rx_pending)
        self._flush_rx()
        self._after_batch(self.clock())
        if wrote and self.read_tun is not None:
            self.read_tun()

    def _flush_rx(self) -> None:
        pending = self._rx_pending
        if not pending:
            return
        self._rx_pending = []
        try:
            if self._tun_write_batch is not None:
                self._tun_write_batch(pending)
            else:
                write = self._tun_write
                for packet in pending:
                    write(packet)
        except Exception as exc:  # the packet path must survive its own bugs
            self._report_error("tun write", exc)

    def _make_tun_write(self) -> Callable[[bytes], None]:
        if self._tun_fd < 0 or self._vnet_hdr_len:
            return self.tun.write
        return self._write_fd

    def _write_fd(self, packet: bytes) -> None:
        try:  # noqa: SIM105 - a try block is cheaper than suppress() per packet
            os.write(self._tun_fd, packet)
        except BlockingIOError:
            pass  # a full kernel queue drops the packet, as a router would


def _ah_spi(packet: bytes) -> bytes:
    """The SPI (4 octets) of an AH packet the SAD accepted (so its layout is sound)."""
    if packet[:1] == b"\x45":
        return packet[24:28]
    layout = received_layout(packet)
    return b"" if layout is None else packet[layout.at + 4 : layout.at + 8]
