"""An IKE initiator that holds no key of the fleet, started inside a lab namespace.

It keeps IKE SAs under way with a target agent until SIGTERM (several at once, each new
one as soon as one ends): IKE_SA_INIT with a real Diffie-Hellman exchange, then IKE_AUTH
under the keys it agreed, claiming an identity of its own choosing (a new one each time,
with a line break and a terminal escape in it) and signing with a wrong pre-shared key;
every other IKE_AUTH is also garbled (its ICV broken), so the agent cannot even decrypt
it. It is our own IKEv2 core driven over a real UDP socket. On SIGTERM it prints one
JSON line: attempts, answers to IKE_SA_INIT, and IKE_AUTH refusals received.

    python ike_stranger.py --source 10.99.0.77 --target 10.99.0.12 --target-identity a2
                           [--port 500]
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import select
import signal
import socket
import sys
import time
from types import FrameType

from vpnfleet.agent.ike.config import ChildConfig, Identity, IdType, IkeConfig
from vpnfleet.agent.ike.ike_sa import IkeSa
from vpnfleet.agent.ike.payloads import TrafficSelector
from vpnfleet.agent.ike.proposals import EspProposal, IkeProposal
from vpnfleet.agent.ike.states import IkeSaState, Role

IN_FLIGHT = 16
"""IKE SAs under way at once: a flood, not a polite client."""
GIVE_UP = 1.0
"""Seconds after which an attempt still waiting for an answer is dropped."""


def config(identity: bytes, target_identity: str) -> IkeConfig:
    anywhere = TrafficSelector(
        ipaddress.ip_address("0.0.0.0"), ipaddress.ip_address("255.255.255.255")
    )
    child = ChildConfig("stranger", (EspProposal.parse("aes256gcm16"),), (anywhere,), (anywhere,))
    return IkeConfig(
        Identity(IdType.ID_FQDN, identity),
        Identity.parse(target_identity),
        b"a key nobody in the fleet holds",
        (IkeProposal.parse("aes256gcm16-prfsha384-x25519"),),
        child,
        retransmit_timeout=30.0,  # one try each: the next attempt is a new IKE SA
        retransmit_tries=0,
    )


class Stranger:
    def __init__(self, source: str, port: int, target: str, target_identity: str) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((source, port))
        self.local = (source, port)
        self.target = (target, 500)
        self.target_identity = target_identity
        self.attempts = 0
        self.init_answers = 0
        self.auth_refused = 0
        self.in_flight: dict[bytes, tuple[IkeSa, float, bool]] = {}
        """Our SPI -> (IKE SA, when started, whether its IKE_AUTH is garbled)."""

    def run_once(self) -> None:
        now = time.monotonic()
        for spi, (sa, since, _) in list(self.in_flight.items()):
            if sa.is_closed or now - since > GIVE_UP:
                del self.in_flight[spi]
        while len(self.in_flight) < IN_FLIGHT:
            self.start()
        ready, _, _ = select.select([self.sock], [], [], 0.05)
        while ready:
            data, addr = self.sock.recvfrom(65535)
            self.answer(data, addr)
            ready, _, _ = select.select([self.sock], [], [], 0)

    def start(self) -> None:
        self.attempts += 1
        n = self.attempts
        identity = f"stranger-{n}.example\n\x1b[2J".encode()
        sa = IkeSa(config(identity, self.target_identity), Role.INITIATOR, self.local)
        sa.initiate(self.target, time.monotonic())
        self.in_flight[sa.local_spi] = (sa, time.monotonic(), n % 2 == 0)
        self.send(sa, garble=False)

    def answer(self, data: bytes, addr: tuple[str, int]) -> None:
        spi = data[0:8]  # we initiate: our SPI comes first
        entry = self.in_flight.get(spi)
        if entry is None:
            return
        sa, _, garble = entry
        was = sa.state
        sa.receive_datagram(data, addr, time.monotonic())
        if was is IkeSaState.INIT_SENT and sa.state is IkeSaState.AUTH_SENT:
            self.init_answers += 1
            self.send(sa, garble=garble)
            if garble:
                del self.in_flight[spi]  # nothing can answer it: make room for the next
        elif sa.state is IkeSaState.INIT_SENT:
            self.send(sa, garble=False)  # a COOKIE (section 2.6): IKE_SA_INIT again with it
        elif sa.is_closed:
            self.auth_refused += 1

    def send(self, sa: IkeSa, *, garble: bool) -> None:
        for data, addr in sa.datagrams_to_send(time.monotonic()):
            if garble:
                data = data[:-8] + bytes(b ^ 0xFF for b in data[-8:])
            self.sock.sendto(data, addr)

    def report(self) -> str:
        return json.dumps(
            {
                "attempts": self.attempts,
                "init_answers": self.init_answers,
                "auth_refused": self.auth_refused,
            }
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--source", required=True)
    parser.add_argument("--port", type=int, default=500)
    parser.add_argument("--target", required=True)
    parser.add_argument("--target-identity", required=True)
    args = parser.parse_args()
    stranger = Stranger(args.source, args.port, args.target, args.target_identity)
    stopping = False

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    print("ready", flush=True)
    while not stopping:
        stranger.run_once()
    print(stranger.report(), flush=True)
    sys.exit(0)


if __name__ == "__main__":
    main()
