"""Months of trading in bulk: old printed orders written straight into a database file, for the backup benchmark and
tests that need a database of a real size (pushing 200 MiB through the API would take minutes)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

_ROW_OVERHEAD = 400  # bytes per order beyond its payload: the other columns, one print job, the indexes


def add_printed_history(path: Path, *, megabytes: float, payload_bytes: int = 4000) -> int:
    """Adds about ``megabytes`` of old orders, each with one printed kitchen ticket; returns how many orders."""
    count = int(megabytes * 1024 * 1024 // (payload_bytes + _ROW_OVERHEAD))
    conn = sqlite3.connect(path, timeout=30)
    try:
        with conn:
            start = conn.execute("SELECT COUNT(*) FROM orders WHERE id LIKE 'history-%'").fetchone()[0]
            conn.execute(
                """
                WITH RECURSIVE n(i) AS (SELECT ?1 + 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?1 + ?2)
                INSERT INTO orders(id, number, content_hash, payload, channel, created_at, received_at)
                SELECT printf('history-%09d', i), printf('H-%d', i), 'history',
                       json_object('id', printf('history-%09d', i), 'note', hex(randomblob(?3))),
                       'web', '2026-01-01T00:00:00Z', 0
                FROM n
                """,
                (start, count, payload_bytes // 2),
            )
            conn.execute(
                """
                INSERT INTO print_jobs(order_id, kind, station, printer, state, created_at, printed_at, idempotency_key)
                SELECT id, 'ticket', 'kitchen', 'kitchen', 'printed', 0, 0, id || ':ticket:kitchen:0'
                FROM orders WHERE id > printf('history-%09d', ?1) AND id LIKE 'history-%'
                """,
                (start,),
            )
    finally:
        conn.close()
    return count
