"""A route the kernel really refuses reaches the operator: in the 4-host lab mesh, a1's
namespace already routes a prefix the next plan sends into the tunnel (through another
device, in the agent's own table 4500). `vpnfleet apply` puts the plan in force and
reports a1 failed with the kernel's reason; `vpnfleet status` shows the problem (table
and JSON) and exits non-zero. Once the operator removes the conflict, the same apply
tries again and everything is clean. The lab is removed in a finally, also on failure.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.lab import LabRun, controller, run_json

pytestmark = pytest.mark.netns

PREFIX = "10.77.0.0/24"
CONFLICT = (PREFIX, "dev", "lo", "table", "4500")
DISCARD = f"""
  - name: sinkhole
    action: discard
    local: 10.1.0.0/16
    remote: {PREFIX}
"""


def problems(status: dict[str, Any], host: str) -> list[dict[str, Any]]:
    (entry,) = [h for h in status["hosts"] if h["host"] == host]
    found: list[dict[str, Any]] = entry["observed"]["problems"]
    return [p for p in found if p["kind"] != "ike"]  # peers coming up are told apart


def test_a_route_the_kernel_refuses_fails_the_apply_and_shows_in_status(
    mesh: tuple[LabRun, dict[str, Any]],
) -> None:
    lab, _ = mesh
    added = lab.exec("a1", "ip", "route", "add", *CONFLICT)
    assert added.returncode == 0, added.stderr
    # A discard entry: its traffic is routed into the TUN, where the data plane drops it.
    topology = lab.inventory / "topology.yaml"
    topology.write_text(topology.read_text() + DISCARD)

    code, result = run_json(lab, "apply", "--no-stage")
    assert code == 2, result
    outcomes = {h["host"]: h for h in result["hosts"]}
    a1 = outcomes["a1"]
    assert a1["outcome"] == "failed", a1
    assert f"route route {PREFIX} via vpnfleet0 in table 4500" in a1["error"], a1
    assert "already routed via lo" in a1["error"], a1
    assert [outcomes[h]["outcome"] for h in ("a2", "a3", "a4")] == ["changed"] * 3, result

    shown = controller(lab, "status", "-i", str(lab.inventory), "-o", "json", "--no-sas")
    assert shown.returncode == 32, shown.stdout + shown.stderr  # the problems bit alone
    code, status = run_json(lab, "status")
    assert code == 32 and status["all_in_sync"], status  # in force, not all in place
    assert status["conditions"] == ["problems"], status
    (problem,) = problems(status, "a1")
    assert problem["subject"] == f"route {PREFIX} via vpnfleet0 in table 4500", problem
    assert problem["kind"] == "route" and problem["since"] > 0, problem
    assert all(problems(status, h) == [] for h in ("a2", "a3", "a4")), status
    table = controller(lab, "status", "-i", str(lab.inventory), "--no-sas")
    assert table.returncode == 32 and f"route {PREFIX}" in table.stdout, table.stdout

    # The operator removes the conflict; the same apply tries the route again.
    removed = lab.exec("a1", "ip", "route", "del", *CONFLICT)
    assert removed.returncode == 0, removed.stderr
    code, again = run_json(lab, "apply", "--no-stage")
    assert code == 0 and [h["outcome"] for h in again["hosts"]] == ["ok"] * 4, again
    code, status = run_json(lab, "status")
    assert code == 0 and problems(status, "a1") == [], status
    route = lab.exec("a1", "ip", "route", "show", "table", "4500", PREFIX)
    assert "dev vpnfleet0" in route.stdout, route.stdout
