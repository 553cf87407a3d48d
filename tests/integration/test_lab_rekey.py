"""Rekeying in the lab with real tunnels: a fleet-wide ``vpnfleet rekey`` under a
continuous ping loses no packet, and with the controller gone the agents keep rekeying
on schedule.

Labs are 4-host meshes built from a copy of inventories/lab with short lifetimes, each
under a lab name of its own, removed in a finally (also on failure) and checked gone.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.lab import (
    CLI,
    SHORT_LIFETIMES,
    LabRun,
    fleet_status,
    ike_sas,
    lab_up,
    losses,
    new_lab,
    removed_after,
    require_root,
    set_group_vars,
    wait_for,
)
from tests.support.pings import (
    sa_spis,
    start_pings,
    stop_pings,
    tunnel_pairs,
    wait_fresh_replies,
    wait_replying,
)

pytestmark = pytest.mark.netns

PING_INTERVAL = "0.02"


def rekey(lab: LabRun, *args: str) -> dict[str, Any]:
    res = lab.vpnfleet(
        "--state", str(lab.lab_dir / "controller"), "rekey", "-i", str(lab.inventory),
        "-o", "json", *args,
    )  # fmt: skip
    assert res.returncode == 0, res.stdout + res.stderr
    data: dict[str, Any] = json.loads(res.stdout)
    return data


@pytest.fixture
def short_mesh(tmp_path: Path) -> Iterator[tuple[LabRun, dict[str, Any]]]:
    require_root()
    lab = new_lab(tmp_path, "lab")
    set_group_vars(lab, SHORT_LIFETIMES)
    with removed_after(lab):
        yield lab, lab_up(lab)


def test_fleet_rekey_under_continuous_ping_loses_nothing(
    short_mesh: tuple[LabRun, dict[str, Any]],
) -> None:
    lab, up = short_mesh
    paths = tunnel_pairs(up["reachability"], up["layout"]["hosts"])
    assert len(paths) == 6  # every tunnel of the 4-host mesh
    before = fleet_status(lab)
    # Real agents with their data plane, every plan in force, every tunnel up: status 0.
    assert (before["exit_code"], before["conditions"]) == (0, []), before["conditions"]
    started = time.time()
    streams = start_pings(paths, float(PING_INTERVAL))
    try:
        assert wait_replying(streams, 10), [s.describe() for s in streams]
        results, fresh = {}, []
        for what in ("child", "ike"):
            results[what] = rekey(lab, f"--{what}")
            fresh.append(wait_fresh_replies(streams, 20, 10))
    finally:
        stop_pings(streams)
    assert losses(streams) == []
    assert fresh == [True, True], [s.describe() for s in streams]  # traffic after each rekey
    for what, result in results.items():
        assert [h["outcome"] for h in result["hosts"]] == ["changed"] * 4, (what, result)
    after = fleet_status(lab)
    old, new = sa_spis(before), sa_spis(after)
    assert len(old) == 24 and sorted(new) == sorted(old), (old, new)
    assert [k for k in old if new[k] == old[k]] == []
    for host, sa in ike_sas(after):
        assert sa["state"] == "established", (host, sa)
        assert sa["rekeyed_at"] >= started, (host, sa["peer"], "IKE")
        [child] = sa["children"]
        assert child["rekeyed_at"] >= started, (host, sa["peer"], "child")
    assert all(h["observed"]["peers_up"] == 3 for h in after["hosts"]), after


def test_without_the_controller_sas_keep_rekeying_on_schedule(
    short_mesh: tuple[LabRun, dict[str, Any]],
) -> None:
    """No controller command between ``lab up`` and the final status read: the agents
    rekey on their own timers (child every ~20 s, IKE every ~40 s) while pings pass."""
    lab, up = short_mesh
    first = {
        (h["host"], sa["peer"]): sa
        for h in up["status"]["hosts"]
        for sa in h["observed"]["ike_sas"]
    }
    assert len(first) == 12
    paths = tunnel_pairs(up["reachability"], up["layout"]["hosts"])
    streams = start_pings(paths, float(PING_INTERVAL))

    def replaced_on_their_own(status: dict[str, Any]) -> bool:
        sas = ike_sas(status)
        return len(sas) == 12 and all(
            (sa["spi_i"], sa["spi_r"]) != (was["spi_i"], was["spi_r"])
            and len(sa["children"]) == 1
            and sa["children"][0]["spi_in"] != was["children"][0]["spi_in"]
            for host, sa in sas
            for was in [first[(host, sa["peer"])]]
        )

    try:
        assert wait_replying(streams, 10), [s.describe() for s in streams]
        pinging_from = time.monotonic()
        # Until every IKE SA (40 s) and child SA (20 s) has been replaced by its own timer.
        wait_for(
            "every SA replaced by its own rekey timer",
            lambda: replaced_on_their_own(fleet_status(lab)),
            120,
            1.0,
        )
        pinged = time.monotonic() - pinging_from
        wait_fresh_replies(streams, 20, 10)
    finally:
        stop_pings(streams)
    assert losses(streams) == []
    # Every stream ran the whole time: no ping that died early and so lost nothing.
    assert all(s.sent >= pinged / float(PING_INTERVAL) / 2 for s in streams), [
        s.describe() for s in streams
    ]
    later = fleet_status(lab)
    for host, sa in ike_sas(later):
        was = first[(host, sa["peer"])]
        where = (host, sa["peer"])
        assert sa["state"] == "established", where
        assert sa["rekeyed_at"] > 0 and (sa["spi_i"], sa["spi_r"]) != (
            was["spi_i"],
            was["spi_r"],
        ), where
        [child], [was_child] = sa["children"], was["children"]
        assert child["rekeyed_at"] > 0, where
        assert child["spi_in"] != was_child["spi_in"], where
        # Rekeyed on its own schedule, not an artefact of the status read.
        assert child["rekeyed_at"] < time.time() - 0.5, where
    assert all(h["observed"]["peers_up"] == 3 for h in later["hosts"]), later


def child_of(status: dict[str, Any], host: str, peer: str) -> dict[str, Any] | None:
    """The child SA ``host`` holds with ``peer``, None when it has none."""
    for h, sa in ike_sas(status):
        if h == host and sa["peer"] == peer and sa["children"]:
            return dict(sa["children"][0])
    return None


def test_crossing_child_rekeys_keep_one_sa_on_both_ends(
    short_mesh: tuple[LabRun, dict[str, Any]],
) -> None:
    """Both ends rekey the a1-a2 child at once and each answers the other's request
    before its own answer arrives: the collision of RFC 7296 section 2.8.1, made certain
    rather than left to timing with nftables rules on IKE (UDP 500; ESP in UDP 4500 is
    never touched) in both namespaces:

    1. all IKE between a1 and a2 dropped until both have sent their rekey request;
    2. only IKE responses dropped (flags octet, R bit 0x20) until both have answered a
       retransmission of the other's request, the answers lost;
    3. nothing dropped: the next retransmissions get the cached answers.

    The phases follow the drop counters, not the clock: retransmissions come 1 s and
    3 s after a request (the engine's schedule for a 6 s DPD timeout, gone at 7 s), and
    the rekey commands reach the agents after a start-up of their own.

    Then both ends must hold the one surviving SA (the exchange without the lowest nonce)
    and traffic must cross without loss."""
    lab, up = short_mesh
    hosts = up["layout"]["hosts"]
    paths = [
        p
        for p in tunnel_pairs(up["reachability"], hosts)
        if (p.src_host, p.dst_host) == ("a1", "a2")
    ]
    ctl = ["--state", str(lab.lab_dir / "controller"), "rekey", "-i", str(lab.inventory)]
    peers = {"a1": "a2", "a2": "a1"}

    def nft(host: str, *args: str, check: bool = True) -> None:
        subprocess.run(
            ["ip", "netns", "exec", hosts[host]["netns"], "nft", *args],
            check=check,
            capture_output=True,
        )

    def drop(host: str, *match: str) -> None:
        # One nft run is one transaction: no datagram passes between flush and add.
        peer = hosts[peers[host]]["address"]
        nft(host, "flush", "chain", "inet", "vftx", "in", ";", "add", "rule", "inet",
            "vftx", "in", "ip", "saddr", peer, "udp", "dport", "500", *match, "counter",
            "drop")  # fmt: skip

    def dropped(host: str) -> int:
        out = subprocess.run(
            ["ip", "netns", "exec", hosts[host]["netns"], "nft", "list", "chain", "inet",
             "vftx", "in"],
            check=True, capture_output=True, text=True,
        ).stdout  # fmt: skip
        found = re.search(r"counter packets (\d+)", out)
        return int(found.group(1)) if found else 0

    def wait_dropped(within: float) -> bool:
        """Until each end has dropped a datagram of the other under the current rule."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if all(dropped(h) > 0 for h in peers):
                return True
            time.sleep(0.02)
        return False

    streams = start_pings(paths, float(PING_INTERVAL))
    rekeys: list[subprocess.Popen[str]] = []
    try:
        assert wait_replying(streams, 10), [s.describe() for s in streams]
        for host in peers:
            nft(host, "add", "table", "inet", "vftx")
            nft(host, "add", "chain", "inet", "vftx", "in", "{type filter hook input priority 0;}")
            drop(host)
        for host, peer in peers.items():
            rekeys.append(
                subprocess.Popen(
                    [*CLI, *ctl, "-o", "json", "--limit", host, "--peer", peer, "--child"],
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )
            )
        assert wait_dropped(10), "the rekey requests were not sent"
        for host in peers:
            # The IKE header's flags octet: 19 octets into the UDP payload (RFC 7296 3.1).
            drop(host, "@th,216,8", "&", "0x20", "==", "0x20")
        assert wait_dropped(5), "the retransmitted rekey requests were not answered"
        for host in peers:
            nft(host, "delete", "table", "inet", "vftx")
        outcomes = [json.loads(p.communicate(timeout=60)[0]) for p in rekeys]
        wait_fresh_replies(streams, 20, 10)
    finally:
        for host in peers:
            nft(host, "delete", "table", "inet", "vftx", check=False)
        for p in rekeys:
            if p.poll() is None:
                p.kill()
                p.wait()
        stop_pings(streams)
    assert [o["hosts"][0]["outcome"] for o in outcomes] == ["changed", "changed"], outcomes
    status = fleet_status(lab)
    a1, a2 = child_of(status, "a1", "a2"), child_of(status, "a2", "a1")
    assert a1 is not None and a2 is not None, f"child SAs after the rekeys: a1 {a1}, a2 {a2}"
    # One SA on both ends: what a1 receives on is what a2 sends on, and back.
    assert (a1["spi_in"], a1["spi_out"]) == (a2["spi_out"], a2["spi_in"]), (a1, a2)
    assert all(h["observed"]["peers_up"] == 3 for h in status["hosts"]), status
    assert losses(streams) == []
