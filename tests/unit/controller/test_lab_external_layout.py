"""External peers in the lab, without a lab: where the layout puts them, what it refuses
(each with a clear message), charon's swanctl.conf, and swanctl's raw SA listing."""

from __future__ import annotations

import base64
import datetime
import shutil
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from vpnfleet.controller.inventory import load_inventory
from vpnfleet.controller.lab.external import parse_list_sa, strongswan_conf, swanctl_conf
from vpnfleet.controller.lab.layout import LabError, LabLayout, plan_layout
from vpnfleet.controller.lab.reach import expected_pairs
from vpnfleet.controller.planner import build_plans

INVENTORY = Path(__file__).resolve().parents[3] / "inventories" / "external-peer"
PSK = "lab-only-partner-key-0123456789"


def layout_of(inventory: Path) -> LabLayout:
    inv = load_inventory(inventory)
    return plan_layout("t1", inv, build_plans(inv, master_secret=bytes(32)))


def edited(tmp_path: Path, **changes: object) -> Path:
    """A copy of the example inventory with the partner's entry changed."""
    copy = tmp_path / "inv"
    shutil.copytree(INVENTORY, copy)
    topology = yaml.safe_load((copy / "topology.yaml").read_text())
    topology["external_peers"][0].update(changes)
    (copy / "topology.yaml").write_text(yaml.safe_dump(topology))
    return copy


def test_example_inventory_layout() -> None:
    layout = layout_of(INVENTORY)
    partner = layout.externals["partner"]
    assert partner.netns == "vf-t1-partner"
    assert partner.address == "10.99.2.100" and partner.prefixlen == 24
    assert [(s.network, s.address) for s in partner.sites] == [("10.30.0.0/16", "10.30.0.1")]
    assert partner.identity == "fqdn:vpn.partner.example"
    assert partner.psk == PSK.encode()
    conns = {c.host: c for c in partner.connections}
    assert set(conns) == {"gw1", "gw2"}
    assert conns["gw1"].identity == "fqdn:gw1.example.net"
    assert conns["gw2"].identity == "fqdn:gw2"  # the host name, as an FQDN
    assert conns["gw1"].local_ts == ("10.30.0.0/16",)
    assert conns["gw1"].remote_ts == ("10.3.1.0/24",)
    assert "vf-t1-partner" in layout.namespaces
    # The record on disk shows where the peer is, never its key.
    assert PSK not in repr(layout.to_json()) and PSK not in repr(partner)


def test_reachability_includes_the_partner_both_ways() -> None:
    inv = load_inventory(INVENTORY)
    plans = build_plans(inv, master_secret=bytes(32))
    layout = plan_layout("t1", inv, plans)
    pairs = [
        (p.src_host, p.dst_host, p.expect)
        for p in expected_pairs(plans, layout)
        if "partner" in (p.src_host, p.dst_host)
    ]
    assert sorted(pairs) == sorted(
        [
            ("gw1", "partner", "protect"),
            ("partner", "gw1", "protect"),
            ("gw2", "partner", "protect"),
            ("partner", "gw2", "protect"),
        ]
    )


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"address": "10.98.0.1"}, "address 10.98.0.1 is not a host address of the lab's underlay"),
        ({"address": "10.99.2.255"}, "is not a host address of the lab's underlay 10.99.2.0/24"),
        ({"subnets": ["10.99.2.128/25"]}, "subnet 10.99.2.128/25 overlaps the underlay network"),
        ({"subnets": ["10.3.0.0/16"]}, "subnet 10.3.0.0/16 overlaps gw1's subnet 10.3.1.0/24"),
        ({"name": "br"}, "external peer name 'br' clashes with the lab's own namespace"),
        ({"name": "nat1"}, "external peer name 'nat1' clashes with the lab's own namespace"),
    ],
)
def test_refused(tmp_path: Path, changes: dict[str, object], message: str) -> None:
    with pytest.raises(LabError, match="external peer") as info:
        layout_of(edited(tmp_path, **changes))
    assert message in str(info.value)


def self_signed_ca_pem() -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "partner CA")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def test_pubkey_external_refused(tmp_path: Path) -> None:
    copy = tmp_path / "inv"
    shutil.copytree(INVENTORY, copy)
    topology = yaml.safe_load((copy / "topology.yaml").read_text())
    entry = topology["external_peers"][0]
    del entry["psk"]
    entry.update(auth="pubkey", ca=self_signed_ca_pem())
    (copy / "topology.yaml").write_text(yaml.safe_dump(topology))
    with pytest.raises(LabError, match="plays external peers with a PSK only"):
        layout_of(copy)


def test_swanctl_conf() -> None:
    partner = layout_of(INVENTORY).externals["partner"]
    text = swanctl_conf(partner)
    assert PSK not in text  # base64 only (0s…), so no character of it needs quoting
    assert f"secret = 0s{base64.b64encode(PSK.encode()).decode()}" in text
    for needed in (
        "local_addrs = 10.99.2.100",
        "remote_addrs = 10.99.2.1",
        "remote_addrs = 10.99.2.2",
        "proposals = aes256gcm16-prfsha384-x25519,aes256-sha256-modp2048",
        "esp_proposals = aes256gcm16,aes256-sha256",
        "encap = yes",
        "id = fqdn:gw1.example.net",
        "id-0 = fqdn:vpn.partner.example",
        "id-1 = fqdn:gw1.example.net",
        "id-2 = fqdn:gw2",
        "local_ts = 10.30.0.0/16",
        "remote_ts = 10.3.2.0/24",
        "mode = tunnel",
    ):
        assert needed in text, needed
    assert text.count("{") == text.count("}")


def test_charon_starts_the_tunnels_of_hosts_that_only_answer(tmp_path: Path) -> None:
    copy = edited(tmp_path)
    (copy / "host_vars" / "gw1.yaml").write_text(
        (copy / "host_vars" / "gw1.yaml").read_text() + "start_action: none\n"
    )
    partner = layout_of(copy).externals["partner"]
    conns = {c.host: c for c in partner.connections}
    assert (conns["gw1"].initiate, conns["gw2"].initiate) == (True, False)
    text = swanctl_conf(partner)
    assert text.count("start_action = start") == 1
    gw1 = text[text.index("  gw1 {") : text.index("  gw2 {")]
    assert "start_action = start" in gw1


def test_an_external_peer_with_address_any_gets_a_free_address(tmp_path: Path) -> None:
    layout = layout_of(edited(tmp_path, address="any"))
    partner = layout.externals["partner"]
    # The highest free address of the underlay, in no plan: the hosts answer it from
    # wherever it comes and know it by its identity.
    assert partner.address == "10.99.2.254"
    assert all(c.initiate for c in partner.connections)
    assert swanctl_conf(partner).count("start_action = start") == 2


def test_strongswan_conf(tmp_path: Path) -> None:
    text = strongswan_conf(tmp_path, 500)
    load = next(line for line in text.splitlines() if "load =" in line)
    # kernel-libipsec must come before kernel-netlink (userspace ESP).
    assert load.index("kernel-libipsec") < load.index("kernel-netlink")
    assert "socket = unix://charon.vici" in text and "install_routes = yes" in text
    assert "port = " not in text
    other = strongswan_conf(tmp_path, 4501)
    assert "port = 4501" in other and "port_nat_t = 4500" in other


def test_parse_list_sa() -> None:
    raw = (
        " {gw1 {uniqueid=1 version=2 state=ESTABLISHED local-host=10.99.2.100 "
        "remote-host=10.99.2.1 local-id=vpn.partner.example child-sas {gw1-2 {name=gw1 "
        "uniqueid=2 state=INSTALLED mode=TUNNEL local-ts=[10.30.0.0/16] "
        "remote-ts=[10.3.1.0/24]}}}}"
    )
    assert parse_list_sa(raw) == [
        {
            "name": "gw1",
            "state": "ESTABLISHED",
            "remote-host": "10.99.2.1",
            "children": [{"name": "gw1", "state": "INSTALLED"}],
        }
    ]
