"""Fixtures the integration tests share."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from tests.support.bumped import Patch, Venv, build_version, dependency_wheels, make_venv
from tests.support.lab import LabRun, lab_up, new_lab, removed_after, require_root
from tests.support.ssh_hosts import HostSpec, SshTestbed, ssh_testbed


@pytest.fixture
def mesh(tmp_path: Path) -> Iterator[tuple[LabRun, dict[str, Any]]]:
    require_root()
    lab = new_lab(tmp_path, "lab")
    with removed_after(lab):
        yield lab, lab_up(lab)


@pytest.fixture
def ssh_hosts(tmp_path: Path) -> Iterator[Callable[[Sequence[HostSpec]], SshTestbed]]:
    """Make SSH hosts in namespaces (see tests.support.ssh_hosts); removed after the test."""
    require_root()
    with ExitStack() as stack:

        def make(specs: Sequence[HostSpec]) -> SshTestbed:
            return stack.enter_context(ssh_testbed(tmp_path / "ssh", specs))

        yield make


@pytest.fixture(scope="session")
def other_version(
    tmp_path_factory: pytest.TempPathFactory,
) -> Callable[..., Venv]:
    """``other_version("0.2.0", patch=None)``: a venv holding vpnfleet at that version,
    built offline from a copy of this tree (see tests.support.bumped); one per version
    and patch name for the whole session."""
    root = tmp_path_factory.mktemp("versions")
    made: dict[tuple[str, str], Venv] = {}

    def make(version: str, patch: Patch | None = None, name: str = "") -> Venv:
        key = (version, name)
        if key not in made:
            slug = f"{version}-{name}" if name else version
            wheel = build_version(version, root / "wheels" / slug, patch)
            deps = root / "deps"
            if not deps.is_dir():
                dependency_wheels(wheel, deps)
            made[key] = make_venv(root / "venv" / slug, wheel, deps, version)
        return made[key]

    return make
