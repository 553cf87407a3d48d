"""vpnfleet reads an inventory as ansible-core does: checked against ansible-core itself.

Hypothesis writes random YAML inventory directories (tests/support/ansible_inventories.py)
and asks both readers about each one. ansible-core answers from one helper process
(tests/support/ansible_oracle.py) for every inventory; vpnfleet answers through its API.
For every inventory:

- ``vpnfleet inventory --list`` text equals ``ansible-inventory --list`` byte for byte,
  and so does ``--list --limit P`` for each pattern vpnfleet takes;
- the same hosts; each host in the same groups (ancestors and ``all`` included);
- each host's variables: the same names, and the same values (vpnfleet's own variables
  in vpnfleet's normal form of Ansible's value: ``4h`` is 14400 seconds);
- each limit pattern selects the same hosts, or vpnfleet refuses it and Ansible warns
  that one of its terms matches nothing (a deliberate exception, README).

Every feature switch of the generator is on: what it writes is all the issue covers
(the README lists the deliberate exceptions, which the generator does not write).
"""

from __future__ import annotations

import itertools
import json
import tempfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings

from tests.support.ansible_inventories import Features, Generated, inventories
from tests.support.ansible_oracle import AnsibleOracle
from vpnfleet.controller.inventory import (
    DEFAULT_MARK,
    VARIABLES,
    Inventory,
    InventoryErrors,
    LimitError,
    dumps,
    inventory_list,
    load_inventory,
)
from vpnfleet.controller.inventory.limit import limit_hosts
from vpnfleet.controller.inventory.render import plain

FEATURES = Features()

EXAMPLES = 300


@pytest.fixture(scope="module")
def oracle() -> Iterator[AnsibleOracle]:
    with AnsibleOracle() as helper:
        yield helper


@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="vpnfleet-parity-") as path:
        yield Path(path)


def _canonical(value: Any) -> str:
    """A value as JSON text with keys made text and sorted: equal texts, equal values
    (unlike ==, which takes True for 1 and 1 for 1.0)."""
    return json.dumps(json.loads(json.dumps(value)), sort_keys=True)


def _write(root: Path, generated: Generated) -> Path:
    for relative, text in generated.files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root / generated.source


def _api_vars(inventory: Inventory, host: str) -> dict[str, Any]:
    resolved = inventory.resolve(host)
    return {
        name: value
        for name, value in resolved.vars.items()
        if resolved.origins[name] != DEFAULT_MARK
    }


def _same_listing(ours: dict[str, Any], theirs: str, what: str, stats: Counter[str]) -> None:
    """Byte for byte where keys sort; where they cannot (mapping keys of mixed kinds, such
    as ``a`` and ``true``), ansible-inventory writes its own walk of the groups, whose order
    below the first level follows Python's set iteration and changes from run to run:
    there the documents are compared parsed."""
    text = dumps(ours)
    try:
        json.dumps(ours, sort_keys=True)
    except TypeError:
        assert json.loads(text) == json.loads(theirs), f"{what} differs"
        stats["listings compared parsed (keys of mixed kinds)"] += 1
        return
    assert text == theirs, f"{what} text differs"
    stats["listings compared byte for byte"] += 1


def _compare(inventory: Inventory, answer: dict[str, Any], stats: Counter[str]) -> None:
    _same_listing(inventory_list(inventory), answer["list"], "--list", stats)
    hostvars = json.loads(answer["list"])["_meta"]["hostvars"]
    assert set(inventory.hosts) == set(answer["groups"]), "hosts differ"
    for host in inventory.hosts:
        assert set(inventory.resolve(host).groups) == set(answer["groups"][host]), host
        ours, theirs = _api_vars(inventory, host), hostvars.get(host, {})
        assert sorted(ours) == sorted(theirs), f"{host}: variable names differ"
        for name, value in ours.items():
            expected = theirs[name]
            if name in VARIABLES:  # the model holds vpnfleet's normal form of the value
                expected = VARIABLES[name].check(expected)
            assert _canonical(plain(value)) == _canonical(plain(expected)), f"{host}: {name}"
            stats["variables"] += 1
        stats["hosts"] += 1


def _compare_limits(
    inventory: Inventory, generated: Generated, answer: dict[str, Any], stats: Counter[str]
) -> None:
    for pattern in generated.patterns:
        theirs = answer["patterns"][pattern]
        try:
            ours = limit_hosts(inventory, pattern)
        except LimitError:
            if "error" in theirs:  # both refuse it
                stats["patterns refused by both"] += 1
                continue
            # vpnfleet refuses a term that matches nothing, where Ansible warns.
            assert theirs["empty_terms"], (
                f"vpnfleet refused {pattern!r}, Ansible matched every term"
            )
            stats["patterns refused (Ansible: a term matches nothing)"] += 1
            continue
        assert "error" not in theirs, f"vpnfleet took {pattern!r}: {theirs.get('error')}"
        assert set(ours) == set(theirs["hosts"]), f"--limit {pattern!r}"
        limited = inventory_list(inventory.subset(ours))
        _same_listing(limited, answer["limited"][pattern], f"--list --limit {pattern!r}", stats)
        stats["patterns"] += 1


def test_inventories_resolve_as_in_ansible_core(
    oracle: AnsibleOracle, workdir: Path, record_property: Any
) -> None:
    stats: Counter[str] = Counter()
    numbers = itertools.count()

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        # Not the explain phase: it traces every line run, minutes on a failure here.
        phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink],
    )
    @given(generated=inventories(FEATURES))
    def check(generated: Generated) -> None:
        # A new directory each time: ansible-core caches what it found per path.
        hosts_file = _write(workdir / f"inv{next(numbers)}", generated)
        answer = oracle.ask(hosts_file, generated.patterns)
        assert "error" not in answer, f"ansible-core refused it: {answer.get('error')}"
        try:
            inventory = load_inventory(hosts_file.parent)
        except InventoryErrors as exc:
            pytest.fail(f"vpnfleet refused what ansible-core reads:\n{exc}")
        _compare(inventory, answer, stats)
        _compare_limits(inventory, generated, answer, stats)
        stats["inventories"] += 1

    check()
    record_property("parity", dict(stats))
    print(f"\nansible-core parity: {dict(stats)}")
    # Not vacuous: every example was compared, with variables and patterns in them.
    assert stats["inventories"] >= EXAMPLES
    assert stats["variables"] >= 10 * EXAMPLES
    assert stats["patterns"] >= EXAMPLES
