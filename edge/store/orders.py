"""Orders table: group-committed inserts (order + print jobs + outbox row in one transaction) and lookups."""

from __future__ import annotations

import asyncio
import dataclasses

import aiosqlite

from edge.clock import SYSTEM_CLOCK, Clock
from edge.orders import JobPlan, Order
from edge.states import InsertOutcome, OrderSource, StatusEvent
from edge.store.db import Database
from edge.store.outbox import add_outbox, outbox_row
from edge.store.rows import StoredOrder

# Enough to share one fsync among a burst of concurrent pushes, small enough to keep a transaction short.
MAX_GROUP = 256


@dataclasses.dataclass(frozen=True)
class NewOrder:
    order: Order
    payload: str  # canonical JSON as received
    content_hash: str
    plans: tuple[JobPlan, ...]
    source: OrderSource = OrderSource.PUSH


@dataclasses.dataclass(frozen=True)
class InsertResult:
    order_id: str
    outcome: InsertOutcome
    job_ids: tuple[int, ...] = ()


def job_key(order_id: str, kind: str, station: str | None, sequence: int) -> str:
    return f"{order_id}:{kind}:{station or '-'}:{sequence}"


def _known_sql(count: int) -> str:
    """Content hash by id of what is stored, and of what was stored once and purged since (seen_orders).

    Parameters: the ids twice. A stored order's row comes last, so it wins in a dict."""
    marks = ",".join("?" * count)
    return (
        f"SELECT id, content_hash FROM seen_orders WHERE id IN ({marks})"
        f" UNION ALL SELECT id, content_hash FROM orders WHERE id IN ({marks})"
    )


async def insert_batch(conn: aiosqlite.Connection, batch: list[NewOrder], now: float) -> list[InsertResult]:
    """Classify each order against what is stored, insert the new ones with their jobs. Runs inside a transaction."""
    ids = sorted({n.order.id for n in batch})
    placeholders = ",".join("?" * len(ids))
    known = {row[0]: row[1] for row in await conn.execute_fetchall(_known_sql(len(ids)), ids + ids)}
    outcomes: list[InsertOutcome] = []
    fresh: list[NewOrder] = []
    for new in batch:
        stored_hash = known.get(new.order.id)
        if stored_hash is None:
            known[new.order.id] = new.content_hash  # a second copy later in the same batch is a duplicate
            fresh.append(new)
            outcomes.append(InsertOutcome.STORED)
        else:
            outcomes.append(InsertOutcome.DUPLICATE if stored_hash == new.content_hash else InsertOutcome.CONFLICT)
    if fresh:
        await conn.executemany(
            "INSERT INTO orders(id, number, content_hash, payload, channel, priority, created_at, due_at, received_at,"
            " source) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    n.order.id,
                    n.order.number,
                    n.content_hash,
                    n.payload,
                    n.order.channel,
                    n.order.priority,
                    n.order.created_at.isoformat(),
                    n.order.fulfilment.due_at.isoformat() if n.order.fulfilment.due_at else None,
                    now,
                    n.source,
                )
                for n in fresh
            ],
        )
        await conn.executemany(
            "INSERT INTO print_jobs(order_id, kind, station, printer, priority, created_at, idempotency_key)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    n.order.id,
                    p.kind,
                    p.station,
                    p.printer,
                    n.order.priority,
                    now,
                    job_key(n.order.id, p.kind, p.station, 0),
                )
                for n in fresh
                for p in n.plans
            ],
        )
        await add_outbox(
            conn,
            [
                outbox_row(n.order.id, StatusEvent.RECEIVED, "0", now, number=n.order.number, source=n.source)
                for n in fresh
            ],
        )
        # Remembered past retention; a box clock still in 1970 must not make the record look ancient.
        await conn.executemany(
            "INSERT OR IGNORE INTO seen_orders(id, content_hash, seen_at) VALUES (?, ?, ?)",
            [(n.order.id, n.content_hash, max(now, n.order.created_at.timestamp())) for n in fresh],
        )
    jobs: dict[str, list[int]] = {}
    for row in await conn.execute_fetchall(
        f"SELECT order_id, id FROM print_jobs WHERE order_id IN ({placeholders}) ORDER BY id", ids
    ):
        jobs.setdefault(row[0], []).append(row[1])
    return [
        InsertResult(order_id=n.order.id, outcome=o, job_ids=tuple(jobs.get(n.order.id, ())))
        for n, o in zip(batch, outcomes, strict=True)
    ]


class OrderStore:
    def __init__(self, db: Database, *, clock: Clock = SYSTEM_CLOCK) -> None:
        self._db = db
        self._clock = clock
        self._pending: list[tuple[NewOrder, asyncio.Future[InsertResult]]] = []
        self._scheduled = False  # a batch waits for the writer and will take what is pending then
        self._batches: set[asyncio.Task[None]] = set()

    async def insert(self, new: NewOrder) -> InsertResult:
        """Store one order durably. Concurrent callers share one transaction and one fsync (group commit)."""
        future: asyncio.Future[InsertResult] = asyncio.get_running_loop().create_future()
        self._pending.append((new, future))
        self._schedule()
        return await future

    async def insert_many(self, batch: list[NewOrder]) -> list[InsertResult]:
        """One transaction for a whole batch (recovery)."""
        return await self._db.write(lambda conn: insert_batch(conn, batch, self._clock.wall()))

    def _schedule(self) -> None:
        if not self._scheduled:
            self._scheduled = True
            task = asyncio.create_task(self._write_batch(), name="store-orders")
            self._batches.add(task)
            task.add_done_callback(self._batches.discard)

    async def _write_batch(self) -> None:
        """Insert every order pending once the writer is ours: those that came while it was busy share this batch.
        Orders arriving meanwhile start the next batch, which commits while this one's fsync runs (Database._sync)."""
        group: list[tuple[NewOrder, asyncio.Future[InsertResult]]] = []
        try:
            async with self._db.transaction() as conn:
                group, self._pending = self._pending[:MAX_GROUP], self._pending[MAX_GROUP:]
                self._scheduled = False
                if self._pending:
                    self._schedule()
                results = await insert_batch(conn, [n for n, _ in group], self._clock.wall())
        except Exception as err:  # every waiter learns the commit failed; none is told "stored"
            if not group:  # the writer failed before this batch took its orders
                group, self._pending, self._scheduled = self._pending, [], False
            for _, future in group:
                if not future.done():
                    future.set_exception(err)
            return
        for (_, future), result in zip(group, results, strict=True):
            if not future.done():
                future.set_result(result)

    async def known_hashes(self, ids: list[str]) -> dict[str, str]:
        """Content hash by order id, for the ids stored now or once (purged since, see seen_orders)."""
        if not ids:
            return {}
        rows = await self._db.fetchall(_known_sql(len(ids)), tuple(ids + ids))
        return {r[0]: r[1] for r in rows}

    async def payloads(self, ids: list[str]) -> dict[str, str]:
        """The stored JSON by order id, for the ids that are stored."""
        if not ids:
            return {}
        marks = ",".join("?" * len(ids))
        rows = await self._db.fetchall(f"SELECT id, payload FROM orders WHERE id IN ({marks})", tuple(ids))
        return {r[0]: r[1] for r in rows}

    async def get(self, order_id: str) -> StoredOrder | None:
        row = await self._db.fetchone("SELECT * FROM orders WHERE id = ?", (order_id,))
        return StoredOrder.from_row(row) if row is not None else None

    async def count(self, *, source: OrderSource | None = None) -> int:
        """Orders stored (from ``source`` only, if given)."""
        row = await self._db.fetchone("SELECT COUNT(*) FROM orders WHERE ?1 IS NULL OR source = ?1", (source,))
        return int(row[0]) if row else 0

    async def recent(self, limit: int = 20) -> list[StoredOrder]:
        rows = await self._db.fetchall("SELECT * FROM orders ORDER BY received_at DESC, rowid DESC LIMIT ?", (limit,))
        return [StoredOrder.from_row(r) for r in rows]
