"""Round-trip time of one packet at a time through two data planes, one core, loopback.

Two ``DataPlane`` objects on one asyncio loop, joined by real UDP sockets on 127.0.0.1
(``UdpEndpoint``, ESP in UDP, AES-128-GCM keyed by hand) and each with a TUN stand-in (an
AF_UNIX datagram pair, read and written like a TUN fd). An ICMP echo request goes into
A's TUN; when it comes out of B's TUN it is answered at once into B's TUN, and the reply
is timed when it comes out of A's TUN. One echo in flight at a time, as ping sends them:
the figure is the data planes' own per-packet latency (TUN read, seal, send, receive,
open, TUN write, twice) plus the loop's wake-ups, with no kernel IP stack or namespace.
Prints one JSON line:

    {"bench": "dataplane_ping", "rtt_p50_us": ..., "rtt_avg_us": ..., "pings": N,
     "repeats": R}

Each figure is the best of ``--repeats`` runs of ``--pings`` echoes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import struct
import sys
import time
from pathlib import Path

from vpnfleet.agent.esp.sa import SaParams
from vpnfleet.agent.esp.spd import Action, Selector, SpdEntry
from vpnfleet.agent.esp.transforms import Encryption
from vpnfleet.agent.io.dataplane import DataPlane
from vpnfleet.agent.io.udp import UdpEndpoint

# The repository root, for the helpers the tests share (tests/support).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.support.dataplane_pair import POLICY, SITE_A, SITE_B, SocketTun


def echo(kind: int, seq: int, src: bytes, dst: bytes) -> bytes:
    body = struct.pack("!BBHHH", kind, 0, 0, 7, seq) + bytes(56)
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(body), seq, 0x4000, 64, 1, 0, src, dst)
    return header + body


def params(spi: int) -> SaParams:
    return SaParams(spi, Encryption.AES128GCM16, bytes([spi & 0xFF]) * 20)


async def run(pings: int) -> list[float]:
    loop = asyncio.get_running_loop()
    tuns = (SocketTun(), SocketTun())
    planes: list[DataPlane] = []
    endpoints: list[UdpEndpoint] = []
    try:
        for tun, local, remote in ((tuns[0], SITE_A, SITE_B), (tuns[1], SITE_B, SITE_A)):
            spd = [SpdEntry(Selector.parse(local, remote), Action.PROTECT, POLICY)]
            plane = DataPlane(tun, spd=spd, clock=loop.time)
            endpoint = UdpEndpoint(
                lambda *_: None, plane.receive_esp, host="127.0.0.1", ike_port=None, natt_port=0
            )
            endpoint.on_batch_end = plane.end_receive_batch  # as the engine wires it
            plane.attach(endpoint)
            planes.append(plane)
            endpoints.append(endpoint)
        a, b = planes
        a.install_child_sa(
            POLICY, params(0x2002), params(0x1001), ("127.0.0.1", endpoints[1].natt_port)
        )
        b.install_child_sa(
            POLICY, params(0x1001), params(0x2002), ("127.0.0.1", endpoints[0].natt_port)
        )
        for plane, endpoint in zip(planes, endpoints, strict=True):
            endpoint.start(loop)
            plane.start(loop)
        src, dst = bytes([10, 1, 0, 5]), bytes([10, 2, 0, 7])
        rtts: list[float] = []
        done: asyncio.Future[None] = loop.create_future()
        sent_at = 0.0

        def send_next() -> None:
            nonlocal sent_at
            sent_at = time.perf_counter()
            tuns[0].host.send(echo(8, len(rtts), src, dst))

        def answer() -> None:  # B's host: reply to each request at once
            request = tuns[1].host.recv(65535)
            tuns[1].host.send(echo(0, int.from_bytes(request[26:28], "big"), dst, src))

        def reply() -> None:  # A's host: the reply is back
            tuns[0].host.recv(65535)
            rtts.append(time.perf_counter() - sent_at)
            if len(rtts) == pings:
                done.set_result(None)
            else:
                send_next()

        loop.add_reader(tuns[1].host.fileno(), answer)
        loop.add_reader(tuns[0].host.fileno(), reply)
        send_next()
        await asyncio.wait_for(done, 60)
        loop.remove_reader(tuns[1].host.fileno())
        loop.remove_reader(tuns[0].host.fileno())
        return rtts
    finally:
        for plane in planes:
            plane.stop()
        for endpoint in endpoints:
            endpoint.close()
        for tun in tuns:
            tun.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pings", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    p50 = avg = float("inf")
    for _ in range(args.repeats):
        rtts = asyncio.run(run(args.pings))
        p50 = min(p50, statistics.median(rtts))
        avg = min(avg, statistics.fmean(rtts))
    print(
        json.dumps(
            {
                "bench": "dataplane_ping",
                "rtt_p50_us": round(1e6 * p50, 1),
                "rtt_avg_us": round(1e6 * avg, 1),
                "pings": args.pings,
                "repeats": args.repeats,
            }
        )
    )


if __name__ == "__main__":
    main()
