"""What opening an inventory's secrets costs: one Argon2id derivation at libsodium's
INTERACTIVE limits (version 1 vault texts) and at MODERATE (what new texts are sealed
with), a nested-alias file (the ~550-byte "billion laughs" of 9 levels, refused) and a
file whose aliases stay within the bound (4 levels, loaded: the vault walk visits each
distinct value once). Prints one JSON line:

    {"argon2id_interactive_s": ..., "argon2id_moderate_s": ..., "bomb_bytes": ...,
     "bomb_s": ..., "bomb_walk_visits": ..., "aliases_4_s": ...,
     "aliases_4_walk_visits": ..., "repeats": R}

Derivation times are the median of ``--repeats``; walk visits count calls of the
loader's vault walk.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import nacl.pwhash

from vpnfleet.controller.inventory import InventoryErrors, load_inventory, loader
from vpnfleet.controller.inventory.vault import INTERACTIVE, MODERATE, KdfParams


def derivation_seconds(params: KdfParams, repeats: int) -> float:
    times = []
    for n in range(repeats):
        start = time.perf_counter()
        nacl.pwhash.argon2id.kdf(
            32, b"password", bytes([n]) * 16, opslimit=params.opslimit, memlimit=params.memlimit
        )
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def nested_aliases(levels: int) -> str:
    lines = [f"x_l0: &l0 [{', '.join(['lol'] * 10)}]"]
    for n in range(1, levels):
        lines.append(f"x_l{n}: &l{n} [{', '.join([f'*l{n - 1}'] * 10)}]")
    return "\n".join(lines) + "\n"


def load_counting(text: str) -> tuple[float, int]:
    """Seconds to load (or refuse) an inventory with ``text`` as group_vars/all.yaml,
    and the vault walk's visits."""
    visits = 0
    walk = loader._walk_vault

    def counting(*args: Any) -> Any:
        nonlocal visits
        visits += 1
        return walk(*args)

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "group_vars").mkdir()
        (root / "hosts.yaml").write_text("all:\n  hosts:\n    h1: {address: 10.0.0.1}\n")
        (root / "group_vars" / "all.yaml").write_text(text)
        loader._walk_vault = counting  # type: ignore[assignment]
        try:
            start = time.perf_counter()
            with contextlib.suppress(InventoryErrors):
                load_inventory(root)
            return time.perf_counter() - start, visits
        finally:
            loader._walk_vault = walk  # type: ignore[assignment]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    bomb = nested_aliases(9)
    bomb_s, bomb_visits = load_counting(bomb)
    within_s, within_visits = load_counting(nested_aliases(4))
    print(
        json.dumps(
            {
                "argon2id_interactive_s": round(derivation_seconds(INTERACTIVE, args.repeats), 3),
                "argon2id_moderate_s": round(derivation_seconds(MODERATE, args.repeats), 3),
                "bomb_bytes": len(bomb),
                "bomb_s": round(bomb_s, 4),
                "bomb_walk_visits": bomb_visits,
                "aliases_4_s": round(within_s, 4),
                "aliases_4_walk_visits": within_visits,
                "repeats": args.repeats,
            }
        )
    )


if __name__ == "__main__":
    main()
