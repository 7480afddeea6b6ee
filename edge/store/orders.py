"""Orders table: group-committed inserts (order + print jobs + outbox row in one transaction) and lookups."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import sqlite3
import threading
from collections.abc import Coroutine, Mapping
from typing import Any

import structlog

from edge.clock import SYSTEM_CLOCK, Clock, wait_real
from edge.errors import StoreError, StoreUnavailableError
from edge.orders import JobPlan, Order, parse_order
from edge.orders.model import Cancel, cancelled_payload, canonical_bytes, meaning_hash, revision_hash, same_cancel
from edge.states import InsertOutcome, OrderSource, OrderStatus, StatusEvent
from edge.store.cancels import PendingCancel, drop_pending_cancels, keep_cancel, pending_cancels
from edge.store.db import Database, DirectConnection, Writer
from edge.store.identity import FIRST_START_UNSETTLED_KEY, MAY_HAVE_PRINTED_KEY, acked_before_restore, read_mark
from edge.store.meta import UPSERT_META
from edge.store.outbox import add_outbox, outbox_row
from edge.store.revisions import (
    KnownOrder,
    Revision,
    apply_revision,
    first_state,
    known_from_rows,
    known_sql,
    revision_fields,
    stored_revision,
)
from edge.store.rows import StoredOrder

_MARK_SQL = "SELECT value FROM meta WHERE key = ?"
# Enough to share one fsync among a burst of concurrent pushes, small enough to keep a transaction short.
MAX_GROUP = 256
# A batch waits at most this long (and half an fsync) for the senders the last batch answered: see OrderStore.
GATHER_MAX_S = 0.010

log = structlog.get_logger()


@dataclasses.dataclass(frozen=True)
class NewOrder:
    order: Order
    payload: str  # canonical JSON as received
    content_hash: str  # of the JSON bytes: see revision_hash
    meaning_hash: str  # of the order it means: compared, see KnownOrder.same_content
    plans: tuple[JobPlan, ...]
    source: OrderSource = OrderSource.PUSH
    # For a revision: the printer serving each configured station now ("": receipts), every printer configured now,
    # and receipts.on_change.
    routes: Mapping[str, str] = dataclasses.field(default_factory=dict)
    printers: frozenset[str] = frozenset()
    reprint_receipt: bool = False
    # The cancel route's: the stored revision this cancelled one was built from. Another stored meanwhile, it is not
    # stored (InsertOutcome.MOVED) but built from that one again: a cancel never stands for items the order lost.
    based_on: int | None = None

    def revision(self) -> Revision:
        return Revision(
            self.order,
            self.payload,
            self.content_hash,
            self.meaning_hash,
            self.source,
            self.routes,
            self.printers,
            self.reprint_receipt,
        )

    def cancelled(self, pending: PendingCancel) -> Revision:
        """This order sent again as the cancel that came before it, as the cancel route would send it."""
        payload = cancelled_payload(json.loads(self.payload), pending.cancel)
        order = parse_order(payload)
        return Revision(
            order,
            canonical_bytes(payload).decode(),
            revision_hash(payload),
            meaning_hash(order),
            pending.source,
            self.routes,
            self.printers,
            self.reprint_receipt,
        )


@dataclasses.dataclass(frozen=True)
class InsertResult:
    order_id: str
    outcome: InsertOutcome
    job_ids: tuple[int, ...] = ()  # stored: every job; updated, cancelled: the jobs that now show the revision
    revision: int = 1  # the revision stored now (stale: the stored one that stands)
    # Of those jobs, the ones held because no printer serves them: (job id, station; None for a receipt)
    unrouted: tuple[tuple[int, str | None], ...] = ()
    after_cancel: bool = False  # stored and cancelled at once: its cancel came first (see edge/store/cancels.py)
    arrived_cancelled: bool = False  # not here before, stored as it came: cancelled (its cancel overtook it)


def store_failed(err: Exception) -> bool:
    """Whether a write failed for the store's sake (disk full, damaged, a bug below us), not for an order's: a
    constraint the order's rows break (a key a row left by an older version holds) is about that order alone."""
    return isinstance(err, StoreError) and not isinstance(err.__cause__, sqlite3.IntegrityError)


def job_key(order_id: str, kind: str, station: str | None, sequence: int) -> str:
    return f"{order_id}:{kind}:{station or '-'}:{sequence}"


# JSON {"boot", "from_job"}: this boot's id and the first job id stored in it (note_boot): the created_mono of jobs
# from there on is on this boot's monotonic clock; that of older ones means nothing now (ids are never reused).
JOBS_BOOT_KEY = "jobs_boot"


async def note_boot(conn: Writer, boot: str | None) -> None:
    """Before a write stores jobs: the first in a boot notes it with the first job id it stores (JOBS_BOOT_KEY). In
    that write, not at the start: a start writes (and syncs) nothing it need not; later writes change nothing."""
    if boot is not None:
        await conn.execute(
            "INSERT INTO meta(key, value) SELECT ?, json_object('boot', ?, 'from_job', next)"
            " FROM (SELECT COALESCE(MAX(id), 0) + 1 AS next FROM print_jobs)"
            " WHERE NOT EXISTS (SELECT 1 FROM meta WHERE key = ? AND json_extract(value, '$.boot') = ?)"
            " ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (JOBS_BOOT_KEY, boot, JOBS_BOOT_KEY, boot),
        )


async def insert_batch(
    conn: Writer,
    batch: list[NewOrder],
    now: float,
    *,
    listed: bool = False,
    mono: float | None = None,
    boot: str | None = None,
) -> list[InsertResult]:
    """Classify each order against what is stored, insert the new ones with their jobs. Runs inside a transaction.
    ``listed``: central's recovery lists the orders too (see _insert_fresh); ``mono``: ``now`` on the monotonic
    clock of ``boot``, kept with each job (created_mono: JobStore.boot_waits)."""
    if mono is not None:
        await note_boot(conn, boot)
    ids = sorted({n.order.id for n in batch})
    placeholders = ",".join("?" * len(ids))
    known = known_from_rows(await conn.execute_fetchall(known_sql(len(ids)), ids + ids))
    pending = await pending_cancels(conn, [i for i in ids if i not in known or known[i].history])
    outcomes: list[InsertOutcome] = []
    fresh: list[NewOrder] = []
    revised: dict[int, tuple[int, ...]] = {}  # batch index -> jobs showing the revision
    after_cancel: set[int] = set()  # batch indexes stored and cancelled at once
    arrived: set[int] = set()  # batch indexes not here before, stored as they came: cancelled
    settled: list[str] = []  # orders stored now whose cancel was kept: the order row speaks for it from here on
    for index, new in enumerate(batch):
        order = new.order
        stored = known.get(order.id)
        # Once stored, the order row speaks (a history record was never stored: its order may have a cancel kept).
        cancel = pending.get(order.id) if stored is None or stored.history else None
        if new.based_on is not None and (stored is None or stored.revision != new.based_on):
            outcome = InsertOutcome.MOVED
        else:
            outcome = _classify(new, stored) if cancel is None else _after_cancel(new, cancel)
            if outcome == InsertOutcome.CONFLICT and await _same_cancel_as_stored(conn, new, stored):
                outcome = InsertOutcome.DUPLICATE
            if outcome == InsertOutcome.STALE and await _revision_reused(conn, new, stored):
                outcome = InsertOutcome.CONFLICT
        if outcome == InsertOutcome.STORED:
            fresh.append(new)
            if cancel is not None:
                settled.append(order.id)
            if order.status == OrderStatus.CANCELLED:
                outcome = InsertOutcome.CANCELLED  # stored as sent, nothing prints
                arrived.add(index)
            elif cancel is not None:  # stored and cancelled in this transaction: its jobs are discarded unprinted
                await _insert_fresh(conn, fresh, now, pending, listed, mono)
                fresh = []
                cancelled = new.cancelled(cancel)
                revised[index] = await apply_revision(conn, cancelled, now, listed=listed, mono=mono)
                known[order.id] = KnownOrder(
                    cancelled.content_hash,
                    cancelled.meaning_hash,
                    cancelled.order.revision,
                    OrderStatus.CANCELLED,
                    stored=True,
                )
                outcome = InsertOutcome.CANCELLED
                after_cancel.add(index)
        elif outcome in (InsertOutcome.UPDATED, InsertOutcome.CANCELLED) and stored and stored.status == "open":
            await _insert_fresh(
                conn, fresh, now, pending, listed, mono
            )  # an earlier copy in this batch is stored before it is revised
            fresh = []
            revised[index] = await apply_revision(conn, new.revision(), now, listed=listed, mono=mono)
        if new in fresh or (index in revised and index not in after_cancel):
            known[order.id] = KnownOrder(new.content_hash, new.meaning_hash, order.revision, order.status, stored=True)
        outcomes.append(outcome)
    await _insert_fresh(conn, fresh, now, pending, listed, mono)
    await drop_pending_cancels(conn, settled)
    jobs: dict[str, list[int]] = {}
    unrouted: dict[int, str | None] = {}
    for order_id, job_id, station, unserved in await conn.execute_fetchall(
        f"SELECT order_id, id, station, printer = '' AND state = 'held' FROM print_jobs WHERE order_id IN"
        f" ({placeholders}) ORDER BY id",
        ids,
    ):
        jobs.setdefault(order_id, []).append(job_id)
        if unserved:
            unrouted[job_id] = station
    results = []
    for index, (n, o) in enumerate(zip(batch, outcomes, strict=True)):
        if n.order.id in known:
            current = known[n.order.id].revision
        else:  # refused against a kept cancel (that one stands) or by its own content
            current = pending[n.order.id].cancel.revision if n.order.id in pending else n.order.revision
        if o == InsertOutcome.STORED or o == InsertOutcome.DUPLICATE:
            shown = tuple(jobs.get(n.order.id, ()))
        else:
            shown = revised.get(index, ())
        held = tuple((job_id, unrouted[job_id]) for job_id in shown if job_id in unrouted)
        results.append(InsertResult(n.order.id, o, shown, current, held, index in after_cancel, index in arrived))
    return results


async def _same_cancel_as_stored(conn: Writer, new: NewOrder, known: KnownOrder | None) -> bool:
    """A conflict of a cancel with the stored cancel of the same revision may be that cancel in other words: a row
    hashed by a version that counted the reason. Read only for such a conflict."""
    cancelled = OrderStatus.CANCELLED
    if known is None or not known.stored or known.status != cancelled or new.order.status != cancelled:
        return False
    rows = list(await conn.execute_fetchall("SELECT payload FROM orders WHERE id = ?", (new.order.id,)))
    return bool(rows) and same_cancel(rows[0][0], new.order)


def _classify(new: NewOrder, known: KnownOrder | None) -> InsertOutcome:
    """What a payload is to what is stored: see docs/http-api.md, "Revisions"."""
    order = new.order
    if known is None or (known.history and order.revision > known.revision):
        return InsertOutcome.STORED  # never stored here: a change to an order recovery classed as history is new
    if order.revision == known.revision:
        return InsertOutcome.DUPLICATE if known.same_content(new) else InsertOutcome.CONFLICT
    if order.revision < known.revision or not known.stored:
        return InsertOutcome.STALE  # older than what we have, or the order is gone (retention): nothing to change
    if known.status == OrderStatus.CANCELLED:
        return InsertOutcome.CANCELLED if order.status == OrderStatus.CANCELLED else InsertOutcome.CLOSED
    return InsertOutcome.CANCELLED if order.status == OrderStatus.CANCELLED else InsertOutcome.UPDATED


async def _revision_reused(conn: Writer, new: NewOrder, known: KnownOrder | None) -> bool:
    """Whether an open revision below the stored one is one this box stored with other content: a sender counting
    from 1 again (a backend restored from a backup) sending the order changed. Answered stale, it took that for done
    and the change was never made. A revision never stored here has nothing to compare; recovery's list is central's
    own record, whose old revisions stay stale; a cancel below is refused when the order is open (intake's
    _cancel_not_applied) and done when it is cancelled."""
    if known is None or not known.stored or new.order.revision >= known.revision:
        return False
    if new.source == OrderSource.RECOVERY or new.order.status != OrderStatus.OPEN:
        return False
    earlier = await stored_revision(conn, new.order.id, new.order.revision)
    return earlier is not None and not earlier.same_content(new)


def _after_cancel(new: NewOrder, pending: PendingCancel) -> InsertOutcome:
    """An order not here whose cancel came first, taken as if the cancelled revision had come whole: a cancelled one
    is stored as sent; an open one below the cancel's revision is stored and cancelled at once, one at it conflicts
    with it, one above would reopen it (see docs/http-api.md, "Revisions")."""
    if new.order.status == OrderStatus.CANCELLED or new.order.revision < pending.cancel.revision:
        return InsertOutcome.STORED
    return InsertOutcome.CONFLICT if new.order.revision == pending.cancel.revision else InsertOutcome.CLOSED


async def _insert_fresh(
    conn: Writer,
    fresh: list[NewOrder],
    now: float,
    kept: Mapping[str, PendingCancel],
    listed: bool,
    mono: float | None = None,
) -> None:
    """Orders never seen before, with their jobs, the received event (and for one that comes cancelled the cancelled
    event, with its reason or that of the cancel ``kept`` for it: central hears what the box holds) and the
    seen-order record. Recovery's orders created before the database may have printed what it does not know print
    marked COPY (see MAY_HAVE_PRINTED_KEY), and so do pushed ones where central's recovery lists them too
    (``listed``): a new box's senders (central, a till) may push the day's orders again before its first run lists
    them, and the box it replaces may have printed them; the outcome must not hang on which comes first (the
    replace81 probe, F3: pushed a second earlier, they printed a second time unmarked). Without central, a push is
    all there is: a sender sends again only what was not acknowledged, or what the database a restore replaced took
    (acked_before_restore: a resend of what may be on paper), which prints marked COPY."""
    if fresh:
        marking = {n.order.id for n in fresh if listed or n.source == OrderSource.RECOVERY}
        mark = await read_mark(conn, now) if marking else None  # a push-only box's commit pays no read for it
        # Recovery's too: what the replaced database took may be on paper, whichever door brings it (the verify81b
        # probe, V2: recovery's printed unmarked when the mark, on a box clock behind, was before them).
        resent = await acked_before_restore(conn, [(n.order.id, n.order.revision) for n in fresh])
        await conn.executemany(
            "INSERT INTO orders(id, number, content_hash, meaning_hash, payload, channel, priority, created_at, due_at,"
            " received_at, source, revision, status) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    n.order.id,
                    n.order.number,
                    n.content_hash,
                    n.meaning_hash,
                    n.payload,
                    n.order.channel,
                    n.order.priority,
                    n.order.created_at.isoformat(),
                    n.order.fulfilment.due_at.isoformat() if n.order.fulfilment.due_at else None,
                    now,
                    n.source,
                    n.order.revision,
                    n.order.status,
                )
                for n in fresh
            ],
        )
        await conn.executemany(
            "INSERT INTO print_jobs(order_id, kind, station, printer, priority, copy, created_at, idempotency_key,"
            " revision, state, held_reason, held_at, created_mono) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    n.order.id,
                    p.kind,
                    p.station,
                    p.printer or "",
                    n.order.priority,
                    (n.order.id, n.order.revision) in resent
                    or (mark is not None and n.order.id in marking and mark.before(n.order.created_at.timestamp())),
                    now,
                    job_key(n.order.id, p.kind, p.station, 0),
                    n.order.revision,
                    *first_state(p.printer or "", now),
                    mono,
                )
                for n in fresh
                if n.order.status == OrderStatus.OPEN  # an order that arrives cancelled prints nothing
                for p in n.plans
            ],
        )
        events = []
        for n in fresh:
            order = n.order
            events.append(outbox_row(order.id, StatusEvent.RECEIVED, "0", now, number=order.number, source=n.source))
            if order.status == OrderStatus.CANCELLED:
                reason = order.cancel_reason or (kept[order.id].cancel.reason if order.id in kept else None)
                fields = revision_fields(order, n.source, reason)
                events.append(outbox_row(order.id, StatusEvent.CANCELLED, str(order.revision), now, **fields))
        await add_outbox(conn, events)
        await _remember(conn, fresh, now)


async def _remember(conn: Writer, orders: list[NewOrder], now: float, *, history: bool = False) -> None:
    """Seen-order records: remembered past retention; a box clock still in 1970 must not make one look ancient.
    ``history``: orders recovery classed as history, never stored. An order stored replaces its history record."""
    await conn.executemany(
        "INSERT INTO seen_orders(id, content_hash, meaning_hash, seen_at, revision, history) VALUES (?, ?, ?, ?, ?, ?)"
        " ON CONFLICT(id) DO UPDATE SET content_hash = excluded.content_hash, meaning_hash = excluded.meaning_hash,"
        " seen_at = excluded.seen_at, revision = excluded.revision, history = excluded.history"
        " WHERE seen_orders.history AND NOT excluded.history",
        [
            (
                n.order.id,
                n.content_hash,
                n.meaning_hash,
                max(now, n.order.created_at.timestamp()),
                n.order.revision,
                history,
            )
            for n in orders
        ],
    )


class OrderStore:
    def __init__(self, db: Database, *, clock: Clock = SYSTEM_CLOCK, listed: bool = False) -> None:
        """``listed``: central's recovery lists the orders pushed here too (a central API is configured)."""
        self._db = db
        self._clock = clock
        self._listed = listed
        self._pending: list[tuple[NewOrder, asyncio.Future[InsertResult]]] = []
        self._scheduled = False  # a batch waits for the writer and will take what is pending then
        self._batches: set[asyncio.Task[None]] = set()
        self._expected = 0  # orders the next batch may expect: see _gather
        self._enough = threading.Event()  # set once that many are pending; waited for in real time: wait_real

    async def insert(self, new: NewOrder) -> InsertResult:
        """Store one order durably. Concurrent callers share one transaction and one fsync (group commit). While the
        card stalls, refused at once (the sender retries): held with the orders that wait for it, its sender's
        retries would pile up their connections, and neither could be answered before the card writes again."""
        if self._db.stall is not None:
            raise StoreUnavailableError(self._db.stall)
        future: asyncio.Future[InsertResult] = asyncio.get_running_loop().create_future()
        self._pending.append((new, future))
        if len(self._pending) >= self._expected:
            self._enough.set()
        self._schedule()
        return await future

    async def insert_many(self, batch: list[NewOrder]) -> list[InsertResult | Exception]:
        """One transaction for a whole batch (recovery). An order that cannot be stored fails alone (see _each_alone):
        its place in the list holds why. A store that cannot take writes raises StoreError."""
        try:
            return list(await self._insert(batch))
        except Exception as err:
            if store_failed(err):
                raise
            return await self._each_alone(batch)

    async def _each_alone(self, batch: list[NewOrder]) -> list[InsertResult | Exception]:
        """After a transaction failed for an order's sake, not the store's (a change to an order stored in a form this
        version cannot read, a bug): each order in a transaction of its own, so the others are stored and only that
        one fails. Rare, so the fsync each costs does not matter. Once the store fails, the rest fail with it."""
        out: list[InsertResult | Exception] = []
        for new in batch:
            try:
                [result] = await self._insert([new])
            except Exception as err:
                if store_failed(err):
                    return out + [err] * (len(batch) - len(out))
                out.append(err)  # handed to that order's caller, who answers or reports it
            else:
                out.append(result)
        return out

    async def _insert(self, batch: list[NewOrder]) -> list[InsertResult]:
        return await self._db.write(
            lambda conn: insert_batch(
                conn, batch, self._clock.wall(), listed=self._listed, mono=self._clock.mono(), boot=self._clock.boot()
            )
        )

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

        def take(conn: DirectConnection) -> Coroutine[Any, Any, list[InsertResult]]:
            nonlocal group
            group, self._pending = self._pending[:MAX_GROUP], self._pending[MAX_GROUP:]
            now, mono, boot = self._clock.wall(), self._clock.mono(), self._clock.boot()
            return insert_batch(conn, [n for n, _ in group], now, listed=self._listed, mono=mono, boot=boot)

        def next_batch() -> None:
            # Only now, with this batch's COMMIT queued: orders left over or arriving meanwhile start the next group
            # (a transaction never takes more than MAX_GROUP orders), which commits while this one's fsync runs.
            self._scheduled = False
            if self._pending:
                self._schedule()

        await self._gather()
        try:
            results = await self._db.write(take, then=next_batch)
        except Exception as err:  # none is told "stored"
            # ``take`` ran: it runs as soon as the writer is ours, and a batch is scheduled only with orders pending.
            # The store failed: every waiter learns it. One order failed it: the others must not pay for that one
            # (a sender drops an order refused as invalid), so each is tried alone.
            outcomes: list[InsertResult | Exception] = (
                [err] * len(group)
                if store_failed(err) or len(group) == 1
                else await self._each_alone([n for n, _ in group])
            )
        else:
            # Those answered now will likely send again at once, and those pending now are still to be stored.
            self._expected = min(len(group) + len(self._pending), MAX_GROUP)  # a batch takes no more
            outcomes = [*results]
        for (_, future), outcome in zip(group, outcomes, strict=True):
            if future.done():
                continue
            if isinstance(outcome, Exception):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)

    async def _gather(self) -> None:
        """Wait a moment for the senders the last batch answered, if fewer orders are pending than it had.

        Senders that each send their next order once answered (a backend with several connections, a fleet of
        tills) split on a slow disk into two halves taking turns: the orders that came during one fsync make the next
        batch, and those that fsync answered come back just too late for it, so each waits for about two fsyncs. On
        an SD card (10 ms fsyncs) eight senders got 250-290 acks/s that way. Waiting for them, at most half an fsync
        (and GATHER_MAX_S), lets one fsync carry them all; a single sender never waits (its batch has what it
        expects), nor does anyone on a fast disk, where the wait is a fraction of a millisecond."""
        if len(self._pending) >= self._expected:
            return
        self._enough.clear()
        await wait_real(self._enough, min(self._db.fsync_s / 2, GATHER_MAX_S))

    async def keep_cancel(self, order_id: str, cancel: Cancel, source: OrderSource) -> InsertResult | None:
        """Keep a cancel for an order not stored here (see edge/store/cancels.py); None if it is stored now."""
        kept = await self._db.write(lambda conn: keep_cancel(conn, order_id, cancel, source, self._clock.wall()))
        return None if kept is None else InsertResult(order_id, kept.outcome, revision=kept.revision)

    async def known(self, ids: list[str]) -> dict[str, KnownOrder]:
        """Hash, revision and status by order id, for the ids stored now or once (purged since, see seen_orders) or
        recorded as history."""
        if not ids:
            return {}
        return known_from_rows(await self._db.fetchall(known_sql(len(ids)), tuple(ids + ids)))

    async def remember_seen(self, orders: list[NewOrder]) -> None:
        """Orders never stored here (history) recorded as seen: a sender's retry of one is a duplicate."""
        if orders:
            async with self._db.transaction() as conn:
                await _remember(conn, orders, self._clock.wall(), history=True)

    async def may_have_printed_until(self) -> float | None:
        """See identity.MAY_HAVE_PRINTED_KEY; None for a database that was neither new nor restored since."""
        row = await self._db.fetchone(_MARK_SQL, (MAY_HAVE_PRINTED_KEY,))
        return float(row[0]) if row else None

    async def first_start_unsettled(
        self, boot: str | None, *, mono: float | None = None, wall: float | None = None
    ) -> float | None:
        """The monotonic time of the moment the may-have-printed mark stands for (a new database's first start, a
        restore onto a new box) if central's clock has not dated it yet; None if it has. Monotonic time means nothing
        across boots: one kept in another ``boot`` is taken again as this start, ``mono`` and ``wall`` (the mark
        becomes this start on the box's clock, to be dated by central's: later than the moment it stood for, so what
        may be on paper still prints marked COPY, never as an original), without them None."""
        row = await self._db.fetchone(_MARK_SQL, (FIRST_START_UNSETTLED_KEY,))
        kept = json.loads(row[0]) if row else None
        if not kept:
            return None
        if boot is not None and kept.get("boot") == boot:
            return float(kept["mono"])
        if mono is None or wall is None:
            return None
        async with self._db.transaction() as conn:
            await conn.execute(UPSERT_META, (FIRST_START_UNSETTLED_KEY, json.dumps({"boot": boot, "mono": mono})))
            await conn.execute(UPSERT_META, (MAY_HAVE_PRINTED_KEY, repr(float(wall // 1))))
        log.info("may_have_printed_mark_taken_at_start", box_clock=float(wall // 1))
        return mono

    async def settle_first_start(self, was: float, now: float | None) -> None:
        """The may-have-printed mark's moment (see first_start_unsettled), ``was`` on the box's clock, dated on
        central's: restated as ``now`` where the two differ (see Recovery._date_mark), left where ``now`` is
        None."""
        async with self._db.transaction() as conn:
            await conn.execute("DELETE FROM meta WHERE key = ?", (FIRST_START_UNSETTLED_KEY,))
            if now is not None:
                await conn.execute(
                    "UPDATE meta SET value = ? WHERE key = ? AND CAST(value AS REAL) = ?",
                    (repr(float(now)), MAY_HAVE_PRINTED_KEY, was),
                )

    async def payloads(self, ids: list[str]) -> dict[str, str]:
        """The stored JSON by order id, for the ids that are stored."""
        if not ids:
            return {}
        marks = ",".join("?" * len(ids))
        rows = await self._db.fetchall(f"SELECT id, payload FROM orders WHERE id IN ({marks})", tuple(ids))
        return {r[0]: r[1] for r in rows}

    async def payload_at(self, order_id: str, revision: int) -> str | None:
        """The stored JSON of one revision of an order: its current one, or one order_revisions keeps."""
        row = await self._db.fetchone(
            "SELECT payload FROM orders WHERE id = ?1 AND revision = ?2"
            " UNION ALL SELECT payload FROM order_revisions WHERE order_id = ?1 AND revision = ?2 LIMIT 1",
            (order_id, revision),
        )
        return str(row[0]) if row is not None else None

    async def kept_cancel_revision(self, order_id: str) -> int | None:
        """The revision of a cancel kept for an order not stored here (it came first), if one is kept."""
        row = await self._db.fetchone("SELECT revision FROM pending_cancels WHERE order_id = ?", (order_id,))
        return int(row[0]) if row is not None else None

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
