"""The open probes stay cheap: /ready does not write to the SD card at every call, open to anyone as it is."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import cast

from edge.api.routes import WRITE_PROBE_FRESH_S, WriteProbe
from edge.app import Agent
from edge.clock import SteppedClock
from edge.sim.orders import make_order
from edge.store.db import Database
from tests.helpers import api_client, commits_seen, fresh, post


async def test_a_burst_of_ready_calls_shares_one_write_probe(make_agent: Callable[..., Awaitable[Agent]]) -> None:
    """/ready in a row, and 20 at once, share one write probe."""
    agent = await make_agent(clock=SteppedClock())
    async with commits_seen(agent.settings.agent.db_path) as seen, api_client(agent, token=None) as anonymous:

        async def ready() -> int:
            async with anonymous.get("/ready") as response:
                return response.status

        assert await ready() == 200
        await seen()
        assert [await ready() for _ in range(10)] == [200] * 10
        assert await asyncio.gather(*(ready() for _ in range(20))) == [200] * 20
        assert await seen() == 0, "/ready wrote to the database again at once"


async def test_ready_polled_all_day_writes_the_card_once_in_five_minutes(
    make_agent: Callable[..., Awaitable[Agent]],
) -> None:
    """A monitor asking /ready every 5 s (a readiness probe, a blackbox exporter; the health-check timer asks every
    minute) on an idle box: the write probe, a commit with an fsync on the SD card, runs once in five minutes, not at
    every call (before: 120 commits in these ten minutes, 17,280 a day, each ~8 KiB written: more than the orders of a
    busy store)."""
    clock = SteppedClock()
    agent = await make_agent(clock=clock)
    async with commits_seen(agent.settings.agent.db_path) as seen, api_client(agent, token=None) as anonymous:
        probes = 0
        for _ in range(120):
            async with anonymous.get("/ready") as response:
                assert response.status == 200, await response.text()
            probes += await seen()
            clock.advance(5)
        assert probes == 2, f"{probes} write probes in ten minutes"


async def test_ready_takes_the_agents_own_writes_as_the_proof_and_probes_only_when_none_came(
    make_agent: Callable[..., Awaitable[Agent]],
) -> None:
    """An order stored proves the card takes writes as well as a probe would: /ready after it writes nothing of its
    own, even once the last probe is old."""
    clock = SteppedClock()
    agent = await make_agent(clock=clock)
    async with (
        commits_seen(agent.settings.agent.db_path) as seen,
        api_client(agent, token=None) as anonymous,
        api_client(agent) as api,
    ):
        async with anonymous.get("/ready") as response:
            assert response.status == 200
        clock.advance(400)
        await seen()
        assert (await post(api, fresh(make_order(1))))[0] == 201
        assert await seen() == 1
        async with anonymous.get("/ready") as response:
            assert response.status == 200, await response.text()
        assert await seen() == 0, "/ready probed although an order had just been written"
        clock.advance(400)  # nothing written since: the probe runs
        async with anonymous.get("/ready") as response:
            assert response.status == 200
        assert await seen() == 1


class _Card:
    """The database as the write probe sees it: whether a probe write passes, the agent's own durable writes so far,
    the problem its last failed write met, and a stall of the card (tests/appliance/test_stalled_card.py)."""

    def __init__(self) -> None:
        self.problem: str | None = None  # what a probe write meets
        self.room = True  # whether 64 KiB of fresh pages fit
        self.durable_writes = 0
        self.write_problem: str | None = None
        self.stall: str | None = None
        self.probes = 0
        self.path = Path("/nonexistent/edge.db")  # no other program holds a lock on it

    async def writable(self) -> str | None:
        self.probes += 1
        return self.problem

    async def probe_space(self) -> bool:
        if self.room:
            self.write_problem = None
        return self.room


async def test_a_failing_card_is_probed_at_every_call_and_a_failed_write_is_probed_within_a_second() -> None:
    """A failing probe is not reused (a repaired card shows at once); a good one is, until one of the agent's own
    writes fails: then it is probed again, at most once a second; and while small writes pass but 64 KiB do not (a
    full card), the agent's problem is the answer."""
    clock, card = SteppedClock(), _Card()
    probe = WriteProbe(cast(Database, card), clock=clock)
    card.problem = "read-only"
    assert [await probe.problem() for _ in range(3)] == ["read-only"] * 3 and card.probes == 3
    card.problem = None
    assert await probe.problem() is None and card.probes == 4
    card.write_problem = "disk full"  # an order's write failed
    assert await probe.problem() is None and card.probes == 4, "probed again within the second"
    clock.advance(1.5)
    card.room = False
    assert await probe.problem() == "disk full" and card.probes == 5
    assert await probe.problem() == "disk full" and card.probes == 6  # a failing answer: probed at every call
    card.room = True
    assert await probe.problem() is None and card.write_problem is None and card.probes == 7
    clock.advance(WRITE_PROBE_FRESH_S - 1)
    assert await probe.problem() is None and card.probes == 7
    clock.advance(2)
    assert await probe.problem() is None and card.probes == 8
