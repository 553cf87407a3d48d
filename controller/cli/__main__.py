"""``python -m vpnfleet.controller.cli``."""

from . import main

main()
