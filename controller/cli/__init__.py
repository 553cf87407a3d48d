"""The ``vpnfleet`` command: parse arguments, call controller modules, render.

Logic lives in controller.fleet.operations, controller.inventory, controller.statedir.pki,
controller.lab …; these modules only turn options into calls and results into text or JSON. Each
subcommand module registers its commands on :data:`main` when imported.
"""

from . import admin, bootstrap, decommission, fleet, gitops, join, lab, renew, rotate, upgrade
from .root import main

__all__ = [
    "admin",
    "bootstrap",
    "decommission",
    "fleet",
    "gitops",
    "join",
    "lab",
    "main",
    "renew",
    "rotate",
    "upgrade",
]
