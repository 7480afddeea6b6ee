"""The open probes stay cheap: /ready does not write to the SD card on every unauthenticated call."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Awaitable, Callable

from edge.app import Agent
from edge.clock import SteppedClock
from tests.helpers import api_client


async def test_ready_writes_at_most_once_a_second(make_agent: Callable[..., Awaitable[Agent]]) -> None:
    """A burst of /ready calls (in a row, and 20 at once) shares one write probe; a second later it writes again."""
    clock = SteppedClock()
    agent = await make_agent(clock=clock)
    # Used from worker threads (off the loop), one at a time.
    watcher = sqlite3.connect(agent.settings.agent.db_path, isolation_level=None, check_same_thread=False)

    async def data_version() -> int:  # changes whenever another connection committed since the last look
        return await asyncio.to_thread(lambda: watcher.execute("PRAGMA data_version").fetchone()[0])

    try:
        async with api_client(agent, token=None) as anonymous:

            async def ready() -> int:
                async with anonymous.get("/ready") as response:
                    return response.status

            assert await ready() == 200
            before = await data_version()
            assert [await ready() for _ in range(10)] == [200] * 10
            assert await asyncio.gather(*(ready() for _ in range(20))) == [200] * 20
            assert await data_version() == before, "/ready wrote to the database again within the second"
            clock.advance(1.5)
            assert await ready() == 200
            assert await data_version() != before, "after a second /ready probes the disk again"
    finally:
        watcher.close()
