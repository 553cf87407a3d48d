"""Planning around decommissioned hosts: left out of every plan, with a warning while the
inventory still lists them; the CRL goes into every remaining plan."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from vpnfleet.controller.fleet import operations
from vpnfleet.controller.gitops.diff import host_changes
from vpnfleet.controller.statedir import pki
from vpnfleet.controller.statedir.state import StateDir

INVENTORIES = Path(__file__).resolve().parents[3] / "inventories"


@pytest.fixture
def state(tmp_path: Path) -> StateDir:
    pki.init_ca(tmp_path)
    return StateDir(tmp_path)


def test_retired_host_leaves_every_plan_with_a_warning(
    state: StateDir, caplog: pytest.LogCaptureFixture
) -> None:
    before = operations.compile_fleet(INVENTORIES / "lab", state)
    assert "a3" in before.plans and any(p.name == "a3" for p in before.plans["a1"].peers)
    state.record_retired("a3", "2026-12-07T03:00:00Z")
    with caplog.at_level(logging.WARNING):
        fleet = operations.compile_fleet(INVENTORIES / "lab", state)
    assert fleet.retired == ("a3",)
    assert "a3" not in fleet.plans and "a3" not in fleet.selected
    for host, plan in fleet.plans.items():
        assert [p.name for p in plan.peers] == sorted(set(before.selected) - {host, "a3"})
        assert all(e.peer != "a3" for e in plan.spd)
    assert (
        "a3 was decommissioned at 2026-12-07T03:00:00Z and is left out of every plan: "
        "remove it from the inventory" in caplog.text
    )


def test_a_retired_hub_leaves_its_spokes_with_the_other_hub(state: StateDir) -> None:
    state.record_retired("hub1", "2026-12-07T03:00:00Z")
    fleet = operations.compile_fleet(INVENTORIES / "hub-spoke", state)
    for host, plan in fleet.plans.items():
        assert "hub1" not in [p.name for p in plan.peers], host
    spokes = [h for h in fleet.plans if h.startswith("spoke")]
    assert spokes and all([p.name for p in fleet.plans[s].peers] == ["hub2"] for s in spokes)


def test_plans_carry_the_crl_once_something_is_revoked(state: StateDir) -> None:
    keys = [ec.generate_private_key(ec.SECP256R1()) for _ in range(2)]
    pki.sign_agent_csrs(state.root, "a3", *(pki._make_csr(k, "a3") for k in keys))
    assert all(
        p.crls == () for p in operations.compile_fleet(INVENTORIES / "lab", state).plans.values()
    )
    pki.revoke_host(state.root, "a3")
    fleet = operations.compile_fleet(INVENTORIES / "lab", state)
    crls = {p.crls for p in fleet.plans.values()}
    assert crls == {pki.fleet_crls(state.root)}
    msg = fleet.message("a1")
    assert list(msg.crls) == list(pki.fleet_crls(state.root))


def test_diff_names_the_crl_change(state: StateDir) -> None:
    keys = [ec.generate_private_key(ec.SECP256R1()) for _ in range(2)]
    pki.sign_agent_csrs(state.root, "a3", *(pki._make_csr(k, "a3") for k in keys))
    before = operations.compile_fleet(INVENTORIES / "lab", state).plans["a1"]
    pki.revoke_host(state.root, "a3")
    after = operations.compile_fleet(INVENTORIES / "lab", state).plans["a1"]
    lines = [str(c) for c in host_changes(before, after)]
    assert "~ crl a1: +vpnfleet fleet CA CRL #1: 2 revoked" in lines
    assert "- peer a3: address 10.99.0.13" in lines
