"""ESP data-plane throughput between two namespaces: ours against strongSwan's userspace
ESP (charon with kernel-libipsec), in the same run on the same kind of namespaces.

* ``ours_mbps``: iperf3 TCP (site A -> site B, one stream) through our data plane with
  manually keyed AES-128-GCM-16 SAs over UDP 4500 (``vpnfleet.agent.io.manual_keying``).
* ``ours_raw_mbps``: the same transfer with ESP straight over IP (protocol 50, raw
  sockets), as agents send it to peers with no NAT between them (RFC 7296 section
  2.23); the UDP path batches sends with GSO, the raw path sends one packet per call.
* ``strongswan_mbps``: the same transfer through two charon peers (PSK, IKE
  aes128gcm16-prfsha256-x25519, ESP aes128gcm16, kernel-libipsec on ipsec0), each with
  its own strongswan.conf (STRONGSWAN_CONF), its own /run (a private mount namespace with
  a bind mount) and its own vici socket. If that part fails, ``strongswan_mbps`` is null,
  ``ratio`` too, and ``error`` says why.
* ``pps_64`` / ``pps_1400``: packets per second our receiving data plane delivered to
  its TUN while iperf3 -u flooded the tunnel at full speed with 64- and 1400-byte IP
  packets (``iperf3_pps_*``: what the iperf3 server itself received, lower when the
  flood starves it of CPU on two cores).

Prints one JSON line. Needs root, iperf3, and strongSwan (charon, swanctl,
libcharon-extra-plugins) for the comparison. ``--profile`` also runs one more TCP
transfer with both data planes under cProfile and prints their hot paths to stderr.
Every namespace, process and file made here is removed at the end, also on failure.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import pstats
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

# The repository root, for the lab helpers the tests share (tests/support).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.support.dataplane_lab import (
    PREFIX_A,
    PREFIX_B,
    UNDERLAY_A,
    UNDERLAY_B,
    SitePair,
    tcp_mbps,
    udp_pps,
)

CHARON = "/usr/lib/ipsec/charon"
CHARON_PLUGINS = (
    "random nonce drbg openssl aes sha1 sha2 hmac gcm chapoly curve25519 gmp kdf pem pkcs1 "
    "pkcs8 pkcs12 x509 pubkey revocation constraints kernel-libipsec kernel-netlink "
    "socket-default vici"
)
BENCH_PSK = "vpnfleet-bench-psk-only-for-namespaces"
IP_UDP_HEADERS = 28


def measure_ours(seconds: float, pps_seconds: float) -> dict[str, Any]:
    with SitePair() as pair:
        a, b = pair.start_data_planes()
        ping = pair.ping(2)
        if ping.returncode != 0:
            raise RuntimeError(f"no ping through our tunnel: {ping.stdout}{ping.stderr}")
        mbps = tcp_mbps(pair.iperf3(seconds))
        pps: dict[str, float] = {}
        for size in (64, 1400):
            before = b.stats()["counters"]["tun_tx"]
            flood = pair.iperf3(pps_seconds, udp_length=size - IP_UDP_HEADERS)
            delivered = b.stats()["counters"]["tun_tx"] - before
            # What our receiver wrote to its TUN per second of flood (the tunnel's
            # rate; the iperf3 server, starved of CPU by the flood, may drop more).
            pps[f"pps_{size}"] = delivered / float(flood["end"]["sum"]["seconds"])
            pps[f"iperf3_pps_{size}"] = udp_pps(flood)
        reports = [a.finish(), b.finish()]
        integrity = sum(s["counters"]["integrity_failures"] for r in reports for s in r["sas"])
        return (
            {"ours_mbps": round(mbps, 1)}
            | {k: round(v) for k, v in pps.items()}
            | {"integrity_failures": integrity}
        )


def measure_ours_raw(seconds: float) -> float:
    with SitePair() as pair:
        pair.start_data_planes(encap="raw")
        ping = pair.ping(2)
        if ping.returncode != 0:
            raise RuntimeError(f"no ping through raw ESP: {ping.stdout}{ping.stderr}")
        return tcp_mbps(pair.iperf3(seconds))


def profile_ours(seconds: float, top: int) -> None:
    """One more TCP transfer with both data planes under cProfile; hot paths to stderr."""
    with SitePair() as pair:
        a, b = pair.start_data_planes(profile=True)
        mbps = tcp_mbps(pair.iperf3(seconds))
        a.finish()
        b.finish()
        for side, ns in (("sender (A: TUN -> ESP)", pair.a), ("receiver (B: ESP -> TUN)", pair.b)):
            out = io.StringIO()
            stats = pstats.Stats(str(pair.workdir / f"{ns}.prof"), stream=out)
            stats.strip_dirs().sort_stats("tottime").print_stats(top)
            print(f"== profile {side}, {mbps:.0f} Mbit/s under cProfile", file=sys.stderr)
            print(out.getvalue(), file=sys.stderr)


# -- strongSwan -------------------------------------------------------------------------


def _write_charon_files(node: Path, local: str, remote: str, lts: str, rts: str) -> None:
    (node / "run").mkdir(parents=True)
    (node / "strongswan.conf").write_text(
        f"""charon {{
  load = {CHARON_PLUGINS}
  install_routes = yes
  threads = 16
  plugins {{
    vici {{
      socket = unix://{node}/charon.vici
    }}
  }}
  filelog {{
    bench {{
      path = {node}/charon.log
      default = 1
    }}
  }}
}}
"""
    )
    me, peer = ("a", "b") if local == UNDERLAY_A else ("b", "a")
    (node / "swanctl.conf").write_text(
        f"""connections {{
  bench {{
    local_addrs = {local}
    remote_addrs = {remote}
    proposals = aes128gcm16-prfsha256-x25519
    local {{
      auth = psk
      id = {me}
    }}
    remote {{
      auth = psk
      id = {peer}
    }}
    children {{
      net {{
        local_ts = {lts}
        remote_ts = {rts}
        esp_proposals = aes128gcm16
        mode = tunnel
      }}
    }}
  }}
}}
secrets {{
  ike-bench {{
    id-a = a
    id-b = b
    secret = "{BENCH_PSK}"
  }}
}}
"""
    )
    os.chmod(node / "swanctl.conf", 0o600)


def _swanctl(node: Path, *args: str, timeout: float = 30) -> str:
    done = subprocess.run(
        ["swanctl", *args, "--uri", f"unix://{node}/charon.vici"],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"swanctl {' '.join(args)}: {done.stdout[-500:]}{done.stderr[-500:]}")
    return done.stdout


def _wait_for(path: Path, proc: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            raise RuntimeError(f"charon exited ({proc.returncode}) before {path} appeared")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{path} did not appear within {timeout} s")
        time.sleep(0.05)


def measure_strongswan(seconds: float) -> float:
    with SitePair() as pair:
        nodes: dict[str, tuple[Path, subprocess.Popen[bytes]]] = {}
        for ns, local, remote, lts, rts in (
            (pair.a, UNDERLAY_A, UNDERLAY_B, PREFIX_A, PREFIX_B),
            (pair.b, UNDERLAY_B, UNDERLAY_A, PREFIX_B, PREFIX_A),
        ):
            node = pair.workdir / ns
            _write_charon_files(node, local, remote, lts, rts)
            env = dict(os.environ, STRONGSWAN_CONF=str(node / "strongswan.conf"))
            # charon's pid file path is compiled in: each charon gets a private /run.
            script = f"mount --bind {node}/run /run && exec {CHARON}"
            proc = pair.spawn(
                ns,
                ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", script],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            nodes[ns] = (node, proc)
        for node, proc in nodes.values():
            _wait_for(node / "charon.vici", proc)
            _swanctl(node, "--load-all", "--file", str(node / "swanctl.conf"))
        _swanctl(nodes[pair.a][0], "--initiate", "--child", "net", timeout=30)
        ping = pair.ping(2)
        if ping.returncode != 0:
            log = (nodes[pair.a][0] / "charon.log").read_text()[-1500:]
            raise RuntimeError(f"no ping through strongSwan: {ping.stdout} {log}")
        return tcp_mbps(pair.iperf3(seconds))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="each TCP transfer")
    parser.add_argument("--pps-seconds", type=float, default=5.0, help="each UDP flood")
    parser.add_argument("--profile", action="store_true", help="cProfile hot paths to stderr")
    parser.add_argument("--profile-top", type=int, default=25)
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        parser.error("needs root (network namespaces)")
    result: dict[str, Any] = {"bench": "esp_throughput", "seconds": args.seconds}
    result.update(measure_ours(args.seconds, args.pps_seconds))
    result["ours_raw_mbps"] = round(measure_ours_raw(args.seconds), 1)
    try:
        result["strongswan_mbps"] = round(measure_strongswan(args.seconds), 1)
        result["ratio"] = round(result["ours_mbps"] / result["strongswan_mbps"], 2)
    except (RuntimeError, OSError, subprocess.SubprocessError, KeyError, ValueError) as exc:
        result["strongswan_mbps"] = None
        result["ratio"] = None
        result["error"] = f"strongSwan: {exc}"
    if args.profile:
        profile_ours(min(args.seconds, 5.0), args.profile_top)
    order = ["ours_mbps", "strongswan_mbps", "ratio", "pps_64", "pps_1400"]
    ordered = {k: result[k] for k in order} | {k: v for k, v in result.items() if k not in order}
    print(json.dumps(ordered), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
