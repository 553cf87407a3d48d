"""The agent's version: the installed package's, as status, metrics and --version say."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version


def agent_version() -> str:
    try:
        return version("vpnfleet")
    except PackageNotFoundError:
        return "unknown"
