"""Kernel parameters under ``/proc/sys`` of the network namespace the process runs in
(``net.*`` sysctls are per network namespace)."""

from __future__ import annotations

from pathlib import Path

PROC_SYS = Path("/proc/sys")


class Sysctl:
    """One sysctl by its dotted name (``net.ipv4.ip_forward``)."""

    def __init__(self, name: str, root: Path = PROC_SYS) -> None:
        self.name = name
        self.path = root.joinpath(*name.split("."))

    def read(self) -> str:
        return self.path.read_text().strip()

    def write(self, value: str) -> None:
        self.path.write_text(f"{value}\n")
