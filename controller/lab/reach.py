"""The reachability matrix: a ping across every pair of sites the plans' SPDs decide.

For each ordered pair of site addresses (source on one lab host, destination on
another), the first SPD entry of the source's plan that matches an ICMP echo between
them (RFC 4301 section 4.4.1: first match wins) says what should happen: PROTECT should
pass through a tunnel, DISCARD should be blocked. A ping needs its reply too, so a
DISCARD met by the reply in the destination's SPD also makes the pair blocked. Pairs no
entry covers, or only a BYPASS entry (the lab has no cleartext routes between sites),
are left out.

External peers (charon in the lab) have no plan: a pair between a managed host and one
is judged by the managed host's SPD alone, in the direction the managed host sees it.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from ..planner.model import NodePlan, SpdAction, SpdEntry
from .layout import LabLayout

PASS, FAIL, BLOCKED = "pass", "fail", "blocked-by-policy"
ICMP = {4: 1, 6: 58}
# Failing pings wait out their -W1 second: many at once keep a large matrix quick.
PARALLEL_PINGS = 128


@dataclass(frozen=True, slots=True)
class ReachPair:
    src_host: str
    dst_host: str
    src: str
    dst: str
    expect: str  # "protect" or "discard"
    policy: str  # the SPD entry's name
    result: str = ""  # pass | fail | blocked-by-policy
    detail: str = ""

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
    return ReachPair(
        pair.src_host, pair.dst_host, pair.src, pair.dst, pair.expect, pair.policy, result, detail
    )


def _why(output: str) -> str:
    lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
    for ln in lines:
        if "unreachable" in ln.lower() or "error" in ln.lower() or "bind" in ln.lower():
            return ln
    return "no reply within 1s"


async def ping_pairs(pairs: list[ReachPair], layout: LabLayout) -> list[ReachPair]:
    """Ping every pair at once (bounded); ``ping -c1 -W1 -I SRC DST`` in the source host."""
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
