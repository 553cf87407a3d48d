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
