"""Test-only asyncio UDP driver for the sans-I/O IKEv1 core (run inside a namespace).

    python ike_v1_driver.py CONFIG.json

The IKEv1 twin of ike_driver.py: listens on UDP 500 and 4500 (RFC 3948 non-ESP marker
on 4500), routes datagrams to IkeV1Sa by initiator cookie (a Main mode message 1 for
no known SA makes a responder), takes JSON commands on stdin (``initiate``,
``rekey_child``, ``delete_child``, ``delete_ike``, ``liveness``; for reauthentication
``reauth``, ``adopt``, ``delete_oldest``) and prints every
event as one JSON line on stdout, keys included (this is a test harness; keys are
what the tests compare).

Imported (not run), it gives ``V1Peer``: the driver started in a namespace beside a
charon of tests/support/charon.py.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tests.support.charon import OurPeer
from vpnfleet.agent.ike.config import ChildConfig, Identity, Mode, selector
from vpnfleet.agent.ike.constants import NON_ESP_MARKER
from vpnfleet.agent.ike.events import ChildSaEstablished
from vpnfleet.agent.ike.proposals import EspProposal
from vpnfleet.agent.ike.signatures import CertificateAuth, SigningKey
from vpnfleet.agent.ike.states import Role
from vpnfleet.agent.ike.v1.config import (
    DEFAULT_IKE_LIFETIME,
    ExchangeMode,
    IkeV1Config,
    Phase1Proposal,
)
from vpnfleet.agent.ike.v1.constants import ExchangeType
from vpnfleet.agent.ike.v1.sa import IkeV1Sa, V1State

IKE_PORT, NAT_T_PORT = 500, 4500


def load_certificates(spec: dict[str, Any]) -> CertificateAuth | None:
    if not spec.get("cert"):
        return None
    cert = x509.load_pem_x509_certificate(Path(spec["cert"]).read_bytes())
    key = serialization.load_pem_private_key(Path(spec["key"]).read_bytes(), None)
    if not isinstance(key, SigningKey):
        raise SystemExit(f"{spec['key']}: unsupported key type {type(key).__name__}")
    anchors = tuple(x509.load_pem_x509_certificates(Path(spec["ca"]).read_bytes()))
    return CertificateAuth(cert, key, anchors)


def load_config(spec: dict[str, Any]) -> IkeV1Config:
    return IkeV1Config(
        Identity.parse(spec["local_id"]),
        Identity.parse(spec["remote_id"]),
        spec.get("our_psk", spec["psk"]).encode(),
        tuple(Phase1Proposal.parse(p) for p in spec["ike"]),
        ChildConfig(
            "net",
            tuple(EspProposal.parse(p) for p in spec["esp"]),
            tuple(selector(n) for n in spec["local_ts"]),
            tuple(selector(n) for n in spec["remote_ts"]),
            Mode(spec.get("mode", "tunnel")),
        ),
        phase1_mode=ExchangeMode(spec.get("phase1", "main")),
        certificates=load_certificates(spec),
        retransmit_timeout=1.0,
        retransmit_tries=int(spec.get("retransmit_tries", 4)),
        half_open_timeout=float(spec.get("half_open_timeout", 30.0)),
        ike_lifetime=int(spec.get("ike_lifetime", DEFAULT_IKE_LIFETIME)),
        child_lifetime_kb=spec.get("child_lifetime_kb"),
        accepted_psks=tuple(k.encode() for k in spec.get("accepted_psks", ())),
    )


def as_json(value: object) -> object:
    if isinstance(value, bytes):
        return value.hex()
    if hasattr(value, "__dataclass_fields__"):
        return {k: as_json(getattr(value, k)) for k in value.__dataclass_fields__}
    if isinstance(value, tuple | list):
        return [as_json(v) for v in value]
    if hasattr(value, "compressed"):
        return str(value)
    return value


class Driver:
    def __init__(self, spec: dict[str, Any], loop: asyncio.AbstractEventLoop) -> None:
        self.spec = spec
        self.loop = loop
        self.config = load_config(spec)
        self.local = (spec["local"], IKE_PORT)
        self.sas: dict[bytes, IkeV1Sa] = {}
        """By initiator cookie (both ends know it from the first message)."""
        self.sockets: dict[int, socket.socket] = {}
        self.timer: asyncio.TimerHandle | None = None

    def bind(self) -> None:
        for port in (IKE_PORT, NAT_T_PORT):
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.bind((self.spec["local"], port))
            sock.setblocking(False)
            self.sockets[port] = sock
            self.loop.add_reader(sock.fileno(), self.readable, port)
        self.loop.add_reader(sys.stdin.fileno(), self.command)

    def readable(self, port: int) -> None:
        sock = self.sockets[port]
        while True:
            try:
                data, addr = sock.recvfrom(65535)
            except BlockingIOError:
                break
            if port == NAT_T_PORT:
                if data[:4] != NON_ESP_MARKER:
                    continue  # ESP in UDP or a keepalive: no data plane here
                data = data[4:]
            self.datagram(data, (addr[0], addr[1]))
        self.pump()

    def datagram(self, data: bytes, addr: tuple[str, int]) -> None:
        if len(data) < 28:
            return
        sa = self.sas.get(data[:8])
        phase1 = (ExchangeType.IDENTITY_PROTECTION, ExchangeType.AGGRESSIVE)
        if sa is None and data[18] in phase1 and not any(data[8:16]):
            sa = IkeV1Sa(self.config, Role.RESPONDER, self.local)
            self.sas[data[:8]] = sa
        if sa is not None:
            sa.receive_datagram(data, addr, self.loop.time(), time.time())
            if sa.dropped:
                print(
                    json.dumps({"event": "Dropped", "count": sa.dropped, "reason": sa.last_drop}),
                    flush=True,
                )

    def send(self, data: bytes, addr: tuple[str, int]) -> None:
        if addr[1] == NAT_T_PORT:
            self.sockets[NAT_T_PORT].sendto(NON_ESP_MARKER + data, addr)
        else:
            self.sockets[IKE_PORT].sendto(data, addr)

    def pump(self) -> None:
        now = self.loop.time()
        for sa in list(self.sas.values()):
            for data, addr in sa.datagrams_to_send(now):
                self.send(data, addr)
            while (event := sa.next_event()) is not None:
                body = as_json(event)
                assert isinstance(body, dict)
                body["event"] = type(event).__name__
                if isinstance(event, ChildSaEstablished) and event.spi_in in sa.children:
                    # What IkeV1Sa keeps beside the event (no field for it there).
                    body["lifetime"] = as_json(sa.child_lifetime(event.spi_in))
                    original = sa.child_original_address(event.spi_in)
                    body["peer_original"] = None if original is None else str(original)
                print(json.dumps(body), flush=True)
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        deadlines = [t for sa in self.sas.values() if (t := sa.get_timer()) is not None]
        if deadlines:
            self.timer = self.loop.call_at(min(deadlines), self.on_timer)

    def on_timer(self) -> None:
        self.timer = None
        now = self.loop.time()
        for sa in list(self.sas.values()):
            deadline = sa.get_timer()
            if deadline is not None and deadline <= now:
                sa.handle_timer(now)
        self.pump()

    def current(self) -> IkeV1Sa:
        live = [s for s in self.sas.values() if s.state is V1State.ESTABLISHED]
        if not live:
            raise RuntimeError("no established IKEv1 SA")
        return live[-1]

    def command(self) -> None:
        line = sys.stdin.readline()
        if not line:
            self.loop.stop()
            return
        name = json.loads(line)["cmd"]
        now = self.loop.time()
        try:
            if name == "initiate":
                sa = IkeV1Sa(self.config, Role.INITIATOR, self.local)
                self.sas[sa.icookie] = sa
                sa.initiate((self.spec["peer"], IKE_PORT), now)
            elif name == "reauth":
                # A new Main mode that keeps phase 2: no Quick mode follows it, and no
                # INITIAL-CONTACT (we hold an SA with the peer; the engine does the same).
                config = dataclasses.replace(self.config, initial_contact=False)
                sa = IkeV1Sa(config, Role.INITIATOR, self.local, quick_mode=False)
                self.sas[sa.icookie] = sa
                sa.initiate((self.spec["peer"], IKE_PORT), now)
            elif name == "adopt":
                # The newest established ISAKMP SA takes the Quick mode SAs of the others.
                live = [s for s in self.sas.values() if s.state is V1State.ESTABLISHED]
                taken = [live[-1].adopt_children(old) for old in live[:-1]]
                spis = [spi.hex() for spis in taken for spi in spis]
                print(json.dumps({"event": "Adopted", "spis": spis}), flush=True)
            elif name == "delete_oldest":
                live = [s for s in self.sas.values() if s.state is V1State.ESTABLISHED]
                live[0].delete(now)
            elif name == "rekey_child":
                sa = self.current()
                sa.rekey_child(next(iter(sa.children)), now)
            elif name == "delete_child":
                sa = self.current()
                sa.delete_child(next(iter(sa.children)), now)
            elif name == "delete_ike":
                self.current().delete(now)
            elif name == "liveness":
                self.current().check_liveness(now)
            else:
                raise RuntimeError(f"unknown command {name}")
        except Exception as exc:
            print(json.dumps({"event": "CommandFailed", "reason": str(exc)}), flush=True)
        self.pump()


class V1Peer(OurPeer):
    """Our IKEv1 core in its namespace, through this driver (OurPeer's event reader)."""

    def __init__(self, ns: str, directory: Path, spec: dict[str, Any]) -> None:
        config = directory / "ours.json"
        config.write_text(json.dumps(spec))
        self.stderr = (directory / "ours.err").open("w")
        root = Path(__file__).resolve().parents[2]
        self.process = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                ns,
                sys.executable,
                "-m",
                "tests.support.ike_v1_driver",
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
        self.wait("Ready")


def main() -> None:
    spec = json.loads(Path(sys.argv[1]).read_text())
    loop = asyncio.new_event_loop()
    loop.add_signal_handler(signal.SIGTERM, loop.stop)
    driver = Driver(spec, loop)
    driver.bind()
    print(json.dumps({"event": "Ready"}), flush=True)
    try:
        loop.run_forever()
    finally:
        for sock in driver.sockets.values():
            sock.close()
        loop.close()


if __name__ == "__main__":
    main()
