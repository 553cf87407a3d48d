"""Our real agent's data plane against strongSwan's userspace ESP (kernel-libipsec).

`vpnfleet-agent run --plan FILE --data-plane` runs in one namespace, a charon with
kernel-libipsec in the other (the harness of charon.py); each side has its site subnet
on a veth end inside its namespace. Each test brings the tunnel up (we initiate, or
charon does), pings between the site addresses both ways and moves a few seconds of
iperf3 TCP each way through it; charon's ``swanctl --list-sas --raw`` must show the
bytes on its child SA and our status lines ours, with no integrity failures. charon's
kernel-libipsec always claims a NAT, so our plan forces UDP 4500 encapsulation.
Namespaces, processes and files go in teardown, also on failure.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.support.charon import (
    CHARON_ADDR,
    CHARON_ID,
    CHARON_NET,
    OUR_ADDR,
    OUR_ID,
    OUR_NET,
    PSK,
    Charon,
    Topology,
    connection,
    interop_setup,
    skip_reason,
)
from vpnfleet.agent.convert import plan_from_proto
from vpnfleet.agent.hollow import sample_plan
from vpnfleet.protos import plan_pb2
from vpnfleet.protos.hashing import plan_content_hash

pytestmark = [
    pytest.mark.interop,
    pytest.mark.netns,
    pytest.mark.skipif(skip_reason() is not None, reason=skip_reason() or ""),
]

AGENT = [sys.executable, "-m", "vpnfleet.agent.cli"]
IKE = "aes256gcm16-prfsha384-x25519"
OUR_SITE, CHARON_SITE = "10.1.0.1", "10.2.0.1"
"""The site addresses charon.py's Topology puts on each side's site0."""
IPERF_SECONDS = 3
IPERF_PORT = 5201
CHILD_STATUS = re.compile(
    r"child charon: installed in (?P<spi_in>[0-9a-f]+) out (?P<spi_out>[0-9a-f]+) "
    r"packets_in=(?P<packets_in>\d+) packets_out=(?P<packets_out>\d+) "
    r"bytes_in=(?P<bytes_in>\d+) bytes_out=(?P<bytes_out>\d+) "
    r"integrity_failures=(?P<integrity_failures>\d+) replay_drops=(?P<replay_drops>\d+)"
)

# ESP proposal -> the (id, key bits) the plan's transform list carries and what
# charon's raw listing says.
ESP = {
    "aes128gcm16": ((20, 128), {"encr-alg": "AES_GCM_16", "encr-keysize": "128"}),
    "aes256gcm16": ((20, 256), {"encr-alg": "AES_GCM_16", "encr-keysize": "256"}),
}


def our_plan(esp: str, *, we_initiate: bool) -> plan_pb2.NodePlan:
    """sample_plan's single-peer plan, turned towards charon: its identities and PSK,
    the ESP proposal under test, UDP 4500 forced, and who starts."""
    msg = sample_plan("ours", OUR_ADDR, OUR_NET, [("charon", CHARON_ADDR, CHARON_NET)])
    msg.identity.value = OUR_ID
    (peer,) = msg.peers
    peer.local_id.value = OUR_ID
    peer.remote_id.value = CHARON_ID
    peer.auth.psk = PSK.encode()
    (encr_id, key_bits), _ = ESP[esp]
    del peer.esp_proposals[:]
    peer.esp_proposals.add(
        text=esp,
        transforms=[
            plan_pb2.Transform(type=1, id=encr_id, key_length=key_bits),
            plan_pb2.Transform(type=5, id=0),
        ],
    )
    assert peer.ike_proposals[0].text == IKE
    peer.nat.force_encap = True
    peer.initiator = we_initiate
    peer.start_action = plan_pb2.START_ACTION_START if we_initiate else plan_pb2.START_ACTION_NONE
    msg.content_hash = plan_content_hash(msg)
    plan_from_proto(msg)  # refused here, with its reasons, rather than in the agent
    return msg


@dataclass
class Lab:
    topology: Topology
    charon: Charon
    directory: Path
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    agent: subprocess.Popen[bytes] | None = None

    @property
    def agent_log(self) -> Path:
        return self.directory / "agent.out"

    def start_agent(self, plan: plan_pb2.NodePlan) -> None:
        path = self.directory / "ours.plan"
        path.write_bytes(plan.SerializeToString(deterministic=True))
        with self.agent_log.open("ab") as out:
            self.agent = subprocess.Popen(
                [
                    *("ip", "netns", "exec", self.topology.our_ns, *AGENT, "run"),
                    *("--plan", str(path), "--data-plane", "--status-interval", "0.5"),
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.processes.append(self.agent)

    def output(self) -> str:
        return self.agent_log.read_text(errors="replace") if self.agent_log.exists() else ""

    def wait_for(self, pattern: str, timeout: float = 20.0, after: int = 0) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = re.search(pattern, self.output()[after:])
            if match:
                return match
            if self.agent is not None and self.agent.poll() is not None:
                break
            time.sleep(0.1)
        raise AssertionError(
            f"no {pattern!r} from our agent:\n{self.output()}\ncharon:\n{self.charon.log_text()}"
        )

    def ping(self, ns: str, source: str, target: str, count: int = 5) -> None:
        done = subprocess.run(
            ["ip", "netns", "exec", ns, "ping", "-n", "-c", str(count), "-i", "0.2", "-W", "2",
             "-I", source, target],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )  # fmt: skip
        assert done.returncode == 0 and " 0% packet loss" in done.stdout, (
            f"ping {source} -> {target}:\n{done.stdout}{done.stderr}"
        )

    def iperf_server(self) -> None:
        """iperf3 in charon's namespace on its site address, until teardown."""
        server = subprocess.Popen(
            ["ip", "netns", "exec", self.topology.charon_ns, "iperf3", "-s", "-B", CHARON_SITE,
             "-p", str(IPERF_PORT)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
        self.processes.append(server)

    def iperf(self, *, reverse: bool) -> dict[str, Any]:
        """A TCP transfer from our site to charon's (``reverse``: the other way)."""
        command = [
            *("ip", "netns", "exec", self.topology.our_ns, "iperf3", "-c", CHARON_SITE),
            *("-B", OUR_SITE, "-p", str(IPERF_PORT), "-t", str(IPERF_SECONDS), "--json"),
            *(["-R"] if reverse else []),
        ]
        for _ in range(50):  # the server may still be binding
            done = subprocess.run(
                command, capture_output=True, text=True, timeout=IPERF_SECONDS + 30, check=False
            )
            result: dict[str, Any] = json.loads(done.stdout) if done.stdout.strip() else {}
            if "Connection refused" not in result.get("error", ""):
                break
            time.sleep(0.1)
        assert done.returncode == 0 and "error" not in result, done.stdout + done.stderr
        return result

    def charon_child(self) -> dict[str, Any]:
        sas = [s for s in self.charon.list_sas() if s.get("state") == "ESTABLISHED"]
        assert len(sas) == 1, sas
        children = [c for c in sas[0].get("child-sas", {}).values() if c["state"] == "INSTALLED"]
        assert len(children) == 1, sas
        child: dict[str, Any] = children[0]
        return child

    def close(self) -> None:
        for proc in reversed(self.processes):
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                    proc.wait(10)
                except (ProcessLookupError, subprocess.TimeoutExpired):
                    if proc.poll() is None:
                        os.killpg(proc.pid, signal.SIGKILL)
                        proc.wait(10)


@pytest.fixture
def lab() -> Iterator[Lab]:
    with interop_setup() as (topology, charon, directory):
        lab = Lab(topology, charon, directory)
        try:
            yield lab
        finally:
            lab.close()


@pytest.mark.parametrize("esp", sorted(ESP))
@pytest.mark.parametrize("we_initiate", [True, False], ids=["ours-initiates", "charon-initiates"])
def test_ping_and_tcp_both_ways_through_a_tunnel_with_charon(
    lab: Lab, esp: str, we_initiate: bool
) -> None:
    session = lab.charon.session()
    session.load_shared({"type": "IKE", "data": PSK, "owners": [OUR_ID, CHARON_ID]})
    session.load_conn(connection(IKE, esp, initiator=not we_initiate))
    lab.start_agent(our_plan(esp, we_initiate=we_initiate))
    if not we_initiate:
        lab.wait_for(r"in force")
        lab.charon.swanctl("--initiate", "--ike", "net-ike", "--child", "net", "--timeout", "10")
    lab.wait_for(r"event child_up charon")
    child = lab.charon_child()
    for key, value in ESP[esp][1].items():
        assert child[key] == value, child
    assert child["encap"] == "yes" and child["mode"] == "TUNNEL", child
    # Our SPIs are charon's the other way round.
    status = lab.wait_for(CHILD_STATUS.pattern)
    assert (int(status["spi_in"], 16), int(status["spi_out"], 16)) == (
        int(child["spi-out"], 16),
        int(child["spi-in"], 16),
    )

    lab.ping(lab.topology.our_ns, OUR_SITE, CHARON_SITE)
    lab.ping(lab.topology.charon_ns, CHARON_SITE, OUR_SITE)
    lab.iperf_server()
    there, back = lab.iperf(reverse=False), lab.iperf(reverse=True)
    sent = there["end"]["sum_received"]["bytes"]
    received = back["end"]["sum_received"]["bytes"]
    rates = [r["end"]["sum_received"]["bits_per_second"] / 1e6 for r in (there, back)]
    print(f"iperf3 TCP ours -> charon {rates[0]:.0f} Mbit/s, back {rates[1]:.0f} Mbit/s")
    assert sent > 1_000_000 and received > 1_000_000, (sent, received)

    # charon's side: its child SA carried both transfers (ESP payload bytes >= TCP bytes).
    child = lab.charon_child()
    assert int(child["bytes-in"]) >= sent and int(child["bytes-out"]) >= received, child
    # Ours: the next status line has the same and no integrity failures or replays.
    mark = len(lab.output())
    status = lab.wait_for(CHILD_STATUS.pattern, after=mark)
    assert int(status["bytes_out"]) >= sent and int(status["bytes_in"]) >= received, status[0]
    assert int(status["integrity_failures"]) == 0 and int(status["replay_drops"]) == 0, status[0]
    assert "child_down" not in lab.output() and "ike_failed" not in lab.output()
