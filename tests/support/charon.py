"""Harness for interop tests: a strongSwan charon in one network namespace and our IKE
core (tests/interop/ike_driver.py) in another, joined by a veth pair.

charon runs as the interop notes say: its own strongswan.conf through STRONGSWAN_CONF
with kernel-libipsec loaded before kernel-netlink, its own /run (unshare --mount and a
bind mount, because the pid file path is fixed), its own vici socket. Everything made
here is undone by ``close()``, which the fixtures call in ``finally``.
"""

from __future__ import annotations

import json
import os
import queue
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import vici

from vpnfleet.controller.lab.external import PLUGINS

CHARON = Path("/usr/lib/ipsec/charon")
SWANCTL = shutil.which("swanctl") or "/usr/sbin/swanctl"
DRIVER = Path(__file__).with_name("ike_driver.py")

OUR_ADDR, CHARON_ADDR = "192.0.2.1", "192.0.2.2"
OUR_NET, CHARON_NET = "10.1.0.0/16", "10.2.0.0/16"
OUR_ID, CHARON_ID = "ours.example", "charon.example"
PSK = "interop pre-shared key"


def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, check=check, capture_output=True, text=True, timeout=30)


def skip_reason() -> str | None:
    if not CHARON.exists() or not Path(SWANCTL).exists():
        return "strongSwan charon/swanctl is not installed"
    if os.geteuid() != 0:
        return "interop tests need root for network namespaces"
    return None


class Topology:
    """Two namespaces and a veth pair; each side also gets its site subnet on a veth
    pair kept inside the namespace (there is no dummy interface type here)."""

    def __init__(self) -> None:
        tag = secrets.token_hex(3)
        self.charon_ns, self.our_ns = f"vfc-{tag}", f"vfo-{tag}"
        self.made: list[str] = []
        for ns in (self.charon_ns, self.our_ns):
            run("ip", "netns", "add", ns)
            self.made.append(ns)
            run("ip", "-n", ns, "link", "set", "lo", "up")
        run(
            "ip", "link", "add", f"vc{tag}", "netns", self.charon_ns, "type", "veth",
            "peer", "name", f"vo{tag}", "netns", self.our_ns,
        )  # fmt: skip
        run("ip", "-n", self.charon_ns, "addr", "add", f"{CHARON_ADDR}/24", "dev", f"vc{tag}")
        run("ip", "-n", self.our_ns, "addr", "add", f"{OUR_ADDR}/24", "dev", f"vo{tag}")
        run("ip", "-n", self.charon_ns, "link", "set", f"vc{tag}", "up")
        run("ip", "-n", self.our_ns, "link", "set", f"vo{tag}", "up")
        # A site subnet on each side, so a charon on either side can install its routes.
        for ns, site in ((self.charon_ns, "10.2.0.1/16"), (self.our_ns, "10.1.0.1/16")):
            run("ip", "-n", ns, "link", "add", "site0", "type", "veth", "peer", "name", "site1")
            run("ip", "-n", ns, "addr", "add", site, "dev", "site0")
            run("ip", "-n", ns, "link", "set", "site0", "up")
            run("ip", "-n", ns, "link", "set", "site1", "up")

    def close(self) -> None:
        for ns in self.made:
            run("ip", "netns", "del", ns, check=False)
        self.made = []


class Charon:
    def __init__(
        self,
        ns: str,
        directory: Path,
        *,
        threads: int = 16,
        log_level: int = 1,
        name: str = "charon",
        fragment_size: int | None = None,
        aggressive_psk: bool = False,
    ) -> None:
        """``aggressive_psk``: answer IKEv1 Aggressive mode with a pre-shared key, which
        charon refuses unless its strongswan.conf says so (the option's own name warns
        that the PSK hash travels where an eavesdropper can try keys offline)."""
        directory = directory / name
        directory.mkdir()
        self.dir = directory
        self.run_dir = directory / "run"
        self.run_dir.mkdir()
        self.socket = directory / "charon.vici"
        self.log = directory / "charon.log"
        self.uri = f"unix://{self.socket}"
        conf = directory / "strongswan.conf"
        conf.write_text(
            f"""charon {{
  load = {PLUGINS}
  install_routes = yes
  threads = {threads}
  dos_protection = no
  reuse_ikesa = no
  ikesa_table_size = 1024
  retransmit_timeout = 1.0
{f"  fragment_size = {fragment_size}" if fragment_size else ""}
{"  i_dont_care_about_security_and_use_aggressive_mode_psk = yes" if aggressive_psk else ""}
  filelog {{
    charon-log {{
      path = {self.log}
      time_format = %T
      default = {min(log_level, 1)}
      ike = {log_level}
      chd = {log_level}
      flush_line = yes
    }}
  }}
  syslog {{
    daemon {{
      default = -1
    }}
  }}
  plugins {{
    vici {{
      socket = {self.uri}
    }}
  }}
}}
"""
        )
        env = {**os.environ, "STRONGSWAN_CONF": str(conf)}
        self.process = subprocess.Popen(
            [
                "ip", "netns", "exec", ns, "unshare", "--mount", "--propagation", "private",
                "--", "sh", "-c", f"mount --bind {self.run_dir} /run && exec {CHARON}",
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.socket.exists():
                with suppress(OSError):
                    self.session().version()
                    return
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"charon exited with {self.process.returncode}: {self.log_text()}"
                )
            time.sleep(0.05)
        raise RuntimeError("charon's vici socket did not come up")

    def session(self) -> vici.Session:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(str(self.socket))
        return vici.Session(sock)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def swanctl(self, *args: str) -> str:
        return run(SWANCTL, *args, "--uri", self.uri).stdout

    def list_sas(self) -> list[dict[str, Any]]:
        """``swanctl --list-sas --raw``, parsed: one dict per IKE SA."""
        out = []
        for line in self.swanctl("--list-sas", "--raw").splitlines():
            line = line.strip()
            if line.startswith("list-sa event"):
                tree = parse_raw(line[len("list-sa event") :])
                out += [{"name": k, **v} for k, v in tree.items()]
        return out

    def close(self) -> None:
        if self.process.poll() is None:
            with suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(5)


_TOKEN = re.compile(r"\s*(?:(\})|([^\s{}=]+)\s*(\{)|([^\s{}=]+)=(\[[^\]]*\]|[^\s{}]*))")


def parse_raw(text: str) -> dict[str, Any]:
    """swanctl's raw vici dump: ``name {key=value list=[a b] sub {...}}``."""
    stack: list[dict[str, Any]] = [{}]
    pos = 0
    text = text.strip()
    if text.startswith("{") and text.endswith("}"):
        text = text[1:-1]
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None:
            if text[pos:].strip() == "":
                break
            raise ValueError(f"cannot parse swanctl output at {text[pos : pos + 40]!r}")
        pos = match.end()
        close, section, _, key, value = match.groups()
        if close:
            stack.pop()
        elif section:
            stack[-1][section] = {}
            stack.append(stack[-1][section])
        elif key:
            stack[-1][key] = value[1:-1].split() if value.startswith("[") else value
    return stack[0]


def driver_argv(ns: str, config: Path) -> list[str]:
    """The driver runs under the interpreter running the tests, whatever its environment."""
    return ["ip", "netns", "exec", ns, sys.executable, str(DRIVER), str(config)]


class OurPeer:
    """Our IKE core in its namespace, through ike_driver.py."""

    def __init__(self, ns: str, directory: Path, spec: dict[str, Any]) -> None:
        config = directory / "ours.json"
        config.write_text(json.dumps(spec))
        self.stderr = (directory / "ours.err").open("w")
        self.process = subprocess.Popen(
            driver_argv(ns, config),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            text=True,
            start_new_session=True,
        )
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        self.seen: list[dict[str, Any]] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        self.wait("Ready")

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            with suppress(json.JSONDecodeError):
                self.events.put(json.loads(line))

    def command(self, name: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps({"cmd": name}) + "\n")
        self.process.stdin.flush()

    def wait(self, kind: str, timeout: float = 10.0, **match: Any) -> dict[str, Any]:
        for event in self.seen:
            if event["event"] == kind and all(event.get(k) == v for k, v in match.items()):
                self.seen.remove(event)
                return event
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {kind} {match or ''} event; saw {self.seen}")
            try:
                event = self.events.get(timeout=left)
            except queue.Empty:
                continue
            if event["event"] in ("CommandFailed",):
                raise AssertionError(f"driver: {event['reason']}")
            if event["event"] == kind and all(event.get(k) == v for k, v in match.items()):
                return event
            self.seen.append(event)

    def close(self) -> None:
        if self.process.poll() is None:
            with suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(5)
        self.stderr.close()


def connection(
    ike: str,
    esp: str,
    *,
    initiator: bool,
    certs: bool = False,
) -> dict[str, Any]:
    """charon's side of the one connection the tests use, as a vici load-conn message."""
    auth = "pubkey" if certs else "psk"
    return {
        "net-ike": {
            "version": "2",
            "local_addrs": [CHARON_ADDR],
            "remote_addrs": [OUR_ADDR],
            "proposals": [ike],
            "encap": "yes",
            "rekey_time": "0",
            "local": {
                "auth": auth,
                "id": CHARON_ID,
                **({"certs": ["charon.pem"]} if certs else {}),
            },
            "remote": {"auth": auth, "id": OUR_ID},
            "children": {
                "net": {
                    "local_ts": [CHARON_NET],
                    "remote_ts": [OUR_NET],
                    "esp_proposals": [esp],
                    "mode": "tunnel",
                    "rekey_time": "0",
                    "start_action": "none",
                }
            },
        }
    }


def our_spec(ike: str, esp: str, *, certs: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "local": OUR_ADDR,
        "peer": CHARON_ADDR,
        "local_id": OUR_ID,
        "remote_id": CHARON_ID,
        "psk": PSK,
        "ike": [ike],
        "esp": [esp],
        "local_ts": [OUR_NET],
        "remote_ts": [CHARON_NET],
        **(certs or {}),
    }


@contextmanager
def interop_setup(
    log_level: int = 1,
    threads: int = 16,
    fragment_size: int | None = None,
    aggressive_psk: bool = False,
) -> Iterator[tuple[Topology, Charon, Path]]:
    """Namespaces + charon; torn down whatever happens."""
    directory = Path(tempfile.mkdtemp(prefix="vf-interop-"))
    topology: Topology | None = None
    charon: Charon | None = None
    try:
        topology = Topology()
        charon = Charon(
            topology.charon_ns,
            directory,
            log_level=log_level,
            threads=threads,
            fragment_size=fragment_size,
            aggressive_psk=aggressive_psk,
        )
        yield topology, charon, directory
    finally:
        if charon is not None:
            charon.close()
        if topology is not None:
            topology.close()
        if os.environ.get("VPNFLEET_KEEP_INTEROP"):
            print(f"kept {directory}", file=sys.stderr)
        else:
            shutil.rmtree(directory, ignore_errors=True)
