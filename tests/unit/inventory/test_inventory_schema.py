"""Normal forms of host variables."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from vpnfleet.controller.inventory import MarkedStr, load_inventory, parse_duration

MakeInventory = Callable[[dict[str, str]], Path]  # the make_inventory fixture (conftest.py)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [(0, 0), (90, 90), ("30s", 30), ("5m", 300), ("4h", 14400), ("1d", 86400), ("45", 45)],
)
def test_durations(value: int | str, seconds: int) -> None:
    assert parse_duration(value) == seconds


def test_normal_forms(make_inventory: MakeInventory) -> None:
    root = make_inventory(
        {
            "hosts.yaml": """
            all:
              hosts:
                h1:
                  address: 'FD00:0:0::0001'
                  subnets: [fd01::/64, 10.1.0.0/16]
                  ike_lifetime: 2h
                  nat: true
                  agent_address: '[fd00::1]:6000'
                  x_anything: [1, two]
            """
        }
    )
    host = load_inventory(root).resolve("h1")
    assert host.vars["address"] == "fd00::1"
    assert host.vars["subnets"] == ("fd01::/64", "10.1.0.0/16")
    assert host.vars["ike_lifetime"] == 7200
    assert host.vars["nat"] is True
    assert host.vars["agent_address"] == "[fd00::1]:6000"
    assert host.vars["x_anything"] == [1, "two"]


def test_list_items_keep_their_position(make_inventory: MakeInventory) -> None:
    # The planner reports a bad proposal at the item itself.
    root = make_inventory(
        {
            "hosts.yaml": "all: {hosts: {h1: {address: 10.0.0.1}}}",
            "group_vars/all.yaml": "ike_proposals:\n  - aes128gcm16-prfsha256-ecp256\n  - bogus\n",
        }
    )
    bogus = load_inventory(root).resolve("h1").vars["ike_proposals"][1]
    assert isinstance(bogus, MarkedStr)
    assert (Path(bogus.mark.path).name, bogus.mark.line, bogus.mark.column) == ("all.yaml", 3, 5)
