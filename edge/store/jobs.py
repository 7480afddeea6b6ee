"""Print jobs table: the spool's state machine queued → printing → printed | failed → dead, and a person's actions."""

from __future__ import annotations

import json
import operator
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any, NamedTuple

import aiosqlite
import structlog

from edge.clock import SYSTEM_CLOCK, Clock
from edge.errors import NotFoundError, UnreadableRowError, WrongStateError
from edge.events import Event, EventBus, JobDead, JobFailed, JobHeld, JobPrinted, JobRedirected
from edge.orders.model import parse_stored
from edge.states import NOT_DONE_JOB_STATES, HoldReason, JobKind, JobState, JobVariant, OrderStatus, StatusEvent
from edge.store.db import Database, DirectConnection, Writer
from edge.store.meta import UPSERT_META
from edge.store.orders import JOBS_BOOT_KEY, job_key, note_boot
from edge.store.outbox import add_outbox, outbox_row
from edge.store.revisions import receipt_said
from edge.store.rows import (
    Copies,
    CopyThere,
    FailureRecorded,
    Job,
    MarksCommitted,
    PrintableJob,
    PrintedMark,
    Rerouted,
    Row,
)

log = structlog.get_logger()

_JOBS = "SELECT j.*, o.number AS order_number FROM print_jobs j JOIN orders o ON o.id = j.order_id"
# What a STORNO strikes is known only when it prints (a ticket printing when the cancel was planned may still go back
# unsent): from the latest ticket of its station then printed, or going out just before it on its printer (its mark
# rides on the STORNO's claim; a spool sends in order), else the revision its plan saw on paper; and each later
# revision before the cancel a ticket of the station may have put on paper: printing, or discarded after some of it
# went out (went_out: cut short, failed part-way, caught by a crash; not one put back unsent, nor a person's COPY that
# never went out).
_STORNO_BASE = (
    "COALESCE((SELECT e.revision FROM print_jobs e WHERE e.order_id = j.order_id AND e.station IS j.station"
    " AND e.kind = 'ticket' AND e.id < j.id"
    " AND (e.state = 'printed' OR (e.state = 'printing' AND e.printer IS j.printer)) ORDER BY e.id DESC LIMIT 1),"
    " j.change_from)"
)
# A receipt after one of its order's receipts of an older revision that may be on paper (printed, going out now, or
# cut short: went_out) is marked as replacing the latest such one: the guest may hold two totals. Known only when it
# prints, as for a STORNO: a receipt printing when the change was planned may still go back unsent and be dropped.
_REPLACED_RECEIPT = (
    "(SELECT {} FROM print_jobs e WHERE j.kind = 'receipt' AND e.order_id = j.order_id AND e.kind = 'receipt'"
    " AND e.id < j.id AND e.revision < j.revision AND (e.state IN ('printed', 'printing') OR e.went_out)"
    " ORDER BY e.id DESC LIMIT 1)"
)
_REPLACES_REVISION = _REPLACED_RECEIPT.format("e.revision")
_REPLACED_PRINTED_AT = _REPLACED_RECEIPT.format("CASE e.state WHEN 'printed' THEN e.printed_at END")
# The order's number on that receipt: a revision may have renumbered the order since.
_REPLACED_NUMBER = _REPLACED_RECEIPT.format(
    "(SELECT json_extract(r.payload, '$.number') FROM order_revisions r"
    " WHERE r.order_id = e.order_id AND r.revision = e.revision)"
)
# A change ticket a person's whole COPY of its station shows already (the COPY came after it, of its revision or a
# later one, and may be on paper) prints marked COPY: a held "+ 1x Tiramisu" released after the COPY printed unmarked,
# and the cook read the tiramisu twice (the lifecycle79 probe, F6). One a later revision rewrote carries news: unmarked.
_SHOWN_BY_A_COPY = (
    "(j.variant = 'change' AND EXISTS (SELECT 1 FROM print_jobs c WHERE c.order_id = j.order_id"
    " AND c.station IS j.station AND c.kind = j.kind AND c.variant IS NULL AND c.copy AND c.id > j.id"
    " AND c.revision >= j.revision AND (c.state IN ('printed', 'printing') OR c.went_out)"
    # one printed before that COPY came out printed unmarked: its preview says so (the receipt80 probe, R4)
    " AND (j.state != 'printed' OR c.printed_at < j.printed_at)))"
)
# A receipt's sale has opened its cash drawer (the pulse goes first): a receipt of the order printed, going out now (not
# this one), or that went out other than in hang-ups before the printer was seen to take its first bytes (pulse_lost):
# cut short after them, stopped by a fault, caught by a crash. The next receipt of a sale whose every receipt never
# reached the printer opens it, a COPY too; before stop 81 none did (the verify80 probe, O2).
_DRAWER_OPENED = (
    "EXISTS (SELECT 1 FROM print_jobs e WHERE e.order_id = j.order_id AND e.kind = 'receipt'"
    " AND (e.state = 'printed' OR (e.state = 'printing' AND e.id != j.id) OR (e.went_out AND NOT e.pulse_lost)))"
)
# A job renders its own revision (order_revisions once an order has more than one). Its age counts from when it was
# made (its created_at, stored with the order or with the revision that made it: a change to a 3-hour-old order is held
# like any stale ticket, and a later revision rewriting it in place does not move that time, which would count its
# wait twice, edge/printing/ages.py); a reprint's COPY from when its order came.
PRINTABLE = (
    "SELECT j.*, o.number AS order_number,"
    " COALESCE((SELECT r.payload FROM order_revisions r WHERE r.order_id = j.order_id AND r.revision = j.revision),"
    " o.payload) AS payload,"
    " (SELECT r.payload FROM order_revisions r WHERE r.order_id = j.order_id AND r.revision ="
    f" CASE WHEN j.variant = 'cancel' THEN {_STORNO_BASE} ELSE j.change_from END) AS base_payload,"
    " CASE WHEN j.variant = 'cancel' THEN (SELECT json_group_array(r.payload) FROM order_revisions r"
    f" WHERE r.order_id = j.order_id AND r.revision > {_STORNO_BASE} AND r.revision < j.revision"
    " AND EXISTS (SELECT 1 FROM print_jobs e WHERE e.order_id = j.order_id AND e.station IS j.station"
    " AND e.kind = 'ticket' AND e.revision = r.revision AND e.id < j.id"
    " AND (e.state = 'printing' OR (e.state = 'discarded' AND e.went_out)))) END AS struck_payloads,"
    " CASE WHEN j.variant IS NULL AND j.copy THEN o.received_at ELSE j.created_at END AS order_received_at,"
    " o.created_at AS order_created_at, o.due_at AS order_due_at,"
    " CASE WHEN j.variant IS NULL THEN NULL ELSE (SELECT MAX(CASE e.state WHEN 'printed' THEN e.printed_at"
    " WHEN 'printing' THEN j.created_at END) FROM print_jobs e WHERE e.order_id = j.order_id"
    " AND e.station IS j.station AND e.kind = 'ticket' AND e.id < j.id) END AS follows_printed_at,"
    f" {_REPLACES_REVISION} AS replaces_revision, {_REPLACED_PRINTED_AT} AS replaced_printed_at,"
    f" {_REPLACED_NUMBER} AS replaced_number,"
    f" {_SHOWN_BY_A_COPY} AS shown_by_a_copy,"
    f" CASE WHEN j.kind = 'receipt' THEN {_DRAWER_OPENED} ELSE 0 END AS drawer_opened"
    " FROM print_jobs j JOIN orders o ON o.id = j.order_id"
)
_PRINTABLE_BY_ID = PRINTABLE + " WHERE j.id = ?"
# A whole ticket's (or receipt's) COPY a person asked for is going to paper: the original of that station, still not
# printed (held as stale, waiting for a printer that was off, failed), repeats it from now on and prints marked COPY
# too, if at all. Unmarked after the COPY, the cook took it for a second order.
_ORIGINALS_REPEAT_COPIES = (
    "UPDATE print_jobs SET copy = 1 WHERE variant IS NULL AND NOT copy"
    " AND state IN ('queued', 'failed', 'held', 'dead') AND EXISTS (SELECT 1 FROM print_jobs c"
    " WHERE c.id IN (SELECT value FROM json_each(?)) AND c.order_id = print_jobs.order_id"
    " AND c.kind = print_jobs.kind AND c.station IS print_jobs.station AND c.id > print_jobs.id)"
)
# A change or void ticket waits while an earlier ticket of its order and station is still to print: the kitchen reads
# tickets in revision order. Earlier by revision, then by arrival: a change rewritten to a newer revision while a
# COPY of an older one was going out stays ahead of that COPY by arrival, and the COPY, put back in line (cut short, a
# crash), printed last, the older revision the cook's last word.
# An earlier ticket 'printing' on the same printer went out before (a spool sends one job after the other; its printed
# mark may still be waiting for the next commit), so only one printing elsewhere (after a failover) keeps it waiting.
# A whole ticket (a COPY) does not overtake a change or void ticket of its revision or an earlier one that came before
# it on its printer and waits its turn there: tickets moved to a backup together printed the change after a COPY that
# already showed it. One on another printer does not hold it: a person's reprint to a printer that works comes out now.
# Every wait is for a ticket earlier by (revision, arrival), so no two tickets wait for each other.
_IN_TURN = (
    "(NOT EXISTS (SELECT 1 FROM print_jobs e WHERE e.order_id = j.order_id AND e.station IS j.station AND CASE"
    " WHEN j.variant IS NULL THEN e.variant IS NOT NULL AND e.revision <= j.revision AND e.id < j.id"
    " AND e.printer IS j.printer AND e.state IN ('queued', 'failed')"
    " ELSE (e.revision < j.revision OR (e.revision = j.revision AND e.id < j.id))"
    " AND (e.state IN ('queued', 'failed') OR (e.state = 'printing' AND e.printer IS NOT j.printer)) END))"
)
# Where a job goes when its attempt ends without it surely on paper (released unsent, cut short, failed, caught by a
# crash): back in line, or, once its order is cancelled, discarded: no void ticket or receipt prints again; a ticket
# that was printing when the order was cancelled got its STORNO then (see edge/orders/changes.py). The STORNO itself
# always goes back in line: it is what voids the others.
# A job going back in line (released unsent, cut short, failed) that its order no longer wants is discarded instead:
# any but a STORNO of a cancelled order, and a receipt the order last said no to (a revision's plan discards such jobs
# waiting; these were going out then). A receipt job exists, so an order that never said wanted one.
_RECEIPT_SAID = receipt_said("o.id", "o.revision + 1")
_NOT_WANTED = (
    "EXISTS (SELECT 1 FROM orders o WHERE o.id = print_jobs.order_id AND ((o.status = 'cancelled'"
    " AND print_jobs.variant IS NOT 'cancel') OR (print_jobs.kind = 'receipt'"
    f" AND {_RECEIPT_SAID} = 0)))"
)
# A job taken out of 'printing' without its outcome: back in line, or discarded if its order is not wanted now.
BACK_IN_LINE = f"CASE WHEN {_NOT_WANTED} THEN 'discarded' ELSE 'queued' END"
# Meta keys of what a crash left in a printer's buffers (see requeue_interrupted): the printer's name after _CLEAR_KEY,
# and the device it was on (how it is reached, as its transport names it) after _CLEAR_DEVICE_KEY, so a printer renamed
# or given a new address before the next start is still cleared.
_CLEAR_KEY = "clear_buffers:"
_CLEAR_DEVICE_KEY = "clear_device:"
_ANSWERED_KEY = "answered_status:"  # a device after it: what is there answered DLE EOT in a run (value unused)
_NO_GS_R_KEY = "no_gs_r:"  # a device after it: what is there answered DLE EOT but not GS r when last learnt
# A device after it: a run marked jobs printed there once the printer held them, not once they were out (no GS r, or
# sent without asking); its buffers may hold such jobs at a crash, whatever the printer is called or where it is then.
_HELD_KEY = "marked_held:"
_STOPPED_KEY = "stopped_at"  # the wall time of the agent's last clean stop (JobStore.mark_stopped)
# JSON {"boot", "mono", "waits": {job id: seconds waited}}: the jobs waiting at that stop (JobStore.mark_stopped)
_WAITS_KEY = "waits_at_stop"
_DEVICE_KEY = "printer_device:"  # a printer's name after it, the device it reached in the latest run the value
# A printer's name after it that left the config while tickets still name it, the device it reached last (value): a
# route to that device a later start adds back is the same printer, renamed (JobStore.last_devices).
_LEFT_KEY = "left_printer_device:"
# A receipt released unsent (no COPY: it was never on paper) that a change's plan counted maybe on paper: it shows
# the order's current revision, or, with a later receipt of the order beside it (receipts.on_change = "reprint"; not
# a COPY a person asked for), it is dropped: the guest gets one receipt, of the change. A ticket keeps its revision:
# the plan gave its station a change ticket from it.
_UNSENT_RECEIPT = "(kind = 'receipt' AND NOT copy)"
_RELEASED = (
    f"state = CASE WHEN {_NOT_WANTED} OR ({_UNSENT_RECEIPT} AND EXISTS (SELECT 1 FROM print_jobs l"
    " WHERE l.order_id = print_jobs.order_id AND l.kind = 'receipt' AND l.id > print_jobs.id"
    " AND NOT l.copy AND l.state != 'discarded')) THEN 'discarded' ELSE 'queued' END,"
    f" revision = CASE WHEN {_UNSENT_RECEIPT} THEN (SELECT revision FROM orders WHERE id = print_jobs.order_id)"
    " ELSE revision END"
)
# A Reprint where a COPY of it is still there prints nothing: two people pressing a moment apart (the cook on the
# status page, the manager on the phone; a double click) each gave the kitchen and the guest a COPY, at paper speed
# the first one already going out or just out. Just out: 10 s covers a second press made without seeing the first COPY
# (the status page refreshes every 5 s by default) and is shorter than walking to the printer and reading it, after
# which a cook asking again means another copy. Counted on the monotonic clock for a COPY this run saw come out
# (:just_out, of JobStore._copies_out): printed_at is wall time, and after NTP stepped the clock an hour either way
# a press a moment later printed a second COPY, and a step back brought a COPY of long ago back to "just out". One
# this run did not see come out (before a restart) goes by printed_at, either side of now: a COPY of the run before a
# quick restart is still just out.
COPY_JUST_OUT_S = 10.0
_COPY_THERE = (
    "copy AND (state IN ('queued', 'failed', 'printing') OR (state = 'printed'"
    " AND (id IN (SELECT value FROM json_each(:just_out)) OR (ABS(:now - printed_at) < :just_out_s"
    " AND id NOT IN (SELECT value FROM json_each(:seen_out))))))"
)
REVIVED_WITHIN_S = 12 * 3600  # a ticket given up longer ago than a service is not brought back by itself
# An original still to print on its own (in line, or tried again) or going out now: a reprint copies it not beside
# itself. 'printing' lasts as long as its paper (a long ticket: seconds, until GS r says it is out): a Reprint pressed
# because it had not come out yet queued a whole COPY after it (the loop80 probe, F1), where the job's own Reprint
# refused it. One its spool saw come out (:out) is out, its printed mark riding with the spool's next commit.
_ORIGINAL_WAITING = (
    "(NOT copy AND variant IS NULL AND (state IN ('queued', 'failed')"
    " OR (state = 'printing' AND id NOT IN (SELECT value FROM json_each(:out)))))"
)
# A person's COPY shows the order as it is now: a ticket of its station held or given up (dead) before it, the
# original or a change, is settled by it (discarded, saying why). Left as it was, its Release or Retry (the manager's
# page still offered them) printed the order a second time, and a dead one's alarm never ended (the api80 probe, F1,
# F2). ?1 why (_REPLACED_WHY), ?2 the order, ?3 kind, ?4 station, ?5 the COPY.
_REPLACED_WHY = "replaced by its COPY, job "
# Of the jobs given (:ids), those not on paper yet that a person left to print: waiting in line, going out, held; or
# settled by a COPY (_REPLACED_BY_A_COPY, followed from COPY to COPY) that is so. A person's discard settles a job;
# one given up again (dead) is told by its own alarm, on the printer it is on now.
_HEIRS = (
    "WITH RECURSIVE heirs(origin, id) AS (SELECT value, value FROM json_each(:ids)"
    " UNION SELECT h.origin, c.id FROM heirs h JOIN print_jobs j ON j.id = h.id JOIN print_jobs c"
    " ON c.order_id = j.order_id AND c.kind = j.kind AND c.station IS j.station AND c.id > j.id"
    " WHERE j.state = 'discarded' AND j.last_error = :why || c.id)"
)
_STILL_TO_PRINT = (
    _HEIRS + " SELECT DISTINCT h.origin FROM heirs h JOIN print_jobs j ON j.id = h.id"
    " WHERE j.state IN ('queued', 'failed', 'printing', 'held')"
)
# Each job's last heir and its state (SQLite takes the bare column from the row MAX picked): how the ticket ended.
_ENDINGS = (
    _HEIRS + " SELECT h.origin, MAX(h.id), j.state FROM heirs h JOIN print_jobs j ON j.id = h.id GROUP BY h.origin"
)
_REPLACED_BY_A_COPY = (
    "UPDATE print_jobs SET state = 'discarded', held_reason = NULL, last_error = ?1 || ?5"
    " WHERE order_id = ?2 AND kind = ?3 AND station IS ?4 AND id < ?5 AND state IN ('held', 'dead')"
    " AND (variant IS NULL OR variant != 'cancel')"
)
_COPIES_OUT_KEPT = 4096  # the newest COPYs a run remembers seeing come out; one older goes by printed_at again
# What a reprint copies: the receipt if one was not dropped before it printed (by a revision that no longer wants it,
# or a person), and a ticket for each station with production items in the current revision, whether its first
# ticket was an original or came with a change (a station gaining its first items); not a station a change emptied.
# ?1 the order, ?2 one station or NULL for all, ?3 one kind or NULL for both (a job's reprint: its receipt alone).
_REPRINTABLE = """
SELECT kind, station, MAX(priority) FROM print_jobs
WHERE order_id = ?1 AND (?2 IS NULL OR station = ?2) AND (?3 IS NULL OR kind = ?3)
  AND ((kind = 'receipt' AND state != 'discarded') OR station IN (
        SELECT json_extract(i.value, '$.station') FROM orders o, json_each(o.payload, '$.items') i
        WHERE o.id = ?1 AND json_extract(i.value, '$.requires_production')))
GROUP BY kind, station ORDER BY MIN(id)
"""
# How soon a spool looks again at a change ticket held back by an earlier ticket printing elsewhere (see _IN_TURN).
_BLOCKED_LOOK_S = 1.0
# A retry set further ahead than the longest delay there is was set before the wall clock stepped back: due now.
# Not one of the jobs a spool leaves in line for now (:skip, a JSON array of ids).
_NOT_SKIPPED = "j.id NOT IN (SELECT value FROM json_each(:skip))"
_DUE = "(j.next_attempt_at <= :now OR j.next_attempt_at > :now + :max_delay)"
# The job's printer is one the config has (:printers, a JSON array; NULL: any printer).
_CONFIGURED = "(:printers IS NULL OR printer IN (SELECT value FROM json_each(:printers)))"


def _printable(row: Row) -> PrintableJob | UnreadableRowError:
    try:
        return PrintableJob.from_row(row)
    except UnreadableRowError as err:
        return err


def _readable(rows: Sequence[Row]) -> list[Job]:
    """The jobs this version can read; the others are left out, so one row a newer version wrote does not fail a
    whole list. Not a warning: a status page lists jobs every few seconds, and the spool already logged, alerted and
    reported the job once, as it ended it."""
    return _readable_as(rows, Job)


def _readable_as(rows: Sequence[Row], kind: type[Job]) -> list[Job]:
    jobs = []
    for row in rows:
        try:
            jobs.append(kind.from_row(row))
        except UnreadableRowError as err:
            log.debug("job_unreadable_left_out", job_id=err.row_id, error=str(err))
    return jobs


async def _release(conn: Writer, printer: str, job_ids: Sequence[int]) -> None:
    """Claimed jobs of ``printer`` never sent back in line, unmarked (see _RELEASED); a job no longer 'printing' is
    left as it is."""
    if job_ids:
        await conn.execute(
            f"UPDATE print_jobs SET {_RELEASED}"
            " WHERE state = 'printing' AND printer = ? AND id IN (SELECT value FROM json_each(?))",
            (printer, json.dumps(list(job_ids))),
        )


async def _replace_meta_under(conn: Writer, prefix: str, values: Mapping[str, str]) -> None:
    """The meta values under ``prefix`` become ``values`` (by the rest of the key), those not in it gone."""
    await conn.execute("DELETE FROM meta WHERE substr(key, 1, :n) = :prefix", {"n": len(prefix), "prefix": prefix})
    await conn.executemany(
        "INSERT INTO meta(key, value) VALUES (?, ?)", [(prefix + name, value) for name, value in values.items()]
    )


def _heirs(named: Collection[str], last: Mapping[str, str], devices: Mapping[str, str]) -> list[str]:
    """For records to clear (``named``) of a printer whose name and last device (``last``: name -> device in the last
    run) are both gone from the config (``devices``), as when it was renamed and given a new address at once: the
    printers new in it (neither name nor device in the last run), one of which may be that printer. A needless clear
    wipes at most what a till sent it just then; a missed one prints the rest of a cut-short ticket, headless, after
    the next roll."""
    configured = set(devices.values())
    if not any(name in last and name not in devices and last[name] not in configured for name in named):
        return []
    known = set(last.values())
    return [name for name, device in devices.items() if name not in last and device not in known]


# What a job's event (`printed`, `failed`) tells central of the paper: which of the order's tickets or receipts it is,
# so a STORNO or a change ticket printed after the order's `cancelled` or `updated` is not the order printed again.
_SHOWN = "kind, variant, revision, copy"


def _job_event(
    order_id: str, event: StatusEvent, job_id: int, now: float, shown: Sequence[Any], **fields: Any
) -> tuple[Any, ...]:
    """The outbox row of a job's event; ``shown``: the job's columns in _SHOWN."""
    kind, variant, revision, copy = shown
    return outbox_row(
        order_id,
        event,
        str(job_id),
        now,
        job_id=job_id,
        kind=kind,
        variant=variant or "original",  # a whole ticket or receipt
        revision=revision,
        copy=bool(copy),
        **fields,
    )


class WaitingJob(NamedTuple):
    """A job not yet printed (queued, printing, failed), for the wait kept in memory (edge/printing/ages.py)."""

    id: int
    created_at: float
    order_created_at: str  # central's created_at, ISO 8601


class StaleJob(NamedTuple):
    """A job its spool found stale (JobStore.hold_many): held only if still in the state it was read in."""

    id: int
    expected: JobState
    age_s: float


class MovedJob(NamedTuple):
    id: int
    order_id: str


async def _up_to_date(conn: aiosqlite.Connection, job_ids: Collection[int]) -> None:
    """Whole tickets a person sends back in line that are COPYs of an older revision (a ticket cut short, then dead,
    or held, while the order changed: its change ticket printed meanwhile) show the order as it is now, so what the
    cook holds last agrees with the change ticket. Kept at their revision, they printed the old order after it. A
    station the order no longer has items for keeps the revision its ticket showed."""
    rows = await conn.execute_fetchall(
        "SELECT j.id, j.station, o.id, o.revision, o.payload FROM print_jobs j JOIN orders o ON o.id = j.order_id"
        " WHERE j.id IN (SELECT value FROM json_each(?)) AND j.kind = 'ticket' AND j.variant IS NULL AND j.copy"
        " AND j.revision < o.revision AND o.status = 'open'",
        (json.dumps(list(job_ids)),),
    )
    for job_id, station, order_id, revision, payload in rows:
        if parse_stored(json.loads(payload), order_id).production_items(station):
            await conn.execute("UPDATE print_jobs SET revision = ? WHERE id = ?", (revision, job_id))


class JobStore:
    def __init__(
        self,
        db: Database,
        *,
        clock: Clock = SYSTEM_CLOCK,
        printers: Collection[str] | None = None,
        bus: EventBus | None = None,
    ) -> None:
        """``printers``: the configured printers; a person cannot send a job back in line to any other (None: any).
        ``bus``: hears what a write did (JobPrinted, JobFailed, JobDead, JobHeld, JobRedirected) once it committed."""
        self._db = db
        self._clock = clock  # wall time for what is written down (held_at, printed_at, …)
        self._printers = None if printers is None else json.dumps(sorted(printers))
        self._bus = bus if bus is not None else EventBus()  # nobody listens: a store used on its own
        self._copies_out: dict[int, float] = {}  # COPYs this run marked printed (the newest): when, monotonic

    async def next_burst(
        self, printer: str, now: float, *, max_delay: float, limit: int, skip: Collection[int] = ()
    ) -> list[PrintableJob | UnreadableRowError]:
        """Up to ``limit`` due jobs for a printer, in the order they print: pushed orders before a recovered backlog
        (new orders must not wait behind hours of missed ones), then highest priority, then arrival. ``max_delay``: no
        retry is due later than this from ``now``, whatever the wall clock did since it was planned. A row this version
        cannot read comes as its error, in its place: the spool ends it instead of stalling on it. ``skip``: jobs left
        in line for now (their age cannot be told yet, JobAges.unconfirmed), which the ones behind them pass."""
        rows = await self._db.fetchall(
            PRINTABLE + f" WHERE j.printer = :printer AND j.state IN ('queued', 'failed') AND {_DUE} AND {_IN_TURN}"
            f" AND {_NOT_SKIPPED} ORDER BY o.source = 'recovery', j.priority DESC, j.id LIMIT :limit",
            {"printer": printer, "now": now, "max_delay": max_delay, "limit": limit, "skip": json.dumps(list(skip))},
        )
        return [_printable(row) for row in rows]

    async def next_due_at(
        self, printer: str, now: float, *, max_delay: float, skip: Collection[int] = ()
    ) -> float | None:
        """When the printer's spool next has a job to claim (``skip``: as for next_burst). A change ticket waiting for
        an earlier ticket of its station on another printer (after a failover) is looked at again in a second: that
        spool's print does not wake this one."""
        row = await self._db.fetchone(
            f"SELECT MIN(CASE WHEN NOT {_IN_TURN} THEN :now + :blocked_look"
            " WHEN j.next_attempt_at > :now + :max_delay THEN :now ELSE j.next_attempt_at END)"
            f" FROM print_jobs j WHERE j.printer = :printer AND j.state IN ('queued', 'failed') AND {_NOT_SKIPPED}",
            {
                "printer": printer,
                "now": now,
                "max_delay": max_delay,
                "blocked_look": _BLOCKED_LOOK_S,
                "skip": json.dumps(list(skip)),
            },
        )
        return None if row is None or row[0] is None else float(row[0])

    async def waiting(self) -> list[WaitingJob]:
        """Every job not yet printed that prints on its own (queued, printing, failed)."""
        rows = await self._db.fetchall(
            "SELECT j.id, j.created_at, o.created_at FROM print_jobs j JOIN orders o ON o.id = j.order_id"
            " WHERE j.state IN ('queued', 'printing', 'failed')"
        )
        return [WaitingJob(r[0], r[1], r[2]) for r in rows]

    async def last_written(self) -> float | None:
        """The wall time of the store's last write of an order or a job (the newest order's receipt, the newest job's
        creation) or of the agent's last clean stop (mark_stopped; None for an empty store): it was at least that
        "now" then, whatever the box clock says at a start (edge/printing/ages.py). The last rows, not the greatest
        times: those may come from a clock that was ahead then and has been put right since."""
        row = await self._db.fetchone(
            "SELECT MAX(COALESCE((SELECT received_at FROM orders ORDER BY rowid DESC LIMIT 1), 0),"
            " COALESCE((SELECT created_at FROM print_jobs ORDER BY id DESC LIMIT 1), 0),"
            " COALESCE((SELECT CAST(value AS REAL) FROM meta WHERE key = ?), 0))",
            (_STOPPED_KEY,),
        )
        return float(row[0]) if row is not None and row[0] else None

    async def mark_stopped(self, waits: Mapping[int, float] | None = None) -> None:
        """The wall time of a clean stop, for last_written: a ticket that waited with nothing stored meanwhile has
        its wait on record too; and ``waits``, each waiting job's wait as this run's monotonic clock measured it,
        with the stop's monotonic time and boot (stopped_waits): no step of the wall clock changes them (one write
        per stop)."""
        kept: dict[str, object] = {"boot": self._clock.boot(), "mono": self._clock.mono()}
        kept["waits"] = {str(k): round(v, 3) for k, v in (waits or {}).items()}
        async with self._db.transaction() as conn:
            await conn.execute(UPSERT_META, (_STOPPED_KEY, repr(self._clock.wall())))
            await conn.execute(UPSERT_META, (_WAITS_KEY, json.dumps(kept)))

    async def _last_stop(self) -> tuple[float, float, dict[str, float]] | None:
        """The last clean stop's wall and monotonic times and the waits it kept (mark_stopped), if it was in this boot
        (a run of it shares the monotonic clock); None otherwise (a reboot, a crash, a store from before stop 63)."""
        rows = await self._db.fetchall("SELECT key, value FROM meta WHERE key IN (?, ?)", (_STOPPED_KEY, _WAITS_KEY))
        found = {key: value for key, value in rows}
        if _STOPPED_KEY not in found or _WAITS_KEY not in found:
            return None
        kept = json.loads(found[_WAITS_KEY])
        if kept.get("boot") is None or kept.get("boot") != self._clock.boot():
            return None
        return float(found[_STOPPED_KEY]), float(kept["mono"]), kept.get("waits", {})

    async def stopped_waits(self) -> dict[int, float]:
        """The waits the last clean stop in this boot kept, each with the monotonic time since that stop added; none
        otherwise: the wall clock then tells, as far as it can (JobAges.seed)."""
        stop = await self._last_stop()
        down = self._clock.mono() - stop[1] if stop is not None else -1.0
        if stop is None or down < 0:
            return {}
        return {int(k): float(v) + down for k, v in stop[2].items()}

    async def boot_waits(self) -> dict[int, float]:
        """How long each job not done yet that was stored in this boot has waited, on the monotonic clock since it was
        stored (created_mono): what a kill in this boot leaves, as a clean stop's kept waits do (stopped_waits)."""
        boot = self._clock.boot()
        row = await self._db.fetchone("SELECT value FROM meta WHERE key = ?", (JOBS_BOOT_KEY,))
        noted = json.loads(row[0]) if row is not None else {}
        if boot is None or noted.get("boot") != boot:
            return {}
        rows = await self._db.fetchall(
            "SELECT id, created_mono FROM print_jobs WHERE id >= ? AND created_mono IS NOT NULL"
            " AND state IN (SELECT value FROM json_each(?))",
            (int(noted["from_job"]), json.dumps(sorted(NOT_DONE_JOB_STATES))),
        )
        now = self._clock.mono()
        return {job_id: now - mono for job_id, mono in rows if now >= mono}

    async def last_stop(self) -> tuple[float, float] | None:
        """(wall, monotonic) time of the last clean stop, if it was in this boot: the wall clock's step between that
        run and this one is then known, as a step within a run is."""
        stop = await self._last_stop()
        return None if stop is None else (stop[0], stop[1])

    async def get(self, job_id: int) -> PrintableJob:
        row = await self._db.fetchone(_PRINTABLE_BY_ID, (job_id,))
        if row is None:
            raise NotFoundError(f"print job {job_id} does not exist")
        return PrintableJob.from_row(row)

    async def for_order(self, order_id: str) -> list[Job]:
        rows = await self._db.fetchall(_JOBS + " WHERE j.order_id = ? ORDER BY j.id", (order_id,))
        return _readable(rows)

    async def for_orders(self, order_ids: list[str]) -> list[Job]:
        """Every job of these orders, oldest first."""
        rows = await self._db.fetchall(
            _JOBS + " WHERE j.order_id IN (SELECT value FROM json_each(?)) ORDER BY j.id", (json.dumps(order_ids),)
        )
        return _readable(rows)

    async def by_ids(self, job_ids: list[int]) -> list[Job]:
        """These jobs (those that exist), oldest first."""
        rows = await self._db.fetchall(
            _JOBS + " WHERE j.id IN (SELECT value FROM json_each(?)) ORDER BY j.id", (json.dumps(job_ids),)
        )
        return _readable(rows)

    async def still_to_print(self, job_ids: Collection[int]) -> set[int]:
        """Of these jobs, those not on paper yet and not settled by a person: in line, going out or held, themselves or
        the COPY that replaced them (_STILL_TO_PRINT). A dead ticket's alarm ends only once none is."""
        rows = await self._db.fetchall(_STILL_TO_PRINT, {"ids": json.dumps(sorted(job_ids)), "why": _REPLACED_WHY})
        return {r[0] for r in rows}

    async def endings(self, job_ids: Collection[int]) -> dict[int, JobState]:
        """How each of these jobs ended, followed from COPY to COPY: the state of the last one, so a ticket replaced
        by its COPY that printed reads printed, one a person discarded reads discarded. Told in an alarm's all-clear."""
        rows = await self._db.fetchall(_ENDINGS, {"ids": json.dumps(sorted(job_ids)), "why": _REPLACED_WHY})
        return {r[0]: JobState(r[2]) for r in rows}

    async def recent(
        self,
        *,
        state: JobState | None = None,
        printer: str | None = None,
        limit: int = 100,
        oldest_first: bool = False,
    ) -> list[Job]:
        """Newest first (or the oldest, oldest first), of one state and printer if given."""
        # A state named as a plain equality, so the state index finds its few jobs (held, dead) among every printed
        # one kept: "?1 IS NULL OR j.state = ?1" cannot use an index and read them all, newest first.
        where = "j.state = ?1" if state is not None else "?1 IS NULL"
        rows = await self._db.fetchall(
            _JOBS
            + f" WHERE {where} AND (?2 IS NULL OR j.printer = ?2) ORDER BY j.id {'ASC' if oldest_first else 'DESC'}"
            + " LIMIT ?3",
            (state, printer, limit),
        )
        return _readable(rows)

    async def oldest(self, state: JobState, limit: int) -> list[PrintableJob]:
        """The ``limit`` oldest jobs of one state, oldest first (held tickets: those that waited longest), with their
        order's times (edge.printing.ages takes an order's age from them)."""
        rows = await self._db.fetchall(PRINTABLE + " WHERE j.state = ? ORDER BY j.id LIMIT ?", (state, limit))
        return [job for job in _readable_as(rows, PrintableJob) if isinstance(job, PrintableJob)]

    async def unrouted_stations(self) -> set[str | None]:
        """Stations (None: receipts) with jobs held because no printer serves them: none was ever set up for them, or
        the printer they had is still configured but the config routes them to it no more."""
        rows = await self._db.fetchall(
            "SELECT DISTINCT station FROM print_jobs WHERE state = 'held' AND held_reason = :reason"
            f" AND (printer = '' OR {_CONFIGURED})",
            {"reason": HoldReason.NO_PRINTER, "printers": self._printers},
        )
        return {r[0] for r in rows}

    async def counts(self, states: Collection[JobState] | None = None) -> dict[tuple[str, JobState], int]:
        """Jobs by (printer, state), of these states (None: all); pairs with none are left out. All of them reads
        every job retention keeps (the spool's index, end to end): what runs every few seconds asks for
        NOT_DONE_JOB_STATES, found by the state index."""
        if states is None:
            rows = await self._db.fetchall("SELECT printer, state, COUNT(*) FROM print_jobs GROUP BY printer, state")
        else:
            rows = await self._db.fetchall(
                "SELECT printer, state, COUNT(*) FROM print_jobs WHERE state IN (SELECT value FROM json_each(?))"
                " GROUP BY printer, state",
                (json.dumps(sorted(states)),),
            )
        return {(r[0], JobState(r[1])): r[2] for r in rows}

    async def mark_printing(self, job_id: int, printer: str, *, revision: int | None = None) -> bool:
        """Claim a waiting job for ``printer``; False if a failover moved it elsewhere (or a person held it)
        meanwhile, or an order change rewrote it to another ``revision`` than the one rendered (None: any)."""
        return job_id in (await self.commit_marks(printer, claim=[(job_id, revision, None)])).claimed

    async def commit_marks(
        self,
        printer: str,
        *,
        printed: Sequence[PrintedMark] = (),
        claim: Sequence[tuple[int, int | None, str | None]] = (),
        release: Sequence[int] = (),
    ) -> MarksCommitted:
        """A spool's marks in one commit (one fsync on an SD card): the jobs the printer confirmed since the last one
        (``printed``: JobPrinted and central's 'printed' row for each still 'printing'), the jobs it is about to send
        (``claim``: (job, revision rendered, settings it was rendered with) triples; queued or failed jobs of
        ``printer`` become 'printing' and keep those settings for `edge preview`; a job a
        failover moved, a person held or an order change rewrote to another revision meanwhile is left out), and
        claimed jobs it never sent (``release``: back to 'queued', no COPY mark).

        The claim is durable before this returns, so before the spool sends a byte of those jobs: after a crash they
        reprint marked COPY. A printed mark that has not ridden on a commit yet is lost in a crash: that job is still
        'printing' and reprints marked COPY too, never as an original."""
        now, mono = self._clock.wall(), self._clock.mono()
        done: dict[int, float] = {}

        async def marks(conn: DirectConnection, events: list[Event]) -> list[int]:
            for mark in printed:
                rows = await conn.execute_fetchall(
                    "UPDATE print_jobs SET state = 'printed', printed_at = ?, last_error = NULL"
                    f" WHERE id = ? AND state = 'printing' RETURNING printer, {_SHOWN}",
                    (now, mark.job_id),
                )
                for job_printer, *shown in rows:
                    await add_outbox(conn, [_job_event(mark.order_id, StatusEvent.PRINTED, mark.job_id, now, shown)])
                    *_, copy = shown  # the job's columns in _SHOWN, its copy mark last
                    events.append(
                        JobPrinted(
                            job_id=mark.job_id, order_id=mark.order_id, printer=job_printer, latency_s=mark.latency_s
                        )
                    )
                    done[mark.job_id] = now
                    if copy:  # kept before the commit: a Reprint the moment the row reads printed finds it here
                        self._copies_out[mark.job_id] = mono
            if held := {mark.held_on for mark in printed if mark.held_on}:
                await conn.executemany(
                    "INSERT OR IGNORE INTO meta(key, value) VALUES (?, '')", [(_HELD_KEY + device,) for device in held]
                )
            await _release(conn, printer, release)
            if not claim:
                return []
            # Committed before the first byte goes out: after a crash we know these jobs may be half on paper.
            # Each claimed job is looked up by its id (the unary + keeps SQLite off the spool index): walking the
            # printer's queued jobs instead cost time in proportion to the backlog, on the writer, at every claim.
            claimed = await conn.execute_fetchall(
                "UPDATE print_jobs SET state = 'printing', rendered_with = c.rendered_with"
                " FROM (SELECT value ->> 0 AS id, value ->> 1 AS revision, value ->> 2 AS rendered_with"
                " FROM json_each(?)) AS c"
                " WHERE print_jobs.id = c.id AND +print_jobs.printer = ?"
                " AND +print_jobs.state IN ('queued', 'failed')"
                " AND (c.revision IS NULL OR c.revision = print_jobs.revision)"
                " RETURNING print_jobs.id, print_jobs.copy AND print_jobs.variant IS NULL",
                (json.dumps([list(c) for c in claim]), printer),
            )
            if copies := [r[0] for r in claimed if r[1]]:
                await conn.execute(_ORIGINALS_REPEAT_COPIES, (json.dumps(copies),))
            return [r[0] for r in claimed]

        # linger: an order arriving meanwhile shares this commit's fsync (the claim is still durable before we return)
        claimed = await self._db.write_publishing(self._bus, marks, linger=True)
        for job_id in list(self._copies_out)[: max(0, len(self._copies_out) - _COPIES_OUT_KEPT)]:
            del self._copies_out[job_id]  # a backlog put back in line as COPYs is not kept all run
        return MarksCommitted(claimed=frozenset(claimed), printed=done)

    async def hold_many(self, printer: str, stale: Sequence[StaleJob]) -> set[int]:
        """Stale jobs wait for a person instead of printing, in one commit (JobHeld each, with its ``age_s``); returns
        those held. One is left as it is if it is no longer ``expected`` on ``printer``, or a person released or
        retried it since it was read. One commit for a backlog's stale jobs: a commit each held 4,424 of them in 89 s
        while the recent tickets behind waited."""
        ages = {job.id: job.age_s for job in stale}
        async with self._db.publishing(self._bus) as (conn, events):
            # Each job looked up by its id (the unary + keeps SQLite off the spool index), as a claim is.
            rows = await conn.execute_fetchall(
                "UPDATE print_jobs SET state = 'held', held_at = :now, held_reason = :reason"
                " FROM (SELECT json_extract(value, '$[0]') AS id, json_extract(value, '$[1]') AS expected"
                " FROM json_each(:stale)) AS h"
                " WHERE print_jobs.id = h.id AND +print_jobs.printer = :printer AND +print_jobs.state = h.expected"
                " AND print_jobs.released_at IS NULL RETURNING print_jobs.id, print_jobs.order_id,"
                " (SELECT number FROM orders WHERE orders.id = print_jobs.order_id), print_jobs.variant",
                {
                    "now": self._clock.wall(),
                    "reason": HoldReason.STALE,
                    "stale": json.dumps([[job.id, job.expected] for job in stale]),
                    "printer": printer,
                },
            )
            held = sorted((job_id, order_id, number, variant) for job_id, order_id, number, variant in rows)
            events.extend(  # in arrival order
                JobHeld(
                    job_id=job_id,
                    order_id=order_id,
                    printer=printer,
                    age_s=ages[job_id],
                    order_number=number or "",
                    variant=JobVariant(variant) if variant else None,
                )
                for job_id, order_id, number, variant in held
            )
        return {job_id for job_id, *_ in held}

    async def release_held(self, job_id: int | None = None, *, among: Collection[int] | None = None) -> list[int]:
        """A person says print it anyway: one held job (or all when ``job_id`` is None; of those, only the ones in
        ``among`` if given: what the person counted) back in line, never held again.

        A job whose printer is not configured stays held: released, it would wait for a printer that is not there.
        """
        async with self._db.transaction() as conn:
            rows = await conn.execute_fetchall(
                "UPDATE print_jobs SET state = 'queued', released_at = :now, next_attempt_at = 0, held_reason = NULL"
                " WHERE state = 'held' AND (:id IS NULL OR id = :id)"
                " AND (:among IS NULL OR id IN (SELECT value FROM json_each(:among)))"
                # Held for no printer: no printer serves its station (receipts) now, whatever printer it last had; it
                # moves on at the start that routes it again. Released, it printed where it no longer belongs (the
                # config80 probe, F3).
                f" AND {_CONFIGURED} AND held_reason IS NOT :no_printer RETURNING id",
                {
                    "now": self._clock.wall(),
                    "id": job_id,
                    "among": None if among is None else json.dumps(sorted(among)),
                    "printers": self._printers,
                    "no_printer": HoldReason.NO_PRINTER,
                },
            )
            released = sorted(r[0] for r in rows)
            if job_id is not None and not released:
                await self._refused(conn, job_id, (JobState.HELD,), "released")
            await _up_to_date(conn, released)
        return released

    async def releasable_held(self) -> list[int]:
        """The held jobs Release all would print (their printer is configured), oldest first."""
        rows = await self._db.fetchall(
            f"SELECT id FROM print_jobs WHERE state = 'held' AND {_CONFIGURED}"
            " AND held_reason IS NOT :no_printer ORDER BY id",
            {"printers": self._printers, "no_printer": HoldReason.NO_PRINTER},
        )
        return [r[0] for r in rows]

    async def drop_empty_storno(self, job_id: int) -> bool:
        """A waiting STORNO that finds nothing to strike when its turn comes is discarded; False if it is no longer
        waiting (moved, held, rewritten meanwhile)."""
        async with self._db.transaction() as conn:
            cursor = await conn.execute(
                "UPDATE print_jobs SET state = 'discarded' WHERE id = ? AND variant = 'cancel'"
                " AND state IN ('queued', 'failed')",
                (job_id,),
            )
            dropped = cursor.rowcount == 1
            await cursor.close()
        return dropped

    async def discard(self, job_id: int) -> None:
        """A person says never print it: a held, failed or dead job is dropped (kept as 'discarded' for the record)."""
        async with self._db.transaction() as conn:
            cursor = await conn.execute(
                "UPDATE print_jobs SET state = 'discarded', held_reason = NULL"
                " WHERE id = ? AND state IN ('held', 'failed', 'dead')",
                (job_id,),
            )
            changed = cursor.rowcount
            await cursor.close()
            if not changed:
                await self._refused(conn, job_id, (JobState.HELD, JobState.FAILED, JobState.DEAD), "discarded")

    async def redirect(self, station: str, *, from_printer: str, to_printer: str) -> list[MovedJob]:
        """Move a station's waiting tickets from a paused printer to a backup in one step (JobRedirected for each);
        a job in flight stays put."""
        async with self._db.publishing(self._bus) as (conn, events):
            rows = await conn.execute_fetchall(
                # Back to the printer it was meant for (its backup failed too): an original again, unmarked.
                "UPDATE print_jobs SET printer = ?1,"
                " redirected_from = CASE WHEN redirected_from = ?1 THEN NULL ELSE COALESCE(redirected_from, ?2) END,"
                " next_attempt_at = 0 WHERE printer = ?2 AND station = ?3 AND kind = 'ticket'"
                " AND state IN ('queued', 'failed') RETURNING id, order_id, state",
                (to_printer, from_printer, station),
            )
            moved = sorted((job_id, order_id, JobState(state)) for job_id, order_id, state in rows)
            events.extend(
                JobRedirected(
                    job_id=job_id, order_id=order_id, from_printer=from_printer, to_printer=to_printer, state=state
                )
                for job_id, order_id, state in moved
            )
        return [MovedJob(job_id, order_id) for job_id, order_id, _ in moved]

    async def _refused(self, conn: aiosqlite.Connection, job_id: int, wanted: tuple[JobState, ...], verb: str) -> None:
        """Raise why a job could not be changed: it does not exist, it is in the wrong state, or its printer is gone."""
        rows = list(
            await conn.execute_fetchall(
                "SELECT state, printer, station, last_error, held_reason FROM print_jobs WHERE id = ?", (job_id,)
            )
        )
        if not rows:
            raise NotFoundError(f"print job {job_id} does not exist")
        state, printer, station, why, held_reason = rows[0]
        if state == JobState.DISCARDED and why and why.startswith("replaced by"):
            raise WrongStateError(f"print job {job_id} is discarded: {why}, which a person's reprint queued")
        if state in wanted and held_reason == HoldReason.NO_PRINTER:
            route = f"[stations] {station} = PRINTER" if station else "receipts.printer"
            raise WrongStateError(
                f"print job {job_id} is held: no printer serves {f'station {station!r}' if station else 'receipts'}"
                f" in the config now; set {route} and restart: it prints then"
            )
        if state in wanted:
            raise WrongStateError(
                f"print job {job_id} is for printer {printer!r}, which is not configured, and no printer serves"
                f" {f'station {station!r}' if station else 'receipts'}: add one to the config and restart"
            )
        states = ", ".join(wanted[:-1]) + (" or " if len(wanted) > 1 else "") + wanted[-1]
        raise WrongStateError(f"print job {job_id} is {state}, only {states} jobs can be {verb}")

    async def reroute(
        self,
        printers_for: Callable[[JobKind, str | None], Sequence[str]],
        same_device: Callable[[str, str], bool] = operator.eq,
    ) -> list[Rerouted]:
        """At start-up: every job not yet done whose printer no longer serves its station (the printer left the config,
        or the config routes the station, or the receipts, to another one: names swapped, a station moved) moves to the
        printer that serves it now (its own device under a new name, else the station's primary; receipts: the
        receipt printer), marked as moved (JobRedirected); with no route it is held (reason no_printer, JobHeld). A
        job held for that reason moves on as soon as a route is back; one on any of its station's printers (a backup,
        after a failover) stays. Printed and discarded jobs stay as history. ``printers_for`` names configured
        printers only (the config's rules). ``same_device(old, new)``: the printer that was ``old`` is ``new`` now
        (renamed): its jobs move unmarked."""
        async with self._db.publishing(self._bus) as (conn, events):
            rows = await conn.execute_fetchall(
                "SELECT id, order_id, kind, station, printer, state, held_reason,"
                " (SELECT number FROM orders WHERE orders.id = print_jobs.order_id) FROM print_jobs"
                " WHERE state IN ('queued', 'failed', 'held', 'dead') ORDER BY id"
            )
            done = []
            for job_id, order_id, kind, station, printer, state, reason, number in rows:
                serving = printers_for(JobKind(kind), station)
                if printer in serving and reason != HoldReason.NO_PRINTER:
                    continue
                # A renamed printer keeps its tickets (a backup's, after a failover: the primary may still be dead).
                target = next((p for p in serving if same_device(printer, p)), serving[0] if serving else None)
                if target is None and state == JobState.HELD and reason == HoldReason.NO_PRINTER:
                    continue  # held for this already, at an earlier start
                if target is None and state in (JobState.QUEUED, JobState.FAILED, JobState.HELD):
                    await conn.execute(
                        "UPDATE print_jobs SET state = 'held', held_reason = ?, held_at = COALESCE(held_at, ?)"
                        " WHERE id = ? AND state = ?",
                        (HoldReason.NO_PRINTER, self._clock.wall(), job_id, state),
                    )
                    events.append(
                        JobHeld(
                            job_id=job_id,
                            order_id=order_id,
                            printer=printer,
                            age_s=0,
                            reason=HoldReason.NO_PRINTER,
                            order_number=number or "",
                            station=station,
                        )
                    )
                elif target is not None:
                    # Held for want of a printer: back in line (a stale hold is judged again by the spool).
                    await conn.execute(
                        "UPDATE print_jobs SET printer = ?1, next_attempt_at = 0,"
                        # A job that never had a printer ("") or whose printer was only renamed was not moved from
                        # one: no REDIRECTED line; one moved back where it was meant to print (a failover undone by the
                        # config) is no longer moved.
                        " redirected_from = CASE WHEN ?1 = ?2 OR ?2 = '' THEN redirected_from"
                        " WHEN redirected_from = ?1 THEN NULL ELSE COALESCE(redirected_from, ?2) END,"
                        " state = CASE WHEN held_reason = ?3 THEN 'queued' ELSE state END,"
                        " held_reason = CASE WHEN held_reason = ?3 THEN NULL ELSE held_reason END"
                        " WHERE id = ?4 AND state = ?5",
                        (target, "" if same_device(printer, target) else printer, HoldReason.NO_PRINTER, job_id, state),
                    )
                    events.append(
                        JobRedirected(
                            job_id=job_id,
                            order_id=order_id,
                            from_printer=printer,
                            to_printer=target,
                            state=JobState.QUEUED if reason == HoldReason.NO_PRINTER else JobState(state),
                            order_number=number or "",
                        )
                    )
                else:
                    continue  # dead with no route: it stays dead, a person sees it; retry is refused while unrouted
                done.append(Rerouted(job_id, order_id, JobKind(kind), station, printer, target))
        return done

    async def mark_printed(self, job_id: int, order_id: str, *, latency_s: float = 0.0) -> float | None:
        """The printer confirmed the job with no fault after it (JobPrinted, with ``latency_s`` from the order being
        stored); None (nothing recorded) if it was not 'printing'."""
        # The printer is only needed to claim or release; a printed mark applies to the job wherever it is.
        done = await self.commit_marks("", printed=[PrintedMark(job_id, order_id, latency_s)])
        return done.printed.get(job_id)

    async def mark_uncertain(self, job_id: int, error: str) -> bool:
        """The job went out but the printer then reported a fault (paper end, cover open…): it may be partly on
        paper. Back in line to print again marked COPY, no attempt spent; central hears nothing yet. True if it
        will print again (not when a person or a cancellation ended it meanwhile)."""
        async with self._db.transaction() as conn:
            rows = await conn.execute_fetchall(
                f"UPDATE print_jobs SET state = {BACK_IN_LINE}, copy = 1, went_out = 1, pulse_lost = 0, last_error = ?"
                " WHERE id = ? AND state = 'printing' RETURNING state",
                (error[:500], job_id),
            )
        return any(r[0] == JobState.QUEUED for r in rows)

    async def mark_failed(
        self,
        job_id: int,
        order_id: str,
        *,
        error: str,
        next_attempt_at: float,
        max_attempts: int,
        partial: bool,
        expected: JobState = JobState.PRINTING,
        pulse_lost: bool = False,
    ) -> FailureRecorded | None:
        """Count an attempt: the job is failed (JobFailed) or, out of attempts, dead (JobDead, and central hears of
        it). None (nothing changed) if the job is no longer in the ``expected`` state, e.g. a person discarded it
        meanwhile.

        ``partial``: some bytes may have reached the paper, so the next print carries the COPY mark.
        ``pulse_lost``: the printer hung up before it was seen to take the job's first bytes, with a receipt's drawer
        pulse: the sale's next receipt opens the drawer, as none did (unless an earlier attempt was seen to).
        """
        now = self._clock.wall()
        async with self._db.publishing(self._bus) as (conn, events):
            rows = list(
                await conn.execute_fetchall(
                    "UPDATE print_jobs SET attempts = attempts + 1, last_error = ?1, next_attempt_at = ?2,"
                    f" copy = copy OR ?3, went_out = went_out OR ?3, state = CASE WHEN {_NOT_WANTED} THEN 'discarded'"
                    " WHEN attempts + 1 >= ?4 THEN 'dead' ELSE 'failed' END,"
                    # lost while no attempt that went out was seen to reach the printer (_DRAWER_OPENED)
                    " pulse_lost = CASE WHEN ?3 THEN ?7 AND (pulse_lost OR NOT went_out) ELSE pulse_lost END"
                    " WHERE id = ?5 AND state = ?6 RETURNING state, attempts, printer,"
                    f" (SELECT number FROM orders WHERE id = order_id), {_SHOWN}",
                    (error[:500], next_attempt_at, int(partial), max_attempts, job_id, expected, int(pulse_lost)),
                )
            )
            if not rows:
                return None
            state, attempts, printer, number = JobState(rows[0][0]), rows[0][1], rows[0][2], rows[0][3]
            if state == JobState.DEAD:
                await add_outbox(
                    conn,
                    [_job_event(order_id, StatusEvent.FAILED, job_id, now, rows[0][4:], error=error[:200])],
                )
                events.append(
                    JobDead(
                        job_id=job_id,
                        order_id=order_id,
                        order_number=number,
                        printer=printer,
                        error=error,
                        attempts=attempts,
                    )
                )
            elif state == JobState.FAILED:
                events.append(
                    JobFailed(job_id=job_id, order_id=order_id, printer=printer, error=error, attempts=attempts)
                )
        return FailureRecorded(state, attempts)

    async def requeue_interrupted(
        self, printer: str | None = None, *, crashed: bool = True, unsent: Sequence[int] = ()
    ) -> list[int]:
        """Jobs caught 'printing' by a crash may be half out: print them again, marked COPY (those of an order
        cancelled meanwhile are discarded). ``printer``: only its jobs (a spool whose record of them the store
        refused, or whose start's requeue it did). ``unsent``: that printer's jobs known never sent (their claim
        refused, its fsync failed after the COMMIT), released first as commit_marks releases. Returns the ones to
        print again.

        After a crash the printers they were on are recorded, in the same commit, as holding what is left of them
        (printers_to_clear): the agent that would have cleared it after a cut-short ticket is gone, and an Epson
        prints it, headless, after the next roll. A spool's own driver has cleared what it saw cut short (``crashed``
        False). Each record names the device the printer reached in the run that crashed (remember_devices): renamed
        since, it is still that device."""
        async with self._db.transaction() as conn:
            if printer is not None:
                await _release(conn, printer, unsent)
            rows = await conn.execute_fetchall(
                # pulse_lost 0: what a crash caught going out may have opened the drawer; twice is worse than none.
                f"UPDATE print_jobs SET state = {BACK_IN_LINE}, copy = 1, went_out = 1, pulse_lost = 0"
                " WHERE state = 'printing'"
                " AND (:printer IS NULL OR printer = :printer) RETURNING id, state, printer",
                {"printer": printer},
            )
            if crashed:
                # By name (a printer given a new address keeps it) and by device (a printer renamed keeps that).
                interrupted = [{"name_key": _CLEAR_KEY + n, "was_on": _DEVICE_KEY + n} for n in {r[2] for r in rows}]
                await conn.executemany("INSERT OR IGNORE INTO meta(key, value) VALUES (:name_key, '')", interrupted)
                await conn.executemany(
                    "INSERT OR IGNORE INTO meta(key, value)"
                    " SELECT :device_key || value, '' FROM meta WHERE key = :was_on",
                    [d | {"device_key": _CLEAR_DEVICE_KEY} for d in interrupted],
                )
        return sorted(r[0] for r in rows if r[1] == JobState.QUEUED)

    async def printers_interrupted(self) -> set[str]:
        """The printers with jobs a crash caught 'printing' (read only: for a start whose requeue the store refused)."""
        rows = await self._db.fetchall("SELECT DISTINCT printer FROM print_jobs WHERE state = 'printing'")
        return {printer for (printer,) in rows}

    async def last_devices(self) -> dict[str, str]:
        """The device each printer reached in the latest run that recorded them (name -> device), and that of each
        printer gone from the config since while unfinished tickets still name it (one held for no printer may wait
        several starts for its station's route)."""
        return await self._meta_under(_LEFT_KEY) | await self._meta_under(_DEVICE_KEY)

    async def remember_devices(self, devices: Mapping[str, str]) -> None:
        """The device each configured printer reaches in this run (name -> device), for requeue_interrupted after a
        crash. Written only when the config changed it: a start on a full card writes nothing it need not."""
        last = await self._meta_under(_DEVICE_KEY)
        if last == dict(devices):
            return
        # Records of a printer renamed and moved at once pass to its heirs: after this, nothing tells them apart.
        heirs = _heirs(await self._meta_under(_CLEAR_KEY), last, devices)
        known = await self._meta_under(_LEFT_KEY) | last  # last_devices(), its run's part read above
        gone = {name: device for name, device in known.items() if name not in devices}
        named = await self._db.fetchall(
            "SELECT DISTINCT printer FROM print_jobs WHERE state IN (SELECT value FROM json_each(:states))"
            " AND printer IN (SELECT value FROM json_each(:gone))",
            {"states": json.dumps(sorted(NOT_DONE_JOB_STATES)), "gone": json.dumps(sorted(gone))},
        )
        left = {name: gone[name] for (name,) in named}
        async with self._db.transaction() as conn:
            await _replace_meta_under(conn, _LEFT_KEY, left)
            await conn.executemany(
                "INSERT OR IGNORE INTO meta(key, value) VALUES (?, '')", [(_CLEAR_KEY + name,) for name in heirs]
            )
            await _replace_meta_under(conn, _DEVICE_KEY, devices)

    async def printers_to_clear(self, devices: Mapping[str, str], interrupted: Collection[str] = ()) -> set[str]:
        """Of the configured printers (``devices``: name -> device), those whose buffers may still hold the rest of a
        job a crash interrupted: cleared at the first contact, until buffers_cleared (kept over further restarts
        meanwhile). A record names the printer and the device it was on: either finds it (neither, for one renamed and
        moved at once: the printers new in the config, _heirs). One name per device: a
        printer under two names cleared by the second would lose what the first just sent it (one that answers no
        status is not waited for). That name is the one the crash cut a job short on where it is still set up: its
        COPY goes out there, after the clear; another name of the device may serve no station and clear only at its
        first status poll, after the rest of the ticket printed. ``interrupted``: names not recorded yet (a start whose
        requeue the store refused: printers_interrupted). A printer whose jobs are marked printed once it holds them,
        not once they are out, is never cleared: its buffers may hold tickets marked printed behind the cut-short one,
        which a clear would wipe (the night74 probe); the rest of the cut-short ticket prints before its COPY. That is
        one whose jobs a run marked so on its device (_HELD_KEY), one learnt to answer DLE EOT but not GS r
        (devices_without_in_order), or, as a database from before those marks tells, one that never answered status
        (answered_devices) and printed jobs (sent without asking). When a crash cut a job short on such a device, the
        printer may be under any name or address now (renamed, moved, or both: the rename75 probe), as it may when
        such a device is not in the config at all (moved while the crash cut another printer short, whose record the
        printers new in the config inherit: the verify75 probe): then only printers still on a device the crash cut a
        job short on, and not such a one, are cleared."""
        named = await self._meta_under(_CLEAR_KEY) | dict.fromkeys(interrupted, "")
        named |= dict.fromkeys(_heirs(named, await self._meta_under(_DEVICE_KEY), devices), "")
        on = await self._meta_under(_CLEAR_DEVICE_KEY)
        clearing: dict[str, str] = {}  # device -> the one name that clears it
        for name, device in sorted(devices.items(), key=lambda item: item[0] not in named):
            if name in named or device in on:
                clearing.setdefault(device, name)
        if not clearing:  # the start after a clean stop: nothing more to read
            return set()
        unsure = await self.devices_without_in_order() | set(await self._meta_under(_HELD_KEY))
        if on.keys() & unsure or unsure - set(devices.values()):
            clearing = {device: name for device, name in clearing.items() if device in on}
        answered = await self.answered_devices()
        for device in clearing.keys() - answered:
            names = [name for name, on_it in devices.items() if on_it == device]
            if await self._db.fetchone(
                "SELECT 1 FROM print_jobs WHERE printer IN (SELECT value FROM json_each(?)) AND state = 'printed'"
                " LIMIT 1",
                (json.dumps(names),),
            ):
                unsure.add(device)
        return {name for device, name in clearing.items() if device not in unsure}

    async def _meta_under(self, prefix: str) -> dict[str, str]:
        """The meta values whose keys start with ``prefix``, by the rest of the key."""
        rows = await self._db.fetchall(
            "SELECT substr(key, :at), value FROM meta WHERE substr(key, 1, :at - 1) = :prefix",
            {"at": len(prefix) + 1, "prefix": prefix},
        )
        return {rest: value for rest, value in rows}

    async def answered_devices(self) -> set[str]:
        """The devices (addresses) whose printer answered a status query in some run: silence there after a restart
        is a printer off or another device on its address, not a model that cannot answer."""
        return set(await self._meta_under(_ANSWERED_KEY))

    async def device_answered(self, device: str) -> None:
        """Records that the printer on ``device`` answered a status query (once per device)."""
        async with self._db.transaction() as conn:
            await conn.execute("INSERT OR IGNORE INTO meta(key, value) VALUES (?, '')", (_ANSWERED_KEY + device,))

    async def devices_without_in_order(self) -> set[str]:
        """The devices whose printer was last learnt to answer DLE EOT but not GS r (JobStore.in_order_learnt)."""
        return set(await self._meta_under(_NO_GS_R_KEY))

    async def in_order_learnt(self, device: str, *, answers: bool) -> None:
        """Records whether the printer on ``device`` answers GS r, as a run learnt it (only those that do not are
        kept)."""
        async with self._db.transaction() as conn:
            if answers:
                await conn.execute("DELETE FROM meta WHERE key = ?", (_NO_GS_R_KEY + device,))
            else:
                await conn.execute("INSERT OR IGNORE INTO meta(key, value) VALUES (?, '')", (_NO_GS_R_KEY + device,))

    async def buffers_cleared(self, printer: str, device: str) -> None:
        """The clear went out to ``printer`` on ``device``: the next start clears it only after another crash."""
        async with self._db.transaction() as conn:
            await conn.execute(
                "DELETE FROM meta WHERE key IN (?, ?)", (_CLEAR_KEY + printer, _CLEAR_DEVICE_KEY + device)
            )

    async def retry(self, job_id: int) -> PrintableJob:
        """A person asks again: a failed or dead job goes back in line with fresh attempts; returns it as it is now.

        Asking counts as releasing it: however old the job is, it is not held as stale. A job this version cannot read
        stays as it was (UnreadableRowError): back in line, the spool would only end it again, and alert again.
        """
        async with self._db.transaction() as conn:
            cursor = await conn.execute(
                "UPDATE print_jobs SET state = 'queued', attempts = 0, next_attempt_at = 0,"
                " released_at = COALESCE(released_at, :now) WHERE id = :id AND state IN ('failed', 'dead')"
                f" AND {_CONFIGURED}",
                {"now": self._clock.wall(), "id": job_id, "printers": self._printers},
            )
            changed = cursor.rowcount
            await cursor.close()
            if not changed:
                await self._refused(conn, job_id, (JobState.FAILED, JobState.DEAD), "retried")
            await _up_to_date(conn, [job_id])
            (row,) = await conn.execute_fetchall(_PRINTABLE_BY_ID, (job_id,))
            return PrintableJob.from_row(row)

    async def revive_given_up(self, printer: str, attempts: int) -> list[int]:
        """Tickets given up (dead) on ``printer`` after ``attempts`` attempts that each went out in part (it hung up
        mid-ticket): that printer has just printed one whole, so its line holds again (a loose jack pushed back), and
        they go back in line, once. One given up again stays dead: a ticket the printer chokes on while it prints the
        others must not stall it, nor cost a strip at every order. Nor one a person reprinted meanwhile (its COPY is
        the answer: a second would be one too many), nor one given up more than REVIVED_WITHIN_S ago (a restart's
        first whole ticket looks too: yesterday's is no news to the cook)."""
        async with self._db.transaction() as conn:
            rows = await conn.execute_fetchall(
                "UPDATE print_jobs SET state = 'queued', next_attempt_at = 0"
                " WHERE printer = ? AND state = 'dead' AND went_out AND attempts = ? AND next_attempt_at > ?"
                " AND NOT EXISTS (SELECT 1 FROM print_jobs c WHERE c.order_id = print_jobs.order_id AND c.kind ="
                " print_jobs.kind AND c.station IS print_jobs.station AND c.id > print_jobs.id AND c.copy AND"
                " c.variant IS NULL) RETURNING id",
                (printer, attempts, self._clock.wall() - REVIVED_WITHIN_S),
            )
            revived = [row[0] for row in rows]
            await _up_to_date(conn, revived)
        return revived

    def _just_out(self) -> tuple[str, str]:
        """(COPYs this run saw come out less than COPY_JUST_OUT_S ago on the monotonic clock, which a step of the wall
        clock does not move; every COPY it remembers seeing come out), as JSON lists for _COPY_THERE."""
        mono = self._clock.mono()
        just_out = [job_id for job_id, at in self._copies_out.items() if mono - at < COPY_JUST_OUT_S]
        return json.dumps(just_out), json.dumps(list(self._copies_out))

    async def add_copies(
        self,
        order_id: str,
        *,
        station: str | None = None,
        kind: JobKind | None = None,
        printer_for: Callable[[JobKind, str | None], str | None],
        out: Collection[int] = (),
    ) -> Copies:
        """Queue a COPY of each original job of an order (or of one station's ticket, or of one ``kind``: the
        receipt), released: a person asked; not where a COPY of it (of the order as it is now) is still there: waiting
        in line (queued by a press a moment before, in another place, or put back in line by a crash), going out now,
        or come out less than COPY_JUST_OUT_S ago; nor where the original itself has not printed yet (it prints on its
        own): that one is named as waiting, with its state, and released by the asking if it waits.

        Copies go where the station (receipts: the receipt printer) is served now, not to the original's printer,
        which may have been renamed or removed since.
        """
        async with self._db.transaction() as conn:
            rows = list(await conn.execute_fetchall("SELECT revision, status FROM orders WHERE id = ?", (order_id,)))
            revision, status = rows[0] if rows else (1, OrderStatus.OPEN)
            if status == OrderStatus.CANCELLED:  # its tickets are void; a copy would bring it back to the kitchen
                raise WrongStateError(f"order {order_id} is cancelled: nothing to reprint")
            reprintable = await conn.execute_fetchall(_REPRINTABLE, (order_id, station, kind))
            await note_boot(conn, self._clock.boot())  # a copy keeps its created_mono too
            if not reprintable:
                what = f"ticket for station {station!r}" if station else kind or "print jobs"
                raise NotFoundError(f"order {order_id} has no {what}")
            originals = [(JobKind(k), job_station, priority) for k, job_station, priority in reprintable]
            targets = [printer_for(kind, job_station) for kind, job_station, _ in originals]
            if None in targets:
                kind, job_station, _ = originals[targets.index(None)]
                what = f"station {job_station!r}" if kind == JobKind.TICKET else "receipts"
                raise WrongStateError(f"order {order_id}: no printer serves {what} now; add one to the config")
            now, (just_out, seen_out) = self._clock.wall(), self._just_out()
            new_ids: list[int] = []
            waiting: list[CopyThere] = []
            for (kind, job_station, priority), printer in zip(originals, targets, strict=True):
                cursor = await conn.execute(
                    "SELECT COUNT(*) FROM print_jobs WHERE order_id = ? AND kind = ? AND station IS ?",
                    (order_id, kind, job_station),
                )
                (count,) = await cursor.fetchone() or (0,)
                await cursor.close()
                there = await conn.execute_fetchall(
                    "SELECT id, state, copy FROM print_jobs WHERE order_id = :order AND kind = :kind AND station IS"
                    f" :station AND revision = :revision AND ({_COPY_THERE} OR {_ORIGINAL_WAITING})"
                    " ORDER BY id DESC LIMIT 1",
                    {
                        "order": order_id,
                        "kind": kind,
                        "station": job_station,
                        "revision": revision,
                        "now": now,
                        "just_out": just_out,
                        "seen_out": seen_out,
                        "just_out_s": COPY_JUST_OUT_S,
                        "out": json.dumps(sorted(out)),
                    },
                )
                if there:
                    [(job_id, state, copy)] = there
                    waiting.append(CopyThere(job_id, JobState(state), bool(copy)))
                    # The person asked for it: it prints however old the order is, as a COPY they had queued would;
                    # the original too, and one marked COPY after a fault cut it short (the verify78 probe, V3).
                    await conn.execute(
                        "UPDATE print_jobs SET released_at = COALESCE(released_at, ?)"
                        " WHERE id = ? AND state IN ('queued', 'failed')",
                        (now, job_id),
                    )
                    continue
                # A person asked for it: released, so it prints however old the order is.
                cursor = await conn.execute(
                    "INSERT INTO print_jobs(order_id, kind, station, printer, priority, copy, created_at, released_at,"
                    " idempotency_key, revision, created_mono) VALUES (?, ?, ?, ?, ?, 1, ?, ?, ?, ?, ?)",
                    (
                        order_id,
                        kind,
                        job_station,
                        printer,
                        priority,
                        now,
                        now,
                        job_key(order_id, kind, job_station, count),
                        revision,  # the order as it is now
                        self._clock.mono(),
                    ),
                )
                assert cursor.lastrowid is not None  # an INSERT into a rowid table
                new_ids.append(cursor.lastrowid)
                await cursor.close()
                await conn.execute(
                    _REPLACED_BY_A_COPY,
                    (_REPLACED_WHY, order_id, kind, job_station, cursor.lastrowid),
                )
        return Copies(queued=tuple(new_ids), waiting=tuple(waiting))
