"""The agent's service as bootstrap drives it (controller/deploy/service.py and
run.settle_service), against a fake host whose systemctl answers as systemd does: the
unit is reloaded when it changed, enabled and started when it is not, restarted only
when something under it changed, left alone otherwise; --check runs nothing that
changes; failures name the command and where to look; the health wait gives up on
fake time and says whether systemd still runs the agent."""

from __future__ import annotations

import asyncio
import shlex
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pytest

from tests.support.canary_fakes import FakeClock
from vpnfleet.controller.deploy.install import AgentLayout
from vpnfleet.controller.deploy.run import settle_service
from vpnfleet.controller.deploy.service import (
    AgentTarget,
    ServiceError,
    remove_agent_service,
    restart_agent,
    start_agent,
    stop_agent,
    wait_agent_healthy,
)
from vpnfleet.controller.deploy.session import HostSession, RemoteResult
from vpnfleet.controller.statedir.pki import ensure_controller_cert, init_ca

LAYOUT = AgentLayout()
UNIT = "vpnfleet-agent.service"


@dataclass
class FakeHost:
    """A host's systemd as far as bootstrap asks it; records every command run as root."""

    active: bool = False
    enabled: bool = False
    needs_reload: bool = False
    unit_file: bool = True
    fail: str = ""  # a verb whose systemctl fails
    commands: list[str] = field(default_factory=list)

    async def run(self, command: str, *, privileged: bool = False) -> RemoteResult:
        assert privileged, command
        argv = shlex.split(command)
        if argv[0] == "test":
            return RemoteResult(0 if self.unit_file else 1, "", "")
        if argv[0] == "rm":
            self.commands.append(command)
            self.unit_file = False
            return RemoteResult(0, "", "")
        assert argv[0] == "systemctl", command
        verb = argv[1]
        if verb == "show":
            return RemoteResult(
                0,
                f"ActiveState={'active' if self.active else 'inactive'}\n"
                f"UnitFileState={'enabled' if self.enabled else 'disabled'}\n"
                f"NeedDaemonReload={'yes' if self.needs_reload else 'no'}\n",
                "",
            )
        self.commands.append(" ".join(argv[1:]))
        if verb == self.fail:
            return RemoteResult(1, "", f"Job for {UNIT} failed because of a timeout.\n")
        if verb == "daemon-reload":
            self.needs_reload = False
        elif verb in ("start", "restart"):
            self.active = True
        elif verb == "stop":
            self.active = False
        elif verb in ("enable", "disable"):
            self.enabled = verb == "enable"
        return RemoteResult(0, "", "")

    @property
    def session(self) -> HostSession:
        return cast(HostSession, self)


def settle(host: FakeHost, reasons: tuple[str, ...] = (), unit_changed: bool = False,
           check: bool = False) -> Any:  # fmt: skip
    return asyncio.run(settle_service(host.session, LAYOUT, reasons, unit_changed, check))


def test_a_new_unit_is_reloaded_enabled_and_started() -> None:
    host = FakeHost()
    done = settle(host, ("version", "certificates", "config", "unit"), unit_changed=True)
    assert host.commands == ["daemon-reload", f"enable {UNIT}", f"start {UNIT}"]
    assert [str(c) for c in done.changes] == [f"+ service {UNIT}: enabled; started"]
    assert done.running and done.summary == f"{UNIT} enabled and started"


def test_a_running_agent_is_left_alone_when_nothing_changed_under_it() -> None:
    host = FakeHost(active=True, enabled=True)
    done = settle(host)
    assert host.commands == []
    assert done.changes == () and done.running


def test_a_running_agent_restarts_for_what_changed_under_it() -> None:
    host = FakeHost(active=True, enabled=True)
    done = settle(host, ("certificates",))
    assert host.commands == [f"restart {UNIT}"]
    assert [str(c) for c in done.changes] == [
        f"~ service {UNIT}: restarted for its new certificates"
    ]


def test_a_unit_systemd_has_not_read_is_reloaded_even_if_this_run_did_not_write_it() -> None:
    host = FakeHost(active=False, enabled=True, needs_reload=True)
    settle(host)
    assert host.commands == ["daemon-reload", f"start {UNIT}"]
    host = FakeHost(active=True, enabled=True, needs_reload=True)
    done = settle(host)  # a running agent: it restarts to run the unit on disk
    assert host.commands == ["daemon-reload", f"restart {UNIT}"]
    assert [str(c) for c in done.changes] == [f"~ service {UNIT}: restarted for its new unit"]


def test_check_changes_nothing_and_says_what_would_happen() -> None:
    host = FakeHost(active=True, enabled=False)
    done = settle(host, ("config",), unit_changed=True, check=True)
    assert host.commands == []
    assert [str(c) for c in done.changes] == [
        f"~ service {UNIT}: enabled; restarted for its new config"
    ]
    assert not done.running
    assert done.summary == f"{UNIT} would be enabled and restarted for its new config"


def test_a_failing_systemctl_names_the_command_and_the_journal() -> None:
    host = FakeHost(fail="start")
    with pytest.raises(ServiceError) as exc:
        settle(host)
    assert str(exc.value) == (
        f"systemctl start {UNIT} failed: Job for {UNIT} failed because of a timeout.; "
        f"see `systemctl status {UNIT}` and `journalctl -u {UNIT}` there"
    )


def test_start_stop_restart_and_remove() -> None:
    host = FakeHost()
    asyncio.run(start_agent(host.session, LAYOUT))
    asyncio.run(restart_agent(host.session, LAYOUT))
    asyncio.run(stop_agent(host.session, LAYOUT))
    assert host.commands == [f"start {UNIT}", f"restart {UNIT}", f"stop {UNIT}"]
    host = FakeHost(active=True, enabled=True)
    assert asyncio.run(remove_agent_service(host.session, LAYOUT)) is True
    assert host.commands == [
        f"stop {UNIT}",
        f"disable {UNIT}",
        f"rm -f /etc/systemd/system/{UNIT}",
        "daemon-reload",
    ]
    assert not (host.active or host.enabled or host.unit_file)
    host.commands.clear()
    assert asyncio.run(remove_agent_service(host.session, LAYOUT)) is False
    assert host.commands == ["daemon-reload"]


def test_the_health_wait_gives_up_naming_the_endpoint_and_the_service(tmp_path: Path) -> None:
    init_ca(tmp_path)
    credentials = ensure_controller_cert(tmp_path)
    with socket.socket() as closed:  # a port nothing listens on
        closed.bind(("127.0.0.1", 0))
        endpoint = f"127.0.0.1:{closed.getsockname()[1]}"
    clock = FakeClock()
    host = FakeHost(active=False)
    with pytest.raises(ServiceError) as exc:
        asyncio.run(
            wait_agent_healthy(
                host.session, LAYOUT, AgentTarget("a1", endpoint), credentials, 3.0,
                clock.clock(),
            )
        )  # fmt: skip
    message = str(exc.value)
    assert message.startswith(
        f"the agent at {endpoint} did not answer the gRPC health check within 3s ("
    )
    assert message.endswith(
        f"); systemd says it is not running: see `systemctl status {UNIT}` and "
        f"`journalctl -u {UNIT}` there"
    )
    assert clock.t == 3.0  # polled every 0.5 s of (fake) time until the deadline
