"""Test-only asyncio UDP driver for the sans-I/O IKE core (run inside a namespace).

    python ike_driver.py CONFIG.json

Listens on UDP 500 and 4500 (RFC 3948 non-ESP marker on 4500), routes datagrams to
IKE SAs by SPI (new IKE_SA_INIT requests through IkeResponderGate), takes JSON
commands on stdin (``initiate``, ``rekey_child``, ``rekey_ike``, ``delete_child``,
``delete_ike``, ``liveness``) and prints every event as one JSON line on stdout,
keys included (this is a test harness; keys are what the interop tests compare).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import json
import signal
import socket
import sys
import time
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from vpnfleet.agent.ike.config import ChildConfig, Identity, IkeConfig, selector
from vpnfleet.agent.ike.constants import NON_ESP_MARKER
from vpnfleet.agent.ike.events import IkeSaDeleted, IkeSaFailed, IkeSaRekeyed
from vpnfleet.agent.ike.gate import IkeResponderGate
from vpnfleet.agent.ike.ike_sa import IkeSa
from vpnfleet.agent.ike.proposals import EspProposal, IkeProposal
from vpnfleet.agent.ike.signatures import CertificateAuth, SigningKey
from vpnfleet.agent.ike.states import IkeSaState, Role

IKE_PORT, NAT_T_PORT = 500, 4500


def load_config(spec: dict[str, Any]) -> IkeConfig:
    certificates = None
    if spec.get("cert"):
        cert = x509.load_pem_x509_certificate(Path(spec["cert"]).read_bytes())
        key = serialization.load_pem_private_key(Path(spec["key"]).read_bytes(), None)
        if not isinstance(key, SigningKey):
            raise SystemExit(f"{spec['key']}: unsupported key type {type(key).__name__}")
        anchors = tuple(x509.load_pem_x509_certificates(Path(spec["ca"]).read_bytes()))
        certificates = CertificateAuth(cert, key, anchors)
    return IkeConfig(
        Identity.parse(spec["local_id"]),
        Identity.parse(spec["remote_id"]),
        spec.get("psk", "").encode(),
        tuple(IkeProposal.parse(p) for p in spec["ike"]),
        ChildConfig(
            "net",
            tuple(EspProposal.parse(p) for p in spec["esp"]),
            tuple(selector(n) for n in spec["local_ts"]),
            tuple(selector(n) for n in spec["remote_ts"]),
        ),
        retransmit_timeout=1.0,
        certificates=certificates,
        fragment_size=int(spec.get("fragment_size", IkeConfig.fragment_size)),
    )


def as_json(value: object) -> object:
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, IkeSa):
        return None
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: as_json(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, tuple | list):
        return [as_json(v) for v in value]
    if isinstance(value, dict):
        return {k: as_json(v) for k, v in value.items()}
    if hasattr(value, "compressed"):  # ip addresses in traffic selectors
        return str(value)
    return value


class Driver:
    def __init__(self, spec: dict[str, Any], loop: asyncio.AbstractEventLoop) -> None:
        self.spec = spec
        self.loop = loop
        self.config = load_config(spec)
        self.local = (spec["local"], IKE_PORT)
        self.gate = IkeResponderGate(self.config, local=self.local)
        self.sas: dict[bytes, IkeSa] = {}
        """By the SPI we chose (what incoming datagrams are routed by)."""
        self.sockets: dict[int, socket.socket] = {}
        self.timer: asyncio.TimerHandle | None = None
        self.deadlines: list[tuple[float, int, IkeSa]] = []
        self.order = itertools.count()
        self.quiet = bool(spec.get("quiet"))
        """Only IKE SA establishments are counted, not printed (for the rate benchmark)."""
        self.established = 0

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
        touched: list[IkeSa] = []
        while True:
            try:
                data, addr = sock.recvfrom(65535)
            except BlockingIOError:
                break
            if port == NAT_T_PORT:
                if data[:4] != NON_ESP_MARKER:
                    continue  # ESP in UDP or a NAT keepalive: not ours to handle here
                data = data[4:]
            sa = self.datagram(data, (addr[0], addr[1]))
            if sa is not None:
                touched.append(sa)
        self.pump(touched)

    def datagram(self, data: bytes, addr: tuple[str, int]) -> IkeSa | None:
        if len(data) < 28:
            return None
        now = self.loop.time()
        spi_i, spi_r, from_initiator = data[:8], data[8:16], bool(data[19] & 0x08)
        sa = self.sas.get(spi_r if from_initiator else spi_i)
        if sa is not None and sa.is_initiator != from_initiator:
            sa.receive_datagram(data, addr, now, time.time())
            return sa
        if from_initiator and spi_r == bytes(8):
            decision = self.gate.receive_datagram(data, addr, now, time.time())
            if decision.reply is not None:
                self.send(decision.reply, addr)
            if decision.sa is not None:
                if decision.new and decision.sa.spi_r != bytes(8):
                    self.sas[decision.sa.local_spi] = decision.sa
                return decision.sa
        return None

    def send(self, data: bytes, addr: tuple[str, int]) -> None:
        if addr[1] == NAT_T_PORT:
            self.sockets[NAT_T_PORT].sendto(NON_ESP_MARKER + data, addr)
        else:
            self.sockets[IKE_PORT].sendto(data, addr)

    def add(self, sa: IkeSa) -> None:
        self.sas[sa.local_spi] = sa

    def pump(self, touched: list[IkeSa]) -> None:
        now = self.loop.time()
        queue = list(dict.fromkeys(touched))
        while queue:
            sa = queue.pop()
            for data, addr in sa.datagrams_to_send(now):
                self.send(data, addr)
            while (event := sa.next_event()) is not None:
                self.emit(event)
                if isinstance(event, IkeSaRekeyed):
                    self.add(event.new_sa)
                    queue.append(event.new_sa)
            if sa.is_closed:
                self.sas.pop(sa.local_spi, None)
            else:
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
        due: list[IkeSa] = []
        while self.deadlines and self.deadlines[0][0] <= now:
            _, _, sa = heapq.heappop(self.deadlines)
            deadline = sa.get_timer()
            if deadline is not None and deadline <= now and not sa.is_closed:
                sa.handle_timer(now)
            due.append(sa)
        self.pump(due)

    def emit(self, event: object) -> None:
        if type(event).__name__ == "IkeSaEstablished":
            self.established += 1
        if self.quiet:
            return
        body = as_json(event)
        assert isinstance(body, dict)
        body["event"] = type(event).__name__
        if isinstance(event, IkeSaRekeyed):
            body["new_keys"] = as_json(event.new_sa.keys.__dict__) if event.new_sa.keys else None
        if type(event).__name__ == "IkeSaEstablished":
            sa = self.sas.get(getattr(event, "spi_i", b"")) or self.sas.get(
                getattr(event, "spi_r", b"")
            )
            if sa is not None and sa.keys is not None:
                body["keys"] = as_json(sa.keys.__dict__)
        if isinstance(event, IkeSaDeleted | IkeSaFailed):
            body["state"] = "closed"
        print(json.dumps(body), flush=True)

    # -- commands ------------------------------------------------------------------

    def current(self) -> IkeSa | None:
        """The established IKE SA holding the children (or the newest established)."""
        live = [s for s in self.sas.values() if s.state is IkeSaState.ESTABLISHED]
        with_children = [s for s in live if s.children]
        pool = with_children or live
        return pool[-1] if pool else None

    def command(self) -> None:
        line = sys.stdin.readline()
        if not line:
            self.loop.stop()
            return
        request = json.loads(line)
        now = self.loop.time()
        name = request["cmd"]
        sa: IkeSa | None = None
        try:
            if name == "count":
                print(json.dumps({"event": "Count", "established": self.established}), flush=True)
                return
            if name == "initiate":
                sa = IkeSa(self.config, Role.INITIATOR, self.local)
                self.add(sa)
                sa.initiate((self.spec["peer"], IKE_PORT), now)
            else:
                sa = self.current()
                if sa is None:
                    raise RuntimeError("no established IKE SA")
                child = next(iter(sa.children), None)
                if name == "rekey_child" and child is not None:
                    sa.rekey_child(child, now)
                elif name == "delete_child" and child is not None:
                    sa.delete_child(child, now)
                elif name == "rekey_ike":
                    sa.rekey(now)
                elif name == "delete_ike":
                    sa.delete(now)
                elif name == "liveness":
                    sa.check_liveness(now)
                else:
                    raise RuntimeError(f"unknown command or no child: {name}")
        except Exception as exc:
            print(json.dumps({"event": "CommandFailed", "reason": str(exc)}), flush=True)
        self.pump([sa] if sa is not None else [])


def main() -> None:
    spec = json.loads(Path(sys.argv[1]).read_text())
    loop = asyncio.new_event_loop()
    loop.add_signal_handler(signal.SIGTERM, loop.stop)
    driver = Driver(spec, loop)
    driver.bind()
    profile = None
    if spec.get("profile"):  # benchmark diagnosis: where our responder spends its time
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
        for sock in driver.sockets.values():
            sock.close()
        loop.close()


if __name__ == "__main__":
    main()
