"""Host ranges and host:port entries, expanded as ansible-core expands them."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from vpnfleet.controller.inventory import InventoryErrors, load_inventory
from vpnfleet.controller.inventory.hostpattern import (
    HostEntry,
    HostPatternError,
    expand_host_entry,
)

MakeInventory = Callable[[dict[str, str]], Path]  # the make_inventory fixture (conftest.py)


@pytest.mark.parametrize(
    ("text", "names", "port"),
    [
        ("a1", ("a1",), None),
        ("a1:2222", ("a1",), 2222),
        ("web[01:03]", ("web01", "web02", "web03"), None),
        ("web[8:10]", ("web8", "web9", "web10"), None),
        ("db-[a:c]", ("db-a", "db-b", "db-c"), None),
        ("db-[y:B]", ("db-y", "db-z", "db-A", "db-B"), None),
        ("s[1:10:4]", ("s1", "s5", "s9"), None),
        ("s[:2]", ("s0", "s1", "s2"), None),
        ("r[1:2]-[a:b]", ("r1-a", "r1-b", "r2-a", "r2-b"), None),
        ("web[1:2].example.net:22", ("web1.example.net", "web2.example.net"), 22),
        ("10.0.0.[1:2]", ("10.0.0.1", "10.0.0.2"), None),
    ],
)
def test_expand_host_entry(text: str, names: tuple[str, ...], port: int | None) -> None:
    assert expand_host_entry(text) == HostEntry(names, port)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("web[1]", "expected [begin:end] or [begin:end:step]"),
        ("web[01:100]", "begin and end must have the same width"),
        ("web[c:a]", "begin is after end"),
        ("web[1:]", "has no end"),
        ("web[1:3:0]", "step must be 1 or more"),
        ("web[1:c]", "expected numbers ([1:20]) or single letters ([a:f])"),
        ("web[1:3", "has no closing ']'"),
    ],
)
def test_bad_ranges(text: str, problem: str) -> None:
    with pytest.raises(HostPatternError) as caught:
        expand_host_entry(text)
    assert problem in str(caught.value)


def test_yaml_range_and_port(make_inventory: MakeInventory) -> None:
    root = make_inventory(
        {
            "hosts.yaml": """
            all:
              children:
                web:
                  hosts:
                    web[01:02]:2200: {x_role: front}
                    db1:2222: {address: 10.0.0.9, ansible_port: 22}
            """,
            "host_vars/web01.yaml": "address: 10.0.0.1\n",
            "host_vars/web02.yaml": "address: 10.0.0.2\n",
        }
    )
    inv = load_inventory(root)
    assert list(inv.hosts) == ["web01", "web02", "db1"]
    web02 = inv.resolve("web02")
    assert web02.vars["ansible_port"] == 2200
    assert web02.vars["x_role"] == "front"
    assert web02.origins["ansible_port"].line == 5
    # a port written beside the entry wins over the entry's, as in ansible-core
    assert inv.resolve("db1").vars["ansible_port"] == 22


def test_port_only_where_the_host_is_first_listed(make_inventory: MakeInventory) -> None:
    # ansible-core takes host:port when it creates the host; a later listing's is ignored
    root = make_inventory(
        {
            "hosts.yaml": """
            all:
              children:
                a: {hosts: {h1:2201: {address: 10.0.0.1}}}
                b: {hosts: {h1:2202: }}
            """
        }
    )
    assert load_inventory(root).resolve("h1").vars["ansible_port"] == 2201


def test_bad_range_in_yaml_names_its_line(make_inventory: MakeInventory) -> None:
    root = make_inventory({"hosts.yaml": "all:\n  hosts:\n    web[01:100]:\n"})
    with pytest.raises(InventoryErrors) as caught:
        load_inventory(root)
    [error] = caught.value.errors
    assert error.mark is not None and error.mark.line == 3
    assert error.message.startswith("host 'web[01:100]': range [01:100] in 'web[01:100]'")
