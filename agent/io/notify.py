"""The service manager's readiness protocol (sd_notify), spoken without libsystemd.

A unit of ``Type=notify`` is started when its main process says ``READY=1``; systemd
passes the address to say it to in ``$NOTIFY_SOCKET``: a path of a unix datagram
socket, or a name in the abstract namespace written with a leading ``@`` (sd_notify(3)).
Each message is one datagram of newline-separated ``KEY=value`` lines.

Nothing here is fatal: an agent started by hand, or under a manager that does not
listen, keeps serving; a failed send is logged once per message.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping

log = logging.getLogger(__name__)

NOTIFY_SOCKET = "NOTIFY_SOCKET"


def _address(value: str) -> str | None:
    if value.startswith("@"):
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    return None


class Notifier:
    """Sends state changes to the service manager named by ``$NOTIFY_SOCKET``; does
    nothing when it names none."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        value = (os.environ if environ is None else environ).get(NOTIFY_SOCKET, "")
        self.address = _address(value) if value else None
        if value and self.address is None:
            log.warning(
                "%s=%r is neither a socket path nor an @abstract name: not notifying the "
                "service manager",
                NOTIFY_SOCKET,
                value,
            )

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, **fields: str) -> bool:
        """Send one message, e.g. ``send(READY="1", STATUS="serving")``; True when it
        was sent."""
        if self.address is None:
            return False
        message = "\n".join(f"{key}={value}" for key, value in fields.items()).encode()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.sendto(message, self.address)
        except OSError as exc:
            log.warning("cannot notify the service manager (%s): %s", NOTIFY_SOCKET, exc)
            return False
        return True

    def ready(self, status: str) -> bool:
        return self.send(READY="1", STATUS=status)

    def stopping(self, status: str) -> bool:
        return self.send(STOPPING="1", STATUS=status)
