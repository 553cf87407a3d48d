"""An IKEv1 external peer in the lab, without a lab: charon is configured with
``version = 1`` (and Aggressive Mode where the topology asks), no reauthentication of
its own, and the layout record names the version."""

from __future__ import annotations

from pathlib import Path

import yaml

from tests.support.lab_ikev1 import ikev1_inventory
from vpnfleet.controller.inventory import load_inventory
from vpnfleet.controller.lab.external import strongswan_conf, swanctl_conf
from vpnfleet.controller.lab.layout import LabLayout, plan_layout
from vpnfleet.controller.planner import build_plans
from vpnfleet.controller.planner.model import IkeVersion

INVENTORY = Path(__file__).resolve().parents[3] / "inventories" / "external-peer"


def layout_of(inventory: Path) -> LabLayout:
    inv = load_inventory(inventory)
    return plan_layout("t1", inv, build_plans(inv, master_secret=bytes(32)))


def test_an_ikev1_partner_is_played_by_charon_with_version_1(tmp_path: Path) -> None:
    partner = layout_of(ikev1_inventory(INVENTORY, tmp_path / "inv")).externals["partner"]
    assert partner.ike_version is IkeVersion.V1 and not partner.aggressive
    text = swanctl_conf(partner)
    assert text.count("    version = 1\n") == 2  # one connection per gateway
    assert "version = 2" not in text and "aggressive" not in text
    assert text.count("reauth_time = 0") == 2
    assert "proposals = aes256-sha256-modp2048" in text
    assert partner.to_json()["ike_version"] == "V1"


def test_an_ikev2_partner_is_unchanged() -> None:
    partner = layout_of(INVENTORY).externals["partner"]
    text = swanctl_conf(partner)
    assert text.count("    version = 2\n") == 2 and "reauth_time" not in text


def test_aggressive_mode_is_asked_of_charon_and_allowed_with_a_psk(tmp_path: Path) -> None:
    inv = ikev1_inventory(INVENTORY, tmp_path / "inv")
    path = inv / "topology.yaml"
    topology = yaml.safe_load(path.read_text())
    topology["external_peers"][0]["ike_aggressive"] = True
    path.write_text(yaml.safe_dump(topology))
    all_vars = inv / "group_vars" / "all.yaml"
    data = yaml.safe_load(all_vars.read_text())
    data["ike_aggressive"] = True
    all_vars.write_text(yaml.safe_dump(data))
    partner = layout_of(inv).externals["partner"]
    assert partner.aggressive
    assert swanctl_conf(partner).count("    aggressive = yes\n") == 2
    conf = strongswan_conf(tmp_path, 500, partner.aggressive)
    assert "i_dont_care_about_security_and_use_aggressive_mode_psk = yes" in conf
    assert "aggressive_mode_psk" not in strongswan_conf(tmp_path, 500)
