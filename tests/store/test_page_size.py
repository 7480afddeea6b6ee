"""The database file's page size: small pages, because every commit writes each page it touched whole."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from edge.store.db import Database
from tests.helpers import db_rows


async def test_a_new_database_has_1_kib_pages(tmp_path: Path) -> None:
    """A database the agent creates writes 1 KiB pages (not SQLite's 4 KiB default): an order then costs the card about
    a third of the bytes. Read from a second connection."""
    db = await Database.open(tmp_path / "edge.db")
    await db.close()
    assert await db_rows(tmp_path / "edge.db", "PRAGMA page_size") == [(1024,)]


def _old_database(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA page_size = 4096")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.close()


async def test_an_existing_database_keeps_its_page_size_and_works(tmp_path: Path) -> None:
    """A database from an earlier release (4 KiB pages) is migrated and written as before; its page size stays."""
    path = tmp_path / "edge.db"
    await asyncio.to_thread(_old_database, path)
    db = await Database.open(path)
    try:
        async with db.transaction() as conn:
            await conn.execute("INSERT INTO meta(key, value) VALUES ('k', 'v')")
    finally:
        await db.close()
    assert await db_rows(path, "PRAGMA page_size") == [(4096,)]
    assert await db_rows(path, "SELECT value FROM meta WHERE key = 'k'") == [("v",)]
