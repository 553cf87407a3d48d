"""Ansible's own variables, other tools' variables, misspellings of vpnfleet's, and
``ansible_group_priority`` where ansible-core honours it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from vpnfleet.controller.inventory import InventoryErrors, load_inventory

MakeInventory = Callable[[dict[str, str]], Path]  # the make_inventory fixture (conftest.py)

CONNECTION = {
    "ansible_host": "192.0.2.1",
    "ansible_port": 2222,
    "ansible_user": "ops",
    "ansible_connection": "ssh",
    "ansible_ssh_private_key_file": "~/.ssh/fleet",
    "ansible_ssh_common_args": "-o ProxyJump=bastion",
    "ansible_become": True,
    "ansible_become_user": "root",
    "ansible_become_method": "sudo",
    "ansible_python_interpreter": "/usr/bin/python3",
}


def _yaml(mapping: dict[str, object]) -> str:
    return "".join(
        f"{k}: {str(v).lower() if isinstance(v, bool) else v}\n" for k, v in mapping.items()
    )


@pytest.mark.parametrize("where", ["inline host", "host_vars", "group_vars", "inline group"])
def test_connection_variables_are_kept(make_inventory: MakeInventory, where: str) -> None:
    flow = ", ".join(
        f"{k}: {str(v).lower() if isinstance(v, bool) else repr(v)}" for k, v in CONNECTION.items()
    )
    files = {
        "inline host": {"hosts.yaml": f"all: {{hosts: {{h1: {{address: 10.0.0.1, {flow}}}}}}}"},
        "inline group": {
            "hosts.yaml": f"all: {{vars: {{{flow}}}, hosts: {{h1: {{address: 10.0.0.1}}}}}}"
        },
        "host_vars": {
            "hosts.yaml": "all: {hosts: {h1: {address: 10.0.0.1}}}",
            "host_vars/h1.yaml": _yaml(CONNECTION),
        },
        "group_vars": {
            "hosts.yaml": "all: {hosts: {h1: {address: 10.0.0.1}}}",
            "group_vars/all.yaml": _yaml(CONNECTION),
        },
    }[where]
    host = load_inventory(make_inventory(files)).resolve("h1")
    assert {k: host.vars[k] for k in CONNECTION} == CONNECTION


def test_connection_variables_from_ini(make_inventory: MakeInventory) -> None:
    root = make_inventory(
        {
            "hosts": "[mesh]\nh1 address=10.0.0.1 ansible_host=192.0.2.1 ansible_user=ops\n"
            "[mesh:vars]\nansible_become=True\nansible_python_interpreter=/usr/bin/python3\n"
        }
    )
    host = load_inventory(root).resolve("h1").vars
    assert (host["ansible_host"], host["ansible_user"]) == ("192.0.2.1", "ops")
    assert (host["ansible_become"], host["ansible_python_interpreter"]) == (
        True,
        "/usr/bin/python3",
    )


def test_other_tools_variables_pass_through(make_inventory: MakeInventory) -> None:
    # an inventory shared with Ansible holds its roles' variables
    root = make_inventory(
        {
            "hosts.yaml": "all:\n  vars: {ntp_servers: [ntp1], colour: blue}\n"
            "  hosts: {h1: {address: 10.0.0.1}}\n"
        }
    )
    host = load_inventory(root).resolve("h1").vars
    assert (host["ntp_servers"], host["colour"]) == (["ntp1"], "blue")


@pytest.mark.parametrize(
    ("name", "meant"),
    [
        ("adress", "address"),
        ("Address", "address"),
        ("dpd_dealy", "dpd_delay"),
        ("start-action", "start_action"),
        ("ike_proposal", "ike_proposals"),
        ("nat_keep_alive", "nat_keepalive"),
    ],
)
def test_misspelling_of_a_vpnfleet_variable_is_refused(
    make_inventory: MakeInventory, name: str, meant: str
) -> None:
    root = make_inventory(
        {"hosts.yaml": f"all:\n  vars: {{{name}: 1}}\n  hosts: {{h1: {{address: 10.0.0.1}}}}\n"}
    )
    with pytest.raises(InventoryErrors) as caught:
        load_inventory(root)
    [error] = caught.value.errors
    assert error.mark is not None and error.mark.line == 2
    assert error.message == (
        f"group 'all': unknown variable {name!r} (did you mean {meant!r}? for a variable of "
        "your own, use a name less like it)"
    )


def test_priority_set_inline_orders_groups_and_is_no_variable(
    make_inventory: MakeInventory,
) -> None:
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
    inv = load_inventory(root)
    host = inv.resolve("h1")
    assert host.vars["dpd_delay"] == 1
    assert inv.groups["alpha"].priority == 10
    assert "ansible_group_priority" not in host.vars


def test_priority_in_ini_vars_section(make_inventory: MakeInventory) -> None:
    root = make_inventory(
        {
            "hosts.ini": "[alpha]\nh1 address=10.0.0.1\n[alpha:vars]\ndpd_delay=1\n"
            "ansible_group_priority=10\n[beta]\nh1\n[beta:vars]\ndpd_delay=2\n"
        }
    )
    assert load_inventory(root).resolve("h1").vars["dpd_delay"] == 1


def test_priority_on_a_host_is_a_plain_variable(make_inventory: MakeInventory) -> None:
    root = make_inventory(
        {"hosts.yaml": "all:\n  hosts:\n    h1: {address: 10.0.0.1, ansible_group_priority: 3}\n"}
    )
    assert load_inventory(root).resolve("h1").vars["ansible_group_priority"] == 3


def test_priority_must_be_an_integer(make_inventory: MakeInventory) -> None:
    root = make_inventory(
        {
            "hosts.yaml": "all:\n  vars:\n    ansible_group_priority: high\n"
            "  hosts: {h1: {address: 10.0.0.1}}\n"
        }
    )
    with pytest.raises(InventoryErrors) as caught:
        load_inventory(root)
    [error] = caught.value.errors
    assert error.mark is not None and error.mark.line == 3
    assert error.message == ("group 'all': ansible_group_priority: expected an integer, got 'high'")
