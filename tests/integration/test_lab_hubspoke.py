"""Hub-and-spoke in the lab: spokes tunnel only to the hubs, and still reach each other
through a hub; the hubs reach each other and every spoke."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.lab import new_lab, removed_after, require_root

HUBS = ("hub1", "hub2")
SPOKES = ("spoke1", "spoke2", "spoke3", "spoke4")


@pytest.mark.netns
def test_spokes_reach_each_other_through_a_hub(tmp_path: Path) -> None:
    require_root()
    lab = new_lab(tmp_path, "hub-spoke")
    with removed_after(lab):
        res = lab.up("-o", "json", "--timeout", "90")
        assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
        result = json.loads(res.stdout)
        assert result["converged"] and result["data_plane"]

        # Tunnels: spokes only to hubs; hubs to each other and to every spoke.
        hosts = {h["host"]: h for h in result["status"]["hosts"]}
        for spoke in SPOKES:
            peers = {sa["peer"] for sa in hosts[spoke]["observed"]["ike_sas"]}
            assert peers == set(HUBS), (spoke, peers)
        for hub in HUBS:
            peers = {sa["peer"] for sa in hosts[hub]["observed"]["ike_sas"]}
            assert peers == set(HUBS + SPOKES) - {hub}, (hub, peers)

        # Every ordered pair of sites passes, spoke to spoke included (no direct tunnel,
        # so those pings cross a hub).
        pairs = {(p["src_host"], p["dst_host"]): p for p in result["reachability"]}
        spoke_pairs = [(a, b) for a in SPOKES for b in SPOKES if a != b]
        assert set(spoke_pairs) <= set(pairs)
        assert len(pairs) == 30
        failed = {k: v["detail"] for k, v in pairs.items() if v["result"] != "pass"}
        assert failed == {}
