"""ApplyPlan tried again (``operations.push_plans`` with a retry policy, as ``lab up``
uses it) on real agents: one that is not listening yet when the first push comes gets its
plan on a later attempt; one that never comes is named in the result, after how many
attempts. Agents are `vpnfleet-agent serve` processes on 127.0.0.1 with mutual TLS."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from pathlib import Path

from tests.support.agent_harness import make_fleet, running_agent, serving_config
from vpnfleet.controller.fleet import operations
from vpnfleet.controller.reports.results import Outcome
from vpnfleet.controller.statedir.state import StateDir

HOSTS = ("h1", "h2")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_inventory(root: Path, ports: dict[str, int]) -> Path:
    root.mkdir()
    hosts = "".join(
        f"        {h}: {{address: 10.77.0.{i}, subnets: [10.7{i}.0.0/24], "
        f"agent_address: '127.0.0.1:{ports[h]}'}}\n"
        for i, h in enumerate(HOSTS, 1)
    )
    (root / "hosts.yaml").write_text("all:\n  children:\n    mesh:\n      hosts:\n" + hosts)
    (root / "topology.yaml").write_text("meshes:\n  - {name: core, group: mesh}\n")
    return root


def test_agent_not_yet_listening_gets_its_plan_on_a_later_attempt(tmp_path: Path) -> None:
    fleet = make_fleet(tmp_path)
    late_dir = fleet.enroll("h2")
    port = free_port()
    late_config = late_dir / "agent.yaml"
    late_config.write_text(f"name: h2\nlisten: 127.0.0.1:{port}\nstate_dir: .\n")
    notices: list[str] = []
    with contextlib.ExitStack() as stack:
        h1 = stack.enter_context(running_agent("h1", fleet.enroll("h1")))
        inventory = write_inventory(tmp_path / "inventory", {"h1": h1.port, "h2": port})
        state = StateDir(fleet.controller_state)
        compiled = operations.compile_fleet(inventory, state)

        def notice(line: str) -> None:
            notices.append(line)
            if len(notices) == 1:  # h2's agent starts once its first push has failed
                stack.enter_context(serving_config("h2", late_config, late_dir))

        result = asyncio.run(
            operations.push_plans(
                compiled,
                state,
                dry_run=False,
                retry=operations.PushRetry(attempts=4, first_delay=0.2, max_delay=1.0),
                notice=notice,
            )
        )
        assert [r.outcome for r in result] == [Outcome.CHANGED, Outcome.CHANGED], result
        assert len(notices) == 1, notices
        assert notices[0].startswith("apply h2: unreachable (")
        assert notices[0].endswith("); attempt 2 of 4 in 0.2 s")
        status = asyncio.run(operations.fleet_status(compiled, state))
        assert [h.in_sync for h in status.hosts] == [True, True]


def test_agent_that_never_answers_is_named_after_every_attempt(tmp_path: Path) -> None:
    fleet = make_fleet(tmp_path)
    fleet.enroll("h2")
    notices: list[str] = []
    with running_agent("h1", fleet.enroll("h1")) as h1:
        inventory = write_inventory(tmp_path / "inventory", {"h1": h1.port, "h2": free_port()})
        state = StateDir(fleet.controller_state)
        result = asyncio.run(
            operations.push_plans(
                operations.compile_fleet(inventory, state),
                state,
                dry_run=False,
                retry=operations.PushRetry(attempts=3, first_delay=0.1, max_delay=0.2),
                notice=notices.append,
            )
        )
    assert result.results["h1"].outcome is Outcome.CHANGED
    failed = result.results["h2"]
    assert failed.outcome is Outcome.UNREACHABLE
    assert failed.error.endswith("(after 3 attempts)"), failed.error
    assert [n.rsplit(";", 1)[1] for n in notices] == [
        " attempt 2 of 3 in 0.1 s",
        " attempt 3 of 3 in 0.2 s",
    ]
    assert all(n.startswith("apply h2: unreachable (") for n in notices)
