"""Putting vpnfleet on hosts over SSH, from the inventory's Ansible connection variables.

``connection`` maps the variables to settings, ``hostkeys`` checks host keys against
known_hosts, ``session`` connects and runs commands, ``prerequisites`` says what a host
lacks, and ``run`` fans out across the selected hosts.
"""
