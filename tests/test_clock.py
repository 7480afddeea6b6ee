"""The agent's own repeating timer (edge.clock.repeat), which runs housekeeping and the scheduled recovery."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import structlog

import edge as edge_package
from edge.clock import repeat, wait_set
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


@pytest.mark.parametrize("turns", range(6))
async def test_a_cancel_that_meets_the_wake_is_not_lost(turns: int) -> None:
    """A loop sleeping in ``wait_set`` is woken and cancelled within a few turns of the event loop: it ends. (Python
    3.11's ``asyncio.wait_for`` returns the event's result instead, and the loop goes on: the stop waiting for it
    never ends.)"""
    wake = asyncio.Event()
    rounds: list[bool] = []

    async def loop() -> None:
        while True:
            rounds.append(await wait_set(wake, 30))
            wake.clear()

    task = asyncio.create_task(loop())
    await asyncio.sleep(0)
    wake.set()
    for _ in range(turns):
        await asyncio.sleep(0)
    task.cancel()
    done, _ = await asyncio.wait([task], timeout=1)
    assert done == {task} and task.cancelled() and rounds in ([], [True])


async def test_wait_set_says_whether_the_event_came() -> None:
    """True when the event is set (at once if it already is), False when the time runs out first."""
    wake = asyncio.Event()
    assert await wait_set(wake, 0.01) is False
    asyncio.get_running_loop().call_later(0.01, wake.set)
    assert await wait_set(wake, 5) is True
    assert await wait_set(wake, 0) is True


def test_the_agent_waits_with_wait_set_not_wait_for() -> None:
    """``asyncio.wait_for`` may swallow a stop's cancel on Python 3.11 (above); the agent's own parts use ``wait_set``
    or ``asyncio.timeout``. The simulators' one-shot waits are not stopped that way and may keep it."""
    edge = Path(edge_package.__file__).parent
    found = [
        f"{path.relative_to(edge)}:{number}"
        for path in sorted(edge.rglob("*.py"))
        if path.parent.name != "sim"
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if "asyncio.wait_for(" in line
    ]
    assert found == []
