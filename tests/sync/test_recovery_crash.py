"""kill -9 during recovery processing: the restarted agent resumes the same run from its persisted state."""

from __future__ import annotations

import asyncio
import collections
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edge.sim.central import CentralSim
from edge.sim.ports import free_port
from edge.sim.printer import SimPrinter
from edge.sim.process import AgentProcess, write_config
from tests.helpers import TOKEN, db_rows
from tests.sync.conftest import CENTRAL_TOKEN, STORE

MISSED = 200

# Slow enough processing to be caught in the middle: batches of 5, each followed by one outbox POST at 25 requests/s.
CENTRAL = """
[central]
url = "{url}"
token = "{token}"
rate_limit_rps = 25.0
batch_size = 5
page_size = 100
start_jitter_s = 0.0
schedule_interval_s = 0.0
probe_max_s = 0.2
retry_base_s = 0.05
retry_max_s = 0.5
"""


async def _poll(db: Path, sql: str, done: Callable[[tuple[Any, ...]], bool], timeout: float) -> None:  # noqa: ASYNC109
    async with asyncio.timeout(timeout):
        while True:
            try:
                row = (await db_rows(db, sql))[0]
                if done(row):
                    return
            except sqlite3.OperationalError:  # the schema is not there yet on the first start
                pass
            await asyncio.sleep(0.01)


async def test_sigkill_during_processing_resumes_the_run_without_duplicates(
    central: CentralSim, tmp_path: Path
) -> None:
    """SIGKILL while recovery stores orders: after restart the same run finishes, every missed order is stored once with
    one set of jobs, every ticket is printed, and the backend gets every `received` event."""
    orders = central.create_orders(MISSED, prefix="k")
    kitchen, front = SimPrinter("kitchen"), SimPrinter("front")
    await kitchen.start()
    await front.start()
    port, data_dir = free_port(), tmp_path / "data"
    config = write_config(
        tmp_path / "edge.toml",
        data_dir=data_dir,
        api_port=port,
        token=TOKEN,
        printers={"kitchen": kitchen.port, "front": front.port},
        store_id=STORE,
        extra=CENTRAL.format(url=central.url, token=CENTRAL_TOKEN),
    )
    db = data_dir / "edge.db"
    agent = AgentProcess(config, port, tmp_path / "agent.log")
    try:
        await agent.start()
        await _poll(db, "SELECT COUNT(*) FROM orders", lambda r: r[0] >= 30, timeout=30)
        await agent.kill()
        [(state, run_id)] = await db_rows(db, "SELECT state, id FROM recovery_runs")
        interrupted_at = (await db_rows(db, "SELECT COUNT(*) FROM orders"))[0][0]
        assert state == "processing" and 0 < interrupted_at < MISSED, (state, interrupted_at)

        await agent.start()
        await _poll(
            db, "SELECT state FROM recovery_runs WHERE id = 1", lambda r: r[0] in ("completed", "failed"), timeout=40
        )
        assert await db_rows(db, "SELECT id, state FROM recovery_runs") == [
            (run_id, "completed")
        ]  # resumed, not a second run
        assert await db_rows(db, "SELECT COUNT(*), COUNT(DISTINCT id) FROM orders") == [(MISSED, MISSED)]
        keys = collections.Counter(
            r[0]
            for r in await db_rows(db, "SELECT order_id || ':' || kind || ':' || IFNULL(station, '-') FROM print_jobs")
        )
        assert max(keys.values()) == 1  # one job per ticket: nothing was routed twice
        jobs = sum(keys.values())
        await _poll(db, "SELECT COUNT(*) FROM print_jobs WHERE state = 'printed'", lambda r: r[0] == jobs, timeout=40)
        await central.wait_for(
            lambda: {e["order_id"] for e in central.events_of("received")} == {o["id"] for o in orders}, timeout=20
        )
        printed_keys = {f"{o}:printed:{j}" for j, o in await db_rows(db, "SELECT id, order_id FROM print_jobs")}
        await central.wait_for(
            lambda: {e["idempotency_key"] for e in central.events_of("printed")} == printed_keys, timeout=20
        )
        assert await agent.terminate() == 0
    finally:
        if agent.proc and agent.proc.returncode is None:
            await agent.kill()
        await kitchen.stop()
        await front.stop()
