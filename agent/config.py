"""The agent's configuration file (``vpnfleet-agent serve --config FILE``).

    name: a1                          # this host's name; plans for other names are refused
    listen: 0.0.0.0:50051             # host:port of the gRPC server (port 0: any free port)
    state_dir: /var/lib/vpnfleet-agent
    tls:                              # default: the files `vpnfleet-agent init` and
      cert: tls.pem                   # `install-certs` put in state_dir
      key: tls.key
      ca: ca.pem
    controller_identity: vpnfleet-controller   # CN/SAN the caller's certificate must carry
                                      # (beside the controller role, protos/identity.py)
    keylog: keys.log                  # debugging only: append every SA's keys (Wireshark
                                      # UAT lines) to this file; it holds secrets
    metrics_listen: 127.0.0.1:9477    # Prometheus metrics at http://HOST:PORT/metrics
                                      # (default: off)
    control_socket: agent.sock        # the local socket `vpnfleet-agent sas`, `initiate`,
                                      # `terminate` and `log` use (0600; default:
                                      # agent.sock in state_dir)
    data_plane: true                  # run the IKE/ESP engine (TUN, UDP 500/4500, routes,
                                      # kill switch); false: plan only. Default: on only
                                      # inside a named network namespace (the lab's)
    ike_listen: 0.0.0.0               # the address IKE (UDP 500/4500) and raw ESP bind to
    firewall_mark: 0x1045             # SO_MARK of the agent's own IKE/ESP (no 0x4000/0x8000:
                                      # kube-proxy's bits; see engine/host.py)
    routing_table: 4500               # the table of the routes into the TUN device
    ike_limits:                       # what initiators not yet authenticated may make
      half_open_per_source: 16        # the agent hold (defaults shown): half-open IKE
      half_open_per_peer: 128         # SAs per source address, per plan peer and in
      half_open_total: 256            # all; bytes of one message before IKE_AUTH, and
      preauth_message_bytes: 10000    # of every such fragment together
      preauth_fragment_bytes: 1048576

Relative paths are relative to the file's directory (tls paths: to state_dir).
Unknown keys are refused with a did-you-mean.
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from vpnfleet.protos.identity import CONTROLLER_NAME

from .engine.host import DEFAULT_OWN_MARK, KUBE_PROXY_MARK_BITS
from .engine.plan_routes import TUNNEL_TABLE
from .enroll import CA_CERT, TLS_CERT, TLS_KEY
from .ike.admission import ResponderLimits
from .ike.errors import LocalError

DEFAULT_LISTEN = "0.0.0.0:50051"
DEFAULT_STATE_DIR = Path("/var/lib/vpnfleet-agent")
CONTROL_SOCKET = "agent.sock"
"""The control socket's name in the state dir, unless the config names another."""

_TOP_KEYS = (
    "name",
    "listen",
    "state_dir",
    "tls",
    "controller_identity",
    "keylog",
    "metrics_listen",
    "ike_limits",
    "control_socket",
    "data_plane",
    "ike_listen",
    "firewall_mark",
    "routing_table",
)
_TLS_KEYS = ("cert", "key", "ca")
_LIMIT_KEYS = tuple(f.name for f in dataclasses.fields(ResponderLimits))


class ConfigError(Exception):
    """The configuration file is missing, not YAML, or wrong; the message says where."""


@dataclass(frozen=True, slots=True)
class TlsFiles:
    cert: Path
    key: Path
    ca: Path


@dataclass(frozen=True, slots=True)
class AgentConfig:
    name: str
    listen: str
    state_dir: Path
    tls: TlsFiles
    controller_identity: str
    keylog: Path | None = None
    """Debugging only: where the engine appends SA keys (see engine/keylog.py)."""
    metrics_listen: str = ""
    """host:port of the Prometheus endpoint (port 0: any free port); empty: off."""
    ike_limits: ResponderLimits = field(default_factory=ResponderLimits)
    """Caps on half-open IKE SAs and the fragments they hold before IKE_AUTH."""
    control_socket: Path = DEFAULT_STATE_DIR / CONTROL_SOCKET
    """The local control socket (agent/control.py)."""
    data_plane: bool | None = None
    """True: run the engine; False: plan only; None: decide as engine/host.py says."""
    ike_listen: str = "0.0.0.0"
    """The address the IKE/ESP sockets bind to."""
    firewall_mark: int = DEFAULT_OWN_MARK
    routing_table: int = TUNNEL_TABLE

    @classmethod
    def defaults(cls) -> AgentConfig:
        """The settings of an agent run without a config file (``run --plan``)."""
        return cls("", DEFAULT_LISTEN, DEFAULT_STATE_DIR, _tls(DEFAULT_STATE_DIR), CONTROLLER_NAME)


def _tls(state_dir: Path, cert: str = TLS_CERT, key: str = TLS_KEY, ca: str = CA_CERT) -> TlsFiles:
    return TlsFiles(cert=state_dir / cert, key=state_dir / key, ca=state_dir / ca)


def _unknown(where: str, key: object, known: tuple[str, ...]) -> str:
    hint = difflib.get_close_matches(str(key), known, n=1)
    suggestion = f" (did you mean {hint[0]!r}?)" if hint else ""
    return f"{where}: unknown key {key!r}{suggestion}; known keys: {', '.join(known)}"


def _text(where: str, data: dict[str, Any], key: str, default: str | None) -> str:
    value = data.get(key, default)
    if value is None:
        raise ConfigError(f"{where}: {key!r} is required")
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{where}: {key!r} must be a non-empty string, not {value!r}")
    return value.strip()


def check_listen(
    where: str, listen: str, key: str = "listen", example: str = DEFAULT_LISTEN
) -> str:
    host, sep, port = listen.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ConfigError(f"{where}: {key} {listen!r} must be host:port, e.g. {example}")
    return listen


def config_text(
    name: str, listen: str, state_dir: Path, controller_identity: str = CONTROLLER_NAME
) -> str:
    """The configuration file of an agent with these settings and its TLS files where
    ``init`` and ``install-certs`` put them (in ``state_dir``), as :func:`load_config`
    reads it. The data plane is on, said explicitly: this is a real host's agent."""
    where = "the agent configuration"
    if not name or any(c.isspace() for c in name):
        raise ConfigError(f"{where}: name {name!r} must be a host name without blanks")
    if not state_dir.is_absolute():
        raise ConfigError(f"{where}: state_dir {state_dir} must be an absolute path")
    data = {
        "name": name,
        "listen": check_listen(where, listen),
        "state_dir": str(state_dir),
        "controller_identity": controller_identity,
        "data_plane": True,
    }
    return yaml.safe_dump(data, sort_keys=False)


def load_config(path: Path) -> AgentConfig:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    return parse_config(text, path)


def parse_config(text: str, path: Path) -> AgentConfig:
    """The configuration ``text``, read as the file ``path`` (relative paths are
    relative to its directory)."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of settings, got {type(data).__name__}")
    where = str(path)
    for key in data:
        if key not in _TOP_KEYS:
            raise ConfigError(_unknown(where, key, _TOP_KEYS))
    base = path.parent
    name = _text(where, data, "name", None)
    listen = check_listen(where, str(data.get("listen", DEFAULT_LISTEN)))
    state_dir = base / _text(where, data, "state_dir", str(DEFAULT_STATE_DIR))
    identity = _text(where, data, "controller_identity", CONTROLLER_NAME)
    tls_data = data.get("tls") or {}
    if not isinstance(tls_data, dict):
        raise ConfigError(f"{where}: 'tls' must be a mapping with cert, key and ca")
    for key in tls_data:
        if key not in _TLS_KEYS:
            raise ConfigError(_unknown(f"{where}: tls", key, _TLS_KEYS))
    tls = _tls(
        state_dir,
        _text(f"{where}: tls", tls_data, "cert", TLS_CERT),
        _text(f"{where}: tls", tls_data, "key", TLS_KEY),
        _text(f"{where}: tls", tls_data, "ca", CA_CERT),
    )
    keylog = base / _text(where, data, "keylog", None) if data.get("keylog") is not None else None
    metrics = data.get("metrics_listen") or ""
    if metrics:
        metrics = check_listen(where, str(metrics), "metrics_listen", "127.0.0.1:9477")
    limits = _ike_limits(where, data.get("ike_limits"))
    control = (
        base / _text(where, data, "control_socket", None)
        if data.get("control_socket") is not None
        else state_dir / CONTROL_SOCKET
    )
    data_plane = data.get("data_plane")
    if data_plane is not None and not isinstance(data_plane, bool):
        raise ConfigError(f"{where}: 'data_plane' must be true or false, not {data_plane!r}")
    return AgentConfig(
        name,
        listen,
        state_dir,
        tls,
        identity,
        keylog,
        metrics,
        limits,
        control,
        data_plane,
        _ike_listen(where, data.get("ike_listen", "0.0.0.0")),
        _firewall_mark(where, data.get("firewall_mark", DEFAULT_OWN_MARK)),
        _routing_table(where, data.get("routing_table", TUNNEL_TABLE)),
    )


def _number(where: str, key: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ConfigError(f"{where}: {key!r} must be a number, not {value!r}")
    try:
        return value if isinstance(value, int) else int(value, 0)
    except ValueError:
        raise ConfigError(f"{where}: {key!r} must be a number, not {value!r}") from None


def _firewall_mark(where: str, value: object) -> int:
    mark = _number(where, "firewall_mark", value)
    if not 1 <= mark <= 0xFFFFFFFF:
        raise ConfigError(f"{where}: firewall_mark must be 0x1..0xffffffff, not {mark:#x}")
    if mark & KUBE_PROXY_MARK_BITS:
        raise ConfigError(
            f"{where}: firewall_mark {mark:#x} carries kube-proxy's masquerade (0x4000) or "
            f"drop (0x8000) bit, which would masquerade or drop the agent's own IKE and ESP; "
            f"choose a mark without them, e.g. the default {DEFAULT_OWN_MARK:#x}"
        )
    return mark


def _routing_table(where: str, value: object) -> int:
    table = _number(where, "routing_table", value)
    if not 1 <= table <= 0xFFFFFFFF or table in (253, 254, 255):
        raise ConfigError(
            f"{where}: routing_table must be 1..4294967295 and not one of the kernel's "
            f"own (253 default, 254 main, 255 local), not {table}"
        )
    return table


def _ike_listen(where: str, value: object) -> str:
    try:
        return str(ipaddress.ip_address(str(value)))
    except ValueError:
        raise ConfigError(
            f"{where}: ike_listen must be an IP address (0.0.0.0 for all), not {value!r}"
        ) from None


def _ike_limits(where: str, data: object) -> ResponderLimits:
    if data is None:
        return ResponderLimits()
    if not isinstance(data, dict):
        raise ConfigError(
            f"{where}: 'ike_limits' must be a mapping of {', '.join(_LIMIT_KEYS)}, not {data!r}"
        )
    for key in data:
        if key not in _LIMIT_KEYS:
            raise ConfigError(_unknown(f"{where}: ike_limits", key, _LIMIT_KEYS))
    try:
        return ResponderLimits(**data)
    except LocalError as exc:
        raise ConfigError(f"{where}: ike_limits: {exc}") from None
