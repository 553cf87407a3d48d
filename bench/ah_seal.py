"""AH protect/verify rate through our SA encap/decap, one core, no I/O.

For HMAC-SHA2-256-128 and AES-128-GMAC, tunnel mode over IPv4, at 64- and 1400-octet
inner packets: packets per second through OutboundAhSa.encap (outer header, AH, the
ICV over the header with its mutable fields zeroed) and InboundAhSa.decap (replay
window and ICV check). Prints one JSON line:

    {"sha256_protect_pps_64": ..., "sha256_verify_pps_64": ..., ..., "packets": N,
     "repeats": R}

Each figure is the best of ``--repeats`` runs of ``--packets`` packets.
"""

from __future__ import annotations

import argparse
import json
import time

from vpnfleet.agent.esp.ah import AhParams, InboundAhSa, OutboundAhSa
from vpnfleet.agent.esp.transforms import Integrity

SIZES = (64, 1400)
TRANSFORMS = (Integrity.HMAC_SHA2_256_128, Integrity.AES128GMAC)


def inner_packet(size: int) -> bytes:
    return b"\x45\x00" + size.to_bytes(2, "big") + bytes(size - 4)


def measure(integrity: Integrity, size: int, packets: int) -> tuple[float, float]:
    params = AhParams(
        0x1000,
        integrity,
        bytes(range(integrity.key_length)),
        src="192.0.2.1",
        dst="192.0.2.2",
    )
    inner = inner_packet(size)
    encap = OutboundAhSa(params, 0.0).encap
    start = time.perf_counter()
    protected = [encap(inner, 0.0) for _ in range(packets)]
    protect_s = time.perf_counter() - start
    inbound = InboundAhSa(params, 0.0)
    decap = inbound.decap
    start = time.perf_counter()
    for packet in protected:
        decap(packet, 0.0)  # type: ignore[arg-type]
    verify_s = time.perf_counter() - start
    if inbound.counters.packets_in != packets:
        raise SystemExit(f"decap accepted {inbound.counters.packets_in} of {packets}")
    return packets / protect_s, packets / verify_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--packets", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    result: dict[str, float | int] = {}
    for integrity in TRANSFORMS:
        for size in SIZES:
            runs = [measure(integrity, size, args.packets) for _ in range(args.repeats)]
            result[f"{integrity}_protect_pps_{size}"] = round(max(r[0] for r in runs))
            result[f"{integrity}_verify_pps_{size}"] = round(max(r[1] for r in runs))
    result["packets"] = args.packets
    result["repeats"] = args.repeats
    print(json.dumps(result))


if __name__ == "__main__":
    main()
