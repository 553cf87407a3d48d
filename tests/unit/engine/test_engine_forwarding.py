"""Forwarding (engine/forwarding.py): which plans make a host a gateway, and the
forwarding sysctls turned on, recorded, kept across a restart and put back (fake sysctls,
the record in a temporary state dir)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from tests.support.recording_routes import RecordingRoutes
from vpnfleet.agent.convert import plan_from_proto
from vpnfleet.agent.engine import Engine
from vpnfleet.agent.engine.clock import ManualScheduler
from vpnfleet.agent.engine.forwarding import (
    FORWARDING_RECORD,
    ForwardingRecord,
    HostForwarding,
    forwarding_families,
)
from vpnfleet.agent.hollow import sample_plan
from vpnfleet.agent.io.memory import MemoryEndpoint, MemoryNetwork
from vpnfleet.agent.io.tun import MemoryTun
from vpnfleet.agent.plan import AgentPlan, Mode
from vpnfleet.agent.sink import EventHub, ProblemKind
from vpnfleet.protos.hashing import plan_content_hash

V4, V6 = "net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding"


def plan(address: str, local: str, peer: str, remote: str) -> AgentPlan:
    msg = sample_plan("a", address, local, [("b", peer, remote)])
    msg.content_hash = plan_content_hash(msg)
    return plan_from_proto(msg)


SITE = plan("192.0.2.1", "10.1.0.0/24", "192.0.2.2", "10.2.0.0/24")
"""A gateway for its site's LAN."""
HOST_ONLY = plan("192.0.2.1", "192.0.2.1/32", "192.0.2.2", "10.2.0.0/24")
"""Tunnel mode, but only the host's own address on its side."""
SITE6 = plan("2001:db8::1", "2001:db8:1::/64", "2001:db8::2", "2001:db8:2::/64")


class FakeSysctl:
    def __init__(self, name: str, value: str = "0") -> None:
        self.name = name
        self.value = value
        self.writes: list[str] = []
        self.fail = False

    def read(self) -> str:
        return self.value

    def write(self, value: str) -> None:
        if self.fail:
            raise PermissionError(13, "Permission denied")
        self.writes.append(value)
        self.value = value


def forwarding(state: Path, v4: str = "0", v6: str = "0") -> HostForwarding:
    sysctls = {4: FakeSysctl(V4, v4), 6: FakeSysctl(V6, v6)}
    return HostForwarding(sysctls, ForwardingRecord(state / FORWARDING_RECORD))


def values(fwd: HostForwarding) -> dict[str, str]:
    return {s.name: s.read() for s in fwd.sysctls.values()}


def test_a_subnet_behind_the_host_needs_forwarding_of_its_family_only() -> None:
    assert forwarding_families(SITE) == {4: "10.1.0.0/24"}
    assert forwarding_families(SITE6) == {6: "2001:db8:1::/64"}
    assert forwarding_families(HOST_ONLY) == {}
    transport = dataclasses.replace(
        SITE, peers=tuple(dataclasses.replace(p, mode=Mode.TRANSPORT) for p in SITE.peers)
    )
    assert forwarding_families(transport) == {}


async def test_turned_on_recorded_kept_across_a_restart_and_put_back(tmp_path: Path) -> None:
    tmp_path.chmod(0o700)
    told: list[str] = []
    fwd = forwarding(tmp_path)
    fwd.report = told.append
    assert await fwd.apply(SITE) == []
    assert values(fwd) == {V4: "1", V6: "0"}
    assert json.loads((tmp_path / FORWARDING_RECORD).read_text()) == {V4: "0"}
    assert told == [f"{V4}=1 (was 0): the plan protects 10.1.0.0/24 behind this host"]

    # A restarted agent finds forwarding on and the record from before: nothing changes.
    again = forwarding(tmp_path, v4="1")
    assert await again.apply(SITE) == []
    assert again.sysctls[4].writes == []  # type: ignore[attr-defined]
    assert json.loads((tmp_path / FORWARDING_RECORD).read_text()) == {V4: "0"}

    # A plan without a gateway puts the old value back and forgets it.
    assert await again.apply(HOST_ONLY) == []
    assert values(again) == {V4: "0", V6: "0"}
    assert not (tmp_path / FORWARDING_RECORD).exists()


async def test_a_plan_without_a_gateway_leaves_the_sysctls_alone(tmp_path: Path) -> None:
    fwd = forwarding(tmp_path, v4="0", v6="1")
    assert await fwd.apply(HOST_ONLY) == []
    assert [s.writes for s in fwd.sysctls.values()] == [[], []]  # type: ignore[attr-defined]
    assert not (tmp_path / FORWARDING_RECORD).exists()


async def test_forwarding_the_host_had_on_is_not_ours_to_put_back(tmp_path: Path) -> None:
    fwd = forwarding(tmp_path, v4="1")
    assert await fwd.apply(SITE) == []
    assert not (tmp_path / FORWARDING_RECORD).exists()
    assert fwd.restore() == []
    assert values(fwd) == {V4: "1", V6: "0"}


async def test_decommission_puts_back_what_was_recorded(tmp_path: Path) -> None:
    tmp_path.chmod(0o700)
    fwd = forwarding(tmp_path)
    await fwd.apply(SITE6)
    assert values(fwd) == {V4: "0", V6: "1"}
    cleanup = forwarding(tmp_path, v6="1")  # another process: `vpnfleet-agent cleanup`
    assert cleanup.restore() == []
    assert values(cleanup) == {V4: "0", V6: "0"}
    assert not (tmp_path / FORWARDING_RECORD).exists()


async def test_a_refused_write_is_a_problem_naming_the_sysctl(tmp_path: Path) -> None:
    tmp_path.chmod(0o700)
    fwd = forwarding(tmp_path)
    fwd.sysctls[4].fail = True  # type: ignore[attr-defined]
    problems = await fwd.apply(SITE)
    assert [(p.kind, p.subject) for p in problems] == [(ProblemKind.PLAN, V4)]
    assert "cannot turn on net.ipv4.ip_forward: " in problems[0].message
    assert "traffic of 10.1.0.0/24 is not forwarded" in problems[0].message


async def test_the_engine_applies_it_with_the_plan_and_publishes_the_change(
    tmp_path: Path,
) -> None:
    tmp_path.chmod(0o700)
    fwd = forwarding(tmp_path)
    events = EventHub()
    queue = events.subscribe()
    engine = Engine(
        MemoryTun("tun-a"),
        lambda on_ike, on_esp: MemoryEndpoint(MemoryNetwork(), on_ike, on_esp, host="192.0.2.1"),
        scheduler=ManualScheduler(),
        routing=RecordingRoutes(),
        events=events,
        forwarding=fwd,
    )
    await engine.start()
    await engine.put_in_force(SITE)
    assert values(fwd)[V4] == "1"
    published = []
    while not queue.empty():
        published.append(queue.get_nowait())
    assert [(e.kind, e.detail) for e in published if e.kind == "forwarding"] == [
        ("forwarding", f"{V4}=1 (was 0): the plan protects 10.1.0.0/24 behind this host")
    ]
    await engine.stop()
    assert values(fwd)[V4] == "1"  # kept while no agent runs, as the routes are
