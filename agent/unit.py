"""The agent's systemd service unit (``vpnfleet-agent unit``).

The unit runs exactly ``VENV/bin/vpnfleet-agent serve --config CONFIG`` (VENV is the
virtual environment the agent is installed in: ``/opt/vpnfleet/venv`` as ``vpnfleet
bootstrap`` makes it) as ``Type=notify``: the agent says
``READY=1`` once its gRPC server accepts connections (agent/io/notify.py), so
``systemctl start`` returns when the controller can reach it.

It runs as root but with a bounding set of three capabilities, which is all the data
plane uses: CAP_NET_ADMIN (TUN device, routes, policy rules, nftables, net sysctls),
CAP_NET_RAW (the raw ESP socket) and CAP_NET_BIND_SERVICE (UDP 500 and 4500). Without
CAP_DAC_OVERRIDE it can only write files root owns, and the file system is read-only
to it except its state directory, /run/vpnfleet-agent and the network sysctls.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from vpnfleet.protos.host_setup import UNIT_NAME

from .config import DEFAULT_STATE_DIR, AgentConfig

DEFAULT_VENV = Path("/opt/vpnfleet/venv")
DEFAULT_CONFIG = Path("/etc/vpnfleet/agent.yaml")
CAPABILITIES = ("CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_NET_BIND_SERVICE")
ADDRESS_FAMILIES = ("AF_INET", "AF_INET6", "AF_NETLINK", "AF_UNIX")
STATE_DIRECTORY = "vpnfleet-agent"
"""StateDirectory= (under /var/lib) and RuntimeDirectory= (under /run)."""
RESTART_SEC = 2
LIMIT_NOFILE = 65536


class UnitError(Exception):
    """The unit cannot be made as asked; the message says what to change."""


def agent_executable(venv: Path) -> Path:
    return venv / "bin" / "vpnfleet-agent"


@dataclass(frozen=True, slots=True)
class AgentUnit:
    venv: Path
    config_path: Path
    config: AgentConfig | None = None
    """The configuration the unit runs, when it exists already: its state dir (and key
    log, if any) become writable."""

    def __post_init__(self) -> None:
        for what, path in (("--venv", self.venv), ("--config", self.config_path)):
            if not path.is_absolute():
                raise UnitError(f"{what} {path} must be an absolute path (systemd needs one)")
            if any(c.isspace() or c in "\"'\\%$;" for c in str(path)):
                raise UnitError(
                    f"{what} {path}: a path with blanks, quotes, '%', '$', ';' or '\\' is "
                    "not written into a unit; install under a plain path"
                )

    @property
    def exec_start(self) -> str:
        return f"{agent_executable(self.venv)} serve --config {self.config_path}"

    def writable_paths(self) -> list[Path]:
        """What the agent writes besides /var/lib/vpnfleet-agent and /run/vpnfleet-agent."""
        paths: list[Path] = []
        state_dir = self.config.state_dir if self.config else DEFAULT_STATE_DIR
        if state_dir.resolve() != DEFAULT_STATE_DIR:
            paths.append(state_dir.resolve())
        if self.config is not None and self.config.keylog is not None:
            keylog_dir = self.config.keylog.resolve().parent
            if keylog_dir not in paths and keylog_dir != DEFAULT_STATE_DIR:
                paths.append(keylog_dir)
        return paths

    def render(self) -> str:
        caps = " ".join(CAPABILITIES)
        rw = " ".join(str(p) for p in [*self.writable_paths(), Path("/proc/sys/net")])
        return f"""\
# {UNIT_NAME}: the vpnfleet agent (gRPC for the controller, IKEv2/ESP data plane).
# Written by `vpnfleet-agent unit`; make it again rather than editing it.
# Runs {agent_executable(self.venv)} with the configuration {self.config_path}.
# The agent reports READY=1 once gRPC accepts connections (Type=notify).
# Capabilities: only {caps}
# (TUN device, routes, nftables; raw ESP; UDP 500 and 4500).

[Unit]
Description=vpnfleet agent: IPsec tunnels planned by the vpnfleet controller
Wants=network-online.target
After=network-online.target

[Service]
Type=notify
NotifyAccess=main
ExecStart={self.exec_start}
Restart=always
RestartSec={RESTART_SEC}
TimeoutStopSec=30
Environment=PYTHONDONTWRITEBYTECODE=1

CapabilityBoundingSet={caps}
AmbientCapabilities={caps}
NoNewPrivileges=yes

ProtectSystem=strict
ProtectHome=yes
PrivateTmp=yes
StateDirectory={STATE_DIRECTORY}
StateDirectoryMode=0700
RuntimeDirectory={STATE_DIRECTORY}
RuntimeDirectoryMode=0700
# Net sysctls (forwarding) stay writable; the rest of /proc/sys is read-only.
ProtectKernelTunables=yes
ReadWritePaths={rw}
UMask=0077

# The TUN device only: PrivateDevices= would hide /dev/net/tun.
DevicePolicy=closed
DeviceAllow=/dev/net/tun rw
RestrictAddressFamilies={" ".join(ADDRESS_FAMILIES)}
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
SystemCallArchitectures=native
SystemCallFilter=@system-service
LimitNOFILE={LIMIT_NOFILE}

[Install]
WantedBy=multi-user.target
"""
