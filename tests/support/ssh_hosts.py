"""SSH hosts in network namespaces: empty machines for `vpnfleet bootstrap` to reach.

Every host is a network namespace running Debian's OpenSSH server, with its own host
key, on its own address and port. Each host also has a mount namespace of its own
(``unshare --mount``): ``/opt``, ``/etc/vpnfleet``, ``/var/lib/vpnfleet-agent``,
``/run`` and ``/tmp`` are per-host directories bound over the machine's, and ``/etc`` and
``/var/lib`` are overlays whose writes land in the host's directory, so what one host
installs, configures or keeps is private to it and never reaches this machine. systemd
is not PID 1 here, so each host's ``/usr/bin/systemctl`` is the stand-in of
tests/support/systemctl_standin.py (bound over it in the host's mount namespace only),
which runs a unit's ExecStart as written and waits for its READY=1.

The controller side is a namespace too: a bridge joins one veth per host, and the
controller's commands run there (``ip netns exec``). Nothing is added to the machine's
own namespace, so the addresses (198.18.0.0/15, set aside for benchmarking by RFC 2544)
cannot meet any real network. The test writes the ``known_hosts`` and generates the
client key; ``HOME`` points into the test's directory so no file of the machine's own
``~/.ssh`` is read or written.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from vpnfleet.controller.statedir.pki import TlsCredentials

SSHD = "/usr/sbin/sshd"
SYSTEMCTL = "/usr/bin/systemctl"
SYSTEMCTL_STANDIN = Path(__file__).with_name("systemctl_standin.py")
SUBNET = "198.18.22"
CONTROLLER_ADDRESS = f"{SUBNET}.1"
START_TIMEOUT = 15.0
STOP_GRACE = 5.0
_serial = itertools.count()


class TestbedError(RuntimeError):
    pass


def _alive(pid: int) -> bool:
    """Whether ``pid`` is a process that has not exited (a zombie has)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return not stat.rsplit(") ", 1)[-1].startswith("Z")


def _run(*argv: str) -> str:
    res = subprocess.run(argv, capture_output=True, text=True)
    if res.returncode != 0:
        raise TestbedError(f"{shlex.join(argv)}: {(res.stdout + res.stderr).strip()}")
    return res.stdout


@dataclass(frozen=True, slots=True)
class HostSpec:
    """How one host differs from a healthy empty machine."""

    name: str
    port: int = 22
    tun: bool = True  # False: /dev/net is an empty directory in the host's mount namespace


@dataclass(slots=True)
class SshHost:
    spec: HostSpec
    netns: str
    address: str
    root: Path
    host_key: str = ""  # the public key line (type and base64) sshd presents
    pid: int = 0

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def port(self) -> int:
        return self.spec.port

    @property
    def opt(self) -> Path:
        return self.root / "opt"

    @property
    def etc_vpnfleet(self) -> Path:
        return self.root / "etc-vpnfleet"

    @property
    def state_dir(self) -> Path:
        return self.root / "var-lib-vpnfleet-agent"

    def known_hosts_line(self) -> str:
        name = self.address if self.port == 22 else f"[{self.address}]:{self.port}"
        return f"{name} {self.host_key}\n"

    def log(self) -> str:
        path = self.root / "sshd.log"
        return path.read_text(errors="replace") if path.exists() else ""


@dataclass(slots=True)
class SshTestbed:
    root: Path
    controller_netns: str
    hosts: dict[str, SshHost] = field(default_factory=dict)
    client_key: Path = Path()
    known_hosts: Path = Path()
    home: Path = Path()
    _extra: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def write_known_hosts(self, names: Sequence[str] | None = None) -> Path:
        """A known_hosts holding the keys of ``names`` (default: every host)."""
        chosen = self.hosts if names is None else names
        self.known_hosts.write_text("".join(self.hosts[n].known_hosts_line() for n in chosen))
        return self.known_hosts

    def controller_command(self, argv: Sequence[str]) -> list[str]:
        """``argv`` as run on the controller: inside its namespace."""
        return ["ip", "netns", "exec", self.controller_netns, *argv]

    def controller_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k != "SSH_AUTH_SOCK"}
        return {**env, "HOME": str(self.home)}

    def run_controller(
        self, argv: Sequence[str], timeout: float = 120.0
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.controller_command(argv),
            capture_output=True,
            text=True,
            env=self.controller_env(),
            timeout=timeout,
        )

    def run_on_host(self, host: str, argv: Sequence[str]) -> str:
        """Run ``argv`` on ``host``: in its network and mount namespaces (its own /etc)."""
        pid = str(self.hosts[host].pid)
        return _run("nsenter", "-t", pid, "-m", "-n", "--", *argv)

    def agent_health(self, host: str, tls: TlsCredentials, port: int = 50051) -> str:
        """The gRPC health answer of ``host``'s agent to a caller holding ``tls``, asked
        over mutual TLS from the controller's namespace (where the agents are reachable):
        ``SERVING`` …, or the refused call's code and details."""
        script = (
            "import asyncio, sys\n"
            "from vpnfleet.controller.transport.client import AgentClient, AgentCallFailed\n"
            "from vpnfleet.controller.statedir.pki import TlsCredentials\n"
            "cert, key, ca, host, target = sys.argv[1:]\n"
            "tls = TlsCredentials(*(open(p, 'rb').read() for p in (cert, key, ca)))\n"
            "async def main():\n"
            "    async with AgentClient(host, target, tls, timeout=10) as c:\n"
            "        try:\n"
            "            print(await c.health())\n"
            "        except AgentCallFailed as exc:\n"
            "            print(exc.code, exc.details)\n"
            "asyncio.run(main())\n"
        )
        files = []
        for name, data in (("cert", tls.cert_pem), ("key", tls.key_pem), ("ca", tls.ca_pem)):
            path = self.root / f"caller-{name}.pem"
            path.write_bytes(data)
            files.append(str(path))
        target = f"{self.hosts[host].address}:{port}"
        res = self.run_controller([sys.executable, "-c", script, *files, host, target], 60)
        if res.returncode != 0:
            raise TestbedError(f"health of {host} at {target}: {res.stderr.strip()}")
        return res.stdout.strip()

    def hold_udp_port(self, host: str, port: int, python: str = "python3") -> None:
        """Bind UDP ``port`` on every address of ``host`` until the testbed closes, from a
        process of ``python`` (a path as the host sees it)."""
        code = (
            "import socket, sys\n"
            "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
            f"s.bind(('0.0.0.0', {port}))\n"
            "print('bound', flush=True)\n"
            "sys.stdin.read()\n"
        )
        proc = subprocess.Popen(
            ["nsenter", "-t", str(self.hosts[host].pid), "-m", "-n", "--", python, "-c", code],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            start_new_session=True,
        )
        self._extra.append(proc)
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != b"bound":
            raise TestbedError(f"could not bind udp/{port} in {host}")

    # ------------------------------------------------------------------ lifecycle

    def _add_host(self, spec: HostSpec, index: int) -> SshHost:
        host = SshHost(
            spec=spec,
            netns=f"{self.controller_netns}-{index}",
            address=f"{SUBNET}.{10 + index}",
            root=self.root / spec.name,
        )
        self.hosts[spec.name] = host
        _run("ip", "netns", "add", host.netns)
        _run("ip", "-n", host.netns, "link", "set", "lo", "up")
        veth = f"h{index}"
        _run("ip", "-n", self.controller_netns, "link", "add", veth, "type", "veth",
             "peer", "name", "eth0", "netns", host.netns)  # fmt: skip
        _run("ip", "-n", self.controller_netns, "link", "set", veth, "master", "br0", "up")
        _run("ip", "-n", host.netns, "addr", "add", f"{host.address}/24", "dev", "eth0")
        _run("ip", "-n", host.netns, "link", "set", "eth0", "up")
        return host

    def _start_sshd(self, host: SshHost) -> None:
        d = host.root
        for sub in ("opt", "etc-vpnfleet", "var-lib-vpnfleet-agent", "run/sshd", "tmp",
                    "etc.upper", "etc.work", "varlib.upper", "varlib.work", "empty"):  # fmt: skip
            (d / sub).mkdir(parents=True, exist_ok=True)
        os.chmod(d / "run" / "sshd", 0o755)
        os.chmod(d / "tmp", 0o1777)
        os.chmod(d / "var-lib-vpnfleet-agent", 0o700)  # as vpnfleet-agent init makes it
        # sshd reads its config and key through the host's /run: its /tmp hides the
        # test's directory.
        key = d / "run" / "ssh_host_ed25519_key"
        _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", host.name, "-f", str(key))
        host.host_key = " ".join(key.with_suffix(".pub").read_text().split()[:2])
        # In the host's own /run, which users other than root can reach (the test's
        # directory may be closed to them).
        authorized = d / "run" / "authorized_keys"
        authorized.write_text(self.client_key.with_suffix(".pub").read_text())
        authorized.chmod(0o644)
        os.chmod(d / "run", 0o755)
        config = d / "run" / "sshd_config"
        config.write_text(
            f"ListenAddress {host.address}:{host.port}\n"
            "HostKey /run/ssh_host_ed25519_key\n"
            "PidFile none\n"
            "UsePAM no\n"
            "PasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\n"
            "PubkeyAuthentication yes\n"
            "PermitRootLogin prohibit-password\n"
            "AuthorizedKeysFile /run/authorized_keys\n"
            # The test's directory sits under /tmp, which is world-writable.
            "StrictModes no\n"
            "Subsystem sftp internal-sftp\n"
            "LogLevel VERBOSE\n"
        )
        mounts = [
            f"mount --bind {d / 'opt'} /opt",
            "mount -t overlay overlay -o "
            f"lowerdir=/etc,upperdir={d / 'etc.upper'},workdir={d / 'etc.work'} /etc",
            "mkdir -p /etc/vpnfleet",
            f"mount --bind {d / 'etc-vpnfleet'} /etc/vpnfleet",
            "mount -t overlay overlay -o "
            f"lowerdir=/var/lib,upperdir={d / 'varlib.upper'},workdir={d / 'varlib.work'} "
            "/var/lib",
            "mkdir -p /var/lib/vpnfleet-agent",
            f"mount --bind {d / 'var-lib-vpnfleet-agent'} /var/lib/vpnfleet-agent",
            f"mount --bind {d / 'run'} /run",
        ]
        if not host.spec.tun:
            mounts.append(f"mount --bind {d / 'empty'} /dev/net")
        # systemd is not PID 1 here: the host's systemctl is the stand-in.
        mounts.append(f"mount --bind {SYSTEMCTL_STANDIN} {SYSTEMCTL}")
        mounts.append(f"mount --bind {d / 'tmp'} /tmp")  # last: the paths above are in /tmp
        script = "set -e; " + "; ".join(mounts) + f"; exec {SSHD} -D -e -f /run/sshd_config"
        with open(d / "sshd.log", "ab") as log:
            proc = subprocess.Popen(
                [
                    "ip",
                    "netns",
                    "exec",
                    host.netns,
                    "unshare",
                    "--mount",
                    "--propagation",
                    "private",
                    "--",
                    "sh",
                    "-c",
                    script,
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        # ip, unshare and sh each exec the next: the pid is sshd's.
        host.pid = proc.pid
        self._extra.append(proc)
        deadline = time.monotonic() + START_TIMEOUT
        while "Server listening on" not in host.log():
            if proc.poll() is not None:
                raise TestbedError(f"sshd of {host.name} exited: {host.log()[-800:]}")
            if time.monotonic() > deadline:
                raise TestbedError(f"sshd of {host.name} is not listening: {host.log()[-800:]}")
            time.sleep(0.05)

    @staticmethod
    def _signal_namespaces(namespaces: Sequence[str], sig: signal.Signals) -> set[int]:
        """Send ``sig`` to every process of ``namespaces``; the pids signalled."""
        sent = set()
        for ns in namespaces:
            pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True)
            for pid in map(int, pids.stdout.split()):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
                    sent.add(pid)
        return sent

    def close(self) -> None:
        """Stop every process in the testbed's namespaces, then delete the namespaces."""
        for proc in self._extra:
            if proc.poll() is None:
                proc.terminate()
        namespaces = [h.netns for h in self.hosts.values()] + [self.controller_netns]
        # Session processes sshd forked, and anything started in a host since (the
        # agents the systemctl stand-in started, in sessions of their own).
        left = self._signal_namespaces(namespaces, signal.SIGTERM)
        for proc in self._extra:
            try:
                proc.wait(STOP_GRACE)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        deadline = time.monotonic() + STOP_GRACE
        while left and time.monotonic() < deadline:
            time.sleep(0.05)
            left = {pid for pid in left if _alive(pid)}
        if left:
            self._signal_namespaces(namespaces, signal.SIGKILL)
        for ns in namespaces:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


@contextlib.contextmanager
def ssh_testbed(root: Path, specs: Sequence[HostSpec]) -> Iterator[SshTestbed]:
    """Hosts running sshd in namespaces, removed on the way out, also on failure."""
    if not Path(SSHD).exists():
        raise TestbedError(f"{SSHD} is missing: scripts/setup --test installs openssh-server")
    root.mkdir(parents=True, exist_ok=True)
    bed = SshTestbed(root=root, controller_netns=f"vfssh{os.getpid() % 100000}x{next(_serial)}")
    bed.home = root / "home"
    bed.home.mkdir(exist_ok=True)
    bed.known_hosts = root / "known_hosts"
    bed.client_key = root / "client_ed25519"
    try:
        _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "controller",
             "-f", str(bed.client_key))  # fmt: skip
        ns = bed.controller_netns
        _run("ip", "netns", "add", ns)
        _run("ip", "-n", ns, "link", "set", "lo", "up")
        _run("ip", "-n", ns, "link", "add", "br0", "type", "bridge")
        _run("ip", "-n", ns, "addr", "add", f"{CONTROLLER_ADDRESS}/24", "dev", "br0")
        _run("ip", "-n", ns, "link", "set", "br0", "up")
        for index, spec in enumerate(specs):
            bed._start_sshd(bed._add_host(spec, index))
        yield bed
    finally:
        bed.close()


# ---------------------------------------------------------------------- a mesh of the hosts


def site_address(index: int) -> str:
    """The first address of the ``index``-th host's site subnet 10.1.N.0/24 (N from 1)."""
    return f"10.1.{index + 1}.1"


def add_site(host: SshHost, index: int) -> None:
    """A site subnet behind ``host``, on a veth pair kept inside its namespace: what the
    mesh of :func:`write_mesh_inventory` protects."""
    for argv in (
        ["link", "add", "site0", "type", "veth", "peer", "name", "site0p"],
        ["link", "set", "site0p", "up"],
        ["link", "set", "site0", "up"],
        ["addr", "add", f"{site_address(index)}/24", "dev", "site0"],
    ):
        _run("ip", "-n", host.netns, *argv)


def write_mesh_inventory(
    bed: SshTestbed, path: Path, all_vars: Mapping[str, str] | None = None
) -> Path:
    """An inventory at ``path``: every host of ``bed`` in group ``mesh`` (a full mesh of
    their site subnets), reached as root with the test bed's client key; ``all_vars``
    added to the group ``all``."""
    lines = [
        "all:",
        "  vars:",
        "    ansible_user: root",
        f"    ansible_ssh_private_key_file: {bed.client_key}",
        *(f"    {key}: {value}" for key, value in (all_vars or {}).items()),
        "  children:",
        "    mesh:",
        "      hosts:",
    ]
    for index, host in enumerate(bed.hosts.values()):
        lines += [
            f"        {host.name}:",
            f"          address: {host.address}",
            f"          subnets: [10.1.{index + 1}.0/24]",
            f"          ansible_host: {host.address}",
            f"          ansible_port: {host.port}",
        ]
    path.mkdir(parents=True, exist_ok=True)
    (path / "hosts.yaml").write_text("\n".join(lines) + "\n")
    (path / "topology.yaml").write_text("meshes:\n  - name: mesh\n    group: mesh\n")
    return path


def ping_once(host: SshHost, src: str, dst: str) -> bool:
    """One echo from ``src`` to ``dst`` inside ``host``, answered within a second."""
    res = subprocess.run(
        ["ip", "netns", "exec", host.netns, "ping", "-n", "-c", "1", "-W", "1", "-I", src, dst],
        capture_output=True,
    )
    return res.returncode == 0
