"""Scans table and what a scan changes: a station's ticket done, the order ready or handed out, with its outbox row."""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import itertools
import json
import math
from collections.abc import Awaitable, Callable, Iterable
from typing import Any
from zoneinfo import ZoneInfo

import aiosqlite

from edge.clock import SYSTEM_CLOCK, Clock, RemoteClock
from edge.config import AgentSettings
from edge.errors import AmbiguousError
from edge.events import EventBus, ScanRecorded
from edge.orders.changes import LineChange, diff_station
from edge.orders.model import Order, parse_stored
from edge.printing.text import names_number, typed_forms
from edge.states import OrderStatus, PickupState, ScanOutcome, StatusEvent
from edge.store.db import Database, Writer
from edge.store.outbox import add_outbox, outbox_row
from edge.store.rows import OrderProgress, Scan, StationProgress


@dataclasses.dataclass(frozen=True, kw_only=True)
class ScanRequest:
    """One code read by one scanner, already parsed; the store decides what it means for the order."""

    scanner: str
    code: str
    order_ref: str | None  # an order id, or (plain codes) an id or number; None: the code names no order
    station: str | None  # the ticket's station, or the scanner's own for a plain code; None: the whole order
    plain: bool  # no ticket QR code: the ref may be an order number too
    revision: int | None = None  # the revision the ticket shows (its QR code); None: a plain code
    hand_out: bool = False  # a scan of a ready order hands it out
    # ... but not within this long of it becoming ready (a double read), nor of this scanner's previous read of the
    # order (a ticket lying under a hands-free scanner, re-read every 0.5-1 s)
    hand_out_gap_s: float = 0.0
    detail: str = ""  # why the code names no order, when order_ref is None


@dataclasses.dataclass(frozen=True)
class ScanResult:
    """What a scan did, as recorded."""

    scan_id: int | None  # None: a re-read that changed nothing, not written (see _apply)
    outcome: ScanOutcome
    order_id: str | None
    order_number: str | None
    station: str | None
    detail: str


class NamedBy(enum.StrEnum):
    """How a caller names an order (ScanStore.order_named): by its id, or by the number on its ticket."""

    ID = "id"
    NUMBER = "number"


@dataclasses.dataclass(frozen=True)
class BusinessDay:
    """When the store's day begins (agent.business_day_start in agent.timezone): a night after midnight belongs to
    the day that began that morning, so the daily order counter's numbers are unique within one business day."""

    tz: ZoneInfo | None  # None: the system's zone
    start: dt.time = dt.time(4, 0)

    @classmethod
    def from_settings(cls, agent: AgentSettings) -> BusinessDay:
        hour, minute = agent.business_day_start.split(":")
        return cls(ZoneInfo(agent.timezone) if agent.timezone else None, dt.time(int(hour), int(minute)))

    def bounds(self, now: float) -> tuple[dt.datetime, dt.datetime]:
        """The current business day as [start, end), aware datetimes. Worked out on instants, not on wall times: when
        the clock goes back, the start time comes twice and the day begins at the first; when it jumps past the
        start time, the day begins at the jump."""
        date = self._wall(now).date()
        start = self._begins(date)
        if now < start:
            date -= dt.timedelta(days=1)
            start = self._begins(date)
        return self._aware(start), self._aware(self._begins(date + dt.timedelta(days=1)))

    def _begins(self, date: dt.date) -> float:
        """The instant the business day of ``date`` begins: the first at which the wall clock shows its start time or
        later (the start time's first occurrence, or the jump past it)."""
        wanted = dt.datetime.combine(date, self.start)
        # Read with the offset before a change (fold 0) and after it (fold 1): they differ only around a change.
        early, late = sorted(self._instant(wanted, fold) for fold in (0, 1))
        if self._wall(early) == wanted:
            return early
        if self._wall(late) == wanted:
            return late
        while late - early > 1.0:  # a time the change skips: the jump lies between the two readings
            middle = (early + late) / 2
            if self._wall(middle) >= wanted:
                late = middle
            else:
                early = middle
        return float(math.ceil(late))

    def _wall(self, at: float) -> dt.datetime:
        """The store's wall clock at ``at``, naive."""
        return dt.datetime.fromtimestamp(at, self.tz).replace(tzinfo=None) if self.tz else dt.datetime.fromtimestamp(at)

    def _instant(self, wall: dt.datetime, fold: int) -> float:
        return (wall.replace(tzinfo=self.tz, fold=fold) if self.tz else wall.replace(fold=fold)).timestamp()

    def _aware(self, at: float) -> dt.datetime:
        return dt.datetime.fromtimestamp(at, self.tz) if self.tz else dt.datetime.fromtimestamp(at).astimezone()


# While a ticket lies under a scanner that hands out, one read of it is written this often, not each re-read: the
# written reads are what a start after a stop or a crash knows of a presentation (see _apply).
_PRESENTATION_WRITTEN_S = 60.0
# Past this many reads noted, those older than _READ_KEPT_S (longer than any sensible hand_out_gap_s) are forgotten.
_READS_KEPT, _READ_KEPT_S = 512, 600.0


class _RecentReads:
    """When each scanner last read each code, and each order, on the monotonic clock, by when the read was made (a
    scan held for a full card and recorded later keeps its time: two held reads recorded together are as far apart
    as they were read). A read counts once its scan is committed (``keep``): one the store refused (a full card) and
    recorded later is no earlier read of itself (its hand-out was taken for a ticket still in view)."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._at: dict[tuple[str, str, str], float] = {}

    def seen(
        self, scanner: str, kind: str, key: str, read: float, noted: list[tuple[tuple[str, str, str], float]]
    ) -> float | None:
        """Seconds between this scanner's previous read of ``key`` (a "code" or an "order") and this one, read at
        ``read`` (monotonic), None if none; this read is added to ``noted``, for ``keep``."""
        last = self._at.get((scanner, kind, key))
        noted.append(((scanner, kind, key), read))
        return None if last is None else read - last

    def keep(self, noted: list[tuple[tuple[str, str, str], float]]) -> None:
        """The reads of a committed scan."""
        self._at.update(noted)
        if len(self._at) > _READS_KEPT:
            now = self._clock.mono()
            self._at = {k: t for k, t in self._at.items() if now - t < _READ_KEPT_S}


class ScanStore:
    def __init__(
        self,
        db: Database,
        *,
        clock: Clock = SYSTEM_CLOCK,
        business_day: BusinessDay = BusinessDay(None),
        bus: EventBus | None = None,
        central: RemoteClock | None = None,
    ) -> None:
        """``bus``: hears each scan (ScanRecorded) once it is committed. ``central``: central's clock as its answers
        tell it: the business day a number names is taken on it once known (numbers repeat by central's day; a box
        booted years behind looked for today's order in 2021)."""
        self._db = db
        self._clock = clock
        self._central = central
        self._business_day = business_day
        self._bus = bus if bus is not None else EventBus()  # nobody listens: a store used on its own
        self._reads = _RecentReads(clock)

    async def order_named(self, ref: str, by: NamedBy | None = None) -> tuple[str | None, str]:
        """The order ``ref`` names, or None and why not. Read only. ``by`` ID: the order with that id. NUMBER: as a
        person reads the ticket (and a scanner a plain code): today's order with that number, else the order with
        that id. None, the caller did not say: either, but AmbiguousError where the id is one order's and the number
        another's of today (a till's running integer ids meet its daily numbers): a COPY of the wrong order in the
        kitchen, and the one wanted not printed, is worse than asking."""
        day = self._day(self._clock.wall())
        fetch = self._db.fetchall
        by_id, why = await _find_order(fetch, ref, False, day, ask="")
        if by == NamedBy.ID:
            return (by_id["id"] if by_id is not None else None), why
        ask = "give its order id (edge jobs shows it) with by=id (edge reprint --by-id)"
        found, why = await _find_order(fetch, ref, True, day, ask=ask)
        if by is None and by_id is not None and (found is None or found["id"] != by_id["id"]):
            zone = day[0].tzinfo
            first = f"order id {ref!r} (number {by_id['number']!r}, created {_created(by_id, zone)})"
            if found is None:  # two or more of today's have the number, none of them named alone
                raise AmbiguousError(
                    f"{ref!r} names {first} and is the number of several orders of today's business day; say which:"
                    " by=id for the first, or one of today's by its own id",
                    field="by",
                )
            raise AmbiguousError(
                f"{ref!r} names two orders: {first} and today's order number {ref!r} (id {found['id']!r}, created"
                f" {_created(found, zone)}); say which: by=id for the first, by=number for the second",
                field="by",
            )
        return (found["id"] if found is not None else None), why

    async def open_numbered_today(self, number: str) -> list[tuple[str, str]]:
        """(id, number) of today's open orders whose ticket shows ``number`` (as order_named reads it), oldest first:
        where it names none alone, which ones a person may have meant. Read only."""
        today, _ = await _numbered(self._db.fetchall, number, self._day(self._clock.wall()))
        rows = sorted((r for r in today if r["status"] == OrderStatus.OPEN), key=lambda r: (r["created_at"], r["id"]))
        return [(r["id"], r["number"]) for r in rows]

    def _day(self, at: float) -> tuple[dt.datetime, dt.datetime]:
        """The business day at ``at`` (our wall time), on central's clock once known."""
        off = self._central.box_minus_theirs() if self._central is not None else None
        return self._business_day.bounds(at if off is None else at - off)

    async def record(self, scan: ScanRequest, *, at: float | None = None, read: float | None = None) -> ScanResult:
        """Apply a scan: the scans row, the order's change and its outbox event commit together or not at all. ``at``
        (wall) and ``read`` (monotonic): when it was read (a scan the store refused at first, recorded later); None:
        now."""
        now = self._clock.wall() if at is None else at
        read_mono = self._clock.mono() if read is None else read
        day = self._day(now)
        noted: list[tuple[tuple[str, str, str], float]] = []
        async with self._db.publishing(self._bus) as (conn, events):
            result = await _apply(
                conn, scan, now, day, lambda kind, key: self._reads.seen(scan.scanner, kind, key, read_mono, noted)
            )
            events.append(
                ScanRecorded(scanner=scan.scanner, code=scan.code, outcome=result.outcome, order_id=result.order_id)
            )
        self._reads.keep(noted)
        return result

    async def recent(
        self,
        *,
        limit: int = 50,
        scanner: str | None = None,
        outcome: ScanOutcome | None = None,
        order_id: str | None = None,
    ) -> list[Scan]:
        """Newest first, of one scanner, outcome and order if given."""
        rows = await self._db.fetchall(
            "SELECT * FROM scans WHERE (?1 IS NULL OR scanner = ?1) AND (?2 IS NULL OR outcome = ?2)"
            " AND (?3 IS NULL OR order_id = ?3) ORDER BY id DESC LIMIT ?4",
            (scanner, outcome, order_id, limit),
        )
        return [Scan.from_row(r) for r in rows]

    async def counts(self) -> dict[ScanOutcome, int]:
        """Scans by outcome, every outcome present."""
        rows = await self._db.fetchall("SELECT outcome, COUNT(*) FROM scans GROUP BY outcome")
        return {outcome: 0 for outcome in ScanOutcome} | {ScanOutcome(r[0]): r[1] for r in rows}

    async def progress(self, order_id: str) -> OrderProgress:
        """The order's pickup state (open, ready, handed_out; cancelled when it was not handed out) and which station
        tickets are done."""
        stations = await self._db.fetchall(
            f"SELECT s.station, d.done_at FROM ({_STATIONS_SQL}) s"
            " LEFT JOIN station_done d ON d.order_id = ?1 AND d.station = s.station ORDER BY s.station",
            (order_id,),
        )
        pickup = await self._db.fetchone(
            "SELECT ready_at, handed_out_at FROM order_pickup WHERE order_id = ?", (order_id,)
        )
        cancelled = await self._db.fetchone("SELECT 1 FROM orders WHERE id = ? AND status = 'cancelled'", (order_id,))
        state = (
            PickupState.CANCELLED
            if cancelled and (pickup is None or pickup["handed_out_at"] is None)
            else PickupState.OPEN
            if pickup is None
            else PickupState.READY
            if pickup["handed_out_at"] is None
            else PickupState.HANDED_OUT
        )
        return OrderProgress(
            state=state,
            ready_at=pickup["ready_at"] if pickup else None,
            handed_out_at=pickup["handed_out_at"] if pickup else None,
            stations=tuple(StationProgress(station=r["station"], done_at=r["done_at"]) for r in stations),
        )


def _created(order: aiosqlite.Row, zone: dt.tzinfo | None) -> str:
    """When an order was created, on the store's clock, as a person tells two orders apart by it."""
    return dt.datetime.fromisoformat(order["created_at"]).astimezone(zone).strftime("%Y-%m-%d %H:%M")


_Fetch = Callable[[str, tuple[Any, ...]], Awaitable[Iterable[aiosqlite.Row]]]


# Orders a revision before their current one numbered so (the number on the kitchen's first ticket).
_NUMBERED_BEFORE = (
    "SELECT id, number, status, created_at FROM orders o WHERE number != ?1 AND EXISTS (SELECT 1 FROM order_revisions r"
    " WHERE r.order_id = o.id AND json_extract(r.payload, '$.number') = ?1)"
)


# Today's orders whose number has a character other than printable ASCII (only those may print otherwise than sent),
# by the day of their own created_at: the partial index orders_unplain_number (migration 024) holds only them.
_UNPLAIN_OF_DAY = (
    "SELECT id, number, status, created_at FROM orders WHERE number GLOB '*[^ -~]*'"
    " AND julianday(created_at) >= ? AND julianday(created_at) < ?"
)
_MINUTE = 1 / 1440  # of a Julian day: the index's bounds a little wide, the day itself judged exactly below


def _julian(at: dt.datetime) -> float:
    return at.timestamp() / 86400 + 2440587.5


async def _find_order(
    fetch: _Fetch, ref: str, plain: bool, day: tuple[dt.datetime, dt.datetime], *, ask: str
) -> tuple[aiosqlite.Row | None, str]:
    """The order an id or (``plain``) a number names, or None and why not. An id names any order; a plain number only
    the one order of the current business day with it: numbers come round daily, and a wrong order marked ready (or
    reprinted) is worse than asking for the id (``ask``: how; today's order may still be on its way, e.g. being
    recovered). A plain code that is today's number names that order, not one of another day whose id it is (a
    till's running integer ids meet its daily numbers)."""
    rows = list(await fetch("SELECT id, number, status, created_at FROM orders WHERE id = ?", (ref,)))
    if not plain:
        return (rows[0], "") if rows else (None, f"no order with id {ref!r}")
    start = day[0]
    today, candidates = await _numbered(fetch, ref, day)
    # Of two, a cancelled one's tickets are void: the live one is meant.
    named = today if len(today) == 1 else [r for r in today if r["status"] != OrderStatus.CANCELLED]
    if len(named) == 1:
        return named[0], ""
    since = f"today's business day (since {start:%Y-%m-%d %H:%M})"
    if today:
        shown = "" if all(r["number"] == ref for r in today) else " as their tickets print it"
        return None, f"{len(today)} orders of {since} have number {ref!r}{shown}: {ask}"
    if rows:
        return rows[0], ""
    others = len(candidates)  # older ones, or (a till's clock ahead) one dated after today's start
    return None, f"no order with id or number {ref!r} in {since}" + (
        f"; {others} of other days have it" if others else ""
    )


async def _numbered(
    fetch: _Fetch, ref: str, day: tuple[dt.datetime, dt.datetime]
) -> tuple[list[aiosqlite.Row], list[aiosqlite.Row]]:
    """The orders of the business day ``day`` whose ticket shows the number ``ref``, and all those that show it."""
    start, end = day
    # The number as its ticket shows it (names_number): as sent, or printed otherwise ("B-10\u200b43" as "B-1043",
    # "Щ-1047" as "Shch-1047"), which only a number with more than printable ASCII in it can be, one of today's found
    # by the partial index orders_unplain_number; two of today's that print alike are two (the inject81 probe, F1).
    forms = tuple(sorted(typed_forms(ref)))
    marks = ",".join("?" * len(forms))
    exact = await fetch(f"SELECT id, number, status, created_at FROM orders WHERE number IN ({marks})", forms)
    unplain = await fetch(_UNPLAIN_OF_DAY, (_julian(start) - _MINUTE, _julian(end) + _MINUTE))
    found = {r["id"]: r for r in (*exact, *unplain) if names_number(ref, r["number"], r["id"])}
    candidates: Iterable[aiosqlite.Row] = found.values()
    if not found:  # the number its first ticket showed, a revision changed since (the kitchen's paper has it)
        candidates = await fetch(_NUMBERED_BEFORE, (ref,))
    shown = list(candidates)
    return [r for r in shown if start <= dt.datetime.fromisoformat(r["created_at"]) < end], shown


async def _apply(
    conn: aiosqlite.Connection,
    scan: ScanRequest,
    now: float,
    day: tuple[dt.datetime, dt.datetime],
    seen: Callable[[str, str], float | None],
) -> ScanResult:
    # A re-read: this scanner read this very code less than hand_out_gap_s before, in this run (what lies under a
    # hands-free scanner, read every 0.5-1 s). Answered as any read, but written only when it changes something.
    code_since = seen("code", scan.code)
    reread = code_since is not None and code_since < scan.hand_out_gap_s
    order, why_not = (
        await _find_order(conn.execute_fetchall, scan.order_ref, scan.plain, day, ask="scan the ticket's QR code")
        if scan.order_ref
        else (None, scan.detail)
    )
    if order is None:
        unknown = scan.detail or why_not
        return await _insert_scan(conn, scan, now, ScanOutcome.UNKNOWN, None, None, unknown, quiet=reread)
    order_id, number = order["id"], order["number"]
    # A read that changes nothing is not written when it is a re-read. On a scanner that hands out, the hand-out is
    # judged by the reads of the order before (a ticket still in view is no hand-out): in this run by their times
    # kept here, after a start by the reads written, one at least every _PRESENTATION_WRITTEN_S.
    since = seen("order", order_id)
    last_read = None
    if scan.hand_out:
        ((last_read,),) = await conn.execute_fetchall(
            "SELECT MAX(scanned_at) FROM scans WHERE order_id = ? AND scanner = ?", (order_id, scan.scanner)
        )
    written_lately = last_read is not None and 0 <= now - last_read < _PRESENTATION_WRITTEN_S
    quiet = (since is not None and written_lately) if scan.hand_out else reread
    if order["status"] == OrderStatus.CANCELLED:  # its tickets are void: nothing to mark done or hand out
        detail = f"order {number} is cancelled: nothing changed"
        return await _insert_scan(conn, scan, now, ScanOutcome.ALREADY_DONE, order, scan.station, detail, quiet=reread)
    revision, stations = await _waited_for(conn, order_id)
    done = {
        r[0] for r in await conn.execute_fetchall("SELECT station FROM station_done WHERE order_id = ?", (order_id,))
    }
    pickup = list(
        await conn.execute_fetchall("SELECT ready_at, handed_out_at FROM order_pickup WHERE order_id = ?", (order_id,))
    )

    # A change took its items out: nothing to make there, whatever the order's state (a ready order's answer said
    # only "already ready", the scan80 probe, F4).
    if scan.station is not None and scan.station not in stations and await _had_ticket(conn, order_id, scan.station):
        detail = f"order {number} has nothing for {scan.station} in revision {revision}: nothing changed"
        return await _insert_scan(conn, scan, now, ScanOutcome.ALREADY_DONE, order, scan.station, detail, quiet=quiet)
    if pickup:
        ready_at, handed_out_at = pickup[0]
        if handed_out_at is not None:
            detail = f"order {number} was already handed out"
            return await _insert_scan(
                conn, scan, now, ScanOutcome.ALREADY_DONE, order, scan.station, detail, quiet=reread
            )
        if not scan.hand_out:
            detail = f"order {number} is already ready"
            return await _insert_scan(
                conn, scan, now, ScanOutcome.ALREADY_DONE, order, scan.station, detail, quiet=quiet
            )
        # A negative gap: the wall clock was stepped back since; a double read is seconds apart, and a clock stepped
        # back by minutes cannot tell one, so it is not taken for one (the hand-out would wait out the step).
        if 0 <= now - ready_at < scan.hand_out_gap_s:
            detail = f"order {number} became ready {now - ready_at:.1f}s ago: taken as a double read, not a hand-out"
            return await _insert_scan(
                conn, scan, now, ScanOutcome.ALREADY_DONE, order, scan.station, detail, quiet=quiet
            )
        # A hands-free scanner re-reads a ticket lying under it every 0.5-1 s: reads of the order on this scanner,
        # each within the gap of the one before, are one presentation. A hand-out needs it out of view and back.
        # The first read of it in this run (after a stop or a crash) has only the written reads, at most
        # _PRESENTATION_WRITTEN_S apart while it lay there: within that and the gap, it is taken as still in view
        # (unless the gap is 0: presentations are off).
        if since is not None:
            ago: float | None = since if since < scan.hand_out_gap_s else None
        elif (
            scan.hand_out_gap_s > 0
            and last_read is not None
            and 0 <= now - last_read < scan.hand_out_gap_s + _PRESENTATION_WRITTEN_S
        ):
            ago = now - last_read
        else:
            ago = None
        if ago is not None:
            detail = (
                f"order {number} read by this scanner {ago:.1f}s before: still in view, taken as the same"
                " presentation, not a hand-out"
            )
            return await _insert_scan(
                conn, scan, now, ScanOutcome.ALREADY_DONE, order, scan.station, detail, quiet=quiet
            )
        result = await _insert_scan(
            conn, scan, now, ScanOutcome.HANDED_OUT, order, scan.station, f"order {number} handed out"
        )
        await conn.execute("UPDATE order_pickup SET handed_out_at = ? WHERE order_id = ?", (now, order_id))
        await add_outbox(
            conn, [outbox_row(order_id, StatusEvent.FULFILLED, "0", now, number=number, scanner=scan.scanner)]
        )
        return result

    if scan.station is not None and scan.station not in stations:
        known = ", ".join(sorted(stations)) or "none"
        detail = f"order {number} has no {scan.station} ticket (its stations: {known})"
        return await _insert_scan(conn, scan, now, ScanOutcome.UNKNOWN, order, scan.station, detail, quiet=quiet)
    # A ticket of an earlier revision: its QR code says which; a number typed that an earlier revision had (the
    # first ticket's, before a change renumbered the order) names the last revision with it. Typed, it made the order
    # ready with a dish the renumbering change added still unmade (the scan80 probe, F3).
    shown = scan.revision
    if shown is None and scan.plain and scan.order_ref and scan.order_ref not in (order_id, number):
        shown = await _numbered_until(conn, order_id, scan.order_ref)
    earlier = shown is not None and shown < revision
    for station in sorted({scan.station} if scan.station is not None else stations) if earlier else ():
        later = await _more_to_make_since(conn, order_id, station, shown or 0)
        if later is not None:
            what = f"this {station} ticket shows" if scan.revision else f"number {scan.order_ref} is of"
            detail = (
                f"order {number}: {what} revision {shown}; revision {later} gave {station} more to make: scan its"
                " change ticket (ÄNDERUNG / CHANGE); nothing changed"
            )
            return await _insert_scan(
                conn, scan, now, ScanOutcome.ALREADY_DONE, order, scan.station, detail, quiet=quiet
            )
    # A plain code from a scanner without a station confirms the whole order, e.g. at the counter.
    targets = {scan.station} if scan.station is not None else stations
    new = sorted(targets - done)
    if targets and not new:
        what = f"{scan.station} ticket" if scan.station else "every ticket"
        detail = f"order {number}: {what} already done"
        return await _insert_scan(conn, scan, now, ScanOutcome.ALREADY_DONE, order, scan.station, detail, quiet=quiet)
    ready = stations <= done | targets
    outcome = ScanOutcome.ORDER_READY if ready else ScanOutcome.TICKET_DONE
    waiting = sorted(stations - done - targets)
    detail = (
        f"order {number} ready" if ready else f"order {number}: {', '.join(new)} done, waiting for {', '.join(waiting)}"
    )
    result = await _insert_scan(conn, scan, now, outcome, order, scan.station, detail)
    await conn.executemany(
        "INSERT INTO station_done(order_id, station, done_at, scan_id) VALUES (?, ?, ?, ?)",
        [(order_id, s, now, result.scan_id) for s in new],
    )
    if ready:
        await conn.execute("INSERT INTO order_pickup(order_id, ready_at) VALUES (?, ?)", (order_id, now))
        await add_outbox(conn, [ready_row(order_id, number, revision, now, scanner=scan.scanner)])
    return result


async def _insert_scan(
    conn: aiosqlite.Connection,
    scan: ScanRequest,
    now: float,
    outcome: ScanOutcome,
    order: aiosqlite.Row | None,
    station: str | None,
    detail: str,
    *,
    quiet: bool = False,
) -> ScanResult:
    """The scans row of a read, and what it did; ``quiet``: a read that changes nothing and is not written (see
    _apply), so it costs the card nothing."""
    order_id, number = (order["id"], order["number"]) if order else (None, None)
    if quiet:
        return ScanResult(None, outcome, order_id, number, station, detail)
    cursor = await conn.execute(
        "INSERT INTO scans(scanned_at, scanner, code, order_id, station, outcome, detail) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (now, scan.scanner, scan.code, order_id, station, outcome, detail),
    )
    scan_id = cursor.lastrowid
    await cursor.close()
    assert scan_id is not None  # an INSERT into a rowid table always has one
    return ScanResult(scan_id, outcome, order_id, number, station, detail)


# The stations an order waits for: those with production items in its current revision (Order.stations, read from
# the stored payload). Not the tickets ever printed: a change may have added a station or emptied one. Parameter ?1:
# the order id.
_STATIONS_SQL = (
    "SELECT DISTINCT json_extract(i.value, '$.station') AS station FROM orders o, json_each(o.payload, '$.items') i"
    " WHERE o.id = ?1 AND json_extract(i.value, '$.requires_production') = 1"
    " AND coalesce(json_extract(i.value, '$.station'), '') <> ''"
)


async def _waited_for(conn: Writer, order_id: str) -> tuple[int, set[str]]:
    """The order's current revision and the stations it waits for."""
    [(revision,)] = await conn.execute_fetchall("SELECT revision FROM orders WHERE id = ?", (order_id,))
    return revision, {r[0] for r in await conn.execute_fetchall(_STATIONS_SQL, (order_id,))}


async def _more_to_make_since(conn: Writer, order_id: str, station: str, shown: int) -> int | None:
    """The first revision after ``shown`` that gave ``station`` something to make (its change ticket says what), or
    None: a ticket showing ``shown`` still shows all there is to make there (a change elsewhere, or only less)."""
    rows = await conn.execute_fetchall(
        "SELECT revision, payload FROM order_revisions WHERE order_id = ?1 AND revision >= coalesce("
        "(SELECT MAX(revision) FROM order_revisions WHERE order_id = ?1 AND revision <= ?2), 0) ORDER BY revision",
        (order_id, shown),
    )
    orders = [parse_stored(json.loads(payload), order_id) for _, payload in rows]
    if not orders or not _makes_more(orders[0], orders[-1], station):
        # All there is to make there now is on it: what a change added, a later one took back before it was made
        # (refused before, naming the change taken back: the scan80 probe, F2).
        return None
    return next(
        (later.revision for before, later in itertools.pairwise(orders) if _makes_more(before, later, station)),
        None,
    )


async def _numbered_until(conn: Writer, order_id: str, number: str) -> int | None:
    """The last revision of an order that showed ``number`` (one a later revision changed)."""
    rows = await conn.execute_fetchall(
        "SELECT MAX(revision) FROM order_revisions WHERE order_id = ? AND json_extract(payload, '$.number') = ?",
        (order_id, number),
    )
    return next((r[0] for r in rows), None)


async def _had_ticket(conn: Writer, order_id: str, station: str) -> bool:
    rows = await conn.execute_fetchall(
        "SELECT 1 FROM print_jobs WHERE order_id = ? AND kind = 'ticket' AND station = ? LIMIT 1", (order_id, station)
    )
    return bool(list(rows))


def ready_row(order_id: str, number: str, at_revision: int, now: float, **fields: Any) -> tuple[Any, ...]:
    """The outbox row of an order becoming ready. Keyed by the revision it became ready at ("0" at revision 1, as
    always): once ready, an order is ready again only after a change reopened it, which is a higher revision."""
    suffix = "0" if at_revision == 1 else str(at_revision)
    return outbox_row(order_id, StatusEvent.READY, suffix, now, number=number, **fields)


def _makes_more(previous: Order, order: Order, station: str) -> bool:
    """Whether the change gives ``station`` something to make: a line added, modified or more of it. Lines taken out
    or fewer of them are struck on the change ticket; nothing to make."""
    return any(
        c.change in (LineChange.ADDED, LineChange.MODIFIED)
        or (
            c.change == LineChange.QUANTITY
            and c.before is not None
            and c.after is not None
            and c.after.qty > c.before.qty
        )
        for c in diff_station(previous, order, station)
    )


@dataclasses.dataclass(frozen=True)
class Followed:
    """What a revision did to the order's progress at the pass."""

    reopened: tuple[str, ...] = ()  # a ready order is open again: the stations it waits for now
    ready: tuple[Any, ...] | None = None  # the outbox row when the change itself made the order ready


async def follow_revision(conn: Writer, previous: Order, order: Order, now: float) -> Followed:
    """Inside the transaction storing revision ``order`` (after ``previous``) of an open order: a done station the
    change gives something to make is open again, and a ready order with a station to wait for again is no longer
    ready; a station emptied is no longer waited for, so the order is ready when every station left is done. A
    handed-out order is left as it is (central was told it was fulfilled)."""
    if order.status == OrderStatus.CANCELLED:
        return Followed()
    pickup = list(await conn.execute_fetchall("SELECT handed_out_at FROM order_pickup WHERE order_id = ?", (order.id,)))
    if pickup and pickup[0][0] is not None:
        return Followed()
    done = {
        r[0] for r in await conn.execute_fetchall("SELECT station FROM station_done WHERE order_id = ?", (order.id,))
    }
    stations = set(order.stations)
    reopen = sorted(s for s in done & stations if _makes_more(previous, order, s))
    if reopen:
        await conn.execute(
            "DELETE FROM station_done WHERE order_id = ? AND station IN (SELECT value FROM json_each(?))",
            (order.id, json.dumps(reopen)),
        )
        done -= set(reopen)
    waiting = tuple(sorted(stations - done))
    if pickup and waiting:
        await conn.execute("DELETE FROM order_pickup WHERE order_id = ?", (order.id,))
        return Followed(reopened=waiting)
    if not pickup and stations and not waiting:
        await conn.execute("INSERT INTO order_pickup(order_id, ready_at) VALUES (?, ?)", (order.id, now))
        return Followed(ready=ready_row(order.id, order.number, order.revision, now, revision=order.revision))
    return Followed()
