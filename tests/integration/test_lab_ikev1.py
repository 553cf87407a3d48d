"""IKEv1 (RFC 2409) through real agents: a lab of inventories/lab planned with
``ike_version: 1`` converges, pings cross every tunnel, ``vpnfleet status`` says IKEv1,
and a fleet-wide rekey (new Quick modes, new Main modes) under a continuous ping loses
nothing; and gateways of inventories/external-peer reach a strongSwan charon set to
``version = 1``. Each lab is removed in a finally (also on failure) and checked gone.
Run under ``flock /tmp/vpnfleet-lab.lock``."""

from __future__ import annotations

import json
import secrets
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.lab import (
    INVENTORIES,
    SHORT_LIFETIMES,
    LabRun,
    controller,
    fleet_status,
    ike_sas,
    lab_up,
    losses,
    pinging,
    removed_after,
    require_root,
    set_group_vars,
)
from tests.support.lab_ikev1 import IKE_V1_PROPOSAL, ikev1_inventory
from tests.support.pings import sa_spis, stop_pings, wait_fresh_replies

pytestmark = pytest.mark.netns

CHARON = Path("/usr/lib/ipsec/charon")
MANAGED = {"gw1": "10.3.1.1", "gw2": "10.3.2.1"}
PARTNER_SITE = "10.30.0.1"


def ikev1_lab(root: Path, inventory: str) -> LabRun:
    copy = ikev1_inventory(INVENTORIES / inventory, root / "inventory")
    return LabRun(root / "state", "t" + secrets.token_hex(4), copy)


@pytest.fixture
def v1_mesh(tmp_path: Path) -> Iterator[tuple[LabRun, dict[str, Any]]]:
    require_root()
    lab = ikev1_lab(tmp_path, "lab")
    set_group_vars(lab, SHORT_LIFETIMES)
    with removed_after(lab):
        yield lab, lab_up(lab)


def test_an_ikev1_mesh_of_real_agents(v1_mesh: tuple[LabRun, dict[str, Any]]) -> None:
    lab, up = v1_mesh
    # lab_up checked every protected pair passes through the tunnels (pings).
    assert len([p for p in up["reachability"] if p["expect"] != "bypass"]) == 12
    status = fleet_status(lab)
    assert (status["exit_code"], status["conditions"]) == (0, []), status["conditions"]
    sas = ike_sas(status)
    assert len(sas) == 12
    for host, sa in sas:
        assert sa["state"] == "established", (host, sa)
        assert sa["ike_version"] == "V1", (host, sa)
        assert sa["proposal"] == IKE_V1_PROPOSAL, (host, sa)
        assert [c["state"] for c in sa["children"]] == ["installed"], (host, sa)
    text = controller(lab, "status", "-i", str(lab.inventory))
    assert text.stdout.count("established IKEv1") == 12, text.stdout

    # Every child replaced by a new Quick mode, every ISAKMP SA by a new Main mode,
    # under a continuous ping: nothing lost.
    streams = pinging(up)
    fresh = []
    try:
        for target in ("--child", "--ike"):
            res = controller(lab, "rekey", "-i", str(lab.inventory), target, "-o", "json")
            assert res.returncode == 0, res.stdout + res.stderr
            result = json.loads(res.stdout)
            assert [h["outcome"] for h in result["hosts"]] == ["changed"] * 4, (target, result)
            fresh.append(wait_fresh_replies(streams, 20, 10))
    finally:
        stop_pings(streams)
    assert losses(streams) == []
    assert fresh == [True, True], [s.describe() for s in streams]
    after = fleet_status(lab)
    old, new = sa_spis(status), sa_spis(after)
    assert len(old) == 24 and sorted(new) == sorted(old), (old, new)
    assert [k for k in old if new[k] == old[k]] == []
    for host, sa in ike_sas(after):
        assert sa["state"] == "established" and sa["ike_version"] == "V1", (host, sa)
        assert sa["spi_i"] != dict(((h, s["peer"]), s["spi_i"]) for h, s in sas)[host, sa["peer"]]


def test_an_agent_against_charon_speaking_ikev1(tmp_path: Path) -> None:
    require_root()
    if not CHARON.exists() or shutil.which("swanctl") is None:
        pytest.skip("strongSwan charon/swanctl is not installed")
    lab = ikev1_lab(tmp_path, "external-peer")
    with removed_after(lab):
        up = lab_up(lab)
        partner = [p for p in up["reachability"] if "partner" in (p["src_host"], p["dst_host"])]
        assert len(partner) == 4 and {p["result"] for p in partner} == {"pass"}, partner
        status = lab.status()
        for host in status["fleet"]["hosts"]:
            sas = {sa["peer"]: sa for sa in host["observed"]["ike_sas"]}
            assert sas["partner"]["state"] == "established", sas["partner"]
            assert sas["partner"]["ike_version"] == "V1", sas["partner"]
        charon = status["externals"]["partner"]
        assert charon["alive"] is True
        for sa in charon["sas"]:
            assert sa["state"] == "ESTABLISHED", sa
            assert [c["state"] for c in sa["children"]] == ["INSTALLED"], sa
        # charon's own record of the version it speaks.
        conf = (lab.lab_dir / "external" / "partner" / "swanctl.conf").read_text()
        assert conf.count("version = 1") == 2
        before = {h: sa for h, sa in ike_sas(fleet_status(lab)) if sa["peer"] == "partner"}

        # Our Quick modes and Main modes replace charon's SAs too; afterwards charon holds
        # one ISAKMP SA with one child per gateway, and pings cross both ways.
        for target in ("--child", "--ike"):
            res = controller(lab, "rekey", "-i", str(lab.inventory), target, "-o", "json")
            assert res.returncode == 0, res.stdout + res.stderr
        time.sleep(8)  # the replaced SAs are deleted a few seconds after the switch
        after = {h: sa for h, sa in ike_sas(fleet_status(lab)) if sa["peer"] == "partner"}
        for host, sa in after.items():
            assert sa["state"] == "established" and sa["spi_i"] != before[host]["spi_i"], sa
            old_child, new_child = before[host]["children"][0], sa["children"][0]
            assert new_child["spi_in"] != old_child["spi_in"], (old_child, new_child)
        charon = lab.status()["externals"]["partner"]
        established = [sa for sa in charon["sas"] if sa["state"] == "ESTABLISHED"]
        assert len(established) == 2, charon["sas"]
        log = lab.lab_dir / "external" / "partner" / "charon.log"
        for sa in established:
            assert [c["state"] for c in sa["children"]] == ["INSTALLED"], (
                sa,
                log.read_text()[-12000:],
            )
        for host, site in MANAGED.items():
            there = lab.exec(host, "ping", "-n", "-c2", "-W2", "-I", site, PARTNER_SITE)
            assert there.returncode == 0, there.stdout + there.stderr
