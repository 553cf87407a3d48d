"""``vpnfleet rekey --child`` of a whole 3-host mesh, in the lab with real agents.

Every agent is asked to rekey all its peers at once, so both ends of each tunnel rekey
the same child SA at nearly the same moment: crossing rekeys (RFC 7296 section 2.8.1)
and refusals with TEMPORARY_FAILURE (section 2.25) happen on their own. Nothing is lost
in either case, so every run must end with every peer reported rekeyed and exit 0.

Then one agent is killed and restarted by the lab's supervisor while its peers rekey
their SAs with it: the restarted agent holds no SA, so the peers' rekey requests go
unanswered until its new IKE SA, with INITIAL_CONTACT (section 2.4), replaces theirs.
That replacement is the rekey the operator asked for and must be reported as such.

The lab is a copy of inventories/lab without a4, under a lab name of its own, removed
in a finally (also on failure) and checked gone.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.lab import (
    CLI,
    LabRun,
    fleet_status,
    ike_sas,
    lab_up,
    new_lab,
    removed_after,
    require_root,
)

pytestmark = pytest.mark.netns

HOSTS = ("a1", "a2", "a3")
RUNS = 10


def without_host(lab: LabRun, host: str) -> None:
    """Drop ``host`` (its block of lines) from the copied inventory's hosts.yaml."""
    path = lab.inventory / "hosts.yaml"
    kept, skipping = [], False
    for line in path.read_text().splitlines():
        if line.strip() == f"{host}:":
            skipping, indent = True, len(line) - len(line.lstrip())
            continue
        if skipping and line.strip() and len(line) - len(line.lstrip()) <= indent:
            skipping = False
        if not skipping:
            kept.append(line)
    path.write_text("\n".join(kept) + "\n")


@pytest.fixture
def mesh3(tmp_path: Path) -> Iterator[tuple[LabRun, dict[str, Any]]]:
    require_root()
    lab = new_lab(tmp_path, "lab")
    without_host(lab, "a4")
    with removed_after(lab):
        up = lab_up(lab)
        assert sorted(up["layout"]["hosts"]) == list(HOSTS)
        yield lab, up


def rekey(lab: LabRun, *extra: str) -> subprocess.CompletedProcess[str]:
    return lab.vpnfleet(
        "--state", str(lab.lab_dir / "controller"), "rekey", "-i", str(lab.inventory),
        "-o", "json", *extra,
    )  # fmt: skip


def rekeyed_rows(result: dict[str, Any]) -> dict[tuple[str, str], str]:
    """(host, peer) -> the kind of the host's rekey line for that peer."""
    return {
        (h["host"], c["name"]): c["kind"]
        for h in result["hosts"]
        for c in h["changes"]
        if c["section"] == "rekey"
    }


def failures(result: dict[str, Any]) -> list[str]:
    return [f"{h['host']}: {h['error']}" for h in result["hosts"] if h["outcome"] != "changed"]


def test_fleet_rekey_survives_its_own_collisions(
    mesh3: tuple[LabRun, dict[str, Any]],
) -> None:
    """``RUNS`` times ``rekey --child``, then ``RUNS`` times ``rekey`` (IKE and child
    SAs: an IKE rekey meets the other end's child exchanges, which it refuses with
    TEMPORARY_FAILURE, section 2.25)."""
    lab, _ = mesh3
    every_pair = {(h, p): "changed" for h in HOSTS for p in HOSTS if p != h}
    failed: list[str] = []
    for what in (("--child",), ()):
        for run in range(RUNS):
            res = rekey(lab, *what)
            result = json.loads(res.stdout)
            if res.returncode != 0 or rekeyed_rows(result) != every_pair:
                failed.append(
                    f"rekey {' '.join(what)} run {run}: exit {res.returncode}: {failures(result)}"
                )
            assert result["counts"]["changed"] + result["counts"]["failed"] == len(HOSTS), result
    assert failed == [], f"{len(failed)} of {2 * RUNS} runs failed: {failed}"
    status = fleet_status(lab)
    assert all(h["observed"]["peers_up"] == 2 for h in status["hosts"]), status


def nft(netns: str, *args: str) -> str:
    res = subprocess.run(
        ["ip", "netns", "exec", netns, "nft", *args], capture_output=True, text=True, timeout=10
    )
    assert res.returncode == 0, f"nft {' '.join(args)} in {netns}: {res.stderr}"
    return res.stdout


def wait_for(what: str, check: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout:g} s")
        time.sleep(0.05)


def test_crossing_ike_and_child_rekeys_refused_for_now_are_tried_again(
    mesh3: tuple[LabRun, dict[str, Any]],
) -> None:
    """a1 rekeys its child SA with a2 while a2 rekeys their IKE SA. All IKE between the
    two is dropped (nftables in both namespaces) until each has sent its request, so
    the first of the two retransmitted requests to arrive meets the other's exchange in
    flight and is refused with TEMPORARY_FAILURE (section 2.25: a child exchange on an
    IKE SA being rekeyed, or the other way round). The refused end tries again after
    a back-off; both calls report the SA rekeyed."""
    lab, up = mesh3
    hosts = up["layout"]["hosts"]
    peers = {"a1": "a2", "a2": "a1"}
    targets = {"a1": "--child", "a2": "--ike"}

    def hold(host: str) -> None:
        netns, peer = hosts[host]["netns"], hosts[peers[host]]["address"]
        nft(netns, "add", "table", "inet", "vfhold")
        nft(netns, "add", "chain", "inet", "vfhold", "in", "{type filter hook input priority 0;}")
        nft(netns, "add", "rule", "inet", "vfhold", "in", "ip", "saddr", peer, "udp", "dport",
            "500", "counter", "drop")  # fmt: skip

    def dropped(host: str) -> int:
        text = nft(hosts[host]["netns"], "list", "chain", "inet", "vfhold", "in")
        found = re.search(r"counter packets (\d+)", text)
        return int(found.group(1)) if found else 0

    def release(host: str) -> None:
        subprocess.run(
            ["ip", "netns", "exec", hosts[host]["netns"], "nft", "delete", "table", "inet",
             "vfhold"],
            capture_output=True,
        )  # fmt: skip

    before = fleet_status(lab)
    calls: dict[str, subprocess.Popen[str]] = {}
    try:
        for host in peers:
            hold(host)
        for host, peer in peers.items():
            calls[host] = subprocess.Popen(
                [*CLI, "--state", str(lab.lab_dir / "controller"), "rekey", "-i",
                 str(lab.inventory), "-o", "json", "--limit", host, "--peer", peer,
                 targets[host]],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            )  # fmt: skip
        wait_for("both rekey requests sent", lambda: all(dropped(h) > 0 for h in peers), 30)
        for host in peers:
            release(host)
        outputs = {h: p.communicate(timeout=60) for h, p in calls.items()}
    finally:
        for host in peers:
            release(host)
        for p in calls.values():
            if p.poll() is None:
                p.kill()
                p.wait()
    results = {h: json.loads(out) for h, (out, _) in outputs.items()}
    for host, p in calls.items():
        assert p.returncode == 0, (host, failures(results[host]), outputs[host][1][-2000:])
        assert rekeyed_rows(results[host]) == {(host, peers[host]): "changed"}, results[host]
    refused = [
        host
        for host in peers
        if re.search(
            r"(child|ike)_rekey_refused: TEMPORARY_FAILURE",
            (lab.lab_dir / "agents" / host / "agent.log").read_text(errors="replace"),
        )
    ]
    assert refused, "the crossing did not happen: neither end was refused"
    after = fleet_status(lab)
    a1_ike = {sa["peer"]: sa for h, sa in ike_sas(after) if h == "a1"}["a2"]
    was = {sa["peer"]: sa for h, sa in ike_sas(before) if h == "a1"}["a2"]
    assert (a1_ike["spi_i"], a1_ike["spi_r"]) != (was["spi_i"], was["spi_r"])
    assert a1_ike["children"][0]["spi_in"] != was["children"][0]["spi_in"]
    assert all(h["observed"]["peers_up"] == 2 for h in after["hosts"]), after


def test_rekey_right_after_a_peer_restarted_reports_it_rekeyed(
    mesh3: tuple[LabRun, dict[str, Any]],
) -> None:
    """a3 (the responder of both its tunnels) is killed; the supervisor starts it again.
    Its IKE is held back (nftables in its namespace, output dropped, input counted) until
    a1's and a2's rekey requests on the SAs it lost have reached it, so the peers' rekeys
    are surely in flight when its INITIAL_CONTACT arrives; then released."""
    lab, up = mesh3
    hosts = up["layout"]["hosts"]
    victim, others = "a3", ("a1", "a2")
    netns = hosts[victim]["netns"]
    before = lab.status()["agents"][victim]
    ike_ports = "{ 500, 4500 }"
    nft(netns, "add", "table", "inet", "vfhold")
    nft(netns, "add", "chain", "inet", "vfhold", "out", "{type filter hook output priority 0;}")
    nft(netns, "add", "chain", "inet", "vfhold", "in", "{type filter hook input priority 0;}")
    for peer in others:
        address = hosts[peer]["address"]
        # IKE on 4500 follows four zero octets (RFC 3948); ESP in UDP is not held back.
        nft(netns, "add", "rule", "inet", "vfhold", "out", "ip", "daddr", address, "udp",
            "dport", ike_ports, "counter", "drop")  # fmt: skip
        nft(netns, "add", "rule", "inet", "vfhold", "in", "ip", "saddr", address, "udp",
            "dport", "500", "counter", "comment", f'"{peer}"')  # fmt: skip
        nft(netns, "add", "rule", "inet", "vfhold", "in", "ip", "saddr", address, "udp",
            "dport", "4500", "@th,64,32", "==", "0", "counter", "comment", f'"{peer}"')  # fmt: skip

    def ike_in(peer: str) -> int:
        text = nft(netns, "list", "chain", "inet", "vfhold", "in")
        found = re.findall(rf'counter packets (\d+) bytes \d+ comment "{peer}"', text)
        return sum(int(n) for n in found)

    rekey: subprocess.Popen[str] | None = None
    try:
        os.kill(before["pid"], signal.SIGKILL)
        wait_for(
            "the supervisor restarting a3",
            lambda: (a := lab.status()["agents"][victim])["alive"] and a["pid"] != before["pid"],
            30,
        )
        seen = {p: ike_in(p) for p in others}
        rekey = subprocess.Popen(
            [*CLI, "--state", str(lab.lab_dir / "controller"),
             "rekey", "-i", str(lab.inventory), "--child", "-o", "json", "--limit", "!a3"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        wait_for(
            "a1's and a2's rekey requests reaching the restarted a3",
            lambda: all(ike_in(p) > seen[p] for p in others),
            30,
        )
        nft(netns, "delete", "table", "inet", "vfhold")
        out, err = rekey.communicate(timeout=60)
    finally:
        subprocess.run(
            ["ip", "netns", "exec", netns, "nft", "delete", "table", "inet", "vfhold"],
            capture_output=True,
        )
        if rekey is not None and rekey.poll() is None:
            rekey.kill()
            rekey.wait()
    result = json.loads(out)
    print(
        "rekey right after the restart, seconds:",
        {h["host"]: h["seconds"] for h in result["hosts"]},
    )
    assert rekey.returncode == 0, (failures(result), err[-2000:])
    rows = rekeyed_rows(result)
    assert {(h, victim): rows.get((h, victim)) for h in others} == {
        (h, victim): "changed" for h in others
    }, result
    assert result["counts"] == {**result["counts"], "changed": 2, "failed": 0}, result
    after = lab.status()["agents"][victim]
    assert after["restarts"] == before["restarts"] + 1, after
    status = fleet_status(lab)
    assert all(h["observed"]["peers_up"] == 2 for h in status["hosts"]), status
