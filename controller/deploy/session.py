"""One SSH connection to one host: connect with its settings and host-key policy, run
commands (through sudo where they need root)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .connection import ConnectionSettings, UnreachableError
from .hostkeys import (
    HostKeyError,
    HostKeyPolicy,
    Trust,
    Verdict,
    changed_key_message,
    describe_key,
    trusted_lists,
    unknown_host_message,
)
from .sshlib import asyncssh


@dataclass(frozen=True, slots=True)
class RemoteResult:
    exit_status: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.exit_status == 0

    def error_line(self, program: str = "") -> str:
        """The line that says what went wrong: the first ``program:`` line, else the last
        line of stderr (sshd may put its own notes before a command's output)."""
        lines = [ln.strip() for ln in (self.stderr or self.stdout).splitlines() if ln.strip()]
        for line in lines:
            if program and line.startswith(f"{program}:"):
                return line
        return lines[-1] if lines else f"exit status {self.exit_status}"


class _KeyWitness(asyncssh.SSHClient):
    """Keeps the key the server offered when it is not one the known_hosts vouch for."""

    def __init__(self) -> None:
        self.offered: asyncssh.SSHKey | None = None

    def validate_host_public_key(
        self, host: str, addr: str, port: int, key: asyncssh.SSHKey
    ) -> bool:
        self.offered = key
        return False


class HostSession:
    def __init__(self, settings: ConnectionSettings, conn: asyncssh.SSHClientConnection) -> None:
        self.settings = settings
        self.conn = conn

    async def run(self, command: str, *, privileged: bool = False) -> RemoteResult:
        res = await self.conn.run(self.settings.wrap(command, privileged), check=False)
        return RemoteResult(
            exit_status=res.exit_status if res.exit_status is not None else 255,
            stdout=str(res.stdout or ""),
            stderr=str(res.stderr or ""),
        )

    async def write_files(self, directory: str, files: Mapping[str, bytes]) -> None:
        """Write ``files`` (name to content) into ``directory`` on the host over SFTP."""
        async with self.conn.start_sftp_client() as sftp:
            for name, data in files.items():
                async with sftp.open(f"{directory}/{name}", "wb") as f:
                    await f.write(data)

    async def upload(self, files: Sequence[Path], directory: str) -> None:
        """Copy ``files`` into ``directory`` on the host over SFTP (as the login user)."""
        async with self.conn.start_sftp_client() as sftp:
            await sftp.put([str(f) for f in files], directory)


@asynccontextmanager
async def open_session(
    settings: ConnectionSettings, policy: HostKeyPolicy, timeout: float
) -> AsyncIterator[HostSession]:
    """Connect to the host, checking its key; raise :class:`UnreachableError` (or its
    :class:`HostKeyError` case, with what to do) when that fails."""
    trust = policy.trust(settings.address, settings.port)
    witness = _KeyWitness()
    accept_any = trust.verdict is Verdict.UNKNOWN and policy.accept_new
    options: dict[str, Any] = {
        "port": settings.port,
        "known_hosts": None if accept_any else trusted_lists(trust),
        "client_factory": lambda: witness,
        "connect_timeout": timeout,
        "login_timeout": timeout,
    }
    if settings.user:  # else the local user name, as ssh (asyncssh refuses None)
        options["username"] = settings.user
    if settings.key_file is not None:
        options["client_keys"] = [str(settings.key_file)]
    try:
        conn = await asyncssh.connect(settings.address, **options)
    except asyncssh.HostKeyNotVerifiable:
        raise HostKeyError(_refusal(policy, trust, witness)) from None
    except asyncssh.PermissionDenied as exc:
        who = settings.user or "the local user name"
        raise UnreachableError(
            f"{settings.describe()}: authentication as {who} failed ({exc.reason}): check "
            "ansible_user and ansible_ssh_private_key_file"
        ) from None
    except TimeoutError:
        raise UnreachableError(
            f"{settings.describe()}: no answer within {timeout:g}s (check ansible_host, "
            "ansible_port and that sshd runs there)"
        ) from None
    except (OSError, asyncssh.Error) as exc:
        raise UnreachableError(f"{settings.describe()}: {_reason(exc)}") from None
    try:
        if accept_any:
            key = conn.get_server_host_key()
            if key is not None:
                policy.record(trust, key)
        yield HostSession(settings, conn)
    finally:
        conn.close()
        await conn.wait_closed()


def _refusal(policy: HostKeyPolicy, trust: Trust, witness: _KeyWitness) -> str:
    offered = describe_key(witness.offered)
    if trust.verdict is Verdict.KNOWN:
        return changed_key_message(policy, trust, offered)
    return unknown_host_message(policy, trust, offered)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, asyncssh.Error):
        return exc.reason or type(exc).__name__
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__
