"""Input dropped before it reached an SA's payload is counted once, where it was dropped,
and exported once with one spelling, in GetStatus and in the agent's metrics: ESP with an
unknown SPI, datagrams too short for the UDP socket, and a forged IKE message that
reaches an established IKE SA."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.engine_pair import SITES, Fleet, agent_service
from vpnfleet.agent.ike.ike_sa import IkeSa
from vpnfleet.agent.io.memory import Datagram
from vpnfleet.agent.metrics import agent_registry, agent_sources
from vpnfleet.agent.sink import RekeyTarget
from vpnfleet.protos import agent_pb2

A, B = SITES["a"][0], SITES["b"][0]


def metric_samples(fleet: Fleet, host: str) -> list[tuple[str, dict[str, str], float]]:
    engine = fleet[host].engine
    text = generate_latest(agent_registry(agent_sources(host, engine, lambda: None))).decode()
    return [
        (s.name, s.labels, s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
    ]


def forged_response(sa: IkeSa) -> bytes:
    """An INFORMATIONAL response with ``sa``'s own SPIs to a request its owner never sent
    (RFC 7296 section 3.1 header, no payloads)."""
    flags = 0x20 | (0x00 if sa.is_initiator else 0x08)
    return sa.spi_i + sa.spi_r + struct.pack("!BBBBII", 0, 0x20, 37, flags, 99, 28)


def drops(status: agent_pb2.AgentStatus) -> dict[tuple[str, str], int]:
    return {
        (agent_pb2.DropCount.Layer.Name(d.layer), agent_pb2.DropCount.Reason.Name(d.reason)): (
            d.count
        )
        for d in status.drops
    }


async def test_each_drop_is_exported_once_with_one_spelling(tmp_path: Path) -> None:
    fleet = Fleet("a", "b")
    await fleet.start()
    await fleet.mesh()
    b = fleet["b"]
    assert b.engine.peers_up() == 1
    ike = b.engine.peers["a"].ike
    assert ike is not None

    # ESP under an SPI b never gave out (RFC 4303 section 3.4.2: dropped, counted).
    fleet.net.send(Datagram((A, 4500), (B, 4500), struct.pack("!II", 0xDEADBEEF, 1) + bytes(32)))
    # Two bytes on the NAT-T port: neither marker, ESP nor keepalive (RFC 3948 section 2.2).
    fleet.net.send(Datagram((A, 4500), (B, 4500), b"\x01\x02"))
    fleet.net.send(Datagram((A, 500), (B, 500), forged_response(ike)))
    fleet.pump()

    got = metric_samples(fleet, "b")
    esp = [(labels, v) for name, labels, v in got if name.endswith("inbound_drops_total")]
    assert esp == [({"reason": "unknown_spi"}, 1.0)]
    assert ("vpnfleet_socket_drops_total", {"socket": "udp", "reason": "short"}, 1.0) in got
    assert ("vpnfleet_ike_sa_rejected_messages_total", {}, 1.0) in got

    status = agent_service(b, tmp_path).status()
    counted = drops(status)
    assert counted[("ESP", "UNKNOWN_SPI")] == 1
    assert counted[("UDP", "SHORT")] == 1 and counted[("UDP", "MALFORMED")] == 0
    assert counted[("IKE_SA", "REJECTED")] == 1
    # Once each: no reason appears under two spellings or twice.
    assert len(status.drops) == len(counted)
    # IKE messages that found no SA are counted apart, not here.
    assert status.ike_counters["unknown_spi"] == 0


async def test_rejected_ike_messages_survive_the_ike_sa_that_counted_them() -> None:
    fleet = Fleet("a", "b")
    await fleet.start()
    await fleet.mesh()
    b = fleet["b"]
    old = b.engine.peers["a"].ike
    assert old is not None
    fleet.net.send(Datagram((A, 500), (B, 500), forged_response(old)))
    fleet.pump()
    assert old.dropped == 1
    outcome = fleet.rekey("a", "b", RekeyTarget.IKE)
    assert outcome.ok, outcome.detail
    fleet.advance(5)
    assert b.engine.peers["a"].ike is not old and old.is_closed  # rekeyed away
    got = metric_samples(fleet, "b")
    assert ("vpnfleet_ike_sa_rejected_messages_total", {}, 1.0) in got


async def test_what_the_kernel_dropped_at_a_socket_is_exported_for_alerts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fleet = Fleet("a", "b")
    await fleet.start()
    await fleet.mesh()
    b = fleet["b"]
    endpoint = b.engine.endpoint
    assert endpoint is not None
    # The in-memory network drops nothing below the endpoint; a real socket's count
    # comes from the kernel (tests/unit/io/test_io_socket_batches.py floods one).
    assert ("UDP", "RECEIVE_BUFFER_FULL") in drops(agent_service(b, tmp_path).status())
    monkeypatch.setattr(endpoint, "kernel_drops", lambda: 17)
    got = metric_samples(fleet, "b")
    series = ("vpnfleet_socket_drops_total", {"socket": "udp", "reason": "receive_buffer_full"})
    assert (*series, 17.0) in got
    assert drops(agent_service(b, tmp_path).status())[("UDP", "RECEIVE_BUFFER_FULL")] == 17
    # A kernel that cannot tell leaves the series out rather than claiming zero.
    monkeypatch.setattr(endpoint, "kernel_drops", lambda: None)
    assert not [s for s in metric_samples(fleet, "b") if s[:2] == series]
