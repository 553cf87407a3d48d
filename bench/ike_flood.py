"""A flood of half-open IKE SAs and pre-auth fragment storms against a real agent: its
memory growth and how fast it handles the requests. Needs root.

    sudo .venv/bin/python bench/ike_flood.py [--sas-per-source 20] \\
        [--storm 24x49152 --storm 9x1000]

Two agents (`vpnfleet-agent run`) in two network namespaces bring a tunnel up; then
tests/integration/ike_flood.py, from 12 further addresses in a's namespace, opens
``--sas-per-source`` IKE SAs per address against b (answering COOKIEs), and from every
SA it got sends each storm ``COUNTxBYTES``: COUNT encrypted fragments of BYTES each of
an IKE_AUTH request that never completes. VmRSS of b is read from /proc before and
after. Everything it makes is removed on exit. Prints one JSON line:

    {"rss_growth_mib": ..., "init_per_s": ..., "fragments_per_s": ..., "half_open": ...,
     "tunnel_ok": true, ...}

``init_per_s``: IKE_SA_INIT requests sent (with the cookie retries) per second until the
last answer; ``fragments_per_s``: fragments per second, each SA's storm paced by a
round trip through b (what b handled, not what the sender could push).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

# The repository root, for the lab helpers the tests share (tests/support).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.flood_lab import FloodLab


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sas-per-source", type=int, default=20)
    parser.add_argument("--storm", action="append", default=None)
    args = parser.parse_args()
    storms = args.storm or ["24x49152", "9x1000"]
    if os.geteuid() != 0:
        print("ike_flood: needs root (network namespaces)", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="vpnfleet-ike-flood-") as tmp:
        lab = FloodLab(Path(tmp))
        try:
            lab.build()
            lab.start("b")
            lab.start("a")
            lab.wait_for("a", r"event child_up b")
            lab.wait_for("b", r"event child_up a")
            spis = lab.established_spis()
            before = lab.rss_kib("b")
            flood = lab.flood(args.sas_per_source, storms)
            after = lab.rss_kib("b")
            mark = len(lab.output("b"))
            unchanged = lab.established_spis(after=mark) == spis
            tunnel_ok = lab.ping(3).returncode == 0
        finally:
            lab.teardown()
    init_s, frag_s = flood["init_seconds"], flood["fragment_seconds"]
    print(
        json.dumps(
            {
                "rss_before_mib": round(before / 1024, 1),
                "rss_after_mib": round(after / 1024, 1),
                "rss_growth_mib": round((after - before) / 1024, 1),
                "half_open": flood["half_open"],
                "cookies": flood["cookies"],
                "init_requests": flood["init_requests"],
                "init_per_s": round(flood["init_requests"] / init_s, 1) if init_s else None,
                "fragments": flood["fragments"],
                "fragments_per_s": round(flood["fragments"] / frag_s, 1) if frag_s else None,
                "storms": storms,
                "sa_unchanged": unchanged,
                "tunnel_ok": tunnel_ok,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
