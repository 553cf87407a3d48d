"""YAML anchors and aliases: shared values are opened once; alias bombs are refused.

An alias makes the loaded value share one object between places, so nested aliases
("billion laughs") describe exponentially many leaves in a few hundred bytes. The
loader refuses a file whose aliases expand beyond a bound, and the vault walk visits
each distinct value once. Work is measured by counting calls, never by wall time.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from vpnfleet.controller.inventory import InventoryErrors, Secret, Vault, load_inventory, loader
from vpnfleet.controller.inventory.source import MAX_ALIAS_EXPANSION, load_yaml_text
from vpnfleet.controller.inventory.vault import KdfParams

MakeInventory = Callable[[dict[str, str]], Path]  # the make_inventory fixture (conftest.py)

HOSTS = "all:\n  hosts:\n    h1:\n      address: 10.0.0.1\n"


class _OutOfBudget(Exception):
    """Raised once a walk has done far more work than it should."""


class WalkCounter:
    """Counts the vault walk's visits (calls of ``loader._walk_vault``, each recursion
    included) and stops a runaway walk after ``budget`` of them."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, budget: int) -> None:
        self.budget = budget
        self.visits = 0
        walk = loader._walk_vault

        def counting(*args: Any, **kwargs: Any) -> Any:
            self.visits += 1
            if self.visits > self.budget:
                raise _OutOfBudget(f"{self.visits} visits")
            return walk(*args, **kwargs)

        monkeypatch.setattr(loader, "_walk_vault", counting)


class CountingVault(Vault):
    """A vault that counts decryptions and stops a runaway walk after ``budget`` of them."""

    def __init__(self, budget: int) -> None:
        super().__init__(b"pw", KdfParams(1, 8192))
        self.budget = budget
        self.calls = 0

    def decrypt(self, vault_text: str) -> Secret:
        self.calls += 1
        if self.calls > self.budget:
            raise _OutOfBudget(f"{self.calls} decryptions")
        return super().decrypt(vault_text)


def _bomb(first_leaf: str, levels: int) -> str:
    """Ten references per level: ``levels`` levels stand for 10**levels leaves."""
    lines = [f"x_l0: &l0 [{first_leaf}{', lol' * 9}]"]
    for n in range(1, levels):
        refs = ", ".join([f"*l{n - 1}"] * 10)
        lines.append(f"x_l{n}: &l{n} [{refs}]")
    return "\n".join(lines) + "\n"


def test_a_shared_value_is_walked_once(
    make_inventory: MakeInventory, monkeypatch: pytest.MonkeyPatch
) -> None:
    walk = WalkCounter(monkeypatch, budget=10**5)
    vault = CountingVault(budget=100)
    sealed = vault.encrypt_string("shared secret")
    # 1000 places hold the one sealed value; well under the alias bound.
    text = f'x_v: &v !vault "{sealed}"\n' + "".join(
        f"x_l{n}: &l{n} [{', '.join([f'*l{n - 1}' if n else '*v'] * 10)}]\n" for n in range(3)
    )
    root = make_inventory({"hosts.yaml": HOSTS, "group_vars/all.yaml": text})
    inv = load_inventory(root, vault=vault)
    assert vault.calls == 1  # one distinct value: one decryption, however often it is aliased
    # 4 variables, 3 lists of 10 references, h1's address: each reference is followed
    # once and what it refers to is walked once (a walk along every path would visit
    # the sealed value 1000 + 100 + 10 + 1 times).
    assert walk.visits == 4 + 3 * 10 + 1
    leaves = inv.resolve("h1").vars["x_l2"]
    assert len(leaves) == 10 and leaves[9][9][9] == "shared secret"
    assert isinstance(leaves[9][9][9], Secret)


def test_a_vault_value_that_cannot_be_opened_is_reported_once(
    make_inventory: MakeInventory,
) -> None:
    sealed = Vault(b"other password").encrypt_string("x")
    text = f'x_a: &a [&v !vault "{sealed}", *v, *v]\nx_b: [*a, *a, *a]\n'
    root = make_inventory({"hosts.yaml": HOSTS, "group_vars/all.yaml": text})
    with pytest.raises(InventoryErrors) as caught:
        load_inventory(root, vault=Vault(b"pw"))
    [error] = caught.value.errors
    assert "cannot decrypt vault value" in str(error)


@pytest.mark.parametrize("levels", [6, 9])
def test_an_alias_bomb_is_refused_with_its_position(
    make_inventory: MakeInventory, monkeypatch: pytest.MonkeyPatch, levels: int
) -> None:
    """9 levels is the classic ~600-byte file standing for a billion leaves. A loader
    without the bound walks it; the walk counter stops that (and fails the test) after
    10**5 visits instead of letting it run for minutes."""
    if levels == 9:
        assert len(_bomb("lol", levels)) < 650  # the size of the classic example
    walk = WalkCounter(monkeypatch, budget=10**5)
    vault = CountingVault(budget=10**4)
    sealed = vault.encrypt_string("lol")
    text = _bomb(f'!vault "{sealed}"', levels)
    root = make_inventory({"hosts.yaml": HOSTS, "group_vars/all.yaml": text})
    with pytest.raises(InventoryErrors) as caught:
        load_inventory(root, vault=vault)
    [error] = caught.value.errors
    assert error.mark is not None and error.mark.path.endswith("all.yaml")
    # Aliases so far stand for 110 + 1110 + 11110 values, then each *l3 on line 5 (x_l4)
    # for 11111 more: the 8th crosses 100000, at column 12 + 7 * len("*l3, ").
    assert (error.mark.line, error.mark.column) == (5, 47)
    assert f"expand to more than {MAX_ALIAS_EXPANSION} values" in error.message
    assert "*l3" in error.message
    assert vault.calls == 0  # refused while reading the file: nothing of it was walked
    assert walk.visits == 1  # h1's address in hosts.yaml


def test_aliases_within_the_bound_load_as_before() -> None:
    data = load_yaml_text("base: &b {k: 1}\nuse: {<<: *b, j: 2}\nlist: [*b, *b]\n")
    assert data == {"base": {"k": 1}, "use": {"k": 1, "j": 2}, "list": [{"k": 1}, {"k": 1}]}
    assert MAX_ALIAS_EXPANSION >= 10_000  # a big fleet's shared defaults fit easily
