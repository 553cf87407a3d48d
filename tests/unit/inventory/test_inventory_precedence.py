"""Variable precedence: one test per rule (Ansible's, see controller/inventory/model.py)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from vpnfleet.controller.inventory import DEFAULT_MARK, UNGROUPED, load_inventory

MakeInventory = Callable[[dict[str, str]], Path]  # the make_inventory fixture (conftest.py)

# Durations make handy probes: each level sets dpd_delay to a different value.


def test_defaults_fill_every_variable(make_inventory: MakeInventory) -> None:
    inv = load_inventory(make_inventory({"hosts.yaml": "all: {hosts: {h1: {address: 10.0.0.1}}}"}))
    host = inv.resolve("h1")
    assert host.vars["ike_lifetime"] == 14400
    assert host.vars["ike_proposals"] == ("aes256gcm16-prfsha384-x25519",)
    assert host.vars["identity"] == "h1"
    assert host.origins["ike_lifetime"] == DEFAULT_MARK
    assert "ansible_group_priority" not in host.vars


def test_group_beats_all(make_inventory: MakeInventory) -> None:
    root = make_inventory(
        {
            "hosts.yaml": """
            all:
              vars: {dpd_delay: 1}
              children:
                g: {vars: {dpd_delay: 2}, hosts: {h1: {address: 10.0.0.1}}}
            """
        }
    )
    assert load_inventory(root).resolve("h1").vars["dpd_delay"] == 2


def test_child_group_beats_parent_group(make_inventory: MakeInventory) -> None:
    root = make_inventory(
        {
            "hosts.yaml": """
            all:
              children:
                parent:
                  vars: {dpd_delay: 2}
                  children:
                    child: {vars: {dpd_delay: 3}, hosts: {h1: {address: 10.0.0.1}}}
            """
        }
    )
    host = load_inventory(root).resolve("h1")
    assert host.vars["dpd_delay"] == 3
    assert host.groups == ("all", "parent", "child")


def test_host_beats_child_group(make_inventory: MakeInventory) -> None:
    root = make_inventory(
        {
            "hosts.yaml": """
            all:
              children:
                g: {vars: {dpd_delay: 3}, hosts: {h1: {address: 10.0.0.1, dpd_delay: 4}}}
            """
        }
    )
    assert load_inventory(root).resolve("h1").vars["dpd_delay"] == 4


def test_group_vars_file_beats_inline_vars_of_same_group(make_inventory: MakeInventory) -> None:
    root = make_inventory(
        {
            "hosts.yaml": """
            all:
              children:
                g: {vars: {dpd_delay: 2}, hosts: {h1: {address: 10.0.0.1}}}
            """,
            "group_vars/g.yaml": "dpd_delay: 5\n",
        }
    )
    host = load_inventory(root).resolve("h1")
    assert host.vars["dpd_delay"] == 5
    assert host.origins["dpd_delay"].path.endswith("group_vars/g.yaml")
    assert host.origins["dpd_delay"].line == 1


def test_all_group_vars_file_beats_inline_all_vars(make_inventory: MakeInventory) -> None:
    root = make_inventory(
        {
            "hosts.yaml": "all: {vars: {dpd_delay: 1}, hosts: {h1: {address: 10.0.0.1}}}",
            "group_vars/all.yml": "dpd_delay: 6\n",
        }
    )
    assert load_inventory(root).resolve("h1").vars["dpd_delay"] == 6


def test_group_vars_all_file_beats_child_inline_vars(make_inventory: MakeInventory) -> None:
    # Ansible: every group's inline vars rank below every group_vars file
    # (VARIABLE_PRECEDENCE groups_inventory < all_plugins_inventory).
    root = make_inventory(
        {
            "hosts.yaml": """
            all:
              children:
                g: {vars: {dpd_delay: 2}, hosts: {h1: {address: 10.0.0.1}}}
            """,
            "group_vars/all.yaml": "dpd_delay: 1\n",
        }
    )
    assert load_inventory(root).resolve("h1").vars["dpd_delay"] == 1


def test_child_group_vars_file_beats_all_group_vars_file(make_inventory: MakeInventory) -> None:
    root = make_inventory(
        {
            "hosts.yaml": "all: {children: {g: {hosts: {h1: {address: 10.0.0.1}}}}}",
            "group_vars/all.yaml": "dpd_delay: 1\n",
            "group_vars/g.yaml": "dpd_delay: 3\n",
        }
    )
    assert load_inventory(root).resolve("h1").vars["dpd_delay"] == 3


def test_host_vars_file_beats_inline_host_vars(make_inventory: MakeInventory) -> None:
    root = make_inventory(
        {
            "hosts.yaml": "all: {hosts: {h1: {address: 10.0.0.1, dpd_delay: 4}}}",
            "host_vars/h1.yaml": "dpd_delay: 7\n",
        }
    )
    assert load_inventory(root).resolve("h1").vars["dpd_delay"] == 7


def test_inline_host_vars_beat_child_group_vars_file(make_inventory: MakeInventory) -> None:
    root = make_inventory(
        {
            "hosts.yaml": "all: {children: {g: {hosts: {h1: {address: 10.0.0.1, dpd_delay: 4}}}}}",
            "group_vars/g.yaml": "dpd_delay: 5\n",
        }
    )
    assert load_inventory(root).resolve("h1").vars["dpd_delay"] == 4


def test_deeper_group_wins_regardless_of_priority(make_inventory: MakeInventory) -> None:
    # Depth is compared first: a low-priority grandchild still beats a high-priority group.
    root = make_inventory(
        {
            "hosts.yaml": """
            all:
              children:
                top:
                  vars: {dpd_delay: 1, ansible_group_priority: 100}
                  hosts: {h1: {address: 10.0.0.1}}
                mid:
                  children:
                    deep: {vars: {dpd_delay: 2}, hosts: {h1: }}
            """
        }
    )
    assert load_inventory(root).resolve("h1").vars["dpd_delay"] == 2


def test_same_depth_higher_priority_wins(make_inventory: MakeInventory) -> None:
    root = make_inventory(
        {
            "hosts.yaml": """
            all:
              children:
                alpha:
                  vars: {dpd_delay: 1, ansible_group_priority: 10}
                  hosts: {h1: {address: 10.0.0.1}}
                beta:
                  vars: {dpd_delay: 2}
                  hosts: {h1: }
            """
        }
    )
    host = load_inventory(root).resolve("h1")
    assert host.vars["dpd_delay"] == 1
    assert host.groups == ("all", "beta", "alpha")


def test_priority_in_group_vars_file_does_not_order_groups(make_inventory: MakeInventory) -> None:
    # ansible-core applies ansible_group_priority only where the inventory source sets
    # it; from group_vars/ it is an ordinary variable (and shows in the host's vars).
    root = make_inventory(
        {
            "hosts.yaml": """
            all:
              children:
                alpha: {vars: {dpd_delay: 1}, hosts: {h1: {address: 10.0.0.1}}}
                beta: {vars: {dpd_delay: 2}, hosts: {h1: }}
            """,
            "group_vars/alpha.yaml": "ansible_group_priority: 5\n",
        }
    )
    host = load_inventory(root).resolve("h1")
    assert host.vars["dpd_delay"] == 2
    assert host.groups == ("all", "alpha", "beta")
    assert host.vars["ansible_group_priority"] == 5


def test_same_depth_same_priority_later_name_wins(make_inventory: MakeInventory) -> None:
    root = make_inventory(
        {
            "hosts.yaml": """
            all:
              children:
                zulu: {vars: {dpd_delay: 26}, hosts: {h1: {address: 10.0.0.1}}}
                alpha: {vars: {dpd_delay: 1}, hosts: {h1: }}
            """
        }
    )
    assert load_inventory(root).resolve("h1").vars["dpd_delay"] == 26


def test_dicts_are_replaced_not_merged(make_inventory: MakeInventory) -> None:
    root = make_inventory(
        {
            "hosts.yaml": """
            all:
              vars: {x_tags: {site: paris, tier: gold}, subnets: [10.1.0.0/24, 10.2.0.0/24]}
              hosts: {h1: {address: 10.0.0.1, x_tags: {site: lyon}, subnets: [10.3.0.0/24]}}
            """
        }
    )
    host = load_inventory(root).resolve("h1")
    assert host.vars["x_tags"] == {"site": "lyon"}
    assert host.vars["subnets"] == ("10.3.0.0/24",)


def test_host_in_several_groups_merges_inline_vars(make_inventory: MakeInventory) -> None:
    root = make_inventory(
        {
            "hosts.yaml": """
            all:
              children:
                one: {hosts: {h1: {address: 10.0.0.1, dpd_delay: 5}}}
                two: {hosts: {h1: {nat: true, dpd_delay: 6}}}
            """
        }
    )
    inv = load_inventory(root)
    host = inv.resolve("h1")
    assert (host.vars["address"], host.vars["nat"], host.vars["dpd_delay"]) == (
        "10.0.0.1",
        True,
        6,
    )
    assert inv.hosts["h1"].groups == ("one", "two")
    assert list(inv.hosts) == ["h1"]


def test_group_vars_directory_files_read_in_lexical_order(make_inventory: MakeInventory) -> None:
    root = make_inventory(
        {
            "hosts.yaml": "all: {children: {g: {hosts: {h1: {address: 10.0.0.1}}}}}",
            "group_vars/g/20-late.yaml": "dpd_delay: 20\n",
            "group_vars/g/10-early.yml": "dpd_delay: 10\nnat_keepalive: 10\n",
        }
    )
    host = load_inventory(root).resolve("h1")
    assert (host.vars["dpd_delay"], host.vars["nat_keepalive"]) == (20, 10)


def test_host_vars_directory(make_inventory: MakeInventory) -> None:
    root = make_inventory(
        {
            "hosts.yaml": "all: {hosts: {h1: }}",
            "host_vars/h1/address.yaml": "address: 10.0.0.1\n",
            "host_vars/h1/tuning.yaml": "dpd_delay: 9\n",
        }
    )
    host = load_inventory(root).resolve("h1")
    assert (host.vars["address"], host.vars["dpd_delay"]) == ("10.0.0.1", 9)


def test_hosts_in_no_child_group_are_ungrouped(make_inventory: MakeInventory) -> None:
    root = make_inventory(
        {
            "hosts.yaml": """
            all:
              hosts:
                lone: {address: 10.0.0.1}
                both: {address: 10.0.0.2}
              children:
                g: {hosts: {both: }}
            """
        }
    )
    inv = load_inventory(root)
    assert inv.groups[UNGROUPED].hosts == ("lone",)
    assert inv.resolve("lone").groups == ("all", "ungrouped")
    assert inv.resolve("both").groups == ("all", "g")
    assert inv.group_hosts(UNGROUPED) == ["lone"]


def test_all_is_implicit(make_inventory: MakeInventory) -> None:
    root = make_inventory(
        {
            "hosts.yaml": "mesh: {hosts: {h1: {address: 10.0.0.1}}}",
            "group_vars/all.yaml": "dpd_delay: 3\n",
        }
    )
    inv = load_inventory(root)
    assert inv.groups["all"].children == ("mesh", "ungrouped")
    assert inv.groups["mesh"].parents == ("all",)
    assert inv.resolve("h1").groups == ("all", "mesh")
    assert inv.resolve("h1").vars["dpd_delay"] == 3


def test_group_depth_is_longest_path_from_all(make_inventory: MakeInventory) -> None:
    # `leaf` is both a direct child of all and a grandchild: Ansible takes the deeper.
    root = make_inventory(
        {
            "hosts.yaml": """
            all:
              children:
                leaf: {vars: {dpd_delay: 1}}
                mid:
                  vars: {dpd_delay: 2}
                  children:
                    leaf: {hosts: {h1: {address: 10.0.0.1}}}
            """
        }
    )
    inv = load_inventory(root)
    assert inv.groups["leaf"].depth == 2
    assert inv.resolve("h1").vars["dpd_delay"] == 1


def test_origins_point_at_the_winning_definition(make_inventory: MakeInventory) -> None:
    root = make_inventory(
        {
            "hosts.yaml": """
            all:
              hosts:
                h1:
                  address: 10.0.0.1
            """
        }
    )
    origin = load_inventory(root).resolve("h1").origins["address"]
    assert origin.path.endswith("hosts.yaml")
    assert (origin.line, origin.column) == (4, 7)
