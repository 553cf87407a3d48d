"""ESP seal/open rate through our SA encap/decap, one core, no I/O.

For AES-128-GCM and ChaCha20-Poly1305 at 64- and 1400-octet inner packets, measures
packets per second through OutboundSa.encap and InboundSa.decap (sequence numbers,
padding, replay window, counters included), and the bare cryptography AEAD call on the
same sizes, so the difference is our per-packet overhead. Prints one JSON line:

    {"aes128gcm16_seal_pps_64": ..., "aes128gcm16_open_pps_64": ...,
     "aes128gcm16_raw_seal_pps_64": ..., ..., "packets": N, "repeats": R}

Each figure is the best of ``--repeats`` runs of ``--packets`` packets.
"""

from __future__ import annotations

import argparse
import json
import time

from vpnfleet.agent.esp.sa import InboundSa, OutboundSa, SaParams
from vpnfleet.agent.esp.transforms import AeadSuite, Encryption

SIZES = (64, 1400)
TRANSFORMS = (Encryption.AES128GCM16, Encryption.CHACHA20POLY1305)


def inner_packet(size: int) -> bytes:
    return b"\x45" + bytes(size - 1)


def measure(encryption: Encryption, size: int, packets: int) -> tuple[float, float, float]:
    params = SaParams(0x1000, encryption, bytes(range(encryption.key_length)))
    payload = inner_packet(size)
    # Seal rate: packets are dropped as they are made, as a sender would hand them on.
    encap = OutboundSa(params, 0.0).encap
    start = time.perf_counter()
    for _ in range(packets):
        encap(payload, 4, 0.0)
    seal_s = time.perf_counter() - start

    # Open rate: a fresh pair, the packets made beforehand (untimed), opened in order.
    encap = OutboundSa(params, 0.0).encap
    sealed = [encap(payload, 4, 0.0) for _ in range(packets)]

    inbound = InboundSa(params, 0.0)
    decap = inbound.decap
    start = time.perf_counter()
    for packet in sealed:
        decap(packet, 0.0)  # type: ignore[arg-type]
    open_s = time.perf_counter() - start
    if inbound.counters.packets_in != packets:
        raise SystemExit(f"decap accepted {inbound.counters.packets_in} of {packets}")

    suite = AeadSuite(encryption, params.enc_key)
    seal = suite.seal
    iv, aad = bytes(8), bytes(8)
    plaintext = payload + bytes(4)
    start = time.perf_counter()
    for _ in range(packets):
        seal(iv, aad, plaintext)
    raw_s = time.perf_counter() - start
    return packets / seal_s, packets / open_s, packets / raw_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--packets", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if args.packets < 1 or args.repeats < 1:
        parser.error("--packets and --repeats must be at least 1")
    result: dict[str, int] = {}
    for encryption in TRANSFORMS:
        for size in SIZES:
            runs = [measure(encryption, size, args.packets) for _ in range(args.repeats)]
            name = str(encryption)
            result[f"{name}_seal_pps_{size}"] = round(max(r[0] for r in runs))
            result[f"{name}_open_pps_{size}"] = round(max(r[1] for r in runs))
            result[f"{name}_raw_seal_pps_{size}"] = round(max(r[2] for r in runs))
    result["packets"] = args.packets
    result["repeats"] = args.repeats
    print(json.dumps(result))


if __name__ == "__main__":
    main()
