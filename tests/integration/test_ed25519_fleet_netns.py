"""An all-Ed25519 fleet through the fleet's own path: `vpnfleet ca init --algorithm
ed25519`, `vpnfleet-agent init --ike-key-type ed25519` on two hosts, `ca sign` and
`install-certs`, plans from `vpnfleet plan --emit` for an `auth: pubkey` inventory, and
two real agents (`vpnfleet-agent run --plan`) in network namespaces bringing the tunnel
up with certificates whose chains end at an Ed25519 CA (RFC 8410 keys, RFC 8420
signatures). Every namespace and process is removed at the end, also on failure.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ed25519

from tests.support.engine_lab import SITE, UNDERLAY, Lab, built

pytestmark = pytest.mark.netns

CONTROLLER = [sys.executable, "-m", "vpnfleet.controller.cli"]
AGENT = [sys.executable, "-m", "vpnfleet.agent.cli"]

HOSTS = """\
all:
  vars:
    auth: pubkey
  children:
    sites:
      hosts:
        a:
          address: {a}
          subnets: [{a_site}]
        b:
          address: {b}
          subnets: [{b_site}]
"""
TOPOLOGY = """\
meshes:
  - name: pair
    group: sites
"""


def run(argv: list[str]) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"{' '.join(argv)}:\n{done.stdout}{done.stderr}"
    return done.stdout


@dataclass
class FleetLab(Lab):
    """The two-namespace lab of test_engine_netns, running the plans the controller
    emitted instead of sample plans."""

    plans: dict[str, Path] = field(default_factory=dict)

    def plan_file(self, host: str) -> Path:
        return self.plans[host]


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[FleetLab]:
    with built(FleetLab(tmp_path)) as lab:
        yield lab


def enrol_ed25519_fleet(root: Path) -> dict[str, Path]:
    """The operator's steps from the README, every key Ed25519; the plan files."""
    state = root / "controller"
    run([*CONTROLLER, "--state", str(state), "ca", "init", "--algorithm", "ed25519"])
    for host in ("a", "b"):
        agent = root / f"{host}-state"  # the state dir Lab.start runs the agent with
        run([*AGENT, "init", "--name", host, "--state-dir", str(agent),
             "--ike-key-type", "ed25519"])  # fmt: skip
        signed = root / f"{host}-signed"
        run([*CONTROLLER, "--state", str(state), "ca", "sign", host,
             "--tls-csr", str(agent / "tls.csr"), "--ike-csr", str(agent / "ike.csr"),
             "--out", str(signed)])  # fmt: skip
        run([*AGENT, "install-certs", "--state-dir", str(agent),
             "--tls-cert", str(signed / "tls.pem"), "--ike-cert", str(signed / "ike.pem"),
             "--ca", str(signed / "ca.pem")])  # fmt: skip
        ike = x509.load_pem_x509_certificate((agent / "ike.pem").read_bytes())
        ca = x509.load_pem_x509_certificate((agent / "ca.pem").read_bytes())
        assert isinstance(ike.public_key(), ed25519.Ed25519PublicKey)
        assert isinstance(ca.public_key(), ed25519.Ed25519PublicKey)
        ike.verify_directly_issued_by(ca)
    inventory = root / "inventory"
    inventory.mkdir()
    (inventory / "hosts.yaml").write_text(
        HOSTS.format(a=UNDERLAY["a"], b=UNDERLAY["b"], a_site=SITE["a"][0], b_site=SITE["b"][0])
    )
    (inventory / "topology.yaml").write_text(TOPOLOGY)
    plans = root / "plans"
    run([*CONTROLLER, "--state", str(state), "plan", "-i", str(inventory), "--emit", str(plans)])
    return {host: plans / f"{host}.plan" for host in ("a", "b")}


def test_ed25519_fleet_brings_a_pubkey_tunnel_up(lab: FleetLab) -> None:
    lab.plans = enrol_ed25519_fleet(lab.directory)
    lab.start("b")
    lab.start("a")
    lab.wait_for("a", r"event child_up b")
    lab.wait_for("b", r"event child_up a")
    for host in ("a", "b"):
        out = lab.output(host)
        assert "auth cert:fleet-ca" in out, out
        assert "AUTHENTICATION_FAILED" not in out, out
    ping = lab.ping(3)
    assert ping.returncode == 0, ping.stdout + ping.stderr
    assert lab.kill("a") == 0 and lab.kill("b") == 0
