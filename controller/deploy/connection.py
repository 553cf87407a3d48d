"""How to reach a host over SSH, from Ansible's connection variables.

The variables are read as ansible-core 2.17's ``ssh`` connection plugin reads them, each
option from a list of names where a later name wins over an earlier one:

- address: the inventory name, ``ansible_host``, ``ansible_ssh_host``;
- port: ``ansible_port``, ``ansible_ssh_port`` (default 22);
- user: ``ansible_user``, ``ansible_ssh_user`` (default: the local user, as ssh does);
- key: ``ansible_private_key_file``, ``ansible_ssh_private_key_file`` (``~`` expanded);
- ``ansible_become`` (Ansible's booleans: yes/no, true/false, on/off, 1/0 …),
  ``ansible_become_user`` (default root), ``ansible_become_method`` (sudo only, run
  ``sudo -n``: a become password is never asked for);
- ``ansible_python_interpreter`` (unset or ``auto*``: discovered on the host).

This module is pure: it maps variables to :class:`ConnectionSettings` and raises
:class:`ConnectionVarError` naming the host, the variable and what is wrong.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..inventory import VaultText

ADDRESS_VARS = ("ansible_host", "ansible_ssh_host")
PORT_VARS = ("ansible_port", "ansible_ssh_port")
USER_VARS = ("ansible_user", "ansible_ssh_user")
KEY_VARS = ("ansible_private_key_file", "ansible_ssh_private_key_file")
BECOME = "ansible_become"
BECOME_USER = "ansible_become_user"
BECOME_METHOD = "ansible_become_method"
PYTHON = "ansible_python_interpreter"
CONNECTION = "ansible_connection"
SSH_CONNECTIONS = ("ssh", "smart", "paramiko", "paramiko_ssh")
# OpenSSH command-line arguments: there is no ssh command line to add them to.
OPENSSH_ARGS_VARS = ("ansible_ssh_args", "ansible_ssh_common_args", "ansible_ssh_extra_args")
DEFAULT_PORT = 22
DISCOVER = ("auto", "auto_silent", "auto_legacy", "auto_legacy_silent")

# ansible.module_utils.parsing.convert_bool
_TRUE = frozenset({"y", "yes", "on", "1", "true", "t"})
_FALSE = frozenset({"n", "no", "off", "0", "false", "f"})


class ConnectionVarError(ValueError):
    """A connection variable of a host vpnfleet cannot use as written."""


class UnreachableError(Exception):
    """The host could not be reached, or would not let us in, over SSH."""


@dataclass(frozen=True, slots=True)
class ConnectionSettings:
    host: str  # inventory name
    address: str
    port: int = DEFAULT_PORT
    user: str | None = None  # None: the local user name, as ssh uses
    key_file: Path | None = None  # None: ssh's default keys and the ssh agent
    become: bool = False
    become_user: str = "root"
    python: str | None = None  # None: discover on the host
    ignored: tuple[str, ...] = ()  # variables set that bootstrap does not use (with why)

    def wrap(self, command: str, privileged: bool) -> str:
        """``command`` as run on the host: through ``sudo -n`` when it needs root and
        the host's variables say to become."""
        if not (privileged and self.become):
            return command
        return f"sudo -n -H -u {shlex.quote(self.become_user)} -- /bin/sh -c {shlex.quote(command)}"

    def describe(self) -> str:
        who = f"{self.user}@" if self.user else ""
        return f"{who}{self.address} port {self.port}"


def ansible_boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        word = value.strip().lower()
        if word in _TRUE:
            return True
        if word in _FALSE:
            return False
    raise ValueError(f"expected a boolean (yes/no, true/false, on/off, 1/0), got {value!r}")


def _last(vars: Mapping[str, Any], names: tuple[str, ...]) -> tuple[str, Any] | None:
    found = None
    for name in names:
        if name in vars and vars[name] is not None:
            found = (name, vars[name])
    return found


def _text(host: str, name: str, value: Any) -> str:
    if isinstance(value, VaultText):
        raise ConnectionVarError(
            f"host {host}: {name} is vault-encrypted: pass --vault-password-file or "
            "--vault-key-file"
        )
    if not isinstance(value, str | int) or isinstance(value, bool):
        raise ConnectionVarError(f"host {host}: {name} must be text, got {value!r}")
    text = str(value).strip()
    if "{{" in text or "{%" in text:
        raise ConnectionVarError(
            f"host {host}: {name} is a Jinja2 template ({text!r}); vpnfleet reads variables "
            "as written and evaluates no templates: write the value itself"
        )
    if not text:
        raise ConnectionVarError(f"host {host}: {name} is empty")
    return text


def settings_for(host: str, vars: Mapping[str, Any], cwd: Path | None = None) -> ConnectionSettings:
    """The SSH settings of ``host`` from its resolved variables."""
    connection = vars.get(CONNECTION)
    if connection is not None and _text(host, CONNECTION, connection) not in SSH_CONNECTIONS:
        raise ConnectionVarError(
            f"host {host}: {CONNECTION} is {connection!r}; vpnfleet bootstrap connects "
            f"over SSH only ({', '.join(SSH_CONNECTIONS)})"
        )
    address = host
    if (found := _last(vars, ADDRESS_VARS)) is not None:
        address = _text(host, *found)

    port = DEFAULT_PORT
    if (found := _last(vars, PORT_VARS)) is not None:
        name, value = found
        try:
            port = int(_text(host, name, value))
        except ValueError:
            raise ConnectionVarError(
                f"host {host}: {name} must be a port number, got {value!r}"
            ) from None
        if not 1 <= port <= 65535:
            raise ConnectionVarError(f"host {host}: {name} {port} is not a port (1-65535)")

    user = None
    if (found := _last(vars, USER_VARS)) is not None:
        user = _text(host, *found)

    key_file = None
    if (found := _last(vars, KEY_VARS)) is not None:
        name, value = found
        key_file = Path(os.path.expanduser(_text(host, name, value)))
        if not key_file.is_absolute():
            key_file = (cwd or Path.cwd()) / key_file
        if not key_file.is_file():
            raise ConnectionVarError(f"host {host}: {name}: no such file {key_file}")

    become = False
    if vars.get(BECOME) is not None:
        try:
            become = ansible_boolean(vars[BECOME])
        except ValueError as exc:
            raise ConnectionVarError(f"host {host}: {BECOME}: {exc}") from None
    method = vars.get(BECOME_METHOD)
    if become and method is not None and _text(host, BECOME_METHOD, method) != "sudo":
        raise ConnectionVarError(
            f"host {host}: {BECOME_METHOD} is {method!r}; vpnfleet bootstrap becomes root "
            "with sudo only (sudo -n: give the user passwordless sudo)"
        )
    become_user = "root"
    if vars.get(BECOME_USER) is not None:
        become_user = _text(host, BECOME_USER, vars[BECOME_USER])

    python = None
    if vars.get(PYTHON) is not None:
        python = _text(host, PYTHON, vars[PYTHON])
        if python in DISCOVER:
            python = None

    ignored = tuple(
        f"{name} (OpenSSH command-line arguments; set what they say in ~/.ssh/config)"
        for name in OPENSSH_ARGS_VARS
        if vars.get(name) not in (None, "")
    )
    return ConnectionSettings(
        host=host,
        address=address,
        port=port,
        user=user,
        key_file=key_file,
        become=become,
        become_user=become_user,
        python=python,
        ignored=ignored,
    )
