"""The open probes stay cheap: /ready does not write to the SD card at every call, open to anyone as it is."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable

from edge.app import Agent
from edge.clock import SteppedClock
from edge.sim.orders import make_order
from tests.helpers import api_client, fresh, post


@contextlib.asynccontextmanager
async def _commits(agent: Agent) -> AsyncIterator[Callable[[], Awaitable[int]]]:
    """A counter of the commits another connection made to the agent's database since the last look (0 or 1: SQLite
    tells whether, not how many)."""
    # Used from worker threads (off the loop), one at a time.
    watcher = sqlite3.connect(agent.settings.agent.db_path, isolation_level=None, check_same_thread=False)
    seen = [-1]

    async def committed() -> int:
        now = await asyncio.to_thread(lambda: watcher.execute("PRAGMA data_version").fetchone()[0])
        if seen[0] < 0:
            seen[0] = now
        changed = int(now != seen[0])
        seen[0] = now
        return changed

    try:
        await committed()
        yield committed
    finally:
        watcher.close()


async def test_a_burst_of_ready_calls_shares_one_write_probe(make_agent: Callable[..., Awaitable[Agent]]) -> None:
    """/ready in a row, and 20 at once, share one write probe."""
    agent = await make_agent(clock=SteppedClock())
    async with _commits(agent) as committed, api_client(agent, token=None) as anonymous:

        async def ready() -> int:
            async with anonymous.get("/ready") as response:
                return response.status

        assert await ready() == 200
        await committed()
        assert [await ready() for _ in range(10)] == [200] * 10
        assert await asyncio.gather(*(ready() for _ in range(20))) == [200] * 20
        assert await committed() == 0, "/ready wrote to the database again at once"


async def test_ready_polled_all_day_writes_the_card_once_in_five_minutes(
    make_agent: Callable[..., Awaitable[Agent]],
) -> None:
    """A monitor asking /ready every 5 s (a readiness probe, a blackbox exporter; the health-check timer asks every
    minute) on an idle box: the write probe, a commit with an fsync on the SD card, runs once in five minutes, not at
    every call (before: 120 commits in these ten minutes, 17,280 a day, each ~8 KiB written: more than the orders of a
    busy store)."""
    clock = SteppedClock()
    agent = await make_agent(clock=clock)
    async with _commits(agent) as committed, api_client(agent, token=None) as anonymous:
        probes = 0
        for _ in range(120):
            async with anonymous.get("/ready") as response:
                assert response.status == 200, await response.text()
            probes += await committed()
            clock.advance(5)
        assert probes == 2, f"{probes} write probes in ten minutes"


async def test_ready_takes_the_agents_own_writes_as_the_proof_and_probes_only_when_none_came(
    make_agent: Callable[..., Awaitable[Agent]],
) -> None:
    """An order stored proves the card takes writes as well as a probe would: /ready after it writes nothing of its
    own, even once the last probe is old."""
    clock = SteppedClock()
    agent = await make_agent(clock=clock)
    async with _commits(agent) as committed, api_client(agent, token=None) as anonymous, api_client(agent) as api:
        async with anonymous.get("/ready") as response:
            assert response.status == 200
        clock.advance(400)
        await committed()
        assert (await post(api, fresh(make_order(1))))[0] == 201
        assert await committed() == 1
        async with anonymous.get("/ready") as response:
            assert response.status == 200, await response.text()
        assert await committed() == 0, "/ready probed although an order had just been written"
        clock.advance(400)  # nothing written since: the probe runs
        async with anonymous.get("/ready") as response:
            assert response.status == 200
        assert await committed() == 1
