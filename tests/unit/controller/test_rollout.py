"""Serial batches, bounded concurrency and the failure gate of controller.fleet.rollout."""

from __future__ import annotations

import asyncio

import pytest

from vpnfleet.controller.fleet.rollout import (
    RolloutOptionError,
    RolloutOptions,
    batches,
    run_rollout,
)
from vpnfleet.controller.reports.results import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_UNREACHABLE,
    HostResult,
    Outcome,
)

HOSTS = [f"h{i}" for i in range(10)]


def test_batches_without_serial_is_one_batch() -> None:
    assert batches(HOSTS, ()) == [HOSTS]


def test_batches_count_and_percentage_last_size_repeats() -> None:
    got = batches(HOSTS, ("1", "30%"))
    assert [len(b) for b in got] == [1, 3, 3, 3]
    assert [h for b in got for h in b] == HOSTS


def test_percentage_never_below_one_host() -> None:
    assert [len(b) for b in batches(HOSTS[:3], ("10%",))] == [1, 1, 1]


@pytest.mark.parametrize("bad", ["0", "-1", "x", "0%", "150%"])
def test_bad_serial_is_refused(bad: str) -> None:
    with pytest.raises(RolloutOptionError, match="--serial"):
        RolloutOptions(serial=(bad,))


def test_bad_forks_and_percentage_are_refused() -> None:
    with pytest.raises(RolloutOptionError, match="--forks"):
        RolloutOptions(forks=0)
    with pytest.raises(RolloutOptionError, match="--max-fail-percentage"):
        RolloutOptions(max_fail_percentage=101)


async def test_forks_bound_concurrency() -> None:
    running = 0
    peak = 0

    async def op(host: str) -> HostResult:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        running -= 1
        return HostResult(host, Outcome.OK)

    agg = await run_rollout(HOSTS, op, RolloutOptions(forks=3))
    assert peak == 3
    assert list(agg.results) == HOSTS
    assert agg.exit_code == EXIT_OK


async def test_exception_becomes_failed_result_and_others_run() -> None:
    async def op(host: str) -> HostResult:
        if host == "h2":
            raise RuntimeError("boom")
        return HostResult(host, Outcome.CHANGED)

    agg = await run_rollout(HOSTS, op)
    assert agg.failed_hosts == ["h2"]
    assert "RuntimeError: boom" in agg.results["h2"].error
    assert len(agg.hosts(Outcome.CHANGED)) == 9
    assert agg.exit_code == EXIT_FAILED


async def test_max_fail_percentage_stops_later_batches() -> None:
    seen: list[str] = []

    async def op(host: str) -> HostResult:
        seen.append(host)
        return HostResult(host, Outcome.FAILED if host == "h0" else Outcome.OK)

    agg = await run_rollout(HOSTS, op, RolloutOptions(serial=("2",), max_fail_percentage=40))
    assert seen == ["h0", "h1"]
    assert "more than --max-fail-percentage 40" in agg.aborted
    assert agg.hosts(Outcome.SKIPPED) == HOSTS[2:]
    assert agg.exit_code == EXIT_FAILED


async def test_failure_within_percentage_continues() -> None:
    async def op(host: str) -> HostResult:
        return HostResult(host, Outcome.FAILED if host == "h0" else Outcome.OK)

    agg = await run_rollout(HOSTS, op, RolloutOptions(serial=("5",), max_fail_percentage=20))
    assert not agg.aborted
    assert agg.failed_hosts == ["h0"]


async def test_unreachable_only_exit_code() -> None:
    async def op(host: str) -> HostResult:
        return HostResult(host, Outcome.UNREACHABLE if host == "h1" else Outcome.OK)

    agg = await run_rollout(HOSTS, op)
    assert agg.exit_code == EXIT_UNREACHABLE
    recap = "\n".join(agg.recap_lines())
    assert "h1 : ok=0   changed=0   unreachable=1" in recap
