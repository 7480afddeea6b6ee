"""Recovery benchmark: N orders missed during an outage, the line returns, how fast the agent has them all stored and queued."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from edge.app import Agent
from edge.config import parse_settings
from edge.events import RecoveryCompleted, RecoveryStarted
from edge.sim.central import CentralSim
from edge.sim.demo import demo_settings
from edge.sim.printer import SimPrinter

_TOKEN = "bench-central-token"


async def measure_recovery(
    data_dir: Path, *, orders: int = 10_000, central: dict[str, Any] | None = None, timeout: float = 600.0
) -> dict[str, Any]:
    """Run the real agent in this process against the central simulator and two simulated printers.

    The simulator holds ``orders`` orders and is down when the agent starts; then the line comes back.
    ``central`` overrides ``[central]`` keys (default: the shipped defaults, except no start delay).
    Returns seconds from the line coming back to: the run starting, every order stored with its jobs
    queued, the run completed (outbox flushed, cursor stored); plus the request rate the simulator saw.
    """
    sim = CentralSim("demo-store", token=_TOKEN)
    sim.create_orders(orders, prefix=f"bench{int(time.time())}")
    await sim.start()
    await sim.set_up(False)
    printers = [SimPrinter("kitchen"), SimPrinter("front")]
    for printer in printers:
        await printer.start()
    raw = demo_settings(
        data_dir, api_port=0, kitchen_port=printers[0].port, front_port=printers[1].port, central_url=sim.url
    )
    raw["central"].update({"token": _TOKEN, "start_jitter_s": 0.0, **(central or {})})
    raw["agent"]["log_level"] = "warning"
    agent = Agent(parse_settings(raw, source="bench"))
    started: list[RecoveryStarted] = []
    completed: list[RecoveryCompleted] = []
    agent.bus.subscribe(started.append, RecoveryStarted)
    agent.bus.subscribe(completed.append, RecoveryCompleted)
    await agent.start()
    assert agent.db is not None
    try:
        await asyncio.sleep(0.5)  # the monitor has seen the line down
        first_request = len(sim.requests)
        await sim.set_up(True)
        line_back = time.time()
        async with asyncio.timeout(timeout):
            while not started:
                await asyncio.sleep(0.005)
            while (await agent.db.fetchone("SELECT COUNT(*) FROM orders WHERE source = 'recovery'"))[0] < orders:
                await asyncio.sleep(0.05)
            stored_at = time.time()
            while not completed:
                await asyncio.sleep(0.05)
        done_at = time.time()
        window = [t for t, *_ in sim.requests[first_request:]]
        jobs = (await agent.db.fetchone("SELECT COUNT(*) FROM print_jobs"))[0]
    finally:
        await agent.stop()
        await sim.stop()
        for printer in printers:
            await printer.stop()
    return {
        "orders": orders,
        "jobs_queued": jobs,
        "line_back_to_start_s": round(started[0].at - line_back, 4),
        "stored_and_queued_s": round(stored_at - line_back, 3),
        "run_completed_s": round(done_at - line_back, 3),
        "requests": len(window),
        "request_rate_rps": round((len(window) - 1) / max(window[-1] - window[0], 1e-9), 2)
        if len(window) > 1
        else 0.0,  # mean over the run
        "max_requests_in_1s": sim.max_requests_in(1.0),
        "central": raw["central"] | {"token": "***"},
    }
