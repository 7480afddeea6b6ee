"""kill -9 during recovery processing: the restarted agent resumes the same run from its persisted state."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import sqlite3
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from edge.printing.decode import decode
from edge.sim.central import CentralSim
from edge.sim.ports import free_port
from edge.sim.printer import SimPrinter
from edge.sim.process import AgentProcess, write_config
from tests.helpers import TOKEN, db_rows, key_mark
from tests.sync.conftest import CENTRAL_TOKEN, STORE

MISSED = 200


def _none(row: tuple[Any, ...]) -> bool:
    return row[0] == 0


# Slow enough processing to be caught in the middle: batches of 5, each followed by one outbox POST at 25 requests/s.
CENTRAL = """
[central]
url = "{url}"
token = "{token}"
rate_limit_rps = 25.0
batch_size = 5
page_size = 100
start_jitter_s = 0.0
schedule_interval_s = 900.0
probe_max_s = 0.2
retry_base_s = 0.05
retry_max_s = 0.5
"""


async def _poll(
    db: Path,
    sql: str,
    done: Callable[[tuple[Any, ...]], bool],
    timeout: float,  # noqa: ASYNC109
    *params: Any,
) -> None:
    async with asyncio.timeout(timeout):
        while True:
            try:
                row = (await db_rows(db, sql, *params))[0]
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
    async with _killed_while_storing(central, tmp_path) as (agent, db, _kitchen, _front):
        [(run_id,)] = await db_rows(db, "SELECT id FROM recovery_runs")
        interrupted_at = (await db_rows(db, "SELECT COUNT(*) FROM orders"))[0][0]
        assert 0 < interrupted_at < MISSED, interrupted_at

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
        mark = await key_mark(db)
        printed_keys = {f"{o}:printed:{j}{mark}" for j, o in await db_rows(db, "SELECT id, order_id FROM print_jobs")}
        await central.wait_for(
            lambda: {e["idempotency_key"] for e in central.events_of("printed")} == printed_keys, timeout=20
        )
        assert await agent.terminate() == 0


async def test_orders_central_changed_while_the_agent_was_down_are_stored_as_changed_after_a_sigkill(
    central: CentralSim, tmp_path: Path
) -> None:
    """SIGKILL while recovery stores 200 missed orders; before the restart central cancels the last one (revision 2)
    and changes the one before to 7x. The restarted agent validates the run again before storing the rest: the
    cancelled order is stored cancelled and prints nothing (it is not cooked), the changed one prints once, 7x; the
    start-up trigger joins that run, and no run waits for the schedule (15 min). Before: the resumed run stored both
    at revision 1 from the payloads validated before the kill, printed both full tickets, the start-up trigger joined
    it, and no STORNO or change followed."""
    orders = central.create_orders(MISSED, prefix="k")
    gone, changed = orders[-1], orders[-2]
    async with _killed_while_storing(central, tmp_path) as (agent, db, kitchen, _):
        assert await db_rows(db, "SELECT COUNT(*) FROM orders WHERE id IN (?, ?)", gone["id"], changed["id"]) == [(0,)]
        central.add_orders(
            [
                gone | {"revision": 2, "status": "cancelled", "cancel_reason": "Kunde storniert"},
                changed | {"revision": 2, "items": [changed["items"][0] | {"qty": 7}, *changed["items"][1:]]},
            ]
        )

        await agent.start()
        await _poll(db, "SELECT COUNT(*) FROM orders", lambda r: r[0] == MISSED, timeout=40)
        await _poll(
            db,
            "SELECT COUNT(*) FROM recovery_runs WHERE state NOT IN ('completed', 'failed')",
            lambda r: r[0] == 0,
            timeout=20,
        )
        jobs = (await db_rows(db, "SELECT COUNT(*) FROM print_jobs"))[0][0]
        await _poll(db, "SELECT COUNT(*) FROM print_jobs WHERE state = 'printed'", lambda r: r[0] == jobs, timeout=40)
        await asyncio.sleep(0.5)  # room for a wrong print
        assert await db_rows(db, "SELECT id, state FROM recovery_runs") == [(1, "completed")]
        assert await db_rows(
            db, "SELECT id, revision, status FROM orders WHERE id IN (?, ?) ORDER BY id", gone["id"], changed["id"]
        ) == [(changed["id"], 2, "open"), (gone["id"], 2, "cancelled")]
        assert await db_rows(db, "SELECT COUNT(*) FROM print_jobs WHERE order_id = ?", gone["id"]) == [(0,)]
        tickets = [decode(paper).text for paper in kitchen.printed]
        assert not [t for t in tickets if gone["number"] in t], "the cancelled order printed"
        [ticket] = [t for t in tickets if changed["number"] in t]
        assert f"7x {changed['items'][0]['name']}" in ticket, ticket
        assert await agent.terminate() == 0


async def test_a_run_resumed_while_central_does_not_answer_stores_what_it_saved_and_a_fresh_run_follows(
    central: CentralSim, tmp_path: Path
) -> None:
    """The same SIGKILL, but central (which cancelled the last order meanwhile) does not answer when the agent comes
    back: the resumed run cannot validate again, so it stores what it validated before the kill (the orders are not
    held back by central's outage) and completes; once central answers, a fresh run follows at once (not after the
    15 min schedule) and prints the cancelled order's STORNO right after its ticket."""
    orders = central.create_orders(MISSED, prefix="k")
    gone = orders[-1]
    async with _killed_while_storing(central, tmp_path) as (agent, db, kitchen, front):
        central.add_orders([gone | {"revision": 2, "status": "cancelled", "cancel_reason": "Kunde storniert"}])
        await central.set_up(False)

        await agent.start()
        await _poll(db, "SELECT state FROM recovery_runs WHERE id = 1", lambda r: r[0] == "completed", timeout=40)
        assert await db_rows(db, "SELECT COUNT(*) FROM orders") == [(MISSED,)]
        assert await db_rows(db, "SELECT revision, status FROM orders WHERE id = ?", gone["id"]) == [(1, "open")]
        unprinted = "SELECT COUNT(*) FROM print_jobs WHERE order_id = ? AND state != 'printed'"
        await _poll(db, unprinted, _none, 40, gone["id"])  # cooking: a cancel now needs a STORNO
        await central.set_up(True)
        await _poll(
            db, "SELECT revision, status FROM orders WHERE id = ?", lambda r: r == (2, "cancelled"), 20, gone["id"]
        )
        await _poll(db, "SELECT COUNT(*) FROM recovery_runs WHERE state = 'completed'", lambda r: r[0] == 2, 20)
        await _poll(db, "SELECT COUNT(*) FROM print_jobs WHERE state NOT IN ('printed', 'discarded')", _none, 40)
        papers = [decode(paper).text for printer in (kitchen, front) for paper in printer.printed]
        storno = ["STORNO" in t for t in papers if gone["number"] in t and "Station:" in t]
        assert storno and storno == sorted(storno) and storno.count(True) == storno.count(False), storno
        # A new box's own change: nothing before it printed the STORNO (its tickets were COPY: created before it)
        assert not [t for t in papers if gone["number"] in t and "STORNO" in t and "KOPIE / COPY" in t], papers
        assert [r[0] for r in await db_rows(db, "SELECT state FROM recovery_runs ORDER BY id")] == ["completed"] * 2
        assert await agent.terminate() == 0


@contextlib.asynccontextmanager
async def _killed_while_storing(
    central: CentralSim, tmp_path: Path
) -> AsyncIterator[tuple[AgentProcess, Path, SimPrinter, SimPrinter]]:
    """An agent SIGKILLed while its recovery stores central's missed orders (30 of them stored, the run left in
    processing; the schedule at 900 s, so no run comes but the ones a test asks for); (agent, its database, kitchen,
    front), all stopped at the end."""
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
        assert (await db_rows(db, "SELECT state FROM recovery_runs")) == [("processing",)]
        yield agent, db, kitchen, front
    finally:
        if agent.proc and agent.proc.returncode is None:
            await agent.kill()
        await kitchen.stop()
        await front.stop()
