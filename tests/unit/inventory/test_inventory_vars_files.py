"""group_vars/ and host_vars/ found, read and skipped as ansible-core does."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from vpnfleet.controller.inventory import InventoryErrors, load_inventory

MakeInventory = Callable[[dict[str, str]], Path]  # the make_inventory fixture (conftest.py)

HOSTS = "all: {children: {mesh: {hosts: {h1: }}}}"


def test_json_and_extensionless_vars_files(make_inventory: MakeInventory) -> None:
    root = make_inventory(
        {
            "hosts.yaml": HOSTS,
            "group_vars/all": "dpd_delay: 10\n",
            "group_vars/mesh.json": '{"x_json": {"a": [1, 2]}, "nat": true}',
            "host_vars/h1.json": '{\n  "address": "10.0.0.1"\n}',
        }
    )
    host = load_inventory(root).resolve("h1")
    assert (host.vars["dpd_delay"], host.vars["nat"]) == (10, True)
    assert host.vars["x_json"] == {"a": [1, 2]}
    assert host.origins["address"].line == 2


def test_directory_of_vars_files(make_inventory: MakeInventory) -> None:
    root = make_inventory(
        {
            "hosts.yaml": HOSTS,
            "host_vars/h1.yaml": "address: 10.0.0.1\n",
            "group_vars/mesh/a.yml": "x_a: 1\nx_order: a\n",
            "group_vars/mesh/b.json": '{"x_b": 1, "x_order": "b"}',
            "group_vars/mesh/c": "x_c: 1\nx_order: c\n",
            "group_vars/mesh/sub/d.yaml": "x_d: 1\nx_order: sub/d\n",
            # skipped, as ansible-core skips them
            "group_vars/mesh/README.md": "# notes\n",
            "group_vars/mesh/e.yml~": "x_skipped: tilde\n",
            "group_vars/mesh/e.yml.bak": "x_skipped: bak\n",
            "group_vars/mesh/e.orig": "x_skipped: orig\n",
            "group_vars/mesh/.e.yml.swp": "x_skipped: swp\n",
            "group_vars/mesh/.hidden.yml": "x_skipped: hidden\n",
            "group_vars/mesh/E.YML": "x_skipped: upper-case extension\n",
            "group_vars/mesh/notes.txt": "x_skipped: txt\n",
            "group_vars/mesh/old.d/f.yml": "x_skipped: directory with an extension\n",
        }
    )
    found = load_inventory(root).resolve("h1").vars
    assert {k: found[k] for k in found if k.startswith("x_")} == {
        "x_a": 1,
        "x_b": 1,
        "x_c": 1,
        "x_d": 1,
        "x_order": "sub/d",
    }


def test_files_beside_the_vars_files_are_ignored(make_inventory: MakeInventory) -> None:
    root = make_inventory(
        {
            "hosts.yaml": HOSTS,
            "host_vars/h1.yaml": "address: 10.0.0.1\n",
            "group_vars/README": "Variables of the mesh group. Not YAML: {\n",
            "group_vars/mesh.yaml.bak": "dpd_delay: [broken\n",
            "group_vars/mesh.yaml~": "dpd_delay: [broken\n",
            "group_vars/.mesh.yaml.swp": "dpd_delay: [broken\n",
            "group_vars/mesh.txt": "dpd_delay: [broken\n",
        }
    )
    inv = load_inventory(root)
    assert inv.resolve("h1").vars["dpd_delay"] == 30
    assert inv.warnings == ()


def test_vars_for_a_name_not_in_the_inventory_are_ignored(make_inventory: MakeInventory) -> None:
    root = make_inventory(
        {
            "hosts.yaml": "all: {children: {mesh: {hosts: {alpha: {address: 10.0.0.1}}}}}",
            "group_vars/old_site.yaml": "dpd_delay: [broken\n",
            "group_vars/mseh.yaml": "dpd_delay: 3\n",
            "host_vars/alhpa/main.yaml": "dpd_delay: 4\n",
        }
    )
    inv = load_inventory(root)
    assert inv.resolve("alpha").vars["dpd_delay"] == 30
    # a name one edit from one the inventory has is most likely a typo: a warning
    assert [
        (Path(w.mark.path).relative_to(root).as_posix(), w.message) for w in inv.warnings if w.mark
    ] == [
        (
            "group_vars/mseh.yaml",
            "group_vars for 'mseh', but the inventory has no group named 'mseh' "
            "(did you mean 'mesh'?); ignored, as Ansible ignores it",
        ),
        (
            "host_vars/alhpa",
            "host_vars for 'alhpa', but the inventory has no host named 'alhpa' "
            "(did you mean 'alpha'?); ignored, as Ansible ignores it",
        ),
    ]


def test_readme_inside_a_vars_directory_is_read(make_inventory: MakeInventory) -> None:
    # ansible-core reads every extensionless file in the directory, and fails on it too
    root = make_inventory(
        {
            "hosts.yaml": HOSTS,
            "host_vars/h1.yaml": "address: 10.0.0.1\n",
            "group_vars/mesh/README": "Variables of the mesh group\n",
        }
    )
    with pytest.raises(InventoryErrors) as caught:
        load_inventory(root)
    [error] = caught.value.errors
    assert error.mark is not None and Path(error.mark.path).name == "README"
    assert (
        error.message
        == "expected a mapping of variables, got the string 'Variables of the mesh group'"
    )


def test_two_files_for_one_name_are_refused(make_inventory: MakeInventory) -> None:
    root = make_inventory(
        {
            "hosts.yaml": HOSTS,
            "host_vars/h1.yaml": "address: 10.0.0.1\n",
            "group_vars/mesh.yml": "dpd_delay: 3\n",
            "group_vars/mesh.json": '{"dpd_delay": 4}',
        }
    )
    with pytest.raises(InventoryErrors) as caught:
        load_inventory(root)
    [error] = caught.value.errors
    assert error.message == (
        "mesh.yml and mesh.json both define 'mesh'; keep one of them (Ansible would read only "
        "mesh.yml)"
    )


def test_host_name_with_dots_finds_its_extensionless_file(make_inventory: MakeInventory) -> None:
    root = make_inventory(
        {
            "hosts.yaml": "all: {hosts: {gw.example.net: }}",
            "host_vars/gw.example.net": "address: 10.0.0.1\n",
        }
    )
    assert load_inventory(root).resolve("gw.example.net").vars["address"] == "10.0.0.1"
