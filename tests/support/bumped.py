"""Other versions of vpnfleet, side by side with the one under test, built offline.

:func:`build_version` copies this source tree into a temporary directory, sets another
version in the copy's pyproject.toml (and applies an optional patch to the copy), and
builds its wheel with pip, no index and no network (controller/deploy/wheels.py's
builder). :func:`make_venv` installs such a wheel into a new venv together with the
dependencies this interpreter runs, packed back into wheels, and pip from its wheel:
the same way bootstrap installs the agent on a host.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from vpnfleet.controller.deploy.wheels import (
    INSTALLER,
    SOURCE_PARTS,
    build_own_wheel,
    dependencies,
    repack,
    source_tree,
    wheel_requires,
)

_VERSION_LINE = re.compile(r'^version = "[^"]*"$', re.MULTILINE)

Patch = Callable[[Path], None]
"""Changes a copy of the source tree (its root given) before the wheel is built."""


def build_version(version: str, out: Path, patch: Patch | None = None) -> Path:
    """vpnfleet's wheel at ``version``, from a patched copy of this tree, in ``out``."""
    root = source_tree()
    assert root is not None, "the tests run from a source checkout (editable install)"
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="vpnfleet-bumped-") as tmp:
        copy = Path(tmp)
        ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
        for part in SOURCE_PARTS:
            src = root / part
            if src.is_dir():
                shutil.copytree(src, copy / part, ignore=ignore)
            else:
                shutil.copy2(src, copy / part)
        pyproject = copy / "pyproject.toml"
        text, count = _VERSION_LINE.subn(f'version = "{version}"', pyproject.read_text())
        assert count == 1, "pyproject.toml has one version line"
        pyproject.write_text(text)
        if patch is not None:
            patch(copy)
        built = Path(tmp) / "dist"
        built.mkdir()
        wheel = build_own_wheel(copy, built)
        return Path(shutil.copy2(wheel, out / wheel.name))


def dependency_wheels(wheel: Path, out: Path) -> Path:
    """Every dependency of ``wheel`` and pip, packed from this interpreter's installs."""
    out.mkdir(parents=True, exist_ok=True)
    for dist in dependencies([*wheel_requires(wheel), INSTALLER]):
        repack(dist, out)
    return out


@dataclass(frozen=True)
class Venv:
    root: Path
    version: str

    @property
    def python(self) -> Path:
        return self.root / "bin" / "python"

    def controller(self) -> list[str]:
        return [str(self.python), "-I", "-m", "vpnfleet.controller.cli"]

    def agent(self) -> list[str]:
        return [str(self.python), "-I", "-m", "vpnfleet.agent.cli"]


def make_venv(root: Path, wheel: Path, deps: Path, version: str) -> Venv:
    """A venv at ``root`` holding vpnfleet from ``wheel``, its dependencies and pip."""
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(root)], check=True, timeout=120
    )
    pip = next(deps.glob("pip-*.whl"))
    res = subprocess.run(
        [
            str(root / "bin" / "python"),
            f"{pip}/pip",
            "install",
            "--quiet",
            "--no-index",
            "--no-cache-dir",
            "--disable-pip-version-check",
            "--find-links",
            str(deps),
            "--find-links",
            str(wheel.parent),
            f"vpnfleet=={version}",
            INSTALLER,  # as beside any controller: bootstrap ships it to the hosts
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    return Venv(root, version)
