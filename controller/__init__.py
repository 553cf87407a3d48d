"""vpnfleet controller: inventory, planner, rollout, status."""
