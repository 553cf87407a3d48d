"""Real agent processes for integration tests: a fleet CA, enrolled agents, and
``vpnfleet-agent serve`` started on 127.0.0.1 with an ephemeral port.

Every process started here is killed when its context manager exits, also on failure.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from vpnfleet.controller.statedir.pki import (
    TlsCredentials,
    enroll_local,
    ensure_controller_cert,
    init_ca,
    load_ca,
)

START_TIMEOUT = 20.0
AGENT_CLI = (sys.executable, "-m", "vpnfleet.agent.cli")
"""The agent under test; another version's is ``tests.support.bumped.Venv.agent()``."""


@dataclass
class Fleet:
    root: Path

    @property
    def controller_state(self) -> Path:
        return self.root / "controller"

    def controller_tls(self) -> TlsCredentials:
        return ensure_controller_cert(self.controller_state)

    def enroll(self, host: str, address: str | None = None) -> Path:
        agent_dir = self.root / "agents" / host
        enroll_local(self.controller_state, agent_dir, host, address)
        return agent_dir

    def forge_agent_tls(self, name: str) -> tuple[bytes, bytes]:
        """(certificate, key) PEM of an agent TLS certificate for ``name`` (serverAuth and
        clientAuth, SAN DNS:name), made with the fleet CA's key directly: what the
        signing paths would have issued had they not refused the name."""
        ca_cert, ca_key, _ = load_ca(self.controller_state)
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
        )
        key_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        return cert.public_bytes(serialization.Encoding.PEM), key_pem


def make_fleet(root: Path, algorithm: str = "ecdsa-p256") -> Fleet:
    fleet = Fleet(root)
    init_ca(fleet.controller_state, algorithm)
    return fleet


@dataclass
class AgentProcess:
    host: str
    proc: subprocess.Popen[bytes]
    port: int
    agent_dir: Path
    log_path: Path

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def terminate(self, timeout: float = 10.0) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)


def read_listening_port(proc: subprocess.Popen[bytes], log_path: Path) -> int:
    assert proc.stdout is not None
    deadline = time.monotonic() + START_TIMEOUT
    buffer = b""
    fd = proc.stdout.fileno()
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.1)
        if ready:
            chunk = os.read(fd, 4096)
            if not chunk:
                break
            buffer += chunk
            for line in buffer.decode(errors="replace").splitlines():
                if " listening on " in line:
                    return int(line.rsplit(":", 1)[1])
        elif proc.poll() is not None:
            break
    raise AssertionError(
        f"agent did not start: rc={proc.poll()} stdout={buffer!r} log={log_path.read_text()!r}"
    )


@contextlib.contextmanager
def running_agent(
    host: str, agent_dir: Path, extra_config: str = "", agent: Sequence[str] = AGENT_CLI
) -> Iterator[AgentProcess]:
    config = agent_dir / "agent.yaml"
    config.write_text(f"name: {host}\nlisten: 127.0.0.1:0\nstate_dir: .\n{extra_config}")
    with serving_config(host, config, agent_dir, agent) as process:
        yield process


@contextlib.contextmanager
def serving_config(
    host: str, config: Path, agent_dir: Path, agent: Sequence[str] = AGENT_CLI
) -> Iterator[AgentProcess]:
    """``vpnfleet-agent serve --config CONFIG --no-data-plane`` (the config must listen on
    127.0.0.1; plan only, whatever the config says: this machine's own network is never
    touched); its log goes to ``agent_dir``/agent.log. ``agent``: the agent's command."""
    log_path = agent_dir / "agent.log"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [
                *agent,
                "serve",
                "--config",
                str(config),
                "--no-data-plane",
            ],
            stdout=subprocess.PIPE,
            stderr=log,
        )
    try:
        port = read_listening_port(proc, log_path)
        yield AgentProcess(host, proc, port, agent_dir, log_path)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()
