"""The fleet as the commands see it: compiled from the inventory (at a git revision), checked
against the safety rails, and reached host by host in bounded, batched fan-out."""
