"""`plan|apply|status --rev` and `diff --from --to` on an inventory kept in a git repo.

The repository is made in a temporary directory with two commits; the inventory is a
subdirectory of it. Agents are real `vpnfleet-agent serve` processes on 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.agent_harness import AgentProcess, Fleet, make_fleet, running_agent
from tests.support.status_output import status_document

CLI = [sys.executable, "-m", "vpnfleet.controller.cli"]
HOSTS = ("h1", "h2", "h3")
OLD_VARS = "ike_proposals: [aes256gcm16-prfsha384-x25519]\nesp_proposals: [aes256gcm16]\n"
NEW_VARS = "ike_proposals: [aes128-sha256-modp2048]\nesp_proposals: [aes128gcm16]\npsk_epoch: 2\n"


def git(repo: Path, *args: str) -> str:
    res = subprocess.run(
        ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.org", *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return res.stdout.strip()


def write_inventory(inv: Path, ports: dict[str, int], all_vars: str) -> None:
    inv.mkdir(parents=True, exist_ok=True)
    hosts = "".join(
        f"        {h}: {{address: 10.77.0.{i}, subnets: [10.7{i}.0.0/24], "
        f"agent_address: '127.0.0.1:{ports[h]}'}}\n"
        for i, h in enumerate(HOSTS, 1)
    )
    (inv / "hosts.yaml").write_text("all:\n  children:\n    mesh:\n      hosts:\n" + hosts)
    (inv / "group_vars").mkdir(exist_ok=True)
    (inv / "group_vars" / "all.yaml").write_text(all_vars)
    (inv / "topology.yaml").write_text("meshes:\n  - {name: core, group: mesh}\n")


def commit(repo: Path, message: str) -> str:
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)
    return git(repo, "rev-parse", "HEAD")


@dataclass
class GitLab:
    fleet: Fleet
    repo: Path
    inventory: Path
    agents: dict[str, AgentProcess]
    first: str
    second: str

    def vpnfleet(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*CLI, "--state", str(self.fleet.controller_state), *args],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "COLUMNS": "200"},
        )


@pytest.fixture
def gitlab(tmp_path: Path) -> Iterator[GitLab]:
    fleet = make_fleet(tmp_path)
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    inventory = repo / "envs" / "prod"
    with contextlib.ExitStack() as stack:
        agents = {h: stack.enter_context(running_agent(h, fleet.enroll(h))) for h in HOSTS}
        ports = {h: a.port for h, a in agents.items()}
        write_inventory(inventory, ports, OLD_VARS)
        first = commit(repo, "first")
        write_inventory(inventory, ports, NEW_VARS)
        second = commit(repo, "second: new proposals, psk epoch 2")
        yield GitLab(fleet, repo, inventory, agents, first, second)


def test_plan_at_a_revision_carries_its_commit(gitlab: GitLab, tmp_path: Path) -> None:
    emit = tmp_path / "plans"
    res = gitlab.vpnfleet(
        "plan", "-i", str(gitlab.inventory), "--rev", "HEAD~1", "--emit", str(emit), "-o", "json"
    )
    assert res.returncode == 0, res.stderr
    summary = {p["host"]: p for p in json.loads(res.stdout)["plans"]}
    assert summary["h1"]["peers"][0]["ike"] == ["aes256gcm16-prfsha384-x25519"]
    assert summary["h1"]["peers"][0]["auth"] == "psk:h1+h2/epoch-1"
    from vpnfleet.protos import plan_pb2

    plan = plan_pb2.NodePlan.FromString((emit / "h1.plan").read_bytes())
    assert plan.source_revision == gitlab.first

    head = gitlab.vpnfleet("plan", "-i", str(gitlab.inventory), "--rev", "main", "--emit",
                           str(emit), "-o", "json")  # fmt: skip
    assert head.returncode == 0, head.stderr
    assert plan_pb2.NodePlan.FromString((emit / "h1.plan").read_bytes()).source_revision == (
        gitlab.second
    )


def test_apply_a_revision_then_status_against_revisions(gitlab: GitLab) -> None:
    inv = str(gitlab.inventory)
    res = gitlab.vpnfleet("apply", "-i", inv, "--rev", gitlab.first[:10], "-o", "json")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["counts"]["changed"] == 3

    def states(rev: str) -> dict[str, str]:
        out = gitlab.vpnfleet("status", "-i", inv, "--rev", rev, "-o", "json")
        return {h["host"]: h["state"] for h in status_document(out)["hosts"]}

    assert set(states(gitlab.first).values()) == {"in sync"}
    assert set(states(gitlab.second).values()) == {"drift"}

    dry = gitlab.vpnfleet("plan", "-i", inv, "--rev", "HEAD")
    assert dry.returncode == 0, dry.stderr
    assert "~ peer h2" in dry.stdout
    # A dry run changed nothing.
    assert set(states(gitlab.first).values()) == {"in sync"}


def test_diff_between_revisions(gitlab: GitLab) -> None:
    inv = str(gitlab.inventory)
    res = gitlab.vpnfleet("diff", "-i", inv, "--from", "HEAD~1", "--to", "HEAD")
    assert res.returncode == 0, res.stderr
    assert f"diff {gitlab.first[:12]} -> {gitlab.second[:12]}" in res.stdout
    assert "changed: [h1]" in res.stdout
    assert "~ peer h2: auth psk:h1+h2/epoch-1 -> epoch-2" in res.stdout
    assert "ike aes256gcm16-prfsha384-x25519 -> aes128-sha256-modp2048" in res.stdout

    js = gitlab.vpnfleet("diff", "-i", inv, "--from", gitlab.first, "--to", "main", "-o", "json")
    assert js.returncode == 0, js.stderr
    data = json.loads(js.stdout)
    assert (data["from"], data["to"]) == (gitlab.first, gitlab.second)
    assert [h["host"] for h in data["hosts"]] == list(HOSTS)
    h3 = {c["name"]: c for c in data["hosts"][2]["changes"]}
    assert h3["h1"]["details"][0] == "auth psk:h1+h3/epoch-1 -> epoch-2"

    same = gitlab.vpnfleet("diff", "-i", inv, "--from", "HEAD", "--to", "HEAD", "-o", "json")
    assert json.loads(same.stdout)["hosts"] == []
    # The agents were never contacted: none has a plan.
    status = gitlab.vpnfleet("status", "-i", inv, "-o", "json")
    assert {h["state"] for h in json.loads(status.stdout)["hosts"]} == {"no plan"}


def test_bad_revisions_are_clear_errors(gitlab: GitLab, tmp_path: Path) -> None:
    inv = str(gitlab.inventory)
    cases = {
        "unknown revision": (
            ["plan", "-i", inv, "--rev", "no-such-branch"],
            "unknown revision 'no-such-branch'",
        ),
        "path missing at revision": (
            ["plan", "-i", str(gitlab.repo / "envs" / "staging"), "--rev", "HEAD"],
            "envs/staging does not exist at revision HEAD",
        ),
        "not a repository": (
            ["apply", "-i", str(tmp_path / "elsewhere"), "--rev", "HEAD"],
            "is not inside a git repository",
        ),
        "diff unknown revision": (
            ["diff", "-i", inv, "--from", "HEAD~5", "--to", "HEAD"],
            "unknown revision 'HEAD~5'",
        ),
    }
    (tmp_path / "elsewhere").mkdir()
    for name, (args, expected) in cases.items():
        res = gitlab.vpnfleet(*args)
        assert res.returncode == 1, (name, res.stdout, res.stderr)
        assert expected in res.stderr, (name, res.stderr)
        assert "Traceback" not in res.stderr, name


def test_bad_inventory_at_a_revision_names_revision_and_file(gitlab: GitLab) -> None:
    (gitlab.inventory / "hosts.yaml").write_text("all:\n  hosts: [unclosed\n")
    bad = commit(gitlab.repo, "broken")
    res = gitlab.vpnfleet("apply", "-i", str(gitlab.inventory), "--rev", bad)
    assert res.returncode == 1, res.stdout + res.stderr
    assert f"{bad[:12]}:envs/prod/hosts.yaml:3:1: invalid YAML" in res.stderr, res.stderr
    status = gitlab.vpnfleet("status", "-i", str(gitlab.inventory), "--rev", "HEAD~1", "-o", "json")
    assert {h["state"] for h in json.loads(status.stdout)["hosts"]} == {"no plan"}


def test_rails_refuse_a_revision_unless_forced(gitlab: GitLab) -> None:
    # A policy discarding all TCP to the hosts' agents (127.0.0.1) cuts the controller off.
    topology = gitlab.inventory / "topology.yaml"
    topology.write_text(
        topology.read_text()
        + "policies:\n  - {name: lockdown, action: discard, local: 127.0.0.0/8, "
        "protocol: tcp, hosts: h2}\n"
    )
    commit(gitlab.repo, "lockdown")
    inv = str(gitlab.inventory)
    res = gitlab.vpnfleet("apply", "-i", inv, "--rev", "HEAD")
    assert res.returncode == 1, res.stdout + res.stderr
    assert "host h2: SPD entry 'policy:lockdown' would discard the controller↔agent gRPC path" in (
        res.stderr
    )
    assert "host h1" not in res.stderr and "Traceback" not in res.stderr
    status = gitlab.vpnfleet("status", "-i", inv, "--rev", "HEAD", "-o", "json")
    assert {h["state"] for h in json.loads(status.stdout)["hosts"]} == {"no plan"}

    # A bypass for the controller placed first makes the same plan safe.
    topology.write_text(
        topology.read_text().replace(
            "policies:\n",
            "policies:\n  - {name: mgmt, action: bypass, remote: 127.0.0.1/32, hosts: h2}\n",
        )
    )
    commit(gitlab.repo, "mgmt bypass first")
    ok = gitlab.vpnfleet(
        "plan", "-i", inv, "--rev", "HEAD", "--emit", str(gitlab.repo.parent / "p")
    )
    assert ok.returncode == 0, ok.stderr

    forced = gitlab.vpnfleet("apply", "-i", inv, "--rev", "HEAD~1", "--force")
    assert forced.returncode == 0, forced.stdout + forced.stderr
    assert "warning (--force)" in forced.stderr


def test_branch_head_fetches_from_the_remote(tmp_path: Path) -> None:
    from vpnfleet.controller.fleet.revisions import BranchHead, RevisionError, branch_head

    upstream = tmp_path / "upstream"
    upstream.mkdir()
    git(upstream, "init", "-q", "-b", "main")
    (upstream / "README").write_text("one\n")
    one = commit(upstream, "one")
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(upstream), str(clone))
    tracking = "refs/remotes/origin/main"
    assert branch_head(clone, "main") == BranchHead(tracking, one)

    (upstream / "README").write_text("two\n")
    two = commit(upstream, "two")
    behind = branch_head(clone, "main")
    assert behind == BranchHead(tracking, two, one, 0, 1)
    assert git(clone, "rev-parse", tracking) == two
    # The working tree and the local branch are left alone.
    assert (clone / "README").read_text() == "one\n"
    assert git(clone, "rev-parse", "refs/heads/main") == one
    # A local branch ahead of the remote one is named, not followed.
    git(clone, "merge", "-q", "--ff-only", tracking)
    (clone / "README").write_text("three\n")
    three = commit(clone, "three")
    ahead = branch_head(clone, "main")
    assert ahead == BranchHead(tracking, two, three, 1, 0)
    assert ahead.local_note().startswith(f"refs/heads/main at {three[:12]} is 1 commit(s) ahead")

    local = tmp_path / "local"
    local.mkdir()
    git(local, "init", "-q", "-b", "main")
    (local / "README").write_text("x\n")
    head = commit(local, "x")
    assert branch_head(local, "main") == BranchHead("refs/heads/main", head)
    with pytest.raises(RevisionError, match="no branch 'release' in "):
        branch_head(local, "release")


def test_apply_refuses_to_stage_from_plans_no_agent_runs(gitlab: GitLab) -> None:
    """The agents run the first commit's plans; HEAD is the second: `apply` of the working
    tree does not take HEAD to be in force, names the hosts and exits 1 unasked."""
    inv = str(gitlab.inventory)
    res = gitlab.vpnfleet("apply", "-i", inv, "--rev", gitlab.first)
    assert res.returncode == 0, res.stdout + res.stderr
    write_inventory(gitlab.inventory, {h: a.port for h, a in gitlab.agents.items()},
                    OLD_VARS + "dpd_delay: 45\n")  # fmt: skip
    refused = gitlab.vpnfleet("apply", "-i", inv, "--timeout", "5")
    assert refused.returncode == 1, refused.stdout + refused.stderr
    message = " ".join(refused.stderr.split())
    assert "cannot tell which plans are in force: h1 runs plan" in message, message
    assert f"the plan of none of the new plans, revision {gitlab.second[:12]}" in message
    assert "Give --rollback-rev REV naming the revision those hosts run" in message
    status = gitlab.vpnfleet("status", "-i", inv, "--rev", gitlab.first, "-o", "json")
    assert {h["state"] for h in json.loads(status.stdout)["hosts"]} == {"in sync"}
    # Named by the operator, the first commit's plans are taken as in force.
    named = gitlab.vpnfleet("apply", "-i", inv, "--rollback-rev", gitlab.first, "-o", "json")
    assert named.returncode == 0, named.stdout + named.stderr
    assert json.loads(named.stdout)["counts"]["changed"] == 3
