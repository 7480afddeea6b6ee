"""Migrations: up, down and up again on a populated database; a newer schema is refused."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from edge.errors import SchemaTooNewError, StoreError
from edge.store.db import Database, connect_writer
from edge.store.migrations import latest_version, load_migrations, migrate
from tests.helpers import db_execute, db_rows


async def _tables(path: Path) -> set[str]:
    return {
        r[0]
        for r in await db_rows(path, "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")
    }


async def test_up_down_up_on_populated_database(tmp_path: Path) -> None:
    """Down drops the tables, up brings them back usable; user_version follows each step."""
    path = tmp_path / "edge.db"
    migrations = load_migrations()
    db = await Database.open(path)
    async with db.transaction() as conn:
        await conn.execute(
            "INSERT INTO orders(id, number, content_hash, payload, channel, created_at, received_at)"
            " VALUES ('o1', '1', 'h', '{}', 'web', 'x', 0)"
        )
    await db.close()
    assert {"orders", "print_jobs", "outbox", "meta"} <= await _tables(path)

    conn = await connect_writer(path)
    try:
        assert await migrate(conn, migrations, 0) == (latest_version(migrations), 0)
        assert not {"orders", "print_jobs"} & await _tables(path)
        assert await migrate(conn, migrations) == (0, latest_version(migrations))
    finally:
        await conn.close()

    def check_up_again() -> None:
        with sqlite3.connect(path) as check:
            assert check.execute("PRAGMA user_version").fetchone()[0] == latest_version(migrations)
            check.execute(
                "INSERT INTO orders(id, number, content_hash, payload, channel, created_at, received_at)"
                " VALUES ('o2', '2', 'h', '{}', 'web', 'x', 0)"
            )

    await asyncio.to_thread(check_up_again)


async def test_newer_schema_is_refused(tmp_path: Path) -> None:
    """A database written by a newer agent stops this one with a message saying what to do."""
    path = tmp_path / "edge.db"

    await db_execute(path, "PRAGMA user_version = 999")
    with pytest.raises(SchemaTooNewError, match=r"version 999.*newer agent"):
        await Database.open(path)


async def test_wal_and_full_sync(tmp_path: Path) -> None:
    """The durability pragmas are in force on the writer: WAL, and NORMAL because the Database fsyncs the WAL itself
    before a caller hears its write is done (tests/store/test_group_commit.py holds that fsync and sees the caller
    wait)."""
    db = await Database.open(tmp_path / "edge.db")
    try:
        async with db.transaction() as conn:
            mode = await conn.execute_fetchall("PRAGMA journal_mode")
            sync = await conn.execute_fetchall("PRAGMA synchronous")
        assert mode[0][0] == "wal"
        assert sync[0][0] == 1  # NORMAL, with Database._sync
    finally:
        await db.close()


def test_a_gap_in_the_numbers_is_refused(tmp_path: Path) -> None:
    """001 then 003: the missing 002 would be skipped for good on a database already at 3, so loading refuses."""
    for name in ("001_a.sql", "003_c.sql"):
        (tmp_path / name).write_text("-- migrate:up\nSELECT 1;\n-- migrate:down\nSELECT 1;\n", encoding="utf-8")
    with pytest.raises(StoreError, match=r"without gaps, found \[1, 3\]"):
        load_migrations(tmp_path)


async def test_a_climb_that_fails_half_way_leaves_the_version_it_started_from_whole(tmp_path: Path) -> None:
    """All the steps of a climb are one transaction: a step that fails after others succeeded takes them back with it
    (before: one transaction a step, and the database stayed at the last step that worked, half way)."""
    folder = tmp_path / "migrations"
    folder.mkdir()
    for migration in load_migrations()[:3]:
        (folder / f"{migration.name}.sql").write_text(
            f"-- migrate:up\n{migration.up}\n-- migrate:down\n{migration.down}\n"
        )
    (folder / "004_broken.sql").write_text(
        "-- migrate:up\nCREATE TABLE fine(x);\nALTER TABLE nowhere ADD y;\n-- migrate:down\n"
    )
    migrations = load_migrations(folder)
    path = tmp_path / "edge.db"
    conn = await connect_writer(path)
    try:
        assert await migrate(conn, migrations, 1) == (0, 1)
        before = await _tables(path)
        with pytest.raises(sqlite3.OperationalError, match="nowhere"):
            await migrate(conn, migrations)
        assert (await db_rows(path, "PRAGMA user_version"))[0][0] == 1
        assert await _tables(path) == before
        # Nothing is left open on the connection: the steps that work go up from there, and once more is nothing.
        assert await migrate(conn, migrations, 3) == (1, 3)
        assert await migrate(conn, migrations, 3) == (3, 3)
    finally:
        await conn.close()
