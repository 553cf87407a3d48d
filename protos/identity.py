"""What makes a certificate the controller's, shared by the controller and the agent.

A name alone cannot do it: agent certificates carry their host's name, and any host name
the fleet CA signs could be chosen to look like the controller's. The controller's TLS
client certificate therefore carries an ExtendedKeyUsage purpose of its own,
:data:`CONTROLLER_ROLE_OID`, which the fleet CA never puts in an agent certificate; the
agent accepts Agent-service calls only from a certificate holding it (and naming the
controller). The name stays reserved all the same (:func:`is_controller_name`): no host
of an inventory and no agent certificate may bear it, in any letter case, since TLS
compares names without case.

The OID is under the ``2.25`` arc (ITU-T X.667 / RFC 4122 section 4.1.4: a UUID written as
one decimal integer), so it needs no registration and collides with no one's.
"""

from __future__ import annotations

CONTROLLER_NAME = "vpnfleet-controller"
"""CN and DNS SAN of the controller's TLS client certificate."""

CONTROLLER_ROLE_UUID = "2183bd63-3b41-400d-853d-da7308065fb5"
CONTROLLER_ROLE_OID = "2.25.44548555986711963541640632534573670325"
"""ExtendedKeyUsage purpose of the controller's certificate: ``2.25.`` followed by
:data:`CONTROLLER_ROLE_UUID` as a decimal integer."""


def is_controller_name(name: str) -> bool:
    """True when ``name`` is the controller's, in any letter case (DNS names and TLS
    name checks ignore case, RFC 4343)."""
    return name.lower() == CONTROLLER_NAME.lower()
