"""Errors that point at the inventory text: file, line, column and what was expected."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Mark:
    """A position in an inventory file; line and column count from 1."""

    path: str
    line: int
    column: int

    def __str__(self) -> str:
        return f"{self.path}:{self.line}:{self.column}"


class InventoryError(Exception):
    """One problem in the inventory, located at ``mark`` when it has a place in a file."""

    def __init__(self, message: str, mark: Mark | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.mark = mark

    def __str__(self) -> str:
        return f"{self.mark}: {self.message}" if self.mark else self.message


@dataclass(frozen=True, slots=True)
class InventoryWarning:
    """Something Ansible reads without complaint but the operator likely did not mean
    (a duplicate key, vars for a name the inventory does not have): reported, not fatal."""

    message: str
    mark: Mark | None = None

    def __str__(self) -> str:
        return f"{self.mark}: {self.message}" if self.mark else self.message


class InventoryErrors(Exception):
    """Every problem found in one validation pass; raised so nothing runs on a bad inventory."""

    def __init__(self, errors: Iterable[InventoryError]) -> None:
        self.errors = list(errors)
        super().__init__("\n".join(str(e) for e in self.errors))

    def __str__(self) -> str:
        n = len(self.errors)
        head = f"{n} error{'s' if n != 1 else ''} in the inventory:"
        return "\n".join([head, *(f"  {e}" for e in self.errors)])


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest choice, or an empty string."""
    close = difflib.get_close_matches(word, sorted(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def edit_distance(a: str, b: str) -> int:
    """Optimal string alignment distance: insertions, deletions, substitutions and swaps
    of two neighbouring characters."""
    rows = [list(range(len(b) + 1))]
    for i, ca in enumerate(a, 1):
        row = [i]
        for j, cb in enumerate(b, 1):
            cost = min(rows[-1][j] + 1, row[j - 1] + 1, rows[-1][j - 1] + (ca != cb))
            if i > 1 and j > 1 and ca == b[j - 2] and a[i - 2] == cb:
                cost = min(cost, rows[-2][j - 2] + 1)
            row.append(cost)
        rows.append(row)
    return rows[-1][-1]


def misspelling_of(word: str, choices: Iterable[str]) -> str | None:
    """The choice ``word`` is most likely a misspelling of, if any: one edit away (two
    for choices of 8 characters or more), ignoring letter case and '-' for '_'."""
    plain = word.lower().replace("-", "_")
    best: tuple[int, str] | None = None
    for choice in sorted(choices):
        if choice == word:
            continue
        distance = edit_distance(plain, choice.lower())
        if distance <= (2 if len(choice) >= 8 else 1) and (best is None or distance < best[0]):
            best = (distance, choice)
    return best[1] if best else None
