"""UDP blast on loopback: datagrams per second through the agent's UDP endpoint.

One process sends ESP-in-UDP datagrams as fast as it can through
``UdpEndpoint.send_esp``; another receives them on its NAT-T port through the endpoint's
batched ``add_reader`` path (the ESP/IKE demultiplexer included). Both at 64 and 1400
bytes. For comparison, the same receive through an asyncio ``DatagramProtocol`` (one
datagram per readiness callback) and the same send through an asyncio
``DatagramTransport``. Prints one JSON line:

    {"bench": "udp_blast", "rx_pps_64": ..., "rx_pps_1400": ..., "tx_pps_64": ...,
     "tx_pps_1400": ..., "rx_pps_64_protocol": ..., ..., "reference_pps": 278000}

``rx_pps_*`` is the rate the receiver delivered to ``on_esp`` while the sender blasted
(bounded by the sender when the receiver keeps up); ``tx_pps_*`` the sender's rate;
``rx_drain_pps_*`` the receive path's own ceiling: the sender first fills a large socket
buffer with 100,000 datagrams, then the receiver drains it. The reference is the plain
Python loopback blast figure measured on this kind of machine (2 vCPU).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import subprocess
import sys
import time
from typing import Any

from vpnfleet.agent.io.udp import (
    ESP_HEADER_LEN,
    NON_ESP_MARKER,
    UdpEndpoint,
)

REFERENCE_PPS = 278_000
IDLE_END = 0.4
"""The receiver stops when no datagram arrived for this long after the first."""
POLL = 0.01
RCVBUF = 256 << 20
"""Receive buffer big enough to hold a drain run (root may pass net.core.rmem_max)."""
SO_RCVBUFFORCE = 33
DRAIN_COUNT = 100_000


def payload(size: int) -> bytes:
    # A plausible ESP packet: non-zero SPI, sequence number, then filler.
    return bytes.fromhex("c0ffee0100000001") + b"\x5a" * (size - 8)


# -- receiver --------------------------------------------------------------------------------


def open_receiver_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, RCVBUF)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    return sock


async def receive(mode: str, timeout: float, drain: bool) -> dict[str, Any]:
    """Count datagrams delivered to the upper layer. With ``drain`` the socket is not read
    until a line arrives on stdin, so the sender can fill its buffer first and the drain
    rate is the receive path's own ceiling, whatever the sender's speed."""
    loop = asyncio.get_running_loop()
    received = [0]
    sock = open_receiver_socket()
    print(json.dumps({"port": sock.getsockname()[1]}), flush=True)
    if drain:
        await loop.run_in_executor(None, sys.stdin.readline)
    if mode == "endpoint":
        endpoint = UdpEndpoint(
            lambda d, a, p: None, lambda d, a: None, ike_port=None, natt_sock=sock
        )
        endpoint.start()

        def count() -> int:
            return endpoint.counters.rx_esp

        close = endpoint.close
    else:

        class Receiver(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
                # The same test the endpoint makes per datagram, for a fair comparison.
                if len(data) >= ESP_HEADER_LEN and not data.startswith(NON_ESP_MARKER):
                    received[0] += 1

        transport, _ = await loop.create_datagram_endpoint(Receiver, sock=sock)

        def count() -> int:
            return received[0]

        close = transport.close
    started = time.monotonic()
    deadline = started + timeout
    poll = POLL / 10 if drain else POLL
    first_t = last_t = 0.0
    first_n = last_n = 0
    if drain:
        first_t = started
    while time.monotonic() < deadline:
        await asyncio.sleep(poll)
        n, now = count(), time.monotonic()
        if n and not first_n and not drain:
            first_t, first_n = now, n
        if n != last_n:
            last_t, last_n = now, n
        elif last_n and now - last_t > (IDLE_END / 4 if drain else IDLE_END):
            break
    close()
    span = last_t - first_t
    rate = (last_n - first_n) / span if span > 0 else 0.0
    return {"received": last_n, "pps": rate}


# -- sender ----------------------------------------------------------------------------------


def send_endpoint(port: int, size: int, duration: float, count: int = 0) -> dict[str, Any]:
    endpoint = UdpEndpoint(
        lambda d, a, p: None, lambda d, a: None, host="127.0.0.1", ike_port=None, natt_port=0
    )
    data, addr, send = payload(size), ("127.0.0.1", port), endpoint.send_esp
    start = time.monotonic()
    end = start + duration
    if count:
        for _ in range(count):
            send(data, addr)
    while not count and time.monotonic() < end:
        for _ in range(1024):
            send(data, addr)
    elapsed = time.monotonic() - start
    c = endpoint.counters
    endpoint.close()
    return {"sent": c.tx_esp, "pps": c.tx_esp / elapsed, "dropped": c.tx_dropped}


async def send_transport(port: int, size: int, duration: float) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(
        asyncio.DatagramProtocol, local_addr=("127.0.0.1", 0)
    )
    data, addr = payload(size), ("127.0.0.1", port)
    sent = 0
    start = time.monotonic()
    end = start + duration
    while time.monotonic() < end:
        for _ in range(1024):
            transport.sendto(data, addr)
        sent += 1024
        # Let the transport flush anything it had to buffer.
        await asyncio.sleep(0)
    elapsed = time.monotonic() - start
    transport.close()
    return {"sent": sent, "pps": sent / elapsed}


# -- driver ----------------------------------------------------------------------------------


def run_pair(
    rx_mode: str, tx_mode: str, size: int, duration: float, drain: int = 0
) -> tuple[float, float]:
    me = [sys.executable, __file__]
    receiver = subprocess.Popen(
        [*me, "--role", "recv", "--mode", rx_mode, "--timeout", str(duration + 20)]
        + (["--drain"] if drain else []),
        stdout=subprocess.PIPE,
        stdin=subprocess.PIPE,
        text=True,
    )
    try:
        assert receiver.stdout is not None and receiver.stdin is not None
        port = json.loads(receiver.stdout.readline())["port"]
        sender = subprocess.run(
            [*me, "--role", "send", "--mode", tx_mode, "--port", str(port), "--size", str(size),
             "--duration", str(duration), "--count", str(drain)],
            capture_output=True,
            text=True,
            check=True,
            timeout=duration + 30,
        )  # fmt: skip
        tx = json.loads(sender.stdout)
        receiver.stdin.write("go\n")
        receiver.stdin.flush()
        rx = json.loads(receiver.stdout.readline())
        if drain and rx["received"] < drain * 0.9:
            raise SystemExit(f"drain run lost datagrams before reading: {rx} of {drain}")
        receiver.wait(10)
    finally:
        if receiver.poll() is None:
            receiver.kill()
            receiver.wait()
    return float(rx["pps"]), float(tx["pps"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--role", choices=["driver", "recv", "send"], default="driver")
    parser.add_argument("--mode", default="endpoint", help="endpoint | protocol | transport")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--duration", type=float, default=2.0, help="seconds per run")
    parser.add_argument("--timeout", type=float, default=30.0)
    parser.add_argument("--drain", action="store_true", help="(recv) read only after 'go'")
    parser.add_argument("--count", type=int, default=0, help="(send) this many, then stop")
    args = parser.parse_args()
    if args.role == "recv":
        print(json.dumps(asyncio.run(receive(args.mode, args.timeout, args.drain))), flush=True)
        return
    if args.role == "send":
        if args.mode == "transport":
            result = asyncio.run(send_transport(args.port, args.size, args.duration))
        else:
            result = send_endpoint(args.port, args.size, args.duration, args.count)
        print(json.dumps(result), flush=True)
        return
    out: dict[str, Any] = {"bench": "udp_blast"}
    for size in (64, 1400):
        rx, tx = run_pair("endpoint", "endpoint", size, args.duration)
        out[f"rx_pps_{size}"], out[f"tx_pps_{size}"] = round(rx), round(tx)
        rx, _ = run_pair("protocol", "endpoint", size, args.duration)
        out[f"rx_pps_{size}_protocol"] = round(rx)
        _, tx = run_pair("endpoint", "transport", size, args.duration)
        out[f"tx_pps_{size}_transport"] = round(tx)
        for mode in ("endpoint", "protocol"):
            rx, _ = run_pair(mode, "endpoint", size, args.duration, drain=DRAIN_COUNT)
            out[f"rx_drain_pps_{size}" + ("" if mode == "endpoint" else "_protocol")] = round(rx)
    out["reference_pps"] = REFERENCE_PPS
    out["duration_s"] = args.duration
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
