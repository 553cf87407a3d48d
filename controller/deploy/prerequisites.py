"""What a host must have before an agent can run there, checked over SSH.

One probe (a POSIX shell script, so it works where Python is missing) prints what the
host has: the effective user, ``/dev/net/tun``, ``nft``, each candidate Python with its
version and whether it has ``venv``, and the kernel's socket tables
(``/proc/net/{udp,udp6,tcp,tcp6}``). The controller reads that and names each missing
prerequisite: kernel TUN, a supported Python, nftables, free UDP 500 and 4500 (IKE and
NAT-T, RFC 7296 section 2, RFC 3948), the agent's gRPC port, and root (directly or by
``sudo -n``).
"""

from __future__ import annotations

import enum
import importlib.metadata
import ipaddress
import re
import shlex
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from .connection import ConnectionSettings
from .session import HostSession

IKE_PORT = 500
NAT_T_PORT = 4500
# ansible-core's interpreter discovery fallbacks, the versions vpnfleet supports first.
PYTHON_CANDIDATES = (
    "python3.13",
    "python3.12",
    "python3.11",
    "/usr/bin/python3",
    "/usr/local/bin/python3",
    "python3",
)
_TCP_LISTEN = "0A"


def supported_python() -> tuple[int, int]:
    """The oldest Python vpnfleet runs on, from its own Requires-Python."""
    spec = importlib.metadata.metadata("vpnfleet")["Requires-Python"] or ""
    found = re.search(r">=\s*(\d+)\.(\d+)", spec)
    if found is None:
        raise RuntimeError(f"vpnfleet's Requires-Python {spec!r} names no minimum")
    return int(found[1]), int(found[2])


class Prerequisite(enum.Enum):
    TUN = "/dev/net/tun"
    PYTHON = "python"
    NFTABLES = "nft"
    IKE_PORT = "udp/500"
    NAT_T_PORT = "udp/4500"
    AGENT_PORT = "agent port"
    ROOT = "root"


@dataclass(frozen=True, slots=True)
class Missing:
    prerequisite: Prerequisite
    detail: str

    def __str__(self) -> str:
        return f"{self.prerequisite.value} ({self.detail})"


@dataclass(frozen=True, slots=True)
class Python:
    path: str
    version: tuple[int, int, int] | None  # None: not there, or not a Python that answered
    venv: bool = False

    def text(self) -> str:
        if self.version is None:
            return f"{self.path} not found"
        v = ".".join(map(str, self.version))
        return f"{self.path} {v}" + ("" if self.venv else " without venv")


@dataclass(frozen=True, slots=True)
class Socket:
    protocol: str  # "udp" | "tcp"
    address: str
    port: int
    listening: bool  # tcp: LISTEN; udp: always True (bound)
    inode: int = 0  # the kernel's socket inode, which names the process holding it

    def endpoint(self) -> str:
        host = self.address if ":" not in self.address else f"[{self.address}]"
        return f"{host}:{self.port}"


@dataclass(frozen=True, slots=True)
class HostFacts:
    uid: int | None
    user: str
    machine: str
    tun: bool
    nft: str | None
    pythons: tuple[Python, ...]
    sockets: tuple[Socket, ...]


@dataclass(frozen=True, slots=True)
class Privilege:
    """Whether commands that need root get it on this host."""

    root: bool
    detail: str = ""  # why not


@dataclass(frozen=True, slots=True)
class PrerequisiteReport:
    missing: tuple[Missing, ...]
    python: Python | None = None
    present: tuple[str, ...] = field(default=())
    machine: str = ""

    @property
    def ok(self) -> bool:
        return not self.missing

    def summary(self) -> str:
        return ", ".join(self.present)

    def to_json(self) -> dict[str, object]:
        return {
            "missing": [{"name": m.prerequisite.value, "detail": m.detail} for m in self.missing],
            "python": self.python.path if self.python else None,
            "present": list(self.present),
        }


def probe_script(candidates: Sequence[str]) -> str:
    """The shell script whose output :func:`parse_probe` reads."""
    version = "import sys; sys.stdout.write('%d.%d.%d' % tuple(sys.version_info[:3]))"
    lines = [
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:$PATH",
        'echo "uid $(id -u) $(id -un)"',
        'echo "machine $(uname -m)"',
        'if [ -c /dev/net/tun ]; then echo "tun yes"; else echo "tun no"; fi',
        'echo "nft $(command -v nft || echo -)"',
    ]
    for py in candidates:
        q = shlex.quote(py)
        lines.append(
            f"if v=$({q} -c {shlex.quote(version)} 2>/dev/null); then "
            f"if {q} -c 'import venv' 2>/dev/null; then echo \"python {q} $v venv\"; "
            f'else echo "python {q} $v -"; fi; else echo "python {q} - -"; fi'
        )
    for table in ("udp", "udp6", "tcp", "tcp6"):
        lines.append(f"[ -r /proc/net/{table} ] && sed 's/^/{table} /' /proc/net/{table}")
    lines.append("true")
    return "\n".join(lines) + "\n"


def _hex_address(text: str) -> str:
    raw = bytes.fromhex(text)
    # The kernel prints each 32-bit word in host order (little-endian here).
    swapped = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    return str(ipaddress.ip_address(swapped))


def parse_probe(text: str) -> HostFacts:
    uid: int | None = None
    user = ""
    machine = ""
    tun = False
    nft: str | None = None
    pythons: list[Python] = []
    sockets: list[Socket] = []
    for line in text.splitlines():
        word, _, rest = line.partition(" ")
        parts = rest.split()
        if word == "uid" and parts and parts[0].isdigit():
            uid, user = int(parts[0]), " ".join(parts[1:])
        elif word == "machine":
            machine = rest.strip()
        elif word == "tun":
            tun = rest.strip() == "yes"
        elif word == "nft":
            nft = None if rest.strip() in ("", "-") else rest.strip()
        elif word == "python" and len(parts) == 3:
            path, version, venv = parts
            found = re.fullmatch(r"(\d+)\.(\d+)\.(\d+)", version)
            numbers = (int(found[1]), int(found[2]), int(found[3])) if found else None
            pythons.append(Python(path, numbers, venv == "venv"))
        elif word in ("udp", "udp6", "tcp", "tcp6") and len(parts) > 3 and ":" in parts[1]:
            address, _, port = parts[1].partition(":")
            try:
                sockets.append(
                    Socket(
                        protocol=word.rstrip("6"),
                        address=_hex_address(address),
                        port=int(port, 16),
                        listening=word.startswith("udp") or parts[3] == _TCP_LISTEN,
                        inode=int(parts[9]) if len(parts) > 9 and parts[9].isdigit() else 0,
                    )
                )
            except ValueError:
                continue  # the header line
    return HostFacts(uid, user, machine, tun, nft, tuple(pythons), tuple(sockets))


def busy_sockets(facts: HostFacts, protocol: str, port: int) -> list[Socket]:
    return [s for s in facts.sockets if s.protocol == protocol and s.port == port and s.listening]


def assess(
    facts: HostFacts,
    privilege: Privilege,
    agent_port: int,
    owners: Mapping[int, str] | None = None,
    agent_venv: str = "",
    prefer: tuple[int, int] | None = None,
) -> PrerequisiteReport:
    """Name what is missing; list what is there. ``owners`` names the process holding a
    socket (by inode); a port held by a program run from ``agent_venv`` is the agent's.
    Of the supported Pythons found, the first of version ``prefer`` is taken, else the
    first."""
    owners = owners or {}
    missing: list[Missing] = []
    present: list[str] = []
    minimum = supported_python()
    wanted = f">= {minimum[0]}.{minimum[1]}"

    usable = [p for p in facts.pythons if p.version and p.version[:2] >= minimum and p.venv]
    # The controller's own Python first: its wheels hold code compiled for that version.
    matching = [p for p in usable if prefer and p.version and p.version[:2] == prefer]
    python = next(iter(matching or usable), None)
    if python is not None:
        present.append(python.text())
    else:
        seen = [p.text() for p in facts.pythons if p.version is not None] or ["none found"]
        missing.append(
            Missing(
                Prerequisite.PYTHON,
                f"{wanted} with venv wanted; {'; '.join(seen)} (install python3 {wanted} "
                "or point ansible_python_interpreter at one)",
            )
        )
    if facts.tun:
        present.append("/dev/net/tun")
    else:
        missing.append(
            Missing(Prerequisite.TUN, "no such device: load the kernel's tun module, modprobe tun")
        )
    if facts.nft:
        present.append("nft")
    else:
        missing.append(Missing(Prerequisite.NFTABLES, "nft not found: install nftables"))

    ports = (
        (Prerequisite.IKE_PORT, "udp", IKE_PORT, "IKE"),
        (Prerequisite.NAT_T_PORT, "udp", NAT_T_PORT, "NAT-T and ESP in UDP"),
        (Prerequisite.AGENT_PORT, "tcp", agent_port, "the agent's gRPC, agent_port"),
    )
    busy = len(missing)
    ours = False
    for prerequisite, protocol, port, role in ports:
        holders: dict[str, str] = {}
        for s in busy_sockets(facts, protocol, port):
            owner = owners.get(s.inode, "")
            if agent_venv and f"{agent_venv}/bin/" in owner:
                ours = True  # the agent this bootstrap installed holds it
                continue
            holders.setdefault(s.endpoint(), owner)
        if holders:
            who = ", ".join(f"{e} ({o})" if o else e for e, o in sorted(holders.items()))
            missing.append(
                Missing(
                    prerequisite,
                    f"in use by {who}; {role} needs it"
                    + ("" if all(holders.values()) else
                       f": see which program holds it with ss -{protocol[0]}lpn 'sport = {port}'"),
                )
            )  # fmt: skip
    if len(missing) == busy:
        state = "free or the agent's" if ours else "free"
        present.append(f"udp/{IKE_PORT}, udp/{NAT_T_PORT} and tcp/{agent_port} {state}")

    if privilege.root:
        present.append("root")
    else:
        missing.append(Missing(Prerequisite.ROOT, privilege.detail))
    return PrerequisiteReport(tuple(missing), python, tuple(present), facts.machine)


def owner_script(inodes: Iterable[int]) -> str:
    """A shell script printing ``owner INODE PID COMMAND`` for each process holding one
    of the sockets ``inodes`` (all of them only when run as root)."""
    wanted = " ".join(f"socket:[{i}]" for i in sorted(set(inodes)))
    return (
        f"want=' {wanted} '\n"
        "for p in /proc/[0-9]*; do\n"
        '  for f in "$p"/fd/*; do\n'
        '    l=$(readlink "$f" 2>/dev/null) || continue\n'
        '    case "$want" in *" $l "*)\n'
        "      i=${l#socket:\\[}; i=${i%]}\n"
        "      echo \"owner $i ${p#/proc/} $(tr '\\000\\n' '  ' < \"$p/cmdline\")\";;\n"
        "    esac\n"
        "  done\n"
        "done 2>/dev/null\n"
        "true\n"
    )


def parse_owners(text: str) -> dict[int, str]:
    owners: dict[int, str] = {}
    for line in text.splitlines():
        parts = line.split(" ", 3)
        if len(parts) == 4 and parts[0] == "owner" and parts[1].isdigit():
            owners[int(parts[1])] = f"pid {parts[2]}: {parts[3].strip()}"
    return owners


async def check_prerequisites(
    session: HostSession, settings: ConnectionSettings, agent_port: int, agent_venv: str = ""
) -> PrerequisiteReport:
    privilege, elevated = await _privilege(session, settings)
    candidates = (settings.python,) if settings.python else PYTHON_CANDIDATES
    probe = await session.run(probe_script(candidates), privileged=elevated)
    facts = parse_probe(probe.stdout)
    if not settings.become:
        privilege = Privilege(
            facts.uid == 0,
            f"logged in as {facts.user or facts.uid} (uid {facts.uid}) without ansible_become: "
            "log in as root or set ansible_become: true with passwordless sudo",
        )
    inodes = [
        s.inode
        for protocol, port in (("udp", IKE_PORT), ("udp", NAT_T_PORT), ("tcp", agent_port))
        for s in busy_sockets(facts, protocol, port)
        if s.inode
    ]
    owners: dict[int, str] = {}
    if inodes:
        found = await session.run(owner_script(inodes), privileged=elevated)
        owners = parse_owners(found.stdout)
    controller = (sys.version_info.major, sys.version_info.minor)
    return assess(facts, privilege, agent_port, owners, agent_venv, controller)


async def _privilege(session: HostSession, settings: ConnectionSettings) -> tuple[Privilege, bool]:
    """Whether root is available, and whether commands should go through sudo."""
    if not settings.become:
        return Privilege(False, "not yet probed"), False  # the probe tells the login uid
    res = await session.run("id -u", privileged=True)
    if not res.ok:
        return (
            Privilege(
                False,
                f"sudo -n -u {settings.become_user} failed: {res.error_line('sudo')} (give "
                f"{settings.user or 'the login user'} passwordless sudo)",
            ),
            False,
        )
    if res.stdout.strip() != "0":
        return (
            Privilege(
                False,
                f"ansible_become_user {settings.become_user} is uid {res.stdout.strip()}, "
                "not root; the agent runs as root",
            ),
            True,
        )
    return Privilege(True), True
