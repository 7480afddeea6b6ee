"""Scheduled chores: purge old orders and history; probe a database that stopped taking writes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TypeVar

import structlog

from edge.clock import SYSTEM_CLOCK, Clock, RemoteClock, repeat
from edge.config import ReceiptSettings, RetentionSettings
from edge.store import receipts as store_receipts
from edge.store import retention as store_retention
from edge.store.db import Database, card_full

log = structlog.get_logger()

T = TypeVar("T")

# Hears the rows one of retention's transactions deleted, once it has committed.
Progress = Callable[[int], None]

# While writes fail, try one this often, so the agent notices by itself that space is back.
STORAGE_PROBE_S = 10.0
# On a full card, retention runs at once, and again this often while the card stays full (orders age meanwhile), in
# transactions this small (orders, or rows of history): the room the agent keeps (1 MiB) holds their WAL frames.
ROOM_RETRY_S = 60.0
ROOM_BATCH = 20

# Retention's "now" is never later than this past the newest time it knows from elsewhere (central's clock, the
# newest order's created_at): a box clock that jumps years ahead must not make every order, and every seen-order
# record that stops a second print, look old. Far above clock skew between hosts.
AHEAD_MARGIN_S = 86400.0

RECEIPTS_ON = ReceiptSettings()  # [receipts] as the default has it


async def purge_printed_orders(
    db: Database,
    *,
    older_than_s: float,
    batch: int,
    now: float | None = None,
    readers: store_retention.OutboxReaders = store_retention.CENTRAL_ONLY,
    progress: Progress | None = None,
) -> int:
    """Deletes old orders whose jobs are all printed, dead or discarded (and whose events central has), in short
    transactions of ``batch`` orders; their jobs and outbox rows go too. See edge/store/retention.py. ``progress``
    hears each transaction's count once it has committed."""
    at = time.time() if now is None else now
    total = 0
    try:
        while True:
            purged = await store_retention.purge_orders(
                db, cutoff=at - older_than_s, now=at, batch=batch, readers=readers
            )
            total += purged
            if progress is not None:
                progress(purged)
            if purged < batch:
                break
            await asyncio.sleep(0)  # let intake and the spools have the writer between batches
    finally:  # also what committed before a batch failed (a full card): those orders are gone
        if total:
            log.info("orders_purged", count=total, older_than_days=round(older_than_s / 86400, 2))
    return total


async def purge_history(
    db: Database, *, older_than_s: float, batch: int, now: float | None = None, progress: Progress | None = None
) -> dict[str, int]:
    """Drops scans, sent mails, alert log lines and finished recovery runs older than the retention age, in short
    transactions of ``batch`` rows (no bigger than as many orders with their tickets): see edge/store/retention.py.
    ``progress`` hears each transaction's count once it has committed."""
    cutoff = (time.time() if now is None else now) - older_than_s
    removed = dict.fromkeys(store_retention.HISTORY_TABLES, 0)
    try:
        for table in store_retention.HISTORY_TABLES:
            while True:
                gone = await store_retention.purge_history(db, table=table, cutoff=cutoff, batch=batch)
                removed[table] += gone
                if progress is not None:
                    progress(gone)
                if gone < batch:
                    break
                await asyncio.sleep(0)  # let intake and the spools have the writer between batches
    finally:  # also what committed before a batch failed
        if any(removed.values()):
            log.info("history_purged", **removed)
    return removed


async def _part(part: str, run: Awaitable[T]) -> T | None:
    """One part of retention's run; a failure is logged and retried at the next run: it must not kill the scheduler,
    nor keep the other parts from theirs (a part that needs more than a full card's room, the others less)."""
    try:
        return await run
    except Exception as err:
        log.warning("purge_failed", part=part, error=str(err))
        return None


class Housekeeping:
    def __init__(
        self,
        db: Database,
        retention: RetentionSettings,
        *,
        clock: Clock = SYSTEM_CLOCK,
        readers: store_retention.OutboxReaders = store_retention.CENTRAL_ONLY,
        central: RemoteClock | None = None,
        receipts: ReceiptSettings = RECEIPTS_ON,
    ) -> None:
        """``central``: central's clock as its answers tell it, where the agent has a central link; ``receipts``: the
        [receipts] settings."""
        self._db = db
        self._retention = retention
        self._receipts = receipts
        self._clock = clock
        self._readers = readers
        self._central = central
        self._held_back = False  # the last run took a "now" earlier than the box clock
        self._room_next = 0.0  # monotonic: when a full card may run retention again (make_room)
        self._making_room = asyncio.Lock()
        self._timers: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._timers = [
            asyncio.create_task(self._retain(), name="retention"),
            asyncio.create_task(repeat(self.probe_storage, STORAGE_PROBE_S), name="storage-probe"),
        ]

    async def stop(self) -> None:
        """Cancels the timers, and a purge in progress between its short transactions (each is all-or-nothing)."""
        for timer in self._timers:
            timer.cancel()
        await asyncio.gather(*self._timers, return_exceptions=True)
        self._timers = []

    async def _retain(self) -> None:
        await self.settle_receipts()
        await repeat(self.purge, self._retention.every_s)

    async def settle_receipts(self) -> None:
        """At the start, on a box that prints no receipts (receipts.enabled = false, set between runs): the receipts an
        earlier run held for want of a printer are discarded, so retention purges their orders. Logged once a start,
        not for each order (intake makes no receipt job); with receipts on and no printer, how to say "none here"."""
        if self._receipts.enabled:
            if unserved := self._receipts.unserved:
                log.info("receipts_unserved", hint=unserved)
            return
        log.info("receipts_disabled", reason="receipts.enabled = false: no receipt job is made for any order")
        try:
            discarded = await store_receipts.discard_held_for_no_printer(self._db)
        except Exception as err:  # the next start tries again; retention must run either way
            log.warning("held_receipts_not_discarded", error=str(err))
            return
        if discarded:
            log.info("held_receipts_discarded", count=discarded, reason="receipts.enabled = false")

    async def now(self) -> float:
        """The box clock, but never more than AHEAD_MARGIN_S past the newest time known from elsewhere: central's
        clock, or the newest stored order's created_at (the sender's; see store_retention.newest_order_time). Behind
        them, the box clock as it is: retention lags, nothing is purged early. A store closed for weeks without a
        central link only keeps its data longer. With nothing known (an empty database), the box clock."""
        wall = self._clock.wall()
        central = self._central.wall() if self._central else None
        newest = await store_retention.newest_order_time(self._db, past_receipt_s=AHEAD_MARGIN_S)
        known = [t for t in (central, newest) if t is not None]
        now = min(wall, max(known) + AHEAD_MARGIN_S) if known else wall
        if (now < wall) != self._held_back:  # one line when it starts holding back, one when it stops
            self._held_back = now < wall
            times = {"box_clock": _iso(wall), "retention_now": _iso(now)}
            if self._held_back:
                log.warning("retention_clock_ahead", **times, ahead_days=round((wall - now) / 86400, 1))
            else:
                log.info("retention_clock_agrees", **times)
        return now

    async def purge(self, *, batch: int | None = None, progress: Progress | None = None) -> int:
        """Retention's run; ``batch``: orders (and rows of history) per transaction, if fewer than retention.batch;
        ``progress`` hears the orders and rows of history deleted so far, after each transaction. Returns the orders
        deleted, also those a part committed before it failed. The orders go first: theirs are the biggest rows, and on
        a full card what frees the most."""
        batch = min(batch or self._retention.batch, self._retention.batch)
        if (now := await _part("clock", self.now())) is None:
            return 0
        age, seen_cutoff = self._retention.days * 86400, now - self._retention.seen_days * 86400
        purged = [0, 0]  # orders, rows of history

        def counted(part: int) -> Progress:
            def add(rows: int) -> None:
                purged[part] += rows
                if progress is not None:
                    progress(sum(purged))

            return add

        orders = purge_printed_orders(
            self._db, older_than_s=age, batch=batch, now=now, readers=self._readers, progress=counted(0)
        )
        await _part("orders", orders)
        await _part("history", purge_history(self._db, older_than_s=age, batch=batch, now=now, progress=counted(1)))
        if forgotten := await _part("seen_orders", store_retention.purge_seen(self._db, cutoff=seen_cutoff)):
            log.info("seen_orders_forgotten", count=forgotten, older_than_days=self._retention.seen_days)
        cancels = store_retention.purge_pending_cancels(self._db, cutoff=seen_cutoff, now=now)
        if forgotten := await _part("pending_cancels", cancels):
            log.info("pending_cancels_forgotten", count=forgotten, older_than_days=self._retention.seen_days)
        return purged[0]

    async def probe_storage(self) -> None:
        # Only while writes fail: a healthy agent does not wear the SD card with probe writes.
        if self._db.write_problem is None or await self._db.probe_space():
            return
        async with self._making_room:  # one run at a time: another would give back, or keep, the room under it
            if self._clock.mono() >= self._room_next and await asyncio.to_thread(card_full, self._db.path.parent):
                self._room_next = self._clock.mono() + ROOM_RETRY_S
                await self.make_room()

    async def make_room_now(self, progress: Progress | None = None) -> None:
        """A start that gave the room back on a full card (for SQLite's -wal and -shm): retention runs on it before
        the API takes orders. Else new orders spent it first, and the full card's runs had no room left for their
        deletes: 503 for good after a restart with retention.days lowered (retention probe, probe4). All of what may
        go, not a part with the rest left for later: the rest's deletes would need the room again, and new orders,
        taken meanwhile on the pages the first part freed, would have spent what the card has left for it. A long
        backlog on a slow card takes minutes (about 13 ms a transaction of 20 rows at 10 ms an fsync, the fullstart
        probe): ``progress`` hears the orders and rows deleted so far after each transaction (systemd is told the
        start goes on)."""
        async with self._making_room:
            self._room_next = self._clock.mono() + ROOM_RETRY_S
            await self.make_room(progress)

    async def make_room(self, progress: Progress | None = None) -> None:
        """A card that filled while the agent runs: what retention may delete goes now, not at its next run (which
        would fail on the full card as every write does), on the room kept beside the database, in short transactions
        (each one's deletes go to the WAL first); new orders then take the pages the deletes freed in the file. The
        room is given back only when something may go, and kept again once the deletes are written, before the space
        probe: it is there for the deletes of a later run, never for new orders (which would spend it, and then
        nothing could ever be deleted). Intake works again once the space probe passes on the pages freed, with the
        card still full (the low-disk alert says so); with nothing old enough to go, orders are answered 503 and the
        card waits for a person, or for its orders to reach retention.days (a run every ROOM_RETRY_S)."""
        now = await self.now()
        if not await store_retention.anything_to_purge(
            self._db, cutoff=now - self._retention.days * 86400, readers=self._readers
        ):
            # The WAL a reader held may have filled it: written back on the room, the next write starts it over.
            log.warning(
                "card_full_nothing_to_purge",
                older_than_days=self._retention.days,
                log_written_back=await self._db.checkpoint_on_room(),
            )
            return
        async with self._db.wal_within_room():  # else the deletes' WAL outgrew the room before its checkpoint
            given = await self._db.give_room()
            purged = await self.purge(batch=ROOM_BATCH, progress=progress)
            kept = await self._db.keep_room()
        log.warning(
            "card_full_retention_ran",
            purged=purged,
            room_given=given,
            room_kept_kb=kept // 1024,
            writes_again=await self._db.probe_space(),
        )


def _iso(unix: float) -> str:
    return datetime.fromtimestamp(unix, UTC).isoformat(timespec="seconds")
