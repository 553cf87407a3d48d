"""What each lab holds on this machine, and which state directory's lab it is.

A lab's name is its state directory's business: two state directories (two checkouts,
a test run beside a demo) may each have a lab ``demo``. What a lab makes on the machine
is machine-wide, so each running lab gets two things no other lab has:

- a *key*, which its namespaces and its one root-namespace link carry
  (``vf-<key>-<host>``, ``vf-<key>``): the lab's name when no other lab holds it, else
  the name with a number (``demo_2``);
- a *management subnet* from :data:`MGMT_POOL`, in the underlay's IP version: the
  controller's address on the root link and one address per agent (on the host's
  ``eth0``, or on its NAT router's ``wan``). The controller reaches the agents there,
  never at their inventory addresses, which stay inside the lab's own bridge: so labs of
  the same inventory run side by side, and the lab takes no route of this machine's.

``/run/vpnfleet-lab/<key>.json`` records them with the lab directory that owns them.
``lab up`` allocates both under a lock, after writing its lab record and before it
creates anything (so a crash leaves the record beside whatever was made); ``lab down``
releases them after everything else. It lives in /run like /run/netns: a reboot clears
both at once.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import json
import math
import shlex
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from vpnfleet.protos.files import write_atomically

from .layout import LAB_NAME_RE, IpNetwork, LabError
from .record import RECORD

OWNERS_DIR = Path("/run/vpnfleet-lab")
LOCK = ".lock"
# RFC 2544's benchmarking network (198.18.0.0/15) and RFC 5180's (2001:2::/48): made for
# test beds, routed nowhere, and unlikely to be any inventory's or this machine's.
MGMT_POOL: dict[int, IpNetwork] = {
    4: ipaddress.IPv4Network("198.18.0.0/15"),
    6: ipaddress.IPv6Network("2001:2::/48"),
}
MAX_SUFFIX = 99


@dataclass(frozen=True, slots=True)
class LabOwner:
    name: str
    key: str
    lab_dir: Path  # absolute: STATE/labs/<name>
    state_dir: Path
    mgmt: str  # the management subnet

    def owns(self, lab_dir: Path) -> bool:
        return _same(self.lab_dir, lab_dir)

    @property
    def recorded(self) -> bool:
        """Whether the owner's lab record still exists (else only leftovers can remain)."""
        return (self.lab_dir / RECORD).is_file()

    @property
    def down_command(self) -> str:
        return f"vpnfleet --state {shlex.quote(str(self.state_dir))} lab down --name {self.name}"

    def describe(self) -> str:
        gone = "" if self.recorded else ", whose lab record is gone"
        return f"state directory {self.state_dir} (lab directory {self.lab_dir}{gone})"

    def to_json(self) -> dict[str, str]:
        return {
            "name": self.name,
            "key": self.key,
            "lab_dir": str(self.lab_dir),
            "state_dir": str(self.state_dir),
            "mgmt": self.mgmt,
        }


def _same(a: Path, b: Path) -> bool:
    return a.absolute().resolve() == b.absolute().resolve()


def owner_path(key: str) -> Path:
    return OWNERS_DIR / f"{key}.json"


def read_owner(key: str) -> LabOwner | None:
    """The lab holding ``key``; None when none is recorded (or the record is unreadable)."""
    try:
        data = json.loads(owner_path(key).read_text())
        return LabOwner(
            str(data["name"]),
            key,
            Path(data["lab_dir"]),
            Path(data["state_dir"]),
            str(ipaddress.ip_network(data["mgmt"])),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _keys() -> list[str]:
    try:
        names = sorted(p.name for p in OWNERS_DIR.iterdir())
    except FileNotFoundError:
        return []
    return [n.removesuffix(".json") for n in names if n.endswith(".json")]


def owners() -> list[LabOwner]:
    """Every lab recorded on this machine (unreadable records left out)."""
    return [o for o in map(read_owner, _keys()) if o is not None]


def named(name: str) -> list[LabOwner]:
    """The labs called ``name``, of whatever state directory."""
    return [o for o in owners() if o.name == name]


def owner_of(lab_dir: Path) -> LabOwner | None:
    """What the lab of ``lab_dir`` holds on this machine, if anything."""
    return next((o for o in owners() if o.owns(lab_dir)), None)


@contextlib.contextmanager
def _locked() -> Iterator[None]:
    try:
        OWNERS_DIR.mkdir(mode=0o700, exist_ok=True)
        fd = (OWNERS_DIR / LOCK).open("a")
    except OSError as exc:
        raise LabError(f"cannot record the lab in {OWNERS_DIR}: {exc}") from None
    with fd:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield


def key_candidates(name: str) -> Iterator[str]:
    """``name``, then ``name_2``, ``name_3`` … (shortened to stay a usable lab name)."""
    yield name
    for n in range(2, MAX_SUFFIX + 1):
        suffix = f"_{n}"
        key = name[: 12 - len(suffix)] + suffix
        if LAB_NAME_RE.match(key):
            yield key


def mgmt_prefixlen(version: int, hosts: int) -> int:
    """A subnet for the controller and ``hosts`` agents: /24 or wider (IPv6: /64)."""
    if version == 6:
        return 64
    # network, broadcast, the controller and the hosts
    return min(24, 32 - math.ceil(math.log2(hosts + 3)))


def free_mgmt(version: int, hosts: int, taken: Iterable[IpNetwork]) -> IpNetwork:
    """The first subnet of the pool that overlaps none of ``taken``."""
    busy = [t for t in taken if t.version == version]
    pool = MGMT_POOL[version]
    for net in pool.subnets(new_prefix=mgmt_prefixlen(version, hosts)):
        if not any(net.overlaps(t) for t in busy):
            return net
    raise LabError(
        f"no free management subnet left in {pool} for {hosts} agents: take other labs "
        "down, or free routes of this machine there"
    )


def claim(
    name: str,
    lab_dir: Path,
    state_dir: Path,
    *,
    version: int,
    hosts: int,
    avoid: Iterable[IpNetwork],
    in_use: Callable[[str], bool],
) -> LabOwner:
    """Allocate a key and a management subnet for the lab of ``lab_dir`` and record them.

    ``avoid``: networks the management subnet must not overlap (the lab's own networks
    and this machine's routes); ``in_use(key)``: whether namespaces or a link of that key
    exist. A recorded lab whose record is gone and that left nothing is forgotten first.
    The lab of ``lab_dir`` keeps what it holds already (``lab up`` after a crash)."""
    with _locked():
        recorded = owners()
        for other in recorded:
            if other.owns(lab_dir):
                return other
        for other in recorded:
            if not other.recorded and not in_use(other.key):
                release(other.key, other.lab_dir)
        recorded = owners()
        keys = set(_keys())
        key = next((k for k in key_candidates(name) if k not in keys and not in_use(k)), None)
        if key is None:
            raise LabError(f"no free key left for another lab named {name!r} on this machine")
        mgmt = free_mgmt(
            version, hosts, [*avoid, *(ipaddress.ip_network(o.mgmt) for o in recorded)]
        )
        mine = LabOwner(name, key, lab_dir.absolute(), state_dir.absolute(), str(mgmt))
        try:
            write_atomically(
                owner_path(key), (json.dumps(mine.to_json(), indent=1) + "\n").encode()
            )
        except OSError as exc:
            raise LabError(f"cannot record lab {name} in {OWNERS_DIR}: {exc}") from None
        return mine


def release(key: str, lab_dir: Path | None) -> None:
    """Forget what ``key`` holds: only when it is ``lab_dir``'s, or whoever's it is (None)."""
    current = read_owner(key)
    if lab_dir is not None and current is not None and not current.owns(lab_dir):
        return
    with contextlib.suppress(FileNotFoundError):
        owner_path(key).unlink()


def release_of(lab_dir: Path) -> None:
    """Forget whatever the lab of ``lab_dir`` holds."""
    held = owner_of(lab_dir)
    if held is not None:
        release(held.key, lab_dir)
