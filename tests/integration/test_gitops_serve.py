"""`vpnfleet serve` following a branch of a temporary git repository, with real agents.

The serve process is the real CLI in a subprocess on 127.0.0.1 (any free port); agents are
real `vpnfleet-agent serve` processes. Every process is killed in teardown, also on failure.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.agent_harness import AgentProcess, Fleet, make_fleet, running_agent
from tests.support.status_output import status_document

CLI = [sys.executable, "-m", "vpnfleet.controller.cli"]
HOSTS = ("h1", "h2", "h3")
OLD_VARS = "ike_proposals: [aes256gcm16-prfsha384-x25519]\nesp_proposals: [aes256gcm16]\n"
# A change of no negotiated field (see controller.delivery.staging): pushed at once, not staged.
NEW_VARS = OLD_VARS + "dpd_delay: 45\n"
# A change both ends of every pair must agree on: staged.
NEW_PROPOSALS = "ike_proposals: [aes128-sha256-modp2048]\nesp_proposals: [aes128gcm16]\n"
INTERVAL = 1.0


def git(repo: Path, *args: str) -> str:
    res = subprocess.run(
        ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.org", *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return res.stdout.strip()


def commit(repo: Path, message: str) -> str:
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)
    return git(repo, "rev-parse", "HEAD")


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


def wait_for(what: str, check: Callable[[], Any], timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.1)


@dataclass
class Serve:
    proc: subprocess.Popen[bytes]
    url: str
    log_path: Path

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(self.url + path, timeout=10) as resp:
            body = resp.read()
            if path == "/metrics":
                return body.decode()
            return json.loads(body)

    def post(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, Any]:
        req = urllib.request.Request(self.url + path, data=body, headers=headers, method="POST")
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())

    def polls(self) -> int:
        """Branch polls made so far (``vpnfleet_polls_total``)."""
        for line in self.get("/metrics").splitlines():
            if line.startswith("vpnfleet_polls_total "):
                return int(float(line.split()[1]))
        raise AssertionError("no vpnfleet_polls_total in /metrics")

    def rollouts(self) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = self.get("/audit")["rollouts"]
        return rows

    def rollout_of(self, revision: str, kind: str = "rollout") -> dict[str, Any] | None:
        for r in self.rollouts():
            if r["revision"] == revision and r["kind"] == kind:
                return r
        return None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@dataclass
class GitOpsLab:
    fleet: Fleet
    repo: Path
    inventory: Path
    agents: dict[str, AgentProcess]
    first: str
    tmp: Path

    def vpnfleet(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*CLI, "--state", str(self.fleet.controller_state), *args],
            capture_output=True,
            text=True,
            timeout=120,
        )

    def agent_status(self, rev: str) -> dict[str, dict[str, Any]]:
        res = self.vpnfleet("status", "-i", str(self.inventory), "--rev", rev, "-o", "json")
        return {h["host"]: h for h in status_document(res)["hosts"]}

    def serve(
        self, *extra: str, interval: float = INTERVAL
    ) -> contextlib.AbstractContextManager[Serve]:
        return serve_process(self.fleet, self.inventory, self.tmp, *extra, interval=interval)


@contextlib.contextmanager
def serve_process(
    fleet: Fleet, inventory: Path, tmp: Path, *extra: str, interval: float = INTERVAL
) -> Iterator[Serve]:
    log_path = tmp / f"serve-{time.monotonic_ns()}.log"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [*CLI, "--state", str(fleet.controller_state), "serve", "-i", str(inventory),
             "--branch", "main", "--interval", str(interval), "--listen", "127.0.0.1:0", *extra],
            stdout=subprocess.PIPE,
            stderr=log,
        )  # fmt: skip
    try:
        url = _listening_url(proc, log_path)
        yield Serve(proc, url, log_path)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()


def secret_file(tmp: Path, secret: bytes) -> Path:
    path = tmp / f"secret-{time.monotonic_ns()}"
    path.write_bytes(secret + b"\n")
    path.chmod(0o600)
    return path


def _listening_url(proc: subprocess.Popen[bytes], log_path: Path) -> str:
    assert proc.stdout is not None
    deadline = time.monotonic() + 30
    buffer = b""
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout.fileno()], [], [], 0.1)
        if ready:
            chunk = os.read(proc.stdout.fileno(), 4096)
            if not chunk:
                break
            buffer += chunk
            for line in buffer.decode(errors="replace").splitlines():
                if "listening on " in line:
                    return line.split("listening on ", 1)[1].strip()
        elif proc.poll() is not None:
            break
    raise AssertionError(f"serve did not start: {buffer!r} {log_path.read_text()!r}")


@pytest.fixture
def gitops(tmp_path: Path) -> Iterator[GitOpsLab]:
    fleet = make_fleet(tmp_path)
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    inventory = repo / "inventory"
    with contextlib.ExitStack() as stack:
        agents = {h: stack.enter_context(running_agent(h, fleet.enroll(h))) for h in HOSTS}
        write_inventory(inventory, {h: a.port for h, a in agents.items()}, OLD_VARS)
        first = commit(repo, "first")
        yield GitOpsLab(fleet, repo, inventory, agents, first, tmp_path)


def test_serve_rolls_out_new_commits_and_refuses_bad_ones(gitops: GitOpsLab) -> None:
    with gitops.serve() as serve:
        first = wait_for("the first rollout", lambda: serve.rollout_of(gitops.first))
        assert first["outcome"] == "changed", first
        assert sorted(first["hosts"]) == list(HOSTS)
        assert any(line.startswith("+ peer h2") for line in first["changes"]["h1"]), first
        assert {h["state"] for h in gitops.agent_status(gitops.first).values()} == {"in sync"}

        # A new commit is applied within the poll interval (plus the rollout itself).
        write_inventory(gitops.inventory, {h: a.port for h, a in gitops.agents.items()}, NEW_VARS)
        committed_at = time.time()
        second = commit(gitops.repo, "second: new DPD delay")
        row = wait_for("the second rollout", lambda: serve.rollout_of(second), timeout=20)
        assert row["outcome"] == "changed", row
        assert row["subject"] == "second: new DPD delay"
        assert row["finished_at"] - committed_at < INTERVAL + 5, row
        assert any("dpd" in line and "45" in line for line in row["changes"]["h1"]), row
        before = gitops.agent_status(second)
        assert {h["state"] for h in before.values()} == {"in sync"}

        status = wait_for(
            "status of the second revision",
            lambda: (
                (s := serve.get("/status"))["fleet"]
                and s["revision_in_force"] == second
                and s["fleet"]["all_in_sync"]
                and s
            ),
        )
        assert status["drifted"] == [] and status["head"] == second
        assert {h["host"] for h in status["fleet"]["hosts"]} == set(HOSTS)

        metrics = serve.get("/metrics")
        assert 'vpnfleet_rollouts_total{kind="rollout",outcome="changed"} 2.0' in metrics
        assert f'vpnfleet_revision_info{{revision="{second}"}} 1.0' in metrics
        assert 'vpnfleet_hosts{state="in_sync"} 3.0' in metrics

        # A bad commit: recorded failed with the error, nothing pushed, second in force.
        (gitops.inventory / "hosts.yaml").write_text("all:\n  hosts: [unclosed\n")
        bad = commit(gitops.repo, "broken inventory")
        failed = wait_for("the bad commit's record", lambda: serve.rollout_of(bad), timeout=20)
        assert failed["outcome"] == "failed" and failed["hosts"] == []
        assert any(f"{bad[:12]}:inventory/hosts.yaml:3:1" in e for e in failed["errors"]), failed
        status = serve.get("/status")
        assert status["revision_in_force"] == second and status["head"] == bad
        assert "refused" in status["last_error"]
        after = gitops.agent_status(second)
        for h in HOSTS:
            assert after[h]["state"] == "in sync"
            assert (
                after[h]["observed"]["plan_applied_at"] == before[h]["observed"]["plan_applied_at"]
            )
        assert 'vpnfleet_rollouts_total{kind="rollout",outcome="failed"} 1.0' in serve.get(
            "/metrics"
        )
        # The bad commit is not retried on every poll.
        polls = serve.polls()
        wait_for("two more polls", lambda: serve.polls() >= polls + 2)
        assert [r["revision"] for r in serve.rollouts()].count(bad) == 1

        # A valid inventory the safety rails refuse is not pushed either.
        write_inventory(gitops.inventory, {h: a.port for h, a in gitops.agents.items()}, NEW_VARS)
        with open(gitops.inventory / "topology.yaml", "a") as topology:
            topology.write(
                "policies:\n  - {name: lockdown, action: discard, local: 127.0.0.0/8, "
                "protocol: tcp, hosts: h3}\n"
            )
        cut = commit(gitops.repo, "lock h3 down")
        refused = wait_for("the refusal", lambda: serve.rollout_of(cut), timeout=20)
        assert refused["outcome"] == "failed", refused
        assert any(
            "host h3: SPD entry 'policy:lockdown' would discard the controller↔agent gRPC" in e
            for e in refused["errors"]
        ), refused
        assert serve.get("/status")["revision_in_force"] == second
        assert gitops.agent_status(second)["h3"]["state"] == "in sync"

        serve.proc.send_signal(signal.SIGTERM)
        assert serve.proc.wait(15) == 0, serve.log()
        assert "stopped" in serve.log()


def test_webhook_triggers_an_immediate_poll(gitops: GitOpsLab) -> None:
    secret = b"webhook secret shared with the git host"
    with gitops.serve(
        "--webhook-secret-file", str(secret_file(gitops.tmp, secret)), interval=3600
    ) as serve:
        wait_for("the first rollout", lambda: serve.rollout_of(gitops.first))
        write_inventory(gitops.inventory, {h: a.port for h, a in gitops.agents.items()}, NEW_VARS)
        second = commit(gitops.repo, "second")
        assert serve.polls() == 1  # the first; the next is an hour away
        assert serve.rollout_of(second) is None
        payload = json.dumps({"ref": "refs/heads/main", "after": second}).encode()
        with pytest.raises(urllib.error.HTTPError) as unsigned:
            serve.post("/webhook", payload, {})
        assert unsigned.value.code == 401
        signature = "sha256=" + hmac.new(secret, payload, hashlib.sha256).hexdigest()
        code, body = serve.post("/webhook", payload, {"X-Hub-Signature-256": signature})
        assert code == 202 and body == {"poll": "scheduled"}
        row = wait_for("the webhook's rollout", lambda: serve.rollout_of(second), timeout=15)
        assert row["outcome"] == "changed"
        with pytest.raises(urllib.error.HTTPError) as exc:
            serve.get("/nope")
        assert exc.value.code == 404


def test_drift_is_reported_and_corrected(gitops: GitOpsLab) -> None:
    write_inventory(gitops.inventory, {h: a.port for h, a in gitops.agents.items()}, NEW_VARS)
    second = commit(gitops.repo, "second")
    with gitops.serve() as serve:
        wait_for("the rollout", lambda: serve.rollout_of(second))
        # Someone applies an older revision to h2 by hand: drift.
        res = gitops.vpnfleet("apply", "-i", str(gitops.inventory), "--rev", gitops.first,
                              "--limit", "h2")  # fmt: skip
        assert res.returncode == 0, res.stderr
        status = wait_for("drift on h2", lambda: (s := serve.get("/status"))["drifted"] and s)
        assert status["drifted"] == ["h2"]
        states = {h["host"]: h["state"] for h in status["fleet"]["hosts"]}
        assert states == {"h1": "in sync", "h2": "drift", "h3": "in sync"}
        assert serve.rollout_of(second, kind="drift-correction") is None
        wait_for(
            "drift in the log",
            lambda: (
                f"drift: 1 host(s) differ from refs/heads/main {second[:12]}'s plans: h2 "
                in serve.log()
            ),
        )
        serve.proc.send_signal(signal.SIGTERM)
        assert serve.proc.wait(15) == 0, serve.log()

    with gitops.serve("--correct-drift") as serve:
        # The restarted controller keeps no state that can drift: it re-applies the head.
        wait_for("the rollout after restart", lambda: len(serve.rollouts()) >= 2)
        assert serve.rollouts()[0]["kind"] == "rollout"
        res = gitops.vpnfleet("apply", "-i", str(gitops.inventory), "--rev", gitops.first,
                              "--limit", "h3")  # fmt: skip
        assert res.returncode == 0, res.stderr
        row = wait_for(
            "the drift correction",
            lambda: serve.rollout_of(second, kind="drift-correction"),
            timeout=20,
        )
        assert row["hosts"] == ["h3"] and row["outcome"] == "changed", row
        assert {h["state"] for h in gitops.agent_status(second).values()} == {"in sync"}


def peak_rss_kib(pid: int) -> int:
    """The process's peak resident set (VmHWM): a body held even briefly shows in it."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmHWM in /proc/{pid}/status")


def test_a_negative_content_length_does_not_grow_the_serve_process(tmp_path: Path) -> None:
    # The serve process holds the fleet CA key; a webhook with `Content-Length: -1` and
    # a large body used to be read whole into it. No agents: the rollout only records
    # them unreachable.
    fleet = make_fleet(tmp_path)
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    inventory = repo / "inventory"
    write_inventory(inventory, dict.fromkeys(HOSTS, 9), OLD_VARS)
    first = commit(repo, "first")
    secret = secret_file(tmp_path, b"webhook secret")
    streamed = 256 << 20
    with serve_process(
        fleet, inventory, tmp_path, "--webhook-secret-file", str(secret), "--timeout", "2",
        interval=3600,
    ) as serve:  # fmt: skip
        wait_for("the first rollout", lambda: serve.rollout_of(first))
        before = peak_rss_kib(serve.proc.pid)
        port = int(serve.url.rsplit(":", 1)[1])
        sent = 0
        answer = b""
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            sock.sendall(
                b"POST /webhook HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: -1\r\n"
                b"X-Hub-Signature-256: sha256=" + b"0" * 64 + b"\r\n\r\n"
            )
            chunk = b"\0" * (1 << 20)
            with contextlib.suppress(OSError):  # refused early: the server closed on us
                while sent < streamed:
                    sock.sendall(chunk)
                    sent += len(chunk)
                sock.shutdown(socket.SHUT_WR)
            with contextlib.suppress(OSError):
                while data := sock.recv(65536):
                    answer += data
        after = peak_rss_kib(serve.proc.pid)
        grown_mib = (after - before) / 1024
        assert grown_mib < 16, (
            f"VmHWM grew {grown_mib:.0f} MiB ({before} -> {after} KiB) after "
            f"{sent >> 20} MiB sent; answer {answer[:60]!r}"
        )
        assert sent < streamed, "the server read the whole body instead of refusing it"
        assert serve.get("/status")["revision_in_force"] == first


def rows_of(serve: Serve, revision: str) -> list[dict[str, Any]]:
    return [r for r in serve.rollouts() if r["revision"] == revision and r["kind"] == "rollout"]


def log_lines_naming(serve: Serve, revision: str) -> list[str]:
    """The serve log's lines (not the indented continuation lines) naming ``revision``."""
    return [
        line
        for line in serve.log().splitlines()
        if revision[:12] in line and not line.startswith(" ")
    ]


def in_sync_with(gitops: GitOpsLab, revision: str) -> bool:
    return {h["state"] for h in gitops.agent_status(revision).values()} == {"in sync"}


def test_local_branch_ahead_is_named_and_not_rolled_back(gitops: GitOpsLab) -> None:
    ports = {h: a.port for h, a in gitops.agents.items()}
    upstream = gitops.tmp / "upstream.git"
    git(gitops.tmp, "init", "-q", "--bare", "-b", "main", str(upstream))
    git(gitops.repo, "remote", "add", "origin", str(upstream))
    git(gitops.repo, "push", "-q", "-u", "origin", "main")
    local = gitops.first
    for delay in (41, 42, 43, 44):  # four commits not pushed
        write_inventory(gitops.inventory, ports, OLD_VARS + f"dpd_delay: {delay}\n")
        local = commit(gitops.repo, f"dpd {delay}")
    res = gitops.vpnfleet("apply", "-i", str(gitops.inventory))
    assert res.returncode == 0, res.stdout + res.stderr
    assert in_sync_with(gitops, local)

    tracking = "refs/remotes/origin/main"
    with gitops.serve() as serve:
        refused = wait_for("the refusal", lambda: rows_of(serve, gitops.first), timeout=30)
        assert [r["outcome"] for r in refused] == ["refused"], refused
        assert any(
            f"rollback: {gitops.first[:12]} does not descend from the revision in force "
            f"{local[:12]}, it is older" in e
            for e in refused[0]["errors"]
        ), refused
        status = serve.get("/status")
        assert status["ref"] == tracking and status["head"] == gitops.first
        assert status["revision_in_force"] == local
        assert status["refused"].startswith(f"{tracking} {gitops.first[:12]} refused: rollback")
        assert status["local_branch"].startswith(
            f"refs/heads/main at {local[:12]} is 4 commit(s) ahead and 0 behind {tracking}"
        )
        log = serve.log()
        assert f"following {tracking} at {gitops.first[:12]}" in log
        assert f"in force on the agents: revision {local[:12]} (h1, h2, h3)" in log
        lines = log_lines_naming(serve, gitops.first)
        assert len(lines) >= 3 and all(tracking in line for line in lines), lines
        # Nothing was pushed: the agents still run the local branch's plans.
        assert in_sync_with(gitops, local)
        # Not retried on every poll.
        polls = serve.polls()
        wait_for("two more polls", lambda: serve.polls() >= polls + 2)
        assert len(rows_of(serve, gitops.first)) == 1

    with gitops.serve("--allow-rollback") as serve:
        row = wait_for(
            "the rollback",
            lambda: [r for r in rows_of(serve, gitops.first) if r["outcome"] != "refused"],
            timeout=30,
        )
        assert row[0]["outcome"] == "changed", row
        assert "pushed all the same (--allow-rollback)" in serve.log()
    assert in_sync_with(gitops, gitops.first)


def test_older_commit_is_refused_unless_rollback_allowed(gitops: GitOpsLab) -> None:
    ports = {h: a.port for h, a in gitops.agents.items()}
    with gitops.serve() as serve:
        wait_for("the first rollout", lambda: serve.rollout_of(gitops.first))
        write_inventory(gitops.inventory, ports, NEW_VARS)
        second = commit(gitops.repo, "second")
        wait_for("the second rollout", lambda: serve.rollout_of(second), timeout=20)
        # The branch is reset to the older commit (a force-push would do the same).
        git(gitops.repo, "reset", "-q", "--hard", gitops.first)
        refused = wait_for(
            "the refusal",
            lambda: [r for r in rows_of(serve, gitops.first) if r["outcome"] == "refused"],
            timeout=20,
        )
        assert any("does not descend from the revision in force" in e
                   for e in refused[0]["errors"]), refused  # fmt: skip
        status = serve.get("/status")
        assert status["revision_in_force"] == second and "--allow-rollback" in status["refused"]
        assert in_sync_with(gitops, second)
        serve.proc.send_signal(signal.SIGTERM)
        assert serve.proc.wait(15) == 0, serve.log()

    # Restarted, the serve process finds the revision in force from the agents (the
    # audit log names the last one rolled out) and still refuses without the flag.
    with gitops.serve() as serve:
        wait_for("the refusal after restart", lambda: rows_of(serve, gitops.first)[0]["id"]
                 > refused[0]["id"] and rows_of(serve, gitops.first))  # fmt: skip
        assert rows_of(serve, gitops.first)[0]["outcome"] == "refused"
        assert in_sync_with(gitops, second)
        serve.proc.send_signal(signal.SIGTERM)
        assert serve.proc.wait(15) == 0, serve.log()

    with gitops.serve("--allow-rollback") as serve:
        row = wait_for(
            "the rollback",
            lambda: (
                [r for r in rows_of(serve, gitops.first) if r["outcome"] == "changed"][:1]
                and rows_of(serve, gitops.first)[0]["outcome"] == "changed"
                and rows_of(serve, gitops.first)
            ),
            timeout=20,
        )
        assert row[0]["outcome"] == "changed"
    assert in_sync_with(gitops, gitops.first)


@contextlib.contextmanager
def silent_listener() -> Iterator[int]:
    """A TCP port that takes connections and never answers (an agent that hangs)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield sock.getsockname()[1]


def test_apply_while_serve_pushes_is_refused_naming_serve(tmp_path: Path) -> None:
    fleet = make_fleet(tmp_path)
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    inventory = repo / "inventory"
    with silent_listener() as port:
        write_inventory(inventory, dict.fromkeys(HOSTS, port), OLD_VARS)
        first = commit(repo, "first")
        with serve_process(fleet, inventory, tmp_path, "--timeout", "60") as serve:
            wait_for("the push", lambda: "pushing to 3 host(s)" in serve.log())
            res = subprocess.run(
                [*CLI, "--state", str(fleet.controller_state), "apply", "-i", str(inventory),
                 "--timeout", "2"],
                capture_output=True, text=True, timeout=60,
            )  # fmt: skip
            assert res.returncode == 1, res.stdout + res.stderr
            message = " ".join(res.stderr.split())
            assert f"the state directory is in use by pid {serve.proc.pid} (serve) since" in (
                message
            ), message
            assert serve.rollout_of(first) is None


def test_serve_skips_its_poll_while_another_command_holds_the_lock(gitops: GitOpsLab) -> None:
    from vpnfleet.controller.statedir.state import StateDir
    from vpnfleet.controller.statedir.state_lock import StateLock

    lock = StateLock(StateDir(gitops.fleet.controller_state), "rotate psk")
    with lock, gitops.serve() as serve:
        wait_for("a skipped poll", lambda: "poll skipped" in serve.log())
        line = next(x for x in serve.log().splitlines() if "poll skipped" in x)
        assert f"in use by pid {os.getpid()} (rotate psk) since" in line, line
        assert serve.rollouts() == []
        skipped = [x for x in serve.get("/metrics").splitlines()
                   if x.startswith("vpnfleet_polls_skipped_total ")]  # fmt: skip
        assert skipped and float(skipped[0].split()[1]) >= 1, skipped
        held = serve
    # Released: the next poll rolls out.
    with gitops.serve() as serve:
        wait_for("the rollout", lambda: serve.rollout_of(gitops.first))
    assert held.proc.returncode is not None
