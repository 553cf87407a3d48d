"""--graph, --host and --list output, and the example inventories shipped in inventories/."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from vpnfleet.controller.inventory import (
    InventoryError,
    graph,
    host_vars,
    inventory_list,
    load_inventory,
)

MakeInventory = Callable[[dict[str, str]], Path]  # the make_inventory fixture (conftest.py)

EXAMPLES = Path(__file__).resolve().parents[3] / "inventories"

HOSTS = """
all:
  hosts:
    lone: {address: 10.0.0.9}
  children:
    sites:
      children:
        spokes:
          hosts:
            s2: {address: 10.0.1.2}
            s1: {address: 10.0.1.1}
        hubs:
          hosts:
            hub1: {address: 10.0.0.1, x_notes: {rack: 4}}
"""


def test_graph_matches_ansible_inventory_layout(make_inventory: MakeInventory) -> None:
    inv = load_inventory(make_inventory({"hosts.yaml": HOSTS}))
    assert graph(inv) == (
        "@all:\n"
        "  |--@sites:\n"
        "  |  |--@hubs:\n"
        "  |  |  |--hub1\n"
        "  |  |--@spokes:\n"
        "  |  |  |--s1\n"
        "  |  |  |--s2\n"
        "  |--@ungrouped:\n"
        "  |  |--lone"
    )


def test_graph_of_one_group(make_inventory: MakeInventory) -> None:
    inv = load_inventory(make_inventory({"hosts.yaml": HOSTS}))
    assert graph(inv, "spokes") == "@spokes:\n  |--s1\n  |--s2"
    with pytest.raises(InventoryError, match=r"no group named 'spoke' \(did you mean 'spokes'\?\)"):
        graph(inv, "spoke")


def test_host_vars_are_plain_json(make_inventory: MakeInventory) -> None:
    inv = load_inventory(make_inventory({"hosts.yaml": HOSTS}))
    out = host_vars(inv, "hub1")
    assert out["address"] == "10.0.0.1"
    assert out["subnets"] == []
    assert out["x_notes"] == {"rack": 4}
    assert list(out) == sorted(out)
    assert json.loads(json.dumps(out)) == out
    assert type(out["address"]) is str


def test_host_vars_unknown_host(make_inventory: MakeInventory) -> None:
    inv = load_inventory(make_inventory({"hosts.yaml": HOSTS}))
    with pytest.raises(InventoryError, match=r"no host named 'hub2' \(did you mean 'hub1'\?\)"):
        host_vars(inv, "hub2")


def test_inventory_list(make_inventory: MakeInventory) -> None:
    inv = load_inventory(make_inventory({"hosts.yaml": HOSTS}))
    out = inventory_list(inv)
    assert out["all"] == {"children": ["sites", "ungrouped"]}
    assert out["sites"] == {"children": ["hubs", "spokes"]}
    assert out["spokes"] == {"hosts": ["s2", "s1"]}
    assert out["ungrouped"] == {"hosts": ["lone"]}
    assert set(out["_meta"]["hostvars"]) == {"lone", "s2", "s1", "hub1"}
    json.dumps(out)


@pytest.mark.parametrize(
    ("name", "hosts"),
    [
        ("lab", ["a1", "a2", "a3", "a4"]),
        ("hub-spoke", ["hub1", "hub2", "spoke1", "spoke2", "spoke3", "spoke4"]),
        ("external-peer", ["gw1", "gw2"]),
        ("nat", ["n1", "n2", "n3"]),
    ],
)
def test_example_inventories_load(name: str, hosts: list[str]) -> None:
    inv = load_inventory(EXAMPLES / name)
    assert list(inv.hosts) == hosts
    for host in hosts:
        assert inv.resolve(host).vars["subnets"]


def test_example_lab() -> None:
    inv = load_inventory(EXAMPLES / "lab")
    assert inv.group_hosts("mesh") == ["a1", "a2", "a3", "a4"]
    assert [inv.resolve(h).vars["address"] for h in inv.hosts] == [
        f"10.99.0.{n}" for n in range(11, 15)
    ]
    assert [inv.resolve(h).vars["subnets"] for h in inv.hosts] == [
        (f"10.1.{n}.0/24",) for n in range(1, 5)
    ]


def test_example_hub_spoke() -> None:
    inv = load_inventory(EXAMPLES / "hub-spoke")
    assert inv.group_hosts("hubs") == ["hub1", "hub2"]
    assert inv.group_hosts("spokes") == ["spoke1", "spoke2", "spoke3", "spoke4"]
    assert inv.resolve("spoke4").vars["address"] == "10.99.1.14"
    assert inv.resolve("spoke1").vars["start_action"] == "trap"
    assert inv.resolve("hub1").vars["start_action"] == "start"


def test_example_nat() -> None:
    inv = load_inventory(EXAMPLES / "nat")
    assert [h for h in inv.hosts if inv.resolve(h).vars["nat"]] == ["n3"]
