"""The agent's Prometheus collector over a fake sink with two SAs, parsed back with
prometheus_client's own text parser; and the HTTP endpoint on loopback."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from vpnfleet.agent import metrics_http
from vpnfleet.agent.config import ConfigError, load_config
from vpnfleet.agent.io.dataplane_model import DataPlaneStats, SaStats
from vpnfleet.agent.metrics import (
    AgentCollector,
    MetricsError,
    MetricsSources,
    RekeyTally,
    agent_registry,
)
from vpnfleet.agent.metrics_http import serve_metrics, split_listen
from vpnfleet.agent.sink import (
    AdmissionLimitReport,
    AdmissionReport,
    ChildSaReport,
    DropCount,
    DropLayer,
    DropReason,
    EventHub,
    IkeSaReport,
    NatState,
    PlanReport,
    Problem,
    ProblemKind,
    RekeyOutcome,
    RekeyTarget,
    SaEventReport,
)

NOW = 1_000_000.0


@dataclass
class FakePlan:
    generation: int
    peers: tuple[str, ...]


@dataclass
class FakeSink:
    reports: list[IkeSaReport] = field(default_factory=list)
    found: list[Problem] = field(default_factory=list)
    dropped: list[DropCount] = field(default_factory=list)

    @property
    def data_plane(self) -> bool:
        return True

    async def put_in_force(self, plan: Any) -> PlanReport:
        raise AssertionError("not used")

    def ike_sas(self) -> Sequence[IkeSaReport]:
        return self.reports

    def ike_counters(self) -> Mapping[str, int]:
        return {}

    def peers_up(self) -> int:
        return sum(1 for r in self.reports if r.state == "established")

    def admission(self) -> AdmissionReport | None:
        return AdmissionReport(
            half_open=3,
            preauth_fragment_bytes=4096,
            cookies_sent=1,
            limits=(
                AdmissionLimitReport("half_open_per_source", 16, 5),
                AdmissionLimitReport("preauth_message_bytes", 10_000, 2),
            ),
        )

    def problems(self) -> Sequence[Problem]:
        return self.found

    def drops(self) -> Sequence[DropCount]:
        return self.dropped

    async def rekey(self, peers: Sequence[str], target: RekeyTarget) -> list[RekeyOutcome]:
        return []


def two_sas() -> list[IkeSaReport]:
    up = IkeSaReport(
        peer="b",
        state="established",
        spi_i=1,
        spi_r=2,
        nat=NatState.DETECTED,
        established_at=NOW - 120,
        last_liveness_at=NOW - 7,
        unauthenticated_failures=9,
        children=(
            ChildSaReport(
                name="b",
                state="installed",
                bytes_in=1000,
                bytes_out=2000,
                packets_in=10,
                packets_out=20,
                replay_drops=3,
                integrity_failures=4,
                policy_drops=5,
            ),
        ),
    )
    connecting = IkeSaReport(peer="c", state="connecting")
    return [up, connecting]


def dp_stats() -> DataPlaneStats:
    sa = SaStats("b", 0x1234, "in", "10.0.0.2", "tunnel", {"packets_in": 10})
    out = SaStats("b", 0x5678, "out", "10.0.0.2", "tunnel", {"packets_out": 20})
    return DataPlaneStats(
        counters={"tun_rx": 21, "discarded": 2},
        inbound_drops={"replayed": 3, "integrity": 4},
        sas=[sa, out],
    )


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(
    got: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    key = (name, frozenset(labels.items()))
    assert key in got, f"{name}{labels} missing; have {sorted(k[0] for k in got)}"
    return got[key]


def sources(sink: FakeSink, tally: RekeyTally | None = None) -> MetricsSources:
    return MetricsSources(
        host="a1",
        version="9.9.9",
        sink=sink,
        plan=lambda: FakePlan(7, ("b", "c")),  # type: ignore[arg-type,return-value]
        data_plane_stats=dp_stats,
        ike_counters=lambda: {"malformed": 2, "cookies_sent": 1},
        rekeys=tally,
        clock=lambda: NOW,
    )


def test_collector_two_sas() -> None:
    tally = RekeyTally(EventHub())
    tally.count("child_rekeyed", "b")
    tally.count("child_rekeyed", "b")
    tally.count("ike_rekeyed", "b")
    tally.count("child_up", "b")  # not a rekey: not counted
    sink = FakeSink(two_sas())
    sink.found = [
        Problem(ProblemKind.ROUTE, "route 10.0.0.0/24 via vpnfleet0", "cannot add it: EEXIST"),
        Problem(ProblemKind.ROUTE, "route 10.1.0.0/24 via vpnfleet0", "cannot add it: EEXIST"),
        Problem(ProblemKind.IKE, "c", "timeout"),
    ]
    sink.dropped = [
        DropCount(DropLayer.ESP, DropReason.UNKNOWN_SPI, 6),
        DropCount(DropLayer.ESP, DropReason.INTEGRITY, 4),
        DropCount(DropLayer.UDP, DropReason.SHORT, 2),
        DropCount(DropLayer.RAW_ESP, DropReason.MALFORMED, 1),
        DropCount(DropLayer.IKE_SA, DropReason.REJECTED, 5),
    ]
    text = generate_latest(agent_registry(sources(sink, tally))).decode()
    got = samples(text)
    assert value(got, "vpnfleet_agent_build_info", host="a1", version="9.9.9") == 1
    assert value(got, "vpnfleet_agent_plan_generation") == 7
    assert value(got, "vpnfleet_agent_peers") == 2
    assert value(got, "vpnfleet_agent_peers_up") == 1
    assert value(got, "vpnfleet_agent_data_plane") == 1
    assert value(got, "vpnfleet_ike_sa_state", peer="b", state="established") == 1
    assert value(got, "vpnfleet_ike_sa_state", peer="c", state="connecting") == 1
    assert value(got, "vpnfleet_ike_sa_nat_detected", peer="b") == 1
    assert value(got, "vpnfleet_ike_sa_nat", peer="b", nat="detected") == 1
    assert value(got, "vpnfleet_agent_problems", kind="route") == 2
    assert value(got, "vpnfleet_agent_problems", kind="ike") == 1
    assert value(got, "vpnfleet_agent_problems", kind="tun") == 0
    assert value(got, "vpnfleet_socket_drops_total", socket="udp", reason="short") == 2
    assert value(got, "vpnfleet_socket_drops_total", socket="raw_esp", reason="malformed") == 1
    assert value(got, "vpnfleet_ike_sa_rejected_messages_total") == 5
    assert value(got, "vpnfleet_ike_sa_age_seconds", peer="b") == 120
    assert value(got, "vpnfleet_ike_sa_last_liveness_seconds", peer="b") == 7
    assert value(got, "vpnfleet_ike_unauthenticated_failures_total", peer="b") == 9
    assert value(got, "vpnfleet_ike_unauthenticated_failures_total", peer="c") == 0
    # A peer never heard from has no liveness sample rather than a huge age.
    assert ("vpnfleet_ike_sa_last_liveness_seconds", frozenset({("peer", "c")})) not in got
    child = {"peer": "b", "child": "b"}
    assert value(got, "vpnfleet_child_sa_bytes_total", direction="in", **child) == 1000
    assert value(got, "vpnfleet_child_sa_bytes_total", direction="out", **child) == 2000
    assert value(got, "vpnfleet_child_sa_packets_total", direction="in", **child) == 10
    assert value(got, "vpnfleet_child_sa_packets_total", direction="out", **child) == 20
    assert value(got, "vpnfleet_child_sa_replay_drops_total", **child) == 3
    assert value(got, "vpnfleet_child_sa_integrity_failures_total", **child) == 4
    assert value(got, "vpnfleet_child_sa_policy_drops_total", **child) == 5
    assert value(got, "vpnfleet_child_sa_installed", **child) == 1
    assert value(got, "vpnfleet_rekeys_total", peer="b", sa="child") == 2
    assert value(got, "vpnfleet_rekeys_total", peer="b", sa="ike") == 1
    assert value(got, "vpnfleet_ike_messages_total", outcome="malformed") == 2
    assert value(got, "vpnfleet_ike_messages_total", outcome="cookies_sent") == 1
    assert value(got, "vpnfleet_ike_half_open") == 3
    assert value(got, "vpnfleet_ike_preauth_fragment_bytes") == 4096
    assert value(got, "vpnfleet_ike_admission_limit", limit="half_open_per_source") == 16
    assert value(got, "vpnfleet_ike_admission_refused_total", limit="half_open_per_source") == 5
    assert value(got, "vpnfleet_ike_admission_refused_total", limit="preauth_message_bytes") == 2
    assert value(got, "vpnfleet_dataplane_packets_total", event="tun_rx") == 21
    assert value(got, "vpnfleet_dataplane_inbound_drops_total", reason="unknown_spi") == 6
    assert value(got, "vpnfleet_dataplane_inbound_drops_total", reason="integrity") == 4
    assert value(got, "vpnfleet_dataplane_sas", direction="in") == 1
    # Types as Prometheus expects them: counters end in _total, state is a gauge.
    types = {f.name: f.type for f in text_string_to_metric_families(text)}
    assert types["vpnfleet_child_sa_bytes"] == "counter"
    assert types["vpnfleet_ike_sa_state"] == "gauge"
    assert types["vpnfleet_agent_build_info"] == "gauge"  # info, in the 0.0.4 text format


def test_collector_reads_at_scrape_time() -> None:
    sink = FakeSink([])
    registry = agent_registry(sources(sink))
    before = samples(generate_latest(registry).decode())
    assert value(before, "vpnfleet_agent_peers_up") == 0
    assert not any(k[0] == "vpnfleet_child_sa_bytes_total" for k in before)
    sink.reports = two_sas()
    after = samples(generate_latest(registry).decode())
    assert value(after, "vpnfleet_agent_peers_up") == 1
    assert (
        value(after, "vpnfleet_child_sa_bytes_total", peer="b", child="b", direction="in") == 1000
    )


def test_plan_only_agent() -> None:
    src = MetricsSources("h", "1", FakeSink([]), plan=lambda: None)
    got = samples(generate_latest(agent_registry(src)).decode())
    assert value(got, "vpnfleet_agent_plan_generation") == 0
    assert value(got, "vpnfleet_agent_peers") == 0
    assert not any(k[0].startswith("vpnfleet_dataplane") for k in got)
    assert not any(k[0].startswith("vpnfleet_ike_messages") for k in got)


def test_collector_is_a_collector() -> None:
    assert list(AgentCollector(sources(FakeSink(two_sas()))).collect())


@pytest.mark.parametrize("listen", ["9477", "host:", ":9477", "h:99999", "h:port"])
def test_bad_listen(listen: str) -> None:
    with pytest.raises(MetricsError, match="must be host:port"):
        split_listen(listen)


def test_split_listen_ipv6() -> None:
    assert split_listen("[::1]:0") == ("::1", 0)


async def _http(port: int, request: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    await writer.drain()
    data = await reader.read()
    writer.close()
    await writer.wait_closed()
    return data


async def test_endpoint_serves_and_counts_rekeys(caplog: pytest.LogCaptureFixture) -> None:
    events = EventHub()
    src = sources(FakeSink(two_sas()))
    async with serve_metrics("127.0.0.1:0", src, events) as endpoint:
        assert endpoint.url == f"http://127.0.0.1:{endpoint.port}/metrics"
        events.publish(SaEventReport("child_rekeyed", "b"))
        await asyncio.sleep(0)  # let the tally drain the hub
        reply = await _http(endpoint.port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        head, _, body = reply.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 OK")
        got = samples(body.decode())
        assert value(got, "vpnfleet_rekeys_total", peer="b", sa="child") == 1
        missing = await _http(endpoint.port, b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n")
        assert missing.startswith(b"HTTP/1.1 404")
        post = await _http(endpoint.port, b"POST /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        assert post.startswith(b"HTTP/1.1 405")
        # A request the parser refuses is answered 400 in HTTP/1.0 and closed: a request
        # line that is no HTTP, or HTTP/1.1 without Host (RFC 9112 section 3.2).
        for bad in (b"hello\r\n\r\n", b"GET /metrics HTTP/1.1\r\n\r\n"):
            assert (await _http(endpoint.port, bad)).startswith(b"HTTP/1.0 400"), bad
        # A client's fault is answered, not logged: a client cannot fill the agent's log.
        assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []
    assert events.watchers == 0


async def test_a_client_that_does_not_finish_its_request_is_disconnected(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(metrics_http, "REQUEST_TIMEOUT", 0.5)
    async with serve_metrics("127.0.0.1:0", sources(FakeSink())) as endpoint:
        reader, writer = await asyncio.open_connection("127.0.0.1", endpoint.port)
        writer.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        await writer.drain()
        started = asyncio.get_running_loop().time()
        assert await asyncio.wait_for(reader.read(), 10) == b""
        assert asyncio.get_running_loop().time() - started >= 0.4
        writer.close()
        # Served again at once: the endpoint did not wait on the slow client.
        reply = await _http(endpoint.port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        assert reply.startswith(b"HTTP/1.1 200 OK")
        head = reply.partition(b"\r\n\r\n")[0].split(b"\r\n")
        assert b"Connection: close" in head


class BrokenSink(FakeSink):
    def ike_sas(self) -> Sequence[IkeSaReport]:
        raise RuntimeError("the reports cannot be read")


async def test_a_failed_collection_is_answered_500_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with serve_metrics("127.0.0.1:0", sources(BrokenSink())) as endpoint:
        reply = await _http(endpoint.port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 500")
    (record,) = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert record.name == "vpnfleet.agent.metrics.http" and record.exc_info is not None
    assert "the reports cannot be read" in str(record.exc_info[1])


async def test_endpoint_port_in_use() -> None:
    async with serve_metrics("127.0.0.1:0", sources(FakeSink())) as first:
        with pytest.raises(MetricsError, match=r"cannot serve metrics on 127\.0\.0\.1:"):
            async with serve_metrics(f"127.0.0.1:{first.port}", sources(FakeSink())):
                pass


def test_config_metrics_listen(tmp_path: Path) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text("name: a1\n")
    assert load_config(path).metrics_listen == ""
    path.write_text("name: a1\nmetrics_listen: 127.0.0.1:9477\n")
    assert load_config(path).metrics_listen == "127.0.0.1:9477"
    path.write_text("name: a1\nmetrics_listen: 9477\n")
    with pytest.raises(ConfigError, match="metrics_listen '9477' must be host:port"):
        load_config(path)
    path.write_text("name: a1\nmetrics_listn: 127.0.0.1:1\n")
    with pytest.raises(ConfigError, match="did you mean 'metrics_listen'"):
        load_config(path)
