"""edge.db-wal removed while the agent runs (a technician's careless rm in the data directory): SQLite goes on
writing to the removed file through its descriptor, and the agent's fsync by name finds nothing."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from edge.sim.orders import make_order
from edge.sim.printer import SimPrinter
from tests.helpers import agent_process, api_client, db_rows, eventually, fresh, post


@pytest.mark.slow(seconds=6)
async def test_an_order_answered_after_the_wal_was_removed_is_in_the_database_after_a_crash(
    tmp_path: Path, printers: dict[str, SimPrinter]
) -> None:
    """Order 1 is stored (in the WAL: not checkpointed) and printed; edge.db-wal is removed; order 2 is answered 503
    (its fsync finds no file), its retry is taken, order 3 is stored. Then SIGKILL (a power cut, the watchdog) and a
    start: all three orders are there and each printed once. Before stop 83 the retry of order 2 was answered 200
    "duplicate" and so was order 3's retry (storage83 F5): every commit went to the removed file only, and after the
    SIGKILL orders 1-3 were gone, nothing in the log saying so."""
    agent = agent_process(tmp_path, printers)
    db = tmp_path / "data" / "edge.db"
    orders = [fresh(make_order(n, print_receipt=False)) for n in (1, 2, 3)]
    await agent.start()
    try:
        async with api_client(agent.port) as api:
            assert (await post(api, orders[0]))[0] == 201
            await printers["kitchen"].wait_for_printed(1)
            db.with_name("edge.db-wal").unlink()  # the careless rm
            assert (await post(api, orders[1]))[0] == 503
            for order in orders[1:]:
                status, body = await post(api, order)
                if status == 503:  # the sender's retry, a moment later
                    await asyncio.sleep(0.3)
                    status, body = await post(api, order)
                assert status in (200, 201), body
            await printers["kitchen"].wait_for_printed(3)
        printed = "SELECT count(*) FROM print_jobs WHERE state = 'printed'"
        await eventually(lambda: db_rows(db, printed), lambda rows: rows[0][0] == 3, what="the tickets marked printed")
        await agent.kill()
        await agent.start()
        assert await db_rows(db, "SELECT count(*) FROM orders") == [(3,)]
        await asyncio.sleep(1.0)  # a ticket printed again by the start would be out by now
        numbers = [next(o["number"] for o in orders if o["number"].encode() in t) for t in printers["kitchen"].printed]
        assert sorted(numbers) == [o["number"] for o in orders]
    finally:
        await agent.close()


@pytest.mark.slow(seconds=6)
async def test_after_a_removed_wal_was_taken_over_another_programs_open_and_close_leaves_the_new_one_alone(
    tmp_path: Path, printers: dict[str, SimPrinter]
) -> None:
    """edge.db-wal removed once and taken over (an order 503, its retry taken); then another program opens edge.db
    and closes it (a technician's sqlite3, `edge status`, `edge backup`) three times, an order after each: the new
    WAL stays and every order is taken at once. Before (the verify83 probe, F4) the takeover's own fsync of edge.db
    (an open and close of the file) dropped the agent's POSIX locks on it, so each outside close found itself the last
    connection and deleted the WAL again: an order 503 and another takeover each time, until a restart."""
    agent = agent_process(tmp_path, printers)
    db = tmp_path / "data" / "edge.db"
    wal = db.with_name("edge.db-wal")
    await agent.start()
    try:
        async with api_client(agent.port) as api:
            assert (await post(api, fresh(make_order(1, print_receipt=False))))[0] == 201
            wal.unlink()  # the careless rm
            order = fresh(make_order(2, print_receipt=False))
            assert (await post(api, order))[0] == 503
            assert (await post(api, order))[0] in (200, 201)  # the retry, after the takeover
            for n in (3, 4, 5):
                await asyncio.to_thread(_open_and_close, db)
                assert wal.exists(), f"edge.db-wal deleted by an outside close, before order {n}"
                status, body = await post(api, fresh(make_order(n, print_receipt=False)))
                assert status == 201, body
    finally:
        await agent.close()


def _open_and_close(db: Path) -> None:
    conn = sqlite3.connect(db, timeout=5)
    try:
        conn.execute("SELECT COUNT(*) FROM orders").fetchone()
    finally:
        conn.close()
