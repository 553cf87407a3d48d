"""Certificate authentication end to end: the lab enrols every agent with the fleet CA
(keys made on the host, CSRs signed), plans say `auth: pubkey`, and the mesh comes up
with RFC 7427 signatures instead of PSKs."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.support.lab import CLI, new_lab, removed_after, require_root


@pytest.mark.netns
def test_mesh_with_certificates_comes_up_and_passes_traffic(tmp_path: Path) -> None:
    require_root()
    lab = new_lab(tmp_path, "lab")
    group_vars = lab.inventory / "group_vars" / "all.yaml"
    text = group_vars.read_text()
    assert "\nauth: psk" in text
    group_vars.write_text(text.replace("\nauth: psk", "\nauth: pubkey", 1))
    with removed_after(lab):
        res = lab.up("-o", "json", "--timeout", "90")
        assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
        result = json.loads(res.stdout)
        assert result["converged"] and result["data_plane"]
        # The plans in force authenticate with certificates, and carry no PSK.
        controller = lab.lab_dir / "controller"
        dry = subprocess.run(
            [*CLI, "--state", str(controller), "plan", "-i", str(lab.inventory), "-o", "json"],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert dry.returncode == 0, dry.stderr
        for host in json.loads(dry.stdout)["hosts"]:
            assert host["outcome"] == "ok", host  # the agents already run these plans
        emit = tmp_path / "plans"
        done = subprocess.run(
            [*CLI, "--state", str(controller), "plan", "-i", str(lab.inventory), "--emit",
             str(emit)],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        from vpnfleet.protos import plan_pb2

        plan = plan_pb2.NodePlan.FromString((emit / "a1.plan").read_bytes())
        assert plan.trust_anchors and all(p.auth.method == 2 and not p.auth.psk for p in plan.peers)
        # Twelve protected pairs through the tunnels, twelve bypass probes in the clear.
        pairs = [p for p in result["reachability"] if p["expect"] == "protect"]
        assert len(pairs) == 12
        assert all(p["result"] == "pass" for p in pairs), [
            p for p in pairs if p["result"] != "pass"
        ]
        clear = [p for p in result["reachability"] if p["expect"] == "bypass"]
        assert len(clear) == 12 and all(p["result"] == "pass-clear" for p in clear), clear
