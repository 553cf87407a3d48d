"""A flood of cookie-bearing IKE_SA_INIT requests and pre-auth fragment storms against a
real agent (`vpnfleet-agent run`, real sockets in network namespaces): its resident
memory stays within 20 MiB of where it started, every cap that the flood reaches is
counted in its status, the drop is logged (rate-limited), and the IKE SA it already
had is untouched and still carries traffic. Namespaces and processes are removed at the
end, also on failure.

Without the caps, the same flood (240 half-open SAs, each sending 24 fragments of
48 KiB of an IKE_AUTH request that never completes) grows the agent by hundreds of MiB.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.engine_lab import built
from tests.support.flood_lab import ADMISSION, FloodLab

pytestmark = pytest.mark.netns

MIB = 1024
SAS_PER_SOURCE = 20
STORMS = ["24x49152", "9x1000"]


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[FloodLab]:
    with built(FloodLab(tmp_path)) as lab:
        yield lab


def test_a_flood_of_half_open_sas_and_fragments_leaves_memory_and_tunnels_alone(
    lab: FloodLab,
) -> None:
    lab.start("b")
    lab.start("a")
    lab.wait_for("a", r"event child_up b")
    lab.wait_for("b", r"event child_up a")
    assert lab.ping(2).returncode == 0
    spis = lab.established_spis()
    before = lab.rss_kib("b")

    flood = lab.flood(SAS_PER_SOURCE, STORMS)
    mark = len(lab.output("b"))
    after = lab.rss_kib("b")

    growth = (after - before) / MIB
    assert growth < 20, f"agent grew by {growth:.0f} MiB under the flood: {flood}"
    assert flood["half_open"] > 64 and flood["cookies"] > 0, flood  # cookies were answered
    line = lab.wait_for("b", ADMISSION, after=mark)
    refused = dict(re.findall(r"(\w+)=(\d+)", line.split("refused:")[1]))
    assert int(refused["half_open_per_source"]) > 0, line
    assert int(refused["half_open_per_peer"]) > 0, line
    assert int(refused["preauth_message_bytes"]) > 0, line
    assert int(refused["preauth_fragment_bytes"]) > 0, line
    # One log line per cap, not one per dropped request.
    log = lab.output("b")
    per_source = re.findall(r"over half_open_per_source=16 since the last such line", log)
    assert 1 <= len(per_source) <= 3, per_source
    # The IKE SA established before the flood is the one in force, and carries traffic.
    assert lab.established_spis(after=mark) == spis
    ping = lab.ping(3)
    assert ping.returncode == 0, ping.stdout + ping.stderr
