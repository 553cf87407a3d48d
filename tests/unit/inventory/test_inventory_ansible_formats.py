"""INI, ranges, ports, vars files and YAML features: vpnfleet against ``ansible-inventory``.

ansible-core is a test dependency; without it this module fails to import (it never
skips). Each inventory is read by both; every host's variables that an inventory file
sets (vpnfleet's built-in defaults aside), and each group's hosts and children, must be
the same.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import ansible.release
import pytest

from vpnfleet.controller.inventory import Inventory, load_inventory
from vpnfleet.controller.inventory.render import host_vars

INI = """
lone address=10.0.1.1 x_a=1
[web]
web[01:03] x_n=3 x_s=abc x_b=True x_l="[1, 2]" x_t=true x_q='two words'
db-[a:c]:2222 ansible_user=root
s[1:10:4] ansible_become=yes
[web:vars]
x_gv=3
x_gb=False
x_gl=[1,2]
x_gs = hello world
dpd_delay=10
ansible_group_priority=7
[top:children]
web
[top]
[top:vars]
x_top="paris"
[other]
db-b
[other:vars]
x_gv=4
[all:vars]
x_everyone=1
x_gv=0
"""

INI_ADDRESSES = {
    h: f"10.0.3.{i}"
    for i, h in enumerate(["web01", "web02", "web03", "db-a", "db-b", "db-c", "s1", "s5", "s9"], 1)
}

YAML = """
all:
  vars:
    x_defaults: &d {x_a: 1, x_b: 2}
  children:
    web:
      vars:
        ansible_group_priority: 3
        x_m:
          <<: *d
          x_b: 3
        x_who: web
      hosts:
        w[1:3]:
        w4:2222: {ansible_host: 192.0.2.4}
        w5:2200: {ansible_port: 22, x_dup: 1, x_dup: 2}
    zeta:
      vars: {x_who: zeta}
      hosts: w1
    db:
      hosts:
        d1:
"""

YAML_FILES = {
    "group_vars/all": "x_noext: 1\n",
    "group_vars/db.json": '{"x_json": {"k": [1, 2]}}',
    "group_vars/all.bak": "x_bak: 1\n",
    "group_vars/all.yml~": "x_tilde: 1\n",
    "group_vars/nosuchgroup.yml": "x_ghost: 1\n",
    "group_vars/README": "Group variables. Not YAML: {\n",
    "group_vars/web/a.yml": "x_dir_a: 1\nx_order: a\n",
    "group_vars/web/b.txt": "x_dir_txt: 1\n",
    "group_vars/web/c": "x_dir_noext: 1\nx_order: c\n",
    "group_vars/web/d.orig": "x_dir_orig: 1\n",
    "group_vars/web/.e.yml": "x_hidden: 1\n",
    "group_vars/web/g.yml~": "x_tl: 1\n",
    "group_vars/web/sub/h.yml": "x_sub: 1\nx_order: sub/h\n",
    "group_vars/web/sub.d/i.yml": "x_subd: 1\n",
    "group_vars/web/j.json": '{"x_dirjson": 1}',
    "group_vars/web/k.YML": "x_upper: 1\n",
    "group_vars/zeta.yaml": "ansible_group_priority: 100\n",
    "host_vars/w1.yml": 'x_u: !unsafe "{{ lookup(1) }}"\n',
}


def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")


def _ansible_inventory(source: Path, tmp: Path) -> dict[str, Any]:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp),
        "ANSIBLE_HOME": str(tmp / "ansible-home"),
        "ANSIBLE_LOCAL_TEMP": str(tmp / "ansible-tmp"),
        "ANSIBLE_CONFIG": str(tmp / "none.cfg"),
        "ANSIBLE_INVENTORY_UNPARSED_FAILED": "1",
        "ANSIBLE_NOCOLOR": "1",
    }
    run = subprocess.run(
        [sys.executable, "-m", "ansible.cli.inventory", "-i", str(source), "--list"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    out: dict[str, Any] = json.loads(run.stdout)
    return out


def _assert_same(ansible: dict[str, Any], inventory: Inventory) -> None:
    hostvars = ansible["_meta"]["hostvars"]
    assert sorted(inventory.hosts) == sorted(hostvars)
    for name in inventory.hosts:
        # As written and in Ansible's shape (a !unsafe string as {"__ansible_unsafe": …}).
        assert host_vars(inventory, name) == hostvars.get(name, {}), name
    for group, entry in ansible.items():
        if group in ("_meta", "all"):
            continue
        ours = inventory.groups[group]
        assert sorted(ours.hosts) == sorted(entry.get("hosts", [])), group
        assert sorted(ours.children) == sorted(entry.get("children", [])), group


def test_ansible_core_is_the_release_compared_with() -> None:
    assert ansible.release.__version__.startswith("2.17.")


@pytest.mark.parametrize("name", ["hosts.ini", "hosts"])
def test_ini_inventory_reads_as_in_ansible(tmp_path: Path, name: str) -> None:
    root = tmp_path / "inv"
    files = {name: INI}
    files.update(
        {f"host_vars/{h}.json": json.dumps({"address": a}) for h, a in INI_ADDRESSES.items()}
    )
    _write(root, files)
    # ansible-core skips *.ini files when given a directory: name the file itself
    source = root / name if name.endswith(".ini") else root
    expected = _ansible_inventory(source, tmp_path)
    _assert_same(expected, load_inventory(source))
    assert expected["_meta"]["hostvars"]["web02"]["x_l"] == [1, 2]  # the typing was exercised


def test_yaml_inventory_reads_as_in_ansible(tmp_path: Path) -> None:
    root = tmp_path / "inv"
    files = {"hosts.yml": YAML, **YAML_FILES}
    for i, host in enumerate(["w1", "w2", "w3", "w4", "w5", "d1"], 1):
        files[f"host_vars/{host}" if host != "w1" else "host_vars/w1.yml"] = (
            files.get(f"host_vars/{host}.yml", "") + f"address: 10.0.4.{i}\n"
        )
    _write(root, files)
    expected = _ansible_inventory(root, tmp_path)
    inventory = load_inventory(root)
    _assert_same(expected, inventory)
    w1 = expected["_meta"]["hostvars"]["w1"]
    # what this inventory is about, seen on ansible-core's side too: zeta's priority 100,
    # set in group_vars/, orders nothing, so web's inline priority 3 beats zeta (1)
    assert (w1["x_who"], w1["ansible_group_priority"], w1["x_order"]) == ("web", 100, "sub/h")
    assert inventory.groups["web"].priority == 3
