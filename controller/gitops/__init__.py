"""``vpnfleet serve`` and ``vpnfleet diff``: follow a git branch, reconcile the fleet to it,
serve its HTTP endpoints, and compare plans between revisions."""
