"""Install the agent on a host from the controller's wheels, with no index and no network.

The wheels go over SFTP into a temporary directory of the login user, then (as root)
into ``PREFIX/wheels/VERSION``; a venv ``PREFIX/venv`` is made with the host's Python
(``--without-pip``: Debian's python3 needs no python3-venv for that) and pip, run from
the shipped pip wheel, installs vpnfleet at the controller's version with
``--no-index``. A host whose venv already holds that version is left alone.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import PurePosixPath

from vpnfleet.protos.host_setup import UNIT_NAME

from ..reports.results import ChangeLine
from .prerequisites import Python
from .session import HostSession
from .wheels import PROJECT, WheelSet

DEFAULT_PREFIX = PurePosixPath("/opt/vpnfleet")
DEFAULT_CONFIG = PurePosixPath("/etc/vpnfleet/agent.yaml")
UNIT_DIR = PurePosixPath("/etc/systemd/system")  # where units of the local admin go
_VERSION = (
    "import importlib.metadata as m\n"
    "try:\n    print(m.version('vpnfleet'))\n"
    "except m.PackageNotFoundError:\n    pass\n"
)


class InstallError(Exception):
    """The agent could not be installed on the host (the message says why)."""


@dataclass(frozen=True, slots=True)
class AgentLayout:
    """Where bootstrap puts the agent on a host: its venv and wheels under ``prefix``,
    its configuration, and its systemd unit."""

    prefix: PurePosixPath = DEFAULT_PREFIX
    config: PurePosixPath = DEFAULT_CONFIG
    unit_dir: PurePosixPath = UNIT_DIR

    @property
    def venv(self) -> PurePosixPath:
        return self.prefix / "venv"

    @property
    def agent(self) -> PurePosixPath:
        """The vpnfleet-agent command of the installed agent."""
        return self.venv / "bin" / "vpnfleet-agent"

    @property
    def unit(self) -> str:
        return UNIT_NAME

    @property
    def unit_path(self) -> PurePosixPath:
        return self.unit_dir / UNIT_NAME

    @property
    def python(self) -> PurePosixPath:
        return self.venv / "bin" / "python"

    def wheels(self, version: str) -> PurePosixPath:
        return self.prefix / "wheels" / version


@dataclass(frozen=True, slots=True)
class InstallOutcome:
    changes: tuple[ChangeLine, ...]  # empty: the host already had this version
    summary: str


async def installed_version(session: HostSession, layout: AgentLayout) -> str | None:
    q = shlex.quote(str(layout.python))
    res = await session.run(
        f"if [ -x {q} ]; then {q} -c {shlex.quote(_VERSION)}; fi", privileged=True
    )
    if not res.ok:
        raise InstallError(f"cannot read the installed version: {res.error_line()}")
    return res.stdout.strip() or None


def compatible(wheels: WheelSet, python: Python, machine: str) -> str:
    """Why the host cannot use these wheels, or "" when it can."""
    assert python.version is not None
    if python.version[:2] != wheels.python:
        return (
            f"the host's {python.path} is Python {python.version[0]}.{python.version[1]} and "
            f"the controller ships wheels for its own Python {wheels.python[0]}."
            f"{wheels.python[1]}: point ansible_python_interpreter at a Python "
            f"{wheels.python[0]}.{wheels.python[1]} there, or run the controller on "
            f"{python.version[0]}.{python.version[1]}"
        )
    if machine != wheels.machine:
        return (
            f"the host is {machine or 'of an unknown machine type'} and the controller "
            f"{wheels.machine}: its wheels would not run there"
        )
    return ""


async def install_agent(
    session: HostSession,
    layout: AgentLayout,
    wheels: WheelSet,
    python: Python,
    machine: str,
    check: bool,
) -> InstallOutcome:
    current = await installed_version(session, layout)
    where = f"{PROJECT} {wheels.version} in {layout.venv}"
    if current == wheels.version:
        return InstallOutcome((), where)
    why = compatible(wheels, python, machine)
    if why:
        raise InstallError(why)
    change = ChangeLine(
        "agent",
        f"{PROJECT} {wheels.version}",
        "added" if current is None else "changed",
        (f"venv {layout.venv}",) + ((f"was {current}",) if current else ()),
    )
    if check:
        return InstallOutcome((change,), f"would install {where}")
    made = await session.run("mktemp -d /tmp/vpnfleet-bootstrap.XXXXXX")
    if not made.ok:
        raise InstallError(f"cannot make a temporary directory: {made.error_line()}")
    upload = made.stdout.strip()
    try:
        await session.upload(wheels.files, upload)
        res = await session.run(_install_script(layout, wheels, python, upload), privileged=True)
        if not res.ok:
            raise InstallError(f"installing {where} failed: {_tail(res.stderr or res.stdout)}")
    finally:
        await session.run(f"rm -rf {shlex.quote(upload)}")
    if await installed_version(session, layout) != wheels.version:
        raise InstallError(f"{layout.venv} does not hold {PROJECT} {wheels.version} after pip")
    return InstallOutcome((change,), f"installed {where}")


async def reinstall_agent(session: HostSession, layout: AgentLayout, version: str) -> None:
    """Put ``version`` back into the venv from the wheels kept for it under
    PREFIX/wheels/VERSION (and its dependencies as they were), with its own pip."""
    where = layout.wheels(version)
    q = shlex.quote
    script = "\n".join(
        [
            "set -e",
            "umask 022",
            f"cd {q(str(where))}",
            "set -- pip-*.whl",
            '[ -f "$1" ] || { echo "no pip wheel in $PWD" >&2; exit 1; }',
            f'{q(str(layout.python))} "$1/pip" install --quiet --no-index --find-links . '
            "--no-cache-dir --disable-pip-version-check --force-reinstall "
            f"{q(f'{PROJECT}=={version}')}",
        ]
    )
    res = await session.run(script, privileged=True)
    if not res.ok:
        raise InstallError(
            f"reinstalling {PROJECT} {version} from {where} failed: "
            f"{_tail(res.stderr or res.stdout)}"
        )
    if await installed_version(session, layout) != version:
        raise InstallError(f"{layout.venv} does not hold {PROJECT} {version} after pip")


def _install_script(layout: AgentLayout, wheels: WheelSet, python: Python, upload: str) -> str:
    q = shlex.quote
    target = layout.wheels(wheels.version)
    staging = f"{target}.new"
    pip = target / wheels.pip.name / "pip"
    return "\n".join(
        [
            "set -e",
            "umask 022",
            f"mkdir -p {q(str(target.parent))}",
            f"rm -rf {q(staging)}",
            f"mkdir {q(staging)}",
            f"cp {q(upload)}/*.whl {q(staging)}/",
            f"rm -rf {q(str(target))}",
            f"mv {q(staging)} {q(str(target))}",
            f"[ -x {q(str(layout.python))} ] || "
            f"{q(python.path)} -m venv --without-pip {q(str(layout.venv))}",
            f"{q(str(layout.python))} {q(str(pip))} install --quiet --no-index "
            f"--find-links {q(str(target))} --no-cache-dir --disable-pip-version-check "
            f"--upgrade --upgrade-strategy eager {q(f'{PROJECT}=={wheels.version}')}",
        ]
    )


def _tail(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return " / ".join(lines[-3:]) or "no output"
