"""Rows as they leave the store: one frozen dataclass per table or query shape, built from SQLite rows only here.

The core tables' rows (orders, print jobs, outbox, scans, recovery) live here because several parts read them; the
alert tables and the webhook answers keep theirs next to their store (edge/store/alerts.py, webhooks.py), since only
their own part reads them.
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from collections.abc import Mapping
from typing import Any

from edge.errors import UnreadableRowError
from edge.states import (
    HoldReason,
    ItemClass,
    JobKind,
    JobState,
    JobVariant,
    OrderSource,
    OrderStatus,
    PickupState,
    RunState,
    RunTrigger,
    ScanOutcome,
)

Row = sqlite3.Row  # what aiosqlite hands back too


@dataclasses.dataclass(frozen=True, kw_only=True)
class StoredOrder:
    """One order as stored (table orders)."""

    id: str  # central's id: the idempotency key
    number: str  # as the kitchen and the customer know it; repeats daily
    content_hash: str  # sha256 of the canonical JSON; compared only without a meaning_hash (KnownOrder.same_content)
    payload: str  # the canonical JSON as received
    channel: str
    priority: int
    created_at: str  # central's time, ISO 8601: the order's own age counts from it
    due_at: str | None
    received_at: float  # our wall clock when stored, unix seconds
    source: OrderSource
    revision: int = 1  # the current revision (payload and content_hash are its)
    status: OrderStatus = OrderStatus.OPEN

    @classmethod
    def from_row(cls, row: Row) -> StoredOrder:
        return cls(**_pick(cls, row) | {"source": OrderSource(row["source"]), "status": OrderStatus(row["status"])})


@dataclasses.dataclass(frozen=True, kw_only=True)
class Job:
    """One print job (table print_jobs) with its order's number."""

    id: int
    order_id: str
    kind: JobKind
    station: str | None  # a ticket's station; None for receipts
    printer: str
    state: JobState
    priority: int
    copy: bool  # print with the KOPIE / COPY mark
    attempts: int  # failed attempts since the last person's retry
    last_error: str | None
    next_attempt_at: float  # wall time a failed job is due again
    created_at: float  # wall time it was queued (with its order, or as a copy)
    printed_at: float | None
    idempotency_key: str  # order:kind:station:sequence
    redirected_from: str | None  # the printer a failover or a renamed printer moved it away from
    held_at: float | None
    released_at: float | None  # a person released (or retried) it: it prints however old it is
    held_reason: HoldReason | None  # while held
    order_number: str
    revision: int = 1  # the order's revision this job shows
    variant: JobVariant | None = None  # change, cancel, added: born of a change (None: a whole ticket or receipt)
    change_from: int | None = None  # change and cancel: the revision on paper it differs from
    rendered_with: str | None = None  # the settings that shaped it at its last claim (JobRenderer.rendered_with)

    @classmethod
    def from_row(cls, row: Row) -> Job:
        return cls(**_pick(cls, row) | _job_states(row))


@dataclasses.dataclass(frozen=True, kw_only=True)
class PrintableJob(Job):
    """A job with what printing it needs from its order: the JSON to render and the times its age counts from."""

    payload: str  # the canonical JSON of the job's revision
    # When the job was made (our wall clock): with its order, or with the revision that made it (a later revision
    # rewriting it in place does not move it); a reprint's COPY: when its order was stored
    order_received_at: float
    order_created_at: str  # central's created_at, ISO 8601
    order_due_at: str | None = None  # its fulfilment.due_at, ISO 8601 (None: as soon as possible)
    base_payload: str | None = None  # change and cancel: the JSON of the revision on paper (change_from)
    struck_payloads: str | None = None  # cancel: a JSON array of the later revisions' JSON that may be on paper too
    # Change and cancel: when the last earlier ticket of its order and station was printed (our wall clock), if one
    # was; one still printing (its mark not yet committed) counts as printed when this job was made
    follows_printed_at: float | None = None
    # A receipt: the revision of the latest earlier receipt of its order, of an older revision, that may be on paper
    # (printed, printing, or cut short), which this one replaces (None: the guest holds no other receipt of the order)
    replaces_revision: int | None = None
    replaced_printed_at: float | None = None  # when that receipt printed (our wall clock; None: not known printed)
    replaced_number: str | None = None  # the order's number on that receipt
    # A receipt: a receipt of its sale has opened the cash drawer (PRINTABLE: drawer_opened); this one opens it if not
    drawer_opened: bool = False

    @classmethod
    def from_row(cls, row: Row) -> PrintableJob:
        """Marked COPY also where a person's COPY printed after it shows what it says (PRINTABLE: shown_by_a_copy)."""
        marked = {"copy": True} if row["shown_by_a_copy"] else {}
        return cls(**_pick(cls, row) | _job_states(row) | marked | {"drawer_opened": bool(row["drawer_opened"])})


def _job_states(row: Row) -> dict[str, Any]:
    """The job's named values; UnreadableRowError names the column whose value this version does not know."""
    named: dict[str, Any] = {"copy": bool(row["copy"])}
    for column, kind in (("kind", JobKind), ("state", JobState), ("held_reason", HoldReason), ("variant", JobVariant)):
        value = row[column]
        try:
            named[column] = kind(value) if value or column in ("kind", "state") else None
        except ValueError:
            raise UnreadableRowError(
                f"print job {row['id']} has {column} {value!r}, which this version does not know (written by a newer"
                " version, or by hand)",
                row_id=row["id"],
                order_id=row["order_id"],
                state=row["state"],
            ) from None
    return named


@dataclasses.dataclass(frozen=True)
class PrintedMark:
    """A job the printer confirmed, waiting to ride on the spool's next commit (``latency_s``: stored to confirmed;
    ``held_on``: the device whose buffer may still hold it, for a printer that cannot say a job is out, only that it
    took it; "" when it said so)."""

    job_id: int
    order_id: str
    latency_s: float
    held_on: str = ""


@dataclasses.dataclass(frozen=True)
class MarksCommitted:
    """What one spool commit did: the jobs it claimed, and the printed marks that applied (job id -> printed_at)."""

    claimed: frozenset[int]
    printed: dict[int, float]


@dataclasses.dataclass(frozen=True)
class CopyThere:
    """A COPY a reprint found and did not make again: waiting to print, going out, or just come out (``state``); or
    (``copy`` False) the original itself, not printed yet: it prints on its own, and a COPY beside it would give the
    cook the order twice."""

    job_id: int
    state: JobState
    copy: bool = True


@dataclasses.dataclass(frozen=True)
class Copies:
    """What a person's reprint did: the COPYs it queued, and the COPYs of it already there, not copied again."""

    queued: tuple[int, ...]
    waiting: tuple[CopyThere, ...]


@dataclasses.dataclass(frozen=True)
class FailureRecorded:
    """What counting a failed attempt did: the job's new state (failed, or dead when out of attempts)."""

    state: JobState
    attempts: int


@dataclasses.dataclass(frozen=True)
class Rerouted:
    """A job whose printer is no longer configured: moved to ``to_printer``, or held (``to_printer`` None)."""

    job_id: int
    order_id: str
    kind: JobKind
    station: str | None
    from_printer: str
    to_printer: str | None


@dataclasses.dataclass(frozen=True, kw_only=True)
class OutboxItem:
    """A status event waiting for central (table outbox)."""

    id: int  # its place in line: events of one order go out in the order they happened
    order_id: str
    idempotency_key: str  # order:event:suffix, the same on every attempt
    payload: str  # JSON as central receives it (without the key)

    @classmethod
    def from_row(cls, row: Row) -> OutboxItem:
        return cls(**_pick(cls, row))


@dataclasses.dataclass(frozen=True, kw_only=True)
class OutboxBacklog:
    """Status events not yet delivered to central."""

    pending: int
    oldest_at: float | None  # unix seconds of the oldest one; None when nothing waits


@dataclasses.dataclass(frozen=True, kw_only=True)
class Scan:
    """One code read by a scanner and what it did (table scans)."""

    id: int
    scanned_at: float  # our wall clock, unix seconds
    scanner: str  # the configured scanner's name
    code: str  # the text as read
    order_id: str | None  # None when the code named no order we know
    station: str | None
    outcome: ScanOutcome
    detail: str  # what it did or why not, for a person

    @classmethod
    def from_row(cls, row: Row) -> Scan:
        return cls(**_pick(cls, row) | {"outcome": ScanOutcome(row["outcome"])})


@dataclasses.dataclass(frozen=True, kw_only=True)
class StationProgress:
    station: str
    done_at: float | None  # when its ticket was scanned done; None while open

    @property
    def done(self) -> bool:
        return self.done_at is not None


@dataclasses.dataclass(frozen=True, kw_only=True)
class OrderProgress:
    """An order's pickup state and which station tickets are done (tables order_pickup, station_done)."""

    state: PickupState
    ready_at: float | None
    handed_out_at: float | None
    stations: tuple[StationProgress, ...]  # every station its current revision has production items for, by name


@dataclasses.dataclass(frozen=True, kw_only=True)
class RunPhase:
    phase: RunState
    started_at: float
    finished_at: float | None  # None while the run is in it

    def public(self) -> dict[str, Any]:
        return {"phase": self.phase, "started_at": self.started_at, "finished_at": self.finished_at}


@dataclasses.dataclass(frozen=True, kw_only=True)
class RecoveryRun:
    """One recovery run (table recovery_runs)."""

    id: int
    trigger: RunTrigger
    state: RunState
    since_cursor: str  # the confirmed cursor the run started from
    next_cursor: str | None  # where validation ended; confirmed only when the run completes
    created_at: float
    started_at: float | None  # after its start delay
    finished_at: float | None
    phases: tuple[RunPhase, ...]
    counts: Mapping[str, int]  # by item class, and "stored"; in the order they were written
    errors: tuple[str, ...]

    @classmethod
    def from_row(cls, row: Row) -> RecoveryRun:
        return cls(
            **_pick(cls, row)
            | {
                "trigger": RunTrigger(row["trigger"]),
                "state": RunState(row["state"]),
                "phases": tuple(
                    RunPhase(phase=RunState(p["phase"]), started_at=p["started_at"], finished_at=p["finished_at"])
                    for p in json.loads(row["phases"])
                ),
                "counts": json.loads(row["counts"]),
                "errors": tuple(json.loads(row["errors"])),
            }
        )

    @property
    def duration_s(self) -> float | None:
        """Started to finished, in the run's records (wall time); None while running."""
        if not self.finished_at or not self.started_at:
            return None
        return round(self.finished_at - self.started_at, 3)

    def public(self) -> dict[str, Any]:
        """As the API answers it."""
        return {
            "id": self.id,
            "trigger": self.trigger,
            "state": self.state,
            "since_cursor": self.since_cursor,
            "next_cursor": self.next_cursor,
            "created_at": self.created_at,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "duration_s": self.duration_s,
            "phases": [p.public() for p in self.phases],
            "counts": dict(self.counts),
            "errors": list(self.errors),
        }


@dataclasses.dataclass(frozen=True)
class RecoveryItem:
    """One order as validation classified it, to be written down."""

    order_id: str
    cls: ItemClass
    payload: str | None  # missing: the canonical JSON to store; conflict and invalid: the backend's JSON as sent
    priority: int = 0
    due_ts: float | None = None  # unix seconds, for the processing order
    created_ts: float | None = None
    detail: str | None = None  # conflict and invalid: why, for a person
    revision: int = 0  # as listed (0: unreadable); not stored: a run keeps an order's newest version (save_page)


@dataclasses.dataclass(frozen=True, kw_only=True)
class RunItem:
    """One order of a run as read back (table recovery_items)."""

    order_id: str
    cls: ItemClass
    payload: str | None
    number: str | None  # the order number in the payload, if it has one as a string (invalid orders may not)
    detail: str | None

    @classmethod
    def from_row(cls, row: Row) -> RunItem:
        number = row["number"]
        return cls(
            order_id=row["order_id"],
            cls=ItemClass(row["class"]),
            payload=row["payload"],
            number=number if isinstance(number, str) else None,
            detail=row["detail"],
        )


def _pick(cls: type[Any], row: Row) -> dict[str, Any]:
    """The row's value for each field of ``cls`` (named like its column)."""
    return {field.name: row[field.name] for field in dataclasses.fields(cls)}
