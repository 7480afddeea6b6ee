"""Recovery runs and what validation saw (recovery_runs, recovery_items) and the confirmed central cursor (meta)."""

from __future__ import annotations

import json
from collections.abc import Sequence

from edge.events import EventBus, RecoveryCompleted, RecoveryFailed
from edge.states import ACTIVE_RUN_STATES, ItemClass, RunState, RunTrigger
from edge.store.db import Database
from edge.store.meta import UPSERT_META
from edge.store.rows import RecoveryItem, RecoveryRun, RunItem

CURSOR_KEY = "central_cursor"

# Missing orders (or revisions: a higher one than stored) in the order the kitchen needs them: priority, then due time
# (none last), then creation.
_NEXT_MISSING = """
SELECT order_id, class, payload, json_extract(payload, '$.number') AS number, detail FROM recovery_items i
WHERE run_id = ? AND class = 'missing' AND NOT EXISTS (SELECT 1 FROM orders o WHERE o.id = i.order_id
  AND o.revision >= COALESCE(json_extract(i.payload, '$.revision'), 1))
ORDER BY priority DESC, due_ts IS NULL, due_ts, created_ts, order_id LIMIT ?
"""
_SAVE_ITEM = """
INSERT INTO recovery_items(run_id, order_id, class, payload, priority, due_ts, created_ts, detail)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
ON CONFLICT(run_id, order_id) DO UPDATE SET class = excluded.class, payload = excluded.payload,
    priority = excluded.priority, due_ts = excluded.due_ts, created_ts = excluded.created_ts, detail = excluded.detail
WHERE recovery_items.class NOT IN ('missing', 'conflict')
    OR COALESCE(json_extract(recovery_items.payload, '$.revision'), 1) <= ?9
"""
_NOT_STORED = """
SELECT COUNT(*) FROM recovery_items i
WHERE run_id = ? AND class != 'invalid' AND NOT EXISTS (SELECT 1 FROM seen_orders s WHERE s.id = i.order_id)
"""
# What the run stored is told by the order's revisions here, not by its source: an order an earlier run recovered is
# source 'recovery' too, and its change is a change. New orders: none of their revisions here is older than the one the
# run brought (apply_revision keeps the one replaced). Changes and cancels: revisions the run stored over an older one
# (of an order pushed, or stored by an earlier run).
_STORED = """
SELECT COUNT(*) FROM recovery_items i JOIN orders o ON o.id = i.order_id
WHERE i.run_id = ? AND i.class = 'missing' AND o.source = 'recovery' AND NOT EXISTS (
    SELECT 1 FROM order_revisions e
    WHERE e.order_id = i.order_id AND e.revision < COALESCE(json_extract(i.payload, '$.revision'), 1)
)
"""
_REVISED = """
SELECT COALESCE(SUM(r.status != 'cancelled'), 0), COALESCE(SUM(r.status = 'cancelled'), 0)
FROM recovery_items i JOIN orders o ON o.id = i.order_id
JOIN order_revisions r ON r.order_id = i.order_id AND r.revision = COALESCE(json_extract(i.payload, '$.revision'), 1)
WHERE i.run_id = ? AND i.class = 'missing' AND r.source = 'recovery'
    AND EXISTS (SELECT 1 FROM order_revisions e WHERE e.order_id = r.order_id AND e.revision < r.revision)
"""


def _close_phase(phases_json: str, now: float) -> str:
    """The phases list with the open phase (if any) given its end time."""
    phases = json.loads(phases_json)
    if phases and phases[-1]["finished_at"] is None:
        phases[-1]["finished_at"] = now
    return json.dumps(phases)


class RecoveryStore:
    def __init__(self, db: Database, *, bus: EventBus | None = None) -> None:
        """``bus``: hears how a run ended (RecoveryCompleted, RecoveryFailed) once that is committed."""
        self._db = db
        self._bus = bus if bus is not None else EventBus()  # nobody listens: a store used on its own

    # --- runs ---------------------------------------------------------------------------------

    async def active_runs(self) -> list[RecoveryRun]:
        rows = await self._db.fetchall(
            "SELECT * FROM recovery_runs WHERE state IN (SELECT value FROM json_each(?)) ORDER BY id",
            (json.dumps(ACTIVE_RUN_STATES),),
        )
        return [RecoveryRun.from_row(r) for r in rows]

    async def create_run(self, trigger: RunTrigger, now: float) -> int:
        """A new run starting from the confirmed cursor."""
        async with self._db.transaction() as conn:
            rows = list(await conn.execute_fetchall("SELECT value FROM meta WHERE key = ?", (CURSOR_KEY,)))
            cursor = await conn.execute(
                "INSERT INTO recovery_runs(trigger, since_cursor, created_at) VALUES (?, ?, ?)",
                (trigger, rows[0][0] if rows else "", now),
            )
            run_id = int(cursor.lastrowid or 0)
            await cursor.close()
        return run_id

    async def cursor(self) -> str:
        row = await self._db.fetchone("SELECT value FROM meta WHERE key = ?", (CURSOR_KEY,))
        return str(row[0]) if row else ""

    async def run(self, run_id: int) -> RecoveryRun | None:
        row = await self._db.fetchone("SELECT * FROM recovery_runs WHERE id = ?", (run_id,))
        return RecoveryRun.from_row(row) if row is not None else None

    async def runs(self, limit: int) -> list[RecoveryRun]:
        """Newest first."""
        rows = await self._db.fetchall("SELECT * FROM recovery_runs ORDER BY id DESC LIMIT ?", (limit,))
        return [RecoveryRun.from_row(r) for r in rows]

    async def last_run(self) -> RecoveryRun | None:
        runs = await self.runs(1)
        return runs[0] if runs else None

    async def mark_started(self, run_id: int, now: float) -> None:
        async with self._db.transaction() as conn:
            await conn.execute("UPDATE recovery_runs SET started_at = ? WHERE id = ?", (now, run_id))

    async def enter_phase(self, run_id: int, phase: RunState, now: float) -> None:
        async with self._db.transaction() as conn:
            rows = list(await conn.execute_fetchall("SELECT phases FROM recovery_runs WHERE id = ?", (run_id,)))
            phases = json.loads(_close_phase(rows[0][0], now))
            phases.append({"phase": phase, "started_at": now, "finished_at": None})
            await conn.execute(
                "UPDATE recovery_runs SET state = ?, phases = ? WHERE id = ?", (phase, json.dumps(phases), run_id)
            )

    async def fail(
        self, run_id: int, phase: RunState, error: str, now: float, *, retry_in_s: float | None = None
    ) -> None:
        """End a run as failed in ``phase`` (RecoveryFailed): the cursor stays where it was. ``retry_in_s``: the next
        run the agent planned itself, so soon."""
        await self._finish(run_id, RunState.FAILED, phase, error, now, retry_in_s=retry_in_s)

    async def cancel(self, run_id: int, phase: RunState, now: float) -> None:
        """End a run as cancelled by a person: the cursor stays where it was."""
        await self._finish(run_id, RunState.CANCELLED, phase, "cancelled by request", now)

    async def supersede(self, run_id: int, by: int, now: float) -> None:
        """A run left active beside a newer one (only a bug could leave it): failed, without an alert."""
        await self._finish(run_id, RunState.FAILED, None, f"superseded by run {by}", now)

    async def _finish(
        self,
        run_id: int,
        state: RunState,
        phase: RunState | None,
        error: str,
        now: float,
        *,
        retry_in_s: float | None = None,
    ) -> None:
        counts = await self.counts(run_id)
        async with self._db.publishing(self._bus) as (conn, events):
            rows = list(await conn.execute_fetchall("SELECT phases, errors FROM recovery_runs WHERE id = ?", (run_id,)))
            errors = [*json.loads(rows[0]["errors"]), f"{phase}: {error}" if phase else error]
            await conn.execute(
                "UPDATE recovery_runs SET state = ?, finished_at = ?, counts = ?, errors = ?, phases = ? WHERE id = ?",
                (state, now, json.dumps(counts), json.dumps(errors), _close_phase(rows[0]["phases"], now), run_id),
            )
            if state == RunState.FAILED and phase is not None:
                events.append(RecoveryFailed(run_id=run_id, phase=phase, error=error, retry_in_s=retry_in_s))

    async def complete(self, run_id: int, counts: dict[str, int], now: float, *, duration_s: float) -> None:
        """Store the run's next cursor as the confirmed one and close the run, in one transaction
        (RecoveryCompleted, with this process's ``duration_s`` of it)."""
        async with self._db.publishing(self._bus) as (conn, events):
            [run] = await conn.execute_fetchall(
                "SELECT next_cursor, since_cursor, phases FROM recovery_runs WHERE id = ?", (run_id,)
            )
            await conn.execute(
                UPSERT_META,
                (CURSOR_KEY, run["next_cursor"] if run["next_cursor"] is not None else run["since_cursor"]),
            )
            await conn.execute(
                "UPDATE recovery_runs SET state = 'completed', finished_at = ?, counts = ?, phases = ? WHERE id = ?",
                (now, json.dumps(counts), _close_phase(run["phases"], now), run_id),
            )
            events.append(RecoveryCompleted(run_id=run_id, counts=counts, duration_s=duration_s))

    # --- items --------------------------------------------------------------------------------

    async def since_cursor(self, run_id: int) -> str:
        row = await self._db.fetchone("SELECT since_cursor FROM recovery_runs WHERE id = ?", (run_id,))
        return str(row[0]) if row else ""

    async def clear_items(self, run_id: int) -> None:
        async with self._db.transaction() as conn:
            await conn.execute("DELETE FROM recovery_items WHERE run_id = ?", (run_id,))

    async def save_page(self, run_id: int, items: Sequence[RecoveryItem], next_cursor: str) -> None:
        """A page's classification and where the page ended, together. An order listed again in the run replaces what
        the run holds of it, unless that is a newer version to store (missing, or a conflict): a backend that lists an
        old version after the new one (on a later page, or later on the same) must not undo a cancel or a change."""
        async with self._db.transaction() as conn:
            await conn.executemany(
                _SAVE_ITEM,
                [
                    (run_id, i.order_id, i.cls, i.payload, i.priority, i.due_ts, i.created_ts, i.detail, i.revision)
                    for i in items
                ],
            )
            await conn.execute("UPDATE recovery_runs SET next_cursor = ? WHERE id = ?", (next_cursor, run_id))

    async def next_missing(self, run_id: int, limit: int) -> list[RunItem]:
        return [RunItem.from_row(r) for r in await self._db.fetchall(_NEXT_MISSING, (run_id, limit))]

    async def items(self, run_id: int, cls: ItemClass) -> list[RunItem]:
        rows = await self._db.fetchall(
            "SELECT order_id, class, detail, payload, json_extract(payload, '$.number') AS number FROM recovery_items"
            " WHERE run_id = ? AND class = ? ORDER BY order_id LIMIT 1000",
            (run_id, cls),
        )
        return [RunItem.from_row(r) for r in rows]

    async def conflict_numbers(self, run_id: int, limit: int) -> list[str]:
        """Order numbers (the id when the order is gone) of a run's conflicts, as the kitchen knows them."""
        rows = await self._db.fetchall(
            "SELECT COALESCE(o.number, i.order_id) FROM recovery_items i LEFT JOIN orders o ON o.id = i.order_id"
            " WHERE i.run_id = ? AND i.class = 'conflict' ORDER BY i.order_id LIMIT ?",
            (run_id, limit),
        )
        return [row[0] for row in rows]

    async def reclassify(self, run_id: int, cls: ItemClass, changes: Sequence[tuple[str, str | None]]) -> None:
        """(order id, detail) pairs that processing found to be ``cls`` after all."""
        async with self._db.transaction() as conn:
            await conn.executemany(
                "UPDATE recovery_items SET class = ?, detail = COALESCE(?, detail) WHERE run_id = ? AND order_id = ?",
                [(cls, detail, run_id, order_id) for order_id, detail in changes],
            )

    async def not_stored(self, run_id: int) -> int:
        """Orders validation saw (invalid ones aside) that were never stored (stored ones may be purged since)."""
        row = await self._db.fetchone(_NOT_STORED, (run_id,))
        return int(row[0]) if row else 0

    async def counts(self, run_id: int) -> dict[str, int]:
        rows = await self._db.fetchall(
            "SELECT class, COUNT(*) FROM recovery_items WHERE run_id = ? GROUP BY class", (run_id,)
        )
        stored = await self._db.fetchone(_STORED, (run_id,))
        revised = await self._db.fetchone(_REVISED, (run_id,))
        changed, cancelled = revised if revised else (0, 0)
        return (
            {c.value: 0 for c in ItemClass}
            | {r[0]: r[1] for r in rows}
            | {"stored": stored[0] if stored else 0, "changed": changed, "cancelled": cancelled}
        )
