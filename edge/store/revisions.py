"""A higher revision of a stored order, applied in the transaction that stores it: the revision kept, the order row
and its seen-order record moved on, its jobs rewritten, discarded or added by the change plan, central told."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from typing import Protocol

from edge.errors import StoredOrderUnreadableError
from edge.orders.changes import NOT_PRINTED, ExistingJob, plan_revision, revisions_needed
from edge.orders.model import Order, meaning_hash, parse_stored
from edge.states import HoldReason, JobKind, JobState, JobVariant, OrderSource, OrderStatus, StatusEvent
from edge.store.db import Database, Writer
from edge.store.identity import acked_before_restore, read_mark
from edge.store.outbox import add_outbox, outbox_row
from edge.store.scans import follow_revision

_NOT_PRINTED = sorted(NOT_PRINTED)


class Hashes(Protocol):
    """A prepared order's or revision's two hashes (NewOrder, Revision)."""

    @property
    def content_hash(self) -> str: ...
    @property
    def meaning_hash(self) -> str: ...


@dataclasses.dataclass(frozen=True)
class KnownOrder:
    """What intake compares a new payload with: the stored (or once stored, purged since) revision."""

    content_hash: str  # of the JSON bytes (revision_hash)
    meaning_hash: str | None  # of the order it means (meaning_hash); None in a row written before migration 015
    revision: int
    status: OrderStatus
    stored: bool  # False: only the seen-order record is left (retention purged the order, or it is history)
    # Only the seen-order record of an order recovery classed as history (never stored here, see migration 016): a
    # retry of its revision is a duplicate, a higher revision is a change made since, stored as a new order.
    history: bool = False

    def same_content(self, new: Hashes) -> bool:
        """Whether ``new`` is this revision's content again: the same order, however its sender wrote it. A row from
        before has only the bytes' hash (a seen-order record stays retention.seen_days): the bytes then decide. The same
        bytes are the same order always: a version that reads more of an order (its allergens) hashes its meaning
        otherwise than the one that stored it did."""
        if self.meaning_hash is None or self.content_hash == new.content_hash:
            return self.content_hash == new.content_hash
        return self.meaning_hash == new.meaning_hash


@dataclasses.dataclass(frozen=True, kw_only=True)
class RevisionRecord:
    """One revision of an order as the API shows it (table order_revisions, or the order itself if never changed)."""

    revision: int
    status: OrderStatus
    received_at: float
    source: OrderSource
    job_ids: tuple[int, ...]  # the jobs this revision made or rewrote to show it


def known_sql(count: int) -> str:
    """Hash, revision, status by id of what is stored and of what was stored once or recorded as history
    (seen_orders). Parameters: the ids twice. A stored order's row comes last, so it wins in a dict."""
    marks = ",".join("?" * count)
    return (
        f"SELECT id, content_hash, meaning_hash, revision, 'open', 0, history FROM seen_orders WHERE id IN ({marks})"
        f" UNION ALL SELECT id, content_hash, meaning_hash, revision, status, 1, 0 FROM orders WHERE id IN ({marks})"
    )


def known_from_rows(rows: object) -> dict[str, KnownOrder]:
    return {
        r[0]: KnownOrder(
            content_hash=r[1],
            meaning_hash=r[2],
            revision=r[3],
            status=OrderStatus(r[4]),
            stored=bool(r[5]),
            history=bool(r[6]),
        )
        for r in rows  # type: ignore[attr-defined]
    }


async def stored_revision(conn: Writer, order_id: str, revision: int) -> KnownOrder | None:
    """Revision ``revision`` of a stored order as this box stored it (order_revisions keeps each once a change came),
    to compare a payload with as KnownOrder does; None if it never stored that revision."""
    rows = await conn.execute_fetchall(
        "SELECT content_hash, payload, status FROM order_revisions WHERE order_id = ? AND revision = ?",
        (order_id, revision),
    )
    if not rows:
        return None
    [(content_hash, payload, status)] = rows
    try:
        meaning: str | None = meaning_hash(parse_stored(json.loads(payload), order_id))
    except StoredOrderUnreadableError:  # stored by an older, laxer version: its bytes decide
        meaning = None
    return KnownOrder(content_hash, meaning, revision, OrderStatus(status), stored=True)


def revision_job_key(order_id: str, variant: JobVariant | None, kind: JobKind, station: str | None, rev: int) -> str:
    return f"{order_id}:{variant or kind}:{station or '-'}:r{rev}"


async def _payloads(conn: Writer, order_id: str, revisions: set[int]) -> dict[int, Order]:
    rows = await conn.execute_fetchall(
        "SELECT revision, payload FROM order_revisions WHERE order_id = ?"
        " AND revision IN (SELECT value FROM json_each(?))",
        (order_id, json.dumps(sorted(revisions))),
    )
    return {r[0]: parse_stored(json.loads(r[1]), order_id) for r in rows}


@dataclasses.dataclass(frozen=True)
class Revision:
    """A higher revision of a stored, open order, as intake prepared it."""

    order: Order
    payload: str  # canonical JSON
    content_hash: str
    meaning_hash: str
    source: OrderSource
    routes: Mapping[str, str]  # the printer serving each station now ("": receipts)
    printers: frozenset[str]  # every printer configured now
    reprint_receipt: bool


def first_state(printer: str, now: float) -> tuple[JobState, HoldReason | None, float | None]:
    """A new job's state, hold reason and hold time: queued on its printer, or held (no_printer) when none serves it
    (printer ""); the start-up reroute gives it one once the config does."""
    return (JobState.QUEUED, None, None) if printer else (JobState.HELD, HoldReason.NO_PRINTER, now)


async def _may_be_on_paper(conn: Writer, new: Revision, received_at: float, now: float, listed: bool) -> bool:
    """Whether the tickets a recovered revision adds may be on paper already, printed by what the database does not
    know (a restore's replaced database, which took orders until the may-have-printed mark and printed their changes
    until it stopped): its order was created before the mark, as for a recovered order (orders._insert_fresh), and its
    row here came from before the mark (``received_at``: with the backup; the replaced database held it too). The
    order decides, not the change's time: central's payload has none, and the mark is the replaced database's newest
    *order*, after which it may still have printed changes. An order this database stored itself since (taken after
    the restore, or on a new box: what was before the box printed no change to it since) only has changes it printed
    itself. A pushed or MQTT revision is judged the same where central's recovery lists it too (``listed``) while
    central has not yet dated the mark (the new box's first answer from central, before its first run lists): the dead
    box may have printed it, and the outcome must not hang on which door it came through first (before stop 81 a
    till's resend of a change the dead box printed printed unmarked, the same change by recovery KOPIE: the verify81b
    probe, V4). Once central answered, a pushed change is news (an original): a cook might set a COPY aside. Without
    central, a push is all there is: it is marked only if the replaced database had taken it (a sender sends again
    only what was not acknowledged)."""
    if new.source != OrderSource.RECOVERY and await acked_before_restore(conn, [(new.order.id, new.order.revision)]):
        return True
    if new.source != OrderSource.RECOVERY and not listed:
        return False
    mark = await read_mark(conn, now)
    if new.source != OrderSource.RECOVERY and not mark.unsettled:
        return False
    return mark.before(received_at) and mark.before(new.order.created_at.timestamp())


def receipt_said(order_id: str, below: str) -> str:
    """SQL for what the order's last revision below revision ``below`` that says ``print_receipt`` said (1 or 0), NULL
    if none said: the one rule for whether an order wants a receipt, read by a change's plan (_receipt_wanted) and by
    a receipt going back in line (store/jobs.py). ``order_id`` and ``below`` are SQL expressions. The current
    revision is in ``orders``; ``order_revisions`` holds every revision once a change came."""
    return (
        "(SELECT json_extract(r.payload, '$.print_receipt') FROM (SELECT revision, payload FROM order_revisions"
        f" WHERE order_id = {order_id} UNION ALL SELECT revision, payload FROM orders WHERE id = {order_id}) r"
        f" WHERE r.revision < {below} AND json_type(r.payload, '$.print_receipt') IN ('true', 'false')"
        " ORDER BY r.revision DESC LIMIT 1)"
    )


_SAID_BEFORE = receipt_said("?1", "?2")


async def _receipt_wanted(conn: Writer, order: Order, jobs: Sequence[ExistingJob]) -> bool:
    """Whether the order wanted a receipt before revision ``order``: as its last revision saying ``print_receipt``
    said; if none said, as its first revision was planned (receipts.by_default then: a receipt job, in any state).
    Never the config now: an order's receipt does not come or go because the config changed since."""
    [(said,)] = await conn.execute_fetchall(f"SELECT {_SAID_BEFORE}", (order.id, order.revision))
    if said is not None:
        return bool(said)
    return any(job.kind == JobKind.RECEIPT for job in jobs)


def revision_fields(order: Order, source: OrderSource, reason: str | None) -> dict[str, object]:
    """What an `updated` or `cancelled` event tells central of a revision: its number, the order's, the door it came
    by, and the cancel's reason if there is one."""
    fields: dict[str, object] = {"revision": order.revision, "number": order.number, "source": source}
    if reason:
        fields["reason"] = reason
    return fields


async def apply_revision(
    conn: Writer, new: Revision, now: float, *, listed: bool = False, mono: float | None = None
) -> tuple[int, ...]:
    """Store ``new`` and apply its change plan; returns the ids of the jobs that now show it (rewritten and added).
    The jobs it adds print marked COPY when they may be on paper already (_may_be_on_paper). Runs inside the caller's
    transaction."""
    order = new.order
    [(previous, received_at)] = await conn.execute_fetchall(
        "SELECT payload, received_at FROM orders WHERE id = ?", (order.id,)
    )
    copy = await _may_be_on_paper(conn, new, float(received_at), now, listed)
    await conn.execute(
        "INSERT OR IGNORE INTO order_revisions(order_id, revision, status, content_hash, payload, received_at, source)"
        " SELECT id, revision, status, content_hash, payload, received_at, source FROM orders WHERE id = ?",
        (order.id,),
    )
    await conn.execute(
        "INSERT INTO order_revisions(order_id, revision, status, content_hash, payload, received_at, source)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        (order.id, order.revision, order.status, new.content_hash, new.payload, now, new.source),
    )
    await conn.execute(
        "UPDATE orders SET revision = ?, status = ?, content_hash = ?, meaning_hash = ?, payload = ?, number = ?,"
        " priority = ?, due_at = ? WHERE id = ?",
        (
            order.revision,
            order.status,
            new.content_hash,
            new.meaning_hash,
            new.payload,
            order.number,
            order.priority,
            order.fulfilment.due_at.isoformat() if order.fulfilment.due_at else None,
            order.id,
        ),
    )
    await conn.execute(
        "UPDATE seen_orders SET revision = ?, content_hash = ?, meaning_hash = ? WHERE id = ?",
        (order.revision, new.content_hash, new.meaning_hash, order.id),
    )
    rows = await conn.execute_fetchall(
        "SELECT id, kind, station, state, revision, variant, change_from, printer, copy FROM print_jobs"
        " WHERE order_id = ? ORDER BY id",
        (order.id,),
    )
    last_printer = {r[2]: r[7] for r in rows}  # oldest first: a station's latest printer wins
    jobs = [
        ExistingJob(
            id=r[0],
            kind=JobKind(r[1]),
            station=r[2],
            state=JobState(r[3]),
            revision=r[4],
            variant=JobVariant(r[5]) if r[5] else None,
            change_from=r[6],
            copy=bool(r[8]),
        )
        for r in rows
    ]
    earlier = parse_stored(json.loads(previous), order.id)
    plan = plan_revision(
        jobs,
        await _payloads(conn, order.id, revisions_needed(jobs)),
        order,
        receipt_before=await _receipt_wanted(conn, order, jobs),
        previous=earlier,
        reprint_receipt=new.reprint_receipt,
    )
    job_ids = list(plan.rewrite)
    if plan.rewrite:
        await conn.execute(
            "UPDATE print_jobs SET revision = ? WHERE id IN (SELECT value FROM json_each(?))"
            " AND state IN (SELECT value FROM json_each(?))",
            (order.revision, json.dumps(plan.rewrite), json.dumps(_NOT_PRINTED)),
        )
    if plan.discard:
        await conn.execute(
            "UPDATE print_jobs SET state = 'discarded' WHERE id IN (SELECT value FROM json_each(?))"
            " AND state IN (SELECT value FROM json_each(?))",
            (json.dumps(plan.discard), json.dumps(_NOT_PRINTED)),
        )
    for planned in plan.add:
        # No route now: the printer its station's tickets went to, if the config still has it; else held like an
        # order's ticket for such a station (see plan_jobs), not queued for a printer that is gone.
        before = last_printer.get(planned.station) or ""
        printer = new.routes.get(planned.station or "") or (before if before in new.printers else "")
        cursor = await conn.execute(
            "INSERT INTO print_jobs(order_id, kind, station, printer, priority, copy, created_at, idempotency_key,"
            " revision, variant, change_from, state, held_reason, held_at, created_mono)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                order.id,
                planned.kind,
                planned.station,
                printer,
                order.priority,
                copy,
                now,
                revision_job_key(order.id, planned.variant, planned.kind, planned.station, order.revision),
                order.revision,
                planned.variant,
                planned.change_from,
                *first_state(printer, now),
                mono,
            ),
        )
        assert cursor.lastrowid is not None  # an INSERT into a rowid table
        job_ids.append(cursor.lastrowid)
        await cursor.close()
    event = StatusEvent.CANCELLED if order.status == OrderStatus.CANCELLED else StatusEvent.UPDATED
    fields = revision_fields(order, new.source, order.cancel_reason)
    # The pass: a station given something to make is open again (a ready order no longer ready: central hears which
    # stations it waits for again), a station emptied is no longer waited for (the order may be ready now).
    followed = await follow_revision(conn, earlier, order, now)
    if followed.reopened:
        fields["reopened"] = list(followed.reopened)
    rows = [outbox_row(order.id, event, str(order.revision), now, **fields)]
    await add_outbox(conn, [*rows, *([followed.ready] if followed.ready else [])])
    return tuple(sorted(job_ids))


class RevisionStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def history(self, order_id: str) -> list[RevisionRecord]:
        """Every revision of a stored order, oldest first, with the jobs showing it; [] for an unknown order."""
        rows = await self._db.fetchall(
            "SELECT revision, status, received_at, source FROM order_revisions WHERE order_id = ?1"
            " UNION SELECT revision, status, received_at, source FROM orders WHERE id = ?1"
            " AND NOT EXISTS (SELECT 1 FROM order_revisions WHERE order_id = ?1) ORDER BY revision",
            (order_id,),
        )
        jobs = await self._db.fetchall(
            "SELECT revision, id FROM print_jobs WHERE order_id = ? ORDER BY id", (order_id,)
        )
        by_revision: dict[int, list[int]] = {}
        for revision, job_id in jobs:
            by_revision.setdefault(revision, []).append(job_id)
        return [
            RevisionRecord(
                revision=r[0],
                status=OrderStatus(r[1]),
                received_at=float(r[2]),
                source=OrderSource(r[3]),
                job_ids=tuple(by_revision.get(r[0], ())),
            )
            for r in rows
        ]
