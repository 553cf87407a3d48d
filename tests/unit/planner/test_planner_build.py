"""build_plans(): credentials, determinism, pair checks, and the incremental Planner."""

from __future__ import annotations

import datetime
import hashlib
import random
import textwrap
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from vpnfleet.controller.inventory import load_inventory
from vpnfleet.controller.planner import (
    AuthMethod,
    Mode,
    NodePlan,
    PairKeys,
    Peer,
    PlanError,
    Planner,
    StartAction,
    build_plans,
)
from vpnfleet.controller.transport import convert

SECRET = b"0123456789abcdef0123456789abcdef"


def write_mesh(root: Path, names: list[str], **host_vars: str) -> Path:
    """A mesh of ``names`` (written in that order); host_vars: host -> YAML text."""
    lines = ["all:", "  children:", "    mesh:", "      hosts:"]
    for name in names:
        i = int("".join(c for c in name if c.isdigit()) or 0)
        lines.append(f"        {name}: {{address: 10.99.0.{i}, subnets: [10.1.{i}.0/24]}}")
    root.mkdir(parents=True, exist_ok=True)
    (root / "hosts.yaml").write_text("\n".join(lines) + "\n")
    (root / "topology.yaml").write_text("meshes:\n  - {name: lab, group: mesh}\n")
    (root / "host_vars").mkdir(exist_ok=True)
    for old in (root / "host_vars").iterdir():
        old.unlink()
    for host, text in host_vars.items():
        (root / "host_vars" / f"{host}.yaml").write_text(textwrap.dedent(text).lstrip("\n"))
    return root


NAMES = ["a1", "a2", "a3", "a4", "a5"]


def plans_of(root: Path, **kwargs: object) -> dict[str, NodePlan]:
    return build_plans(load_inventory(root), master_secret=SECRET, **kwargs)  # type: ignore[arg-type]


def peer(plans: dict[str, NodePlan], host: str, name: str) -> Peer:
    return next(p for p in plans[host].peers if p.name == name)


def test_psk_is_the_same_at_both_ends_and_differs_per_pair(tmp_path: Path) -> None:
    plans = plans_of(write_mesh(tmp_path / "inv", NAMES))
    a1_a2, a2_a1 = peer(plans, "a1", "a2").auth, peer(plans, "a2", "a1").auth
    assert a1_a2.method is AuthMethod.PSK
    assert a1_a2.psk == a2_a1.psk and len(a1_a2.psk) == 32
    assert a1_a2.reference == a2_a1.reference == "psk:a1+a2/epoch-1"
    assert a1_a2.epoch == 1
    assert peer(plans, "a1", "a3").auth.psk != a1_a2.psk
    assert a1_a2.psk.hex() not in repr(plans["a1"])


def test_psk_is_hkdf_sha256_of_the_master_secret() -> None:
    # RFC 5869 with salt = the epoch (8 bytes, big-endian) and info naming the pair;
    # checked against an independent HKDF implementation.
    expected = HKDF(
        algorithm=hashes.SHA256(),
        length=32,
        salt=(7).to_bytes(8, "big"),
        info=b"vpnfleet psk" + b"a1" + b"\0" + b"a2",
    ).derive(SECRET)
    keys = PairKeys(SECRET)
    assert keys.psk("a1", "a2", 7) == expected
    assert keys.psk("a2", "a1", 7) == expected
    assert keys.credential("a1", "a2", 7).psk == expected
    assert PairKeys(SECRET[::-1]).psk("a1", "a2", 7) != expected
    # Names are separated: ("ab", "c") and ("a", "bc") are different pairs.
    assert keys.psk("ab", "c", 1) != keys.psk("a", "bc", 1)


def test_master_secret_must_not_be_short() -> None:
    with pytest.raises(ValueError, match="at least 16 bytes"):
        PairKeys(b"short")


def test_psk_changes_with_the_epoch(tmp_path: Path) -> None:
    root = tmp_path / "inv"
    before = plans_of(write_mesh(root, NAMES))
    after = plans_of(write_mesh(root, NAMES, a2="psk_epoch: 3\n"))
    # A pair uses the larger epoch of its two hosts: a2's pairs rotate, others do not.
    assert peer(after, "a1", "a2").auth.epoch == 3
    assert peer(after, "a2", "a1").auth.psk == peer(after, "a1", "a2").auth.psk
    assert peer(after, "a1", "a2").auth.psk != peer(before, "a1", "a2").auth.psk
    assert peer(after, "a1", "a2").auth.reference == "psk:a1+a2/epoch-3"
    assert peer(after, "a1", "a3").auth == peer(before, "a1", "a3").auth


def test_build_is_deterministic(tmp_path: Path) -> None:
    first = plans_of(write_mesh(tmp_path / "one", NAMES))
    again = plans_of(write_mesh(tmp_path / "one", NAMES))
    shuffled = NAMES[:]
    random.Random(7).shuffle(shuffled)
    assert shuffled != NAMES
    other = plans_of(write_mesh(tmp_path / "two", shuffled))
    assert first == again == other
    assert list(first) == list(other) == sorted(NAMES)
    assert [convert.plan_bytes(p) for p in first.values()] == [
        convert.plan_bytes(p) for p in other.values()
    ]


def test_plan_fields_from_variables(tmp_path: Path) -> None:
    root = write_mesh(
        tmp_path / "inv",
        NAMES,
        a1="""
        identity: gw.example.net
        start_action: trap
        ike_lifetime: 2h
        child_lifetime: 10m
        child_lifetime_bytes: 1000000
        rekey_jitter: 30s
        dpd_delay: 5s
        dpd_timeout: 20s
        force_encap: true
        nat_keepalive: 25s
        """,
    )
    plans = plans_of(root, generation=9, revision="abc123")
    a1 = plans["a1"]
    assert (a1.host, a1.generation, a1.source_revision, a1.content_hash) == ("a1", 9, "abc123", "")
    assert a1.identity.type.name == "FQDN" and a1.identity.value == "gw.example.net"
    assert a1.addresses == ("10.99.0.1",) and a1.subnets == ("10.1.1.0/24",)
    p = a1.peers[0]
    assert p.start_action is StartAction.TRAP and p.mode is Mode.TUNNEL
    assert (p.lifetimes.ike_rekey_seconds, p.lifetimes.child_rekey_seconds) == (7200, 600)
    assert (p.lifetimes.child_rekey_bytes, p.lifetimes.rand_seconds) == (1000000, 30)
    assert (p.dpd.delay_seconds, p.dpd.timeout_seconds) == (5, 20)
    assert (p.nat.force_encap, p.nat.keepalive_seconds) == (True, 25)
    assert p.remote_port == 500
    assert peer(plans, "a2", "a1").remote_id.value == "gw.example.net"
    assert [q.text for q in p.ike_proposals] == ["aes256gcm16-prfsha384-x25519"]
    # Hosts with the same settings share the very same objects.
    assert p.lifetimes is not plans["a2"].peers[1].lifetimes
    assert plans["a2"].peers[1].lifetimes is plans["a3"].peers[0].lifetimes
    assert plans["a2"].peers[1].ike_proposals is plans["a3"].peers[0].ike_proposals
    msg = convert.plan_to_proto(a1)
    assert msg.peers[0].auth.reference == "psk:a1+a2/epoch-1" and len(msg.content_hash) == 64


def test_host_behind_nat_initiates(tmp_path: Path) -> None:
    plans = plans_of(write_mesh(tmp_path / "inv", NAMES, a3="nat: true\n"))
    assert peer(plans, "a3", "a1").initiator and not peer(plans, "a1", "a3").initiator
    assert peer(plans, "a3", "a4").initiator and not peer(plans, "a4", "a3").initiator


def test_peers_of_a_host_behind_nat_know_it(tmp_path: Path) -> None:
    """Only a peer behind a NAT may be answered from an address that is not its own:
    the plans of its peers say so, and no other peer is marked."""
    plans = plans_of(write_mesh(tmp_path / "inv", NAMES, a3="nat: true\n"))
    assert peer(plans, "a1", "a3").nat.remote_behind_nat
    assert peer(plans, "a4", "a3").nat.remote_behind_nat
    marked = [
        (host, p.name)
        for host, plan in plans.items()
        for p in plan.peers
        if p.nat.remote_behind_nat
    ]
    assert sorted(marked) == [(h, "a3") for h in sorted(NAMES) if h != "a3"]


def test_transport_mode_protects_the_host_addresses(tmp_path: Path) -> None:
    root = write_mesh(
        tmp_path / "inv", ["a1", "a2"], a1="mode: transport\n", a2="mode: transport\n"
    )
    p = peer(plans_of(root), "a1", "a2")
    assert p.mode is Mode.TRANSPORT
    assert (p.local_ts, p.remote_ts) == (("10.99.0.1/32",), ("10.99.0.2/32",))


def errors_of(root: Path) -> list[str]:
    with pytest.raises(PlanError) as info:
        plans_of(root)
    assert str(info.value).startswith(f"{len(info.value.errors)} error")
    return [str(e) for e in info.value.errors]


def test_hosts_without_a_common_proposal(tmp_path: Path) -> None:
    root = write_mesh(tmp_path / "inv", NAMES, a2="ike_proposals: [aes128-sha256-modp2048]\n")
    errors = errors_of(root)
    assert len(errors) == 4  # a2 with each of the other four, once per pair
    first = errors[0]
    assert "hosts a1 and a2 share no IKE proposal" in first
    assert "a1 offers [aes256gcm16-prfsha384-x25519] (set at <default>:0:0)" in first
    assert f"a2 offers [aes128-sha256-modp2048] (set at {root}/host_vars/a2.yaml:1:1)" in first


def test_partly_overlapping_proposals_are_fine(tmp_path: Path) -> None:
    root = write_mesh(
        tmp_path / "inv",
        ["a1", "a2"],
        a2="ike_proposals: [aes128-sha256-modp2048, aes256gcm16-prfsha384-x25519]\n",
    )
    plans = plans_of(root)
    assert peer(plans, "a2", "a1").ike_proposals[0].text == "aes128-sha256-modp2048"


def test_hosts_that_disagree_on_mode_and_auth(tmp_path: Path) -> None:
    root = write_mesh(tmp_path / "inv", ["a1", "a2"], a2="mode: transport\nauth: pubkey\n")
    errors = errors_of(root)
    assert any("hosts a1 and a2 disagree on mode: a1 has tunnel" in e for e in errors)
    assert any("disagree on auth: a1 has psk" in e and "a2.yaml:2:1" in e for e in errors)


def test_pubkey_without_a_fleet_ca(tmp_path: Path) -> None:
    root = write_mesh(tmp_path / "inv", ["a1", "a2"], a1="auth: pubkey\n", a2="auth: pubkey\n")
    (error,) = errors_of(root)
    assert "use auth pubkey, but the fleet has no CA yet" in error


def test_bad_proposal_in_vars_points_at_the_item(tmp_path: Path) -> None:
    root = write_mesh(
        tmp_path / "inv", NAMES, a4="esp_proposals:\n  - aes256gcm16\n  - aes256-sha265\n"
    )
    (error,) = errors_of(root)
    assert error == (
        f"{root}/host_vars/a4.yaml:3:5: esp_proposals: ESP proposal 'aes256-sha265': "
        "unknown algorithm 'sha265' (did you mean 'sha256'?)"
    )


# -- the incremental Planner ------------------------------------------------------------


def replan(
    tmp_path: Path, names: list[str], **change: str
) -> tuple[Planner, dict[str, NodePlan], dict[str, NodePlan]]:
    root = tmp_path / "inv"
    planner = Planner()
    old = planner.plan(load_inventory(write_mesh(root, names)), master_secret=SECRET)
    new = planner.plan(load_inventory(write_mesh(root, names, **change)), master_secret=SECRET)
    fresh = plans_of(root)
    assert new == fresh  # incremental result equals a full rebuild
    return planner, old, new


def test_replan_after_a_local_change(tmp_path: Path) -> None:
    planner, old, new = replan(tmp_path, NAMES, a3="dpd_delay: 45s\n")
    assert planner.changed_hosts(old, new) == {"a3"}
    assert all(new[h] is old[h] for h in NAMES if h != "a3")


def test_replan_after_a_pair_change(tmp_path: Path) -> None:
    planner, old, new = replan(tmp_path, NAMES, a3="psk_epoch: 2\n")
    assert planner.changed_hosts(old, new) == set(NAMES)
    # Only the pairs touching a3 changed.
    assert peer(new, "a1", "a2") is peer(old, "a1", "a2")
    assert peer(new, "a1", "a3") != peer(old, "a1", "a3")


def test_replan_after_an_identity_change(tmp_path: Path) -> None:
    planner, old, new = replan(tmp_path, NAMES, a5="identity: five.example\n")
    assert planner.changed_hosts(old, new) == set(NAMES)


def test_replan_after_a_subnet_change(tmp_path: Path) -> None:
    planner, old, new = replan(tmp_path, NAMES, a2="subnets: [10.42.0.0/16]\n")
    assert planner.changed_hosts(old, new) == set(NAMES)


def test_replan_with_nothing_changed_but_the_generation(tmp_path: Path) -> None:
    root = write_mesh(tmp_path / "inv", NAMES)
    planner = Planner()
    old = planner.plan(load_inventory(root), master_secret=SECRET, generation=1)
    new = planner.plan(load_inventory(root), master_secret=SECRET, generation=2)
    assert all(p.generation == 2 for p in new.values())
    assert planner.changed_hosts(old, new) == set()
    assert planner.changed_hosts(old, {**new, "a9": new["a1"]}) == {"a9"}


def test_replan_after_a_host_joins(tmp_path: Path) -> None:
    planner, _, new = replan(tmp_path, NAMES)
    bigger = planner.plan(
        load_inventory(write_mesh(tmp_path / "inv", [*NAMES, "a6"])), master_secret=SECRET
    )
    assert bigger == plans_of(tmp_path / "inv")
    assert planner.changed_hosts(new, bigger) == {*NAMES, "a6"}


def test_a_failed_replan_keeps_the_planner_usable(tmp_path: Path) -> None:
    root = tmp_path / "inv"
    planner = Planner()
    good = planner.plan(load_inventory(write_mesh(root, NAMES)), master_secret=SECRET)
    with pytest.raises(PlanError):
        planner.plan(
            load_inventory(write_mesh(root, NAMES, a1="esp_proposals: [aes256-sha1]\n")),
            master_secret=SECRET,
        )
    with pytest.raises(PlanError):
        planner.plan(
            load_inventory(write_mesh(root, NAMES, a1="ike_proposals: [aes128-sha256-modp2048]\n")),
            master_secret=SECRET,
        )
    again = planner.plan(load_inventory(write_mesh(root, NAMES)), master_secret=SECRET)
    assert again == good
    changed = planner.plan(
        load_inventory(write_mesh(root, NAMES, a1="dpd_delay: 9\n")), master_secret=SECRET
    )
    assert changed == plans_of(root)
    assert planner.changed_hosts(again, changed) == {"a1"}


HUB_SPOKE = """
all:
  children:
    hubs:
      hosts:
        h1: {address: 10.99.1.1, subnets: [10.2.101.0/24]}
        h2: {address: 10.99.1.2, subnets: [10.2.102.0/24]}
    spokes:
      hosts:
        s1: {address: 10.99.1.11, subnets: [10.2.1.0/24]}
        s2: {address: 10.99.1.12, subnets: [10.2.2.0/24]}
        s3: {address: 10.99.1.13, subnets: [10.2.3.0/24]}
"""


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ("ike_lifetime: 1h\n", {"s2"}),
        ("psk_epoch: 5\n", {"s2", "h1", "h2"}),
        # The spokes' aggregate changes: every host's selectors change.
        ("subnets: [10.2.200.0/24]\n", {"s1", "s2", "s3", "h1", "h2"}),
    ],
)
def test_replan_hub_and_spoke(tmp_path: Path, change: str, expected: set[str]) -> None:
    root = tmp_path / "inv"
    (root / "host_vars").mkdir(parents=True)
    (root / "hosts.yaml").write_text(textwrap.dedent(HUB_SPOKE).lstrip())
    (root / "topology.yaml").write_text("hub_spoke:\n  - {name: x, hubs: hubs, spokes: spokes}\n")
    planner = Planner()
    old = planner.plan(load_inventory(root), master_secret=SECRET)
    (root / "host_vars" / "s2.yaml").write_text(change)
    new = planner.plan(load_inventory(root), master_secret=SECRET)
    assert new == plans_of(root)
    assert planner.changed_hosts(old, new) == expected


def self_signed_ca(common_name: str) -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    start = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )


def test_certificate_auth_between_managed_hosts(tmp_path: Path) -> None:
    cert = self_signed_ca("fleet CA")
    pem = cert.public_bytes(Encoding.PEM)
    root = write_mesh(tmp_path / "inv", ["a1", "a2"], a1="auth: pubkey\n", a2="auth: pubkey\n")
    plans = plans_of(root, trust_anchors=(pem,))
    auth = peer(plans, "a1", "a2").auth
    assert auth.method is AuthMethod.PUBKEY and auth.reference == "cert:fleet-ca"
    assert auth.psk == b"" and auth.epoch == 0
    assert auth.ca_fingerprint == hashlib.sha256(cert.public_bytes(Encoding.DER)).hexdigest()
    assert plans["a1"].trust_anchors == plans["a2"].trust_anchors == (pem,)
    assert auth.accepted_ca_fingerprints == ()


def test_a_second_fleet_anchor_is_accepted_by_every_certificate_peer(tmp_path: Path) -> None:
    """While a CA rotation runs the fleet has two anchors: peers accept both CAs."""
    current, following = self_signed_ca("fleet CA"), self_signed_ca("next fleet CA")
    pems = tuple(c.public_bytes(Encoding.PEM) for c in (current, following))
    root = write_mesh(tmp_path / "inv", ["a1", "a2"], a1="auth: pubkey\n", a2="auth: pubkey\n")
    plans = plans_of(root, trust_anchors=pems)
    fp = [hashlib.sha256(c.public_bytes(Encoding.DER)).hexdigest() for c in (current, following)]
    for host, other in (("a1", "a2"), ("a2", "a1")):
        auth = peer(plans, host, other).auth
        assert (auth.ca_fingerprint, auth.accepted_ca_fingerprints) == (fp[0], (fp[1],))
        assert plans[host].trust_anchors == pems


def test_replan_with_an_external_peer_and_policies(tmp_path: Path) -> None:
    root = write_mesh(tmp_path / "inv", NAMES)
    (root / "topology.yaml").write_text(
        textwrap.dedent(
            """
            meshes:
              - {name: lab, group: mesh}
            external_peers:
              - name: partner
                address: 203.0.113.9
                psk: 0123456789abcdef
                subnets: [192.0.2.0/24]
                connect: "a2:a4"
            policies:
              - {name: clear, action: bypass, remote: 198.51.100.0/24}
            """
        ).lstrip()
    )
    planner = Planner()
    old = planner.plan(load_inventory(root), master_secret=SECRET)
    assert [p.name for p in old["a2"].peers] == ["a1", "a3", "a4", "a5", "partner"]
    (root / "host_vars" / "a2.yaml").write_text("dpd_timeout: 99\n")
    new = planner.plan(load_inventory(root), master_secret=SECRET)
    assert new == plans_of(root)
    assert planner.changed_hosts(old, new) == {"a2"}
    assert new["a2"].spd[0].name == "policy:clear"
    assert [e.name for e in new["a2"].spd][-2:] == ["a5", "partner"]
