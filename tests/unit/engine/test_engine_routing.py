"""The engine's own two jobs, apart from its drivers: routing what arrives (by our SPI,
then through a peer's responder gate), with peers' faults counted and our own failures
logged and counted apart; and putting a plan in force with a report of what it could
not do."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from tests.support.engine_pair import Fleet, node_plan, pubkey_plan
from tests.support.recording_routes import RecordingRoutes
from vpnfleet.agent.engine.sa_driver import SaDriver
from vpnfleet.agent.ike.errors import LocalError, ParseError
from vpnfleet.agent.ike.ike_sa import IkeSa
from vpnfleet.agent.sink import PeerFailure, ProblemKind
from vpnfleet.controller.statedir import pki

ENGINE_LOG = "vpnfleet.agent.engine.engine"


@pytest.fixture
async def ab() -> Fleet:
    fleet = Fleet("a", "b")
    await fleet.start()
    await fleet.mesh()
    assert fleet["a"].engine.peers_up() == fleet["b"].engine.peers_up() == 1
    return fleet


def next_request(fleet: Fleet) -> tuple[bytes, tuple[str, int]]:
    """A liveness request a sends to b on the IKE SA in force, caught on the way."""
    a = fleet["a"].engine
    sa = a.peers["b"].ike
    assert sa is not None
    sa.check_liveness(a.now())
    ((data, addr),) = sa.datagrams_to_send(a.now())
    return data, addr


async def test_datagrams_go_to_the_driver_of_our_spi(
    ab: Fleet, monkeypatch: pytest.MonkeyPatch
) -> None:
    b = ab["b"].engine
    data, _ = next_request(ab)
    seen: list[tuple[SaDriver, bytes, int]] = []
    monkeypatch.setattr(
        SaDriver, "receive", lambda self, data, addr, port: seen.append((self, data, port))
    )
    b._on_ike(data, ("192.0.2.1", 4500), 4500)
    ((driver, got, port),) = seen
    assert driver.sa is b.peers["a"].ike and got == data and port == 4500
    unknown = data[:8] + bytes(8) + data[16:19] + bytes([0x20]) + data[20:]  # response
    b._on_ike(unknown, ("192.0.2.1", 500), 500)
    b._on_ike(b"short", ("192.0.2.1", 500), 500)
    assert b.counters["ike_unknown_spi"] == 1 and b.counters["ike_malformed"] == 1


async def test_the_peers_fault_is_dropped_quietly(
    ab: Fleet, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    b = ab["b"].engine
    data, _ = next_request(ab)

    def refuse(self: IkeSa, *args: object) -> None:
        raise ParseError("nonsense", payload="header", offset=0)

    monkeypatch.setattr(IkeSa, "receive_datagram", refuse)
    with caplog.at_level(logging.INFO, logger=ENGINE_LOG):
        b._on_ike(data, ("192.0.2.1", 500), 500)
    assert b.counters["ike_malformed"] == 1 and b.counters["ike_internal_error"] == 0
    assert not [r for r in caplog.records if r.exc_info]


@pytest.mark.parametrize("error", [RuntimeError("a bug"), LocalError("our misuse")])
async def test_our_own_failure_is_logged_with_its_traceback_and_counted_apart(
    ab: Fleet,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    error: Exception,
) -> None:
    """Item 5 of issue 15: only a peer's faults are dropped quietly; a failure of our
    own (a LocalError included) is logged with its traceback and counted as
    internal_error, never as a malformed datagram."""
    b = ab["b"].engine
    data, _ = next_request(ab)

    def fail(self: IkeSa, *args: object) -> None:
        raise error

    monkeypatch.setattr(IkeSa, "receive_datagram", fail)
    with caplog.at_level(logging.ERROR, logger=ENGINE_LOG):
        b._on_ike(data, ("192.0.2.1", 500), 500)
    assert b.counters["ike_internal_error"] == 1 and b.counters["ike_malformed"] == 0
    assert b.ike_counters()["internal_error"] == 1
    (record,) = [r for r in caplog.records if r.exc_info]
    assert record.exc_info is not None and record.exc_info[1] is error


async def test_a_failing_event_handler_is_counted_and_the_sa_goes_on(
    ab: Fleet, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    a = ab["a"].engine
    peer = a.peers["b"]

    def broken() -> None:
        raise RuntimeError("handler bug")

    monkeypatch.setattr(peer, "on_liveness_answered", broken)
    sa = peer.ike
    assert sa is not None
    with caplog.at_level(logging.ERROR, logger=ENGINE_LOG):
        sa.check_liveness(a.now())
        a.driver_of(sa).service()
        ab.pump()
    assert a.counters["ike_internal_error"] == 1
    assert any(r.exc_info for r in caplog.records)
    assert a.peers_up() == 1 and isinstance(a.driver_of(sa), SaDriver)


async def test_put_in_force_reports_what_it_could_not_do(tmp_path: Path) -> None:
    """A plan put in force returns its problems as values: the routes refused, and the
    peer that cannot be configured (a certificate peer on an agent not enrolled)."""
    routes = RecordingRoutes()
    routes.fail = {"add_route"}
    fleet = Fleet("a", "b", routing={"a": routes})
    await fleet.start()
    report = await fleet["a"].engine.put_in_force(node_plan("a", ["b"]))
    assert not report.complete and report.failed_peers == ()
    assert {p.kind for p in report.problems} == {ProblemKind.ROUTE}
    on_board = {(p.kind, p.subject, p.message) for p in fleet["a"].engine.problems()}
    assert {(p.kind, p.subject, p.message) for p in report.problems} <= on_board

    anchor = pki.init_ca(tmp_path / "ca").cert_path.read_bytes()
    report = await fleet["b"].engine.put_in_force(pubkey_plan("b", ["a"], [anchor]))
    (failure,) = report.failed_peers
    assert isinstance(failure, PeerFailure) and failure.peer == "a"
    assert "needs this agent's IKE certificate" in failure.reason
    assert "peer a: " in report.summary()
    ok = await fleet["b"].engine.put_in_force(node_plan("b", ["a"], generation=2))
    assert ok.complete and ok.summary() == ""
