"""The state sets the parts share: print jobs, orders, scans, recovery runs. Stored as their values, compared as str.

A leaf module (it imports nothing of the agent), so the store, the events, the spooler and the API can all use it:
the events carry these states, and the store publishes events.
"""

from __future__ import annotations

import enum


class JobState(enum.StrEnum):
    """A print job's life: queued → printing → printed; failed (retried) → dead; held or discarded by a person."""

    QUEUED = "queued"
    PRINTING = "printing"  # claimed by its spool; found so after a crash, it may be half on paper (reprinted as COPY)
    PRINTED = "printed"  # the printer confirmed it with no fault after it
    FAILED = "failed"  # an attempt failed; due again at next_attempt_at
    DEAD = "dead"  # out of attempts: a person retries or discards it
    HELD = "held"  # too old, or no printer serves its station: a person releases or discards it
    DISCARDED = "discarded"  # a person said never print it; kept for the record


# Not printed yet, and will print on their own.
WAITING_JOB_STATES = frozenset({JobState.QUEUED, JobState.PRINTING, JobState.FAILED})
# Will not print again by themselves: their order is done once it is old enough ('held' still waits for a person).
FINAL_JOB_STATES = frozenset({JobState.PRINTED, JobState.DEAD, JobState.DISCARDED})
# Jobs the spool or a person still has to do with: what a status or an alert check counts. Not the printed and
# discarded ones, which retention keeps by the ten thousand and which only the metrics and /api/v1/printers count.
NOT_DONE_JOB_STATES = frozenset(JobState) - {JobState.PRINTED, JobState.DISCARDED}


class JobKind(enum.StrEnum):
    TICKET = "ticket"  # a station's production ticket
    RECEIPT = "receipt"  # the customer's receipt


class HoldReason(enum.StrEnum):
    STALE = "stale"  # waited longer than its station's stale age
    NO_PRINTER = "no_printer"  # its printer left the config and nothing serves its station: moves on once one does


class OrderSource(enum.StrEnum):
    PUSH = "push"  # pushed by central over HTTP
    RECOVERY = "recovery"  # fetched by a recovery run after an outage
    MQTT = "mqtt"  # published by central to the store's topic on the MQTT broker


class InsertOutcome(enum.StrEnum):
    """What storing an order came to; the order id (with the revision) is the idempotency key."""

    STORED = "stored"
    DUPLICATE = "duplicate"  # the same revision with the same content was stored before (or stored and purged since)
    CONFLICT = "conflict"  # the same revision with other content: the stored order stands
    UPDATED = "updated"  # a higher revision: stored, the kitchen hears what changed
    CANCELLED = "cancelled"  # a higher revision that cancels the order
    STALE = "stale"  # a lower revision than the stored one: nothing changes
    CLOSED = "closed"  # a higher open revision of a cancelled order: refused, a cancelled order stays cancelled
    CANCEL_PENDING = "cancel_pending"  # a cancel for an order not here yet: kept; the order comes cancelled
    # The cancel route's revision, built from a stored revision another one replaced meanwhile: built again, never
    # answered (see OrderIntake.cancel).
    MOVED = "moved"


class OrderStatus(enum.StrEnum):
    OPEN = "open"
    CANCELLED = "cancelled"


class JobVariant(enum.StrEnum):
    """What a ticket born of a change shows (a job with none shows its whole revision)."""

    CHANGE = "change"  # what changed at its station since the revision on paper (change_from)
    CANCEL = "cancel"  # the order is void: what was on paper (change_from) is struck
    ADDED = "added"  # a station's first ticket, marked as part of the change


class StatusEvent(enum.StrEnum):
    """What the outbox tells central about an order."""

    RECEIVED = "received"
    PRINTED = "printed"
    FAILED = "failed"  # a job died
    READY = "ready"  # every station's ticket scanned done
    FULFILLED = "fulfilled"  # handed out
    UPDATED = "updated"  # a higher revision was stored
    CANCELLED = "cancelled"  # a revision cancelling the order was stored


class ScanOutcome(enum.StrEnum):
    TICKET_DONE = "ticket_done"  # one station's ticket done, others still open
    ORDER_READY = "order_ready"  # the last open ticket: the order is ready
    HANDED_OUT = "handed_out"
    ALREADY_DONE = "already_done"  # changed nothing (a repeated scan)
    UNKNOWN = "unknown"  # names no order (or no ticket of it)


class PickupState(enum.StrEnum):
    OPEN = "open"
    READY = "ready"
    HANDED_OUT = "handed_out"
    CANCELLED = "cancelled"  # cancelled before it was handed out: not to make, not to call out


class RunTrigger(enum.StrEnum):
    """Why a recovery run started."""

    LINK_BACK = "link_back"
    STARTUP = "startup"
    SCHEDULE = "schedule"
    MANUAL = "manual"


class RunState(enum.StrEnum):
    """A recovery run's phase while it runs, then how it ended."""

    WAITING = "waiting"  # recorded, waiting for its start delay
    VALIDATION = "validation"
    PROCESSING = "processing"
    COMPLETION = "completion"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


ACTIVE_RUN_STATES = (RunState.WAITING, RunState.VALIDATION, RunState.PROCESSING, RunState.COMPLETION)


class ItemClass(enum.StrEnum):
    """How validation classified one order of central's list."""

    MISSING = "missing"  # not here: processing stores it
    PRESENT = "present"  # here with the same content (or seen before and purged since)
    CONFLICT = "conflict"  # here with other content: the local order wins, a person looks
    INVALID = "invalid"  # fails validation or routing: kept for a person to read
    # Not here, and created well before the database may have printed what it does not know (a new box's first
    # start, a restore): another system's or an earlier database's work; recorded as seen, never printed.
    HISTORY = "history"


class CentralDown(enum.StrEnum):
    """Why the central link is down, as far as the box can tell; the value names the mail's words (render.py's
    central_unreachable:(answers) and :(reached)), none for the line's."""

    LINE = ""  # no connection made: the store's line, its router, or central's address (the likely cause: the line)
    ANSWERS = "answers"  # central answers, with errors only (its maintenance's 503, a 5xx): the line works
    REACHED = "reached"  # central's host took or refused the connection, its service did not answer: the line works


class MqttState(enum.StrEnum):
    """The MQTT broker link (edge/sync/mqtt.py)."""

    CONNECTING = "connecting"  # started, no answer yet
    CONNECTED = "connected"
    DISCONNECTED = "disconnected"  # lost or not reachable: retried with backoff
    REFUSED = "refused"  # login, client id or certificate refused: retried, but a person must fix the config
