"""The agent's own repeating timer (edge.clock.repeat), which runs housekeeping and the scheduled recovery."""

from __future__ import annotations

import asyncio

import structlog

from edge.clock import repeat
from tests.helpers import wait_until


async def test_a_failing_run_is_logged_and_the_next_one_still_comes() -> None:
    """A run that raises is logged with the job's name; the timer keeps going and runs it again."""
    runs: list[int] = []

    async def job() -> None:
        runs.append(len(runs))
        if len(runs) == 1:
            raise RuntimeError("disk on fire")

    with structlog.testing.capture_logs() as logs:
        task = asyncio.create_task(repeat(job, 0.01))
        try:
            await wait_until(lambda: len(runs) >= 3, what="three runs")
        finally:
            task.cancel()
    failed = [e for e in logs if e["event"] == "repeated_job_failed"]
    assert len(failed) == 1 and failed[0]["job"].endswith("job") and "disk on fire" in failed[0]["error"]


async def test_runs_never_overlap_and_an_overrun_delays_the_next() -> None:
    """A run slower than the interval is not joined by a second one: the next starts an interval after it ended."""
    active, most = 0, 0
    runs = 0

    async def slow() -> None:
        nonlocal active, most, runs
        active += 1
        most = max(most, active)
        await asyncio.sleep(0.03)
        active -= 1
        runs += 1

    task = asyncio.create_task(repeat(slow, 0.005))
    try:
        await wait_until(lambda: runs >= 3, what="three runs")
    finally:
        task.cancel()
    assert most == 1
