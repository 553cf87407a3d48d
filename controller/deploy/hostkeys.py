"""Host-key checking against OpenSSH ``known_hosts`` files, as Ansible's host_key_checking.

A host is looked up by the name ssh would record for it: the address alone on port 22,
``[address]:port`` on any other port (an entry for port 22 does not vouch for another
port). A key that matches is trusted; a host with no entry is refused unless new hosts
are accepted (OpenSSH's ``StrictHostKeyChecking=accept-new``), and then its key is
appended to the user's file; a host whose entry holds other keys is always refused.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .connection import UnreachableError
from .sshlib import asyncssh

GLOBAL_KNOWN_HOSTS = Path("/etc/ssh/ssh_known_hosts")


def default_known_hosts() -> Path:
    return Path.home() / ".ssh" / "known_hosts"


def lookup_name(address: str, port: int) -> str:
    return address if port == 22 else f"[{address}]:{port}"


class Verdict(enum.Enum):
    KNOWN = "known"  # entries exist: the host must present one of their keys
    UNKNOWN = "unknown"  # no entry: refused, or recorded when accepting new hosts


@dataclass(frozen=True, slots=True)
class Trust:
    """What the known_hosts files say of one host."""

    name: str
    verdict: Verdict
    host_keys: tuple[asyncssh.SSHKey, ...] = ()
    ca_keys: tuple[asyncssh.SSHKey, ...] = ()
    revoked: tuple[asyncssh.SSHKey, ...] = ()


class HostKeyError(UnreachableError):
    """The host's key is not one the known_hosts files vouch for."""


@dataclass(frozen=True, slots=True)
class HostKeyPolicy:
    """Which files vouch for hosts and whether hosts with no entry are accepted."""

    files: tuple[Path, ...]  # the first is the user's file: new keys are written there
    accept_new: bool = False

    @classmethod
    def make(cls, known_hosts: Path | None, accept_new: bool) -> HostKeyPolicy:
        if known_hosts is not None:
            return cls((known_hosts,), accept_new)
        return cls((default_known_hosts(), GLOBAL_KNOWN_HOSTS), accept_new)

    @property
    def user_file(self) -> Path:
        return self.files[0]

    def trust(self, address: str, port: int) -> Trust:
        name = lookup_name(address, port)
        host_keys: list[asyncssh.SSHKey] = []
        ca_keys: list[asyncssh.SSHKey] = []
        revoked: list[asyncssh.SSHKey] = []
        for path in self.files:
            if not path.is_file():
                continue
            known = asyncssh.read_known_hosts(str(path))
            # The name already carries the port, so no port is passed: asyncssh would
            # otherwise fall back to port-less entries, which ssh does not.
            keys, cas, bad, *_ = known.match(name, "", None)
            host_keys.extend(keys)
            ca_keys.extend(cas)
            revoked.extend(bad)
        verdict = Verdict.KNOWN if host_keys or ca_keys else Verdict.UNKNOWN
        return Trust(name, verdict, tuple(host_keys), tuple(ca_keys), tuple(revoked))

    def record(self, trust: Trust, key: asyncssh.SSHKey) -> None:
        """Append ``key`` for a host accepted as new (OpenSSH's line format)."""
        path = self.user_file
        if not path.parent.exists():
            path.parent.mkdir(mode=0o700, parents=True)
        line = f"{trust.name} {key.export_public_key().decode().strip()}\n"
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        with os.fdopen(fd, "a") as f:
            f.write(line)


def describe_key(key: asyncssh.SSHKey | None) -> str:
    if key is None:
        return "its key"
    return f"{key.get_algorithm()} {key.get_fingerprint()}"


def unknown_host_message(policy: HostKeyPolicy, trust: Trust, offered: str) -> str:
    files = " or ".join(str(p) for p in policy.files)
    return (
        f"host key verification failed: {trust.name} is not in {files} (it offered "
        f"{offered}); check that fingerprint on the host (ssh-keygen -lf "
        f"/etc/ssh/ssh_host_*_key.pub) and add its key to {policy.user_file}, or run again "
        "with --accept-new-host-keys to record the keys of hosts not seen before"
    )


def changed_key_message(policy: HostKeyPolicy, trust: Trust, offered: str) -> str:
    return (
        f"host key verification failed: {trust.name} offered {offered}, which is not the "
        f"key known_hosts holds for it ({', '.join(str(p) for p in policy.files)}): the "
        "host was reinstalled or someone is in the middle; if the new key is right, remove "
        f"the old entry (ssh-keygen -R '{trust.name}' -f {policy.user_file}) and run again"
    )


def trusted_lists(
    trust: Trust,
) -> tuple[Sequence[asyncssh.SSHKey], Sequence[asyncssh.SSHKey], Sequence[asyncssh.SSHKey]]:
    """The ``known_hosts`` argument asyncssh takes for an already matched host."""
    return list(trust.host_keys), list(trust.ca_keys), list(trust.revoked)
