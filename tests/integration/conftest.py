"""Fixtures the integration tests share."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.lab import LabRun, lab_up, new_lab, removed_after, require_root


@pytest.fixture
def mesh(tmp_path: Path) -> Iterator[tuple[LabRun, dict[str, Any]]]:
    require_root()
    lab = new_lab(tmp_path, "lab")
    with removed_after(lab):
        yield lab, lab_up(lab)
