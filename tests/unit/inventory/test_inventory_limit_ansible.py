"""--limit compared with ansible-core itself on one fixed inventory: a table of patterns,
800 generated ones, and the splitting of 3000 generated patterns.

ansible-core (a dev dependency) evaluates every pattern of the table in one child
process, through the calls ``ansible --limit`` makes (``InventoryManager.subset`` then
``get_hosts``), with ``ANSIBLE_HOST_PATTERN_MISMATCH=error``: a term that matches
nothing is then an error there too, which is where vpnfleet refuses. One pattern is
also run through the ``ansible`` command itself, to show the two agree. Results are
compared as sets: a limit filters a run's hosts and does not order them (ansible-core
keeps its own walk of ``all``, vpnfleet the inventory's order).

The inventory keeps ansible-core's host order stable: below ``all``, only one group
has child groups (where several have, ansible-core's breadth-first order of the next
level depends on the run).
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import textwrap
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

MakeInventory = Callable[[dict[str, str]], Path]

HOSTS = """
all:
  hosts:
    lone: {address: 10.0.0.9}
  children:
    mesh:
      hosts:
        a1: {address: 10.0.1.1}
        a2: {address: 10.0.1.2}
        a3: {address: 10.0.1.3}
    sites:
      hosts:
        hq: {address: 10.0.2.1}
      children:
        paris:
          hosts:
            p1: {address: 10.0.3.1}
            p2: {address: 10.0.3.2}
        rome:
          hosts:
            r1: {address: 10.0.4.1}
            a2:
    gw:
      hosts:
        gw-1.example: {address: 10.0.5.1}
        gw-2.example: {address: 10.0.5.2}
"""

RETRY = "p2\nr1\n\n"

# Patterns both tools evaluate the same way (hosts, or an error for a term that
# selects nothing).
PATTERNS = [
    "all",
    "*",
    "mesh",
    "a1",
    "a1,a3",
    "a1:a3",
    "a1 a3",
    "mesh , !a1",
    "mesh:!a2",
    "mesh:&rome",
    "!mesh",
    "&sites",
    "!a1:a1",
    "ungrouped",
    "mesh:rome",
    # globs: over group names (all and ungrouped included) and host names
    "gw*",
    "gw-?.example",
    "*.example",
    "p*",
    "s*",
    "a*",
    "un*",
    "mesh[!2]",
    # regexes: re.match, anchored at the start only
    "~a",
    "~a[13]",
    "~.*1",
    r"~gw-\d\.",
    "~2",
    "~[",
    # subscripts, in ansible-core's host order of the group
    "mesh[0]",
    "mesh[-1]",
    "mesh[1:2]",
    "mesh[1:]",
    "mesh[1:0]",
    "mesh[0-1]",
    "sites[0]",
    "sites[1:3]",
    "sites[-1]",
    "sites[2:]",
    "rome[1]",
    "p*[1]",
    "all[0]",
    "mesh[0],rome[0]",
    "sites:!sites[0]",
    "a1[0]",
    "mesh[7]",
    "mesh[-4]",
    "~mesh[0]",
    # splitting: commas win over colons; an address stays whole
    "a1:a2,a3",
    "mesh:!a1,a3",
    "fe80::1",
    "a1:22",
    # names that are nothing
    "nope",
    "mesh,!nope",
    "mesh:&nope",
    # retry files, relative to the current directory
    "@site.retry",
    "@site.retry,mesh[0]",
    "@site.retry:lone",
    "sites[1:3],@site.retry",
]

# Deliberate differences: ansible-core selects nothing and says nothing; vpnfleet refuses.
REFUSED_ONLY_HERE = ["mesh[5:7]", "rome[2:]"]
# ... and an empty retry file, which ansible-core takes as no limit at all.
EMPTY_RETRY = "@empty.retry"

# Terms that random patterns are made of: every kind above, subscripts on groups whose
# order ansible-core keeps stable, and names that are nothing.
TERM_ATOMS = [
    "all", "*", "mesh", "sites", "paris", "rome", "gw", "ungrouped", "a1", "a2", "hq",
    "p1", "r1", "lone", "gw-1.example", "~a", "~p.*", "~.*1$", "~(a|p)[12]", "mesh[0]",
    "mesh[-1]", "mesh[1:2]", "sites[1:]", "sites[0]", "rome[1]", "p*[0]", "*[2]", "a?",
    "[ap]1", "*.example", "g*", "s*", "~gw", "all[3]", "all[1:4]", "~.*", "*e*", "un*",
    "a[!1]", "@site.retry", "nope", "x*", "~zz", "mesh[9]",
]  # fmt: skip


def generated_patterns(count: int, seed: int) -> list[str]:
    """``count`` distinct patterns of 1 to 4 terms, plain, ``!`` or ``&``, joined by
    commas or colons."""
    rng = random.Random(seed)
    patterns: set[str] = set()
    while len(patterns) < count:
        terms = [
            rng.choice(["", "", "", "!", "&"]) + rng.choice(TERM_ATOMS)
            for _ in range(rng.randint(1, 4))
        ]
        patterns.add(rng.choice([",", ":"]).join(terms))
    return sorted(patterns)


GENERATED = generated_patterns(800, seed=5)

ANSIBLE_SIDE = textwrap.dedent(
    """
    import json, sys
    from ansible.errors import AnsibleError
    from ansible.inventory.manager import InventoryManager
    from ansible.parsing.dataloader import DataLoader

    inventory = InventoryManager(loader=DataLoader(), sources=[sys.argv[1]])
    out = {}
    for pattern in json.loads(sys.argv[2]):
        inventory.clear_caches()
        try:
            inventory.subset(pattern)
            out[pattern] = {"hosts": [h.name for h in inventory.get_hosts("all")]}
        except AnsibleError as exc:
            out[pattern] = {"error": str(exc)}
        inventory.subset(None)
    print(json.dumps(out))
    """
)


SPLIT_SIDE = textwrap.dedent(
    """
    import json, sys
    from ansible.inventory.manager import split_host_pattern

    print(json.dumps([split_host_pattern(p) for p in json.loads(sys.stdin.read())]))
    """
)

# Pieces of patterns for the splitting comparison: names, addresses (with ports, ranges,
# IPv6 and IPv4-in-IPv6 forms), subscripts, globs, regexes, and separators.
SPLIT_ATOMS = [
    "a1", "web", "db-1", "gw.example", "fe80::1", "::1", "10.0.0.1", "10.0.0.1:22",
    "[fe80::1]:22", "web[1:3]", "db-[a:c]", "x[0]", "g[-1]", "g[1:]", "~a.*", "!a1", "&g",
    "a*", "*", "2001:db8::1", "a:b", "1:2:3:4:5:6:7:8", "h[01:10]", ":22", "a b", "@f",
    "[1:2]", "a_b", "a-", "ab:22:33", "dead:beef::", "::ffff:1.2.3.4", "0:0:0:0:0:ffff:1.2.3.4",
    "256.1.1.1", "[a:b]:80", "h[a:c:2]", "fe80::[a:f]", "1:2:3:4:5:6:7", "x:1:2", "::",
]  # fmt: skip
SPLIT_SEPARATORS = [":", ",", " ", ", ", ":!", ":&", "", "::", "\t"]


def _ansible_env(tmp_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        "ANSIBLE_HOST_PATTERN_MISMATCH": "error",
        "ANSIBLE_HOME": str(tmp_path / "ansible-home"),
        "ANSIBLE_LOCAL_TEMP": str(tmp_path / "ansible-tmp"),
        "ANSIBLE_CONFIG": str(tmp_path / "ansible.cfg"),
        "ANSIBLE_DEPRECATION_WARNINGS": "false",
    }


@pytest.fixture(scope="module")
def both(tmp_path_factory: pytest.TempPathFactory) -> tuple[Inventory, dict[str, dict], Path]:
    """vpnfleet's inventory, ansible-core's answer per pattern, and the directory
    both were run from (where site.retry is)."""
    tmp_path = tmp_path_factory.mktemp("limit-ansible")
    root = tmp_path / "inv"
    root.mkdir()
    (root / "hosts.yaml").write_text(textwrap.dedent(HOSTS).lstrip(), encoding="utf-8")
    (tmp_path / "site.retry").write_text(RETRY, encoding="utf-8")
    (tmp_path / "empty.retry").write_text("\n", encoding="utf-8")
    (tmp_path / "ansible.cfg").write_text("[defaults]\n", encoding="utf-8")
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            ANSIBLE_SIDE,
            str(root / "hosts.yaml"),
            json.dumps([*PATTERNS, *REFUSED_ONLY_HERE, EMPTY_RETRY, *GENERATED]),
        ],
        cwd=tmp_path,
        env=_ansible_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return load_inventory(root), json.loads(done.stdout), tmp_path


def _ours(inventory: Inventory, pattern: str, cwd: Path) -> dict[str, object]:
    try:
        return {"hosts": sorted(limit_hosts(inventory, pattern, cwd))}
    except LimitError as exc:
        return {"error": str(exc)}


@pytest.mark.parametrize("pattern", PATTERNS)
def test_limit_as_ansible_core(both: tuple[Inventory, dict[str, dict], Path], pattern: str) -> None:
    inventory, theirs, cwd = both
    expected = theirs[pattern]
    ours = _ours(inventory, pattern, cwd)
    if "error" in expected:
        assert "error" in ours, f"ansible-core: {expected['error']}; vpnfleet: {ours}"
    else:
        assert ours == {"hosts": sorted(expected["hosts"])}


def test_generated_patterns_as_ansible_core(
    both: tuple[Inventory, dict[str, dict], Path],
) -> None:
    """800 random patterns: the same hosts, or an error in both (a term selecting nothing)."""
    inventory, theirs, cwd = both
    differ = []
    for pattern in GENERATED:
        expected, ours = theirs[pattern], _ours(inventory, pattern, cwd)
        if "error" in expected and "error" in ours:
            continue
        if "error" in expected or ours != {"hosts": sorted(expected["hosts"])}:
            differ.append((pattern, expected, ours))
    assert differ == []
    assert sum("error" not in theirs[p] for p in GENERATED) > len(GENERATED) // 2


@pytest.mark.parametrize("pattern", REFUSED_ONLY_HERE)
def test_subscript_past_the_end_refused_where_ansible_selects_nothing(
    both: tuple[Inventory, dict[str, dict], Path], pattern: str
) -> None:
    inventory, theirs, cwd = both
    assert theirs[pattern] == {"hosts": []}
    with pytest.raises(LimitError, match="selects nothing"):
        limit_hosts(inventory, pattern, cwd)


def test_empty_retry_file_refused_where_ansible_takes_every_host(
    both: tuple[Inventory, dict[str, dict], Path],
) -> None:
    inventory, theirs, cwd = both
    assert sorted(theirs[EMPTY_RETRY]["hosts"]) == sorted(inventory.hosts)
    with pytest.raises(LimitError, match="names no host"):
        limit_hosts(inventory, EMPTY_RETRY, cwd)


def test_splitting_as_ansible_core(tmp_path: Path) -> None:
    """split_pattern and ansible-core's split_host_pattern on 3000 generated patterns."""
    rng = random.Random(12)
    patterns = [
        "".join(
            rng.choice(SPLIT_ATOMS) + rng.choice(SPLIT_SEPARATORS) for _ in range(rng.randint(1, 4))
        ).rstrip(":,&! ")
        for _ in range(3000)
    ]
    done = subprocess.run(
        [sys.executable, "-c", SPLIT_SIDE],
        input=json.dumps(patterns),
        env=_ansible_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    theirs = json.loads(done.stdout)
    differ = [(p, t, split_pattern(p)) for p, t in zip(patterns, theirs, strict=True)]
    assert [d for d in differ if d[1] != d[2]] == []


def test_the_ansible_command_agrees(both: tuple[Inventory, dict[str, dict], Path]) -> None:
    """The table's answers are what ``ansible --limit`` prints."""
    inventory, theirs, cwd = both
    pattern = "sites[1:3],@site.retry"
    done = subprocess.run(
        [
            str(Path(sys.executable).parent / "ansible"),
            "-i",
            str(inventory.path / "hosts.yaml"),
            "all",
            "--list-hosts",
            "--limit",
            pattern,
        ],
        cwd=cwd,
        env=_ansible_env(cwd),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    listed = [line.strip() for line in done.stdout.splitlines()[1:] if line.strip()]
    assert sorted(listed) == ["p1", "p2", "r1"]
    assert sorted(listed) == sorted(theirs[pattern]["hosts"])
    assert sorted(limit_hosts(inventory, pattern, cwd)) == sorted(listed)
