"""ESP throughput, TCP retransmits, socket drops and ping RTT through two real agents,
beside strongSwan in the same namespaces, in one run.

    sudo .venv/bin/python bench/esp_throughput.py [--seconds 10] [--skip-strongswan]
                                                  [--manual-keyed]

Our figures come from what users run: a lab of two hosts, built by ``lab up`` through
the lab API (as bench/convergence.py uses it). The controller compiles one plan per
host from a two-host mesh inventory (PSK; IKE aes256gcm16-prfsha384-x25519 and ESP
aes256gcm16, the defaults), pushes it over gRPC with mutual TLS to the agent process
in each host's namespace on the lab's bridge, and the agents key the tunnel with IKEv2.
One lab per encapsulation:

* ``ours_raw``: ESP straight over IP (protocol 50), as agents send it where no NAT is
  found;
* ``ours_udp``: ESP in UDP 4500 (RFC 3948), forced by the inventory's
  ``force_encap: true``.

``strongswan`` runs in the second lab's namespaces once its agents are stopped and what
they leave on a host is removed (``vpnfleet-agent cleanup``): two charon daemons with
kernel-libipsec (userspace ESP on ipsec0; it always puts ESP in UDP), configured as the
lab configures its external peers, with the same proposals and a PSK.

For each stack ``<s>`` (``ours_raw``, ``ours_udp``, ``strongswan``), from the site of
host h0 to the site of host h1 through the tunnel:

``<s>_rtt_avg_ms``, ``<s>_rtt_p50_ms``, ``<s>_ping_lost``
    50 pings 0.01 s apart through the idle tunnel, before the transfer: the mean and the
    median round-trip time, and the echo requests that got no reply.
``<s>_mbps``
    iperf3 TCP, one stream for ``--seconds``: Mbit/s received.
``<s>_retransmits``
    the sender's TCP retransmits as iperf3 reports them (``sum_sent.retransmits``).
``<s>_out_segs``, ``<s>_retrans_segs``, ``<s>_retrans_pct``
    Tcp OutSegs and RetransSegs of /proc/net/snmp in the sending namespace, after the
    transfer minus before, and ``100 × RetransSegs / (OutSegs + RetransSegs)``: the
    share of all segments sent that were retransmissions (Linux leaves them out of
    OutSegs).
``<s>_raw_drops``, ``<s>_udp_drops``, ``<s>_udp_rcvbuf_errors``
    what the kernel counted in the receiving namespace over the transfer: the ``drops``
    column of /proc/net/raw and raw6 (our raw ESP socket) and of /proc/net/udp and udp6
    (UDP 500/4500, the agent's or charon's), and Udp RcvbufErrors of /proc/net/snmp.
``<s>_tun_bytes``, ``<s>_tun_dropped``
    the receiving tunnel device (vpnfleet0, ipsec0) over the transfer, from
    /proc/net/dev: bytes the agent (charon) wrote into it, the decrypted traffic, and
    packets of those the kernel dropped (``rx_bytes`` and ``rx_dropped``: for the kernel
    they arrive on the device). Fewer bytes than iperf3 received means the transfer did
    not cross the tunnel, and the part fails.
``<s>_rx_cpu_pct``, ``<s>_rx_cpu_us_per_packet``
    CPU time (user and system, all threads, from /proc/PID/stat) of the receiving agent
    (charon) over the transfer: as a percentage of the transfer's wall time (100 is one
    core busy), and in microseconds per TCP segment it wrote into the tunnel device,
    counted as ``tun_bytes / (MTU - 40)`` with the device's MTU (our offloading TUN
    takes joined segments as one large packet, so the device's packet count would
    divide by joined frames, not segments). It is all the receiver's work, the TCP ACKs
    it seals and sends back included.
``ours_raw_agent_drops``, ``ours_udp_agent_drops``
    the receiving agent's own drop counters (its Prometheus metrics with ``drop`` in
    their name) that grew over the transfer, as ``{"metric{labels}": increase}``.

Side by side: ``ratio_raw`` and ``ratio_udp`` are ``ours_raw_mbps`` and
``ours_udp_mbps`` divided by ``strongswan_mbps``; ``rtt_avg_diff_raw_ms``,
``rtt_p50_diff_raw_ms``, ``rtt_avg_diff_udp_ms`` and ``rtt_p50_diff_udp_ms`` are ours
minus strongSwan's (null when a side is missing).

``--manual-keyed`` adds ``manual_keyed_raw_mbps`` and ``manual_keyed_udp_mbps``: the same
transfer through the data plane alone, keyed by hand with fixed AES-128-GCM keys
(``vpnfleet.agent.io.manual_keying``: no IKE, no agent, no plan) between two namespaces
joined by one veth (tests/support/dataplane_lab.py). A side road for working on the data
plane, not what users run.

Also ``bench``, ``seconds``, ``commit`` (``git describe --always --dirty`` of this
checkout when the run started) and ``run_s`` (the whole run, in seconds). A part that
fails leaves its fields out, ``error`` says which part failed and why, and the exit code
is 1 (130 when interrupted). Needs root, iperf3, and strongSwan (charon, swanctl and
libcharon-extra-plugins) unless ``--skip-strongswan``. Every namespace, process and
file made here is removed at the end, also on failure, Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import enum
import json
import os
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from vpnfleet.agent.engine.host import DEFAULT_TUN_NAME
from vpnfleet.controller import lab
from vpnfleet.controller.lab import external, netns, supervisor
from vpnfleet.controller.lab.layout import ExternalConnection, ExternalLayout, HostLayout
from vpnfleet.controller.lab.lifecycle import LAB_METRICS
from vpnfleet.controller.lab.record import LabRecord
from vpnfleet.controller.statedir.state import StateDir

# The repository root, for the helpers the tests share (tests/support).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.support import kernel_counters
from tests.support.dataplane_lab import SitePair, tcp_mbps
from tests.support.pings import echo_rtts

REPO = Path(__file__).resolve().parents[1]

IKE_PROPOSAL = "aes256gcm16-prfsha384-x25519"
ESP_PROPOSAL = "aes256gcm16"
# (underlay address, site subnet); h0 initiates (the lower name) and sends.
HOSTS = {"h0": ("10.99.0.10", "10.1.0.0/24"), "h1": ("10.99.0.11", "10.2.0.0/24")}
SENDER, RECEIVER = "h0", "h1"
CHARON_DEVICE = "ipsec0"
LAB_TIMEOUT = 60.0
CHARON_UP_TIMEOUT = 20.0
PING_COUNT = 50
PING_INTERVAL = 0.01
IPERF_PORT = 5201


class Encap(enum.Enum):
    RAW = "raw"
    UDP = "udp"


class BenchError(Exception):
    """A part of the benchmark could not be measured; the message says why."""


PART_ERRORS = (
    BenchError,
    lab.LabError,
    kernel_counters.CounterError,
    OSError,
    subprocess.SubprocessError,
    RuntimeError,
    KeyError,
    ValueError,
)


# -- interruption ----------------------------------------------------------------------


class Interrupts:
    """SIGINT and SIGTERM raise KeyboardInterrupt, so that every ``finally`` removes what
    was made; inside :meth:`shielded` (the removal itself) they wait until it is done."""

    def __init__(self) -> None:
        self.depth = 0
        self.pending = False

    def install(self) -> None:
        signal.signal(signal.SIGINT, self._on_signal)
        signal.signal(signal.SIGTERM, self._on_signal)

    def _on_signal(self, _signum: int, _frame: FrameType | None) -> None:
        if self.depth:
            self.pending = True
            return
        raise KeyboardInterrupt

    @contextlib.contextmanager
    def shielded(self) -> Iterator[None]:
        self.depth += 1
        try:
            yield
        finally:
            self.depth -= 1
            if not self.depth and self.pending:
                self.pending = False
                raise KeyboardInterrupt


INTERRUPTS = Interrupts()


# -- one run's figures -----------------------------------------------------------------


@dataclass
class Run:
    result: dict[str, Any]
    errors: list[str]

    @contextlib.contextmanager
    def part(self, name: str) -> Iterator[None]:
        """Record a failure of part ``name`` in ``errors`` and go on with the next part."""
        try:
            yield
        except PART_ERRORS as exc:
            why = str(exc) if isinstance(exc, BenchError | lab.LabError) else repr(exc)
            self.errors.append(f"{name}: {why}")


# -- measuring one tunnel --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TunnelPath:
    """From the sender's site address to the receiver's, through the tunnel."""

    sender: str  # namespace
    receiver: str  # namespace
    src: str
    dst: str
    device: str  # the receiver's tunnel device
    receiver_pid: int  # the process behind it: the agent or charon
    agent_metrics: bool  # the receiver runs an agent with metrics at LAB_METRICS


def lab_path(
    hosts: dict[str, HostLayout], device: str, receiver_pid: int, *, agent_metrics: bool
) -> TunnelPath:
    a, b = hosts[SENDER], hosts[RECEIVER]
    return TunnelPath(
        a.netns,
        b.netns,
        a.sites[0].address,
        b.sites[0].address,
        device,
        receiver_pid,
        agent_metrics,
    )


def in_netns(netns_name: str, *argv: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ip", "netns", "exec", netns_name, *argv],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def ping_rtts(path: TunnelPath, count: int, interval: float) -> dict[int, float]:
    done = in_netns(
        path.sender,
        *("ping", "-n", "-c", str(count), "-i", f"{interval:g}", "-W", "1"),
        *("-I", path.src, path.dst),
        timeout=count * interval + 30,
    )
    return echo_rtts(done.stdout)


def _wait_listening(netns_name: str, port: int, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if in_netns(netns_name, "ss", "-Hltn", f"sport = :{port}").stdout.strip():
            return
        time.sleep(0.05)
    raise BenchError(f"iperf3 did not listen on port {port} in {netns_name}")


def iperf3_tcp(path: TunnelPath, seconds: float) -> dict[str, Any]:
    """One TCP stream from the sender's site to the receiver's; the client's JSON."""
    server = subprocess.Popen(
        ["ip", "netns", "exec", path.receiver, "iperf3", "-s", "-1", "-B", path.dst,
         "-p", str(IPERF_PORT)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        _wait_listening(path.receiver, IPERF_PORT)
        done = in_netns(
            path.sender,
            *("iperf3", "-c", path.dst, "-B", path.src, "-p", str(IPERF_PORT)),
            *("-J", "-t", f"{seconds:g}"),
            timeout=seconds + 30,
        )
        result: dict[str, Any] = json.loads(done.stdout or "{}")
        if done.returncode != 0 or "error" in result or "end" not in result:
            raise BenchError(f"iperf3 failed: {result.get('error') or done.stderr.strip()}")
        return result
    finally:
        with INTERRUPTS.shielded():
            if server.poll() is None:
                server.kill()
            server.wait(10)


def device_mtu(netns_name: str, device: str) -> int:
    """The MTU of ``device`` in ``netns_name``."""
    done = in_netns(netns_name, "cat", f"/sys/class/net/{device}/mtu")
    if done.returncode != 0 or not done.stdout.strip().isdigit():
        raise BenchError(f"cannot read the MTU of {device} in {netns_name}: {done.stderr.strip()}")
    return int(done.stdout)


def agent_drop_counters(netns_name: str) -> dict[str, float]:
    """The agent's Prometheus samples with ``drop`` in their name, read from its metrics
    endpoint inside its namespace."""
    fetch = (
        "import sys, urllib.request; "
        "sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())"
    )
    done = in_netns(netns_name, sys.executable, "-c", fetch, f"http://{LAB_METRICS}/metrics")
    if done.returncode != 0:
        raise BenchError(
            f"cannot read the agent's metrics at {LAB_METRICS} in {netns_name}: "
            f"{done.stderr.strip()[-300:]}"
        )
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(done.stdout):
        if "drop" not in family.name:
            continue
        for sample in family.samples:
            if sample.name.endswith("_created"):
                continue
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            out[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return out


def measure(path: TunnelPath, seconds: float, stack: str) -> dict[str, Any]:
    """Every figure of one stack (see the module docstring), keys prefixed ``stack_``."""
    if not ping_rtts(path, 3, 0.2):
        raise BenchError(f"no ping reply through the tunnel ({path.src} -> {path.dst})")
    rtts = list(ping_rtts(path, PING_COUNT, PING_INTERVAL).values())
    if not rtts:
        raise BenchError(f"none of {PING_COUNT} pings through the tunnel got a reply")
    sender_before = kernel_counters.snapshot(path.sender)
    receiver_before = kernel_counters.snapshot(path.receiver)
    agent_before = agent_drop_counters(path.receiver) if path.agent_metrics else {}
    cpu_before = kernel_counters.process_cpu_seconds(path.receiver_pid)
    wall_before = time.monotonic()
    transfer = iperf3_tcp(path, seconds)
    cpu = kernel_counters.process_cpu_seconds(path.receiver_pid) - cpu_before
    wall = time.monotonic() - wall_before
    receiver_after = kernel_counters.snapshot(path.receiver)
    sender_after = kernel_counters.snapshot(path.sender)
    agent_after = agent_drop_counters(path.receiver) if path.agent_metrics else {}

    if path.device not in receiver_after.devices or path.device not in receiver_before.devices:
        raise BenchError(f"no tunnel device {path.device} in {path.receiver}")
    tun_before = receiver_before.devices[path.device]
    tun_after = receiver_after.devices[path.device]
    tun_bytes = tun_after.rx_bytes - tun_before.rx_bytes
    mtu = device_mtu(path.receiver, path.device)
    received = int(transfer["end"]["sum_received"]["bytes"])
    if received <= 0:
        raise BenchError("iperf3 moved no data through the tunnel")
    if tun_bytes < received:
        raise BenchError(
            f"iperf3 received {received} bytes but only {tun_bytes} came out of "
            f"{path.device}: the transfer did not cross the tunnel"
        )
    out_segs = sender_after.tcp("OutSegs") - sender_before.tcp("OutSegs")
    retrans_segs = sender_after.tcp("RetransSegs") - sender_before.tcp("RetransSegs")
    figures: dict[str, Any] = {
        "mbps": round(tcp_mbps(transfer), 1),
        "retransmits": int(transfer["end"]["sum_sent"]["retransmits"]),
        "out_segs": out_segs,
        "retrans_segs": retrans_segs,
        "retrans_pct": round(kernel_counters.retransmit_percent(out_segs, retrans_segs), 3),
        "raw_drops": receiver_after.raw_drops - receiver_before.raw_drops,
        "udp_drops": receiver_after.udp_drops - receiver_before.udp_drops,
        "udp_rcvbuf_errors": receiver_after.udp("RcvbufErrors")
        - receiver_before.udp("RcvbufErrors"),
        "tun_bytes": tun_bytes,
        "tun_dropped": tun_after.rx_dropped - tun_before.rx_dropped,
        "rx_cpu_pct": round(100 * cpu / wall, 1),
        "rx_cpu_us_per_packet": round(1e6 * cpu * (mtu - 40) / tun_bytes, 2),
        "rtt_avg_ms": round(statistics.fmean(rtts), 3),
        "rtt_p50_ms": round(statistics.median(rtts), 3),
        "ping_lost": PING_COUNT - len(rtts),
    }
    if path.agent_metrics:
        grown = {k: v - agent_before.get(k, 0.0) for k, v in agent_after.items()}
        figures["agent_drops"] = {k: round(v) for k, v in sorted(grown.items()) if v > 0}
    return {f"{stack}_{k}": v for k, v in figures.items()}


# -- our agents in a lab ---------------------------------------------------------------


def write_inventory(directory: Path, encap: Encap) -> None:
    """Two hosts meshed together, the proposals both stacks use, and for UDP
    ``force_encap`` (there is no NAT in the lab's bridge)."""
    (directory / "group_vars").mkdir(parents=True)
    lines = ["all:", "  children:", "    mesh:", "      hosts:"]
    for host, (address, subnet) in HOSTS.items():
        lines += [
            f"        {host}:",
            f"          address: {address}",
            f"          subnets: [{subnet}]",
        ]
    (directory / "hosts.yaml").write_text("\n".join(lines) + "\n")
    (directory / "topology.yaml").write_text("meshes:\n  - name: bench\n    group: mesh\n")
    variables = f"ike_proposals: [{IKE_PROPOSAL}]\nesp_proposals: [{ESP_PROPOSAL}]\n"
    if encap is Encap.UDP:
        variables += "force_encap: true\n"
    (directory / "group_vars" / "all.yaml").write_text(variables)


def check_up(up: lab.UpResult) -> None:
    if not up.converged:
        raise BenchError(f"the agents did not bring the tunnel up within {LAB_TIMEOUT:g} s")
    if not up.data_plane:
        raise BenchError("the agents run without a data plane")
    failed = [p for p in up.pairs if p.result != "pass"]
    if failed:
        raise BenchError(
            "lab up's pings failed: "
            + "; ".join(f"{p.src}->{p.dst}: {p.result} {p.detail}" for p in failed)
        )


def run_lab(run: Run, workdir: Path, encap: Encap, seconds: float, strongswan: bool) -> None:
    """Lab up, our figures for ``encap``, then strongSwan's in the same namespaces when
    asked; lab down in every case."""
    name = "be" + secrets.token_hex(3)
    state = StateDir(workdir / f"state-{encap.value}")
    inventory = workdir / f"inventory-{encap.value}"
    write_inventory(inventory, encap)
    ours = f"ours_{encap.value}"
    try:
        up: lab.UpResult | None = None
        with run.part(ours):
            up = asyncio.run(lab.up(inventory, state, name, timeout=LAB_TIMEOUT))
        if up is None:
            if strongswan:
                run.errors.append(f"strongswan: not run, {ours}'s lab could not be built")
            return
        with run.part(ours):
            check_up(up)
            path = lab_path(
                dict(up.layout.hosts),
                DEFAULT_TUN_NAME,
                agent_pid(up.lab_dir, RECEIVER),
                agent_metrics=True,
            )
            run.result.update(measure(path, seconds, ours))
        if strongswan:
            with run.part("strongswan"):
                run.result.update(measure_strongswan(up, seconds))
    finally:
        with INTERRUPTS.shielded(), run.part(f"{ours} lab down"):
            lab.down(state, name)


# -- strongSwan in the same namespaces -------------------------------------------------


def agent_pid(lab_dir: Path, host: str) -> int:
    """The pid of ``host``'s agent, from the lab supervisor's state."""
    state = supervisor.read_state(lab_dir) or {}
    pid = state.get("agents", {}).get(host, {}).get("pid")
    if not isinstance(pid, int) or not netns.pid_alive(pid):
        raise BenchError(f"the agent of {host} is not running (supervisor state: {state})")
    return pid


def stop_agents(lab_dir: Path) -> None:
    """Stop the lab's supervisor, which stops its agents."""
    pid = supervisor.read_pid(lab_dir)
    if pid is None or not supervisor.is_supervisor_of(pid, lab_dir):
        raise BenchError(f"the supervisor of the lab in {lab_dir} is not running")
    if netns.kill_and_wait([pid], signal.SIGTERM, supervisor.STOP_GRACE + 5):
        raise BenchError(f"the lab's supervisor {pid} did not stop its agents")


def remove_agent_leftovers(record: LabRecord, host: HostLayout) -> None:
    """What a stopped agent leaves (policy rules, its routing table, the kill switch)
    would keep charon's traffic out of ipsec0."""
    config = record.agent_dir(host.host) / "agent.yaml"
    done = in_netns(host.netns, sys.executable, "-m", "vpnfleet.agent.cli", "cleanup",
                    "--config", str(config))  # fmt: skip
    if done.returncode != 0:
        raise BenchError(f"vpnfleet-agent cleanup in {host.netns}: {done.stderr.strip()}")


def charon_peer(me: HostLayout, other: HostLayout, psk: bytes, *, initiate: bool) -> ExternalLayout:
    """charon on ``me`` as the lab plays an external peer, with one connection to
    ``other``; ``initiate``: ``other`` only answers, so this charon starts the tunnel."""

    def identity(host: HostLayout) -> str:
        return f"fqdn:{host.host}.strongswan.bench"

    return ExternalLayout(
        name=f"strongswan-{me.host}",
        netns=me.netns,
        address=me.address,
        prefixlen=me.prefixlen,
        bridge_port="",
        sites=me.sites,
        identity=identity(me),
        psk=psk,
        ike_proposals=(IKE_PROPOSAL,),
        esp_proposals=(ESP_PROPOSAL,),
        port=500,
        connections=(
            ExternalConnection(
                host=other.host,
                address=other.address,
                identity=identity(other),
                local_ts=tuple(s.network for s in me.sites),
                remote_ts=tuple(s.network for s in other.sites),
                initiate=initiate,
            ),
        ),
    )


def wait_installed(directory: Path) -> None:
    deadline = time.monotonic() + CHARON_UP_TIMEOUT
    while time.monotonic() < deadline:
        for sa in external.list_sas(directory):
            if sa["state"] == "ESTABLISHED" and any(
                c["state"] == "INSTALLED" for c in sa["children"]
            ):
                return
        time.sleep(0.1)
    log = directory / "charon.log"
    tail = log.read_text(errors="replace")[-800:] if log.exists() else "(no log)"
    raise BenchError(f"charon's child SA was not installed within {CHARON_UP_TIMEOUT:g} s: {tail}")


def measure_strongswan(up: lab.UpResult, seconds: float) -> dict[str, Any]:
    record = LabRecord.load(up.lab_dir)
    if record is None:
        raise BenchError(f"no lab record in {up.lab_dir}")
    hosts = dict(up.layout.hosts)
    stop_agents(up.lab_dir)
    for host in hosts.values():
        remove_agent_leftovers(record, host)
    psk = secrets.token_bytes(32)
    responder = charon_peer(hosts[RECEIVER], hosts[SENDER], psk, initiate=False)
    initiator = charon_peer(hosts[SENDER], hosts[RECEIVER], psk, initiate=True)
    # The responder first: the initiator starts its tunnel as soon as it is loaded.
    receiver_pid = external.start_charon(record, responder)
    external.start_charon(record, initiator)
    wait_installed(external.external_dir(record, initiator.name).absolute())
    path = lab_path(hosts, CHARON_DEVICE, receiver_pid, agent_metrics=False)
    return measure(path, seconds, "strongswan")


# -- the manually keyed data plane -----------------------------------------------------


def measure_manual_keyed(seconds: float) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for encap in Encap:
        pair = SitePair()
        try:
            pair.build()
            pair.start_data_planes(encap=encap.value)
            ping = pair.ping(2)
            if ping.returncode != 0:
                raise BenchError(f"no ping through the manually keyed {encap.value} tunnel")
            out[f"manual_keyed_{encap.value}_mbps"] = round(tcp_mbps(pair.iperf3(seconds)), 1)
        finally:
            with INTERRUPTS.shielded():
                pair.close()
    return out


# -- the run ---------------------------------------------------------------------------


def checkout_commit() -> str | None:
    """``git describe --always --dirty`` of this checkout; None without git or a clone."""
    try:
        done = subprocess.run(
            ["git", "-c", "safe.directory=*", "-C", str(REPO), "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            check=False,
        )
    except OSError:
        return None
    return (done.stdout.strip() or None) if done.returncode == 0 else None


def _difference(result: dict[str, Any], mine: str, theirs: str) -> float | None:
    if mine in result and theirs in result:
        return round(result[mine] - result[theirs], 3)
    return None


def side_by_side(result: dict[str, Any]) -> dict[str, Any]:
    """The ratios and RTT differences; null when a side is missing."""
    out: dict[str, Any] = {}
    theirs = result.get("strongswan_mbps")
    for encap in Encap:
        mine = result.get(f"ours_{encap.value}_mbps")
        out[f"ratio_{encap.value}"] = round(mine / theirs, 2) if mine and theirs else None
    for encap in Encap:
        for stat in ("avg", "p50"):
            out[f"rtt_{stat}_diff_{encap.value}_ms"] = _difference(
                result, f"ours_{encap.value}_rtt_{stat}_ms", f"strongswan_rtt_{stat}_ms"
            )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="each TCP transfer")
    parser.add_argument("--skip-strongswan", action="store_true", help="only our agents, no charon")
    parser.add_argument(
        "--manual-keyed",
        action="store_true",
        help="also the manually keyed data plane alone (manual_keyed_*_mbps)",
    )
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        parser.error("needs root (network namespaces)")
    if args.seconds <= 0:
        parser.error("--seconds must be above 0")
    started = time.monotonic()
    commit = checkout_commit()  # of the code this run loaded
    INTERRUPTS.install()
    run = Run({}, [])
    strongswan = not args.skip_strongswan
    if strongswan:
        with run.part("strongswan"):
            external.check_installed()
        strongswan = not run.errors
    code = 0
    try:
        with tempfile.TemporaryDirectory(prefix="vpnfleet-esp-bench-") as tmp:
            workdir = Path(tmp)
            run_lab(run, workdir, Encap.RAW, args.seconds, strongswan=False)
            run_lab(run, workdir, Encap.UDP, args.seconds, strongswan=strongswan)
            if args.manual_keyed:
                with run.part("manual_keyed"):
                    run.result.update(measure_manual_keyed(args.seconds))
    except KeyboardInterrupt:
        run.errors.append("interrupted")
        code = 130
    headline = ["ours_raw_mbps", "ours_udp_mbps", "strongswan_mbps"]
    ordered: dict[str, Any] = {"bench": "esp_throughput", "seconds": args.seconds}
    ordered |= {k: run.result[k] for k in headline if k in run.result}
    ordered |= side_by_side(run.result)
    ordered |= {k: v for k, v in run.result.items() if k not in ordered}
    ordered |= {"commit": commit, "run_s": round(time.monotonic() - started, 1)}
    if run.errors:
        ordered["error"] = "; ".join(run.errors)
        code = code or 1
    print(json.dumps(ordered), flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
