"""Credentials moved hitlessly: PSK epochs, certificates and the fleet CA, and renewal
of agents' certificates before they expire."""
