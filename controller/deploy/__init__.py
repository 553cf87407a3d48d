"""Putting vpnfleet on hosts and taking it off: SSH bootstrap, join tokens, upgrade, decommission.

Over SSH, from the inventory's Ansible connection variables: ``connection`` maps the
variables to settings, ``hostkeys`` checks host keys against known_hosts, ``session``
connects and runs commands, ``prerequisites`` says what a host lacks, and ``run`` fans out
across the selected hosts. For a host the controller cannot reach, ``join`` makes
single-use tokens and ``join_server`` is the service that redeems them.
"""
