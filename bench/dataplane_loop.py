"""The data plane's own cost per packet, each way, one core, no kernel sends.

Outbound: 64 UDP packets are written into a TUN stand-in (an AF_UNIX datagram pair, read
like a TUN fd) and one ``DataPlane.process_tun`` reads them: the fd path, the flow
cache, AES-128-GCM sealing and the GSO run holding, with the ESP handed to an endpoint
that only counts. Inbound: 64 packets sealed beforehand go through
``DataPlane.receive_esp`` and one ``end_receive_batch`` (SAD lookup, anti-replay,
opening, the tunnel-mode selector check, the TUN writes). Prints one JSON line:

    {"bench": "dataplane_loop", "outbound_ns": ..., "inbound_ns": ..., "payload": P,
     "batches": N, "repeats": R}

Each figure is nanoseconds per packet of the fastest 64-packet batch of all
``--repeats`` x ``--batches`` (the minimum, so that other work on a shared machine
does not show in it).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from vpnfleet.agent.esp.sa import OutboundSa, SaParams
from vpnfleet.agent.esp.spd import Action, Selector, SpdEntry, TrafficSelector
from vpnfleet.agent.esp.transforms import Encryption
from vpnfleet.agent.io.dataplane import DataPlane

# The repository root, for the helpers the tests share (tests/support).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.support.dataplane_pair import POLICY, SITE_A, SITE_B, SocketTun, udp4

BATCH = 64
SOURCE, TARGET = "10.1.0.5", "10.2.0.7"


def params(spi: int) -> SaParams:
    return SaParams(spi, Encryption.AES128GCM16, bytes([spi & 0xFF]) * 20)


class CountingEndpoint:
    """Takes ESP packets as ``UdpEndpoint`` does, and only counts them."""

    def __init__(self) -> None:
        self.sent = 0

    def send_esp(self, data: bytes, addr: Any) -> None:
        self.sent += 1

    def send_esp_batch(self, packets: list[bytes], addr: Any) -> None:
        self.sent += len(packets)


def packets(payload: int) -> list[bytes]:
    return [udp4(SOURCE, TARGET, sport=1000 + i % 4, size=payload) for i in range(BATCH)]


def outbound(payload: int, batches: int) -> float:
    tun = SocketTun()
    try:
        spd = [SpdEntry(Selector.parse(SITE_A, SITE_B), Action.PROTECT, POLICY)]
        plane = DataPlane(tun, spd=spd, clock=lambda: 1.0)
        endpoint = CountingEndpoint()
        plane.attach(endpoint)  # type: ignore[arg-type]
        plane.install_child_sa(POLICY, params(0x2002), params(0x1001), "192.0.2.2")
        batch = packets(payload)
        best = float("inf")
        for _ in range(batches):
            for packet in batch:
                tun.inject(packet)
            start = time.perf_counter()
            plane.process_tun()
            best = min(best, time.perf_counter() - start)
        assert endpoint.sent == BATCH * batches, endpoint.sent
        return best / BATCH
    finally:
        tun.close()


def inbound(payload: int, batches: int) -> float:
    tun = SocketTun()
    try:
        spd = [SpdEntry(Selector.parse(SITE_B, SITE_A), Action.PROTECT, POLICY)]
        plane = DataPlane(tun, spd=spd, clock=lambda: 1.0)
        plane.attach(CountingEndpoint())  # type: ignore[arg-type]
        local, remote = TrafficSelector.from_network(SITE_B), TrafficSelector.from_network(SITE_A)
        plane.install_child_sa(
            POLICY,
            params(0x1001),
            params(0x2002),
            "192.0.2.1",
            local_ts=(local,),
            remote_ts=(remote,),
        )
        seal = OutboundSa(params(0x1001), 1.0).encap
        batch = packets(payload)
        sealed = [[seal(packet, 4, 1.0) for packet in batch] for _ in range(batches)]
        receive, end = plane.receive_esp, plane.end_receive_batch
        peer = ("192.0.2.1", 4500)
        best = float("inf")
        for esp_packets in sealed:
            start = time.perf_counter()
            for esp in esp_packets:
                receive(esp, peer)  # type: ignore[arg-type]
            end()
            best = min(best, time.perf_counter() - start)
            assert len(tun.delivered()) == BATCH
        return best / BATCH
    finally:
        tun.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--payload", type=int, default=200, help="UDP payload octets")
    parser.add_argument("--batches", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=4)
    args = parser.parse_args()
    out = min(outbound(args.payload, args.batches) for _ in range(args.repeats))
    into = min(inbound(args.payload, args.batches) for _ in range(args.repeats))
    print(
        json.dumps(
            {
                "bench": "dataplane_loop",
                "outbound_ns": round(1e9 * out),
                "inbound_ns": round(1e9 * into),
                "payload": args.payload,
                "batches": args.batches,
                "repeats": args.repeats,
            }
        )
    )


if __name__ == "__main__":
    main()
