"""Strangers flooding an agent with IKE during `apply --canary`, in the lab.

Anyone who can send UDP to an agent can start IKE SAs with it. Two strangers keep doing
so at a2 (tests/support/ike_stranger.py: a real IKE_SA_INIT, then IKE_AUTH with a wrong key and an
identity of their choosing, every other one garbled) while a change rolls out behind
the canary's health gates: one from an address of its own in a namespace added to the
lab's bridge, one from inside a3's namespace, from a3's address (another port). a2 has
one responder-side peer (a1 initiates to it) and none behind a NAT.

The rollout must not notice: the stranger from elsewhere is routed to no peer (dropped
and counted), the one at a3's address is answered and refused and counted for a3, and no
peer's last error (which the gates judge) hears of either.

The lab is a 4-host mesh (test_lab_rotation's ``mesh`` fixture), removed in a finally
with the added namespace and the strangers, also on failure.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.lab import LabRun, commit_inventory, fleet_status, ike_sas, pinging, run_json
from tests.support.pings import stop_pings

pytestmark = pytest.mark.netns

STRANGER = Path(__file__).resolve().parents[1] / "support" / "ike_stranger.py"
BRIDGE = "br0"


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


@contextlib.contextmanager
def namespace_on_the_bridge(lab: LabRun, layout: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """A namespace of its own on the lab's bridge, with an underlay address no host of
    the inventory has: (namespace, address). Deleted when the block ends."""
    netns = f"vf-{lab.name}-st"
    net = ipaddress.ip_network(layout["underlay"])
    taken = {h["address"] for h in layout["hosts"].values()}
    address = next(str(a) for a in net.hosts() if str(a) not in taken and int(a) % 256 >= 77)
    ip("netns", "add", netns)
    try:
        ip("-n", layout["bridge_netns"], "link", "add", "xst", "type", "veth", "peer", "name",
           "eth0", "netns", netns)  # fmt: skip
        ip("-n", layout["bridge_netns"], "link", "set", "xst", "master", BRIDGE, "up")
        ip("-n", netns, "addr", "add", f"{address}/{net.prefixlen}", "dev", "eth0")
        ip("-n", netns, "link", "set", "eth0", "up")
        ip("-n", netns, "link", "set", "lo", "up")
        yield netns, address
    finally:
        ip("netns", "del", netns)  # takes its veth pair with it


@dataclass
class Flood:
    proc: subprocess.Popen[str]
    result: dict[str, int] | None = None

    def stop(self) -> dict[str, int]:
        if self.result is None:
            self.proc.terminate()
            out, err = self.proc.communicate(timeout=10)
            assert self.proc.returncode == 0, err
            self.result = json.loads(out.splitlines()[-1])
        return self.result


@contextlib.contextmanager
def flooding(netns: str, source: str, port: int, target: str) -> Iterator[Flood]:
    """ike_stranger.py inside ``netns`` from ``source``:``port`` at ``target``'s agent,
    until the block ends (stopped, and killed if it does not stop)."""
    proc = subprocess.Popen(
        ["ip", "netns", "exec", netns, sys.executable, str(STRANGER), "--source", source,
         "--port", str(port), "--target", target, "--target-identity", "a2"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    flood = Flood(proc)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready", proc.stderr
        yield flood
    finally:
        if proc.poll() is None:
            try:
                flood.stop()
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def test_strangers_flooding_ike_do_not_stop_a_canary_rollout(
    mesh: tuple[LabRun, dict[str, Any]],
) -> None:
    lab, up = mesh
    commit_inventory(lab)
    path = lab.inventory / "group_vars" / "all.yaml"
    path.write_text(path.read_text().replace("dpd_delay: 30s", "dpd_delay: 20s"))
    layout = up["layout"]
    a2, a3 = layout["hosts"]["a2"], layout["hosts"]["a3"]
    started = time.time()
    with (
        namespace_on_the_bridge(lab, layout) as (netns, address),
        flooding(netns, address, 500, a2["address"]) as elsewhere,
        flooding(a3["netns"], a3["address"], 5000, a2["address"]) as beside,
    ):
        streams = pinging(up)  # the traffic the gate wants moving
        try:
            code, result = run_json(
                lab, "apply", "--canary", "1", "--serial", "2", "--health-timeout", "20"
            )
        finally:
            stop_pings(streams)
        from_elsewhere, from_a3 = elsewhere.stop(), beside.stop()

    assert code == 0, result
    assert result["batches"] == [["a1"], ["a2", "a3"], ["a4"]]
    assert result["regression"] == "" and result["rolled_back"] == []
    assert [h["outcome"] for h in result["hosts"]] == ["changed"] * 4
    # The attack was real: a2 answered the one at a3's address and refused its AUTH
    # (while the rollout ran); the one from elsewhere was never answered.
    assert from_a3["auth_refused"] >= 5, from_a3
    assert from_elsewhere["attempts"] >= 5 and from_elsewhere["init_answers"] == 0, from_elsewhere

    status = fleet_status(lab)
    assert status["all_in_sync"], status
    sas = ike_sas(status)
    assert len(sas) == 12
    for host, sa in sas:
        # Every tunnel as it was: up, set up before the rollout, with no error.
        assert sa["state"] == "established" and sa["last_error"] == "", (host, sa)
        assert sa["established_at"] < started, (host, sa)
    (agent,) = [h["observed"] for h in status["hosts"] if h["host"] == "a2"]
    by_peer = {sa["peer"]: sa for sa in agent["ike_sas"]}
    assert by_peer["a3"]["unauthenticated_failures"] >= from_a3["auth_refused"], by_peer["a3"]
    last = by_peer["a3"]["last_unauthenticated_failure"]
    assert last.startswith(f"from {a3['address']}:5000: "), last
    assert last.isprintable(), last  # what the stranger claims is escaped
    assert by_peer["a1"]["unauthenticated_failures"] == 0, by_peer["a1"]
    assert agent["ike_counters"]["no_peer"] >= from_elsewhere["attempts"], agent
