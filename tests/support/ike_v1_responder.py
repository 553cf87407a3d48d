"""Many concurrent IKEv1 responders on real UDP, counted: the ours side of
``bench/ike_rate.py --version 1`` (run inside a namespace).

    python -m tests.support.ike_v1_responder CONFIG.json

Listens on UDP 500 and 4500 (RFC 3948 non-ESP marker on 4500). Every phase 1
message 1 (RFC 2409 section 5: exchange type Identity Protection, or Aggressive when
the spec's ``phase1`` says so, responder cookie zero) for an initiator cookie we hold
no SA for makes a new ``IkeV1Sa`` responder;
every later datagram goes to the SA of its initiator cookie, which checks the
responder cookie itself. Each SA then runs phase 1 and the Quick mode the initiator
asks for, on its own timers.

Unlike tests/support/ike_v1_driver.py (one SA at a time, every event printed, every
SA pumped after every datagram), this one is built for load: only the SAs a batch of
datagrams touched are pumped, timers sit in one heap, SAs that closed are forgotten,
and nothing is printed but ``Ready`` and, on the ``count`` command, one ``Count``
line with what happened: events by kind, datagrams dropped by the SAs (with the
reasons), datagrams no SA took, SAs failed (with the reasons), and any exception a
core raised (counted and kept going, so a run shows the fault instead of dying of it).

Imported, it gives ``V1Responders``: this process started in a namespace beside a
charon of tests/support/charon.py.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import json
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from tests.support.charon import OurPeer
from tests.support.ike_v1_driver import load_config
from vpnfleet.agent.ike.constants import NON_ESP_MARKER
from vpnfleet.agent.ike.events import IkeSaFailed
from vpnfleet.agent.ike.states import Role
from vpnfleet.agent.ike.v1.constants import ISAKMP_HEADER_LENGTH, ExchangeType
from vpnfleet.agent.ike.v1.sa import IkeV1Sa

IKE_PORT, NAT_T_PORT = 500, 4500
_PHASE1 = (ExchangeType.IDENTITY_PROTECTION, ExchangeType.AGGRESSIVE)
_REASONS_SHOWN = 8
"""Distinct drop, failure and exception reasons a ``Count`` line lists (the commonest)."""


class Responders:
    def __init__(self, spec: dict[str, Any], loop: asyncio.AbstractEventLoop) -> None:
        self.spec = spec
        self.loop = loop
        self.config = load_config(spec)
        self.local = (spec["local"], IKE_PORT)
        self.sas: dict[bytes, IkeV1Sa] = {}
        """Open SAs by initiator cookie."""
        self.sockets: dict[int, socket.socket] = {}
        self.timer: asyncio.TimerHandle | None = None
        self.deadlines: list[tuple[float, int, IkeV1Sa]] = []
        self.order = itertools.count()
        self.events: Counter[str] = Counter()
        self.drops: Counter[str] = Counter()
        """Datagrams an SA ignored, by the reason it gave (``IkeV1Sa.last_drop``)."""
        self.failures: Counter[str] = Counter()
        """IkeSaFailed events by reason."""
        self.raised: Counter[str] = Counter()
        """Exceptions out of the core (our own faults: LocalError or a bug)."""
        self.unrouted = 0
        """Datagrams for no open SA that were not a Main mode message 1."""
        self.created = 0
        """Responder SAs made."""

    def bind(self) -> None:
        for port in (IKE_PORT, NAT_T_PORT):
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.bind((self.spec["local"], port))
            sock.setblocking(False)
            self.sockets[port] = sock
            self.loop.add_reader(sock.fileno(), self.readable, port)
        self.loop.add_reader(sys.stdin.fileno(), self.command)

    # -- network -------------------------------------------------------------------

    def readable(self, port: int) -> None:
        sock = self.sockets[port]
        touched: list[IkeV1Sa] = []
        while True:
            try:
                data, addr = sock.recvfrom(65535)
            except BlockingIOError:
                break
            if port == NAT_T_PORT:
                if data[:4] != NON_ESP_MARKER:
                    continue  # ESP in UDP or a NAT keepalive: no data plane here
                data = data[4:]
            sa = self.datagram(data, (addr[0], addr[1]))
            if sa is not None:
                touched.append(sa)
        self.pump(touched)

    def route(self, data: bytes) -> IkeV1Sa | None:
        if len(data) < ISAKMP_HEADER_LENGTH:
            return None
        sa = self.sas.get(data[:8])
        if sa is None and data[18] in _PHASE1 and not any(data[8:16]):
            sa = IkeV1Sa(self.config, Role.RESPONDER, self.local)
            self.sas[data[:8]] = sa
            self.created += 1
        return sa

    def datagram(self, data: bytes, addr: tuple[str, int]) -> IkeV1Sa | None:
        sa = self.route(data)
        if sa is None:
            self.unrouted += 1
            return None
        dropped = sa.dropped
        try:
            sa.receive_datagram(data, addr, self.loop.time(), time.time())
        except Exception as exc:  # counted and reported, not hidden
            self.raised[f"{type(exc).__name__}: {exc}"] += 1
        if sa.dropped != dropped:
            self.drops[sa.last_drop or "?"] += 1
        return sa

    def send(self, data: bytes, addr: tuple[str, int]) -> None:
        if addr[1] == NAT_T_PORT:
            self.sockets[NAT_T_PORT].sendto(NON_ESP_MARKER + data, addr)
        else:
            self.sockets[IKE_PORT].sendto(data, addr)

    def pump(self, touched: list[IkeV1Sa]) -> None:
        now = self.loop.time()
        for sa in dict.fromkeys(touched):
            for data, addr in sa.datagrams_to_send(now):
                self.send(data, addr)
            while (event := sa.next_event()) is not None:
                self.events[type(event).__name__] += 1
                if isinstance(event, IkeSaFailed):
                    self.failures[event.reason] += 1
            if sa.is_closed:
                if self.sas.get(sa.icookie) is sa:
                    del self.sas[sa.icookie]
                continue
            deadline = sa.get_timer()
            if deadline is not None:
                heapq.heappush(self.deadlines, (deadline, next(self.order), sa))
        self.arm()

    def arm(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.deadlines:
            self.timer = self.loop.call_at(self.deadlines[0][0], self.on_timer)

    def on_timer(self) -> None:
        self.timer = None
        now = self.loop.time()
        due: list[IkeV1Sa] = []
        while self.deadlines and self.deadlines[0][0] <= now:
            _, _, sa = heapq.heappop(self.deadlines)
            deadline = sa.get_timer()
            if deadline is not None and deadline <= now:
                try:
                    sa.handle_timer(now)
                except Exception as exc:  # counted and reported
                    self.raised[f"{type(exc).__name__}: {exc}"] += 1
            due.append(sa)
        self.pump(due)

    # -- commands ------------------------------------------------------------------

    def counts(self) -> dict[str, Any]:
        return {
            "event": "Count",
            "events": dict(self.events),
            "created": self.created,
            "open": len(self.sas),
            "unrouted": self.unrouted,
            "dropped": sum(self.drops.values()),
            "drop_reasons": dict(self.drops.most_common(_REASONS_SHOWN)),
            "failure_reasons": dict(self.failures.most_common(_REASONS_SHOWN)),
            "raised": dict(self.raised.most_common(_REASONS_SHOWN)),
        }

    def command(self) -> None:
        line = sys.stdin.readline()
        if not line:
            self.loop.stop()
            return
        name = json.loads(line)["cmd"]
        if name == "count":
            print(json.dumps(self.counts()), flush=True)
        else:
            print(json.dumps({"event": "CommandFailed", "reason": f"unknown {name}"}), flush=True)


class V1Responders(OurPeer):
    """This module's process in its namespace (OurPeer's event reader and close)."""

    def __init__(self, ns: str, directory: Path, spec: dict[str, Any]) -> None:
        config = directory / "ours-v1.json"
        config.write_text(json.dumps(spec))
        self.stderr = (directory / "ours-v1.err").open("w")
        root = Path(__file__).resolve().parents[2]
        self.process = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                ns,
                sys.executable,
                "-m",
                "tests.support.ike_v1_responder",
                str(config),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            text=True,
            start_new_session=True,
            cwd=root,
        )
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        self.seen: list[dict[str, Any]] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        try:
            self.wait("Ready")
        except BaseException:
            self.close()
            raise

    def counts(self) -> dict[str, Any]:
        self.command("count")
        return self.wait("Count")


def main() -> None:
    spec = json.loads(Path(sys.argv[1]).read_text())
    loop = asyncio.new_event_loop()
    loop.add_signal_handler(signal.SIGTERM, loop.stop)
    responders = Responders(spec, loop)
    responders.bind()
    profile = None
    if spec.get("profile"):  # benchmark diagnosis: where our responders spend their time
        import cProfile

        profile = cProfile.Profile()
        profile.enable()
    print(json.dumps({"event": "Ready"}), flush=True)
    try:
        loop.run_forever()
    finally:
        if profile is not None:
            profile.disable()
            profile.dump_stats(spec["profile"])
        for sock in responders.sockets.values():
            sock.close()
        loop.close()


if __name__ == "__main__":
    main()
