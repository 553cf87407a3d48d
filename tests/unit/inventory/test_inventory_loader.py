"""Loader behaviour beyond precedence: file order, topology.yaml, paths, immutability."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from vpnfleet.controller.inventory import (
    InventoryErrors,
    MarkedDict,
    Secret,
    Vault,
    key_mark,
    load_inventory,
)
from vpnfleet.controller.inventory.vault import KdfParams

MakeInventory = Callable[[dict[str, str]], Path]  # the make_inventory fixture (conftest.py)

HOSTS = "all: {children: {mesh: {hosts: {b: {address: 10.0.0.2}, a: {address: 10.0.0.1}}}}}"


def test_hosts_keep_file_order(make_inventory: MakeInventory) -> None:
    inv = load_inventory(make_inventory({"hosts.yaml": HOSTS}))
    assert list(inv.hosts) == ["b", "a"]
    assert inv.group_hosts("mesh") == ["b", "a"]
    assert set(inv.groups) == {"all", "mesh", "ungrouped"}


def test_path_may_name_the_hosts_file(make_inventory: MakeInventory) -> None:
    root = make_inventory({"hosts.yaml": HOSTS})
    assert load_inventory(root / "hosts.yaml").path == root


def test_hosts_yml_is_accepted(make_inventory: MakeInventory) -> None:
    assert list(load_inventory(make_inventory({"hosts.yml": HOSTS})).hosts) == ["b", "a"]


def test_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(InventoryErrors, match="does not exist"):
        load_inventory(tmp_path / "nope")


def test_no_topology_file(make_inventory: MakeInventory) -> None:
    assert load_inventory(make_inventory({"hosts.yaml": HOSTS})).topology is None


def test_topology_is_loaded_raw_with_positions(make_inventory: MakeInventory) -> None:
    root = make_inventory(
        {
            "hosts.yaml": HOSTS,
            "topology.yaml": """
            # which groups form what
            meshes:
              - name: core
                members: mesh
            """,
        }
    )
    topology = load_inventory(root).topology
    assert isinstance(topology, MarkedDict)
    assert topology == {"meshes": [{"name": "core", "members": "mesh"}]}
    position = key_mark(topology["meshes"][0], "members")
    assert position is not None
    assert (Path(position.path).name, position.line, position.column) == ("topology.yaml", 4, 5)


def test_empty_topology_is_an_empty_mapping(make_inventory: MakeInventory) -> None:
    root = make_inventory({"hosts.yaml": HOSTS, "topology.yaml": "# nothing yet\n"})
    assert load_inventory(root).topology == {}


def test_topology_vault_values_are_opened(make_inventory: MakeInventory) -> None:
    vault = Vault(b"pw", KdfParams(1, 8192))
    root = make_inventory({"hosts.yaml": HOSTS, "topology.yaml": vault.encrypt_yaml("psk", "k")})
    topology = load_inventory(root, vault=vault).topology
    assert topology is not None
    assert isinstance(topology["psk"], Secret) and topology["psk"] == "k"
    with pytest.raises(InventoryErrors, match=r"topology\.yaml:1:6: encrypted value"):
        load_inventory(root)


def test_inventory_is_immutable(make_inventory: MakeInventory) -> None:
    inv = load_inventory(make_inventory({"hosts.yaml": HOSTS}))
    with pytest.raises(TypeError):
        inv.hosts["c"] = inv.hosts["a"]  # type: ignore[index]
    with pytest.raises(TypeError):
        inv.resolve("a").vars["address"] = "10.9.9.9"  # type: ignore[index]
    with pytest.raises(AttributeError):
        inv.topology = None  # type: ignore[misc]


def test_hidden_files_in_vars_directories_are_ignored(make_inventory: MakeInventory) -> None:
    root = make_inventory(
        {
            "hosts.yaml": HOSTS,
            "group_vars/.mesh.yaml.swp": "junk",
            "group_vars/mesh/.notes": "junk",
            "group_vars/mesh/main.yaml": "dpd_delay: 4\n",
        }
    )
    assert load_inventory(root).resolve("a").vars["dpd_delay"] == 4
