"""Every kind of inventory error: file, line, column and what was expected."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from vpnfleet.controller.inventory import InventoryError, InventoryErrors, load_inventory

MakeInventory = Callable[[dict[str, str]], Path]  # the make_inventory fixture (conftest.py)


def errors_of(root: Path) -> list[InventoryError]:
    with pytest.raises(InventoryErrors) as caught:
        load_inventory(root)
    return caught.value.errors


def only_error(root: Path) -> tuple[str, int, str]:
    """(file path relative to the inventory, line, message) of the single error."""
    [error] = errors_of(root)
    assert error.mark is not None, str(error)
    return Path(error.mark.path).relative_to(root).as_posix(), error.mark.line, error.message


def test_malformed_yaml(make_inventory: MakeInventory) -> None:
    root = make_inventory({"hosts.yaml": "all:\n  hosts:\n    h1: {address: 10.0.0.1\n"})
    name, line, message = only_error(root)
    assert name == "hosts.yaml"
    assert line == 4
    assert message.startswith("invalid YAML: ")


def test_malformed_yaml_in_group_vars_is_reported_with_the_rest(
    make_inventory: MakeInventory,
) -> None:
    root = make_inventory(
        {
            "hosts.yaml": "all: {hosts: {h1: {address: 10.0.0.1, dpd_dela: 3}}}",
            "group_vars/all.yaml": "ike_lifetime: [1\n",
        }
    )
    found = {
        (Path(e.mark.path).name if e.mark else "", e.message.split(":")[0]) for e in errors_of(root)
    }
    assert ("all.yaml", "invalid YAML") in found
    assert ("hosts.yaml", "host 'h1'") in found


def test_unreadable_hosts_file_does_not_flood_the_report(make_inventory: MakeInventory) -> None:
    # group_vars/mesh.yaml cannot be matched against a hosts.yaml that did not parse
    root = make_inventory({"hosts.yaml": "all: [\n", "group_vars/mesh.yaml": "dpd_delay: 3\n"})
    name, _, message = only_error(root)
    assert name == "hosts.yaml"
    assert message.startswith("invalid YAML")


def test_top_level_must_be_a_mapping(make_inventory: MakeInventory) -> None:
    root = make_inventory({"hosts.yaml": "- h1\n- h2\n"})
    assert only_error(root) == (
        "hosts.yaml",
        1,
        "expected a mapping with 'all:' at the top, got a list",
    )


def test_empty_hosts_file(make_inventory: MakeInventory) -> None:
    root = make_inventory({"hosts.yaml": "# nothing yet\n"})
    assert only_error(root) == (
        "hosts.yaml",
        1,
        "no hosts defined (expected 'all:' with 'hosts:')",
    )


def test_missing_hosts_file(tmp_path: Path) -> None:
    with pytest.raises(
        InventoryErrors,
        match=r"no inventory source in .* \(expected one of hosts.yaml, hosts.yml, hosts.ini, "
        r"hosts\)",
    ):
        load_inventory(tmp_path)


def test_hosts_must_be_a_mapping(make_inventory: MakeInventory) -> None:
    root = make_inventory({"hosts.yaml": "all:\n  children:\n    g:\n      hosts:\n        - h1\n"})
    assert only_error(root) == (
        "hosts.yaml",
        5,
        "group 'g': 'hosts' must be a mapping of host names, got a list (ansible-core "
        "refuses a list here too: write each name as a key ending in ':', e.g. "
        "'hosts: {a1: , a2: }')",
    )


def test_children_must_be_a_mapping(make_inventory: MakeInventory) -> None:
    root = make_inventory({"hosts.yaml": "all:\n  children: [mesh]\n"})
    assert only_error(root) == (
        "hosts.yaml",
        2,
        "group 'all': 'children' must be a mapping of group names, got a list (ansible-core "
        "refuses a list here too: write each name as a key ending in ':', e.g. "
        "'children: {a1: , a2: }')",
    )


def test_group_entry_must_be_a_mapping(make_inventory: MakeInventory) -> None:
    root = make_inventory({"hosts.yaml": "all:\n  children:\n    g: [h1]\n"})
    assert only_error(root) == (
        "hosts.yaml",
        3,
        "group 'g': expected a mapping with hosts, children or vars, got a list",
    )


def test_unknown_key_in_group_entry(make_inventory: MakeInventory) -> None:
    root = make_inventory(
        {"hosts.yaml": "all:\n  children:\n    g:\n      host:\n        h1: {address: 10.0.0.1}\n"}
    )
    assert only_error(root) == (
        "hosts.yaml",
        4,
        "group 'g': unknown key 'host', expected hosts, children or vars (did you mean 'hosts'?)",
    )


def test_host_written_directly_under_group(make_inventory: MakeInventory) -> None:
    root = make_inventory({"hosts.yaml": "all:\n  children:\n    g:\n      h1:\n"})
    name, line, message = only_error(root)
    assert (name, line) == ("hosts.yaml", 4)
    assert message.endswith("(hosts must be listed under 'hosts:')")


def test_top_level_section_outside_all(make_inventory: MakeInventory) -> None:
    root = make_inventory({"hosts.yaml": "hosts:\n  h1: {address: 10.0.0.1}\n"})
    assert only_error(root) == ("hosts.yaml", 1, "'hosts:' at the top level belongs under 'all:'")


def test_host_vars_must_be_a_mapping(make_inventory: MakeInventory) -> None:
    root = make_inventory({"hosts.yaml": "all:\n  hosts:\n    h1: 10.0.0.1\n"})
    assert only_error(root) == (
        "hosts.yaml",
        3,
        "host 'h1': expected a mapping of variables, got the string '10.0.0.1'",
    )


def test_bad_host_name(make_inventory: MakeInventory) -> None:
    root = make_inventory({"hosts.yaml": "all:\n  hosts:\n    'web*1': {address: 10.0.0.1}\n"})
    name, line, message = only_error(root)
    assert (name, line) == ("hosts.yaml", 3)
    assert message.startswith("host name 'web*1' may only use letters, digits")


def test_unknown_variable_with_did_you_mean(make_inventory: MakeInventory) -> None:
    root = make_inventory({"hosts.yaml": "all:\n  hosts:\n    h1:\n      adress: 10.0.0.1\n"})
    # no second "has no address" error: the misspelt key is the address
    assert only_error(root) == (
        "hosts.yaml",
        4,
        "host 'h1': unknown variable 'adress' (did you mean 'address'? for a variable of "
        "your own, use a name less like it)",
    )


def test_unknown_variable_in_group_vars_file(make_inventory: MakeInventory) -> None:
    root = make_inventory(
        {
            "hosts.yaml": "all: {hosts: {h1: {address: 10.0.0.1}}}",
            "group_vars/all.yaml": "ike_lifetime: 1h\nike_proposal: [aes256gcm16]\n",
        }
    )
    assert only_error(root) == (
        "group_vars/all.yaml",
        2,
        "group 'all': unknown variable 'ike_proposal' (did you mean 'ike_proposals'? for a "
        "variable of your own, use a name less like it)",
    )


def test_group_cycle_names_the_path(make_inventory: MakeInventory) -> None:
    root = make_inventory(
        {
            "hosts.yaml": """
            all:
              children:
                a:
                  children:
                    b:
                      children:
                        c:
                          hosts: {h1: {address: 10.0.0.1}}
                          children:
                            a:
            """
        }
    )
    assert only_error(root) == (
        "hosts.yaml",
        10,
        "group cycle: a -> b -> c -> a (group 'a' would be its own ancestor)",
    )


def test_group_that_is_its_own_child(make_inventory: MakeInventory) -> None:
    root = make_inventory(
        {"hosts.yaml": "g:\n  hosts: {h1: {address: 10.0.0.1}}\n  children: {g: }\n"}
    )
    assert only_error(root) == (
        "hosts.yaml",
        3,
        "group cycle: g -> g (group 'g' would be its own ancestor)",
    )


def test_host_name_used_as_group_name(make_inventory: MakeInventory) -> None:
    root = make_inventory(
        {
            "hosts.yaml": """
            all:
              hosts:
                web: {address: 10.0.0.1}
              children:
                web:
            """
        }
    )
    [error] = errors_of(root)
    assert error.mark is not None and error.mark.line == 3
    assert error.message == (
        f"'web' is used both as a host name and as a group name "
        f"(group at {root / 'hosts.yaml'}:5:5); names must be unique"
    )


@pytest.mark.parametrize("name", ["vpnfleet-controller", "VPNFleet-Controller"])
def test_controller_name_is_refused_for_a_host(make_inventory: MakeInventory, name: str) -> None:
    # The agent would be given a TLS certificate bearing the controller's name.
    root = make_inventory(
        {
            "hosts.yaml": f"all:\n  hosts:\n    a1: {{address: 10.0.0.1}}\n    {name}:\n"
            "      address: 10.0.0.2\n"
        }
    )
    [error] = errors_of(root)
    assert error.mark is not None
    assert (Path(error.mark.path).name, error.mark.line, error.mark.column) == ("hosts.yaml", 4, 5)
    assert error.message == (
        f"host name {name!r} is reserved: vpnfleet-controller (in any letter case) names "
        "the controller's certificate, no host may bear it; rename the host"
    )


def test_host_names_differing_only_in_case_are_refused(make_inventory: MakeInventory) -> None:
    root = make_inventory(
        {
            "hosts.yaml": """
            all:
              hosts:
                a1: {address: 10.0.0.1}
              children:
                edge:
                  hosts:
                    A1: {address: 10.0.0.2}
            """
        }
    )
    [error] = errors_of(root)
    assert error.mark is not None
    assert (Path(error.mark.path).name, error.mark.line, error.mark.column) == ("hosts.yaml", 7, 9)
    assert error.message == (
        f"host 'A1' and host 'a1' (at {root / 'hosts.yaml'}:3:5) differ only in letter case; "
        "TLS and IKE compare names without case, so each would pass for the other: "
        "rename one of them"
    )


def test_duplicate_address_names_both_hosts_and_positions(make_inventory: MakeInventory) -> None:
    root = make_inventory(
        {
            "hosts.yaml": "all:\n  hosts:\n    h1: {address: 10.0.0.1}\n    h2:\n",
            "host_vars/h2.yaml": "# h2\naddress: 10.0.0.1\n",
        }
    )
    name, line, message = only_error(root)
    assert (name, line) == ("host_vars/h2.yaml", 2)
    assert message == (
        f"duplicate address 10.0.0.1: host 'h2' (at {root / 'host_vars/h2.yaml'}:2:1) and "
        f"host 'h1' (at {root / 'hosts.yaml'}:3:10) use the same underlay address"
    )


def test_duplicate_address_compares_normalised_form(make_inventory: MakeInventory) -> None:
    root = make_inventory(
        {
            "hosts.yaml": "all:\n  hosts:\n    h1: {address: 'fd00::1'}\n"
            "    h2: {address: 'fd00:0::0:1'}\n"
        }
    )
    name, line, message = only_error(root)
    assert (name, line) == ("hosts.yaml", 4)
    assert message.startswith("duplicate address fd00::1: host 'h2'")


def test_host_without_address(make_inventory: MakeInventory) -> None:
    root = make_inventory({"hosts.yaml": "all:\n  hosts:\n    h1: {subnets: [10.1.0.0/24]}\n"})
    name, line, message = only_error(root)
    assert (name, line) == ("hosts.yaml", 3)
    assert message.startswith("host 'h1' has no address (expected 'address: <IPv4 or IPv6>'")


def test_bad_ip_address(make_inventory: MakeInventory) -> None:
    root = make_inventory({"hosts.yaml": "all:\n  hosts:\n    h1:\n      address: 10.0.0.300\n"})
    assert only_error(root) == (
        "hosts.yaml",
        4,
        "host 'h1': address: '10.0.0.300' is not an IPv4 or IPv6 address",
    )


def test_address_given_as_prefix(make_inventory: MakeInventory) -> None:
    root = make_inventory({"hosts.yaml": "all:\n  hosts:\n    h1:\n      address: 10.0.0.1/24\n"})
    name, line, message = only_error(root)
    assert (name, line) == ("hosts.yaml", 4)
    assert message.endswith("is not an IPv4 or IPv6 address (an address, not a prefix)")


@pytest.mark.parametrize(
    ("subnets", "expected"),
    [
        (
            "[10.1.0.0/16, 10.1.1.1/24]",
            "item 1: '10.1.1.1/24' has host bits set (did you mean '10.1.1.0/24'?)",
        ),
        ("[10.1.1.0/33]", "item 0: '10.1.1.0/33' is not a CIDR prefix like 10.1.1.0/24"),
        (
            "[10.1.1.0]",
            "item 0: '10.1.1.0' has no prefix length (expected a CIDR prefix like 10.1.1.0/24)",
        ),
        ("10.1.1.0/24", "expected a list of CIDR prefixes, got '10.1.1.0/24'"),
    ],
)
def test_bad_cidr(make_inventory: MakeInventory, subnets: str, expected: str) -> None:
    # flow lists on one line: item and list share line 5
    root = make_inventory(
        {
            "hosts.yaml": "all:\n  hosts:\n    h1:\n      address: 10.0.0.1\n"
            f"      subnets: {subnets}\n"
        }
    )
    assert only_error(root) == ("hosts.yaml", 5, f"host 'h1': subnets: {expected}")


@pytest.mark.parametrize("value", ["4 hours", "1.5h", "-5", "true", "[1]", "10w"])
def test_bad_duration(make_inventory: MakeInventory, value: str) -> None:
    root = make_inventory(
        {
            "hosts.yaml": "all: {hosts: {h1: {address: 10.0.0.1}}}",
            "group_vars/all.yaml": f"# lifetimes\nike_lifetime: {value}\n",
        }
    )
    name, line, message = only_error(root)
    assert (name, line) == ("group_vars/all.yaml", 2)
    assert message.startswith(
        "group 'all': ike_lifetime: expected seconds (an integer) or a duration like 30s, 5m"
    )


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("auth: certs", "auth: expected one of psk | pubkey, got 'certs'"),
        (
            "mode: tunel",
            "mode: expected one of tunnel | transport, got 'tunel' (did you mean 'tunnel'?)",
        ),
        ("nat: 'yes'", "nat: expected true or false, got 'yes'"),
        ("agent_port: 70000", "agent_port: expected an integer 1..65535, got 70000"),
        ("psk_epoch: 0", "psk_epoch: expected an integer >= 1, got 0"),
        ("ike_proposals: aes256gcm16", "ike_proposals: expected a list of proposal strings"),
        ("esp_proposals: [aes256gcm16, 5]", "esp_proposals: item 1: expected a string, got 5"),
        (
            "agent_address: 'h:port'",
            "agent_address: expected a port 1..65535 after ':', got 'port'",
        ),
        ("identity: ''", "identity: expected a non-empty string"),
    ],
)
def test_wrong_variable_types(make_inventory: MakeInventory, line: str, expected: str) -> None:
    root = make_inventory(
        {"hosts.yaml": f"all:\n  hosts:\n    h1:\n      address: 10.0.0.1\n      {line}\n"}
    )
    name, at, message = only_error(root)
    assert (name, at) == ("hosts.yaml", 5)
    assert message.startswith(f"host 'h1': {expected}")


def test_group_vars_file_and_directory_for_one_group(make_inventory: MakeInventory) -> None:
    root = make_inventory(
        {
            "hosts.yaml": "all: {hosts: {h1: {address: 10.0.0.1}}}",
            "group_vars/all.yaml": "dpd_delay: 3\n",
            "group_vars/all/more.yaml": "dpd_delay: 4\n",
        }
    )
    assert only_error(root) == (
        "group_vars/all.yaml",
        1,
        "all/ and all.yaml both define 'all'; keep one of them (Ansible would read only all/)",
    )


def test_group_vars_file_must_be_a_mapping(make_inventory: MakeInventory) -> None:
    root = make_inventory(
        {
            "hosts.yaml": "all: {hosts: {h1: {address: 10.0.0.1}}}",
            "group_vars/all.yaml": "# a list by mistake\n- dpd_delay: 3\n",
        }
    )
    assert only_error(root) == (
        "group_vars/all.yaml",
        2,
        "expected a mapping of variables, got a list",
    )


def test_topology_must_be_a_mapping(make_inventory: MakeInventory) -> None:
    root = make_inventory(
        {"hosts.yaml": "all: {hosts: {h1: {address: 10.0.0.1}}}", "topology.yaml": "- mesh\n"}
    )
    assert only_error(root) == ("topology.yaml", 1, "expected a mapping, got a list")


def test_bad_list_item_is_located_at_the_item(make_inventory: MakeInventory) -> None:
    root = make_inventory(
        {
            "hosts.yaml": "all: {hosts: {h1: {address: 10.0.0.1}}}",
            "group_vars/all.yaml": "subnets:\n  - 10.1.0.0/16\n  - 10.2.0.1/16\n",
        }
    )
    [error] = errors_of(root)
    assert error.mark is not None
    assert (Path(error.mark.path).name, error.mark.line, error.mark.column) == ("all.yaml", 3, 5)


def test_all_errors_are_collected_in_one_pass(make_inventory: MakeInventory) -> None:
    root = make_inventory(
        {
            "hosts.yaml": """
            all:
              children:
                g:
                  hots: {}
                  hosts:
                    h1: {address: 10.0.0.1, mode: tunel}
                    h2: {address: 10.0.0.1}
            """,
            "group_vars/g.yaml": "dpd_delay: soon\n",
            "host_vars/h3.yaml": "nat: true\n",
        }
    )
    errors = errors_of(root)
    where = [(Path(e.mark.path).name, e.mark.line) for e in errors if e.mark]  # file, then line
    # host_vars/h3.yaml is for no host of the inventory: ignored, as Ansible ignores it
    assert where == [
        ("g.yaml", 1),
        ("hosts.yaml", 4),
        ("hosts.yaml", 6),
        ("hosts.yaml", 7),
    ]
    text = str(InventoryErrors(errors))
    assert text.startswith("4 errors in the inventory:")
