"""A flood of half-open IKE SAs and pre-auth fragment storms against one responder.

Run inside the attacker's network namespace (it binds the source addresses given):

    python tests/integration/ike_flood.py --target 192.0.2.2 --sources 192.0.2.10,... \\
        --sas-per-source 20 --storm 24x49152 --storm 9x1000

Every would-be SA is a real IKEv2 initiator (agent/ike's IkeSa) on a UDP socket of its
own: it sends IKE_SA_INIT, answers a COOKIE when asked (RFC 7296 section 2.6), and once
the responder has answered it holds the IKE_AUTH keys, so the fragments it sends are as
authentic as anything before IKE_AUTH can be (RFC 7383). Each storm ``COUNTxBYTES``
sends COUNT fragments of BYTES each of an IKE_AUTH request announced as 64 fragments,
so it never completes and a responder without caps keeps every one until the SA
expires. After each burst of an SA's fragments, its IKE_SA_INIT is sent again and the
replayed answer awaited: the responder reads one socket in order, so by then it has
handled every fragment before (a pace, not a measurement). Requests over a cap get no
answer.

Prints one JSON line: half-open SAs obtained, cookies answered, IKE_SA_INIT requests
sent and the seconds until the last answer, fragments sent and the seconds they took.
"""

from __future__ import annotations

import argparse
import json
import select
import socket
import sys
import time
from dataclasses import dataclass

from vpnfleet.agent.ike.config import ChildConfig, Identity, IkeConfig, selector
from vpnfleet.agent.ike.constants import ExchangeType, HeaderFlag, PayloadType
from vpnfleet.agent.ike.crypto import encrypt_fragment
from vpnfleet.agent.ike.ike_sa import IkeSa
from vpnfleet.agent.ike.message import IkeHeader
from vpnfleet.agent.ike.proposals import EspProposal, IkeProposal
from vpnfleet.agent.ike.states import IkeSaState, Role

IKE_PROPOSAL = "aes256gcm16-prfsha384-x25519"
ANNOUNCED_FRAGMENTS = 64
QUIET = 1.0
"""Seconds without an answer after which the IKE_SA_INIT phase is over."""
SYNC_TIMEOUT = 5.0
BURST_BYTES = 128 * 1024
"""At most this much is sent before a pace: the receiver's socket buffer is the
namespace's default (net.core.rmem_max), and what overflows it never reaches the agent."""


def flood_config() -> IkeConfig:
    return IkeConfig(
        Identity.parse("flood.invalid"),
        Identity.parse("victim.invalid"),
        b"not the pre-shared key of anyone",
        (IkeProposal.parse(IKE_PROPOSAL),),
        ChildConfig(
            "net",
            (EspProposal.parse("aes256gcm16"),),
            (selector("10.99.0.0/24"),),
            (selector("10.2.0.0/24"),),
        ),
    )


@dataclass
class Attempt:
    sock: socket.socket
    sa: IkeSa
    last_request: bytes = b""
    cookie: bool = False


def _send(attempt: Attempt, now: float) -> int:
    sent = 0
    for data, addr in attempt.sa.datagrams_to_send(now):
        if attempt.sa.state is IkeSaState.INIT_SENT:
            attempt.last_request = data
        attempt.sock.sendto(data, addr)
        sent += 1
    return sent


def open_sas(
    target: tuple[str, int], sources: list[str], per_source: int
) -> tuple[list[Attempt], int, float, int]:
    """IKE_SA_INIT from every source, pipelined: (half-open SAs, requests sent, seconds
    until the last answer, cookies answered)."""
    config = flood_config()
    attempts: dict[int, Attempt] = {}
    start = time.monotonic()
    requests = 0
    for src in sources:
        for _ in range(per_source):
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.bind((src, 0))
            sa = IkeSa(config, Role.INITIATOR)
            sa.initiate(target, time.monotonic())
            attempt = Attempt(sock, sa)
            attempts[sock.fileno()] = attempt
            requests += _send(attempt, time.monotonic())
    last_answer = time.monotonic()
    while time.monotonic() - last_answer < QUIET:
        ready, _, _ = select.select(list(attempts), [], [], 0.1)
        for fd in ready:
            attempt = attempts[fd]
            data, addr = attempt.sock.recvfrom(65535)
            last_answer = time.monotonic()
            before = attempt.sa.state
            attempt.sa.receive_datagram(data, addr, last_answer)
            if attempt.sa.state is IkeSaState.INIT_SENT and before is IkeSaState.INIT_SENT:
                attempt.cookie = True
                requests += _send(attempt, last_answer)
            elif attempt.sa.state is IkeSaState.AUTH_SENT:
                attempt.sa.datagrams_to_send(last_answer)  # its real IKE_AUTH: not sent
    half_open = [a for a in attempts.values() if a.sa.state is IkeSaState.AUTH_SENT]
    for attempt in attempts.values():
        if attempt not in half_open:
            attempt.sock.close()
    cookies = sum(1 for a in half_open if a.cookie)
    return half_open, requests, last_answer - start, cookies


def storm(attempts: list[Attempt], target: tuple[str, int], count: int, size: int) -> int:
    """``count`` fragments of ``size`` bytes from every SA; returns the fragments sent."""
    sent = 0
    chunk = b"\x00" * size
    burst = max(1, BURST_BYTES // size)
    for attempt in attempts:
        sa = attempt.sa
        assert sa._sk_out is not None
        header = IkeHeader(sa.spi_i, sa.spi_r, 0, ExchangeType.IKE_AUTH, HeaderFlag.INITIATOR, 1)
        for number in range(1, count + 1):
            fragment = encrypt_fragment(
                header, PayloadType.IDI, chunk, number, ANNOUNCED_FRAGMENTS, sa._sk_out
            )
            attempt.sock.sendto(fragment, target)
            sent += 1
            if number % burst == 0 or number == count:
                _sync(attempt, target)
    return sent


def _sync(attempt: Attempt, target: tuple[str, int]) -> None:
    """IKE_SA_INIT again; its replayed answer means what came before was handled."""
    attempt.sock.sendto(attempt.last_request, target)
    deadline = time.monotonic() + SYNC_TIMEOUT
    while time.monotonic() < deadline:
        ready, _, _ = select.select([attempt.sock], [], [], deadline - time.monotonic())
        if ready:
            data = attempt.sock.recv(65535)
            if data[18] == ExchangeType.IKE_SA_INIT:
                return
    # The SA is gone (expired): nothing to wait for.


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", required=True)
    parser.add_argument("--port", type=int, default=500)
    parser.add_argument("--sources", required=True, help="comma-separated source addresses")
    parser.add_argument("--sas-per-source", type=int, default=20)
    parser.add_argument(
        "--storm", action="append", default=[], help="COUNTxBYTES fragments from every SA"
    )
    args = parser.parse_args(argv)
    target = (args.target, args.port)
    sources = [s for s in args.sources.split(",") if s]
    attempts, requests, init_seconds, cookies = open_sas(target, sources, args.sas_per_source)
    fragments, fragment_seconds = 0, 0.0
    for spec in args.storm:
        count, _, size = spec.partition("x")
        start = time.monotonic()
        fragments += storm(attempts, target, int(count), int(size))
        fragment_seconds += time.monotonic() - start
    for attempt in attempts:
        attempt.sock.close()
    result = {
        "half_open": len(attempts),
        "cookies": cookies,
        "init_requests": requests,
        "init_seconds": round(init_seconds, 3),
        "fragments": fragments,
        "fragment_seconds": round(fragment_seconds, 3),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
