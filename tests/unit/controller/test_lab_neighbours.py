"""The lab's permanent neighbour entries, without a lab: which bridge end gets an entry
for which address (the underlay among hosts, NAT routers and external peers; the
management subnet between the controller and each agent)."""

from __future__ import annotations

from pathlib import Path

from vpnfleet.controller.inventory import load_inventory
from vpnfleet.controller.lab.layout import LabLayout, plan_layout
from vpnfleet.controller.lab.netns import bridge_ends, neighbour_entries
from vpnfleet.controller.planner import build_plans

INVENTORIES = Path(__file__).resolve().parents[3] / "inventories"


def layout_of(inventory: Path) -> LabLayout:
    inv = load_inventory(inventory)
    return plan_layout("t1", inv, build_plans(inv, master_secret=bytes(32)))


def entries_by_end(layout: LabLayout) -> dict[tuple[str | None, str], dict[str, str]]:
    ends = bridge_ends(layout)
    macs = {(e.netns, e.dev): f"mac-{e.netns}-{e.dev}" for e in ends}
    return {(e.netns, e.dev): dict(v) for e, v in neighbour_entries(ends, macs).items()}


def test_mesh_host_pins_every_other_host_and_the_controller() -> None:
    layout = layout_of(INVENTORIES / "lab")
    found = entries_by_end(layout)
    hosts = layout.hosts
    assert len(found) == len(hosts) + 1
    for name, h in hosts.items():
        expected = {o.address: f"mac-{o.netns}-eth0" for n, o in hosts.items() if n != name}
        expected[layout.mgmt_address] = f"mac-None-{layout.root_link}"
        assert found[(h.netns, "eth0")] == expected, name
    # The controller's link: each agent's management address, nothing of the underlay.
    assert found[(None, layout.root_link)] == {
        h.mgmt_address: f"mac-{h.netns}-eth0" for h in hosts.values()
    }


def test_nat_host_is_pinned_at_its_router_and_external_peers_on_the_underlay() -> None:
    nat = layout_of(INVENTORIES / "nat")
    behind = [h for h in nat.hosts.values() if h.router is not None]
    assert behind
    found = entries_by_end(nat)
    for h in behind:
        assert h.router is not None
        router = f"mac-{h.router.netns}-wan"
        assert (h.netns, "eth0") not in found  # only its router is on the bridge
        assert found[(None, nat.root_link)][h.mgmt_address] == router
        for other in nat.hosts.values():
            if other is not h:
                where = other.router.netns if other.router else other.netns
                assert found[(where, "wan" if other.router else "eth0")][h.address] == router

    ext = layout_of(INVENTORIES / "external-peer")
    found = entries_by_end(ext)
    (partner,) = ext.externals.values()
    assert found[(partner.netns, "eth0")] == {
        h.address: f"mac-{h.netns}-eth0" for h in ext.hosts.values()
    }
    for h in ext.hosts.values():
        assert found[(h.netns, "eth0")][partner.address] == f"mac-{partner.netns}-eth0"
    assert partner.address not in found[(None, ext.root_link)]
