"""Datagrams per system call: ``recvmmsg`` / ``sendmmsg`` (agent/io/mmsg.py) against one
``recvfrom`` / ``sendto`` per datagram, on loopback UDP in one process.

Receive: a socket with a large buffer is filled with ``--count`` datagrams, then drained
either by a ``recvfrom`` loop (what the agent did before) or by ``RecvBatch.receive``
(64 per call, bytes out of the preallocated slots); the figure is microseconds of the
drain per datagram. Send: runs of 64 datagrams to one address by ``sendto`` each or by
one ``SendBatch.send``; microseconds per datagram (the loopback delivery inside the
send is included in both). Lone: one datagram per call, ``sendto`` against a
one-message ``SendBatch.send`` (what a ping or an ACK costs on each path; the raw ESP
socket sends a lone packet with ``sendto``). Best of ``--rounds``. Prints one JSON line:

    {"bench": "socket_batch", "size": 1400, "recvfrom_us": ..., "recvmmsg_us": ...,
     "sendto_us": ..., "sendmmsg_us": ..., "lone_sendto_us": ..., "lone_sendmmsg_us": ...}
"""

from __future__ import annotations

import argparse
import json
import socket
import time

from vpnfleet.agent.io.mmsg import RecvBatch, SendBatch, sockaddr
from vpnfleet.agent.io.socket_buffers import set_socket_buffers
from vpnfleet.agent.io.udp import RECV_BATCH

BUFFER = 256 << 20
RUN = 64


def _sockets() -> tuple[socket.socket, socket.socket]:
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for sock in (rx, tx):
        set_socket_buffers(sock, BUFFER)
        sock.bind(("127.0.0.1", 0))
        sock.setblocking(False)
    return rx, tx


def _drain(rx: socket.socket) -> None:
    while True:
        try:
            rx.recv(65535)
        except BlockingIOError:
            return


def receive(size: int, count: int, rounds: int) -> dict[str, float]:
    rx, tx = _sockets()
    batch = RecvBatch(rx, RECV_BATCH)
    data = b"\x01" * size
    best = {"recvfrom_us": float("inf"), "recvmmsg_us": float("inf")}
    try:
        for _ in range(rounds):
            for kind in best:
                for _ in range(count):
                    tx.sendto(data, rx.getsockname())
                got = 0
                start = time.perf_counter()
                if kind == "recvfrom_us":
                    recvfrom = rx.recvfrom
                    while True:
                        try:
                            recvfrom(65535)
                        except BlockingIOError:
                            break
                        got += 1
                else:
                    while True:
                        try:
                            got += len(batch.receive())
                        except BlockingIOError:
                            break
                took = time.perf_counter() - start
                assert got == count, f"{kind}: {got} of {count} datagrams (buffer too small?)"
                best[kind] = min(best[kind], took / got * 1e6)
    finally:
        batch.close()
        rx.close()
        tx.close()
    return best


def send(size: int, count: int, rounds: int) -> dict[str, float]:
    rx, tx = _sockets()
    batch = SendBatch(tx, RUN)
    addr = rx.getsockname()
    name = sockaddr(socket.AF_INET, *addr)
    run = [b"\x02" * size] * RUN
    best = {"sendto_us": float("inf"), "sendmmsg_us": float("inf")}
    try:
        for _ in range(rounds):
            for kind in best:
                runs = max(count // RUN, 1)
                start = time.perf_counter()
                for _ in range(runs):
                    if kind == "sendto_us":
                        for packet in run:
                            tx.sendto(packet, addr)
                    else:
                        batch.send(run, name)
                took = time.perf_counter() - start
                best[kind] = min(best[kind], took / (runs * RUN) * 1e6)
                _drain(rx)
    finally:
        batch.close()
        rx.close()
        tx.close()
    return best


def lone(size: int, count: int, rounds: int) -> dict[str, float]:
    rx, tx = _sockets()
    batch = SendBatch(tx, RUN)
    addr = rx.getsockname()
    name = sockaddr(socket.AF_INET, *addr)
    packet = b"\x03" * size
    best = {"lone_sendto_us": float("inf"), "lone_sendmmsg_us": float("inf")}
    try:
        for _ in range(rounds):
            for kind in best:
                start = time.perf_counter()
                if kind == "lone_sendto_us":
                    sendto = tx.sendto
                    for _ in range(count):
                        sendto(packet, addr)
                else:
                    one = [packet]
                    for _ in range(count):
                        batch.send(one, name)
                took = time.perf_counter() - start
                best[kind] = min(best[kind], took / count * 1e6)
                _drain(rx)
    finally:
        batch.close()
        rx.close()
        tx.close()
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1400, help="datagram payload bytes")
    parser.add_argument("--count", type=int, default=5000, help="datagrams per round")
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    figures = (
        receive(args.size, args.count, args.rounds)
        | send(args.size, args.count, args.rounds)
        | lone(args.size, args.count, args.rounds)
    )
    print(
        json.dumps(
            {"bench": "socket_batch", "size": args.size}
            | {k: round(v, 3) for k, v in figures.items()}
        )
    )


if __name__ == "__main__":
    main()
