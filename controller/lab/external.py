"""External peers in the lab: strongSwan's charon plays each gateway vpnfleet does not
manage, in a namespace of its own on the lab's bridge.

How charon runs here, and why:

- The kernel may have no ESP, so charon uses kernel-libipsec (userspace ESP on a TUN
  device, ``ipsec0``), loaded before kernel-netlink in an explicit plugin list, from a
  strongswan.conf of its own (``STRONGSWAN_CONF``), with ``install_routes = yes`` so the
  managed hosts' prefixes route into ipsec0 (table 220).
- charon's pid file path is compiled in (/var/run/charon.pid), so each charon gets a
  private /run: ``unshare --mount`` and a bind mount of its directory's ``run/``.
- Its vici socket sits in its directory (named relative to it: lab directories can be
  longer than a unix socket path), where swanctl reaches it from the root namespace;
  the connections and the PSK are loaded with ``swanctl --load-all --file``, from a
  swanctl.conf written here (0600: it holds the PSK).
- kernel-libipsec always reports a NAT, so ESP is in UDP 4500 either way; ``encap =
  yes`` says so up front. charon answers the managed hosts that initiate to it, and
  starts the tunnels to those that only answer (``start_action: none``, or an external
  peer declared ``address: any``, which the lab puts at a free underlay address).

The record gets a ``charon`` resource before the process starts, so ``lab down`` finds
it even after a crash; deleting the namespace kills it in any case.
"""

from __future__ import annotations

import base64
import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vpnfleet.protos.files import make_private_directory, write_atomically

from ..planner.model import IkeVersion
from . import netns
from .layout import ExternalLayout, LabError, LabLayout
from .record import LabRecord

CHARON = Path("/usr/lib/ipsec/charon")
SWANCTL_NAMES = ("swanctl", "/usr/sbin/swanctl")
PLUGINS = (
    "random nonce drbg openssl aes sha1 sha2 hmac gcm chapoly curve25519 gmp kdf pem pkcs1 "
    "pkcs8 pkcs12 x509 pubkey revocation constraints kernel-libipsec kernel-netlink "
    "socket-default vici"
)
START_TIMEOUT = 15.0
STOP_GRACE = 5.0
# A unix socket path holds at most 107 bytes and lab directories can be longer, so the
# vici socket is named relative to the peer's directory: charon and swanctl both run
# with that directory as their working directory.
VICI_URI = "unix://charon.vici"
DPD_DELAY = "10s"
UNSHARE = ("unshare", "--mount", "--propagation", "private", "--")


def swanctl() -> str:
    for name in SWANCTL_NAMES:
        found = shutil.which(name)
        if found:
            return found
    raise LabError(
        "the inventory has external peers, played in the lab by strongSwan: install "
        "strongswan-charon, strongswan-swanctl and libcharon-extra-plugins (kernel-libipsec)"
    )


def check_installed() -> None:
    """Raise before anything is built when strongSwan is missing."""
    swanctl()
    if not CHARON.exists():
        raise LabError(
            f"{CHARON} is missing: install strongswan-charon and libcharon-extra-plugins "
            "(the lab plays external peers with strongSwan)"
        )


def external_dir(record: LabRecord, name: str) -> Path:
    return record.path / "external" / name


def run_swanctl(directory: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """swanctl against the charon of ``directory`` (its vici socket is relative)."""
    return subprocess.run(
        [swanctl(), *args, "--uri", VICI_URI],
        cwd=directory,
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )


def strongswan_conf(directory: Path, port: int, aggressive: bool = False) -> str:
    """``aggressive``: the peer answers IKEv1 Aggressive Mode with a PSK, which charon
    refuses unless told it does not care (the PSK's hash goes out unprotected).

    strongSwan's ``delete_rekeyed`` stays at its default (no): after a Quick mode of its
    own replaced an IKEv1 child SA, charon keeps the old one, and the managed end, the
    Quick mode's responder, deletes it once its round is over. With ``yes`` charon
    deleted it right after sending the third message, so what the managed end still
    sent on it before that message arrived was lost (one ping in a rekey, now and
    then)."""
    ports = ""
    if port != 500:
        # The peer's IKE port from the topology; NAT-T keeps 4500 unless that is it.
        ports = f"  port = {port}\n  port_nat_t = {4501 if port == 4500 else 4500}\n"
    psk_am = ""
    if aggressive:
        psk_am = "  i_dont_care_about_security_and_use_aggressive_mode_psk = yes\n"
    return f"""charon {{
  load = {PLUGINS}
  install_routes = yes
  install_virtual_ip = no
  threads = 16
{ports}{psk_am}  filelog {{
    charon-log {{
      path = {directory / "charon.log"}
      time_format = %T
      default = 1
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
      socket = {VICI_URI}
    }}
  }}
}}
"""


_VERSION = {IkeVersion.V2: 2, IkeVersion.V1: 1}


def _list(values: tuple[str, ...]) -> str:
    return ",".join(values)


def swanctl_conf(ext: ExternalLayout) -> str:
    """One connection per managed host that peers with ``ext`` (started by charon when the
    host only answers); the PSK in base64 (``0s``) so that no character of it needs
    quoting."""
    lines = ["connections {"]
    for c in ext.connections:
        lines += [
            f"  {c.host} {{",
            f"    version = {_VERSION[ext.ike_version]}",
            *(["    aggressive = yes"] if ext.aggressive else []),
            # IKEv1 has no rekey exchange: charon would reauthenticate (a new Main mode)
            # on its own timer; the managed end schedules that, with jitter.
            *(["    reauth_time = 0"] if ext.ike_version is IkeVersion.V1 else []),
            f"    local_addrs = {ext.address}",
            f"    remote_addrs = {c.address}",
            f"    local_port = {ext.port}",
            f"    proposals = {_list(ext.ike_proposals) or 'default'}",
            "    encap = yes",
            f"    dpd_delay = {DPD_DELAY}",
            "    local {",
            "      auth = psk",
            f"      id = {ext.identity}",
            "    }",
            "    remote {",
            "      auth = psk",
            f"      id = {c.identity}",
            "    }",
            "    children {",
            f"      {c.host} {{",
            f"        local_ts = {_list(c.local_ts)}",
            f"        remote_ts = {_list(c.remote_ts)}",
            f"        esp_proposals = {_list(ext.esp_proposals) or 'default'}",
            "        mode = tunnel",
            "        dpd_action = clear",
            *(["        start_action = start"] if c.initiate else []),
            "      }",
            "    }",
            "  }",
        ]
    secret = base64.b64encode(ext.psk).decode()
    lines += [
        "}",
        "secrets {",
        f"  ike-{ext.name} {{",
        # The managed hosts' identities too: they send no IDr (RFC 7296 section 3.5 makes
        # it optional), so charon looks the key up for (%any, host) while checking AUTH.
        *(
            f"    id-{i} = {identity}"
            for i, identity in enumerate([ext.identity, *(c.identity for c in ext.connections)])
        ),
        f"    secret = 0s{secret}",
        "  }",
        "}",
    ]
    return "\n".join(lines) + "\n"


def build_network(record: LabRecord, layout: LabLayout, ext: ExternalLayout) -> None:
    """The peer's namespace on the bridge, its address and its sites."""
    netns.add_netns(record, ext.netns)
    br = layout.bridge_netns
    netns.veth(br, ext.bridge_port, "eth0", ext.netns)
    netns.ip("link", "set", ext.bridge_port, "master", netns.BRIDGE, "up", netns=br)
    netns.set_address(ext.netns, "eth0", ext.address, ext.prefixlen)
    for site in ext.sites:
        # No dummy interfaces on this kernel: a veth pair kept inside the namespace.
        peer = f"{site.interface}p"
        netns.veth(ext.netns, site.interface, peer)
        netns.ip("link", "set", peer, "up", netns=ext.netns)
        netns.set_address(ext.netns, site.interface, site.address, site.prefixlen)


def _vici_ready(directory: Path) -> bool:
    if not (directory / "charon.vici").exists():
        return False
    return run_swanctl(directory, "--version").returncode == 0


def start_charon(record: LabRecord, ext: ExternalLayout) -> int:
    """Start charon in ``ext``'s namespace and load its connections; returns its pid."""
    directory = external_dir(record, ext.name).absolute()
    run_dir = make_private_directory(directory) / "run"
    run_dir.mkdir(mode=0o700)
    conf = directory / "strongswan.conf"
    conf.write_text(strongswan_conf(directory, ext.port, ext.aggressive))
    swanctl_file = directory / "swanctl.conf"
    write_atomically(swanctl_file, swanctl_conf(ext).encode())
    record.add("charon", name=ext.name, netns=ext.netns, dir=str(directory), pid=None)
    return _launch(record, ext.name, ext.netns, directory)


def restart_charon(record: LabRecord, name: str) -> int:
    """Start charon again for the external peer ``name`` after its process died (killed,
    as a peer's crash and reboot in strongSwan's dpd-restart scenario): the same
    namespace, directory and configuration files as they are now, and a new process
    that holds no SAs. Returns its pid; refused while the recorded charon still runs."""
    for r in record.resources("charon"):
        if r.get("name") != name:
            continue
        pid = r.get("pid")
        if isinstance(pid, int) and netns.pid_alive(pid) and is_charon(pid):
            raise LabError(f"charon {pid} still plays {name}: stop it before a restart")
        directory = Path(str(r["dir"]))
        # The dead charon's pid file: a new process given its pid would block the start.
        with contextlib.suppress(FileNotFoundError):
            (directory / "run" / "charon.pid").unlink()
        return _launch(record, name, str(r["netns"]), directory)
    raise LabError(f"the lab has no external peer {name!r} played by charon")


def _launch(record: LabRecord, name: str, netns_name: str, directory: Path) -> int:
    """charon in ``netns_name`` with ``directory``'s strongswan.conf, a private /run and
    the connections of its swanctl.conf loaded; returns its pid once they are."""
    run_dir = directory / "run"
    conf = directory / "strongswan.conf"
    swanctl_file = directory / "swanctl.conf"
    # A killed charon leaves its vici socket behind: readiness is the new one answering.
    with contextlib.suppress(FileNotFoundError):
        (directory / "charon.vici").unlink()
    env = {**os.environ, "STRONGSWAN_CONF": str(conf)}
    script = f'mount --bind "{run_dir}" /run && exec {CHARON}'
    with open(directory / "charon.out", "ab") as out:
        proc = subprocess.Popen(
            ["ip", "netns", "exec", netns_name, *UNSHARE, "sh", "-c", script],
            env=env,
            cwd=directory,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    # ip, unshare and sh each exec the next: the pid is charon's.
    _set_pid(record, name, proc.pid)
    deadline = time.monotonic() + START_TIMEOUT
    while not _vici_ready(directory):
        if proc.poll() is not None:
            raise LabError(f"charon for {name} exited with {proc.returncode}: {_tail(directory)}")
        if time.monotonic() > deadline:
            raise LabError(f"charon for {name} did not open its vici socket: {_tail(directory)}")
        time.sleep(0.05)
    res = run_swanctl(directory, "--load-all", "--noprompt", "--file", str(swanctl_file))
    if res.returncode != 0:
        raise LabError(
            f"swanctl could not load {name}'s connections: "
            f"{(res.stdout + res.stderr).strip()[-800:]}"
        )
    return proc.pid


def _set_pid(record: LabRecord, name: str, pid: int) -> None:
    for r in record.resources("charon"):
        if r.get("name") == name:
            r["pid"] = pid
    record.save()


def _tail(directory: Path) -> str:
    texts = []
    for name in ("charon.out", "charon.log"):
        with contextlib.suppress(OSError):
            texts.append((directory / name).read_text(errors="replace")[-600:].strip())
    return " | ".join(t for t in texts if t) or "(no output)"


def is_charon(pid: int) -> bool:
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return bool(argv) and argv[0].endswith(b"charon")


def stop_charons(record: LabRecord | None, progress: Callable[[str], None]) -> int:
    """SIGTERM every recorded charon still running (it deletes its SAs), SIGKILL after
    a grace period; returns how many were stopped."""
    if record is None:
        return 0
    pids = []
    for r in record.resources("charon"):
        pid = r.get("pid")
        if isinstance(pid, int) and netns.pid_alive(pid) and is_charon(pid):
            pids.append(pid)
            progress(f"stopping charon {pid} ({r.get('name')})")
    left = netns.kill_and_wait(pids, signal.SIGTERM, STOP_GRACE)
    netns.kill_and_wait(left, signal.SIGKILL)
    return len(pids)


def build(record: LabRecord, layout: LabLayout, progress: Callable[[str], None]) -> None:
    for ext in layout.externals.values():
        build_network(record, layout, ext)
        pid = start_charon(record, ext)
        hosts = ", ".join(c.host for c in ext.connections) or "no hosts"
        sites = ", ".join(s.address for s in ext.sites) or "no sites"
        progress(f"external peer {ext.name}: {ext.netns} {ext.address}; {sites}")
        progress(f"charon {pid} plays {ext.name} for {hosts}")


def list_sas(directory: Path) -> list[dict[str, Any]]:
    """charon's IKE SAs as ``swanctl --list-sas --raw`` reports them, one dict each
    (name, state, child SA names and states)."""
    res = run_swanctl(directory, "--list-sas", "--raw")
    if res.returncode != 0:
        raise LabError(f"swanctl --list-sas failed: {(res.stdout + res.stderr).strip()}")
    out = []
    for line in res.stdout.splitlines():
        line = line.strip()
        if line.startswith("list-sa event"):
            out += parse_list_sa(line[len("list-sa event") :])
    return out


def parse_list_sa(text: str) -> list[dict[str, Any]]:
    """The IKE SAs of one raw ``list-sa`` event: ``{name {state=ESTABLISHED … child-sas
    {c-1 {name=c state=INSTALLED …}}}}``, keeping the fields the lab reports."""
    tokens = text.replace("{", " { ").replace("}", " } ").split()
    depth, path, sas = 0, [], []
    current: dict[str, Any] | None = None
    child: dict[str, str] | None = None
    for i, tok in enumerate(tokens):
        if tok == "{":
            depth += 1
            path.append(tokens[i - 1] if i else "")
            if depth == 2:
                current = {"name": path[-1], "state": "", "children": []}
                sas.append(current)
            elif depth == 4 and current is not None and path[-2] == "child-sas":
                child = {"name": "", "state": ""}
                current["children"].append(child)
        elif tok == "}":
            depth -= 1
            path.pop()
        elif "=" in tok:
            key, _, value = tok.partition("=")
            if depth == 2 and current is not None and key in ("state", "remote-host"):
                current[key] = value
            elif depth == 4 and child is not None and key in ("name", "state"):
                child[key] = value
    return sas
