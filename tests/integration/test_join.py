"""Join tokens end to end on loopback: `vpnfleet token create`, the join service, and
`vpnfleet-agent join` as real processes; then the controller reaches the joined agent
over mTLS. Refusals (used, expired, revoked, another host, a look-alike service) are
each shown, with what the audit log recorded; expiry on the service's fake clock."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.agent_harness import Fleet, make_fleet, read_listening_port, serving_config
from vpnfleet.agent.config import load_config
from vpnfleet.controller.deploy.join import JoinAuthority, TokenState, TokenStore
from vpnfleet.controller.deploy.join_server import start_join_server
from vpnfleet.controller.statedir import pki
from vpnfleet.controller.statedir.audit import AuditLog
from vpnfleet.controller.transport.client import AgentClient

VPNFLEET = [sys.executable, "-m", "vpnfleet.controller.cli"]
AGENT = [sys.executable, "-m", "vpnfleet.agent.cli"]


def vpnfleet(state: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*VPNFLEET, "--state", str(state), *args], capture_output=True, text=True, timeout=60
    )


@dataclass
class Host:
    """A host's directories, none of which exist before it joins."""

    root: Path
    name: str

    @property
    def state_dir(self) -> Path:
        return self.root / self.name / "state"

    @property
    def config(self) -> Path:
        return self.root / self.name / "etc" / "agent.yaml"

    def join_args(self, controller: str, token: str, name: str | None, *extra: str) -> list[str]:
        return [
            *AGENT,
            "join",
            "--controller",
            controller,
            "--token",
            token,
            "--name",
            name or self.name,
            "--state-dir",
            str(self.state_dir),
            "--config",
            str(self.config),
            "--listen",
            "127.0.0.1:0",
            *extra,
        ]

    def untouched(self) -> bool:
        return not (self.root / self.name).exists()


async def agent_join(
    host: Host, controller: str, token: str, name: str | None = None, *extra: str
) -> tuple[int, str]:
    """Run `vpnfleet-agent join` without blocking the loop (the service may run in it)."""
    proc = await asyncio.create_subprocess_exec(
        *host.join_args(controller, token, name, *extra),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, (out + err).decode()


def joins(state: Path) -> list[tuple[str, str, tuple[str, ...], tuple[str, ...]]]:
    """(outcome, token id, hosts, errors) of the join rows of the audit log, oldest first."""
    entries = [e for e in reversed(AuditLog.in_state(state).recent()) if e.kind == "join"]
    return [(e.outcome, e.revision, e.hosts, e.errors) for e in entries]


@pytest.fixture
def fleet(tmp_path: Path) -> Fleet:
    return make_fleet(tmp_path / "fleet")


@contextlib.contextmanager
def join_server_process(state: Path, log: Path) -> Iterator[str]:
    with open(log, "ab") as err:
        proc = subprocess.Popen(
            [*VPNFLEET, "--state", str(state), "join-server", "--listen", "127.0.0.1:0"],
            stdout=subprocess.PIPE,
            stderr=err,
        )
    try:
        yield f"127.0.0.1:{read_listening_port(proc, log)}"
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()


async def test_join_then_the_controller_reaches_the_agent_and_reuse_is_refused(
    fleet: Fleet, tmp_path: Path
) -> None:
    state = fleet.controller_state
    created = vpnfleet(state, "token", "create", "--host", "a1", "--ttl", "10m", "-o", "json")
    assert created.returncode == 0, created.stderr
    made = json.loads(created.stdout)
    token = made["token"]
    assert made["host"] == "a1" and made["state"] == "valid" and "secret_sha256" not in made
    assert token.endswith("." + pki.ca_info(state).fingerprint)
    stored = (state / "join-tokens.json").read_text()
    assert token.split(".")[2] not in stored  # only the secret's hash is kept
    assert (state / "join-tokens.json").stat().st_mode & 0o777 == 0o600

    a1 = Host(tmp_path, "a1")
    with join_server_process(state, tmp_path / "join-server.log") as controller:
        units = tmp_path / "units"
        units.mkdir()
        rc, output = await agent_join(a1, controller, token, None, "--unit-dir", str(units))
        assert rc == 0, output
        assert "joined as a1" in output
        again = Host(tmp_path, "again")
        rc, output = await agent_join(again, controller, token, name="a1")
    assert rc == 1
    assert f"the controller refused the join: used: token {made['token_id']} was already used" in (
        output
    )
    assert again.untouched()
    assert (a1.state_dir / "tls.key").stat().st_mode & 0o777 == 0o600
    agent = Path(sys.prefix) / "bin" / "vpnfleet-agent"
    unit = (units / "vpnfleet-agent.service").read_text().splitlines()
    assert f"ExecStart={agent} serve --config {a1.config}" in unit
    assert load_config(a1.config).data_plane is True  # a real host's agent, said so

    with serving_config("a1", a1.config, a1.root / "a1") as agent:
        async with AgentClient("a1", agent.target, fleet.controller_tls()) as c:
            assert (await c.get_status()).host == "a1"

    listed = json.loads(vpnfleet(state, "token", "list", "-o", "json").stdout)
    assert [(t["token_id"], t["state"], t["used_by"]) for t in listed] == [
        (made["token_id"], "used", "127.0.0.1")
    ]
    audited = joins(state)
    assert [(o, tid, hosts) for o, tid, hosts, _ in audited] == [
        ("changed", made["token_id"], ("a1",)),
        ("refused", made["token_id"], ("a1",)),
    ]
    assert audited[1][3][0].startswith("used: ")


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class InProcess:
    authority: JoinAuthority
    clock: FakeClock
    controller: str

    def token(self, host: str = "a1", ttl: float = 600.0) -> str:
        ca = pki.ca_info(self.authority.state_root).fingerprint
        return str(self.authority.tokens.create(host, ttl, ca))


@contextlib.asynccontextmanager
async def join_service(state: Path) -> AsyncIterator[InProcess]:
    """The join service in this process, on a clock the test moves."""
    clock = FakeClock()
    authority = JoinAuthority(state, clock=clock)
    running = await start_join_server(authority, "127.0.0.1:0")
    try:
        yield InProcess(authority, clock, f"127.0.0.1:{running.port}")
    finally:
        await running.stop(0)


async def test_expired_token_is_refused_and_audited(fleet: Fleet, tmp_path: Path) -> None:
    state = fleet.controller_state
    async with join_service(state) as service:
        token = service.token(ttl=600)
        service.clock.now += 600
        a1 = Host(tmp_path, "a1")
        rc, output = await agent_join(a1, service.controller, token)
    assert rc == 1
    token_id = token.split(".")[1]
    assert f"refused the join: expired: token {token_id} expired at" in output
    assert a1.untouched()
    [(outcome, audited_id, hosts, errors)] = joins(state)
    assert (outcome, audited_id, hosts) == ("refused", token_id, ("a1",))
    assert errors[0].startswith("expired: ")


async def test_token_for_another_host_is_refused_and_stays_valid(
    fleet: Fleet, tmp_path: Path
) -> None:
    state = fleet.controller_state
    async with join_service(state) as service:
        token = service.token("a1")
        b1 = Host(tmp_path, "b1")
        rc, output = await agent_join(b1, service.controller, token)
        assert rc == 1
        assert "refused the join: wrong-host: " in output and "is for host 'a1', not 'b1'" in output
        assert b1.untouched()
        [record] = TokenStore(state, service.clock).list()
        assert record.state(service.clock.now) is TokenState.VALID
        rc, output = await agent_join(Host(tmp_path, "a1"), service.controller, token)
        assert rc == 0, output
    audited = joins(state)
    assert [(o, h) for o, _, h, _ in audited] == [("refused", ("b1",)), ("changed", ("a1",))]
    assert audited[0][3][0].startswith("wrong-host: ")


async def test_revoked_and_forged_tokens_are_refused_each_for_its_reason(
    fleet: Fleet, tmp_path: Path
) -> None:
    state = fleet.controller_state
    async with join_service(state) as service:
        revoked = service.token()
        service.authority.tokens.revoke(revoked.split(".")[1])
        good = service.token()
        prefix, token_id, secret, ca = good.split(".")
        forged = ".".join([prefix, token_id, "A" * 32, ca])
        unknown = ".".join([prefix, "0" * 16, secret, ca])
        codes = []
        for token in (revoked, forged, unknown):
            rc, output = await agent_join(Host(tmp_path, "a1"), service.controller, token)
            assert rc == 1
            codes.append(output.split("refused the join: ", 1)[1].split(":", 1)[0])
        assert Host(tmp_path, "a1").untouched()
    assert codes == ["revoked", "wrong-secret", "unknown-token"]
    assert [e[0].split(":", 1)[0] for *_, e in joins(state)] == codes


async def test_agent_refuses_a_join_service_of_another_ca(fleet: Fleet, tmp_path: Path) -> None:
    """A token of fleet A presented to the join service of fleet B: the agent finds no
    certificate with A's hash in B's chain and stops before sending anything."""
    other = make_fleet(tmp_path / "other")
    async with (
        join_service(fleet.controller_state) as ours,
        join_service(other.controller_state) as theirs,
    ):
        token = ours.token()
        a1 = Host(tmp_path, "a1")
        rc, output = await agent_join(a1, theirs.controller, token)
        assert rc == 1
        assert "is not vouched for by the CA of the token" in output
        assert "Nothing was sent" in output
        assert a1.untouched()
        assert joins(other.controller_state) == []  # the look-alike saw no request
        rc, output = await agent_join(a1, ours.controller, token)  # the token still works
        assert rc == 0, output
