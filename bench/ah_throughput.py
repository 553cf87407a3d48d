"""AH throughput against ESP's: iperf3 TCP through an AH tunnel and through an AES-GCM
ESP tunnel between two real agents, in one run.

    sudo .venv/bin/python bench/ah_throughput.py [--seconds 10] [--ah sha256]

The labs are built as bench/esp_throughput.py builds its own (two hosts meshed by
``lab up``, PSK, IKE aes256gcm16-prfsha384-x25519, tunnel mode, no NAT so both go
straight over IP), one per child protocol:

* ``ah``: ``ah_proposals: [sha256]`` (``--ah`` changes it) and no ESP proposal, so the
  child is AH (RFC 4302, IP protocol 51): integrity only, HMAC-SHA2-256-128;
* ``esp``: ``esp_proposals: [aes128gcm16]`` (RFC 4106, IP protocol 50): encryption and
  integrity.

For each, every figure bench/esp_throughput.py measures for one stack (``measure``:
ping RTTs, iperf3 Mbit/s and retransmits, kernel drops, the tunnel device's bytes, the
receiving agent's CPU), prefixed ``ah_`` / ``esp_``. Headline: ``ah_mbps``,
``esp_mbps`` and ``ratio`` (``ah_mbps / esp_mbps``; null when a side is missing).
Also ``bench``, ``seconds``, ``ah_proposal``, ``commit`` and ``run_s``. A part that
fails leaves its fields out, ``error`` says why, the exit code is 1 (130 when
interrupted). Needs root and iperf3; every namespace and process made here is removed
at the end, also on failure, Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from vpnfleet.agent.engine.host import DEFAULT_TUN_NAME
from vpnfleet.controller import lab
from vpnfleet.controller.statedir.state import StateDir

sys.path.insert(0, str(Path(__file__).resolve().parent))
from esp_throughput import (
    HOSTS,
    IKE_PROPOSAL,
    INTERRUPTS,
    LAB_TIMEOUT,
    RECEIVER,
    Run,
    agent_pid,
    check_up,
    checkout_commit,
    lab_path,
    measure,
)

ESP_PROPOSAL = "aes128gcm16"
DEFAULT_AH_PROPOSAL = "sha256"


def write_inventory(directory: Path, child: str) -> None:
    """Two hosts meshed together; ``child`` is the ``*_proposals`` line for the child."""
    (directory / "group_vars").mkdir(parents=True)
    lines = ["all:", "  children:", "    mesh:", "      hosts:"]
    for host, (address, subnet) in HOSTS.items():
        lines += [
            f"        {host}:",
            f"          address: {address}",
            f"          subnets: [{subnet}]",
        ]
    (directory / "hosts.yaml").write_text("\n".join(lines) + "\n")
    (directory / "topology.yaml").write_text("meshes:\n  - name: bench\n    group: mesh\n")
    (directory / "group_vars" / "all.yaml").write_text(
        f"ike_proposals: [{IKE_PROPOSAL}]\n{child}\nmode: tunnel\n"
    )


def run_lab(run: Run, workdir: Path, stack: str, child: str, seconds: float) -> None:
    """Lab up with ``child`` proposals, the figures of ``stack``; lab down in every case."""
    name = "ba" + secrets.token_hex(3)
    state = StateDir(workdir / f"state-{stack}")
    inventory = workdir / f"inventory-{stack}"
    write_inventory(inventory, child)
    try:
        up: lab.UpResult | None = None
        with run.part(stack):
            up = asyncio.run(lab.up(inventory, state, name, timeout=LAB_TIMEOUT))
        if up is None:
            return
        with run.part(stack):
            check_up(up)
            path = lab_path(
                dict(up.layout.hosts),
                DEFAULT_TUN_NAME,
                agent_pid(up.lab_dir, RECEIVER),
                agent_metrics=True,
            )
            run.result.update(measure(path, seconds, stack))
    finally:
        with INTERRUPTS.shielded(), run.part(f"{stack} lab down"):
            lab.down(state, name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="each TCP transfer")
    parser.add_argument(
        "--ah", default=DEFAULT_AH_PROPOSAL, help="the AH proposal (strongSwan notation)"
    )
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        parser.error("needs root (network namespaces)")
    if args.seconds <= 0:
        parser.error("--seconds must be above 0")
    started = time.monotonic()
    commit = checkout_commit()
    INTERRUPTS.install()
    run = Run({}, [])
    code = 0
    try:
        with tempfile.TemporaryDirectory(prefix="vpnfleet-ah-bench-") as tmp:
            workdir = Path(tmp)
            run_lab(run, workdir, "ah", f"ah_proposals: [{args.ah}]", args.seconds)
            run_lab(run, workdir, "esp", f"esp_proposals: [{ESP_PROPOSAL}]", args.seconds)
    except KeyboardInterrupt:
        run.errors.append("interrupted")
        code = 130
    ah, esp = run.result.get("ah_mbps"), run.result.get("esp_mbps")
    ordered: dict[str, Any] = {"bench": "ah_throughput", "seconds": args.seconds}
    ordered |= {"ah_mbps": ah, "esp_mbps": esp}
    ordered["ratio"] = round(ah / esp, 2) if ah and esp else None
    ordered |= {"ah_proposal": args.ah, "esp_proposal": ESP_PROPOSAL}
    ordered |= {k: v for k, v in run.result.items() if k not in ordered}
    ordered |= {"commit": commit, "run_s": round(time.monotonic() - started, 1)}
    if run.errors:
        ordered["error"] = "; ".join(run.errors)
        code = code or 1
    print(json.dumps(ordered), flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
