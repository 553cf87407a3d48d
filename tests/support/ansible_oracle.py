"""ansible-core's own answers about inventories, from one long-lived helper process.

Starting ansible-inventory costs about half a second; the property tests ask about
hundreds of inventories. :class:`AnsibleOracle` starts this file once as a subprocess of
the same Python (``python ansible_oracle.py``), which imports ansible-core and answers
one JSON request per line on standard input, one JSON answer per line on standard output:

request  ``{"source": "/path/to/hosts.yaml", "patterns": ["web:&eu", ...]}``
answer   ``{"list": TEXT, "groups": {host: [group, ...]}, "patterns": {pattern:
         {"hosts": [...], "empty_terms": [...]} or {"error": "..."}}, "limited":
         {pattern: TEXT}}``
         or ``{"error": "..."}`` when ansible-core refuses the inventory

``list`` is what ``ansible-inventory -i SOURCE --list`` prints, made by ansible-core's
own ``InventoryCLI`` methods; ``limited`` is the same with ``--limit PATTERN``;
``patterns`` gives the hosts each ``--limit`` pattern selects and the terms that select
nothing on their own (ansible warns of those and goes on; vpnfleet refuses them).
vpnfleet itself never imports ansible: only this helper process does.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Any

_TIMEOUT = 120.0  # seconds for one answer, however large the inventory


class AnsibleOracle:
    """The helper process: ``with AnsibleOracle() as oracle: oracle.ask(path, patterns)``."""

    def __init__(self) -> None:
        env = {
            **os.environ,
            "ANSIBLE_NOCOLOR": "1",
            # A source ansible-core cannot read is an error here, not a warning.
            "ANSIBLE_INVENTORY_UNPARSED_FAILED": "1",
            "ANSIBLE_INVENTORY_ANY_UNPARSED_IS_FAILED": "1",
        }
        # What the helper says on stderr, shown if it dies; closed by close().
        self._stderr = tempfile.TemporaryFile(mode="w+", encoding="utf-8")  # noqa: SIM115
        # Ansible reads ansible.cfg from the working directory: run it where there is none.
        self._proc = subprocess.Popen(
            [sys.executable, __file__],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            env=env,
            cwd="/",
        )

    def ask(self, source: Path, patterns: list[str]) -> dict[str, Any]:
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._proc.stdin.write(json.dumps({"source": str(source), "patterns": patterns}) + "\n")
        self._proc.stdin.flush()
        line = self._proc.stdout.readline()
        if not line:
            code = self._proc.wait(_TIMEOUT)
            self._stderr.seek(0)
            said = self._stderr.read()[-2000:]
            raise RuntimeError(
                f"the ansible-core helper ended (exit {code}); ansible-core is a test "
                f"dependency (scripts/setup --test installs it). It said:\n{said}"
            )
        answer: dict[str, Any] = json.loads(line)
        return answer

    def close(self) -> None:
        if self._proc.stdin is not None:
            self._proc.stdin.close()
        try:
            self._proc.wait(_TIMEOUT)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        if self._proc.stdout is not None:
            self._proc.stdout.close()
        self._stderr.close()

    def __enter__(self) -> AnsibleOracle:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _serve() -> None:  # pragma: no cover - runs in the helper process
    # Answers go to the real standard output; anything ansible prints goes to stderr.
    answers = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)
    sys.stdout = sys.stderr

    from ansible.cli.inventory import InventoryCLI
    from ansible.inventory.manager import InventoryManager, split_host_pattern
    from ansible.parsing.dataloader import DataLoader
    from ansible.plugins.loader import init_plugin_loader
    from ansible.vars.manager import VariableManager

    cli = InventoryCLI(["ansible-inventory", "--list"])
    cli.parse()  # sets ansible's global command-line context, as ansible-inventory does
    init_plugin_loader([])

    def answer(request: dict[str, Any]) -> dict[str, Any]:
        loader = DataLoader()
        inventory = InventoryManager(loader=loader, sources=[request["source"]])
        cli.loader, cli.inventory = loader, inventory
        cli.vm = VariableManager(loader=loader, inventory=inventory)
        listing = cli.dump(cli.json_inventory(inventory.groups["all"]))
        groups = {
            host.name: sorted(group.name for group in host.get_groups())
            for host in inventory.get_hosts("all")
        }
        patterns: dict[str, Any] = {}
        limited: dict[str, str] = {}
        for pattern in request["patterns"]:
            try:
                inventory.subset(pattern)
                selected = [host.name for host in inventory.get_hosts("all")]
                limited[pattern] = cli.dump(cli.json_inventory(inventory.groups["all"]))
            except Exception as exc:  # a pattern ansible-core refuses (a subscript too far)
                patterns[pattern] = {"error": f"{type(exc).__name__}: {exc}"}
                continue
            finally:
                inventory.subset(None)
            # Each term as ansible-core matches it inside the pattern: get_hosts(term)
            # would split a term such as "b:b" (from "a,b:b") again at its colon.
            empty = [
                term
                for term in split_host_pattern(pattern)
                if not inventory._match_one_pattern(term[1:] if term[:1] in "&!" else term)
            ]
            patterns[pattern] = {"hosts": selected, "empty_terms": empty}
        return {"list": listing, "groups": groups, "patterns": patterns, "limited": limited}

    for line in sys.stdin:
        try:
            reply = answer(json.loads(line))
        except Exception as exc:  # ansible's own refusal of the inventory
            reply = {"error": f"{type(exc).__name__}: {exc}"}
        answers.write(json.dumps(reply) + "\n")
        answers.flush()


if __name__ == "__main__":
    _serve()
