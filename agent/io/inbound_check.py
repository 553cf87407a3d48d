"""The inbound policy check of decrypted tunnel-mode packets (RFC 4301 section 5.2 step
4: the inner packet must match the selectors of the SA it arrived on), with a flow cache.

``InboundSa`` (and ``InboundAhSa``) can do this check itself, but it parses every packet
to do so; on the receive hot path the data plane installs tunnel-mode SAs without
selectors and asks this check instead, which answers repeated plain IPv4 TCP, UDP and
ICMP flows from one bytes slice and one dict get (the outbound flow cache's key,
``esp.spd.FLOW_KEY_END``: addresses and ports, addresses alone for ICMP, so a ping's
echoes are judged once). Everything else is parsed and checked in full. A refused
packet is counted in its SA's ``policy_drops``, as ``InboundSa`` would (having been
opened, it also counts in the SA's ``packets_in``, which ``InboundSa``'s own check would
not).
"""

from __future__ import annotations

from collections.abc import Sequence

from ..esp.ah import InboundAhSa
from ..esp.sa import InboundSa
from ..esp.spd import FLOW_KEY_END, TrafficSelector, inbound_allowed, parse_ip_packet

FLOW_CACHE_LIMIT = 16384


class InboundCheck:
    """The selectors of one inbound tunnel-mode SA and the flows already judged."""

    __slots__ = ("_flows", "local_ts", "remote_ts", "sa")

    def __init__(
        self,
        sa: InboundSa | InboundAhSa,
        local_ts: Sequence[TrafficSelector],
        remote_ts: Sequence[TrafficSelector],
    ) -> None:
        if not local_ts or not remote_ts:
            raise ValueError("an inbound check needs both local and remote traffic selectors")
        self.sa = sa
        self.local_ts = tuple(local_ts)
        self.remote_ts = tuple(remote_ts)
        self._flows: dict[int, tuple[int, dict[bytes, bool]]] = {
            protocol: (end, {}) for protocol, end in FLOW_KEY_END.items()
        }
        """Per protocol: where its key ends, and the verdicts by key."""

    def allows(self, packet: bytes) -> bool:
        """Whether the decrypted inner ``packet`` may be delivered; counts a refusal."""
        if packet[:1] == b"\x45" and len(packet) >= 24 and not (packet[6] & 0x1F or packet[7]):
            flows = self._flows.get(packet[9])
            if flows is not None:
                end, table = flows
                key = packet[12:end]
                verdict = table.get(key)
                if verdict is None:
                    verdict = self._judge(packet)
                    if len(table) >= FLOW_CACHE_LIMIT:
                        table.clear()
                    table[key] = verdict
                if not verdict:
                    self.sa.counters.policy_drops += 1
                return verdict
        if self._judge(packet):
            return True
        self.sa.counters.policy_drops += 1
        return False

    def _judge(self, packet: bytes) -> bool:
        info = parse_ip_packet(packet)
        return info is not None and inbound_allowed(self.local_ts, self.remote_ts, info)
