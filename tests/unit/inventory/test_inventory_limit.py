"""--limit patterns, one test per kind (Ansible host patterns)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from vpnfleet.controller.inventory import Inventory, LimitError, load_inventory

MakeInventory = Callable[[dict[str, str]], Path]  # the make_inventory fixture (conftest.py)

HOSTS = """
all:
  hosts:
    lone: {address: 10.0.0.9}
  children:
    hubs:
      hosts:
        hub1: {address: 10.0.0.1}
        hub2: {address: 10.0.0.2}
    spokes:
      hosts:
        spoke1: {address: 10.0.1.1}
        spoke2: {address: 10.0.1.2}
        spoke3: {address: 10.0.1.3}
    paris:
      hosts:
        hub1:
        spoke1:
"""


@pytest.fixture
def inv(make_inventory: MakeInventory) -> Inventory:
    return load_inventory(make_inventory({"hosts.yaml": HOSTS}))


def test_host_name(inv: Inventory) -> None:
    assert inv.hosts_matching("spoke2") == ["spoke2"]


def test_group_name(inv: Inventory) -> None:
    assert inv.hosts_matching("hubs") == ["hub1", "hub2"]


def test_glob_over_host_names(inv: Inventory) -> None:
    assert inv.hosts_matching("spoke[12]") == ["spoke1", "spoke2"]


def test_glob_over_group_names(inv: Inventory) -> None:
    # "pa*" names no host, but the group "paris"
    assert inv.hosts_matching("pa*") == ["hub1", "spoke1"]


def test_union_with_colon(inv: Inventory) -> None:
    assert inv.hosts_matching("hubs:spoke3") == ["hub1", "hub2", "spoke3"]


def test_union_with_comma(inv: Inventory) -> None:
    assert inv.hosts_matching("spoke3,hub2") == ["hub2", "spoke3"]


def test_intersection(inv: Inventory) -> None:
    assert inv.hosts_matching("spokes:&paris") == ["spoke1"]


def test_exclusion(inv: Inventory) -> None:
    assert inv.hosts_matching("spokes:!paris") == ["spoke2", "spoke3"]


def test_exclusion_alone_starts_from_all(inv: Inventory) -> None:
    assert inv.hosts_matching("!spokes") == ["lone", "hub1", "hub2"]


def test_exclusion_applies_after_union_whatever_the_order(inv: Inventory) -> None:
    assert inv.hosts_matching("!hub1:hubs") == ["hub2"]


@pytest.mark.parametrize("pattern", ["all", "*"])
def test_all(inv: Inventory, pattern: str) -> None:
    assert inv.hosts_matching(pattern) == list(inv.hosts)


def test_ungrouped(inv: Inventory) -> None:
    assert inv.hosts_matching("ungrouped") == ["lone"]


def test_regex(inv: Inventory) -> None:
    assert inv.hosts_matching("~^(hub|spoke)1$") == ["hub1", "spoke1"]


def test_unknown_name_is_error_with_did_you_mean(inv: Inventory) -> None:
    with pytest.raises(
        LimitError, match=r"no host or group named 'spoks' \(did you mean 'spokes'\?\)"
    ):
        inv.hosts_matching("hubs:spoks")


def test_unknown_name_in_exclusion_is_error(inv: Inventory) -> None:
    with pytest.raises(
        LimitError, match=r"no host or group named 'hub9' \(did you mean 'hubs'\?\)"
    ):
        inv.hosts_matching("all:!hub9")


def test_glob_matching_nothing_is_error(inv: Inventory) -> None:
    with pytest.raises(LimitError, match=r"'db\*' matches no host or group"):
        inv.hosts_matching("db*")


def test_empty_pattern_is_error(inv: Inventory) -> None:
    with pytest.raises(LimitError, match="is empty"):
        inv.hosts_matching(" , ")


def test_filter_returns_new_inventory(inv: Inventory) -> None:
    small = inv.filter("paris")
    assert list(small.hosts) == ["hub1", "spoke1"]
    assert small.groups["hubs"].hosts == ("hub1",)
    assert small.group_hosts("spokes") == ["spoke1"]
    assert small.resolve("spoke1").vars["address"] == "10.0.1.1"
    assert list(inv.hosts) == ["lone", "hub1", "hub2", "spoke1", "spoke2", "spoke3"]
    with pytest.raises(Exception, match="no host named 'hub2'"):
        small.resolve("hub2")
