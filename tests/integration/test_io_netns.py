"""The real I/O layer inside network namespaces: UDP 500/4500 with the non-ESP marker and
NAT-keepalives (RFC 3948), raw ESP (IP protocol 50), a TUN device with routes, and the
firewall mark that keeps the agent's own packets out of the tunnel.

Each test makes two namespaces ``vft-<random>-a`` / ``-b`` joined by a veth pair
(10.77.0.1/24 and 10.77.0.2/24), runs the code under test in child Python processes
started with ``ip netns exec`` (the pytest process never changes namespace), and talks
to the children through JSON lines on their stdout. Processes and namespaces are removed
in fixture teardown, also when a test fails.
"""

from __future__ import annotations

import json
import os
import secrets
import select
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

pytestmark = pytest.mark.netns

ADDR_A = "10.77.0.1"
ADDR_B = "10.77.0.2"
LINE_TIMEOUT = 15.0


def _ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)} failed: {done.stderr.strip()}")


@dataclass
class Child:
    """A Python process inside a namespace that reports through JSON lines."""

    proc: subprocess.Popen[bytes]
    buffer: bytes = b""

    def line(self, timeout: float = LINE_TIMEOUT) -> dict[str, Any]:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buffer:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([fd], [], [], max(left, 0))
            if not ready:
                raise AssertionError(f"no line from child within {timeout} s: {self.stderr()}")
            chunk = os.read(fd, 65536)
            if not chunk:
                raise AssertionError(f"child exited: {self.stderr()}")
            self.buffer += chunk
        raw, self.buffer = self.buffer.split(b"\n", 1)
        message: dict[str, Any] = json.loads(raw)
        return message

    def stderr(self) -> str:
        if self.proc.poll() is None or self.proc.stderr is None:
            return "(still running)"
        return self.proc.stderr.read().decode(errors="replace")[-3000:]


@dataclass
class NetnsPair:
    a: str
    b: str
    veth_a: str
    veth_b: str
    children: list[Child] = field(default_factory=list)

    def run(self, ns: str, script: str, **params: Any) -> Child:
        """Start ``script`` (Python source; ``PARAMS`` holds ``params``) inside ``ns``."""
        source = "import json, sys\nPARAMS = json.loads(sys.argv[1])\n" + textwrap.dedent(script)
        proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, sys.executable, "-c", source, json.dumps(params)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
        )
        child = Child(proc)
        self.children.append(child)
        return child

    def exec(self, ns: str, *argv: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["ip", "netns", "exec", ns, *argv],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )


@pytest.fixture
def netns_pair() -> Iterator[NetnsPair]:
    if os.geteuid() != 0:
        pytest.skip("needs root to create network namespaces")
    suffix = secrets.token_hex(3)
    pair = NetnsPair(f"vft-{suffix}-a", f"vft-{suffix}-b", f"vft{suffix}a", f"vft{suffix}b")
    made: list[str] = []
    try:
        for ns in (pair.a, pair.b):
            _ip("netns", "add", ns)
            made.append(ns)
        # Both ends are created directly inside the namespaces, so nothing is ever left
        # in the root namespace: deleting the namespaces deletes the pair.
        _ip(
            "link", "add", pair.veth_a, "netns", pair.a, "type", "veth",
            "peer", "name", pair.veth_b, "netns", pair.b,
        )  # fmt: skip
        for ns, dev, addr in ((pair.a, pair.veth_a, ADDR_A), (pair.b, pair.veth_b, ADDR_B)):
            _ip("-n", ns, "addr", "add", f"{addr}/24", "dev", dev)
            _ip("-n", ns, "link", "set", dev, "up")
            _ip("-n", ns, "link", "set", "lo", "up")
        yield pair
    finally:
        for child in pair.children:
            if child.proc.poll() is None:
                child.proc.kill()
            child.proc.wait(10)
            for stream in (child.proc.stdout, child.proc.stderr):
                if stream is not None:
                    stream.close()
        for ns in made:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)


# -- UDP 500 / 4500 ----------------------------------------------------------------------

IKE_HEX = "0102030405060708" + "00" * 8 + "21202208" + "00000000" + "0000001c"
ESP_HEX = "00001234" + "00000001" + "aa" * 40

ENDPOINT_SCRIPT = """
import asyncio
from vpnfleet.agent.io.keepalive import KeepaliveScheduler
from vpnfleet.agent.io.udp import UdpEndpoint

def emit(**kw):
    print(json.dumps(kw), flush=True)

async def main():
    got_ike, got_esp = [], []
    done = asyncio.Event()
    endpoint = None

    def on_ike(data, addr, port):
        got_ike.append([data.hex(), list(addr), port])
        if PARAMS["role"] == "responder":
            endpoint.send_ike(bytes.fromhex(PARAMS["reply_ike"]), addr, via_4500=port == 4500)
            endpoint.send_esp(bytes.fromhex(PARAMS["esp"]), addr)
        check()

    def on_esp(data, addr):
        got_esp.append([data.hex(), list(addr)])
        check()

    def check():
        c = endpoint.counters
        if PARAMS["role"] == "responder":
            if got_ike and got_esp and c.rx_keepalive >= PARAMS["keepalives"]:
                done.set()
        elif got_ike and got_esp:
            done.set()

    endpoint = UdpEndpoint(on_ike, on_esp, host=PARAMS["host"])
    endpoint.start()
    emit(ready=True)
    if PARAMS["role"] == "initiator":
        peer = (PARAMS["peer"], 4500)
        endpoint.send_ike(bytes.fromhex(PARAMS["ike"]), peer, via_4500=True)
        await asyncio.wait_for(done.wait(), 10)
        endpoint.send_esp(bytes.fromhex(PARAMS["esp"]), peer)
        scheduler = KeepaliveScheduler(endpoint, interval=0.1)
        scheduler.add_peer(peer)
        scheduler.start()
        while endpoint.counters.tx_keepalive < PARAMS["keepalives"]:
            await asyncio.sleep(0.05)
        scheduler.stop()
    else:
        while not done.is_set():
            await asyncio.sleep(0.02)
            check()
    emit(ike=got_ike, esp=got_esp, counters=endpoint.counters.as_dict())
    endpoint.close()

asyncio.run(main())
"""


def test_udp_4500_exchange_between_endpoints(netns_pair: NetnsPair) -> None:
    reply_ike = "f1" * 8 + "0102030405060708" + "21202220" + "00000000" + "0000001c"
    responder = netns_pair.run(
        netns_pair.b,
        ENDPOINT_SCRIPT,
        role="responder",
        host=ADDR_B,
        reply_ike=reply_ike,
        esp=ESP_HEX,
        keepalives=2,
    )
    assert responder.line() == {"ready": True}
    initiator = netns_pair.run(
        netns_pair.a,
        ENDPOINT_SCRIPT,
        role="initiator",
        host=ADDR_A,
        peer=ADDR_B,
        ike=IKE_HEX,
        esp=ESP_HEX,
        keepalives=2,
    )
    assert initiator.line() == {"ready": True}
    got_a = initiator.line()
    got_b = responder.line()
    # The marker is removed before IKE sees the message, on both sides.
    assert got_b["ike"] == [[IKE_HEX, [ADDR_A, 4500], 4500]]
    assert got_a["ike"] == [[reply_ike, [ADDR_B, 4500], 4500]]
    assert got_a["esp"] == [[ESP_HEX, [ADDR_B, 4500]]]
    assert got_b["esp"] == [[ESP_HEX, [ADDR_A, 4500]]]
    assert got_b["counters"]["rx_keepalive"] >= 2
    for counters in (got_a["counters"], got_b["counters"]):
        assert counters["rx_short"] == counters["rx_malformed"] == counters["rx_errors"] == 0
    assert got_a["counters"]["tx_keepalive"] >= 2


WIRE_PEER_SCRIPT = """
import socket
# A plain socket sees exactly what is on the wire.
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((PARAMS["host"], 4500))
s.settimeout(10)
print(json.dumps({"ready": True}), flush=True)
seen = []
while len(seen) < PARAMS["count"]:
    data, addr = s.recvfrom(4096)
    seen.append([data.hex(), list(addr)])
    if len(seen) == 1:
        # Answer as a peer would: IKE with the marker, ESP, a keepalive, and garbage.
        for hexdata in PARAMS["answers"]:
            s.sendto(bytes.fromhex(hexdata), addr)
print(json.dumps({"seen": seen}), flush=True)
"""

COLLECT_SCRIPT = """
import asyncio
from vpnfleet.agent.io.keepalive import KeepaliveScheduler
from vpnfleet.agent.io.udp import UdpEndpoint

async def main():
    got = []
    endpoint = UdpEndpoint(
        lambda d, a, p: got.append(["ike", d.hex(), p]),
        lambda d, a: got.append(["esp", d.hex()]),
        host=PARAMS["host"],
    )
    endpoint.start()
    peer = (PARAMS["peer"], 4500)
    endpoint.send_ike(bytes.fromhex(PARAMS["ike"]), peer, via_4500=True)
    endpoint.send_esp(bytes.fromhex(PARAMS["esp"]), peer)
    scheduler = KeepaliveScheduler(endpoint, interval=0.1)
    scheduler.add_peer(peer)
    scheduler.start()
    total = lambda c: c.rx_ike + c.rx_esp + c.rx_keepalive + c.rx_short + c.rx_malformed
    for _ in range(500):
        if total(endpoint.counters) >= PARAMS["expect"] and endpoint.counters.tx_keepalive >= 2:
            break
        await asyncio.sleep(0.02)
    scheduler.stop()
    print(json.dumps({"got": got, "counters": endpoint.counters.as_dict()}), flush=True)
    endpoint.close()

asyncio.run(main())
"""


def test_marker_and_keepalives_on_the_wire(netns_pair: NetnsPair) -> None:
    answers = ["00000000" + IKE_HEX, ESP_HEX, "ff", "0000", "00000000", "01020304"]
    peer = netns_pair.run(netns_pair.b, WIRE_PEER_SCRIPT, host=ADDR_B, count=4, answers=answers)
    assert peer.line() == {"ready": True}
    ours = netns_pair.run(
        netns_pair.a,
        COLLECT_SCRIPT,
        host=ADDR_A,
        peer=ADDR_B,
        ike=IKE_HEX,
        esp=ESP_HEX,
        expect=len(answers),
    )
    seen = peer.line()["seen"]
    result = ours.line()
    # On the wire: IKE carries the four-byte marker (RFC 3948 section 2.2), ESP does not,
    # and idle time brings 0xFF keepalives (section 2.3, 4), all from port 4500.
    assert seen[0] == ["00000000" + IKE_HEX, [ADDR_A, 4500]]
    assert seen[1] == [ESP_HEX, [ADDR_A, 4500]]
    assert seen[2:] == [["ff", [ADDR_A, 4500]]] * 2
    # The peer's marked IKE arrives without its marker, ESP whole, the rest is dropped.
    assert result["got"] == [["ike", IKE_HEX, 4500], ["esp", ESP_HEX]]
    c = result["counters"]
    assert (c["rx_ike"], c["rx_esp"], c["rx_keepalive"], c["rx_short"]) == (1, 1, 1, 3)


# -- raw ESP -------------------------------------------------------------------------------

RAW_ESP_SCRIPT = """
import asyncio
from vpnfleet.agent.io.rawesp import RawEspSocket

async def main():
    got = []
    sock = RawEspSocket(lambda d, a: got.append([d.hex(), a]), host=PARAMS["host"])
    sock.start()
    print(json.dumps({"ready": True}), flush=True)
    for hexdata in PARAMS.get("send", []):
        sock.send_esp(bytes.fromhex(hexdata), PARAMS["peer"])
    for _ in range(500):
        c = sock.counters
        if c.rx_esp + c.rx_short + c.rx_malformed >= PARAMS["expect"]:
            break
        await asyncio.sleep(0.02)
    print(json.dumps({"got": got, "counters": sock.counters.as_dict()}), flush=True)
    sock.close()

asyncio.run(main())
"""


def test_raw_esp_protocol_50_delivered(netns_pair: NetnsPair) -> None:
    receiver = netns_pair.run(netns_pair.b, RAW_ESP_SCRIPT, host="0.0.0.0", expect=3)
    assert receiver.line() == {"ready": True}
    short, zero_spi = "00001234", "00000000" + "00000001" + "bb" * 8
    sender = netns_pair.run(
        netns_pair.a,
        RAW_ESP_SCRIPT,
        host=ADDR_A,
        peer=ADDR_B,
        send=[ESP_HEX, short, zero_spi],
        expect=0,
    )
    assert sender.line() == {"ready": True}
    sent = sender.line()["counters"]
    got = receiver.line()
    assert sent["tx_esp"] == 3 and sent["tx_errors"] == 0
    # The IPv4 header is stripped: the ESP packet starts at the SPI.
    assert got["got"] == [[ESP_HEX, ADDR_A]]
    c = got["counters"]
    assert (c["rx_esp"], c["rx_short"], c["rx_malformed"]) == (1, 1, 1)


# -- TUN, routes, policy routing -----------------------------------------------------------

TUN_PING_SCRIPT = """
import asyncio, select, struct
from vpnfleet.agent.io.routes import Routing
from vpnfleet.agent.io.tunnel_mtu import tunnel_mtu
from vpnfleet.agent.io.tun import LinuxTun

def checksum(data):
    if len(data) % 2:
        data += b"\\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF

async def setup(tun):
    async with Routing() as routing:
        await routing.link_up(tun.name, tunnel_mtu())
        await routing.add_address(tun.name, PARAMS["address"])
        for _ in range(2):  # idempotent
            await routing.add_route(PARAMS["prefix"], tun.name, metric=PARAMS["metric"])
        return {
            "mtu": await routing.link_mtu(tun.name),
            "routes": [[r.prefix, r.ifname, r.metric] for r in await routing.routes(ifname=tun.name)
                       if r.prefix == PARAMS["prefix"]],
        }

tun = LinuxTun(PARAMS["tun"], mtu=tunnel_mtu())
info = asyncio.run(setup(tun))
print(json.dumps({"ready": True, **info}), flush=True)
seen = []
while len(seen) < PARAMS["count"]:
    if not select.select([tun.fileno()], [], [], 10)[0]:
        break
    packet = tun.read()
    if packet is None or packet[0] >> 4 != 4 or packet[9] != 1:
        continue  # IPv6 router solicitations and the like
    ihl = (packet[0] & 0x0F) * 4
    icmp = packet[ihl:]
    if icmp[0] != 8:
        continue
    dotted = lambda raw: ".".join(map(str, raw))
    seen.append({"src": dotted(packet[12:16]), "dst": dotted(packet[16:20])})
    # Answer the echo request through the TUN: addresses swapped (the IPv4 header
    # checksum is unchanged by a swap), ICMP type 0 with a new checksum.
    reply_icmp = b"\\0\\0\\0\\0" + icmp[4:]
    reply_icmp = reply_icmp[:2] + struct.pack("!H", checksum(reply_icmp)) + reply_icmp[4:]
    tun.write(packet[:12] + packet[16:20] + packet[12:16] + packet[20:ihl] + reply_icmp)
print(json.dumps({"seen": seen}), flush=True)
tun.close()
"""


def test_ping_into_tun_through_route(netns_pair: NetnsPair) -> None:
    child = netns_pair.run(
        netns_pair.a,
        TUN_PING_SCRIPT,
        tun="vfttun0",
        address="10.88.0.1/32",
        prefix="10.99.0.0/24",
        metric=7,
        count=2,
    )
    ready = child.line()
    # AES-GCM over UDP over IPv4 on a 1500-byte underlay (routes.py shows the sum).
    assert ready["mtu"] == 1438
    assert ready["routes"] == [["10.99.0.0/24", "vfttun0", 7]]
    ping = netns_pair.exec(netns_pair.a, "ping", "-c", "2", "-i", "0.2", "-W", "5", "10.99.0.5")
    seen = child.line()["seen"]
    assert seen == [{"src": "10.88.0.1", "dst": "10.99.0.5"}] * 2
    # The replies written into the TUN reached ping: both directions of the device work.
    assert ping.returncode == 0, ping.stdout + ping.stderr
    assert " 0% packet loss" in ping.stdout


FWMARK_SCRIPT = """
import asyncio, select
from vpnfleet.agent.io.routes import Routing, RouteError
from vpnfleet.agent.io.tun import LinuxTun
from vpnfleet.agent.io.udp import UdpEndpoint

async def main():
    tun = LinuxTun(PARAMS["tun"])
    async with Routing() as routing:
        await routing.link_up(tun.name)
        # Transport mode: the peer itself is a protected destination, so its host route
        # points into the TUN; the agent's own marked packets take table 100, which
        # reaches the peer over the veth.
        await routing.add_route(PARAMS["peer"] + "/32", tun.name)
        await routing.add_route(PARAMS["subnet"], PARAMS["veth"], table=100)
        for _ in range(2):
            await routing.add_fwmark_rule(0x42, 100, priority=1000)
        rules = await routing.fwmark_rules()
        errors = []
        try:
            await routing.add_route(PARAMS["subnet"], tun.name, table=100)
        except RouteError as exc:
            errors.append(str(exc))

    endpoint = UdpEndpoint(lambda *a: None, lambda *a: None, host="0.0.0.0", ike_port=None,
                           mark=0x42)
    plain = UdpEndpoint(lambda *a: None, lambda *a: None, host="0.0.0.0", ike_port=None,
                        natt_port=0)
    endpoint.send_esp(bytes.fromhex(PARAMS["marked"]), (PARAMS["peer"], 4500))
    plain.send_esp(bytes.fromhex(PARAMS["unmarked"]), (PARAMS["peer"], 4500))
    in_tun = []
    while select.select([tun.fileno()], [], [], 2)[0]:
        packet = tun.read()
        if packet and packet[0] >> 4 == 4 and packet[9] == 17:
            in_tun.append(packet[28:].hex())
    async with Routing() as routing:
        for _ in range(2):
            await routing.remove_fwmark_rule(0x42, 100, priority=1000)
            await routing.remove_route(PARAMS["subnet"], PARAMS["veth"], table=100)
        left = [await routing.fwmark_rules(), await routing.routes(table=100)]
    print(json.dumps({"rules": rules, "errors": errors, "in_tun": in_tun,
                      "left": [len(x) for x in left]}), flush=True)

asyncio.run(main())
"""

UDP_SINK_SCRIPT = """
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((PARAMS["host"], 4500))
s.settimeout(8)
print(json.dumps({"ready": True}), flush=True)
data, addr = s.recvfrom(4096)
print(json.dumps({"data": data.hex(), "addr": list(addr)}), flush=True)
"""


def test_fwmark_keeps_own_traffic_out_of_tun(netns_pair: NetnsPair) -> None:
    sink = netns_pair.run(netns_pair.b, UDP_SINK_SCRIPT, host=ADDR_B)
    assert sink.line() == {"ready": True}
    marked, unmarked = "0000aaaa00000001" + "11" * 16, "0000bbbb00000001" + "22" * 16
    child = netns_pair.run(
        netns_pair.a,
        FWMARK_SCRIPT,
        tun="vfttun1",
        peer=ADDR_B,
        subnet="10.77.0.0/24",
        veth=netns_pair.veth_a,
        marked=marked,
        unmarked=unmarked,
    )
    result = child.line()
    assert result["rules"] == [[0x42, 100, 1000]]
    assert len(result["errors"]) == 1
    assert f"already routed via {netns_pair.veth_a} in table 100" in result["errors"][0]
    # The unmarked datagram followed the host route into the TUN; the marked one went
    # out over the veth to the peer.
    assert result["in_tun"] == [unmarked]
    assert sink.line() == {"data": marked, "addr": [ADDR_A, 4500]}
    assert result["left"] == [0, 0]


ROUTES_SCRIPT = """
import asyncio
from vpnfleet.agent.io.routes import Routing, RouteError
from vpnfleet.agent.io.tun import LinuxTun

async def attempt(coro):
    try:
        await coro
        return "ok"
    except RouteError as exc:
        return f"{exc.errno}: {exc.strerror}"

async def main():
    tun = LinuxTun(PARAMS["tun"])
    out = {}
    async with Routing() as r:
        out["route_while_down"] = await attempt(r.add_route("10.91.0.0/24", tun.name))
        await r.link_up(tun.name, 1400)
        for _ in range(2):
            await r.add_address(tun.name, "10.90.0.1/24")
        out["addresses"] = [a for a in await r.addresses(tun.name) if a.startswith("10.")]
        await r.add_route("10.91.0.0/24", tun.name, table=200, metric=20)
        await r.add_route("10.91.0.0/24", tun.name, table=200, metric=20)
        # Same prefix at another metric is a different route, not a conflict.
        await r.add_route("10.91.0.0/24", tun.name, table=200, metric=30)
        out["table_200"] = sorted(
            [x.prefix, x.ifname, x.table, x.metric] for x in await r.routes(table=200)
        )
        out["unknown_device"] = await attempt(r.add_route("10.92.0.0/24", "nosuchdev0"))
        out["unknown_device_up"] = await attempt(r.link_up("nosuchdev0"))
        for _ in range(2):
            await r.remove_route("10.91.0.0/24", tun.name, table=200, metric=20)
            await r.remove_route("10.91.0.0/24", tun.name, table=200, metric=30)
            await r.remove_address(tun.name, "10.90.0.1/24")
        # Removing from a device that no longer exists is not an error either.
        await r.remove_route("10.91.0.0/24", "nosuchdev0")
        out["table_200_after"] = len(await r.routes(table=200))
        out["addresses_after"] = [a for a in await r.addresses(tun.name) if a.startswith("10.")]
    tun.close()
    print(json.dumps(out), flush=True)

asyncio.run(main())
"""


def test_routes_idempotent_and_clear_errors(netns_pair: NetnsPair) -> None:
    out = netns_pair.run(netns_pair.a, ROUTES_SCRIPT, tun="vfttun2").line()
    assert out["route_while_down"] == (
        "100: add route 10.91.0.0/24 dev vfttun2: ENETDOWN Network is down"
    )
    assert out["addresses"] == ["10.90.0.1/24"]
    assert out["table_200"] == [
        ["10.91.0.0/24", "vfttun2", 200, 20],
        ["10.91.0.0/24", "vfttun2", 200, 30],
    ]
    assert out["unknown_device"] == "19: no interface named 'nosuchdev0' in this namespace"
    assert out["unknown_device_up"] == out["unknown_device"]
    assert out["table_200_after"] == 0
    assert out["addresses_after"] == []


RECREATED_TUN_SCRIPT = """
import asyncio
from vpnfleet.agent.io.routes import Routing
from vpnfleet.agent.io.tun import LinuxTun

async def main():
    out = {}
    async with Routing() as r:
        tun = LinuxTun(PARAMS["tun"])
        await r.link_up(tun.name)
        await r.add_route("10.93.0.0/24", tun.name, table=200)
        out["first"] = await r.link_index(tun.name)
        tun.close()
        # Another device in between takes the next index, so the new TUN's differs
        # from the first's by more than one.
        spacer = LinuxTun(PARAMS["spacer"])
        tun = LinuxTun(PARAMS["tun"])
        async with Routing() as other:
            await other.link_up(tun.name)
            await other.add_route("10.96.0.0/24", tun.name, table=200)
        # Every change below is made with the index kept from the first device first.
        await r.remove_route("10.96.0.0/24", tun.name, table=200)
        await r.link_up(tun.name, 1300)
        await r.add_address(tun.name, "10.94.0.1/32")
        await r.add_route("10.93.0.0/24", tun.name, table=200)
        await r.add_route("10.95.0.0/24", tun.name, table=200)
        out["second"] = await r.link_index(tun.name)
        out["mtu"] = await r.link_mtu(tun.name)
        out["addresses"] = [a for a in await r.addresses(tun.name) if a.startswith("10.")]
        out["table_200"] = sorted([x.prefix, x.ifname] for x in await r.routes(table=200))
        tun.close()
        spacer.close()
        # Gone: its routes went with it, and removing one is not an error.
        await r.remove_route("10.93.0.0/24", tun.name, table=200)
        out["table_200_after"] = len(await r.routes(table=200))
    print(json.dumps(out), flush=True)

asyncio.run(main())
"""


def test_routes_follow_a_recreated_tun(netns_pair: NetnsPair) -> None:
    out = netns_pair.run(netns_pair.a, RECREATED_TUN_SCRIPT, tun="vfttun3", spacer="vfttun4").line()
    assert out["second"] != out["first"]
    assert out["mtu"] == 1300
    assert out["addresses"] == ["10.94.0.1/32"]
    # 10.96.0.0/24, added through the new device by another client, was removed by
    # this one while it still kept the first device's index.
    assert out["table_200"] == [["10.93.0.0/24", "vfttun3"], ["10.95.0.0/24", "vfttun3"]]
    assert out["table_200_after"] == 0
