"""`edge migrate`: the database file moved to a schema version, without a running agent."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from pathlib import Path

from edge.store import migrations
from edge.store.db import connect_writer, failure
from edge.store.files import schema_of_file
from edge.store.identity import record_store


async def migrate_file(path: Path, target: int | None, *, store_id: str, now: float) -> tuple[int, int]:
    """Moves the file's schema to ``target`` (latest when None): (version before, version after). One transaction a
    step: a failure (a full card) keeps the last whole step, raised as a StoreError that says why in one line."""
    if target is not None and await asyncio.to_thread(schema_of_file, path, at_rest=True) == target:
        # Nothing to move (upgrade.sh's rollback after a climb that failed whole): nothing written, so also on a card
        # too full to open the database for writing
        return target, target
    conn = await connect_writer(path)
    try:
        versions = await migrations.migrate(conn, migrations.load_migrations(), target)
        # Recorded now, not only at the agent's start: a backup taken before that start still names its store.
        await record_store(conn, store_id, now=now, db_path=path)
        return versions
    except sqlite3.Error as err:
        raise failure(path, err) from None
    finally:
        with contextlib.suppress(sqlite3.Error):
            await conn.close()
