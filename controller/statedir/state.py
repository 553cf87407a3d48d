"""The controller's own small state directory.

Desired state lives in git and observed state in the agents; this directory holds only
what belongs to the controller itself:

    STATE/
      pki/                 fleet CA and the controller's certificate (controller.statedir.pki)
      secrets/psk-master   32 random bytes: the fleet master secret PSKs derive from
      generation           the last plan generation handed out (a counter)
      agent-addresses.json the address to reach an agent at, when not the inventory's
                           (``lab up`` writes it: a lab's agents answer on its
                           management subnet, see controller/lab/owner.py)

Every file is written 0600 inside a 0700 directory (vpnfleet.protos.files).
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from vpnfleet.protos.files import make_private_directory, write_atomically

ENV_STATE = "VPNFLEET_STATE"
AGENT_ADDRESSES = "agent-addresses.json"
RETIRED_HOSTS = "retired-hosts.json"


class StateError(Exception):
    """The state directory cannot be used (permissions, corrupt files)."""


def default_state_dir() -> Path:
    env = os.environ.get(ENV_STATE)
    if env:
        return Path(env)
    return Path.home() / ".vpnfleet"


@dataclass(frozen=True, slots=True)
class StateDir:
    root: Path

    @property
    def pki(self) -> Path:
        return self.root / "pki"

    @property
    def secrets(self) -> Path:
        return self.root / "secrets"

    def ensure(self) -> None:
        try:
            make_private_directory(self.root)
            make_private_directory(self.secrets)
        except OSError as exc:
            raise StateError(f"cannot use state directory {self.root}: {exc.strerror}") from None

    def master_secret(self) -> bytes:
        """The fleet master secret, made on first use."""
        path = self.secrets / "psk-master"
        if path.exists():
            data = path.read_bytes()
            if len(data) != 32:
                raise StateError(
                    f"{path} holds {len(data)} bytes, expected 32: restore it from backup; "
                    "a new secret would change every PSK of the fleet"
                )
            return data
        self.ensure()
        data = secrets.token_bytes(32)
        write_atomically(path, data)
        return data

    def current_generation(self) -> int:
        path = self.root / "generation"
        try:
            return int(path.read_text().strip() or 0)
        except FileNotFoundError:
            return 0
        except ValueError:
            raise StateError(f"{path} is not a number") from None

    def record_generation(self, generation: int) -> None:
        self.ensure()
        write_atomically(self.root / "generation", f"{generation}\n".encode())

    def agent_addresses(self) -> dict[str, str]:
        """Host -> the address of its agent, for hosts this controller reaches elsewhere
        than at their inventory address (the port stays the inventory's); empty when the
        file is absent."""
        path = self.root / AGENT_ADDRESSES
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise StateError(f"{path} cannot be read ({exc}): restore or delete it") from None
        if not isinstance(data, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in data.items()
        ):
            raise StateError(
                f"{path} is not a mapping of host names to addresses: restore or delete it"
            )
        return data

    def record_agent_addresses(self, addresses: dict[str, str]) -> None:
        self.ensure()
        text = json.dumps(dict(sorted(addresses.items())), indent=1) + "\n"
        write_atomically(self.root / AGENT_ADDRESSES, text.encode())

    def retired_hosts(self) -> dict[str, str]:
        """Host -> when it was decommissioned (ISO 8601 UTC): hosts no plan may name
        again (``vpnfleet decommission``); empty when the file is absent."""
        path = self.root / RETIRED_HOSTS
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise StateError(f"{path} cannot be read ({exc}): restore it from backup") from None
        if not isinstance(data, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in data.items()
        ):
            raise StateError(f"{path} is not a mapping of host names to times: restore it")
        return data

    def record_retired(self, host: str, when: str) -> None:
        """Add ``host`` to the retired hosts (kept: a host retired twice keeps its first time)."""
        retired = self.retired_hosts()
        retired.setdefault(host, when)
        self.ensure()
        text = json.dumps(dict(sorted(retired.items())), indent=1) + "\n"
        write_atomically(self.root / RETIRED_HOSTS, text.encode())
