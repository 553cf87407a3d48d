"""--graph, --host and --list output, and the example inventories shipped in inventories/."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from vpnfleet.controller.inventory import (
    InventoryError,
    dumps,
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
    # ansible-inventory 2.17's --graph of the same file: declaration order, ungrouped first.
    inv = load_inventory(make_inventory({"hosts.yaml": HOSTS}))
    assert graph(inv) == (
        "@all:\n"
        "  |--@ungrouped:\n"
        "  |  |--lone\n"
        "  |--@sites:\n"
        "  |  |--@spokes:\n"
        "  |  |  |--s2\n"
        "  |  |  |--s1\n"
        "  |  |--@hubs:\n"
        "  |  |  |--hub1"
    )


def test_graph_of_one_group(make_inventory: MakeInventory) -> None:
    inv = load_inventory(make_inventory({"hosts.yaml": HOSTS}))
    assert graph(inv, "spokes") == "@spokes:\n  |--s2\n  |--s1"
    with pytest.raises(InventoryError, match=r"no group named 'spoke' \(did you mean 'spokes'\?\)"):
        graph(inv, "spoke")


def test_host_vars_are_what_the_inventory_sets_as_written(make_inventory: MakeInventory) -> None:
    inv = load_inventory(
        make_inventory(
            {
                "hosts.yaml": HOSTS,
                "group_vars/hubs.yaml": "dpd_delay: 20s\nx_when: 2020-01-02 03:04:05\n",
            }
        )
    )
    out = host_vars(inv, "hub1")
    # vpnfleet's defaults (subnets, auth, ...) are not the inventory's: not shown.
    assert out == {
        "address": "10.0.0.1",
        "dpd_delay": "20s",
        "x_notes": {"rack": 4},
        "x_when": "2020-01-02T03:04:05",
    }
    assert inv.resolve("hub1").vars["dpd_delay"] == 20  # the model keeps the normal form
    assert type(out["address"]) is str


def test_dumps_writes_json_as_ansible_inventory_does() -> None:
    # Keys sorted, four spaces, non-ASCII as is, non-string keys as JSON writes them.
    assert dumps({"b": {True: 1, 2: "x", 1.5: None}, "a": "é"}) == (
        '{\n    "a": "é",\n    "b": {\n        "true": 1,\n        "1.5": null,\n'
        '        "2": "x"\n    }\n}'
    )
    # Keys that cannot be sorted together: the whole document unsorted, as written.
    assert dumps({"b": 1, "a": {"k": 1, 2: 2}}) == (
        '{\n    "b": 1,\n    "a": {\n        "k": 1,\n        "2": 2\n    }\n}'
    )


def test_host_vars_unknown_host(make_inventory: MakeInventory) -> None:
    inv = load_inventory(make_inventory({"hosts.yaml": HOSTS}))
    with pytest.raises(InventoryError, match=r"no host named 'hub2' \(did you mean 'hub1'\?\)"):
        host_vars(inv, "hub2")


def test_inventory_list(make_inventory: MakeInventory) -> None:
    inv = load_inventory(make_inventory({"hosts.yaml": HOSTS + "    empty: {}\n"}))
    out = inventory_list(inv)
    # Declaration order, ungrouped first; a group with no hosts and no children is
    # named among its parent's children but has no entry; all lists no hosts.
    assert out["all"] == {"children": ["ungrouped", "sites", "empty"]}
    assert "empty" not in out
    assert out["sites"] == {"children": ["spokes", "hubs"]}
    assert out["spokes"] == {"hosts": ["s2", "s1"]}
    assert out["ungrouped"] == {"hosts": ["lone"]}
    assert out["_meta"]["hostvars"]["s1"] == {"address": "10.0.1.1"}
    assert set(out["_meta"]["hostvars"]) == {"lone", "s2", "s1", "hub1"}
    limited = inventory_list(inv.subset(inv.hosts_matching("spokes")))
    assert limited["all"] == {"children": ["ungrouped", "sites", "empty"]}
    assert set(limited) == {"all", "sites", "spokes", "_meta"}


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
