"""YAML as Ansible reads it: merge keys, ``!unsafe``, duplicate keys, one-name
``hosts:``/``children:``, and the list under ``hosts:`` that ansible-core refuses."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import pytest

from vpnfleet.controller.inventory import InventoryErrors, load_inventory
from vpnfleet.controller.inventory.source import UnsafeText, mark_of

MakeInventory = Callable[[dict[str, str]], Path]  # the make_inventory fixture (conftest.py)


def test_merge_key_with_overrides(make_inventory: MakeInventory) -> None:
    root = make_inventory(
        {
            "hosts.yaml": """
            all:
              vars:
                x_base: &base {dpd: 10, site: paris}
              hosts:
                h1:
                  address: 10.0.0.1
                  x_tuned:
                    <<: *base
                    site: lyon
            """
        }
    )
    inv = load_inventory(root)
    assert inv.resolve("h1").vars["x_tuned"] == {"dpd": 10, "site": "lyon"}
    assert inv.warnings == ()  # overriding a merged key is what merge keys are for


def test_merge_key_sets_vpnfleet_variables(make_inventory: MakeInventory) -> None:
    root = make_inventory(
        {
            "hosts.yaml": """
            all:
              children:
                edge:
                  vars: &edge {dpd_delay: 10s, nat: true}
                  hosts: {h1: {address: 10.0.0.1}}
                core:
                  vars:
                    <<: *edge
                    nat: false
                  hosts: {h2: {address: 10.0.0.2}}
            """
        }
    )
    h2 = load_inventory(root).resolve("h2").vars
    assert (h2["dpd_delay"], h2["nat"]) == (10, False)


def test_unsafe_tag_keeps_the_string(make_inventory: MakeInventory) -> None:
    root = make_inventory(
        {
            "hosts.yaml": "all: {hosts: {h1: {address: 10.0.0.1}}}",
            "host_vars/h1.yaml": "x_cmd: !unsafe \"{{ lookup('pipe', 'id') }}\"\nx_n: !unsafe 3\n",
        }
    )
    host = load_inventory(root).resolve("h1")
    assert host.vars["x_cmd"] == "{{ lookup('pipe', 'id') }}"
    assert isinstance(host.vars["x_cmd"], UnsafeText)
    assert host.vars["x_n"] == "3"  # a scalar tagged !unsafe is a string, as in Ansible


def test_duplicate_key_warns_and_keeps_the_last(
    make_inventory: MakeInventory, caplog: pytest.LogCaptureFixture
) -> None:
    root = make_inventory(
        {
            "hosts.yaml": "all:\n  hosts:\n    h1:\n      address: 10.0.0.1\n      dpd_delay: 5\n"
            "      dpd_delay: 7\n"
        }
    )
    with caplog.at_level(logging.WARNING):
        inv = load_inventory(root)
    assert inv.resolve("h1").vars["dpd_delay"] == 7
    [warning] = inv.warnings
    assert warning.mark is not None
    assert (Path(warning.mark.path).name, warning.mark.line, warning.mark.column) == (
        "hosts.yaml",
        6,
        7,
    )
    assert warning.message.startswith("duplicate key 'dpd_delay' (first at line 5)")
    assert f"{root / 'hosts.yaml'}:6:7: duplicate key 'dpd_delay'" in caplog.text


def test_host_listed_twice_under_one_group_warns(make_inventory: MakeInventory) -> None:
    root = make_inventory({"hosts.yaml": "all:\n  hosts:\n    h1:\n    h1: {address: 10.0.0.1}\n"})
    inv = load_inventory(root)
    assert inv.resolve("h1").vars["address"] == "10.0.0.1"
    assert [w.mark.line for w in inv.warnings if w.mark] == [4]


def test_hosts_and_children_as_one_name(make_inventory: MakeInventory) -> None:
    root = make_inventory(
        {
            "hosts.yaml": "all:\n  children: mesh\n  hosts: h0\n",
            "group_vars/all.yaml": "x_a: 1\n",
            "host_vars/h0.yaml": "address: 10.0.0.1\n",
        }
    )
    inv = load_inventory(root)
    assert "mesh" in inv.groups
    assert list(inv.hosts) == ["h0"]


def test_list_under_hosts_is_refused_as_ansible_core_refuses_it(
    make_inventory: MakeInventory,
) -> None:
    root = make_inventory({"hosts.yaml": "all:\n  hosts:\n    - h1\n    - h2\n"})
    with pytest.raises(InventoryErrors) as caught:
        load_inventory(root)
    [error] = caught.value.errors
    assert error.mark is not None and error.mark.line == 3
    assert "ansible-core refuses a list here too" in error.message


def test_duplicate_key_in_topology_warns(make_inventory: MakeInventory) -> None:
    root = make_inventory(
        {
            "hosts.yaml": "all: {hosts: {h1: {address: 10.0.0.1}}}",
            "topology.yaml": "overlay_pool: 100.64.0.0/10\noverlay_pool: 100.65.0.0/16\n",
        }
    )
    inv = load_inventory(root)
    assert inv.topology is not None and inv.topology["overlay_pool"] == "100.65.0.0/16"
    assert [(Path(w.mark.path).name, w.mark.line) for w in inv.warnings if w.mark] == [
        ("topology.yaml", 2)
    ]


def test_a_file_that_is_json_is_read_as_json(make_inventory: MakeInventory) -> None:
    """As ansible-core's loader: JSON first, whatever the file's name, so `1e3` is a
    number there; YAML 1.1 (any other text) reads it as text."""
    root = make_inventory(
        {
            "hosts.yaml": "all:\n  hosts:\n    h1:\n      address: 10.0.0.1\n",
            "host_vars/h1.json": '{"x_n": 1e3, "x_l": [2E-1, "\\/a", NaN], "dpd_delay": 20}\n',
            "group_vars/all.yaml": "x_y: 1e3\n",
        }
    )
    inv = load_inventory(root)
    v = inv.resolve("h1").vars
    assert (v["x_n"], v["x_y"], v["dpd_delay"]) == (1000.0, "1e3", 20)
    assert v["x_l"][:2] == [0.2, "/a"] and v["x_l"][2] != v["x_l"][2]  # NaN
    # Positions stay YAML's, for errors about the values.
    mark = mark_of(v["x_n"])
    assert mark is not None and mark.line == 1
