"""The writer connection: cancelling a write at any await never leaves a transaction open behind it."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from edge.errors import StoreDamagedError
from edge.store.db import Database
from tests.helpers import damage_table, db_rows


async def rows(path: Path, sql: str) -> list[tuple[object, ...]]:
    return await db_rows(path, sql)


async def write_two_rows(db: Database, key: str) -> None:
    async with db.transaction() as conn:
        await conn.execute("INSERT INTO meta(key, value) VALUES (?, 'half')", (key,))
        await conn.execute("UPDATE meta SET value = 'whole' WHERE key = ?", (key,))


async def test_a_write_cancelled_while_begin_waits_for_another_writer_leaves_the_connection_clean(
    tmp_path: Path,
) -> None:
    """Another process holds the write lock, so BEGIN IMMEDIATE waits on aiosqlite's thread; the task waiting for it is
    cancelled (as Agent.stop cancels the outbox). Once the other writer is done, the next write succeeds: no
    'cannot start a transaction within a transaction', no transaction left open."""
    path = tmp_path / "edge.db"
    db = await Database.open(path)
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=10)
    try:
        await asyncio.to_thread(other.execute, "BEGIN IMMEDIATE")
        task = asyncio.create_task(write_two_rows(db, "cancelled"))
        await asyncio.sleep(0.1)  # the task now waits for BEGIN IMMEDIATE on the connection's thread
        task.cancel()
        await asyncio.sleep(0.05)
        await asyncio.to_thread(other.execute, "COMMIT")
        await asyncio.gather(task, return_exceptions=True)
        await asyncio.wait_for(write_two_rows(db, "next"), timeout=5)
        assert await rows(path, "SELECT key, value FROM meta WHERE key IN ('cancelled', 'next')") == [("next", "whole")]
    finally:
        other.close()
        await db.close()


async def test_cancelling_a_write_at_any_await_leaves_all_or_nothing_and_a_clean_connection(tmp_path: Path) -> None:
    """A write cancelled after 0, 1, 2 … loop turns (waiting for the lock, for BEGIN, inside, at COMMIT): each time the
    next write succeeds, and a second connection sees the cancelled write whole or not at all."""
    path = tmp_path / "edge.db"
    db = await Database.open(path)
    try:
        for turns in range(40):
            task = asyncio.create_task(write_two_rows(db, f"k{turns}"))
            for _ in range(turns):
                await asyncio.sleep(0)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await asyncio.wait_for(write_two_rows(db, f"after{turns}"), timeout=5)
        values = {v for (v,) in await rows(path, "SELECT value FROM meta WHERE key LIKE 'k%' OR key LIKE 'after%'")}
        assert values == {"whole"}
        assert len(await rows(path, "SELECT 1 FROM meta WHERE key LIKE 'after%'")) == 40
    finally:
        await db.close()


async def test_a_page_found_damaged_while_running_is_a_lasting_write_problem(tmp_path: Path) -> None:
    """A table's page turns to garbage under the running store (a torn write on the card) and is read for the first
    time: StoreDamagedError naming the file, the store's write problem set (the storage alert, /ready), and neither a
    later write that fits elsewhere nor the free-space probe clears it (before: a plain StoreError, no write problem,
    so /ready said ready)."""
    path = tmp_path / "edge.db"
    db = await Database.open(path)
    try:
        await asyncio.to_thread(damage_table, path, "print_jobs")
        with pytest.raises(StoreDamagedError, match=r"edge\.db is damaged"):
            await db.fetchall("SELECT * FROM print_jobs")
        assert db.write_problem is not None and "damaged" in db.write_problem
        await write_two_rows(db, "elsewhere")  # the meta table's pages are whole
        assert not await db.probe_space()
        assert db.write_problem is not None and "damaged" in db.write_problem
    finally:
        await db.close()
