"""INI inventories (``hosts.ini``, ``hosts``), read as ansible-core 2.17 reads them."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from vpnfleet.controller.inventory import InventoryError, InventoryErrors, load_inventory

MakeInventory = Callable[[dict[str, str]], Path]  # the make_inventory fixture (conftest.py)

INI = """
# a comment
; another comment
lone address=10.0.0.9
[mesh]
a1 address=10.0.0.1 x_n=3 x_s=abc x_b=True x_t=true x_l="[1, 2]" x_q='two words'
a2 address=10.0.0.2   # a trailing comment
[mesh:vars]
dpd_delay=10
x_gv=3
x_gs = hello world
x_gb=False
[site:children]
mesh
[site:vars]
x_site="paris"
"""


def only_error(root: Path) -> InventoryError:
    with pytest.raises(InventoryErrors) as caught:
        load_inventory(root)
    [error] = caught.value.errors
    return error


@pytest.mark.parametrize("name", ["hosts.ini", "hosts"])
def test_ini_groups_children_and_vars(make_inventory: MakeInventory, name: str) -> None:
    inv = load_inventory(make_inventory({name: INI}))
    assert list(inv.hosts) == ["lone", "a1", "a2"]
    assert inv.groups["site"].children == ("mesh",)
    assert inv.groups["mesh"].parents == ("site",)
    assert inv.groups["ungrouped"].hosts == ("lone",)
    assert inv.group_hosts("site") == ["a1", "a2"]
    a1 = inv.resolve("a1").vars
    assert a1["address"] == "10.0.0.1"
    assert a1["dpd_delay"] == 10
    assert a1["x_site"] == "paris"


def test_ini_values_are_typed_as_ansible_types_them(make_inventory: MakeInventory) -> None:
    # Host lines and :vars lines alike: a Python literal where the text is one.
    a1 = load_inventory(make_inventory({"hosts.ini": INI})).resolve("a1").vars
    assert (a1["x_n"], a1["x_s"], a1["x_b"], a1["x_t"]) == (3, "abc", True, "true")
    assert a1["x_l"] == [1, 2]
    assert a1["x_q"] == "two words"
    assert (a1["x_gv"], a1["x_gs"], a1["x_gb"]) == (3, "hello world", False)


def test_ini_vars_section_before_its_group_is_declared(make_inventory: MakeInventory) -> None:
    root = make_inventory({"hosts.ini": "[g:vars]\nx_a=1\n[g]\nh1 address=10.0.0.1\n"})
    assert load_inventory(root).resolve("h1").vars["x_a"] == 1


def test_ini_vars_for_a_group_never_declared(make_inventory: MakeInventory) -> None:
    root = make_inventory({"hosts.ini": "h1 address=10.0.0.1\n\n[ghost:vars]\nx_a=1\n"})
    error = only_error(root)
    assert error.mark is not None
    assert (Path(error.mark.path).name, error.mark.line) == ("hosts.ini", 3)
    assert error.message == (
        "section [ghost:vars] for a group that is never declared: add a [ghost] or "
        "[ghost:children] section"
    )


def test_ini_child_never_declared(make_inventory: MakeInventory) -> None:
    root = make_inventory({"hosts.ini": "[g]\nh1 address=10.0.0.1\n[top:children]\ng\nmissing\n"})
    error = only_error(root)
    assert error.mark is not None and error.mark.line == 5
    assert "[top:children] names group 'missing', which is never declared" in error.message


def test_ini_bad_value_points_at_line_and_column(make_inventory: MakeInventory) -> None:
    root = make_inventory({"hosts.ini": "[g]\nh1 address=10.0.0.1\n[g:vars]\ndpd_delay=soon\n"})
    error = only_error(root)
    assert error.mark is not None
    assert (error.mark.line, error.mark.column) == (4, 11)  # at the value
    assert error.message.startswith("group 'g': dpd_delay: expected seconds")


def test_ini_host_variable_column(make_inventory: MakeInventory) -> None:
    root = make_inventory({"hosts.ini": "[g]\nh1 address=10.0.0.1  mode=tunel\n"})
    error = only_error(root)
    assert error.mark is not None
    assert (error.mark.line, error.mark.column) == (2, 27)  # at the value
    assert "mode: expected one of tunnel | transport" in error.message


def test_ini_unknown_section_kind(make_inventory: MakeInventory) -> None:
    root = make_inventory({"hosts.ini": "[g]\nh1 address=10.0.0.1\n[g:child]\n"})
    error = only_error(root)
    assert error.mark is not None and error.mark.line == 3
    assert "unknown kind 'child'" in error.message


def test_ini_host_word_without_equals(make_inventory: MakeInventory) -> None:
    root = make_inventory({"hosts.ini": "[g]\nh1 address=10.0.0.1 nat\n"})
    error = only_error(root)
    assert error.mark is not None and error.mark.line == 2
    assert error.message == "host 'h1': expected key=value, got 'nat'"


def test_ini_host_with_port_and_range(make_inventory: MakeInventory) -> None:
    root = make_inventory(
        {
            "hosts.ini": "[g]\nweb[1:2]:2222\n",
            "host_vars/web1.yaml": "address: 10.0.0.1\n",
            "host_vars/web2.yaml": "address: 10.0.0.2\n",
        }
    )
    inv = load_inventory(root)
    assert list(inv.hosts) == ["web1", "web2"]
    assert inv.resolve("web2").vars["ansible_port"] == 2222


def test_two_inventory_sources_are_refused(make_inventory: MakeInventory) -> None:
    root = make_inventory(
        {"hosts.yaml": "all: {hosts: {h1: {address: 10.0.0.1}}}", "hosts.ini": "h1\n"}
    )
    error = only_error(root)
    assert error.mark is not None and Path(error.mark.path).name == "hosts.ini"
    assert error.message == (
        "hosts.yaml and hosts.ini are both inventory sources; keep one (vpnfleet reads hosts.yaml)"
    )


def test_ini_file_given_as_the_path(make_inventory: MakeInventory) -> None:
    root = make_inventory(
        {"inventory.ini": "[g]\nh1\n", "group_vars/g.yaml": "address: 10.0.0.1\n"}
    )
    inv = load_inventory(root / "inventory.ini")
    assert inv.resolve("h1").vars["address"] == "10.0.0.1"


def test_ini_lower_case_true_is_text_and_the_error_says_so(make_inventory: MakeInventory) -> None:
    root = make_inventory({"hosts.ini": "[g]\nh1 address=10.0.0.1 nat=true\n"})
    error = only_error(root)
    assert error.message == (
        "host 'h1': nat: expected true or false, got 'true' (text, not a boolean: write true "
        "or false unquoted in YAML, True or False in INI)"
    )
    root = make_inventory({"hosts.ini": "[g]\nh1 address=10.0.0.1 nat=True\n"})
    assert load_inventory(root).resolve("h1").vars["nat"] is True


def test_ini_all_vars_need_no_all_section(make_inventory: MakeInventory) -> None:
    root = make_inventory({"hosts": "h1 address=10.0.0.1\n[all:vars]\ndpd_delay=12\n"})
    assert load_inventory(root).resolve("h1").vars["dpd_delay"] == 12
