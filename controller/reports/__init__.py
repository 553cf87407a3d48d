"""What the controller reports: per-host results of an operation and the fleet's observed status."""
