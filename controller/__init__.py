"""vpnfleet controller: inventory, planner, delivery, rotation, gitops, deploy, the lab."""
