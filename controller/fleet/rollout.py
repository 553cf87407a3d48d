"""Bounded, batched fan-out of one operation over many hosts.

The operation itself (push a plan, ask for status, rekey) is a coroutine per host given
by the caller; this module only decides *when* each host runs: at most ``forks`` at a
time, in serial batches (Ansible's ``serial``: a count, a percentage, or a list of
either), stopping after a batch whose failures pass ``max_fail_percentage``. A host
whose operation raises becomes a failed result; nothing here raises for one host.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from ..reports.results import AggregateResult, HostResult, Outcome

HostOperation = Callable[[str], Awaitable[HostResult]]
ProgressHook = Callable[[HostResult], None]


class RolloutOptionError(ValueError):
    """A --serial / --forks / --max-fail-percentage value that makes no sense."""


@dataclass(frozen=True, slots=True)
class RolloutOptions:
    forks: int = 10
    serial: tuple[str, ...] = ()  # e.g. ("1", "25%", "100%"); empty means one batch
    max_fail_percentage: float | None = None

    def __post_init__(self) -> None:
        if self.forks < 1:
            raise RolloutOptionError(f"--forks must be at least 1, not {self.forks}")
        if self.max_fail_percentage is not None and not 0 <= self.max_fail_percentage <= 100:
            raise RolloutOptionError(
                f"--max-fail-percentage must be within 0..100, not {self.max_fail_percentage}"
            )
        for spec in self.serial:
            _batch_size(spec, 1)


def _batch_size(spec: str, total: int) -> int:
    text = spec.strip()
    try:
        if text.endswith("%"):
            pct = float(text[:-1])
            if not 0 < pct <= 100:
                raise ValueError
            # Ansible rounds a percentage down but never below one host.
            return max(1, math.floor(total * pct / 100))
        n = int(text)
        if n < 1:
            raise ValueError
        return n
    except ValueError:
        raise RolloutOptionError(
            f"--serial takes a host count or a percentage (e.g. 2 or 25%), not {spec!r}"
        ) from None


def batches(hosts: Sequence[str], serial: Sequence[str]) -> list[list[str]]:
    """Split hosts into serial batches; the last size given repeats, as in Ansible."""
    if not serial:
        return [list(hosts)] if hosts else []
    out: list[list[str]] = []
    i = 0
    step = 0
    while i < len(hosts):
        spec = serial[min(step, len(serial) - 1)]
        size = _batch_size(spec, len(hosts))
        out.append(list(hosts[i : i + size]))
        i += size
        step += 1
    return out


DEFAULT_OPTIONS = RolloutOptions()


async def _guarded(host: str, operation: HostOperation, sem: asyncio.Semaphore) -> HostResult:
    async with sem:
        started = time.monotonic()
        try:
            return await operation(host)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # one host's bug or error must not stop the others
            return HostResult(
                host,
                Outcome.FAILED,
                error=f"{type(exc).__name__}: {exc}",
                seconds=time.monotonic() - started,
            )


async def run_rollout(
    hosts: Sequence[str],
    operation: HostOperation,
    options: RolloutOptions = DEFAULT_OPTIONS,
    progress: ProgressHook | None = None,
) -> AggregateResult:
    """Run ``operation`` on every host, batch after batch; return every host's result."""
    aggregate = AggregateResult()
    sem = asyncio.Semaphore(options.forks)
    plan = batches(hosts, options.serial)
    for index, batch in enumerate(plan):
        tasks = [asyncio.create_task(_guarded(h, operation, sem)) for h in batch]
        batch_results: list[HostResult] = []
        for fut in asyncio.as_completed(tasks):
            result = await fut
            batch_results.append(result)
            if progress:
                progress(result)
        by_host = {r.host: r for r in batch_results}
        aggregate.extend(by_host[h] for h in batch)
        bad = sum(1 for r in batch_results if r.failed or r.unreachable)
        reason = _abort_reason(bad, len(batch), options.max_fail_percentage)
        if reason and index < len(plan) - 1:
            aggregate.aborted = reason
            for rest in plan[index + 1 :]:
                aggregate.extend(
                    HostResult(h, Outcome.SKIPPED, error="not attempted: " + reason) for h in rest
                )
            break
    return aggregate


def _abort_reason(bad: int, size: int, max_fail_percentage: float | None) -> str:
    if not size or not bad:
        return ""
    pct = 100.0 * bad / size
    if max_fail_percentage is not None and pct > max_fail_percentage:
        return (
            f"{bad} of {size} hosts in the batch failed ({pct:.0f}%), "
            f"more than --max-fail-percentage {max_fail_percentage:g}"
        )
    if bad == size:
        return f"every host of the batch failed ({bad} of {size})"
    return ""
