"""Hollow agents: many real agent endpoints in one process, for scale tests.

Like Kubernetes' hollow nodes, each hollow agent is the real thing minus the data plane:
its own gRPC server and port, its own TLS key and fleet certificate (mTLS and the
controller identity check as on a real host), real plan validation and persistence
into its own directory. Only the sink is :class:`PlanOnlySink`.

Certificates: each agent directory gets keys and CSRs made here; missing certificates
are signed through the controller's CSR path in a separate process
(``python -m vpnfleet.controller.statedir.pki sign-dir``), so the agent package never imports
the controller and CA keys are read only by controller code.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import resource
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from vpnfleet.protos import plan_pb2
from vpnfleet.protos.hashing import plan_content_hash
from vpnfleet.protos.identity import CONTROLLER_NAME

from .enroll import (
    CA_CERT,
    TLS_CERT,
    TLS_KEY,
    CredentialFiles,
    init_agent,
    recover_credentials,
)
from .server import RunningServer, ServerTls, start_server
from .service import AgentService
from .sink import PlanOnlySink
from .store import PlanStore

log = logging.getLogger(__name__)


class HollowError(Exception):
    pass


@dataclass(frozen=True, slots=True)
class HollowAgent:
    name: str
    directory: Path
    service: AgentService
    running: RunningServer


def hollow_names(count: int, prefix: str) -> list[str]:
    width = max(4, len(str(count - 1)))
    return [f"{prefix}{i:0{width}d}" for i in range(count)]


def prepare_certificates(root: Path, names: list[str], ca_state: Path | None) -> None:
    """Keys and CSRs for agents that have none; certificates signed from the CA state."""
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    unsigned = []
    for name in names:
        directory = root / name
        if not (directory / TLS_KEY).exists():
            init_agent(directory, name)
        if not (directory / TLS_CERT).exists():
            unsigned.append(name)
    if not unsigned:
        return
    if ca_state is None:
        raise HollowError(
            f"{len(unsigned)} hollow agents have no certificate (e.g. {unsigned[0]}); "
            "give --ca-state with the controller's state directory to sign them"
        )
    command = [sys.executable, "-m", "vpnfleet.controller.statedir.pki", "sign-dir"]
    proc = subprocess.run(
        [*command, "--state", str(ca_state), str(root)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise HollowError(f"signing the hollow agents' CSRs failed: {proc.stderr.strip()}")


def raise_file_limit(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


async def start_hollow(
    count: int,
    base_port: int,
    root: Path,
    ca_state: Path | None,
    listen_host: str = "127.0.0.1",
    prefix: str = "hollow-",
    controller_identity: str = CONTROLLER_NAME,
) -> list[HollowAgent]:
    if count < 1:
        raise HollowError(f"--count must be at least 1, not {count}")
    if base_port and base_port + count - 1 > 65535:
        raise HollowError(f"ports {base_port}..{base_port + count - 1} run past 65535")
    # One listening socket per agent plus one connection each from the controller.
    raise_file_limit(4 * count + 256)
    names = hollow_names(count, prefix)
    prepare_certificates(root, names, ca_state)
    agents: list[HollowAgent] = []
    try:
        for i, name in enumerate(names):
            directory = root / name
            files = CredentialFiles.in_state_dir(directory)
            for line in recover_credentials(files):
                log.warning("%s: %s", name, line)
            tls = ServerTls.from_files(
                directory / TLS_CERT, directory / TLS_KEY, directory / CA_CERT
            )
            # Credential rotation works as on a real agent; with no data plane, a new
            # IKE certificate is only stored (no peers to re-establish).
            service = AgentService(name, PlanStore(directory), PlanOnlySink(), credentials=files)
            await service.restore()
            port = base_port + i if base_port else 0
            running = await start_server(service, f"{listen_host}:{port}", tls, controller_identity)
            agents.append(HollowAgent(name, directory, service, running))
    except BaseException:
        await stop_hollow(agents)
        raise
    return agents


async def stop_hollow(agents: list[HollowAgent], grace: float = 1.0) -> None:
    await asyncio.gather(*(a.running.stop(grace) for a in agents), return_exceptions=True)


def listening_line(agents: list[HollowAgent], listen_host: str) -> str:
    return json.dumps(
        {
            "listening": len(agents),
            "host": listen_host,
            "agents": {a.name: a.running.port for a in agents},
        }
    )


def sample_plan(
    host: str,
    address: str,
    subnet: str,
    peers: Sequence[tuple[str, str, str]] = (),
    generation: int = 1,
    psk_epoch: int = 1,
) -> plan_pb2.NodePlan:
    """A small, valid plan for hollow agents, benchmarks and tests, built directly as a
    message (no inventory, no planner). ``peers``: (name, address, subnet) triples, all
    with a PSK, aes256gcm16-prfsha384-x25519 for IKE and aes256gcm16 for ESP."""
    ike = plan_pb2.Proposal(
        text="aes256gcm16-prfsha384-x25519",
        transforms=[
            plan_pb2.Transform(type=1, id=20, key_length=256),
            plan_pb2.Transform(type=2, id=6),
            plan_pb2.Transform(type=4, id=31),
        ],
    )
    esp = plan_pb2.Proposal(
        text="aes256gcm16",
        transforms=[
            plan_pb2.Transform(type=1, id=20, key_length=256),
            plan_pb2.Transform(type=5, id=0),
        ],
    )
    msg = plan_pb2.NodePlan(
        host=host,
        generation=generation,
        identity=plan_pb2.Identity(type=plan_pb2.ID_FQDN, value=host),
        addresses=[address],
        subnets=[subnet],
        source_revision="sample",
    )
    for name, peer_address, peer_subnet in peers:
        pair = "/".join(sorted((host, name)))
        msg.peers.add(
            name=name,
            remote_addresses=[peer_address],
            local_address=address,
            remote_port=500,
            local_id=plan_pb2.Identity(type=plan_pb2.ID_FQDN, value=host),
            remote_id=plan_pb2.Identity(type=plan_pb2.ID_FQDN, value=name),
            auth=plan_pb2.Credential(
                method=plan_pb2.AUTH_METHOD_PSK,
                reference=f"psk:{pair}/epoch-{psk_epoch}",
                psk=hashlib.sha256(f"{pair}/{psk_epoch}".encode()).digest(),
                epoch=psk_epoch,
            ),
            ike_proposals=[ike],
            esp_proposals=[esp],
            mode=plan_pb2.MODE_TUNNEL,
            lifetimes=plan_pb2.Lifetimes(
                ike_rekey_seconds=14400, child_rekey_seconds=3600, rand_seconds=60
            ),
            dpd=plan_pb2.Dpd(delay_seconds=30, timeout_seconds=150),
            nat=plan_pb2.NatTraversal(keepalive_seconds=20),
            start_action=plan_pb2.START_ACTION_START,
            local_ts=[subnet],
            remote_ts=[peer_subnet],
            managed=True,
            initiator=host < name,
        )
        msg.spd.add(
            name=f"protect-{name}",
            selector=plan_pb2.TrafficSelector(
                local_prefix=subnet,
                remote_prefix=peer_subnet,
                local_port_end=65535,
                remote_port_end=65535,
            ),
            action=plan_pb2.SPD_ACTION_PROTECT,
            peer=name,
        )
    msg.content_hash = plan_content_hash(msg)
    return msg
