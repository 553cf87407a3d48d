"""The agent's systemd service on a host, driven over SSH with ``systemctl``.

Every coroutine takes the host's :class:`HostSession` and the :class:`AgentLayout`
(which names the unit) and runs ``systemctl`` as root. A ``systemctl`` that fails raises
:class:`ServiceError` with what it said and where to look next. ``start`` and
``restart`` of a ``Type=notify`` unit return once the agent has said ``READY=1``, that
is once its gRPC server accepts connections; :func:`wait_agent_healthy` then asks it, as
the controller, over mutual TLS.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from ..delivery.health import Clock
from ..statedir.pki import TlsCredentials
from ..transport.client import AgentClient, AgentError
from .install import AgentLayout
from .session import HostSession, RemoteResult

HEALTH_TIMEOUT = 60.0
"""Seconds an agent gets, once started, to answer the gRPC health check."""
HEALTH_POLL = 0.5
SERVING = "SERVING"


class ServiceError(Exception):
    """systemctl failed on the host, or the agent did not become healthy."""


@dataclass(frozen=True, slots=True)
class ServiceState:
    """What systemd says of the unit."""

    active: bool  # ActiveState=active
    enabled: bool  # UnitFileState=enabled
    needs_reload: bool  # NeedDaemonReload=yes: the unit file changed since systemd read it


@dataclass(frozen=True, slots=True)
class AgentTarget:
    """Where the controller reaches a host's agent, and the name its certificate bears."""

    host: str
    endpoint: str  # address:agent_port


def _journal_hint(layout: AgentLayout) -> str:
    return f"see `systemctl status {layout.unit}` and `journalctl -u {layout.unit}` there"


async def _systemctl(session: HostSession, *args: str) -> RemoteResult:
    return await session.run(shlex.join(["systemctl", *args]), privileged=True)


async def _must(session: HostSession, layout: AgentLayout, verb: str, *args: str) -> None:
    res = await _systemctl(session, verb, *args)
    if not res.ok:
        raise ServiceError(
            f"systemctl {shlex.join([verb, *args])} failed: {res.error_line('systemctl')}; "
            f"{_journal_hint(layout)}"
        )


async def daemon_reload(session: HostSession, layout: AgentLayout) -> None:
    """Have systemd read the unit files again (after the unit was written or removed)."""
    await _must(session, layout, "daemon-reload")


async def service_state(session: HostSession, layout: AgentLayout) -> ServiceState:
    res = await _systemctl(
        session, "show", "--property=ActiveState,UnitFileState,NeedDaemonReload", layout.unit
    )
    if not res.ok:
        raise ServiceError(f"systemctl show {layout.unit} failed: {res.error_line('systemctl')}")
    props = dict(line.partition("=")[::2] for line in res.stdout.splitlines() if "=" in line)
    return ServiceState(
        active=props.get("ActiveState") == "active",
        enabled=props.get("UnitFileState") == "enabled",
        needs_reload=props.get("NeedDaemonReload") == "yes",
    )


async def enable_agent(session: HostSession, layout: AgentLayout) -> None:
    """Start the agent at boot (``WantedBy=multi-user.target``)."""
    await _must(session, layout, "enable", layout.unit)


async def start_agent(session: HostSession, layout: AgentLayout) -> None:
    """Start the agent; returns once it has reported READY=1."""
    await _must(session, layout, "start", layout.unit)


async def restart_agent(session: HostSession, layout: AgentLayout) -> None:
    """Stop the agent (SIGTERM, its kill switch stays) and start it again; returns once
    the new process has reported READY=1."""
    await _must(session, layout, "restart", layout.unit)


async def stop_agent(session: HostSession, layout: AgentLayout) -> None:
    await _must(session, layout, "stop", layout.unit)


async def remove_agent_service(session: HostSession, layout: AgentLayout) -> bool:
    """Stop and disable the agent, delete its unit and have systemd forget it; False
    when there was no unit file (then only a reload is done, for a unit deleted by a
    run that stopped half-way)."""
    q = shlex.quote(str(layout.unit_path))
    present = await session.run(f"test -e {q}", privileged=True)
    if present.ok:
        await stop_agent(session, layout)
        await _must(session, layout, "disable", layout.unit)
        removed = await session.run(f"rm -f {q}", privileged=True)
        if not removed.ok:
            raise ServiceError(f"cannot remove {layout.unit_path}: {removed.error_line()}")
    await daemon_reload(session, layout)
    return present.ok


async def wait_agent_healthy(
    session: HostSession,
    layout: AgentLayout,
    target: AgentTarget,
    credentials: TlsCredentials,
    timeout: float = HEALTH_TIMEOUT,
    clock: Clock | None = None,
) -> None:
    """Wait until the agent answers the gRPC health check with SERVING, asked as the
    controller over mutual TLS (its certificate must name ``target.host``); raise
    :class:`ServiceError` saying what it answered last, and whether systemd still runs
    it, when ``timeout`` passes first."""
    clock = clock or Clock()
    deadline = clock.now() + timeout
    last = "no answer yet"
    while True:
        call_timeout = max(0.5, min(5.0, deadline - clock.now()))
        try:
            async with AgentClient(
                target.host, target.endpoint, credentials, timeout=call_timeout
            ) as client:
                status = await client.health()
            if status == SERVING:
                return
            last = f"health is {status}"
        except AgentError as exc:
            last = exc.details
        if clock.now() >= deadline:
            break
        await clock.sleep(HEALTH_POLL)
    state = await service_state(session, layout)
    running = "runs" if state.active else "is not running"
    raise ServiceError(
        f"the agent at {target.endpoint} did not answer the gRPC health check within "
        f"{timeout:g}s ({last}); systemd says it {running}: {_journal_hint(layout)}"
    )
