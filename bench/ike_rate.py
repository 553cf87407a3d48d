"""IKE SA + first child SA establishments per second: strongSwan's charon against ours.

A charon initiator (driven through vici by concurrent ``initiate`` calls, each a new
IKE SA with its child: PSK, x25519, AES-GCM) runs in one network namespace. In the
other namespace the responder is first a second charon, then our IKE core (the
test driver tests/interop/ike_driver.py around IkeResponderGate and IkeSa), in the
same run and with the same load. Prints one JSON line:

    {"ours_per_s": ..., "strongswan_per_s": ..., "ratio": ours / strongswan, ...}

Needs root, strongswan-charon, swanctl and the kernel-libipsec plugin. Everything it
makes (namespaces, processes, the temp dir) is removed on exit.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

import vici

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # tests.support: the strongSwan harness the tests share

from tests.support.charon import (  # noqa: E402
    CHARON_ADDR,
    CHARON_ID,
    CHARON_NET,
    OUR_ADDR,
    OUR_ID,
    OUR_NET,
    PSK,
    Charon,
    OurPeer,
    interop_setup,
    our_spec,
    skip_reason,
)

IKE = "aes256gcm16-prfsha384-x25519"
ESP = "aes256gcm16"


def conn(local: str, remote: str, local_id: str, remote_id: str, lnet: str, rnet: str) -> dict:
    return {
        "rate": {
            "version": "2",
            "local_addrs": [local],
            "remote_addrs": [remote],
            "proposals": [IKE],
            "unique": "never",
            "rekey_time": "0",
            "local": {"auth": "psk", "id": local_id},
            "remote": {"auth": "psk", "id": remote_id},
            "children": {
                "net": {
                    "local_ts": [lnet],
                    "remote_ts": [rnet],
                    "esp_proposals": [ESP],
                    "rekey_time": "0",
                    "start_action": "none",
                }
            },
        }
    }


def load(charon: Charon, config: dict[str, Any]) -> None:
    session = charon.session()
    session.load_shared({"type": "IKE", "data": PSK, "owners": [OUR_ID, CHARON_ID]})
    session.load_conn(config)


def drive(initiator: Charon, count: int, concurrency: int) -> tuple[float, int]:
    """``count`` initiates, ``concurrency`` at a time; returns (seconds, failures)."""
    remaining = iter(range(count))
    lock = threading.Lock()
    failures = [0]

    def worker() -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(str(initiator.socket))
        session = vici.Session(sock)
        while True:
            with lock:
                if next(remaining, None) is None:
                    break
            try:
                for _ in session.initiate({"child": "net", "ike": "rate", "timeout": 20000}):
                    pass
            except Exception:
                with lock:
                    failures[0] += 1
        sock.close()

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - start, failures[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=2000, help="IKE SAs per responder")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--log-level", type=int, default=-1, help="charon log level (debug)")
    parser.add_argument("--profile", help="write a cProfile of our responder to this file")
    args = parser.parse_args()
    reason = skip_reason()
    if reason:
        sys.exit(f"ike_rate: {reason}")
    initiator_conn = conn(CHARON_ADDR, OUR_ADDR, CHARON_ID, OUR_ID, CHARON_NET, OUR_NET)
    results: dict[str, Any] = {"count": args.count, "concurrency": args.concurrency}
    with interop_setup(log_level=args.log_level, threads=64) as (topology, initiator, directory):
        load(initiator, initiator_conn)
        # Phase 1: charon responder.
        responder = Charon(
            topology.our_ns, directory, threads=64, log_level=args.log_level, name="responder"
        )
        try:
            load(responder, conn(OUR_ADDR, CHARON_ADDR, OUR_ID, CHARON_ID, OUR_NET, CHARON_NET))
            drive(initiator, args.warmup, args.concurrency)
            seconds, failed = drive(initiator, args.count, args.concurrency)
        finally:
            responder.close()
        results["strongswan_per_s"] = round((args.count - failed) / seconds, 1)
        results["strongswan_failed"] = failed
        # Phase 2: ours, against a fresh initiator (no SAs left over from phase 1).
        initiator.close()
        fresh = Charon(topology.charon_ns, directory, threads=64, log_level=-1, name="initiator2")
        spec = our_spec(IKE, ESP)
        spec["quiet"] = True
        if args.profile:
            spec["profile"] = str(Path(args.profile).resolve())
        ours = None
        try:
            load(fresh, initiator_conn)
            ours = OurPeer(topology.our_ns, directory, spec)
            drive(fresh, args.warmup, args.concurrency)
            seconds, failed = drive(fresh, args.count, args.concurrency)
            ours.command("count")
            established = ours.wait("Count")["established"]
        finally:
            if ours is not None:
                ours.close()
            fresh.close()
        results["ours_per_s"] = round((args.count - failed) / seconds, 1)
        results["ours_failed"] = failed
        results["ours_established"] = established
    base = results["strongswan_per_s"]
    results["ratio"] = round(results["ours_per_s"] / base, 3) if base else None
    ordered = {k: results[k] for k in ("ours_per_s", "strongswan_per_s", "ratio")}
    print(json.dumps({**ordered, **results}))


if __name__ == "__main__":
    main()
