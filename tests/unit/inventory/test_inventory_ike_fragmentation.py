"""ike_fragmentation and ike_fragment_size (RFC 7383): defaults, good values, each bad kind."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from vpnfleet.controller.inventory import InventoryErrors, load_inventory

MakeInventory = Callable[[dict[str, str]], Path]  # the make_inventory fixture (conftest.py)


def test_defaults_offer_fragmentation_at_1280(make_inventory: MakeInventory) -> None:
    root = make_inventory({"hosts.yaml": "all: {hosts: {h1: {address: 10.0.0.1}}}"})
    host = load_inventory(root).resolve("h1")
    assert (host.vars["ike_fragmentation"], host.vars["ike_fragment_size"]) == (True, 1280)


@pytest.mark.parametrize("size", [576, 1400, 65535])
def test_good_values(make_inventory: MakeInventory, size: int) -> None:
    root = make_inventory(
        {
            "hosts.yaml": "all: {hosts: {h1: {address: 10.0.0.1}}}",
            "group_vars/all.yaml": f"ike_fragmentation: false\nike_fragment_size: {size}\n",
        }
    )
    host = load_inventory(root).resolve("h1")
    assert (host.vars["ike_fragmentation"], host.vars["ike_fragment_size"]) == (False, size)


@pytest.mark.parametrize(
    ("line", "column", "expected"),
    [
        (
            "ike_fragment_size: 575",
            20,
            "ike_fragment_size: expected an integer 576..65535, got 575",
        ),
        (
            "ike_fragment_size: 65536",
            20,
            "ike_fragment_size: expected an integer 576..65535, got 65536",
        ),
        ("ike_fragment_size: 1400B", 20, "ike_fragment_size: expected an integer, got '1400B'"),
        # YAML booleans carry no position of their own: the error points at the key.
        ("ike_fragment_size: true", 1, "ike_fragment_size: expected an integer, got true"),
        ("ike_fragmentation: maybe", 20, "ike_fragmentation: expected true or false, got 'maybe'"),
        ("ike_fragmentation: 1", 20, "ike_fragmentation: expected true or false, got 1"),
    ],
)
def test_bad_values_name_file_line_and_column(
    make_inventory: MakeInventory, line: str, column: int, expected: str
) -> None:
    root = make_inventory(
        {
            "hosts.yaml": "all:\n  hosts:\n    h1:\n      address: 10.0.0.1\n",
            "host_vars/h1.yaml": f"dpd_delay: 10s\n{line}\n",
        }
    )
    with pytest.raises(InventoryErrors) as caught:
        load_inventory(root)
    [error] = caught.value.errors
    path = root / "host_vars" / "h1.yaml"
    assert str(error) == f"{path}:2:{column}: host 'h1': {expected}"
