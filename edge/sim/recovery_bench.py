"""Recovery benchmarks: one agent catching up on N missed orders, and a fleet of agents whose line returns at once."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import structlog.testing

from edge.app import Agent
from edge.config import CentralSettings, Secret, parse_settings
from edge.errors import CentralApiError
from edge.events import CentralLinkChanged, EventBus, RecoveryCompleted, RecoveryStarted
from edge.sim.central import CentralSim
from edge.sim.demo import demo_settings
from edge.sim.printer import SimPrinter
from edge.states import OrderSource
from edge.sync.client import MAX_EVENTS_PER_POST, CentralClient
from edge.sync.monitor import LinkMonitor

_TOKEN = "bench-central-token"


async def _until(check: Callable[[], Awaitable[bool]], interval_s: float) -> None:
    """Poll: what is checked (the agent's database, lists other tasks fill) has no event to wait on."""
    while not await check():  # noqa: ASYNC110
        await asyncio.sleep(interval_s)


async def measure_recovery(
    data_dir: Path, *, orders: int = 10_000, central: dict[str, Any] | None = None, limit_s: float = 600.0
) -> dict[str, Any]:
    """Run the real agent in this process against the central simulator and two simulated printers.

    The simulator holds ``orders`` orders and is down when the agent starts; then the line comes back.
    ``central`` overrides ``[central]`` keys (default: the shipped defaults, except no start delay).
    Returns seconds from the line coming back to: the run starting, every order stored with its jobs
    queued, the run completed (cursor stored); plus the request rate the simulator saw.
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
    deps = agent.deps
    assert deps is not None

    async def all_stored() -> bool:
        return await deps.orders.count(source=OrderSource.RECOVERY) >= orders

    try:
        await asyncio.sleep(0.5)  # the monitor has seen the line down
        first_request = len(sim.requests)
        await sim.set_up(True)
        line_back = time.time()
        async with asyncio.timeout(limit_s):
            await _until(_has(started), 0.005)
            await _until(all_stored, 0.05)
            stored_at = time.time()
            await _until(_has(completed), 0.05)
        done_at = time.time()
        window = [t for t, *_ in sim.requests[first_request:]]
        jobs = sum((await deps.jobs.counts()).values())
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


def _has(found: list[Any]) -> Callable[[], Awaitable[bool]]:
    return _true(lambda: bool(found))


def _true(check: Callable[[], bool]) -> Callable[[], Awaitable[bool]]:
    async def wrapped() -> bool:
        return check()

    return wrapped


# The shipped [central] defaults before issue 13 (the start delay, page and batch sizes that changed since).
OLD_DEFAULTS: dict[str, Any] = {"start_jitter_s": 30.0, "page_size": 200, "batch_size": 100}


class _SimAgent:
    """One store's link to central as the real agent has it (CentralClient with its own rate limiter and retries,
    LinkMonitor probing), running the recovery's request pattern instead of a whole agent and database:
    after the line is back and the random start delay, list every page of missed orders, then report each
    order's `received` event. ``report_per_batch`` is the pattern before issue 15: one events POST after each
    processing batch, before the next batch is stored."""

    def __init__(self, store_id: str, settings: CentralSettings, *, report_per_batch: bool) -> None:
        self.store_id = store_id
        self._settings = settings
        self._report_per_batch = report_per_batch
        self.client = CentralClient(settings, store_id)
        self.bus = EventBus()
        self.monitor = LinkMonitor(self.client, self.bus, settings)
        self.bus.subscribe(self._on_link, CentralLinkChanged)
        self.run: asyncio.Task[None] | None = None
        self.stored_at: float | None = None  # monotonic: every missed order listed and (in the old pattern) stored
        self.reported_at: float | None = None  # monotonic: central acknowledged every `received` event
        self.failed: str | None = None

    def _on_link(self, event: CentralLinkChanged) -> None:
        if event.up and self.run is None:
            self.run = asyncio.create_task(self._recover())

    async def _recover(self) -> None:
        s = self._settings
        await asyncio.sleep(random.uniform(0, s.start_jitter_s))
        try:
            cursor, orders, more = "", [], True
            while more:
                page, cursor, more = await self.client.orders_since(cursor, s.page_size)
                orders += page
            per_post = min(s.batch_size, MAX_EVENTS_PER_POST)
            events = [
                {"idempotency_key": f"{o['id']}:received:0", "order_id": o["id"], "event": "received", "at": 1.0}
                for o in orders
            ]
            if not self._report_per_batch:
                self.stored_at = time.monotonic()
            for first in range(0, len(events), per_post):
                await self.client.post_events(events[first : first + per_post])
            self.stored_at = self.stored_at or time.monotonic()
            self.reported_at = time.monotonic()
        except CentralApiError as err:  # the real run fails here and waits for its next trigger (schedule, link)
            self.failed = str(err)


async def measure_fleet(
    *,
    agents: int = 1000,
    orders_per_agent: int = 20,
    capacity_rps: float = 200.0,
    central: dict[str, Any] | None = None,
    report_per_batch: bool = False,
    limit_s: float = 240.0,
) -> dict[str, Any]:
    """A fleet whose line comes back at the same moment, against the central simulator with a fixed capacity
    (a gateway answering 429 with Retry-After beyond ``capacity_rps``). ``central`` overrides [central] keys.

    Returns the peak requests per second central saw, the 429s it sent, and seconds from the line coming back
    until every agent had its missed orders (``all_stored_s``) and until central held every `received` event."""
    sim = CentralSim("fleet-0000", token=_TOKEN)
    stores = [f"fleet-{n:04d}" for n in range(agents)]
    for store in stores:
        sim.add_store(store)
        sim.create_orders(orders_per_agent, prefix=store.replace("-", ""), store=store)
    await sim.start()
    await sim.set_up(False)
    settings = CentralSettings(**{"url": sim.url, "token": Secret(_TOKEN), **(central or {})})
    fleet = [_SimAgent(store, settings, report_per_batch=report_per_batch) for store in stores]
    # A thousand agents' retry warnings would bury the benchmark's output: they are kept here and counted instead.
    with structlog.testing.capture_logs() as logs:
        line_back = await _run_fleet(sim, fleet, capacity_rps, limit_s)
    stored = [a.stored_at - line_back for a in fleet if a.stored_at is not None]
    reported = [a.reported_at - line_back for a in fleet if a.reported_at is not None]
    statuses = sim.statuses()
    return {
        "agents": agents,
        "orders_per_agent": orders_per_agent,
        "capacity_rps": capacity_rps,
        "central": {k: v for k, v in (central or {}).items()},
        "pattern": "one events POST per processing batch" if report_per_batch else "outbox reports after storing",
        "requests": len(statuses),
        "peak_requests_in_1s": sim.max_requests_in(1.0),
        "responses_429": statuses.count(429),
        "agents_recovered": len(reported),
        "agents_failed": sum(1 for a in fleet if a.failed),
        "all_stored_s": round(max(stored), 2) if len(stored) == agents else None,
        "median_stored_s": round(sorted(stored)[len(stored) // 2], 2) if stored else None,
        "all_reported_s": round(max(reported), 2) if len(reported) == agents else None,
        "retries": sum(1 for entry in logs if entry["event"] == "central_retry"),
    }


async def _run_fleet(sim: CentralSim, fleet: list[_SimAgent], capacity_rps: float, limit_s: float) -> float:
    """Start every agent with the line down, bring it back, wait until each is done; returns when it came back."""
    try:
        for agent in fleet:
            await agent.client.start()
            agent.monitor.start()
        async with asyncio.timeout(60):
            await _until(_true(lambda: all(a.monitor.up is False for a in fleet)), 0.05)
        sim.requests.clear()
        sim.capacity_rps = capacity_rps
        line_back = time.monotonic()
        await sim.set_up(True)
        try:
            async with asyncio.timeout(limit_s):
                await _until(_true(lambda: all(a.reported_at is not None or a.failed for a in fleet)), 0.1)
        except TimeoutError:
            pass  # the figures say how many were not done
    finally:
        for agent in fleet:
            await agent.monitor.stop()
            if agent.run is not None:
                agent.run.cancel()
                await asyncio.gather(agent.run, return_exceptions=True)
            await agent.client.close()
        await sim.stop()
    return line_back
