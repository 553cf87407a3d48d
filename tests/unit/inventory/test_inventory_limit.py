"""--limit patterns, one test per kind (Ansible host patterns)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from vpnfleet.controller.inventory import (
    Inventory,
    LimitError,
    limit_hosts,
    load_inventory,
    split_pattern,
)
from vpnfleet.controller.inventory.limit import group_host_order

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
    assert inv.hosts_matching("spoke[!3s]") == ["spoke1", "spoke2"]


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


def test_subset_returns_new_inventory(inv: Inventory) -> None:
    small = inv.subset(inv.hosts_matching("paris"))
    assert list(small.hosts) == ["hub1", "spoke1"]
    assert small.groups["hubs"].hosts == ("hub1",)
    assert small.group_hosts("spokes") == ["spoke1"]
    assert small.resolve("spoke1").vars["address"] == "10.0.1.1"
    assert list(inv.hosts) == ["lone", "hub1", "hub2", "spoke1", "spoke2", "spoke3"]
    with pytest.raises(Exception, match="no host named 'hub2'"):
        small.resolve("hub2")


# ---- as ansible-core: regex anchoring, splitting, subscripts, retry files


def test_regex_matches_from_the_start_of_the_name(inv: Inventory) -> None:
    # re.match, not re.search: "~poke" is not found inside "spoke1"
    assert inv.hosts_matching("~spoke[12]") == ["spoke1", "spoke2"]
    with pytest.raises(LimitError, match=r"'~poke' matches no host or group"):
        inv.hosts_matching("~poke")


def test_regex_is_not_anchored_at_the_end(inv: Inventory) -> None:
    assert inv.hosts_matching("~hub") == ["hub1", "hub2"]


@pytest.mark.parametrize(
    ("pattern", "terms"),
    [
        ("a1:a2,a3", ["a1:a2", "a3"]),  # a comma present: split at commas only
        ("hubs:&paris", ["hubs", "&paris"]),
        ("hubs:!paris, lone", ["hubs:!paris", "lone"]),
        ("a b:c", ["a", "b", "c"]),  # without a comma, whitespace separates too
        ("a b,c", ["a b", "c"]),
        ("fe80::1", ["fe80::1"]),  # an IPv6 address stays whole
        ("2001:db8::[1:3]", ["2001:db8::[1:3]"]),
        ("web[1:3]", ["web[1:3]"]),  # a range inside brackets stays whole
        ("web[1:3]:db", ["web[1:3]", "db"]),
        ("db-[a:c]:web[1:2]", ["db-[a:c]", "web[1:2]"]),
        ("host1:22", ["host1:22"]),  # a name and a port read as one address
        ("fe80::1:a1", ["fe80::1:a1"]),  # ansible-core reads IPv6 forms as prefixes
        ("a1::x:y", ["a1::x:y"]),
        (" , ", []),
    ],
)
def test_split_as_ansible(pattern: str, terms: list[str]) -> None:
    assert split_pattern(pattern) == terms


def test_colon_inside_a_comma_pattern_is_no_separator(inv: Inventory) -> None:
    with pytest.raises(LimitError, match=r"no host or group named 'hubs:spoke3'.*commas only"):
        inv.hosts_matching("hubs:spoke3,lone")


SITES = """
all:
  hosts:
    lone: {address: 10.0.0.9}
  children:
    sites:
      children:
        paris:
          hosts:
            p1: {address: 10.0.1.1}
            p2: {address: 10.0.1.2}
        rome:
          hosts:
            r1: {address: 10.0.2.1}
      hosts:
        hq: {address: 10.0.0.1}
"""


@pytest.fixture
def sites(make_inventory: MakeInventory) -> Inventory:
    return load_inventory(make_inventory({"hosts.yaml": SITES}))


def test_group_host_order_is_ansibles(sites: Inventory) -> None:
    # a group's own hosts, then its children's, breadth first; all has ungrouped first
    assert group_host_order(sites, "sites") == ["hq", "p1", "p2", "r1"]
    assert group_host_order(sites, "all") == ["lone", "hq", "p1", "p2", "r1"]


@pytest.mark.parametrize(
    ("pattern", "hosts"),
    [
        ("sites[0]", ["hq"]),  # hq is written last but is sites' own host
        ("sites[-1]", ["r1"]),
        ("sites[1:2]", ["p1", "p2"]),  # both ends included
        ("sites[2:]", ["p2", "r1"]),
        ("sites[1:0]", ["p1"]),  # ansible-core reads [a:0] as [a]
        ("sites[1:9]", ["p1", "p2", "r1"]),
        ("all[0]", ["lone"]),
        ("p*[1]", ["p2"]),  # over what the glob selects: the group paris
        ("paris[0]:rome[0]", ["p1", "r1"]),
        ("sites:!sites[0]", ["p1", "p2", "r1"]),
        ("p1[0]", ["p1"]),
    ],
)
def test_subscripts(sites: Inventory, pattern: str, hosts: list[str]) -> None:
    assert sorted(sites.hosts_matching(pattern)) == sorted(hosts)


def test_subscript_past_the_end_is_refused(sites: Inventory) -> None:
    with pytest.raises(LimitError, match=r"'rome\[3\]' selects nothing: 'rome' lists 1 host"):
        sites.hosts_matching("rome[3]")
    with pytest.raises(LimitError, match=r"'rome\[2:3\]' selects nothing"):
        sites.hosts_matching("rome[2:3]")


def test_digits_in_brackets_are_a_subscript_not_a_glob(sites: Inventory) -> None:
    # as in ansible-core: "p[12]" is "p" subscripted, and "p" names nothing
    with pytest.raises(LimitError, match=r"no host or group named 'p'"):
        sites.hosts_matching("p[12]")


def test_result_is_in_inventory_order(sites: Inventory) -> None:
    assert sites.hosts_matching("r1,sites[0],lone") == ["lone", "r1", "hq"]


def test_retry_file_relative_to_current_directory(
    sites: Inventory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "site.retry").write_text("r1\n\n  p2  \n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    assert limit_hosts(sites, "@site.retry") == ["p2", "r1"]
    assert limit_hosts(sites, "@site.retry:lone") == ["lone", "p2", "r1"]


def test_retry_file_missing_or_a_directory(
    sites: Inventory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(LimitError, match=r"no limit file 'gone.retry'"):
        limit_hosts(sites, "@gone.retry")
    (tmp_path / "empty.retry").write_text("\n \n", encoding="utf-8")
    with pytest.raises(LimitError, match=r"limit file 'empty.retry' names no host"):
        limit_hosts(sites, "@empty.retry")
    (tmp_path / "d").mkdir()
    with pytest.raises(LimitError, match=r"'@d' is a directory"):
        limit_hosts(sites, "@d")


def test_topology_patterns_read_no_file(
    sites: Inventory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "site.retry").write_text("r1\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(LimitError, match=r"no host or group named '@site.retry'"):
        sites.hosts_matching("@site.retry")
