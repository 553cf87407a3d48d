"""Values wrong beside another: overlapping subnets between hosts, DPD timeout shorter
than its delay, lifetimes not longer than the rekey jitter. Each at file:line:col."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from vpnfleet.controller.inventory import InventoryErrors, load_inventory

MakeInventory = Callable[[dict[str, str]], Path]  # the make_inventory fixture (conftest.py)

MESH = """
all:
  children:
    mesh:
      hosts:
        a1: {address: 10.99.0.1, subnets: [10.1.1.0/24]}
        a2: {address: 10.99.0.2, subnets: [10.1.0.0/16]}
        a3: {address: 10.99.0.3, subnets: [10.1.3.0/24]}
        a4: {address: 10.99.0.4, subnets: [10.1.4.0/24, "fd00:4::/64"]}
"""


def errors_of(root: Path) -> list[tuple[str, int, int, str]]:
    with pytest.raises(InventoryErrors) as caught:
        load_inventory(root)
    out = []
    for e in caught.value.errors:
        assert e.mark is not None, str(e)
        out.append(
            (Path(e.mark.path).relative_to(root).as_posix(), e.mark.line, e.mark.column, e.message)
        )
    return out


def test_a_wider_subnet_capturing_other_hosts_is_refused(make_inventory: MakeInventory) -> None:
    root = make_inventory({"hosts.yaml": MESH})
    # a2's /16 holds the /24 of a1, a3 and a4: one error each, at a2's prefix.
    found = errors_of(root)
    assert [(f, line, col) for f, line, col, _ in found] == [("hosts.yaml", 6, 44)] * 3
    messages = [m for *_, m in found]
    for other, prefix, line in (
        ("a1", "10.1.1.0/24", 5),
        ("a3", "10.1.3.0/24", 7),
        ("a4", "10.1.4.0/24", 8),
    ):
        assert (
            f"subnets of host 'a2': 10.1.0.0/16 (at {root}/hosts.yaml:6:44) contains "
            f"{prefix} of host '{other}' (at {root}/hosts.yaml:{line}:44)"
        ) in "\n".join(messages)
    assert all("give each host prefixes that do not overlap" in m for m in messages)


def test_the_same_prefix_on_two_hosts_is_refused(make_inventory: MakeInventory) -> None:
    root = make_inventory(
        {
            "hosts.yaml": """
            all:
              hosts:
                b1: {address: 10.99.0.1}
                b2: {address: 10.99.0.2, subnets: ["fd00:2::/64"]}
            """,
            "host_vars/b1.yaml": "subnets: [10.2.0.0/24, 'fd00:2::/64']\n",
        }
    )
    [(name, line, col, message)] = errors_of(root)
    assert (name, line, col) == ("host_vars/b1.yaml", 1, 24)
    assert message == (
        f"subnets of host 'b1': fd00:2::/64 (at {root}/host_vars/b1.yaml:1:24) is also a "
        f"subnet of host 'b2' (at {root}/hosts.yaml:4:40): traffic for fd00:2::/64 would go "
        "to either in every peer's SPD; give each host prefixes that do not overlap"
    )


def test_a_subnet_given_to_every_host_by_a_group_is_one_error(
    make_inventory: MakeInventory,
) -> None:
    root = make_inventory(
        {
            "hosts.yaml": "all: {hosts: {c1: {address: 10.99.0.1}, c2: {address: 10.99.0.2}, "
            "c3: {address: 10.99.0.3}}}\n",
            "group_vars/all.yaml": "mode: tunnel\nsubnets: [10.0.0.0/8]\n",
        }
    )
    [(name, line, col, message)] = errors_of(root)
    assert (name, line, col) == ("group_vars/all.yaml", 2, 11)
    assert message.startswith(
        f"subnets: 10.0.0.0/8 (set at {root}/group_vars/all.yaml:2:11) is given to hosts "
        "c1, c2, c3: each host must protect prefixes of its own"
    )


def test_disjoint_and_other_family_subnets_pass(make_inventory: MakeInventory) -> None:
    root = make_inventory(
        {
            "hosts.yaml": """
            all:
              hosts:
                d1: {address: 10.99.0.1, subnets: [10.1.0.0/24, "fd00:1::/64"]}
                d2: {address: 10.99.0.2, subnets: [10.1.1.0/24, "fd00:2::/64"]}
                d3: {address: 10.99.0.3, subnets: [10.2.0.0/16]}
            """
        }
    )
    assert sorted(load_inventory(root).hosts) == ["d1", "d2", "d3"]


def test_dpd_timeout_shorter_than_the_delay(make_inventory: MakeInventory) -> None:
    root = make_inventory(
        {
            "hosts.yaml": "all: {hosts: {e1: {address: 10.99.0.1}, e2: {address: 10.99.0.2}}}\n",
            "group_vars/all.yaml": "dpd_delay: 30s\ndpd_timeout: 10s\n",
        }
    )
    # Once for the pair of definitions, not once per host that inherits them.
    [(name, line, col, message)] = errors_of(root)
    assert (name, line, col) == ("group_vars/all.yaml", 2, 1)
    assert message == (
        f"dpd_timeout 10s (set at {root}/group_vars/all.yaml:2:1) is shorter than dpd_delay "
        f"30s (set at {root}/group_vars/all.yaml:1:1) for hosts e1, e2: a peer would be "
        "declared dead before its liveness check could be answered; make dpd_timeout at "
        "least dpd_delay (or set dpd_delay: 0 to turn the checks off)"
    )


def test_a_default_timeout_below_a_raised_delay_points_at_the_delay(
    make_inventory: MakeInventory,
) -> None:
    root = make_inventory(
        {"hosts.yaml": "all: {hosts: {f1: {address: 10.99.0.1, dpd_delay: 5m}}}\n"}
    )
    [(name, line, col, message)] = errors_of(root)
    assert (name, line, col) == ("hosts.yaml", 1, 40)
    assert message.startswith("dpd_timeout 150s (default) is shorter than dpd_delay 300s")


def test_dpd_off_and_equal_timeout_pass(make_inventory: MakeInventory) -> None:
    root = make_inventory(
        {
            "hosts.yaml": "all: {hosts: {g1: {address: 10.99.0.1, dpd_delay: 0, dpd_timeout: 0},"
            " g2: {address: 10.99.0.2, dpd_delay: 40, dpd_timeout: 40}}}\n"
        }
    )
    assert sorted(load_inventory(root).hosts) == ["g1", "g2"]


@pytest.mark.parametrize("lifetime", ["ike_lifetime", "child_lifetime"])
def test_lifetime_not_longer_than_the_jitter(make_inventory: MakeInventory, lifetime: str) -> None:
    root = make_inventory(
        {
            "hosts.yaml": "all: {hosts: {h1: {address: 10.99.0.1}}}\n",
            "host_vars/h1.yaml": f"rekey_jitter: 2m\n{lifetime}: 2m\n",
        }
    )
    [(name, line, col, message)] = errors_of(root)
    assert (name, line, col) == ("host_vars/h1.yaml", 2, 1)
    assert message.startswith(
        f"{lifetime} 120s (set at {root}/host_vars/h1.yaml:2:1) is not longer than "
        f"rekey_jitter 120s (set at {root}/host_vars/h1.yaml:1:1) for host h1: "
    )
    assert message.endswith(f"make {lifetime} longer than rekey_jitter or rekey_jitter shorter")


def test_a_jitter_raised_above_a_default_lifetime_points_at_the_jitter(
    make_inventory: MakeInventory,
) -> None:
    root = make_inventory(
        {
            "hosts.yaml": "all: {hosts: {i1: {address: 10.99.0.1}}}\n",
            "group_vars/all.yaml": "rekey_jitter: 1h\n",
        }
    )
    [(name, line, col, message)] = errors_of(root)
    assert (name, line, col) == ("group_vars/all.yaml", 1, 1)
    assert message.startswith("child_lifetime 3600s (default) is not longer than rekey_jitter")
