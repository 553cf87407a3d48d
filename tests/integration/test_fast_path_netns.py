"""The agent's fast data path across the kernel: two real agents (`vpnfleet-agent run
--plan`) in two namespaces open the offloading TUN device, carry TCP (joined segments),
UDP and ICMP unchanged over raw ESP and over UDP 4500, and export the kernel's drop
counter of each ESP socket; an offloading TUN passes IPv6 and non-TCP IPv4 both ways
unchanged; raw ESP sockets on loopback batch both ways and count what the kernel dropped
while nothing read them. Every namespace, process and file is removed at the end.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.engine_lab import SITE, Lab, built, sh
from tests.support.lab import require_root
from vpnfleet.agent.io.rawesp import IPPROTO_ESP, RawEspSocket
from vpnfleet.agent.io.tun_offload import IFF_VNET_HDR

pytestmark = pytest.mark.netns

FLOOD = 400


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    with built(Lab(tmp_path)) as lab:
        yield lab


def in_netns(ns: str, script: str, *args: str, timeout: float = 60) -> subprocess.Popen[str]:
    """``script`` (Python source, its arguments in ``sys.argv[1:]``) run inside ``ns``."""
    return subprocess.Popen(
        ["ip", "netns", "exec", ns, sys.executable, "-c", textwrap.dedent(script), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finished(proc: subprocess.Popen[str], timeout: float = 60) -> str:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"timed out: {out}{err}") from None
    assert proc.returncode == 0, out + err
    return out


TCP_SINK = """
    import hashlib, socket, sys
    server = socket.create_server((sys.argv[1], 0))
    server.settimeout(30)
    print(server.getsockname()[1], flush=True)
    conn, _ = server.accept()
    conn.settimeout(30)
    digest, total = hashlib.sha256(), 0
    while chunk := conn.recv(1 << 16):
        digest.update(chunk)
        total += len(chunk)
    print(total, digest.hexdigest(), flush=True)
"""

TCP_SOURCE = """
    import hashlib, random, socket, sys
    data = random.Random(14).randbytes(int(sys.argv[4]))
    with socket.create_connection((sys.argv[2], int(sys.argv[3])), 30, (sys.argv[1], 0)) as s:
        s.sendall(data)
    print(len(data), hashlib.sha256(data).hexdigest(), flush=True)
"""

UDP_SINK = """
    import socket, sys
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((sys.argv[1], 0))
    s.settimeout(10)
    print(s.getsockname()[1], flush=True)
    got = []
    while len(got) < int(sys.argv[2]):
        got.append(s.recv(65535).hex())
    print(" ".join(got), flush=True)
"""

UDP_SIZES = [1, 17, 100, 999, 1300, 1410]
"""Payloads up to the tunnel MTU over UDP 4500 (1438) less IPv4 and UDP headers."""


def metrics_url(lab: Lab, host: str) -> str:
    return lab.wait_for(host, r"metrics on (http://\S+)").split(" on ", 1)[1]


def scrape(lab: Lab, host: str) -> str:
    fetch = "import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1]).read().decode())"
    ns, url = lab.namespaces[host], metrics_url(lab, host)
    return finished(in_netns(ns, fetch, url), timeout=20)


@pytest.mark.parametrize("force_encap", [False, True], ids=["raw-esp", "udp-4500"])
def test_agents_run_the_offloading_tun_and_export_kernel_drops(lab: Lab, force_encap: bool) -> None:
    lab.force_encap = force_encap
    metrics = ["--metrics-listen", "127.0.0.1:0"]
    lab.start("b", extra=metrics)
    lab.start("a", extra=metrics)
    lab.wait_for("a", r"event child_up b")
    lab.wait_for("b", r"event child_up a")
    a, b = lab.namespaces["a"], lab.namespaces["b"]
    for ns in (a, b):
        flags = int(sh(f"ip netns exec {ns} cat /sys/class/net/vpnfleet0/tun_flags").stdout, 16)
        assert flags & IFF_VNET_HDR, f"{ns}: TUN flags {flags:#x} lack IFF_VNET_HDR"
    # The kill switch and the routes still name the device.
    assert "dev vpnfleet0" in sh(f"ip -n {a} route show table 4500 {SITE['b'][0]}").stdout
    assert "vpnfleet0" in sh(f"ip netns exec {a} nft list ruleset").stdout
    ping = lab.ping(3)
    assert ping.returncode == 0 and " 0% packet loss" in ping.stdout, ping.stdout + ping.stderr
    (_, source), (_, target) = SITE["a"], SITE["b"]
    # TCP, which the receiving side joins into GSO packets: every byte, in order.
    sink = in_netns(b, TCP_SINK, target)
    assert sink.stdout is not None
    port = sink.stdout.readline().strip()
    sent = finished(in_netns(a, TCP_SOURCE, source, target, port, str(24 << 20)))
    assert finished(sink) == sent
    # UDP datagrams of every size pass unchanged (not joined, not split).
    sink = in_netns(b, UDP_SINK, target, str(len(UDP_SIZES)))
    assert sink.stdout is not None
    port = sink.stdout.readline().strip()
    payloads = [bytes([n % 251]) * n for n in UDP_SIZES]
    send = (
        "import socket, sys\n"
        "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind((sys.argv[1], 0))\n"
        "for p in sys.argv[4:]: s.sendto(bytes.fromhex(p), (sys.argv[2], int(sys.argv[3])))\n"
    )
    finished(in_netns(a, send, source, target, port, *(p.hex() for p in payloads)))
    assert sorted(finished(sink).split()) == sorted(p.hex() for p in payloads)
    # Each ESP socket's kernel drop counter, where an operator can alert on it.
    for host in ("a", "b"):
        overflowed = {
            s.labels["socket"]: s.value
            for family in text_string_to_metric_families(scrape(lab, host))
            for s in family.samples
            if s.name == "vpnfleet_socket_drops_total"
            and s.labels["reason"] == "receive_buffer_full"
        }
        assert set(overflowed) == {"udp", "raw_esp"}, f"{host}: {overflowed}"
        assert all(v >= 0 for v in overflowed.values())
    assert lab.kill("a") == 0 and lab.kill("b") == 0


TUN_BOTH_WAYS = """
    import asyncio, json, select, socket, struct, sys
    from vpnfleet.agent.io.routes import Routing
    from vpnfleet.agent.io.tun_offload import OffloadTun

    def csum(data):
        if len(data) % 2:
            data += b"\\0"
        total = sum(struct.unpack(f"!{len(data) // 2}H", data))
        while total >> 16:
            total = (total & 0xFFFF) + (total >> 16)
        return ~total & 0xFFFF

    def udp6(src, dst, sport, dport, payload):
        s, d = socket.inet_pton(socket.AF_INET6, src), socket.inet_pton(socket.AF_INET6, dst)
        length = 8 + len(payload)
        udp = struct.pack("!HHHH", sport, dport, length, 0) + payload
        pseudo = s + d + struct.pack("!I3xB", length, 17)
        udp = udp[:6] + struct.pack("!H", csum(pseudo + udp) or 0xFFFF) + udp[8:]
        return struct.pack("!IHBB", 6 << 28, length, 17, 64) + s + d + udp

    def udp4(src, dst, sport, dport, payload):
        s, d = socket.inet_aton(src), socket.inet_aton(dst)
        length = 8 + len(payload)
        udp = struct.pack("!HHHH", sport, dport, length, 0) + payload
        pseudo = s + d + struct.pack("!xBH", 17, length)
        udp = udp[:6] + struct.pack("!H", csum(pseudo + udp) or 0xFFFF) + udp[8:]
        ip = struct.pack("!BBHHHBBH", 0x45, 0, 20 + length, 1, 0, 64, 17, 0) + s + d
        ip = ip[:10] + struct.pack("!H", csum(ip)) + ip[12:]
        return ip + udp

    async def main():
        tun = OffloadTun("vftoff0")
        async with Routing() as routing:
            await routing.link_up(tun.name, 1400)
            await routing.add_address(tun.name, "fd00:14::1/128")
            await routing.add_address(tun.name, "10.14.0.1/32")
            await routing.add_route("fd00:15::/64", tun.name)
            await routing.add_route("10.15.0.0/24", tun.name)
        out = {}
        # Host -> TUN: what the kernel routes in comes out of read() as it was sent.
        for family, dst in ((socket.AF_INET6, "fd00:15::5"), (socket.AF_INET, "10.15.0.5")):
            with socket.socket(family, socket.SOCK_DGRAM) as s:
                s.sendto(b"outbound " + dst.encode(), (dst, 7))
            while True:
                assert select.select([tun.fileno()], [], [], 5)[0], "nothing read"
                packet = tun.read()
                if packet and packet[0] >> 4 == (6 if family == socket.AF_INET6 else 4):
                    if packet[6 if family == socket.AF_INET6 else 9] == 17:
                        break
            out[dst] = packet[-len(b"outbound " + dst.encode()):].decode()
        # TUN -> host: IPv6 and non-TCP IPv4 in one written batch, each delivered as is.
        six = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        six.bind(("fd00:14::1", 0))
        four = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        four.bind(("10.14.0.1", 0))
        batch = []
        for n in range(3):
            batch.append(udp6("fd00:15::5", "fd00:14::1", 9, six.getsockname()[1],
                              b"six %d " % n * 40))
            batch.append(udp4("10.15.0.5", "10.14.0.1", 9, four.getsockname()[1],
                              b"four %d " % n * 40))
        tun.write_batch(batch)
        got = []
        for sock in (six, four):
            sock.settimeout(5)
            for _ in range(3):
                got.append(sock.recv(4096).decode())
        out["inbound"] = got
        print(json.dumps(out), flush=True)
        tun.close()

    asyncio.run(main())
"""


def test_offloading_tun_passes_ipv6_and_non_tcp_unchanged(tmp_path: Path) -> None:
    require_root()
    ns = f"vft-{os.urandom(3).hex()}-tun"
    sh(f"ip netns add {ns}")
    try:
        sh(f"ip -n {ns} link set lo up")
        sh(f"ip netns exec {ns} sysctl -qw net.ipv6.conf.all.disable_ipv6=0")
        out = json.loads(finished(in_netns(ns, TUN_BOTH_WAYS)))
    finally:
        sh(f"ip netns del {ns}", check=False)
    assert ns not in sh("ip netns list").stdout
    assert out["fd00:15::5"] == "outbound fd00:15::5"
    assert out["10.15.0.5"] == "outbound 10.15.0.5"
    assert out["inbound"] == [f"six {n} " * 40 for n in range(3)] + [
        f"four {n} " * 40 for n in range(3)
    ]


def esp(spi: int, seq: int, size: int) -> bytes:
    return spi.to_bytes(4, "big") + seq.to_bytes(4, "big") + bytes([seq & 0xFF]) * size


def test_raw_esp_counts_what_the_kernel_dropped_while_it_did_not_read() -> None:
    require_root()
    mine = 0x4E5D0001
    arrived: list[bytes] = []
    raw = RawEspSocket(lambda data, host: arrived.append(data), host="127.0.0.1", buffer_bytes=1)
    flood = socket.socket(socket.AF_INET, socket.SOCK_RAW, IPPROTO_ESP)
    try:
        assert raw.kernel_drops() == 0
        # The reader is stalled (never started); loopback delivers within sendto, so
        # each packet is queued or dropped by the time the loop ends.
        for n in range(FLOOD):
            flood.sendto(esp(mine, n, 1000), ("127.0.0.1", 0))
        dropped = raw.kernel_drops()
        assert dropped is not None and dropped > 0
        while True:
            before = len(arrived)
            raw._read()
            if len(arrived) == before:
                break
        ours = [p for p in arrived if p[:4] == mine.to_bytes(4, "big")]
        # Other ESP on this host's loopback may arrive too and take queue room.
        assert 0 < len(ours) < FLOOD
        assert len(ours) + dropped >= FLOOD
    finally:
        flood.close()
        raw.close()


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_raw_esp_sends_a_lone_packet_with_sendto(host: str) -> None:
    """One packet (a ping, an ACK) leaves through ``sendto``, over IPv4 and IPv6, and is
    counted like a run."""
    require_root()
    spi = 0x4E5D0003
    arrived: list[tuple[bytes, str]] = []
    receiver = RawEspSocket(lambda data, h: arrived.append((data, h)), host=host)
    sender = RawEspSocket(lambda data, h: None, host=host)
    lone, single = esp(spi, 1, 100), esp(spi, 2, 1400)
    try:
        sender.send_esp(lone, host)
        sender.send_esp_batch([single], host)
        assert (sender.counters.tx_esp, sender.counters.tx_errors) == (2, 0)
        receiver._read()
        ours = [(data, h) for data, h in arrived if data[:4] == spi.to_bytes(4, "big")]
        assert ours == [(lone, host), (single, host)]
    finally:
        sender.close()
        receiver.close()


def test_raw_esp_sends_a_run_in_one_call_and_reads_it_in_one_wakeup() -> None:
    require_root()
    spi = 0x4E5D0002
    arrived: list[tuple[bytes, str]] = []
    receiver = RawEspSocket(lambda data, host: arrived.append((data, host)), host="127.0.0.1")
    sender = RawEspSocket(lambda data, host: None, host="127.0.0.1")
    run = [esp(spi, n, 1400) for n in range(40)]
    try:
        sender.send_esp_batch(run, "127.0.0.1")
        assert sender.counters.tx_esp == 40
        receiver._read()  # one wakeup
        ours = [(data, host) for data, host in arrived if data[:4] == spi.to_bytes(4, "big")]
        assert ours == [(data, "127.0.0.1") for data in run]
        assert receiver.kernel_drops() == 0
    finally:
        sender.close()
        receiver.close()
