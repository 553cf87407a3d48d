"""IKEv1 (RFC 2409) between real agents and strongSwan's charon set to ``version = 1``,
as strongSwan's own ikev1 scenarios exercise it (net2net-psk, dpd-restart): the gateways
of inventories/external-peer planned with ``ike_version: 1``, charon playing the
partner in a namespace of its own.

- Rekeys under a continuous ping, both directions of initiative: our agents replace
  their Quick mode SAs and Main mode SAs (``vpnfleet rekey``), then charon replaces its
  own (``swanctl --rekey --child`` / ``--ike``); no echo request is lost, and each side
  ends with one ISAKMP SA and one child per gateway.
- DPD restart (RFC 3706): charon is killed and started again, our agent declares it dead
  by DPD and brings the tunnel back by itself; our agent is killed (the lab's
  supervisor starts it again), charon's ``dpd_action = restart`` brings it back.

Each lab is removed in a finally (also on failure) and checked gone. Run under
``flock /tmp/vpnfleet-lab.lock``.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.charon import skip_reason
from tests.support.lab import (
    INVENTORIES,
    LabRun,
    agent_pid,
    controller,
    fleet_status,
    ike_sas,
    lab_up,
    losses,
    pinging,
    removed_after,
    require_root,
    wait_for,
)
from tests.support.lab_ikev1 import ikev1_inventory
from tests.support.pings import (
    SitePath,
    start_pings,
    stop_pings,
    tunnel_pairs,
    wait_fresh_replies,
    wait_replying,
)
from vpnfleet.controller.lab import external
from vpnfleet.controller.lab.record import LabRecord

pytestmark = [
    pytest.mark.interop,
    pytest.mark.netns,
    pytest.mark.skipif(skip_reason() is not None, reason=skip_reason() or ""),
]

PARTNER = "partner"
GATEWAYS = ("gw1", "gw2")
# Liveness on both sides: probe after 2 s of silence, dead after 6 s without an answer.
DPD = {"dpd_delay": "2s", "dpd_timeout": "6s"}


def v1_partner_lab(root: Path) -> LabRun:
    copy = ikev1_inventory(INVENTORIES / "external-peer", root / "inventory")
    return LabRun(root / "state", "t" + secrets.token_hex(4), copy)


@contextlib.contextmanager
def logs_kept(lab: LabRun, keep: Path) -> Iterator[None]:
    """charon's and the agents' logs copied to ``keep`` when the block ends (the lab
    directory goes with the lab), so a failure can be read afterwards."""
    try:
        yield
    finally:
        for log in [*lab.lab_dir.glob("agents/*/agent.log"), *lab.lab_dir.glob("external/*/*.log")]:
            target = keep / log.parent.name
            target.mkdir(parents=True, exist_ok=True)
            shutil.copy(log, target / log.name)


def charon_dir(lab: LabRun) -> Path:
    return lab.lab_dir / "external" / PARTNER


def swanctl(lab: LabRun, *args: str) -> str:
    res = external.run_swanctl(charon_dir(lab), *args)
    assert res.returncode == 0, f"swanctl {' '.join(args)}: {res.stdout}{res.stderr}"
    return res.stdout


def charon_sas(lab: LabRun) -> list[dict[str, Any]]:
    return external.list_sas(charon_dir(lab))


def charon_log(lab: LabRun) -> str:
    return (charon_dir(lab) / "charon.log").read_text(errors="replace")


def settle(lab: LabRun, what: str, timeout: float, *, charon_replaced: bool = False) -> None:
    """Wait for :func:`settled`; fail showing both sides' SAs."""
    deadline = time.monotonic() + timeout
    while not settled(lab, charon_replaced):
        if time.monotonic() > deadline:
            ours = [(h, sa) for h, sa in ike_sas(fleet_status(lab)) if sa["peer"] == PARTNER]
            pytest.fail(
                f"{what}: not settled within {timeout:g}s; charon: {charon_sas(lab)}; "
                f"ours: {ours}; charon log: {charon_log(lab)[-6000:]}"
            )
        time.sleep(0.5)


def settled(lab: LabRun, charon_replaced: bool = False) -> bool:
    """charon holds exactly one established ISAKMP SA per gateway, each with one
    installed child (the replaced ones are gone), and every gateway one established SA
    with it, with one installed child.

    ``charon_replaced``: charon may also hold, per gateway, the ISAKMP SA its own new
    Main mode replaced, in REKEYING and with no child left (its IKEv1 reauthentication
    moves the children to the new SA and keeps the old one; charon as a responder drops
    the SA such a Main mode replaces without a Delete, and so does the agent)."""
    sas = charon_sas(lab)
    established = [sa for sa in sas if sa["state"] == "ESTABLISHED"]
    others = [sa for sa in sas if sa["state"] != "ESTABLISHED"]
    if sorted(sa["name"] for sa in established) != sorted(GATEWAYS):
        return False
    if any([c["state"] for c in sa["children"]] != ["INSTALLED"] for sa in established):
        return False
    if others and not (
        charon_replaced
        and all(sa["state"] == "REKEYING" and sa["children"] == [] for sa in others)
        and len(others) <= len(GATEWAYS)
        and len({sa["name"] for sa in others}) == len(others)
    ):
        return False
    ours = [sa for _h, sa in ike_sas(fleet_status(lab)) if sa["peer"] == PARTNER]
    return len(ours) == 2 and all(
        sa["state"] == "established" and [c["state"] for c in sa["children"]] == ["installed"]
        for sa in ours
    )


def partner_spis(lab: LabRun) -> dict[str, tuple[str, str]]:
    """gateway -> (its ISAKMP initiator cookie, its inbound child SPI) with the partner."""
    out = {}
    for host, sa in ike_sas(fleet_status(lab)):
        if sa["peer"] == PARTNER and sa["state"] == "established":
            out[host] = (sa["spi_i"], sa["children"][0]["spi_in"])
    return out


def test_rekeys_of_both_phases_by_either_side_lose_no_ping(tmp_path: Path) -> None:
    require_root()
    lab = v1_partner_lab(tmp_path)
    with removed_after(lab), logs_kept(lab, tmp_path / "logs"):
        up = lab_up(lab)
        assert settled(lab), (charon_sas(lab), fleet_status(lab))
        first = partner_spis(lab)
        streams = pinging(up)
        assert {(s.path.src_host, s.path.dst_host) for s in streams} == {
            ("gw1", "gw2"),
            ("gw1", PARTNER),
            ("gw2", PARTNER),
        }
        fresh: list[tuple[str, bool]] = []
        try:
            # Our agents start: a new Quick mode per child, then a new Main mode per peer.
            for target in ("--child", "--ike"):
                res = controller(lab, "rekey", "-i", str(lab.inventory), target, "-o", "json")
                assert res.returncode == 0, res.stdout + res.stderr
                result = json.loads(res.stdout)
                assert [h["outcome"] for h in result["hosts"]] == ["changed"] * 2, result
                fresh.append((f"ours {target}", wait_fresh_replies(streams, 25, 10)))
            settle(lab, "after our rekeys", 20)
            ours = partner_spis(lab)
            # charon starts: a new Quick mode, then (IKEv1 has no IKE rekey) a new Main mode.
            for target in ("--child", "--ike"):
                for gw in GATEWAYS:
                    swanctl(lab, "--rekey", target, gw)
                fresh.append((f"charon's {target}", wait_fresh_replies(streams, 25, 10)))
        finally:
            stop_pings(streams)
        assert losses(streams) == []
        assert all(ok for _what, ok in fresh), (fresh, [s.describe() for s in streams])
        # charon's new Main mode (RFC 2409 has no ISAKMP SA rekey) took the children over.
        settle(lab, "after charon's rekeys", 25, charon_replaced=True)
        theirs = partner_spis(lab)
        for gw in GATEWAYS:
            # Every SA of each phase was replaced by each side's rekeys.
            assert len({first[gw][0], ours[gw][0], theirs[gw][0]}) == 3, (first, ours, theirs)
            assert len({first[gw][1], ours[gw][1], theirs[gw][1]}) == 3, (first, ours, theirs)
        print(f"pings: {[(s.path.dst_host, s.sent) for s in streams]}")


def set_gateway_vars(lab: LabRun, host: str, values: dict[str, str]) -> None:
    """Override variables in group_vars/gateways.yaml (which sets DPD over all.yaml) and,
    for ``host`` alone, ``start_action: none``: that gateway only answers the partner."""
    group = lab.inventory / "group_vars" / "gateways.yaml"
    lines = [
        ln for ln in group.read_text().splitlines() if ln.split(":", 1)[0].strip() not in values
    ]
    group.write_text("\n".join([*lines, *(f"{k}: {v}" for k, v in values.items())]) + "\n")
    host_vars = lab.inventory / "host_vars" / f"{host}.yaml"
    host_vars.write_text(host_vars.read_text() + "start_action: none\n")


def charon_dpd_restart(lab: LabRun) -> None:
    """charon's connections as strongSwan's dpd-restart scenario has them: probe after
    2 s of silence, give up after 6 s (IKEv1 uses dpd_timeout), then start again. Takes
    effect when charon next starts."""
    conf = charon_dir(lab) / "swanctl.conf"
    text = conf.read_text()
    delay = f"dpd_delay = {external.DPD_DELAY}"
    assert text.count(delay) == 2 and text.count("dpd_action = clear") == 2, text
    text = text.replace(delay, "dpd_delay = 2s\n    dpd_timeout = 6s")
    conf.write_text(text.replace("dpd_action = clear", "dpd_action = restart"))


def partner_path(up: dict[str, Any], host: str) -> SitePath:
    [path] = [
        p
        for p in tunnel_pairs(up["reachability"], up["layout"]["hosts"], involving=PARTNER)
        if p.src_host == host
    ]
    return path


def event_lines(lab: LabRun, host: str, event: str) -> list[str]:
    log = (lab.lab_dir / "agents" / host / "agent.log").read_text(errors="replace")
    return [ln for ln in log.splitlines() if f"{PARTNER} {event}" in ln]


def test_dpd_restart_after_either_end_dies(tmp_path: Path) -> None:
    """RFC 3706 DPD over IKEv1 both ways. gw1 only answers the partner (start_action
    none): charon starts that tunnel; gw2 starts its own."""
    require_root()
    lab = v1_partner_lab(tmp_path)
    set_gateway_vars(lab, "gw1", DPD)
    with removed_after(lab), logs_kept(lab, tmp_path / "logs"):
        up = lab_up(lab)
        assert settled(lab), (charon_sas(lab), fleet_status(lab))
        charon_dpd_restart(lab)
        record = LabRecord.load(lab.lab_dir)
        assert record is not None

        # charon dies and comes back with no SAs. gw2 hears nothing on its ISAKMP SA,
        # declares the partner dead by DPD and starts a new Main mode itself; charon
        # starts gw1's tunnel again (start_action start).
        streams = start_pings([partner_path(up, gw) for gw in GATEWAYS], 0.1)
        try:
            assert wait_replying(streams, 10), [s.describe() for s in streams]
            dead_before = len(event_lines(lab, "gw2", "peer_dead"))
            os.kill(lab.status()["externals"][PARTNER]["pid"], signal.SIGKILL)
            killed_at = time.time()
            time.sleep(1)
            external.restart_charon(record, PARTNER)
            wait_for(
                "pings to the partner cross again after charon's restart",
                lambda: all(s.replied_after(killed_at + 1) for s in streams),
                30,
                0.1,
            )
            back_s = max(s.replied_after(killed_at + 1) or 0 for s in streams) - killed_at
        finally:
            stop_pings(streams)
        assert len(event_lines(lab, "gw2", "peer_dead")) > dead_before, event_lines(
            lab, "gw2", "peer_dead"
        )
        settle(lab, "after charon's restart", 15)

        # gw1's agent dies; the supervisor starts it again from its plan, and it waits
        # for the partner (it only answers). charon's R-U-THERE go unanswered for 6 s:
        # dpd_action restart makes charon start a new Main mode and Quick mode.
        path = partner_path(up, "gw1")
        stream = start_pings([path], 0.1)
        try:
            assert wait_replying(stream, 10), stream[0].describe()
            seen = len(charon_log(lab))
            os.kill(agent_pid(lab, "gw1"), signal.SIGKILL)
            killed_at = time.time()
            wait_for(
                "pings from gw1 cross again after its agent's restart",
                lambda: stream[0].replied_after(killed_at + 1) is not None,
                30,
                0.1,
            )
            again_s = (stream[0].replied_after(killed_at + 1) or 0) - killed_at
        finally:
            stop_pings(stream)
        since = charon_log(lab)[seen:]
        assert "DPD check timed out, enforcing DPD action" in since, since[-4000:]
        assert "restarting CHILD_SA gw1" in since, since[-4000:]
        settle(lab, "after gw1's restart", 15)
        print(f"tunnels back {back_s:.1f}s after charon's kill, {again_s:.1f}s after gw1's")
