"""Fixtures the integration tests share."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

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
