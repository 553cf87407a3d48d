"""The controller's own state: its directory, the lock on it, the audit log and the fleet CA.

Nothing here imports any other part of the controller.
"""
