"""The hosts of a rolling upgrade, reached over SSH (:class:`upgrade.AgentHosts`).

Each step opens a session with the host's Ansible connection variables, as bootstrap
does: read the version in PREFIX/venv; install the controller's wheels there (kept under
PREFIX/wheels/VERSION), restart the agent's service and wait until it answers gRPC
health over mutual TLS; or reinstall an older version from the wheels kept for it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass

from ..statedir.pki import TlsCredentials
from .connection import UnreachableError
from .hostkeys import HostKeyPolicy
from .install import AgentLayout, InstallError, install_agent, installed_version, reinstall_agent
from .prerequisites import check_prerequisites
from .run import HostPlan
from .service import AgentTarget, ServiceError, restart_agent, wait_agent_healthy
from .session import HostSession, open_session
from .sshlib import asyncssh
from .upgrade import HostStepError, HostUnreachable
from .wheels import WheelSet


@dataclass(frozen=True, slots=True)
class SshAgentHosts:
    plans: Mapping[str, HostPlan]
    endpoints: Mapping[str, str]  # host -> where the controller reaches its agent
    policy: HostKeyPolicy
    wheels: WheelSet
    credentials: TlsCredentials
    layout: AgentLayout
    timeout: float  # to connect and log in
    health_timeout: float  # for a restarted agent to answer gRPC health

    @asynccontextmanager
    async def _session(self, host: str) -> AsyncIterator[HostSession]:
        settings = self.plans[host].settings
        try:
            async with open_session(settings, self.policy, self.timeout) as session:
                yield session
        except UnreachableError as exc:
            raise HostUnreachable(str(exc)) from None
        except (asyncssh.Error, OSError) as exc:
            raise HostUnreachable(f"{settings.describe()}: connection lost: {exc}") from None
        except (InstallError, ServiceError) as exc:
            raise HostStepError(str(exc)) from None

    async def version(self, host: str) -> str | None:
        async with self._session(host) as session:
            return await installed_version(session, self.layout)

    async def upgrade(self, host: str) -> None:
        plan = self.plans[host]
        async with self._session(host) as session:
            report = await check_prerequisites(
                session, plan.settings, plan.agent_port, str(self.layout.venv)
            )
            if not report.ok or report.python is None:
                raise HostStepError("missing " + "; ".join(map(str, report.missing)))
            await install_agent(
                session, self.layout, self.wheels, report.python, report.machine, check=False
            )
            await self._restart(session, host)

    async def revert(self, host: str, version: str) -> None:
        async with self._session(host) as session:
            await reinstall_agent(session, self.layout, version)
            await self._restart(session, host)

    async def _restart(self, session: HostSession, host: str) -> None:
        await restart_agent(session, self.layout)
        await wait_agent_healthy(
            session,
            self.layout,
            AgentTarget(host, self.endpoints[host]),
            self.credentials,
            timeout=self.health_timeout,
        )
