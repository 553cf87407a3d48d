"""Joining decrypted TCP segments for the offloading TUN (``tun_offload.coalesce``),
one core, no I/O.

A receive batch of 64 in-order segments of one flow (1348 octets of payload each, what
a 1400-octet tunnel MTU carries with TCP timestamps) is joined into frames, as the data
plane does at the end of each socket read. Prints one JSON line:

    {"bench": "tun_coalesce", "ns_per_segment": ..., "frames_per_batch": 2,
     "segments": 64, "repeats": R}

``ns_per_segment`` is the best of ``--repeats`` timings of ``--batches`` batches, divided
by the segments joined.
"""

from __future__ import annotations

import argparse
import json
import struct
import time

from vpnfleet.agent.io.tun_offload import coalesce

SEGMENTS = 64
PAYLOAD = 1348
TIMESTAMPS = bytes.fromhex("0101080a0000000100000002")


def segment(seq: int) -> bytes:
    tcp = struct.pack("!HHIIBBHHH", 40000, 5201, seq, 7, 8 << 4, 0x10, 512, 0, 0) + TIMESTAMPS
    ip = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 52 + PAYLOAD, 1, 0x4000, 64, 6, 0, bytes(4), bytes(4)
    )
    return ip + tcp + bytes(PAYLOAD)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    batch = [segment(i * PAYLOAD) for i in range(SEGMENTS)]
    frames = len(coalesce(batch))
    best = float("inf")
    for _ in range(args.repeats):
        start = time.perf_counter()
        for _ in range(args.batches):
            coalesce(batch)
        best = min(best, time.perf_counter() - start)
    print(
        json.dumps(
            {
                "bench": "tun_coalesce",
                "ns_per_segment": round(1e9 * best / args.batches / SEGMENTS),
                "frames_per_batch": frames,
                "segments": SEGMENTS,
                "repeats": args.repeats,
            }
        )
    )


if __name__ == "__main__":
    main()
