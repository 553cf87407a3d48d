"""The lab: an inventory turned into network namespaces on this machine, with real agents.

See :mod:`.layout` for the picture, :mod:`.record` for the state kept on disk,
:mod:`.supervisor` for the process that keeps the agents alive, and :mod:`.lifecycle`
for ``up`` / ``down`` / ``status`` / ``exec``.
"""

from .layout import LabError, LabLayout, plan_layout
from .lifecycle import (
    DEFAULT_NAME,
    DEFAULT_TIMEOUT,
    DownResult,
    LabHealth,
    LabStatus,
    UpResult,
    down,
    exec_argv,
    run_exec,
    status,
    up,
)
from .reach import ReachPair

__all__ = [
    "DEFAULT_NAME",
    "DEFAULT_TIMEOUT",
    "DownResult",
    "LabError",
    "LabHealth",
    "LabLayout",
    "LabStatus",
    "ReachPair",
    "UpResult",
    "down",
    "exec_argv",
    "plan_layout",
    "run_exec",
    "status",
    "up",
]
