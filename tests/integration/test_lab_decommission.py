"""`vpnfleet decommission` on a running lab mesh with certificates: the host's certificates
are revoked, its former peers get plans without it and with the fleet CRL, and from then
on refuse it in gRPC (its TLS certificate) and in IKE (its IKE certificate), where both
worked before."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from tests.support.lab import (
    LabRun,
    controller,
    lab_up,
    new_lab,
    removed_after,
    require_root,
    set_group_vars,
    wait_for,
)
from vpnfleet.controller.fleet import operations
from vpnfleet.controller.inventory import load_inventory
from vpnfleet.controller.planner import build_plans
from vpnfleet.controller.statedir import pki
from vpnfleet.controller.statedir.audit import AuditLog
from vpnfleet.controller.statedir.state import StateDir
from vpnfleet.controller.transport import convert
from vpnfleet.controller.transport.client import AgentCallFailed, AgentClient


def tls_of(lab: LabRun, host: str) -> pki.TlsCredentials:
    agent_dir = lab.lab_dir / "agents" / host
    return pki.TlsCredentials(
        (agent_dir / "tls.pem").read_bytes(),
        (agent_dir / "tls.key").read_bytes(),
        (agent_dir / "ca.pem").read_bytes(),
    )


async def health_as(tls: pki.TlsCredentials, host: str, endpoint: str) -> str:
    async with AgentClient(host, endpoint, tls, timeout=10) as c:
        return await c.health()


async def a3_error_at_a1(state: StateDir, endpoint: str) -> str:
    async with AgentClient("a1", endpoint, operations.client_credentials(state)) as c:
        view = convert.status_from_proto(await c.get_status())
    return next((sa.last_error for sa in view.ike_sas if sa.peer == "a3"), "")


@pytest.mark.netns
def test_decommissioned_host_is_refused_by_its_former_peers(tmp_path: Path) -> None:
    require_root()
    lab = new_lab(tmp_path, "lab")
    set_group_vars(lab, {"auth": "pubkey"})
    # a3 is reached over SSH on a closed loopback port: unreachable, at once, locally.
    host_vars = lab.inventory / "host_vars"
    host_vars.mkdir(exist_ok=True)
    (host_vars / "a3.yaml").write_text("ansible_host: 127.0.0.1\nansible_port: 9\n")
    with removed_after(lab):
        lab_up(lab)  # every pair, a1-a3 included, passes traffic through its tunnel
        state = StateDir(lab.lab_dir / "controller")
        endpoint = operations.compile_fleet(lab.inventory, state).endpoints["a1"]
        a3_tls = tls_of(lab, "a3")
        assert asyncio.run(health_as(a3_tls, "a1", endpoint)) == "SERVING"

        decommission = ("decommission", "a3", "-i", str(lab.inventory), "-o", "json")
        dry = controller(lab, *decommission, "--check", "--ssh-timeout", "5")
        assert dry.returncode == 0, dry.stdout + dry.stderr
        would = json.loads(dry.stdout)
        assert sorted(r["kind"] for r in would["revoked"]) == ["ike", "tls"]
        assert {h["host"]: h["outcome"] for h in would["plans"]["hosts"]} == dict.fromkeys(
            ("a1", "a2", "a4"), "changed"
        )
        # --check changed nothing: no revocation, no retirement, a3 still served.
        assert pki.revoked_certificates(state.root) == [] and state.retired_hosts() == {}
        assert asyncio.run(health_as(a3_tls, "a1", endpoint)) == "SERVING"
        unknown = controller(lab, "decommission", "a9", "-i", str(lab.inventory))
        assert unknown.returncode == 1
        assert (
            "no host named 'a9'" in unknown.stderr and "nothing to decommission" in unknown.stderr
        )

        res = controller(lab, *decommission, "--ssh-timeout", "5")
        assert res.returncode == 0, res.stdout + res.stderr
        run = json.loads(res.stdout)
        assert sorted(r["kind"] for r in run["revoked"]) == ["ike", "tls"]
        assert run["host_removal"]["outcome"] == "unreachable"  # reported, not fatal
        pushed = {h["host"]: h for h in run["plans"]["hosts"]}
        assert sorted(pushed) == ["a1", "a2", "a4"]
        for host, result in pushed.items():
            assert result["outcome"] == "changed", result
            changes = {(c["section"], c["name"], c["kind"]) for c in result["changes"]}
            assert ("peer", "a3", "removed") in changes, (host, changes)
            assert ("crl", host, "changed") in changes, (host, changes)
        (entry,) = [e for e in AuditLog.in_state(state.root).recent() if e.kind == "decommission"]
        assert (entry.subject, entry.outcome) == ("decommission a3", "unreachable")
        assert len(entry.changes["a3"]) == 2 and entry.hosts == ("a3", "a1", "a2", "a4")

        # gRPC: a1 refuses a3's TLS certificate, on the open health service too.
        with pytest.raises(AgentCallFailed) as info:
            asyncio.run(health_as(a3_tls, "a1", endpoint))
        assert info.value.code == "PERMISSION_DENIED"
        assert "revoked certificate" in info.value.details

        # IKE: a1 given a plan that still names a3 (as a peer whose plan is older than
        # the revocation would) refuses a3's certificate in IKE_AUTH: the CRL decides.
        inventory = load_inventory(lab.inventory)
        plans = build_plans(
            inventory,
            master_secret=state.master_secret(),
            trust_anchors=pki.plan_anchors(state.root),
            crls=pki.fleet_crls(state.root),
            generation=state.current_generation() + 1,
        )
        assert any(p.name == "a3" for p in plans["a1"].peers)

        async def push() -> None:
            creds = operations.client_credentials(state)
            async with AgentClient("a1", endpoint, creds, timeout=10) as c:
                msg = convert.plan_to_proto(plans["a1"])
                await c.apply_plan(convert.apply_request(msg, False))

        asyncio.run(push())
        wait_for(
            "a1 refusing a3's revoked certificate",
            lambda: "revoked" in asyncio.run(a3_error_at_a1(state, endpoint)),
            60,
            every=0.5,
        )
        error = asyncio.run(a3_error_at_a1(state, endpoint))
        assert error.startswith("AUTHENTICATION_FAILED: certificate CN=a3"), error
        assert "is revoked by the CRL of" in error
