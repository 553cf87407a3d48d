"""The data plane between two namespaces: manually keyed SAs (no IKE), a real TUN device
and UDP 4500 (or raw ESP) in each, ping and iperf3 TCP both ways through the tunnel.

The namespaces, links, processes and files come from ``tests/support/dataplane_lab.py``'s
:class:`SitePair`, which removes all of them when the test ends, also on failure.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.dataplane_lab import SitePair, tcp_mbps

pytestmark = pytest.mark.netns

TRANSFER_SECONDS = 2


@pytest.fixture
def pair() -> Iterator[SitePair]:
    if os.geteuid() != 0:
        pytest.skip("needs root to create network namespaces")
    if shutil.which("iperf3") is None:
        pytest.skip("needs iperf3")
    with SitePair() as site_pair:
        yield site_pair


def _sa(report: dict[str, Any], direction: str) -> dict[str, int]:
    (found,) = [s["counters"] for s in report["sas"] if s["direction"] == direction]
    counters: dict[str, int] = found
    return counters


@pytest.mark.parametrize("offload", [True, False], ids=["joined-tcp", "plain-tun"])
def test_ping_and_tcp_both_ways_over_udp(pair: SitePair, offload: bool) -> None:
    a, b = pair.start_data_planes(offload=offload)
    ping = pair.ping(3)
    assert ping.returncode == 0, ping.stdout + ping.stderr
    assert " 0% packet loss" in ping.stdout
    forward = pair.iperf3(TRANSFER_SECONDS)
    backward = pair.iperf3(TRANSFER_SECONDS, reverse=True)
    assert tcp_mbps(forward) > 10 and tcp_mbps(backward) > 10
    sent_forward = forward["end"]["sum_received"]["bytes"]
    sent_backward = backward["end"]["sum_received"]["bytes"]
    report_a, report_b = a.finish(), b.finish()
    for report in (report_a, report_b):
        inbound, outbound = _sa(report, "in"), _sa(report, "out")
        assert inbound["integrity_failures"] == 0
        assert inbound["replay_drops"] == 0
        assert report["counters"]["internal_errors"] == 0
        assert report["counters"]["esp_rx_dropped"] == 0
        assert report["udp"]["rx_esp"] == report["counters"]["esp_rx"] > 0
        assert outbound["packets_out"] > 0
    # Each side's SA carried at least the TCP payload that crossed in its direction.
    # UDP may lose datagrams under a full-speed transfer (a full socket buffer; TCP
    # retransmits), so the far side opened at most what was sealed, never more.
    for sender, receiver, crossed in ((report_a, report_b, sent_forward),
                                      (report_b, report_a, sent_backward)):  # fmt: skip
        assert _sa(receiver, "in")["bytes_in"] > crossed
        assert _sa(sender, "out")["bytes_out"] >= _sa(receiver, "in")["bytes_in"]
        assert _sa(sender, "out")["packets_out"] >= _sa(receiver, "in")["packets_in"]


def test_ping_over_raw_esp(pair: SitePair) -> None:
    a, b = pair.start_data_planes(encap="raw")
    ping = pair.ping(3)
    assert ping.returncode == 0, ping.stdout + ping.stderr
    report_a, report_b = a.finish(), b.finish()
    for report in (report_a, report_b):
        assert report["udp"]["rx_esp"] == 0 and report["udp"]["tx_esp"] == 0
        assert _sa(report, "in")["packets_in"] >= 3
        assert _sa(report, "in")["integrity_failures"] == 0
