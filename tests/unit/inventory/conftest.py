"""Small inventories written into tmp_path, one file per key of a dict."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

MakeInventory = Callable[[dict[str, str]], Path]


@pytest.fixture
def make_inventory(tmp_path: Path) -> MakeInventory:
    """Write ``{relative path: YAML text}`` under tmp_path/inv and return that directory."""

    def make(files: dict[str, str]) -> Path:
        root = tmp_path / "inv"
        for name, text in files.items():
            path = root / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
        return root

    return make
