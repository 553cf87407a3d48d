"""IKE SA + first child SA establishments per second: strongSwan's charon against ours.

A charon initiator (driven through vici by concurrent ``initiate`` calls, each a new
IKE SA with its child) runs in one network namespace. In the other namespace the
responder is first a second charon, then our IKE core, in the same run and with the
same load. A setup counts when the initiator's ``initiate`` returns with the child SA
installed (charon reports it), for either responder alike.

--version 2 (the default): IKEv2, PSK, x25519, AES-GCM (IKE_SA_INIT + IKE_AUTH with the
child); our side is the test driver tests/support/ike_driver.py around
IkeResponderGate and IkeSa.

--version 1: IKEv1 (charon's ``version = 1``), Main mode with a pre-shared key and then
Quick mode (RFC 2409 sections 5.4 and 5.5): AES-128-CBC, SHA-256, ECP-256 in phase 1,
AES-128-GCM for ESP (no PFS). kernel-libipsec claims a NAT, so from message 5 on both
responders also run NAT-T (RFC 3947: UDP 4500). Our side is
tests/support/ike_v1_responder.py: one IkeV1Sa responder per incoming Main mode
message 1, routed by initiator cookie. Its counts (events, dropped datagrams and their
reasons, failed SAs, exceptions; warmup included) come out with the rates. charon's
IKEv1 initiator would put concurrent initiates of one connection on one ISAKMP SA, so
each initiate names a connection of its own (see ``initiator_conns``). No SA is
deleted during a run, and with IKEv1 both rates fall as SAs accumulate (charon's the
faster): compare runs of the same ``--count`` only.

Prints one JSON line:

    {"ours_per_s": ..., "strongswan_per_s": ..., "ratio": ours / strongswan,
     "version": 1 or 2, ...}

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
from collections.abc import Callable
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
from tests.support.ike_v1_responder import V1Responders  # noqa: E402

IKE = "aes256gcm16-prfsha384-x25519"
ESP = "aes256gcm16"
IKE_V1 = "aes128-sha256-ecp256"
"""Phase 1: AES-CBC (the only IKEv1 cipher here), the hash whose HMAC is the prf, ECP-256."""
ESP_V1 = "aes128gcm16"
PROPOSALS = {2: (IKE, ESP), 1: (IKE_V1, ESP_V1)}
"""IKE and ESP proposals (strongSwan notation) by IKE version."""


def conn(
    local: str,
    remote: str,
    local_id: str,
    remote_id: str,
    lnet: str,
    rnet: str,
    version: int = 2,
    name: str = "rate",
    over_time: int | None = None,
) -> dict[str, Any]:
    ike, esp = PROPOSALS[version]
    extra: dict[str, str] = {}
    if version == 1:
        # IKEv1 in charon renews an ISAKMP SA by reauthentication: keep that off too.
        extra.update(reauth_time="0", dpd_delay="0")
    if over_time is not None:
        extra["over_time"] = f"{over_time}s"
    return {
        name: {
            "version": str(version),
            "local_addrs": [local],
            "remote_addrs": [remote],
            "proposals": [ike],
            "unique": "never",
            "rekey_time": "0",
            **extra,
            "local": {"auth": "psk", "id": local_id},
            "remote": {"auth": "psk", "id": remote_id},
            "children": {
                "net": {
                    "local_ts": [lnet],
                    "remote_ts": [rnet],
                    "esp_proposals": [esp],
                    "rekey_time": "0",
                    "start_action": "none",
                }
            },
        }
    }


def initiator_conns(version: int, initiates: int) -> list[dict[str, Any]]:
    """The initiator's connections, one per initiate in order (repeated for IKEv2).

    IKEv2: one connection; ``reuse_ikesa = no`` makes every initiate a new IKE SA.
    IKEv1: charon 5.9.8 puts an IKEv1 initiate on any IKE SA of an equal connection,
    established or still in Main mode, whatever ``reuse_ikesa`` says (measured here:
    22 initiates of one connection made 2 Main modes and 20 Quick modes). Connections
    that differ only in name are equal, so each initiate gets its own connection that
    differs in ``over_time``, which nothing reads while rekey_time and reauth_time are 0.
    """
    if version == 2:
        one = conn(CHARON_ADDR, OUR_ADDR, CHARON_ID, OUR_ID, CHARON_NET, OUR_NET)
        return [one] * initiates
    return [
        conn(
            CHARON_ADDR,
            OUR_ADDR,
            CHARON_ID,
            OUR_ID,
            CHARON_NET,
            OUR_NET,
            version,
            name=f"rate{i}",
            over_time=86400 + i,
        )
        for i in range(initiates)
    ]


def load(charon: Charon, configs: list[dict[str, Any]]) -> None:
    session = charon.session()
    session.load_shared({"type": "IKE", "data": PSK, "owners": [OUR_ID, CHARON_ID]})
    for config in {next(iter(c)): c for c in configs}.values():
        session.load_conn(config)


def drive(initiator: Charon, names: list[str], concurrency: int) -> tuple[float, int]:
    """One initiate per name in ``names`` (IKE SA connection names), ``concurrency`` at
    a time; returns (seconds, failures)."""
    remaining = iter(names)
    lock = threading.Lock()
    failures = [0]

    def worker() -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(str(initiator.socket))
        session = vici.Session(sock)
        while True:
            with lock:
                name = next(remaining, None)
            if name is None:
                break
            try:
                for _ in session.initiate({"child": "net", "ike": name, "timeout": 20000}):
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


def run_ours(
    version: int, ns: str, directory: Path, profile: str | None
) -> tuple[OurPeer, Callable[[], dict[str, Any]]]:
    """Our responder for ``version``, started, and how to read its counts."""
    spec = our_spec(*PROPOSALS[version])
    if profile:
        spec["profile"] = str(Path(profile).resolve())
    if version == 1:
        responders = V1Responders(ns, directory, spec)
        return responders, lambda: v1_counts(settled(responders))
    spec["quiet"] = True
    peer = OurPeer(ns, directory, spec)

    def count() -> dict[str, Any]:
        peer.command("count")
        return {"ours_established": peer.wait("Count")["established"]}

    return peer, count


def settled(responders: V1Responders, patience: float = 5.0) -> dict[str, Any]:
    """The responders' counts once every phase 1 they finished has its child, or after
    ``patience`` seconds. charon's initiate returns when charon installs the child, as it
    sends Quick mode message 3 (RFC 2409 section 5.5): ours counts the child when that
    message arrives, which may be just after the last initiate returned (seen once as
    2049 children of 2050), or a retransmission of message 2 later if it was lost."""
    deadline = time.monotonic() + patience
    while True:
        count = responders.counts()
        events = count["events"]
        done = events.get("ChildSaEstablished", 0) >= events.get("IkeSaEstablished", 0)
        if done or time.monotonic() >= deadline:
            return count
        time.sleep(0.1)


def v1_counts(count: dict[str, Any]) -> dict[str, Any]:
    events = count["events"]
    return {
        "ours_established": events.get("IkeSaEstablished", 0),
        "ours_children": events.get("ChildSaEstablished", 0),
        "ours_sas_made": count["created"],
        "ours_sas_failed": events.get("IkeSaFailed", 0),
        "ours_children_failed": events.get("ChildSaFailed", 0),
        "ours_dropped": count["dropped"],
        "ours_unrouted": count["unrouted"],
        "ours_drop_reasons": count["drop_reasons"],
        "ours_failure_reasons": count["failure_reasons"],
        "ours_raised": count["raised"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--version",
        type=int,
        choices=(1, 2),
        default=2,
        help="IKE version: 2 (IKE_SA_INIT + IKE_AUTH, PSK, x25519, AES-GCM) or 1 "
        "(charon's version = 1: Main mode PSK + Quick mode, aes128-sha256-ecp256, "
        "ESP aes128gcm16; ours is one IkeV1Sa responder per Main mode, by cookie). "
        "Default 2",
    )
    parser.add_argument("--count", type=int, default=2000, help="IKE SAs per responder")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--log-level", type=int, default=-1, help="charon log level (debug)")
    parser.add_argument("--profile", help="write a cProfile of our responder to this file")
    args = parser.parse_args()
    reason = skip_reason()
    if reason:
        sys.exit(f"ike_rate: {reason}")
    version = args.version
    initiator_confs = initiator_conns(version, args.warmup + args.count)
    names = [next(iter(c)) for c in initiator_confs]
    warmup, measured = names[: args.warmup], names[args.warmup :]
    results: dict[str, Any] = {
        "version": version,
        "count": args.count,
        "concurrency": args.concurrency,
    }
    with interop_setup(log_level=args.log_level, threads=64) as (topology, initiator, directory):
        load(initiator, initiator_confs)
        # Phase 1: charon responder.
        responder = Charon(
            topology.our_ns, directory, threads=64, log_level=args.log_level, name="responder"
        )
        try:
            load(
                responder,
                [conn(OUR_ADDR, CHARON_ADDR, OUR_ID, CHARON_ID, OUR_NET, CHARON_NET, version)],
            )
            drive(initiator, warmup, args.concurrency)
            seconds, failed = drive(initiator, measured, args.concurrency)
        finally:
            responder.close()
        results["strongswan_per_s"] = round((args.count - failed) / seconds, 1)
        results["strongswan_failed"] = failed
        # Phase 2: ours, against a fresh initiator (no SAs left over from phase 1).
        initiator.close()
        fresh = Charon(topology.charon_ns, directory, threads=64, log_level=-1, name="initiator2")
        ours = None
        try:
            load(fresh, initiator_confs)
            ours, counts = run_ours(version, topology.our_ns, directory, args.profile)
            drive(fresh, warmup, args.concurrency)
            seconds, failed = drive(fresh, measured, args.concurrency)
            ours_counts = counts()
        finally:
            if ours is not None:
                ours.close()
            fresh.close()
        results["ours_per_s"] = round((args.count - failed) / seconds, 1)
        results["ours_failed"] = failed
        results.update(ours_counts)
    base = results["strongswan_per_s"]
    results["ratio"] = round(results["ours_per_s"] / base, 3) if base else None
    ordered = {k: results[k] for k in ("ours_per_s", "strongswan_per_s", "ratio")}
    print(json.dumps({**ordered, **results}))


if __name__ == "__main__":
    main()
