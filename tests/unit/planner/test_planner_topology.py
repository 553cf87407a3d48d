"""topology.yaml: meshes, hub and spoke, links, external peers, policies, overlay pool."""

from __future__ import annotations

import datetime
import ipaddress
import textwrap
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from vpnfleet.controller.inventory import load_inventory
from vpnfleet.controller.planner import (
    AuthMethod,
    NodePlan,
    PlanError,
    SpdAction,
    SpdEntry,
    build_plans,
    ca_fingerprint,
)

SECRET = b"0123456789abcdef0123456789abcdef"


def make(tmp_path: Path, hosts: str, topology: str | None = None, **files: str) -> Path:
    root = tmp_path / "inv"
    root.mkdir(exist_ok=True)
    (root / "hosts.yaml").write_text(textwrap.dedent(hosts).lstrip("\n"))
    if topology is not None:
        (root / "topology.yaml").write_text(textwrap.dedent(topology).lstrip("\n"))
    for name, text in files.items():
        path = root / name.replace("__", "/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip("\n"))
    return root


def plan(root: Path, **kwargs: object) -> dict[str, NodePlan]:
    return build_plans(load_inventory(root), master_secret=SECRET, **kwargs)  # type: ignore[arg-type]


def plan_errors(root: Path) -> list[str]:
    with pytest.raises(PlanError) as info:
        plan(root)
    return [str(e) for e in info.value.errors]


def first_match(
    spd: tuple[SpdEntry, ...], src: str, dst: str, protocol: int = 1, dport: int = 0
) -> SpdEntry | None:
    """RFC 4301 section 4.4.1: the first entry whose selector matches wins.

    The packet is ICMP (protocol 1, no ports) unless told otherwise.
    """
    s, d = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    for entry in spd:
        sel = entry.selector
        if (
            s in ipaddress.ip_network(sel.local_prefix)
            and d in ipaddress.ip_network(sel.remote_prefix)
            and sel.protocol in (0, protocol)
            and (protocol not in (6, 17) or sel.remote_port_start <= dport <= sel.remote_port_end)
        ):
            return entry
    return None


MESH_HOSTS = """
all:
  children:
    mesh:
      hosts:
        a3: {address: 10.99.0.13, subnets: [10.1.3.0/24]}
        a1: {address: 10.99.0.11, subnets: [10.1.1.0/24]}
        a2: {address: 10.99.0.12, subnets: [10.1.2.0/24]}
"""
MESH_TOPOLOGY = """
meshes:
  - {name: lab, group: mesh}
"""


def test_full_mesh(tmp_path: Path) -> None:
    plans = plan(make(tmp_path, MESH_HOSTS, MESH_TOPOLOGY))
    assert sorted(plans) == ["a1", "a2", "a3"]
    a1, a3 = plans["a1"], plans["a3"]
    assert [p.name for p in a1.peers] == ["a2", "a3"]
    assert [p.initiator for p in a1.peers] == [True, True]  # the lower name initiates
    assert [p.initiator for p in a3.peers] == [False, False]
    peer = a1.peers[1]
    assert peer.remote_addresses == ("10.99.0.13",)
    assert peer.local_address == "10.99.0.11"
    assert (peer.local_ts, peer.remote_ts) == (("10.1.1.0/24",), ("10.1.3.0/24",))
    assert peer.managed
    assert peer.remote_id.value == "a3"
    assert [(e.name, e.peer, e.action) for e in a1.spd] == [
        ("a2", "a2", SpdAction.PROTECT),
        ("a3", "a3", SpdAction.PROTECT),
    ]
    assert first_match(a1.spd, "10.1.1.5", "10.1.3.7").peer == "a3"  # type: ignore[union-attr]
    assert first_match(a1.spd, "10.1.1.5", "192.0.2.1") is None


def test_no_topology_means_no_tunnels(tmp_path: Path) -> None:
    plans = plan(make(tmp_path, MESH_HOSTS))
    assert all(p.peers == () and p.spd == () for p in plans.values())


HUB_SPOKE_HOSTS = """
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
HUB_SPOKE_TOPOLOGY = """
hub_spoke:
  - {name: sites, hubs: hubs, spokes: spokes}
"""


def test_hub_and_spoke_peers(tmp_path: Path) -> None:
    plans = plan(make(tmp_path, HUB_SPOKE_HOSTS, HUB_SPOKE_TOPOLOGY))
    assert [p.name for p in plans["h1"].peers] == ["h2", "s1", "s2", "s3"]
    assert [p.name for p in plans["s1"].peers] == ["h1", "h2"]  # spokes never peer directly
    assert all(p.initiator for p in plans["s1"].peers)  # spokes initiate to hubs
    assert [p.initiator for p in plans["h2"].peers] == [False, False, False, False]
    assert plans["h1"].peers[0].initiator  # between hubs, the lower name
    # The spoke's child SA to a hub carries the other spokes' subnets too.
    to_h1 = plans["s1"].peers[0]
    covered = [ipaddress.ip_network(p) for p in to_h1.remote_ts]
    for other in ("10.2.2.9", "10.2.3.9", "10.2.101.9"):
        assert any(ipaddress.ip_address(other) in n for n in covered)
    # ... and the hub's side of it carries them as its local selectors.
    assert plans["h1"].peers[1].local_ts == ("10.2.101.0/24", *to_h1.remote_ts[1:])


def test_spoke_reaches_spoke_through_a_hub(tmp_path: Path) -> None:
    plans = plan(make(tmp_path, HUB_SPOKE_HOSTS, HUB_SPOKE_TOPOLOGY))
    out = first_match(plans["s1"].spd, "10.2.1.5", "10.2.3.5")
    assert out is not None and out.peer in ("h1", "h2")
    hub = plans[out.peer]
    forward = first_match(hub.spd, "10.2.1.5", "10.2.3.5")
    assert forward is not None and forward.peer == "s3"
    # s3 accepts it from that hub: its SA to the hub covers s1's subnet.
    s3_to_hub = next(p for p in plans["s3"].peers if p.name == hub.host)
    assert any(
        ipaddress.ip_address("10.2.1.5") in ipaddress.ip_network(p) for p in s3_to_hub.remote_ts
    )
    # The way back goes through a hub too.
    back = first_match(plans["s3"].spd, "10.2.3.5", "10.2.1.5")
    assert back is not None and back.peer in ("h1", "h2")
    # Direct traffic to a hub's own subnet goes straight to that hub.
    assert first_match(plans["s1"].spd, "10.2.1.5", "10.2.102.5").peer == "h2"  # type: ignore[union-attr]


def test_link_between_spokes_beats_the_way_through_a_hub(tmp_path: Path) -> None:
    topology = HUB_SPOKE_TOPOLOGY + "links:\n  - {a: s1, b: s2, name: shortcut}\n"
    plans = plan(make(tmp_path, HUB_SPOKE_HOSTS, topology))
    assert [p.name for p in plans["s1"].peers] == ["h1", "h2", "s2"]
    assert first_match(plans["s1"].spd, "10.2.1.5", "10.2.2.5").peer == "s2"  # type: ignore[union-attr]
    assert first_match(plans["s1"].spd, "10.2.1.5", "10.2.3.5").peer in ("h1", "h2")  # type: ignore[union-attr]


def test_links(tmp_path: Path) -> None:
    hosts = """
    all:
      hosts:
        x: {address: 192.0.2.1, subnets: [10.5.1.0/24, 10.5.2.0/24]}
        y: {address: 192.0.2.2, subnets: [10.6.0.0/16]}
        z: {address: 192.0.2.3, subnets: [10.7.0.0/16]}
    """
    plans = plan(make(tmp_path, hosts, "links:\n  - {a: y, b: x}\n"))
    assert [p.name for p in plans["x"].peers] == ["y"]
    assert plans["z"].peers == ()
    assert [(e.name, e.selector.local_prefix) for e in plans["x"].spd] == [
        ("y#0", "10.5.1.0/24"),
        ("y#1", "10.5.2.0/24"),
    ]
    assert plans["x"].peers[0].initiator and not plans["y"].peers[0].initiator


def self_signed_ca() -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "partner CA")])
    now = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(Encoding.PEM)


GATEWAYS = """
all:
  children:
    gateways:
      hosts:
        gw1: {address: 10.99.2.1, subnets: [10.3.1.0/24]}
        gw2: {address: 10.99.2.2, subnets: [10.3.2.0/24]}
"""


def test_external_peer_with_psk(tmp_path: Path) -> None:
    topology = """
    external_peers:
      - name: partner
        address: 203.0.113.10
        identity: vpn.partner.example
        psk: a-long-enough-shared-key
        subnets: [192.0.2.0/24]
        ike_proposals: [aes256gcm16-prfsha384-x25519]
        connect: gw1
    """
    plans = plan(make(tmp_path, GATEWAYS, topology))
    assert plans["gw2"].peers == ()
    (peer,) = plans["gw1"].peers
    assert (peer.name, peer.managed, peer.initiator) == ("partner", False, True)
    assert peer.remote_addresses == ("203.0.113.10",)
    assert peer.remote_id.type.name == "FQDN" and peer.remote_id.value == "vpn.partner.example"
    assert peer.auth.method is AuthMethod.PSK
    assert peer.auth.psk == b"a-long-enough-shared-key"
    assert peer.auth.reference == "psk:partner/static"
    assert "a-long-enough" not in repr(peer.auth)
    assert peer.remote_ts == ("192.0.2.0/24",)
    assert first_match(plans["gw1"].spd, "10.3.1.1", "192.0.2.1").peer == "partner"  # type: ignore[union-attr]


def test_external_peer_with_certificates(tmp_path: Path) -> None:
    ca = self_signed_ca()
    ca_yaml = textwrap.indent(ca.decode(), " " * 10)
    topology = f"""
external_peers:
  - name: partner
    address: 203.0.113.10
    auth: pubkey
    ca: |
{ca_yaml}
    subnets: [192.0.2.0/24]
"""
    fleet_ca = self_signed_ca()
    plans = plan(make(tmp_path, GATEWAYS, topology), trust_anchors=(fleet_ca,))
    for host in ("gw1", "gw2"):
        (peer,) = plans[host].peers
        assert peer.auth.method is AuthMethod.PUBKEY
        assert peer.auth.ca_fingerprint == ca_fingerprint(ca)
        assert peer.remote_id.type.name == "IPV4_ADDR"  # identity defaults to the address
        assert plans[host].trust_anchors == (fleet_ca, ca)


def test_external_peer_that_accepts_nothing_we_offer(tmp_path: Path) -> None:
    topology = """
    external_peers:
      - name: partner
        address: 203.0.113.10
        psk: a-long-enough-shared-key
        subnets: [192.0.2.0/24]
        ike_proposals: [aes128-sha256-modp2048]
    """
    errors = plan_errors(make(tmp_path, GATEWAYS, topology))
    assert any(
        "host gw1 and external peer partner share no IKE proposal" in e
        and "aes128-sha256-modp2048" in e
        for e in errors
    )


def test_policies_come_first_in_order(tmp_path: Path) -> None:
    topology = MESH_TOPOLOGY + textwrap.dedent(
        """
        policies:
          - name: drop-telnet
            action: discard
            remote: any
            protocol: tcp
            remote_ports: 23
          - name: dns-clear
            action: bypass
            local: 10.1.0.0/16
            remote: 10.53.0.0/16
            protocol: udp
            remote_ports: "53"
            local_ports: 1024-65535
            hosts: a1
          - name: via-a2
            action: protect
            remote: 10.200.0.0/16
            peer: a2
        """
    )
    plans = plan(make(tmp_path, MESH_HOSTS, topology))
    names = [e.name for e in plans["a1"].spd]
    assert names == [
        "policy:drop-telnet",
        "policy:drop-telnet/v6",
        "policy:dns-clear",
        "policy:via-a2",
        "a2",
        "a3",
    ]
    telnet, telnet6, dns = plans["a1"].spd[:3]
    assert (telnet.action, telnet.selector.protocol) == (SpdAction.DISCARD, 6)
    assert (telnet.selector.local_prefix, telnet.selector.remote_prefix) == (
        "0.0.0.0/0",
        "0.0.0.0/0",
    )
    assert telnet6.selector.remote_prefix == "::/0"
    assert (telnet.selector.remote_port_start, telnet.selector.remote_port_end) == (23, 23)
    assert (dns.selector.local_port_start, dns.selector.local_port_end) == (1024, 65535)
    assert dns.selector.protocol == 17 and dns.action is SpdAction.BYPASS
    # dns-clear applies to a1 only; the protect policy to hosts that have a tunnel to a2.
    assert [e.name for e in plans["a3"].spd][:3] == [
        "policy:drop-telnet",
        "policy:drop-telnet/v6",
        "policy:via-a2",
    ]
    assert "policy:via-a2" not in [e.name for e in plans["a2"].spd]
    assert first_match(plans["a1"].spd, "10.1.1.1", "10.200.1.1").peer == "a2"  # type: ignore[union-attr]
    assert first_match(plans["a1"].spd, "10.1.1.1", "10.1.2.1", 6, 23) is telnet
    assert first_match(plans["a1"].spd, "10.1.1.1", "10.1.2.1", 6, 22).name == "a2"  # type: ignore[union-attr]


def test_overlay_addresses_for_hosts_without_subnets(tmp_path: Path) -> None:
    hosts = """
    all:
      children:
        mesh:
          hosts:
            n1: {address: 192.0.2.1}
            n2: {address: 192.0.2.2}
            n3: {address: 192.0.2.3, subnets: [10.9.0.0/16]}
    """
    plans = plan(make(tmp_path, hosts, MESH_TOPOLOGY))
    pool = ipaddress.ip_network("100.64.0.0/10")
    for name in ("n1", "n2"):
        (prefix,) = plans[name].subnets
        net = ipaddress.ip_network(prefix)
        assert net.prefixlen == 32 and net.subnet_of(pool)  # type: ignore[arg-type]
    assert plans["n1"].subnets != plans["n2"].subnets
    assert plans["n3"].subnets == ("10.9.0.0/16",)
    assert plans["n3"].peers[0].remote_ts == plans["n1"].subnets


def overlay_of(tmp_path: Path, names: list[str], pool: str | None = None) -> dict[str, str]:
    lines = ["all:", "  children:", "    mesh:", "      hosts:"]
    lines += [f"        {n}: {{address: 192.0.2.{i + 1}}}" for i, n in enumerate(names)]
    topology = MESH_TOPOLOGY + (f"overlay_pool: {pool}\n" if pool else "")
    where = tmp_path / f"case{len(list(tmp_path.iterdir()))}"
    where.mkdir()
    root = make(where, "\n".join(lines) + "\n", topology)
    return {h: p.subnets[0] for h, p in plan(root).items()}


def test_overlay_allocation_is_deterministic_and_stable(tmp_path: Path) -> None:
    names = [f"node{i}" for i in range(20)]
    first = overlay_of(tmp_path, names)
    assert overlay_of(tmp_path, list(reversed(names))) == first
    grown = overlay_of(tmp_path, [*names, "aaa", "zzz", "node100"])
    assert {n: grown[n] for n in names} == first  # existing hosts keep their address
    assert len(set(grown.values())) == len(grown)


def test_overlay_pool_collisions_probe_forward(tmp_path: Path) -> None:
    # A /29 pool (6 usable addresses) for 6 hosts: every slot gets used exactly once.
    got = overlay_of(tmp_path, [f"h{i}" for i in range(6)], "10.250.0.0/29")
    assert sorted(got.values()) == [f"10.250.0.{i}/32" for i in range(1, 7)]


def test_overlay_pool_ipv6(tmp_path: Path) -> None:
    got = overlay_of(tmp_path, ["v1", "v2"], "fd00:1::/64")
    assert all(p.endswith("/128") and p.startswith("fd00:1::") for p in got.values())


def test_overlay_pool_too_small(tmp_path: Path) -> None:
    lines = "all:\n  hosts:\n" + "".join(
        f"    h{i}: {{address: 192.0.2.{i + 1}}}\n" for i in range(3)
    )
    errors = plan_errors(make(tmp_path, lines, "overlay_pool: 10.250.0.0/31\n"))
    assert any(
        "overlay_pool 10.250.0.0/31 has 2 addresses, but 3 hosts have no subnets" in e
        for e in errors
    )


# -- errors, each at file:line:col ------------------------------------------------------


def test_unknown_top_level_key_with_did_you_mean(tmp_path: Path) -> None:
    root = make(tmp_path, MESH_HOSTS, "meshes: []\nmeshs:\n  - {name: x, group: mesh}\n")
    (error,) = plan_errors(root)
    assert error == f"{root}/topology.yaml:2:1: unknown key 'meshs' (did you mean 'meshes'?)"


def test_unknown_key_in_an_entry(tmp_path: Path) -> None:
    root = make(tmp_path, MESH_HOSTS, "meshes:\n  - name: lab\n    grup: mesh\n")
    errors = plan_errors(root)
    assert (
        f"{root}/topology.yaml:3:5: meshes[0]: unknown key 'grup' (did you mean 'group'?)" in errors
    )
    assert f"{root}/topology.yaml:2:5: meshes[0]: missing 'group'" in errors


def test_unknown_group(tmp_path: Path) -> None:
    root = make(tmp_path, MESH_HOSTS, "meshes:\n  - {name: lab, group: mesj}\n")
    (error,) = plan_errors(root)
    assert error == (
        f"{root}/topology.yaml:2:24: meshes[0]: group: no group named 'mesj' (did you mean 'mesh'?)"
    )


def test_link_to_a_host_not_in_the_inventory(tmp_path: Path) -> None:
    root = make(tmp_path, MESH_HOSTS, "links:\n  - a: a1\n    b: a22\n")
    (error,) = plan_errors(root)
    assert error == (
        f"{root}/topology.yaml:3:8: links[0]: b: no host named 'a22' in the inventory"
        " (did you mean 'a2'?)"
    )


def test_pair_joined_twice(tmp_path: Path) -> None:
    root = make(tmp_path, MESH_HOSTS, MESH_TOPOLOGY + "links:\n  - {a: a1, b: a2}\n")
    (error,) = plan_errors(root)
    assert error.startswith(f"{root}/topology.yaml:4:5: link 'a1-a2' joins a1 and a2")
    assert "mesh 'lab'" in error and "topology.yaml:2:5" in error


def test_host_both_hub_and_spoke(tmp_path: Path) -> None:
    root = make(tmp_path, HUB_SPOKE_HOSTS, "hub_spoke:\n  - {name: x, hubs: hubs, spokes: all}\n")
    (error,) = plan_errors(root)
    assert "hub_spoke[0]: h1, h2 cannot be both hub and spoke" in error
    assert error.startswith(f"{root}/topology.yaml:2:5:")


@pytest.mark.parametrize(
    ("policy", "message"),
    [
        ("{name: p, action: allow}", "action: expected protect, bypass or discard, got 'allow'"),
        ("{name: p, action: bypass, protocol: tpc}", "(did you mean 'tcp'?)"),
        ("{name: p, action: bypass, protocol: icmp, remote_ports: 80}", "only apply to tcp"),
        ("{name: p, action: bypass, protocol: tcp, remote_ports: 90-80}", "not a port range"),
        ("{name: p, action: bypass, local: 10.1.1.1/24}", "has host bits set"),
        ("{name: p, action: bypass, local: 10.0.0.0/8, remote: 'fd00::/8'}", "IP versions"),
        ("{name: p, action: protect}", "a protect policy needs 'peer'"),
        ("{name: p, action: protect, peer: a7}", "no host or external peer 'a7'"),
        ("{name: p, action: bypass, hosts: nosuch}", "hosts:"),
    ],
)
def test_bad_policies(tmp_path: Path, policy: str, message: str) -> None:
    root = make(tmp_path, MESH_HOSTS, MESH_TOPOLOGY + f"policies:\n  - {policy}\n")
    errors = plan_errors(root)
    assert any(message in e and e.startswith(f"{root}/topology.yaml:") for e in errors), errors


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("{name: p, address: 203.0.113.1, subnets: [192.0.2.0/24]}", "auth psk needs 'psk'"),
        ("{name: p, address: 203.0.113.1, auth: pubkey, subnets: [192.0.2.0/24]}", "needs 'ca'"),
        (
            "{name: p, address: 203.0.113.1, auth: pubkey, ca: nope, subnets: [192.0.2.0/24]}",
            "not a PEM X.509 certificate",
        ),
        ("{name: p, address: nowhere, psk: 0123456789abcdef, subnets: [1.2.3.0/24]}", "not an IP"),
        ("{name: a1, address: 203.0.113.1, psk: 0123456789abcdef, subnets: []}", "is a host"),
        (
            "{name: p, address: 203.0.113.1, psk: 0123456789abcdef, subnets: [1.2.3.0/24], "
            "esp_proposals: [aes256-sha265]}",
            "unknown algorithm 'sha265' (did you mean 'sha256'?)",
        ),
    ],
)
def test_bad_external_peers(tmp_path: Path, entry: str, message: str) -> None:
    root = make(tmp_path, MESH_HOSTS, f"external_peers:\n  - {entry}\n")
    errors = plan_errors(root)
    assert any(message in e and e.startswith(f"{root}/topology.yaml:") for e in errors), errors
