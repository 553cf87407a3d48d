"""A data plane with manually keyed SAs (RFC 4301 section 4.5: manual SA management), run
as its own process: no IKE, fixed SPIs and keys from a JSON configuration.

It serves integration tests and the throughput benchmark, and an operator can use it to
check the data plane between two hosts without IKE::

    python -m vpnfleet.agent.io.manual_keying '{"tun": "vpn0", "local": "10.77.0.1",
        "peer": "10.77.0.2", "local_prefix": "10.1.0.0/24", "remote_prefix": "10.2.0.0/24",
        "inbound": {"spi": 4097, "encryption": "aes128gcm16", "key": "<40 hex digits>"},
        "outbound": {"spi": 8194, "encryption": "aes128gcm16", "key": "<40 hex digits>"}}'

It opens the TUN device, sets it up with the MTU left after ESP overhead, routes the
remote prefix into it, binds UDP 4500 (or a raw ESP socket with ``"encap": "raw"``),
installs one protect entry and the SA pair, and prints ``{"ready": ...}``. The TUN
device joins received TCP segments (``tun_offload``) unless ``"offload": false``. A line
``stats`` on standard input prints the stats as one JSON line; end of input (or SIGTERM)
stops it after printing them one last time. ``--profile FILE`` writes a cProfile of the
whole run to FILE.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import signal
import sys
from typing import Any

from ..esp.sa import SaParams
from ..esp.spd import Action, Selector, SpdEntry, TrafficSelector
from ..esp.transforms import Encryption, Integrity
from .dataplane import DataPlane
from .dataplane_model import Encap
from .rawesp import RawEspSocket
from .routes import Routing
from .socket_buffers import SOCKET_BUFFER_BYTES
from .tun import LinuxTun
from .tun_offload import OffloadTun
from .tunnel_mtu import AEAD_GCM16, CBC_SHA256, tunnel_mtu
from .udp import NATT_PORT, UdpEndpoint

POLICY = "manual"


def sa_params(spec: dict[str, Any], src: str, dst: str, what: str) -> SaParams:
    """SaParams from ``{"spi", "encryption", "key", "integrity"?, "integ_key"?}``."""
    try:
        return SaParams(
            int(spec["spi"]),
            Encryption(spec["encryption"]),
            bytes.fromhex(spec["key"]),
            Integrity(spec["integrity"]) if spec.get("integrity") else None,
            bytes.fromhex(spec.get("integ_key", "")),
            src=src,
            dst=dst,
        )
    except (KeyError, ValueError, TypeError) as exc:
        raise ValueError(f"{what} SA: {exc}") from None


async def run(config: dict[str, Any]) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    local, peer = config["local"], config["peer"]
    local_prefix, remote_prefix = config["local_prefix"], config["remote_prefix"]
    encap = Encap(config.get("encap", "udp"))
    port = int(config.get("port", NATT_PORT))
    inbound = sa_params(config["inbound"], peer, local, "inbound")
    outbound = sa_params(config["outbound"], local, peer, "outbound")
    overhead = AEAD_GCM16 if outbound.encryption.is_aead else CBC_SHA256
    mtu = int(config.get("mtu") or tunnel_mtu(1500, overhead, udp_encap=encap is Encap.UDP))
    buffer_bytes = int(config.get("buffer_bytes", SOCKET_BUFFER_BYTES))
    tun: LinuxTun | OffloadTun
    if config.get("offload", True):
        tun = OffloadTun(config["tun"], mtu=mtu)
    else:
        tun = LinuxTun(config["tun"], mtu=mtu)
    data_plane = DataPlane(
        tun,
        spd=[SpdEntry(Selector.parse(local_prefix, remote_prefix), Action.PROTECT, POLICY)],
        clock=loop.time,
    )
    endpoint = UdpEndpoint(
        lambda data, addr, port: None,
        data_plane.receive_esp,
        host=local,
        ike_port=None,
        natt_port=port,
        buffer_bytes=buffer_bytes,
    )
    raw = (
        RawEspSocket(
            data_plane.receive_raw_esp,
            host=local,
            buffer_bytes=buffer_bytes,
        )
        if encap is Encap.RAW
        else None
    )
    try:
        data_plane.attach(endpoint, raw)
        data_plane.install_child_sa(
            POLICY,
            inbound,
            outbound,
            peer if encap is Encap.RAW else (peer, port),
            encap=encap,
            local_ts=[TrafficSelector.from_network(local_prefix)],
            remote_ts=[TrafficSelector.from_network(remote_prefix)],
        )
        async with Routing() as routing:
            await routing.link_up(tun.name, mtu)
            await routing.add_route(remote_prefix, tun.name)
        endpoint.start(loop)
        if raw is not None:
            raw.start(loop)
        data_plane.start(loop)
        print(json.dumps({"ready": True, "tun": tun.name, "mtu": mtu}), flush=True)
        await _serve_stdin(loop, data_plane)
        return _report(data_plane, endpoint, raw)
    finally:
        data_plane.stop()
        endpoint.close()
        if raw is not None:
            raw.close()
        tun.close()


async def _serve_stdin(loop: asyncio.AbstractEventLoop, data_plane: DataPlane) -> None:
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)

    async def commands() -> None:
        while True:
            line = await reader.readline()
            if not line:
                break
            if line.strip() == b"stats":
                print(json.dumps(data_plane.stats().as_dict()), flush=True)

    task = asyncio.ensure_future(commands())
    stopper = asyncio.ensure_future(stop.wait())
    await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
    task.cancel()
    stopper.cancel()


def _report(
    data_plane: DataPlane, endpoint: UdpEndpoint, raw: RawEspSocket | None
) -> dict[str, Any]:
    report = data_plane.stats().as_dict()
    report["udp"] = endpoint.counters.as_dict() | {"kernel_drops": endpoint.kernel_drops()}
    if raw is not None:
        report["raw_esp"] = raw.counters.as_dict() | {"kernel_drops": raw.kernel_drops()}
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="manual_keying", description=__doc__.splitlines()[0])
    parser.add_argument("config", help="the configuration as a JSON object")
    parser.add_argument("--profile", metavar="FILE", help="write a cProfile of the run here")
    args = parser.parse_args(argv)
    try:
        config = json.loads(args.config)
        if not isinstance(config, dict):
            raise ValueError("the configuration must be a JSON object")
    except ValueError as exc:
        parser.error(f"bad configuration: {exc}")
    profiler = cProfile.Profile() if args.profile else None
    try:
        if profiler is not None:
            profiler.enable()
        report = asyncio.run(run(config))
    except (KeyError, ValueError, OSError) as exc:
        print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}), flush=True)
        return 1
    finally:
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(args.profile)
    print(json.dumps(report), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
