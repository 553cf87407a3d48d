"""IKE_SA_INIT requests per second through the responder gate (agent/ike/gate.py, no
I/O) while N other IKE SAs are half open: the gate's cost per request should not grow
with N.

    .venv/bin/python bench/ike_gate.py [--half-open 0,1000,5000] [--requests 300]

For each N, N half-open SAs are made first (one IKE_SA_INIT request with a fresh
initiator SPI each), then ``--requests`` more are timed, with the garbage collector
kept off the N already made (gc.freeze). Caps and the cookie threshold are set out of
the way. Prints one JSON line:

    {"per_s": {"0": ..., "1000": ..., "5000": ...}, "ratio": per_s at the largest N / at 0}
"""

from __future__ import annotations

import argparse
import gc
import inspect
import json
import os
import sys
import time
from typing import Any

from vpnfleet.agent.ike.config import ChildConfig, Identity, IkeConfig, selector
from vpnfleet.agent.ike.gate import IkeResponderGate
from vpnfleet.agent.ike.ike_sa import IkeSa
from vpnfleet.agent.ike.proposals import EspProposal, IkeProposal
from vpnfleet.agent.ike.states import Role

PROPOSAL = "aes256gcm16-prfsha384-x25519"
SOURCE = ("192.0.2.1", 500)
NOW = 1000.0


def config(local: str, remote: str) -> IkeConfig:
    return IkeConfig(
        Identity.parse(local),
        Identity.parse(remote),
        b"bench pre-shared key",
        (IkeProposal.parse(PROPOSAL),),
        ChildConfig(
            "net",
            (EspProposal.parse("aes256gcm16"),),
            (selector("10.1.0.0/16"),),
            (selector("10.2.0.0/16"),),
        ),
    )


def gate() -> IkeResponderGate:
    kwargs: dict[str, Any] = {"half_open_threshold": 1 << 30}
    if "table" in inspect.signature(IkeResponderGate).parameters:
        from vpnfleet.agent.ike.admission import HalfOpenTable, ResponderLimits

        big = 1 << 30
        kwargs["table"] = HalfOpenTable(ResponderLimits(big, big, big))
    return IkeResponderGate(config("right", "left"), **kwargs)


def first_request() -> bytes:
    sa = IkeSa(config("left", "right"), Role.INITIATOR)
    sa.initiate(SOURCE, NOW)
    ((data, _),) = sa.datagrams_to_send(NOW)
    return data


def rate(half_open: int, requests: int, template: bytes) -> float:
    g = gate()
    for _ in range(half_open):
        assert g.receive_datagram(os.urandom(8) + template[8:], SOURCE, NOW).new
    batch = [os.urandom(8) + template[8:] for _ in range(requests)]
    gc.collect()
    gc.freeze()  # the filler SAs are not what is measured: keep the collector off them
    start = time.perf_counter()
    for data in batch:
        g.receive_datagram(data, SOURCE, NOW)
    elapsed = time.perf_counter() - start
    gc.unfreeze()
    return requests / elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--half-open", default="0,1000,5000")
    parser.add_argument("--requests", type=int, default=300)
    args = parser.parse_args()
    sizes = [int(n) for n in args.half_open.split(",")]
    template = first_request()
    per_s = {str(n): round(rate(n, args.requests, template), 1) for n in sizes}
    first, last = per_s[str(sizes[0])], per_s[str(sizes[-1])]
    print(json.dumps({"per_s": per_s, "ratio": round(last / first, 2), "requests": args.requests}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
