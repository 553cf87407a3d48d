"""Rollout at scale: push one plan to each of N hollow agents over real mTLS.

Starts ``vpnfleet-agent hollow --count N`` (N agent endpoints in one process, each with
its own certificate, validation and persistence), builds N small plans directly as
protobuf messages (no inventory, no planner), and applies them through
controller/client with at most --concurrency calls in flight. Prints one JSON line:

    {"agents": N, "apply_s": ..., "failed": 0, "startup_s": ..., "concurrency": 100}

Target: apply_s <= 30 for 1000 agents.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from vpnfleet.agent.hollow import sample_plan
from vpnfleet.controller.statedir.pki import TlsCredentials, ensure_controller_cert, init_ca
from vpnfleet.controller.transport.client import AgentClient, AgentError
from vpnfleet.controller.transport.convert import apply_request
from vpnfleet.protos import plan_pb2


def start_hollow(count: int, work: Path, timeout: float) -> tuple[subprocess.Popen[str], dict]:
    script = Path(sys.executable).with_name("vpnfleet-agent")
    launcher = [str(script)] if script.exists() else [sys.executable, "-m", "vpnfleet.agent.cli"]
    command = [*launcher, "--log-level", "warning", "hollow"]
    proc = subprocess.Popen(
        [
            *command,
            *("--count", str(count), "--base-port", "0"),
            *("--state-dir", str(work / "agents"), "--ca-state", str(work / "controller")),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    line = ""
    while time.monotonic() < deadline and proc.poll() is None:
        line = proc.stdout.readline()
        if line.startswith("{"):
            return proc, json.loads(line)
    proc.kill()
    raise SystemExit(f"hollow agents did not start within {timeout:g}s (last output {line!r})")


def plans_for(agents: dict[str, int]) -> dict[str, plan_pb2.NodePlan]:
    names = sorted(agents)
    out = {}
    for i, name in enumerate(names):
        # Each agent peers with its two neighbours on a ring: small, but with peers and SPD.
        peers: list[tuple[str, str, str]] = []
        for j in (i - 1, i + 1):
            other = names[j % len(names)]
            if other != name and all(p[0] != other for p in peers):
                k = j % len(names)
                peers.append((other, f"10.{k // 250}.{k % 250}.1", f"172.16.{k % 256}.0/24"))
        address = f"10.{i // 250}.{i % 250}.1"
        out[name] = sample_plan(name, address, f"192.168.{i % 256}.0/24", peers)
    return out


async def push(
    agents: dict[str, int],
    plans: dict[str, plan_pb2.NodePlan],
    tls: TlsCredentials,
    listen_host: str,
    concurrency: int,
) -> list[str]:
    sem = asyncio.Semaphore(concurrency)
    failures: list[str] = []

    async def one(name: str) -> None:
        async with sem:
            client = AgentClient(name, f"{listen_host}:{agents[name]}", tls, timeout=30)
            try:
                resp = await client.apply_plan(apply_request(plans[name], dry_run=False))
                if resp.content_hash != plans[name].content_hash:
                    failures.append(f"{name}: hash in force {resp.content_hash[:12]}")
            except AgentError as exc:
                failures.append(str(exc))
            finally:
                await client.close()

    await asyncio.gather(*(one(n) for n in agents))
    return failures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--startup-timeout", type=float, default=300)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="vpnfleet-bench-"))
    proc: subprocess.Popen[str] | None = None
    try:
        init_ca(work / "controller")
        tls = ensure_controller_cert(work / "controller")
        started = time.monotonic()
        proc, ready = start_hollow(args.count, work, args.startup_timeout)
        startup_s = time.monotonic() - started
        agents: dict[str, int] = ready["agents"]
        plans = plans_for(agents)
        t0 = time.monotonic()
        failures = asyncio.run(push(agents, plans, tls, ready["host"], args.concurrency))
        apply_s = time.monotonic() - t0
        for f in failures[:5]:
            print(f, file=sys.stderr)
        result = {
            "agents": len(agents),
            "apply_s": round(apply_s, 3),
            "failed": len(failures),
            "startup_s": round(startup_s, 3),
            "concurrency": args.concurrency,
        }
        print(json.dumps(result))
        return 1 if failures else 0
    finally:
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
