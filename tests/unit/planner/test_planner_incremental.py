"""The incremental Planner equals a fresh one: for random sequences of inventory edits
(host variables, hosts joining and leaving, edits that fail to plan) and of changes to
what plans are keyed and anchored with, a planner kept across them gives, at each step,
exactly the plans (or the errors) of a planner that has seen nothing before."""

from __future__ import annotations

import shutil
import tempfile
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives.serialization import Encoding
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.unit.planner.test_planner_build import self_signed_ca
from vpnfleet.controller.inventory import load_inventory
from vpnfleet.controller.planner import NodePlan, PlanError, Planner
from vpnfleet.controller.transport import convert

SECRETS = (b"0123456789abcdef0123456789abcdef", b"fedcba9876543210fedcba9876543210")
ANCHORS = tuple(self_signed_ca(f"fleet CA {i}").public_bytes(Encoding.PEM) for i in (1, 2))

# Hubs and spokes (with a direct link between two spokes), a mesh beside them with an
# external gateway and a policy: every kind of pair and SPD entry the planner makes.
HOSTS = {
    "h1": ("10.99.1.1", "10.2.101.0/24", "hubs"),
    "h2": ("10.99.1.2", "10.2.102.0/24", "hubs"),
    "s1": ("10.99.1.11", "10.2.1.0/24", "spokes"),
    "s2": ("10.99.1.12", "10.2.2.0/24", "spokes"),
    "s3": ("10.99.1.13", "10.2.3.0/24", "spokes"),
    "m1": ("10.99.0.1", "10.1.1.0/24", "mesh"),
    "m2": ("10.99.0.2", "10.1.2.0/24", "mesh"),
    "m3": ("10.99.0.3", "10.1.3.0/24", "mesh"),
    "m4": ("10.99.0.4", "10.1.4.0/24", "mesh"),
}
OPTIONAL = ("s3", "m4")  # hosts that may leave the inventory and come back
TOPOLOGY = """
hub_spoke:
  - {name: sites, hubs: hubs, spokes: spokes}
links:
  - {name: s1-s2, a: s1, b: s2}
meshes:
  - {name: lab, group: mesh}
external_peers:
  - name: partner
    address: 203.0.113.9
    psk: 0123456789abcdef
    subnets: [192.0.2.0/24]
    connect: "m2:m3"
policies:
  - {name: clear, action: bypass, remote: 198.51.100.0/24}
"""

# Per variable, values an edit may set: most plan, some make the pair fail (proposals
# no peer shares, a mode or auth the other end lacks, pubkey without a fleet CA).
VALUES = {
    "dpd_delay": ["10s", "45s"],
    "psk_epoch": ["1", "2", "3"],
    "nat": ["true", "false"],
    "start_action": ["start", "trap", "none"],
    "ike_lifetime": ["2h", "4h"],
    "ike_proposals": ["[aes256gcm16-prfsha384-x25519]", "[aes128-sha256-modp2048]"],
    "esp_proposals": ["[aes256gcm16]", "[aes128gcm16, aes256gcm16]"],
    "ike_fragment_size": ["1280", "1400"],
    "identity": ["'{host}.example'"],
    "subnets": ["[10.7.{n}.0/24]", "[10.7.{n}.0/24, 'fd00:{n}::/64']"],
    "address": ["10.98.0.{n}"],
    "auth": ["pubkey", "psk"],
    "mode": ["transport", "tunnel"],
}


@dataclass
class Fleet:
    """The inventory as edited so far: each host's own variables, who is absent."""

    host_vars: dict[str, dict[str, str]] = field(default_factory=dict)
    absent: set[str] = field(default_factory=set)

    def write(self, root: Path) -> None:
        lines = ["all:", "  children:"]
        for group in ("hubs", "spokes", "mesh"):
            lines += [f"    {group}:", "      hosts:"]
            for name, (address, subnet, in_group) in HOSTS.items():
                if in_group == group and name not in self.absent:
                    lines.append(f"        {name}: {{address: {address}, subnets: [{subnet}]}}")
        (root / "hosts.yaml").write_text("\n".join(lines) + "\n")
        (root / "topology.yaml").write_text(textwrap.dedent(TOPOLOGY).lstrip())
        host_vars = root / "host_vars"
        shutil.rmtree(host_vars, ignore_errors=True)
        host_vars.mkdir()
        for name, values in self.host_vars.items():
            if values:
                text = "".join(f"{var}: {value}\n" for var, value in values.items())
                (host_vars / f"{name}.yaml").write_text(text)


@st.composite
def edits(draw: st.DrawFn) -> tuple[str, str, str]:
    """One edit: (host, variable, value); variable "" toggles the host's presence."""
    host = draw(st.sampled_from(sorted(HOSTS)))
    if host in OPTIONAL and draw(st.integers(0, 5)) == 0:
        return host, "", ""
    var = draw(st.sampled_from(sorted(VALUES)))
    n = list(HOSTS).index(host) + 1
    value = draw(st.sampled_from(VALUES[var])).format(host=host, n=n)
    return host, var, value


@dataclass(frozen=True)
class Keying:
    """What a plan() call is given besides the inventory."""

    master_secret: bytes
    trust_anchors: tuple[bytes, ...]
    crls: tuple[bytes, ...]
    generation: int
    revision: str


keyings = st.builds(
    Keying,
    master_secret=st.sampled_from(SECRETS),
    trust_anchors=st.sampled_from([(), ANCHORS[:1], ANCHORS]),
    crls=st.sampled_from([(), (b"crl one",)]),
    generation=st.integers(1, 3),
    revision=st.sampled_from(["worktree", "c0ffee"]),
)
steps = st.lists(st.tuples(st.lists(edits(), min_size=1, max_size=3), keyings), max_size=6)


def outcome(planner: Planner, root: Path, keying: Keying) -> dict[str, NodePlan] | str:
    try:
        return planner.plan(
            load_inventory(root),
            master_secret=keying.master_secret,
            trust_anchors=keying.trust_anchors,
            crls=keying.crls,
            generation=keying.generation,
            revision=keying.revision,
        )
    except PlanError as exc:
        return str(exc)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(first=keyings, steps=steps)
def test_a_kept_planner_plans_as_a_fresh_one(
    first: Keying, steps: list[tuple[list[tuple[str, str, str]], Keying]]
) -> None:
    fleet = Fleet()
    kept = Planner()
    with tempfile.TemporaryDirectory(prefix="vpnfleet-incremental-") as tmp:
        root = Path(tmp)
        fleet.write(root)
        assert isinstance(outcome(kept, root, first), dict)  # the unedited fleet plans
        for changes, keying in steps:
            for host, var, value in changes:
                if not var:
                    fleet.absent ^= {host}
                else:
                    fleet.host_vars.setdefault(host, {})[var] = value
            fleet.write(root)
            incremental = outcome(kept, root, keying)
            fresh = outcome(Planner(), root, keying)
            assert incremental == fresh
            if isinstance(incremental, dict) and isinstance(fresh, dict):
                for host, plan in fresh.items():
                    want = convert.plan_to_proto(plan).SerializeToString(deterministic=True)
                    got = convert.plan_to_proto(incremental[host])
                    assert got.SerializeToString(deterministic=True) == want, host
