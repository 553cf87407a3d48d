"""The reachability matrix: a probe across every pair of sites the plans' SPDs decide.

For each ordered pair of site addresses (source on one lab host, destination on
another), the first SPD entry of the source's plan that matches an ICMP echo between
them (RFC 4301 section 4.4.1: first match wins) says what should happen: PROTECT should
pass through a tunnel, DISCARD should be blocked. A ping needs its reply too, so a
DISCARD met by the reply in the destination's SPD also makes the pair blocked. Pairs no
entry covers, or only a BYPASS entry, get no ping.

BYPASS entries get a probe of their own: a UDP datagram the entry covers (its first
remote port, or :data:`PROBE_PORT`, the echo service of RFC 862, when it leaves the port
open) from the source site address to a listener in the destination's namespace, which
answers with the interface it arrived on. The pair passes (``pass-clear``) only if the
datagram arrived on the destination's underlay interface: had it crossed in ESP, the
agent would have handed it over through its TUN device instead. When the destination's
SPD bypasses the answer too, the answer must also come back on the source's underlay.
Bypass probes run between hosts with cleartext routes only (not behind a NAT router,
see :func:`.netns.cleartext_routes`); TCP-only bypass entries get none.

External peers (charon in the lab) have no plan: a pair between a managed host and one
is judged by the managed host's SPD alone, in the direction the managed host sees it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ipaddress
import json
import sys
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from ..planner.model import NodePlan, SpdAction, SpdEntry
from .layout import LabLayout

PASS, FAIL, BLOCKED = "pass", "fail", "blocked-by-policy"
PASS_CLEAR = "pass-clear"
"""A bypass probe that arrived, and crossed the underlay in the clear."""
ICMP = {4: 1, 6: 58}
UDP = 17
PROBE_PORT = 7
"""The destination port of a bypass probe when the entry leaves it open (echo, RFC 862)."""
PROBE_SOURCE_PORT = 40007
"""The source port of a bypass probe when the entry leaves it open."""
UNDERLAY_IFNAME = "eth0"
"""Every lab host's underlay interface (:func:`.netns.build_host`)."""
PROBE_TIMEOUT = 30.0
# Failing pings wait out their -W1 second: many at once keep a large matrix quick.
PARALLEL_PINGS = 128


@dataclass(frozen=True, slots=True)
class ReachPair:
    src_host: str
    dst_host: str
    src: str
    dst: str
    expect: str  # "protect", "discard" or "bypass"
    policy: str  # the SPD entry's name
    result: str = ""  # pass | pass-clear | fail | blocked-by-policy
    detail: str = ""
    probe: str = "icmp echo"
    """What crosses: a ping, or for bypass pairs a UDP datagram (``udp SPORT->DPORT``)."""
    reply_clear: bool = False
    """Bypass pairs: the destination's SPD bypasses the answer too."""
    sport: int = 0
    """Bypass pairs: the probe's UDP source and destination ports."""
    dport: int = 0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _covers(prefix: str, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if prefix in ("", "any"):
        return True
    try:
        net = ipaddress.ip_network(prefix, strict=False)
    except ValueError:
        return False
    return net.version == address.version and address in net


def first_match(spd: tuple[SpdEntry, ...], src: str, dst: str) -> SpdEntry | None:
    """The SPD entry an ICMP echo from ``src`` to ``dst`` meets first."""
    s, d = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    for entry in spd:
        sel = entry.selector
        if sel.protocol not in (0, ICMP[s.version]):
            continue
        # ICMP type and code sit in the port fields (RFC 4301 section 4.4.1.3): only an
        # unrestricted port range covers an echo request.
        full = (0, 65535)
        ports = (
            (sel.local_port_start, sel.local_port_end),
            (sel.remote_port_start, sel.remote_port_end),
        )
        if sel.protocol and any(p not in (full, (0, 0)) for p in ports):
            continue
        if _covers(sel.local_prefix, s) and _covers(sel.remote_prefix, d):
            return entry
    return None


def expected_pairs(plans: Mapping[str, NodePlan], layout: LabLayout) -> list[ReachPair]:
    pairs = []
    for src_host, src in layout.hosts.items():
        plan = plans.get(src_host)
        if plan is None:
            continue
        for dst_host, dst in layout.hosts.items():
            if dst_host == src_host:
                continue
            for s in src.sites:
                for d in dst.sites:
                    entry = first_match(plan.spd, s.address, d.address)
                    if entry is None or entry.action not in (SpdAction.PROTECT, SpdAction.DISCARD):
                        continue
                    back = plans.get(dst_host)
                    reply = first_match(back.spd, d.address, s.address) if back else None
                    if (
                        entry.action is SpdAction.PROTECT
                        and reply is not None
                        and reply.action is SpdAction.DISCARD
                    ):
                        entry = reply
                    pairs.append(
                        ReachPair(
                            src_host,
                            dst_host,
                            s.address,
                            d.address,
                            entry.action.value.lower(),
                            entry.name,
                        )
                    )
    for ext_name, ext in layout.externals.items():
        for host, h in layout.hosts.items():
            plan = plans.get(host)
            if plan is None:
                continue
            for s in h.sites:
                for d in ext.sites:
                    entry = first_match(plan.spd, s.address, d.address)
                    if entry is None or entry.action not in (SpdAction.PROTECT, SpdAction.DISCARD):
                        continue
                    expect, policy = entry.action.value.lower(), entry.name
                    pairs.append(ReachPair(host, ext_name, s.address, d.address, expect, policy))
                    pairs.append(ReachPair(ext_name, host, d.address, s.address, expect, policy))
    return pairs + bypass_pairs(plans, layout)


def _in(ports: tuple[int, int], port: int) -> bool:
    return ports[0] <= port <= ports[1]


def first_udp_match(
    spd: tuple[SpdEntry, ...], src: str, dst: str, sport: int, dport: int
) -> SpdEntry | None:
    """The SPD entry a UDP datagram ``src:sport`` -> ``dst:dport`` meets first."""
    s, d = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    for entry in spd:
        sel = entry.selector
        if sel.protocol not in (0, UDP):
            continue
        if sel.protocol == UDP and not (
            _in((sel.local_port_start, sel.local_port_end), sport)
            and _in((sel.remote_port_start, sel.remote_port_end), dport)
        ):
            continue
        if _covers(sel.local_prefix, s) and _covers(sel.remote_prefix, d):
            return entry
    return None


def _probe_ports(entry: SpdEntry) -> tuple[int, int]:
    sel = entry.selector
    if sel.protocol != UDP:
        return PROBE_SOURCE_PORT, PROBE_PORT
    sport = (
        PROBE_SOURCE_PORT
        if (sel.local_port_start, sel.local_port_end) == (0, 65535)
        else max(sel.local_port_start, 1)  # port 0 cannot be sent from or to
    )
    dport = (
        PROBE_PORT
        if (sel.remote_port_start, sel.remote_port_end) == (0, 65535)
        else max(sel.remote_port_start, 1)
    )
    return sport, dport


def bypass_pairs(plans: Mapping[str, NodePlan], layout: LabLayout) -> list[ReachPair]:
    """One UDP probe per ordered pair of site addresses (hosts with cleartext routes
    between them) that a BYPASS entry of the source's SPD lets out in the clear: the
    first bypass entry whose probe no earlier entry catches."""
    pairs = []
    direct = {n: h for n, h in layout.hosts.items() if h.router is None}
    for src_host, src in direct.items():
        plan = plans.get(src_host)
        if plan is None:
            continue
        bypasses = [e for e in plan.spd if e.action is SpdAction.BYPASS]
        for dst_host, dst in direct.items():
            back = plans.get(dst_host)
            if dst_host == src_host or back is None:
                continue
            for s in src.sites:
                for d in dst.sites:
                    for entry in bypasses:
                        sport, dport = _probe_ports(entry)
                        if first_udp_match(plan.spd, s.address, d.address, sport, dport) != entry:
                            continue
                        reply = first_udp_match(back.spd, d.address, s.address, dport, sport)
                        if reply is not None and reply.action is SpdAction.DISCARD:
                            break  # no answer would come: nothing to learn from a probe
                        pairs.append(
                            ReachPair(
                                src_host,
                                dst_host,
                                s.address,
                                d.address,
                                "bypass",
                                entry.name,
                                probe=f"udp {sport}->{dport}",
                                sport=sport,
                                dport=dport,
                                reply_clear=reply is not None and reply.action is SpdAction.BYPASS,
                            )
                        )
                        break
    return pairs


def judge(pair: ReachPair, answered: bool, output: str) -> ReachPair:
    if pair.expect == "discard":
        if answered:
            return _with(pair, FAIL, "answered although the policy discards it")
        return _with(pair, BLOCKED, "")
    if answered:
        return _with(pair, PASS, "")
    return _with(pair, FAIL, output)


def _with(pair: ReachPair, result: str, detail: str) -> ReachPair:
    return dataclasses.replace(pair, result=result, detail=detail)


def _why(output: str) -> str:
    lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
    for ln in lines:
        if "unreachable" in ln.lower() or "error" in ln.lower() or "bind" in ln.lower():
            return ln
    return "no reply within 1s"


async def ping_pairs(pairs: list[ReachPair], layout: LabLayout) -> list[ReachPair]:
    """Probe every pair: bypass pairs with :func:`probe_bypass`, the others with a ping,
    all at once (bounded); ``ping -c1 -W1 -I SRC DST`` in the source host."""
    bypass = [p for p in pairs if p.expect == "bypass"]
    pinged = await _ping([p for p in pairs if p.expect != "bypass"], layout)
    probed = await probe_bypass(bypass, layout)
    done = iter(pinged)
    clear = iter(probed)
    return [next(clear) if p.expect == "bypass" else next(done) for p in pairs]


async def _ping(pairs: list[ReachPair], layout: LabLayout) -> list[ReachPair]:
    gate = asyncio.Semaphore(PARALLEL_PINGS)

    async def one(pair: ReachPair) -> ReachPair:
        where = layout.sites_of(pair.src_host)
        if where is None:
            return judge(pair, False, f"no lab host or external peer {pair.src_host}")
        netns = where[0]
        argv = ["ip", "netns", "exec", netns, "ping", "-n", "-c1", "-W1", "-I", pair.src, pair.dst]
        async with gate:
            proc = await asyncio.create_subprocess_exec(
                *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
            )
            out, _ = await proc.communicate()
        text = out.decode(errors="replace")
        return judge(pair, proc.returncode == 0, _why(text))

    return list(await asyncio.gather(*(one(p) for p in pairs)))


# The probes run in the lab's namespaces with the interpreter the controller runs on
# (stdlib only). Both answer with the interface a datagram arrived on, from IP_PKTINFO /
# IPV6_PKTINFO (RFC 3542 section 6): struct in_pktinfo begins with the interface index,
# struct in6_pktinfo ends with it.
_ARRIVAL_SCRIPT = r"""
import json, select, socket, struct, sys
IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)
def open_socket(addr):
    fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if fam == socket.AF_INET:
        s.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
    else:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVPKTINFO, 1)
    return s
def receive(s):
    data, anc, _, peer = s.recvmsg(512, 256)
    name = "?"
    for level, kind, raw in anc:
        if level == socket.IPPROTO_IP and kind == IP_PKTINFO:
            name = socket.if_indextoname(struct.unpack("i", raw[:4])[0])
        elif level == socket.IPPROTO_IPV6 and kind == socket.IPV6_PKTINFO:
            name = socket.if_indextoname(struct.unpack("I", raw[16:20])[0])
    return data, name, peer
"""
# argv: ADDRESS PORT IDLE_SECONDS. Prints "ready" once bound, answers every datagram with
# itself plus " IFNAME", ends when its standard input closes or after IDLE_SECONDS.
LISTENER_SCRIPT = (
    _ARRIVAL_SCRIPT
    + r"""
s = open_socket(sys.argv[1])
s.bind((sys.argv[1], int(sys.argv[2])))
print("ready", flush=True)
while True:
    ready, _, _ = select.select([s, sys.stdin], [], [], float(sys.argv[3]))
    if not ready or sys.stdin in ready:
        break
    try:
        data, name, peer = receive(s)
        s.sendto(data + b" " + name.encode(), peer)
    except OSError:
        pass
"""
)
# argv: SRC SPORT DST DPORT TOKEN. Prints {"far": IFNAME, "near": IFNAME} (where the
# datagram and its answer arrived) or {"error": ...}, after up to four tries.
CLIENT_SCRIPT = (
    _ARRIVAL_SCRIPT
    + r"""
src, sport, dst, dport = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
token = sys.argv[5].encode()
s = open_socket(src)
s.bind((src, sport))
s.connect((dst, dport))
error = "no answer within 2s"
for _ in range(4):
    try:
        s.send(token)
        if select.select([s], [], [], 0.5)[0]:
            data, name, _ = receive(s)
            if data.startswith(token + b" "):
                print(json.dumps({"far": data[len(token) + 1:].decode(), "near": name}))
                sys.exit(0)
    except OSError as exc:
        error = str(exc)
print(json.dumps({"error": error}))
"""
)


def judge_bypass(pair: ReachPair, answer: Mapping[str, Any]) -> ReachPair:
    """``answer``: the client's report, ``far`` and ``near`` interfaces or ``error``."""
    if "error" in answer:
        return _with(pair, FAIL, str(answer["error"]))
    far, near = str(answer.get("far")), str(answer.get("near"))
    if far != UNDERLAY_IFNAME:
        return _with(pair, FAIL, f"arrived on {far}, not in the clear on {UNDERLAY_IFNAME}")
    if pair.reply_clear and near != UNDERLAY_IFNAME:
        return _with(pair, FAIL, f"arrived in the clear, but the answer came back on {near}")
    way = "both ways" if near == far else f"there, answer on {near}"
    return _with(pair, PASS_CLEAR, f"{pair.probe} on {UNDERLAY_IFNAME} {way}")


async def _finish(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
    await proc.wait()


async def probe_bypass(pairs: list[ReachPair], layout: LabLayout) -> list[ReachPair]:
    """Send each bypass pair's UDP probe (one listener per destination address and port,
    ended when every probe is done, also on failure)."""
    if not pairs:
        return []
    listeners: dict[tuple[str, int], asyncio.subprocess.Process] = {}
    gate = asyncio.Semaphore(PARALLEL_PINGS)
    try:
        for pair in pairs:
            dport = pair.dport
            if (pair.dst, dport) in listeners:
                continue
            proc = await asyncio.create_subprocess_exec(
                "ip", "netns", "exec", layout.hosts[pair.dst_host].netns, sys.executable,
                "-c", LISTENER_SCRIPT, pair.dst, str(dport), str(PROBE_TIMEOUT),
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )  # fmt: skip
            listeners[(pair.dst, dport)] = proc
        failed: dict[tuple[str, int], str] = {}
        for key, proc in listeners.items():
            assert proc.stdout is not None and proc.stderr is not None
            line = await asyncio.wait_for(proc.stdout.readline(), PROBE_TIMEOUT)
            if line.strip() != b"ready":
                err = (await proc.stderr.read()).decode(errors="replace").strip()
                failed[key] = f"no listener on {key[0]}:{key[1]}: {err[-200:] or 'exited'}"

        async def one(index: int, pair: ReachPair) -> ReachPair:
            sport, dport = pair.sport, pair.dport
            if (pair.dst, dport) in failed:
                return _with(pair, FAIL, failed[(pair.dst, dport)])
            argv = [
                "ip", "netns", "exec", layout.hosts[pair.src_host].netns, sys.executable,
                "-c", CLIENT_SCRIPT, pair.src, str(sport), pair.dst, str(dport), f"probe{index}",
            ]  # fmt: skip
            async with gate:
                proc = await asyncio.create_subprocess_exec(
                    *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
                )
                out, _ = await proc.communicate()
            try:
                answer = json.loads(out.decode(errors="replace").strip().splitlines()[-1])
            except (ValueError, IndexError):
                answer = {"error": out.decode(errors="replace").strip()[-200:] or "no output"}
            return judge_bypass(pair, answer)

        return list(await asyncio.gather(*(one(i, p) for i, p in enumerate(pairs))))
    finally:
        for proc in listeners.values():
            if proc.stdin is not None:
                proc.stdin.close()
        for proc in listeners.values():
            try:
                await asyncio.wait_for(proc.wait(), 5)
            except TimeoutError:
                await _finish(proc)
