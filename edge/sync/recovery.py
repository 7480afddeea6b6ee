"""Recovery after an outage in three persisted phases: validation → processing → completion; a crash resumes the run."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections.abc import Callable, Coroutine
from typing import Any

import aiosqlite
import structlog

from edge.config import CentralSettings
from edge.errors import CentralApiError, EdgeError, InvalidOrderError, NotFoundError
from edge.events import (
    CentralLinkChanged,
    EventBus,
    OrderConflicted,
    RecoveryCompleted,
    RecoveryFailed,
    RecoveryStarted,
)
from edge.orders.intake import OrderIntake
from edge.store import Database, OrderStore
from edge.sync.client import CentralClient, CentralRejectedError
from edge.sync.outbox import OutboxSender

log = structlog.get_logger()

ACTIVE_STATES = ("waiting", "validation", "processing", "completion")
CLASSES = ("missing", "present", "conflict", "invalid")
CURSOR_KEY = "central_cursor"

# Missing orders in the order the kitchen needs them: priority, then due time (none last), then creation.
_NEXT_MISSING = """
SELECT order_id, payload FROM recovery_items i
WHERE run_id = ? AND class = 'missing' AND NOT EXISTS (SELECT 1 FROM orders o WHERE o.id = i.order_id)
ORDER BY priority DESC, due_ts IS NULL, due_ts, created_ts, order_id LIMIT ?
"""
_NOT_STORED = """
SELECT COUNT(*) FROM recovery_items i
WHERE run_id = ? AND class != 'invalid' AND NOT EXISTS (SELECT 1 FROM orders o WHERE o.id = i.order_id)
"""


class RecoveryIncompleteError(EdgeError):
    """Completion found an order from validation that is still not stored: the cursor must not move."""


class _CancelRequested(Exception):
    """Raised at the run's next safe point (between pages and batches, never inside a transaction)."""


def run_json(row: aiosqlite.Row) -> dict[str, Any]:
    finished = row["finished_at"]
    return {
        "id": row["id"],
        "trigger": row["trigger"],
        "state": row["state"],
        "since_cursor": row["since_cursor"],
        "next_cursor": row["next_cursor"],
        "created_at": row["created_at"],
        "started_at": row["started_at"],
        "finished_at": finished,
        "duration_s": round(finished - row["started_at"], 3) if finished and row["started_at"] else None,
        "phases": json.loads(row["phases"]),
        "counts": json.loads(row["counts"]),
        "errors": json.loads(row["errors"]),
    }


class Recovery:
    """Runs one recovery at a time; a trigger while one is active joins it. See docs/central-api.md for the rules."""

    def __init__(
        self,
        *,
        db: Database,
        client: CentralClient,
        intake: OrderIntake,
        orders: OrderStore,
        outbox: OutboxSender,
        bus: EventBus,
        settings: CentralSettings,
        link_up: Callable[[], bool],
    ) -> None:
        self._db = db
        self._client = client
        self._intake = intake
        self._orders = orders
        self._outbox = outbox
        self._bus = bus
        self._settings = settings
        self._link_up = link_up
        self._task: asyncio.Task[None] | None = None
        self._cancel = asyncio.Event()
        self._active_id: int | None = None
        self._trigger_lock = asyncio.Lock()
        self._background: set[asyncio.Task[Any]] = set()
        self._link_was_down = False
        self._unsubscribe = bus.subscribe(self._on_link, CentralLinkChanged)

    # --- life cycle -------------------------------------------------------------------------

    async def resume(self) -> int | None:
        """At start-up: carry on with a run a crash or a stop interrupted, from its persisted phase."""
        rows = await self._db.fetchall(
            f"SELECT id, trigger, state FROM recovery_runs WHERE state IN {ACTIVE_STATES} ORDER BY id"
        )
        for stale in rows[:-1]:  # only one run is ever active; older ones can only be left over from a bug
            await self._finish(stale["id"], "failed", f"superseded by run {rows[-1]['id']}")
        if not rows:
            return None
        run = rows[-1]
        log.info("recovery_resuming", run_id=run["id"], phase=run["state"])
        async with self._trigger_lock:
            self._launch(run["id"], run["trigger"], run["state"], delay=0.0)
        return run["id"]

    async def stop(self) -> None:
        """Stop without marking anything: an interrupted run resumes at the next start."""
        self._unsubscribe()
        tasks = [*self._background, *([self._task] if self._task else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _on_link(self, event: CentralLinkChanged) -> None:
        if not event.up:
            self._link_was_down = True
            return
        trigger = "link_back" if self._link_was_down else "startup"
        self._link_was_down = False
        # Fleet manners: a thousand stores whose line returns together must not call at the same instant.
        self._spawn(self.trigger(trigger, delay=random.uniform(0, self._settings.start_jitter_s)))

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    @property
    def active_run(self) -> int | None:
        """The id of the run in progress (waiting for its start delay included), else None."""
        return self._active_id if self._task is not None and not self._task.done() else None

    # --- commands ---------------------------------------------------------------------------

    async def trigger(self, trigger: str, *, delay: float = 0.0) -> tuple[int, bool]:
        """Start a run, or join the active one: returns (run id, joined)."""
        async with self._trigger_lock:
            if self.active_run is not None:
                log.info("recovery_joined", run_id=self.active_run, trigger=trigger)
                return self.active_run, True
            async with self._db.transaction() as conn:
                rows = await conn.execute_fetchall("SELECT value FROM meta WHERE key = ?", (CURSOR_KEY,))
                cursor = await conn.execute(
                    "INSERT INTO recovery_runs(trigger, since_cursor, created_at) VALUES (?, ?, ?)",
                    (trigger, rows[0][0] if rows else "", time.time()),
                )
                run_id = int(cursor.lastrowid or 0)
                await cursor.close()
            if delay > 0:
                log.info("recovery_delayed", run_id=run_id, trigger=trigger, delay_s=round(delay, 2))
            self._launch(run_id, trigger, "waiting", delay=delay)
            return run_id, False

    async def cancel(self, run_id: int) -> bool:
        """Cancel the active run at its next page or batch; False when ``run_id`` is not the active run."""
        task = self._task
        if task is None or self.active_run != run_id:
            await self.run(run_id)  # NotFoundError for an unknown id
            return False
        self._cancel.set()
        await asyncio.gather(task, return_exceptions=True)
        return True

    # --- queries ----------------------------------------------------------------------------

    async def cursor(self) -> str:
        row = await self._db.fetchone("SELECT value FROM meta WHERE key = ?", (CURSOR_KEY,))
        return row[0] if row else ""

    async def run(self, run_id: int) -> dict[str, Any]:
        rows = await self._db.fetchall("SELECT * FROM recovery_runs WHERE id = ?", (run_id,))
        items = await self._db.fetchall(
            "SELECT order_id, class, detail FROM recovery_items WHERE run_id = ? AND class IN ('conflict', 'invalid') ORDER BY order_id LIMIT 1000",
            (run_id,),
        )
        if not rows:
            raise NotFoundError(f"recovery run {run_id} does not exist")
        return run_json(rows[0]) | {
            "conflicts": [i["order_id"] for i in items if i["class"] == "conflict"],
            "invalid": [{"order_id": i["order_id"], "reason": i["detail"]} for i in items if i["class"] == "invalid"],
        }

    async def runs(self, limit: int = 20) -> list[dict[str, Any]]:
        rows = await self._db.fetchall("SELECT * FROM recovery_runs ORDER BY id DESC LIMIT ?", (limit,))
        return [run_json(r) for r in rows]

    # --- the run ----------------------------------------------------------------------------

    def _launch(self, run_id: int, trigger: str, state: str, *, delay: float) -> None:
        self._active_id = run_id
        self._cancel = asyncio.Event()
        self._task = asyncio.create_task(self._execute(run_id, trigger, state, delay), name=f"recovery-{run_id}")

    async def _execute(self, run_id: int, trigger: str, state: str, delay: float) -> None:
        phase = state
        structlog.contextvars.bind_contextvars(recovery_run=run_id)
        try:
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._cancel.wait(), timeout=delay)
            self._checkpoint()
            if state == "waiting":
                await self._write("UPDATE recovery_runs SET started_at = ? WHERE id = ?", [(time.time(), run_id)])
            log.info("recovery_started", trigger=trigger, resumed=state != "waiting")
            self._bus.publish(RecoveryStarted(run_id=run_id, trigger=trigger))
            if phase in ("waiting", "validation"):
                phase = "validation"
                await self._validate(run_id)
            if phase in ("validation", "processing"):
                phase = "processing"
                await self._process(run_id)
            self._checkpoint()
            phase = "completion"
            await self._complete(run_id)
        except asyncio.CancelledError:
            log.info("recovery_interrupted", phase=phase, note="resumes at next start")
            raise
        except _CancelRequested:
            await self._finish(run_id, "cancelled", f"{phase}: cancelled by request")
            log.warning("recovery_cancelled", phase=phase)
        except Exception as err:  # any failure ends the run; the cursor did not move, the next run sees it all again
            error = str(err) or type(err).__name__
            await self._finish(run_id, "failed", f"{phase}: {error}")
            log.error("recovery_failed", phase=phase, error=error)
            self._bus.publish(RecoveryFailed(run_id=run_id, phase=phase, error=error))
        finally:
            structlog.contextvars.unbind_contextvars("recovery_run")

    async def _validate(self, run_id: int) -> None:
        """Page through the orders changed since the confirmed cursor and classify each; writes only the run's report."""
        await self._enter(run_id, "validation")
        async with self._db.transaction() as conn:
            await conn.execute(
                "DELETE FROM recovery_items WHERE run_id = ?", (run_id,)
            )  # a resumed validation starts over
        run = await self._db.fetchone("SELECT since_cursor FROM recovery_runs WHERE id = ?", (run_id,))
        cursor, pages = run["since_cursor"], 0
        while True:
            try:
                orders, next_cursor, more = await self._client.orders_since(cursor, self._settings.page_size)
            except CentralRejectedError as err:
                if err.status != 400 or not cursor or pages:
                    raise
                # The backend no longer knows our cursor (reset, restored): list from its beginning instead of failing
                # every run from now on. Safe: what is already here classifies as present and is not printed again.
                log.warning(
                    "recovery_cursor_rejected", cursor=cursor, error=str(err), action="validating from the beginning"
                )
                cursor = ""
                continue
            items = await self._classify(run_id, orders, page=pages)
            async with self._db.transaction() as conn:
                await conn.executemany(
                    "INSERT OR REPLACE INTO recovery_items(run_id, order_id, class, payload, priority, due_ts, created_ts, detail)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    items,
                )
                await conn.execute("UPDATE recovery_runs SET next_cursor = ? WHERE id = ?", (next_cursor, run_id))
            cursor, pages = next_cursor, pages + 1
            self._checkpoint()
            if not more or not orders:
                break
        log.info("recovery_validated", pages=pages, counts=await self._counts(run_id))

    async def _classify(self, run_id: int, orders: list[Any], *, page: int) -> list[tuple[Any, ...]]:
        ids = [o["id"] for o in orders if isinstance(o, dict) and isinstance(o.get("id"), str)]
        marks = ",".join("?" * len(ids))
        known = (
            {
                r[0]: r[1]
                for r in await self._db.fetchall(f"SELECT id, content_hash FROM orders WHERE id IN ({marks})", ids)
            }
            if ids
            else {}
        )
        items = []
        for n, payload in enumerate(orders):
            raw_id = payload.get("id") if isinstance(payload, dict) else None
            try:
                new = self._intake.router.prepare(payload, "recovery")
            except InvalidOrderError as err:
                order_id = raw_id if isinstance(raw_id, str) else f"(page {page} item {n})"
                log.error("recovery_invalid_order", order_id=order_id, field=err.field, reason=err.reason)
                items.append((run_id, order_id, "invalid", None, 0, None, None, f"{err.field}: {err.reason}"))
                continue
            order = new.order
            stored_hash = known.get(order.id)
            cls = "missing" if stored_hash is None else ("present" if stored_hash == new.content_hash else "conflict")
            due = order.fulfilment.due_at.timestamp() if order.fulfilment.due_at else None
            items.append(
                (
                    run_id,
                    order.id,
                    cls,
                    new.payload if cls == "missing" else None,
                    order.priority,
                    due,
                    order.created_at.timestamp(),
                    None,
                )
            )
        return items

    async def _process(self, run_id: int) -> None:
        """Store the missing orders batch by batch through the intake path; re-running stores nothing twice."""
        await self._enter(run_id, "processing")
        # The conflict rule: the order already here wins and is never reprinted; the backend's version is only reported.
        for row in await self._db.fetchall(
            "SELECT order_id FROM recovery_items WHERE run_id = ? AND class = 'conflict'", (run_id,)
        ):
            log.warning("recovery_conflict", order_id=row[0], rule="local order kept, not reprinted")
            self._bus.publish(OrderConflicted(order_id=row[0], source="recovery"))
        router, batches = self._intake.router, 0
        while rows := await self._db.fetchall(_NEXT_MISSING, (run_id, self._settings.batch_size)):
            self._checkpoint()
            batch, invalid = [], []
            for row in rows:
                try:
                    batch.append(router.prepare(json.loads(row["payload"]), "recovery"))
                except InvalidOrderError as err:  # routing changed since validation (e.g. a printer removed)
                    invalid.append((f"{err.field}: {err.reason}", run_id, row["order_id"]))
            if invalid:
                await self._write(
                    "UPDATE recovery_items SET class = 'invalid', detail = ? WHERE run_id = ? AND order_id = ?", invalid
                )
            if batch:
                results = await self._orders.insert_many(batch)
                for result, new in zip(results, batch):
                    self._intake.publish(result, new)  # OrderStored wakes the spools; a conflict raises OrderConflicted
                conflicts = [(run_id, r.order_id) for r in results if r.outcome == "conflict"]
                if conflicts:
                    await self._write(
                        "UPDATE recovery_items SET class = 'conflict' WHERE run_id = ? AND order_id = ?", conflicts
                    )
            batches += 1
            # One POST per batch tells the backend what arrived; it waits for the shared rate limiter,
            # so processing never outpaces the configured request rate. A failure only leaves rows pending.
            if self._link_up():
                try:
                    await self._outbox.send_once()
                except CentralApiError as err:
                    log.warning("recovery_outbox_send_failed", error=str(err))
        log.info("recovery_processed", batches=batches)

    async def _complete(self, run_id: int) -> None:
        """Verify, flush the outbox, then (only then) advance the cursor and write the summary."""
        await self._enter(run_id, "completion")
        [(not_stored,)] = await self._db.fetchall(_NOT_STORED, (run_id,))
        if not_stored:
            raise RecoveryIncompleteError(f"{not_stored} orders seen in validation are not stored locally")
        delivered = await self._outbox.flush()
        counts = await self._counts(run_id)
        now = time.time()
        async with self._db.transaction() as conn:
            run = (
                await conn.execute_fetchall(
                    "SELECT next_cursor, since_cursor, started_at, phases FROM recovery_runs WHERE id = ?", (run_id,)
                )
            )[0]
            await conn.execute(
                "INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                (CURSOR_KEY, run["next_cursor"] if run["next_cursor"] is not None else run["since_cursor"]),
            )
            await conn.execute(
                "UPDATE recovery_runs SET state = 'completed', finished_at = ?, counts = ?, phases = ? WHERE id = ?",
                (now, json.dumps(counts), _close_phase(run["phases"], now), run_id),
            )
        duration = now - (run["started_at"] or now)
        log.info("recovery_completed", counts=counts, duration_s=round(duration, 3), outbox_delivered=delivered)
        self._bus.publish(RecoveryCompleted(run_id=run_id, counts=counts, duration_s=duration))

    # --- bookkeeping ------------------------------------------------------------------------

    async def _counts(self, run_id: int) -> dict[str, int]:
        rows = await self._db.fetchall(
            "SELECT class, COUNT(*) FROM recovery_items WHERE run_id = ? GROUP BY class", (run_id,)
        )
        [(stored,)] = await self._db.fetchall(
            "SELECT COUNT(*) FROM recovery_items i JOIN orders o ON o.id = i.order_id"
            " WHERE i.run_id = ? AND i.class = 'missing' AND o.source = 'recovery'",
            (run_id,),
        )
        return {c: 0 for c in CLASSES} | {r[0]: r[1] for r in rows} | {"stored": stored}

    async def _enter(self, run_id: int, phase: str) -> None:
        now = time.time()
        async with self._db.transaction() as conn:
            rows = await conn.execute_fetchall("SELECT phases FROM recovery_runs WHERE id = ?", (run_id,))
            phases = json.loads(_close_phase(rows[0][0], now))
            phases.append({"phase": phase, "started_at": now, "finished_at": None})
            await conn.execute(
                "UPDATE recovery_runs SET state = ?, phases = ? WHERE id = ?", (phase, json.dumps(phases), run_id)
            )

    async def _finish(self, run_id: int, state: str, error: str) -> None:
        counts = await self._counts(run_id)
        now = time.time()
        async with self._db.transaction() as conn:
            rows = await conn.execute_fetchall("SELECT phases, errors FROM recovery_runs WHERE id = ?", (run_id,))
            errors = json.loads(rows[0]["errors"]) + [error]
            await conn.execute(
                "UPDATE recovery_runs SET state = ?, finished_at = ?, counts = ?, errors = ?, phases = ? WHERE id = ?",
                (state, now, json.dumps(counts), json.dumps(errors), _close_phase(rows[0]["phases"], now), run_id),
            )

    def _checkpoint(self) -> None:
        if self._cancel.is_set():
            raise _CancelRequested()

    async def _write(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        async with self._db.transaction() as conn:
            await conn.executemany(sql, rows)


def _close_phase(phases_json: str, now: float) -> str:
    """The phases list with the open phase (if any) given its end time."""
    phases = json.loads(phases_json)
    if phases and phases[-1]["finished_at"] is None:
        phases[-1]["finished_at"] = now
    return json.dumps(phases)
