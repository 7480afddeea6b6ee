"""The alert outbox migration keeps what an older agent wrote: sent stays sent, waiting mails keep waiting."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path

from edge.store.db import connect_writer
from edge.store.migrations import latest_version, load_migrations, migrate


async def test_outbox_migration_up_and_down_on_old_rows(tmp_path: Path) -> None:
    """Up: sent mails are 'sent', waiting ones 'pending', critical groups' mails go to the critical list, the digest
    mark points at the last log line it covered. Down: a dead-lettered mail is not sent again by the older agent."""
    migrations = load_migrations()
    mine = next(m.version for m in migrations if m.name.endswith("_alert_outbox"))
    path = tmp_path / "edge.db"
    conn = await connect_writer(path)
    try:
        await migrate(conn, migrations, mine - 1)
        for sql in (
            "INSERT INTO alert_groups(key, type, subject, severity, state, notified, first_at, changed_at,"
            " last_sent_at) VALUES ('printer_offline:k', 'printer_offline', 'k', 'critical', 'firing', 'firing',"
            " 10, 10, 20)",
            "INSERT INTO alert_log(at, group_key, action) VALUES (15, 'printer_offline:k', 'digest')",
            "INSERT INTO alert_log(at, group_key, action) VALUES (50, 'printer_offline:k', 'digest')",
            "INSERT INTO meta(key, value) VALUES ('alerts_last_digest', '30.0')",
        ):
            await conn.execute(sql)
        for group_key, sent_at in (("printer_offline:k", 21.0), ("printer_offline:k", None), (None, None)):
            await conn.execute(
                "INSERT INTO alert_mails(group_key, kind, recipients, subject, text_body, html_body, created_at,"
                " next_attempt_at, sent_at) VALUES (?, 'firing', '[]', 's', 't', 'h', 20, 20, ?)",
                (group_key, sent_at),
            )
        await migrate(conn, migrations)
        rows = await conn.execute_fetchall("SELECT id, state, audience FROM alert_mails ORDER BY id")
        assert [tuple(r) for r in rows] == [(1, "sent", "critical"), (2, "pending", "critical"), (3, "pending", "to")]
        [(mark,)] = await conn.execute_fetchall("SELECT value FROM meta WHERE key = 'alerts_last_digest'")
        assert json.loads(mark) == {"at": 30.0, "log_id": 1}
        [(severity, mailed)] = await conn.execute_fetchall("SELECT notified_severity, mailed FROM alert_groups")
        assert (severity, mailed) == ("critical", "firing")
        await conn.execute("UPDATE alert_mails SET state = 'dead' WHERE id = 2")
        await migrate(conn, migrations, mine - 1)
        await migrate(conn, migrations)
    finally:
        await conn.close()

    def check_down_and_up() -> None:
        with sqlite3.connect(path) as check:
            assert check.execute("PRAGMA user_version").fetchone()[0] == latest_version(migrations)
            # down then up again: the dead mail came back as sent (not to be sent again), the waiting one still waits
            assert check.execute("SELECT id, state FROM alert_mails ORDER BY id").fetchall() == [
                (1, "sent"),
                (2, "sent"),
                (3, "pending"),
            ]

    await asyncio.to_thread(check_down_and_up)
