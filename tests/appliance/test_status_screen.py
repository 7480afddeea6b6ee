"""`edge status` as the technician reads it: what waits for a person is on the screen, and the uptime survives a
wall-clock step."""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from edge.app import Agent
from edge.clock import SteppedClock
from edge.ops.technician import render_status
from edge.sim.orders import make_order
from edge.sim.printer import SimPrinter
from edge.sim.process import write_config
from tests.helpers import TOKEN, agent_process, api_client, edge, post, until

_YELLOW = "\033[33m"


async def test_edge_status_shows_tickets_held_for_a_person_and_what_to_do(
    tmp_path: Path, printers: dict[str, SimPrinter]
) -> None:
    """An order the till sends an hour late: its ticket is held (not printed, waiting for a person). `edge status`
    says so in one line naming the commands, in the warning colour on a terminal, next to an empty queue and no dead
    jobs. Before: `queue: 0 waiting, oldest –`, `dead jobs: 0` and nothing else: all clear, while the JSON and
    `edge jobs --held` listed the ticket."""
    agent = agent_process(tmp_path, printers)
    config = str(agent.config)
    try:
        await agent.start()
        late = make_order(
            1, print_receipt=False, created_at=datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
        )
        async with api_client(agent.port) as api:
            assert (await post(api, late))[0] == 201
            await until(api, "/api/v1/jobs?state=held", lambda body: len(body["jobs"]) == 1, "the ticket held")
        shown = await edge("status", "--config", config)
        assert shown.returncode == 0, shown.stderr
        lines = shown.stdout.splitlines()
        assert "queue: 0 waiting, oldest –" in lines and "dead jobs: 0" in lines, shown.stdout
        assert "1 ticket held for a person: edge jobs --held, then release or discard" in lines, shown.stdout
        answer = await edge("status", "--json", "--config", config)
        data = json.loads(answer.stdout)
        assert len(data["held_jobs"]) == 1
        coloured = render_status(data, colour=True).splitlines()
        assert f"{_YELLOW}1 ticket held for a person: edge jobs --held, then release or discard\033[0m" in coloured
        assert printers["kitchen"].printed == []
        assert await agent.terminate() == 0
    finally:
        await agent.close()


async def test_uptime_survives_the_wall_clock_set_back(
    tmp_path: Path, make_agent: Callable[..., Awaitable[Agent]], printers: dict[str, SimPrinter]
) -> None:
    """The box's clock is set back two hours while the agent runs (NTP's first sync on a box that booted ahead):
    `edge status` still says the agent is up a few seconds, measured on the monotonic clock. Before: `up -7199 s`
    (now minus the start, both on the wall clock); the status page's summary showed the same."""
    clock = SteppedClock()
    agent = await make_agent(clock=clock)
    config = write_config(
        tmp_path / "edge.toml",
        data_dir=tmp_path / "data",
        api_port=agent.port or 0,
        token=TOKEN,
        printers={n: p.port for n, p in printers.items()},
    )
    clock.step(-7200)
    shown = await edge("status", "--config", str(config))
    assert shown.returncode == 0, shown.stderr
    first = shown.stdout.splitlines()[0]
    assert re.search(r"  up \d+ s$", first), first
