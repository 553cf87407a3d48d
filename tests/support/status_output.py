"""Reading ``vpnfleet status -o json`` in tests: the document, checked against the exit
code the command gave (the bit mask of the fleet's conditions, see README)."""

from __future__ import annotations

import json
import subprocess
from typing import Any

DRIFT, UNREACHABLE, TUNNELS_DOWN, PLAN_ONLY = 2, 4, 8, 16


def status_document(
    res: subprocess.CompletedProcess[str], *, unreachable_ok: bool = False
) -> dict[str, Any]:
    """The JSON of a status run. Its exit code must be the document's own ``exit_code``
    (never 1, bad input), without the unreachable bit unless ``unreachable_ok``."""
    assert res.returncode != 1, res.stdout + res.stderr
    data: dict[str, Any] = json.loads(res.stdout)
    assert res.returncode == data["exit_code"], (res.returncode, data["conditions"], res.stderr)
    if not unreachable_ok:
        assert not res.returncode & UNREACHABLE, data
    return data
