"""Turns bus events and periodic checks into alert groups, throttles them by the rules, and delivers mail from the
outbox."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
import math
import shutil
from collections.abc import Callable, Mapping, Sequence
from contextlib import suppress
from pathlib import Path
from typing import Any

import structlog

from edge.alerts.mailer import LoginRefusedError, Mailer
from edge.alerts.outage import Outage
from edge.alerts.outbox import Outbox, OutboxStatus
from edge.alerts.render import AlertRenderer, wait_text
from edge.alerts.rules import (
    CRITICAL,
    STORE_LINE_DOWN,
    TYPES,
    WARNING,
    due_mail,
    held_by_hours,
    in_opening_hours,
    inhibited,
    silenced,
    storm_guard_left,
    storm_guarded,
)
from edge.clock import SYSTEM_CLOCK, Clock, RemoteClock, store_time, store_zone, wait_set
from edge.config import Settings, parse_hours, shown_url
from edge.dns import unresolved_host
from edge.durable import NoteInPlace, runtime_note, write_durably
from edge.errors import AlertError, StoreError
from edge.events import (
    AlertSuppressed,
    CancelRefused,
    CentralLinkChanged,
    DatabaseMoved,
    Event,
    EventBus,
    JobDead,
    JobHeld,
    JobRedirected,
    MqttConnectionChanged,
    MqttDelivery,
    MqttEventsRefused,
    MqttOrderRejected,
    MqttSessionLost,
    OrderConflicted,
    OrderEventRejected,
    OrderEventsRefused,
    OrderTotalsMismatched,
    PrinterStatusChanged,
    PushAuthChanged,
    RecoveryCompleted,
    RecoveryFailed,
    RecoveryOrderInvalid,
    RecoveryStarted,
    ScannerConnectionChanged,
    StorageProblem,
    StorageRecovered,
    TextUnprintable,
)
from edge.ops.backup import BACKUP_AHEAD_SKEW_S, backup_dir, newest_backup_at
from edge.printing.ages import JobAges
from edge.printing.spooler import retry_delay
from edge.printing.status import BLOCKING_STATES, HUNG_UP_MID_TICKET, fault_of
from edge.printing.text import UNPRINTABLE_NOTE, quoted
from edge.states import NOT_DONE_JOB_STATES, CentralDown, HoldReason, JobState
from edge.store.alerts import AlertStore, Audience, ClockMark, DigestMark, MonoTime, OutboxMail, Signal, compact
from edge.store.db import Database
from edge.store.identity import in_service_since
from edge.store.jobs import JobStore
from edge.store.outbox import OutboxStore

log = structlog.get_logger()

_BACKUP_LOOK_S = 600.0  # a nightly backup's age needs no closer look
_BLOCKED = frozenset(state.value for state in BLOCKING_STATES)  # as the status events name them
# Printer state → the alert type it fires; the other printer alerts clear (see _CLEARED_BY for those that clear fewer).
_PRINTER_TYPES = {
    "offline": "printer_offline",
    "error": "printer_error",
    "paper_out": "printer_paper_out",
    "cover_open": "printer_cover_open",
    "paper_near_end": "printer_paper_low",
}
_FEED_HELD = "printer_feed_held"  # fired by the checks once the FEED button is held FEED_HELD_S, not by the state
_PAPER_LOW = "printer_paper_low"
_PRINTER_ALERTS = (*dict.fromkeys(_PRINTER_TYPES.values()), _FEED_HELD)
# Unreachable says nothing about paper, cover, errors or the button; "unknown" (no status answers) only that it is
# reachable; an error or paper fed by the button that it answers, and nothing of paper or cover.
_CLEARED_BY = {
    "offline": (),
    "unknown": ("printer_offline",),
    "error": ("printer_offline", _FEED_HELD),
    "paper_feeding": ("printer_offline",),
}
# A cook feeds paper with the button for seconds (a strip to tear off, a new roll pulled through); held a minute, it
# has fed metres of paper, which nobody does by hand: something presses it (a stuck button, a roll or a box leaning on
# it), and tickets wait. A press shorter than this is no news, however long critical_group_wait_s is.
FEED_HELD_S = 60.0
# The near-end lever on the wobbling core of a nearly used-up roll flips back and forth as paper moves (on 12 s, off
# 8 s in the print72 probe); a new roll keeps it clear for metres of paper. Near end clear this long is a new roll (its
# all-clear is no hurry: nothing waits on it); paper out then a roll in is one at once.
PAPER_LOW_CLEAR_S = 600.0
# Critical only while tickets wait for that printer
_CRITICAL_WITH_JOBS = ("printer_offline", "printer_paper_out", "printer_error", _FEED_HELD)
_WAITING_STATES = NOT_DONE_JOB_STATES - {JobState.DEAD}  # a queue waits on them: the spool, or a person (held)
_TICKET_ALARM_STATES = {"print_job_failed": JobState.DEAD, "print_job_held": JobState.HELD}  # a ticket's, by its state
UNROUTED_RECEIPTS = "receipts"  # the subject of station_unrouted for a receipt with no receipt printer
_PENDING_MAX = 1000  # occurrences held in memory while the database refuses writes (compacted per group beyond it)
_STORE_BACKOFF_S, _STORE_BACKOFF_MAX_S = 0.5, 30.0  # after a failed write: first wait, longest wait
_STORE_FAILURES_SAID = 20  # failed rounds in a row between two log lines: about ten minutes at the longest wait
# A stop waits this long for a mail the relay is taking (within systemd's TimeoutStopSec, after the spools' drain).
_STOP_GRACE_S = 5.0
# A broker back this long ends its outage: one back for seconds between long outages (crash-looping, a flapping line)
# is the same outage, which would otherwise start its minutes again at every return and never be mailed.
_MQTT_HOLDS_S = 60.0
# Symptoms the checks count (check_interval_s): held behind a cause that just ended until the next check has counted
# them again, as the tickets it held back print. A roll changed in a rush mailed the backlog with the paper's all-clear.
_RECOUNTED = frozenset({"queue_backlog", "print_job_held"})
_RECOUNTED_CAUSES = frozenset(cause for name in _RECOUNTED for cause, _ in TYPES[name].inhibited_by)
# A recovery run's outcome is waited for this long by an earlier run's failure alarm; one that hangs longer is told.
_RUN_AWAITED_S = 300.0
_CLOCK_STEP_MIN_S = 2.0  # wall minus monotonic moving more than this is a clock step, not drift
_DIGEST_GAP_S = 12 * 3600  # two digests never closer than this (on the monotonic clock), whatever the wall clock did


_INVALID_KEY = "recovery_invalid:recovery"  # orders central has that fail validation, not printed here
_STORAGE_KEY = "storage_problem:database"  # the database's alarm (the free space's is storage_problem:disk)


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text()
    except (OSError, ValueError):
        return None


def _storage_alarm(batch: list[Signal]) -> Signal | None:
    """The database's alarm, the one mailed straight to the relay: not the low free space's (storage_problem:disk),
    which the outbox mails while the card still writes. Taken for it, a restart on the full card recorded the earlier
    run's mail as the low space's, and the database's alarm never ended (the disk78 probe, F1)."""
    return next((s for s in batch if s.key == _STORAGE_KEY and s.firing), None)


def storage_mark_path(settings: Settings) -> Path:
    """Where a run that mailed the storage alert directly notes it for the next run: the runtime directory (tmpfs),
    since the data directory is what refuses writes (the health check's agent-down alert keeps its state there too)."""
    return runtime_note(settings.agent.store_id, settings.agent.data_dir, "storage-mailed.json")


def storage_card_note(settings: Settings) -> NoteInPlace:
    """The same note on the card, for the next boot (a reboot empties the runtime directory): written in place, into a
    file made while the card had room."""
    return NoteInPlace(settings.agent.data_dir / "storage-mailed.note")


def _cause(type_name: str, detail: str) -> dict[str, Any]:
    """For an offline printer: whether its name could not be looked up (the mail's words for that, render.py's
    printer_offline:(lookup)) and the name; for a printer in error, whether it only hung up mid-ticket (its line or
    power: printer_error:(dropped)). Given at every occurrence, "" too: its details replace the last one's."""
    if type_name == "printer_error":
        # Which fault (the printer's words in English): the mail names it in its language (the i18n82 probe, F2).
        return {"cause": "dropped" if detail.startswith(HUNG_UP_MID_TICKET) else str(fault_of(detail) or "")}
    if type_name != "printer_offline":
        return {}
    host = unresolved_host(detail)
    return {"cause": "lookup" if host else "", "host": host}


def _conflict_column(event: OrderConflicted) -> str:
    """What differs and the revision sent against the one that stands ("items[0].note; Revision 1 < 2"), as the 409
    says; a conflict with a cancel kept for an order not here yet knows neither: its door."""
    if not event.stands:
        return str(event.source)
    relation = "<" if event.revision < event.stands else "="
    return f"{event.field or '?'}; Revision {event.revision} {relation} {event.stands}"


def _failovers(stations: Mapping[str, Sequence[str]], after_s: float) -> dict[str, dict[str, Any]]:
    """Per primary printer of stations with a backup, the details its outage mails carry: each backup with the stations
    whose tickets it takes (render: the "failover" sentence)."""
    backups: dict[str, dict[str, list[str]]] = {}
    for station, printers in sorted(stations.items()):
        if len(printers) > 1:
            backups.setdefault(printers[0], {}).setdefault(printers[1], []).append(station)
    return {
        primary: {"failover": [[backup, names] for backup, names in to.items()], "failover_after_s": f"{after_s:g}"}
        for primary, to in backups.items()
    }


def waiting_per_printer(counts: dict[tuple[str, JobState], int]) -> dict[str, int]:
    waiting: dict[str, int] = {}
    for (printer, state), n in counts.items():
        if state in _WAITING_STATES:
            waiting[printer] = waiting.get(printer, 0) + n
    return waiting


def make_renderer(settings: Settings, central: RemoteClock | None = None) -> AlertRenderer:
    a = settings.agent
    return AlertRenderer(
        language=a.language,
        store_name=a.store_name or a.store_id,
        store_id=a.store_id,
        tz=store_zone(a.timezone),
        status_page_url=settings.alerts.status_page_url,
        template_dir=settings.alerts.template_dir,
        central=central,
    )


@dataclasses.dataclass(frozen=True)
class _FirstLook:
    """What the outbox waits for at a start (monotonic times): at least until ``shortest``, and while any of
    ``printers`` has not told its state in this run, until ``longest``."""

    shortest: float
    longest: float
    printers: frozenset[str]


class Alerter:
    """Sources → groups in SQLite → rules → mail outbox → SMTP. Every step survives a restart."""

    def __init__(
        self,
        *,
        settings: Settings,
        db: Database,
        bus: EventBus,
        mailer: Mailer,
        clock: Clock = SYSTEM_CLOCK,
        tick_s: float = 1.0,
        ages: JobAges | None = None,
        ready: asyncio.Event | None = None,
        central: RemoteClock | None = None,
    ) -> None:
        """``ages``: the spools' waits of jobs (the queue's age is the same wait the stale hold measures); None: its
        own, which counts a job's wait from the wall clock until it first sees it. ``ready``: set once the agent is
        READY; the outbox sends, and the storage alarm goes straight to the relay, only then: a start the database stops
        (damaged) mails nothing itself, the health check tells the manager, with the backup to restore (None: at
        once). ``central``: central's clock, where there is a link: the mails' times are shown on it while the box's
        clock is off."""
        self._ready = ready
        self._settings = settings
        self._cfg = settings.alerts
        # Its outage mail says where a primary's stations' tickets go meanwhile, or the cook waits at an empty printer.
        self._failovers = _failovers(settings.stations, settings.printing.failover_after_s)
        self._blocked: set[str] = set()  # printers known not to print now (a failover does not go there)
        self._backup_looked: float | None = None  # when the backup's age was last looked at (mono)
        self._backup_ahead: tuple[float, float] | None = None  # a newest backup dated ahead: (its date, first seen)
        self._store = AlertStore(db)
        self._jobs = JobStore(db, clock=clock)
        self._ages = ages or JobAges(clock=clock, printing=settings.printing, staleness=settings.staleness)
        self._status_events = OutboxStore(db)
        self._db = db
        self._bus = bus
        self._mailer = mailer
        self._renderer = make_renderer(settings, central)
        self._central = central
        self.outbox = Outbox(settings=settings, store=self._store, mailer=mailer, bus=bus, clock=clock)
        self._tz = store_zone(settings.agent.timezone)
        self.clock = clock
        self._tick_s = tick_s
        self._pending: list[Signal] = []
        self._new_signals = asyncio.Event()
        self._new_mail = asyncio.Event()
        self._central_out = Outage(self._store, clock, "central")
        self._central_detail = ""
        self._central_cause = CentralDown.LINE
        self._central_fired = False
        # The MQTT broker down (not refusing: mqtt_refused tells that), and why; mailed after mqtt_down_min.
        self._mqtt_out = Outage(self._store, clock, "mqtt")
        self._mqtt_detail = ""
        self._mqtt_fired = False
        self._levels: dict[str, bool] = {}  # last value of each checked condition: checks signal changes, not samples
        # Printers feeding paper with the button, not yet alarmed: since when (monotonic), and the state's detail.
        self._feeding: dict[str, tuple[float, str]] = {}
        # Printers whose near end is told firing (by this run, or an earlier one: see start): since when (monotonic)
        # near end has been clear, None while not.
        self._low_rolls: dict[str, float | None] = {}
        self._gone_devices_checked = False  # see check: once a run, the config cannot change while it runs
        # Who the storage alert mailed directly has yet to reach (deferred, e.g. greylisted); None: not mailed yet.
        self._storage_owed: list[str] | None = None
        # The storage alert's group key and when (monotonic) its direct mail reached somebody, until the group is
        # stored as told: its occurrences, held in memory meanwhile, must not mail the same alarm again.
        self._storage_mailed: tuple[str, float] | None = None
        self._storage_signal: Signal | None = None  # this run's storage alarm while writes fail, for a direct mail
        self._storage_guarded = False  # its direct mail held by the storm guard (logged once an episode)
        self._storage_failures = 0  # the relay's failures of its direct mail in a row: the outbox's backoff
        # A direct mail and the record that the database has it take turns: a stall's mail runs beside the rules (their
        # writes wait behind the card), and its note, written after the record, would raise the alarm again.
        self._storage_turn = asyncio.Lock()
        self._clock_turn = asyncio.Lock()
        self._run_awaited: float | None = None  # since when a recovery run is under way or due (monotonic)
        self._runs_failing_since: float | None = None  # the first of recovery runs failing in a row (monotonic)
        self._run_over = False  # a run completed: no longer awaited once its all-clear is applied
        self._causes_over: dict[str, float] = {}  # a cause of _RECOUNTED symptoms ended (monotonic), not yet rechecked
        self._first_round = False  # see step
        self._card_note = storage_card_note(settings)
        self._next_mail_at: float | None = 0.0
        self._unsubscribe: list[Callable[[], None]] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._mail_task: asyncio.Task[None] | None = None
        self._first_look: _FirstLook | None = None  # the start's, while the outbox waits for it (_begin_first_look)
        self._status_told: set[str] = set()  # printers whose state this run has heard
        self._mail_after_step = False
        # Clear while a round folds occurrences it took from _pending into their groups: cancelled then, the
        # transaction rolls back and they are lost, so the stop waits for it (see stop).
        self._folded = asyncio.Event()
        self._folded.set()
        self._stopping = False
        self._clock_anchor: tuple[float, float] | None = None  # (wall, monotonic) when the stored times last matched
        self._clock_mark_owed = False  # this boot's first run: its anchor not kept in the store yet (see _follow_clock)

    # ---- sources -------------------------------------------------------------------------------------------

    def _push_recovery(self) -> dict[str, Any]:
        """What brings the orders a refused push leaves out, for its mail: no [central], nothing; a schedule of 0, only
        the next start (or the line's return); else the next scheduled run, within its interval."""
        central = self._settings.central
        if not central.url:
            return {"cause": "no_central"}
        if central.schedule_interval_s <= 0:
            return {"cause": "no_schedule"}
        return {"recovery_min": math.ceil(central.schedule_interval_s / 60)}

    def _signal(
        self,
        type_name: str,
        subject: str,
        firing: bool,
        *,
        mono: float | None = None,
        item: dict[str, Any] | None = None,
        again: bool = False,
        count: int = 1,
        **details: Any,
    ) -> Signal:
        signal = Signal(
            type=type_name,
            subject=subject,
            firing=firing,
            again=again,
            at=self.clock.wall(),  # set again from mono when stored: the wall clock may step meanwhile
            mono=self.clock.mono() if mono is None else mono,
            severity=TYPES[type_name].severity,
            details=details,
            item=item,
            count=count,
        )
        self._pending.append(signal)
        if not firing and type_name in _RECOUNTED_CAUSES:
            self._causes_over[f"{type_name}:{subject}"] = signal.mono
        if len(self._pending) > _PENDING_MAX:  # the database refuses writes and the occurrences keep coming
            self._pending = compact(self._pending)
            if len(self._pending) > _PENDING_MAX:
                log.error("alert_occurrences_dropped", count=len(self._pending) - _PENDING_MAX)
                self._pending = self._pending[-_PENDING_MAX:]
        self._new_signals.set()
        return signal

    def on_event(self, event: Event) -> None:
        """Bus handler: cheap and synchronous; the worker does the database work."""
        match event:
            case PrinterStatusChanged(printer=printer, old=old, new=new, detail=detail):
                self._status_told.add(printer)
                if new in _BLOCKED:
                    self._blocked.add(printer)
                else:
                    self._blocked.discard(printer)
                look = self._first_look
                if look is not None and printer in look.printers and look.printers <= self._status_told:
                    self._mail_after_step = True  # the first look is over: the mail goes once the rules took it in
                self._printer_state(printer, old, new, detail)
            case ScannerConnectionChanged(scanner=scanner, connected=connected, detail=detail, first=first):
                # Mailed once gone scanner_down_min (rules.group_wait): a replug within it is dropped unmailed.
                configured = self._settings.scanners.get(scanner)
                self._signal(
                    "scanner_offline",
                    scanner,
                    not connected,
                    again=first,
                    detail=detail,
                    down_min=f"{self._cfg.scanner_down_min:g}",
                    port=configured.port if configured else "?",
                    station=configured.station if configured and configured.station else "–",
                )
            case JobDead():
                self._signal(
                    "print_job_failed",
                    event.printer,
                    True,
                    detail=event.error,
                    item={
                        "id": event.job_id,
                        "order": event.order_number,
                        "attempts": event.attempts,
                        "error": event.error[:120],
                    },
                )
            case JobRedirected(state=JobState.DEAD | JobState.HELD):
                # Moved at a start because its printer left the config (renamed, replaced): the job is still dead, or
                # held as stale, and its alarm follows it; the old printer's is resolved once no such job is left there.
                self._signal(
                    "print_job_failed" if event.state == JobState.DEAD else "print_job_held",
                    event.to_printer,
                    True,
                    item={"id": event.job_id, "order": event.order_number or event.order_id},
                )
            case JobHeld(reason=HoldReason.NO_PRINTER) if event.printer in ("", *self._settings.printers):
                # Never had a printer, or its printer is still there but no longer serves its station (a station taken
                # out of [stations]: the mail said the printer had left the config, the config80 probe, F3): the
                # station (or receipts) needs one in the config; the mail names it.
                self._signal(
                    "station_unrouted",
                    event.station or UNROUTED_RECEIPTS,
                    True,
                    item={"id": event.job_id, "order": event.order_number or event.order_id},
                )
            case JobHeld():
                # Two causes, two mails: a stale ticket needs a decision, a ticket without a printer needs the config.
                stale = event.reason == HoldReason.STALE
                self._signal(
                    "print_job_held" if stale else "print_job_unrouted",
                    event.printer,
                    True,
                    item={"id": event.job_id, "order": event.order_number or event.order_id}
                    | ({"age_min": round(event.age_s / 60)} if stale else {})
                    | ({"ticket": event.variant.value} if event.variant else {}),
                )
            case OrderTotalsMismatched():
                # As numbers, worded in the mail's language with the receipt's amounts (the i18n82 probe, F3)
                problem = event.problems[0].as_details()
                self._signal(
                    "order_totals_mismatch",
                    "totals",
                    True,
                    order=event.number,
                    totals=problem,
                    item={"id": event.order_id, "order": event.number, "totals": problem},
                )
            case TextUnprintable():
                # Names as sent: a line break in one split the mail's text, a direction override turned it around.
                # A note is a flag the mail words in its language (a German mail said "a note": the i18n82 probe, F1).
                number = event.order_number or event.order_id
                texts = ", ".join(quoted(text) for text in event.texts if text != UNPRINTABLE_NOTE)
                note = UNPRINTABLE_NOTE in event.texts
                self._signal(
                    "text_unprintable",
                    event.printer,
                    True,
                    order=number,
                    detail=texts[:200],
                    note=note,
                    item={"id": event.order_id, "order": number, "text": texts[:120]}
                    | ({"note": True} if note else {}),
                )
            case CentralLinkChanged(up=up, detail=detail, cause=cause, down_for_s=down_for_s):
                if up:
                    self._run_awaited = self.clock.mono()  # the line's return starts a run
                    self._central_out.up()
                    self._central_fired = False
                    self._signal("central_unreachable", "central", False)
                else:
                    # Its words are what is so when the mail goes: the outage's cause may change while it lasts.
                    self._central_out.down(ago_s=down_for_s)
                    self._central_detail, self._central_cause = detail, cause
            case OrderEventsRefused():
                self._signal(
                    "central_refused_events",
                    event.order_id,
                    True,
                    order=event.number or event.order_id,
                    status=event.status,
                    waiting=event.waiting,
                    retry_min=f"{self._settings.central.refused_retry_s / 60:g}",
                    detail=f"HTTP {event.status}: {event.reason}",
                )
            case OrderEventRejected():
                order = event.number or event.order_id
                item = {"id": event.order_id, "order": order, "error": f"{event.event}: {event.reason}"[:120]}
                detail = f"HTTP {event.status}: {event.reason}"
                # A key central took with another body: most likely another box sends as this one (a cloned card).
                reused = "reused" if "idempotency_key_reused" in event.reason else ""
                self._signal(
                    "central_rejected_events", "events", True, order=order, detail=detail, item=item, cause=reused
                )
            case DatabaseMoved(ran_until=ran_until):
                self._signal("database_moved", "box", True, ran_until=ran_until)
            case RecoveryStarted():
                self._run_awaited, self._run_over = self.clock.mono(), False
            case RecoveryFailed(retry_in_s=retry_in_s):
                # A retry the agent planned itself (central busy or failing a moment) is awaited like a run under
                # way, while the failures are young: a hiccup the next run heals is no news, and runs that keep
                # failing are told once they have gone on _RUN_AWAITED_S.
                mono = self.clock.mono()
                self._runs_failing_since = self._runs_failing_since or mono
                young = retry_in_s is not None and mono + retry_in_s - self._runs_failing_since < _RUN_AWAITED_S
                self._run_awaited = mono + retry_in_s if young and retry_in_s is not None else None
                self._run_over = False
                self._signal(
                    "recovery_failed", "recovery", True, phase=event.phase, detail=event.error, run_id=event.run_id
                )
            case RecoveryCompleted():
                # Awaited until the all-clear below is applied: a flush of the checks in between found the failure
                # alarm still firing and no longer held, and mailed it with its all-clear.
                self._run_over, self._runs_failing_since = True, None
                self._signal("recovery_failed", "recovery", False)
                # A later run that finds none ends the conflicts' episode (the local version printed). Not the
                # invalid orders': the cursor moved past them, so every later run finds none, and they are still
                # not printed; the checks end that one once each has come corrected (or cancelled).
                if not event.counts.get("conflict"):
                    self._signal("recovery_conflict", "recovery", False)
            case OrderConflicted(source="recovery") | RecoveryOrderInvalid():
                kind = "recovery_conflict" if isinstance(event, OrderConflicted) else "recovery_invalid"
                order = event.number or event.order_id
                item = {"id": event.order_id, "order": order, "error": event.reason[:120]}
                self._signal(kind, "recovery", True, item=item, run_id=event.run_id)
            case OrderConflicted():  # pushed (or over MQTT): recovery's conflicts are its runs' alert above
                item = {"id": event.order_id, "order": event.number or event.order_id, "error": _conflict_column(event)}
                order = event.number or event.order_id
                self._signal("order_conflict", "orders", True, again=event.again, order=order, item=item)
            case CancelRefused():
                item = {"id": event.order_id, "order": event.number, "error": f"{event.revision} ≤ {event.stored}"}
                self._signal("cancel_refused", "orders", True, again=event.again, order=event.number, item=item)
            case MqttConnectionChanged(connected=connected, refused=refused, detail=detail):
                if refused:
                    self._signal("mqtt_refused", "mqtt", True, detail=detail)
                    self._mqtt_out.up()  # reached: its own alarm, at once
                    self._mqtt_fired = False
                    self._signal("mqtt_unreachable", "mqtt", False)
                elif connected:
                    self._signal("mqtt_refused", "mqtt", False)
                    self._mqtt_out.answers()
                    if self._mqtt_out.since is None:  # no outage on (an earlier run's alarm: over)
                        self._signal("mqtt_unreachable", "mqtt", False)
                else:
                    self._mqtt_out.down()
                    self._mqtt_detail = detail
            case MqttEventsRefused(refused=True, detail=detail):
                self._signal("mqtt_events_refused", "mqtt", True, detail=detail)
            case MqttEventsRefused():
                self._signal("mqtt_events_refused", "mqtt", False)
            case MqttDelivery(delivering=False, detail=detail):
                self._signal("mqtt_not_delivering", "mqtt", True, detail=detail)
            case MqttDelivery():
                self._signal("mqtt_not_delivering", "mqtt", False)
            case PushAuthChanged(refused=True, reason=reason, remote=remote):
                self._signal("push_refused", "api", True, reason=reason, remote=remote, **self._push_recovery())
            case PushAuthChanged():
                self._signal("push_refused", "api", False)
            case MqttSessionLost():
                self._signal("mqtt_session_lost", "mqtt", True)
            case MqttOrderRejected(error="conflict"):
                pass  # the intake's order_conflict alert (source mqtt) tells it: one mail, not two
            case MqttOrderRejected():
                item = {"id": event.order_id or f"reject {event.reject_id}", "order": event.order_id or "?"}
                self._signal("mqtt_invalid", "mqtt", True, again=event.again, item=item | {"error": event.reason[:120]})
            case StorageProblem(detail=detail):
                self._storage_signal = self._signal("storage_problem", "database", True, detail=detail)
                if self._db.stall is not None:  # the outbox's writes wait behind the stalled card: this mail must not
                    mail = self._mail_stall(self._storage_signal)
                    self._tasks = [task for task in self._tasks if not task.done()]  # a stall's mail before
                    self._tasks.append(asyncio.create_task(mail, name="alerts-storage-stall"))
            case StorageRecovered():
                self._storage_owed = self._storage_signal = None
                self._storage_guarded = False
                self._storage_failures = 0
                self._signal("storage_problem", "database", False)

    def _printer_state(self, printer: str, old: str, new: str, detail: str) -> None:
        fired, clears = _PRINTER_TYPES.get(new), _CLEARED_BY.get(new, _PRINTER_ALERTS)
        if new == "paper_feeding":
            self._feeding[printer] = (self.clock.mono(), detail)  # alarmed by the checks if it lasts (FEED_HELD_S)
        else:
            self._feeding.pop(printer, None)
        for type_name in _PRINTER_ALERTS:
            if type_name == fired:
                if type_name != _PAPER_LOW or self._roll_low(printer):
                    cause = _cause(type_name, detail) | (self._failover(printer) if type_name != _PAPER_LOW else {})
                    self._signal(type_name, printer, True, again=old == "unknown", detail=detail, **cause)
            elif type_name in clears and (type_name != _PAPER_LOW or self._roll_changed(printer, new)):
                self._signal(type_name, printer, False)

    def _failover(self, printer: str) -> dict[str, Any]:
        """Where ``printer``'s stations' tickets go while it is out: to backups not known to be out themselves (the
        mail sent the cook to a printer mailed as unreachable a moment before: the verify79 probe, V8)."""
        details = self._failovers.get(printer)
        if details is None:
            return {}
        up = [[backup, names] for backup, names in details["failover"] if backup not in self._blocked]
        return {**details, "failover": up} if up else {}

    def _roll_low(self, printer: str) -> bool:
        """Near end seen: True when that is news, not the same roll's lever flipping back within PAPER_LOW_CLEAR_S."""
        told = printer in self._low_rolls
        self._low_rolls[printer] = None
        return not told

    def _roll_changed(self, printer: str, new: str) -> bool:
        """Near end gone: True when its alarm ends now (the roll ran out: paper out's all-clear will say a new one is
        in; or no alarm is on); else the checks end it once near end stayed clear PAPER_LOW_CLEAR_S."""
        if new == "paper_out" or printer not in self._low_rolls:
            self._low_rolls.pop(printer, None)
            return True
        if self._low_rolls[printer] is None:
            self._low_rolls[printer] = self.clock.mono()
        return False

    def _printer_timers(self) -> None:
        """The FEED button held FEED_HELD_S is alarmed (from when it was pressed); near end clear PAPER_LOW_CLEAR_S is a
        new roll (its all-clear at when near end went)."""
        now = self.clock.mono()
        for printer, (since, detail) in list(self._feeding.items()):
            if now - since >= FEED_HELD_S:
                del self._feeding[printer]
                self._signal(
                    _FEED_HELD,
                    printer,
                    True,
                    mono=since,
                    detail=detail,
                    held_s=f"{FEED_HELD_S:g}",
                    **self._failover(printer),
                )
        for printer, clear_since in list(self._low_rolls.items()):
            if clear_since is not None and now - clear_since >= PAPER_LOW_CLEAR_S:
                del self._low_rolls[printer]
                self._signal(_PAPER_LOW, printer, False, mono=clear_since)

    def _level(self, type_name: str, subject: str, firing: bool, **details: Any) -> None:
        key = f"{type_name}:{subject}"
        if self._levels.get(key) != firing:
            # A run's first look at it: an earlier run's alarm still on is the same occurrence (a card low across a
            # restart was "once more" in its all-clear: the mailbox76 probe, F3)
            first = key not in self._levels
            self._levels[key] = firing
            self._signal(type_name, subject, firing, again=first, **details)

    async def check(self) -> None:
        """Conditions nobody publishes: a queue backlog, the central line down too long, a disk filling up, dead jobs
        cleared, a storage alarm over though this run never met it. Not before READY: the start moves held tickets
        to the printers the config gives them now, and a look before that took a station routed by the restart for
        one still without a printer until the next check, after the outbox's first look had sent its alarm."""
        if self._ready is not None:
            await self._ready.wait()
        started = self.clock.mono()
        await self._check()
        self._causes_over = {key: at for key, at in self._causes_over.items() if at > started}

    async def _check(self) -> None:
        now, cfg = self._wall_on(await self._follow_clock()), self._cfg
        self._printer_timers()
        # The alerts a stale count would clear are read first: one stored after the counts (a hold committed while
        # this check ran) is left for the next check, which counts its job.
        job_alerts = (
            ("print_job_failed", JobState.DEAD),
            ("print_job_held", JobState.HELD),
            ("print_job_unrouted", JobState.HELD),
        )
        firing = [(type_name, state, await self._store.firing(type_name)) for type_name, state in job_alerts]
        if not self._gone_devices_checked:
            await self._clear_gone_devices()
        await self._settle_earlier_storage_alarm()
        refused = await self._store.firing("central_refused_events")  # one group per order, read before its events
        unrouted_groups = await self._store.firing("station_unrouted")
        counts = await self._jobs.counts(NOT_DONE_JOB_STATES)
        oldest_s = self._ages.oldest_wait(await self._jobs.waiting()) or 0.0
        waiting = sum(n for (_, state), n in counts.items() if state in _WAITING_STATES)
        backlog = waiting > cfg.backlog_jobs or oldest_s >= cfg.backlog_age_min * 60
        oldest_min = round(oldest_s / 60)
        self._level("queue_backlog", "queue", backlog, waiting=waiting, oldest_min=oldest_min)
        for type_name, state, groups in firing:
            for group in groups:
                if counts.get((group.subject, state)):
                    continue
                ids = await self._named_jobs(type_name, group.subject)
                if type_name == "print_job_failed" and ids and await self._jobs.still_to_print(ids):
                    # Its ticket tried again, or replaced by a person's COPY, waits for the printer: before stop 81
                    # its all-clear came at the press of Retry or Reprint, the printer still off (the verify80
                    # probe, O1). Read from the store, so a restart while it waits keeps the alarm on too.
                    continue
                # The all-clear names how each ticket ended: before stop 82 a discarded one read as printed.
                ended = await self._jobs.endings(ids) if ids else {}
                self._signal(type_name, group.subject, False, ended={str(i): s.value for i, s in ended.items()})
        still_refused = await self._status_events.pending_orders([g.subject for g in refused])
        for group in refused:
            if group.subject not in still_refused:  # every event of the order delivered (or settled by hand)
                self._signal("central_refused_events", group.subject, False)
        unrouted = await self._jobs.unrouted_stations()
        for group in unrouted_groups:
            if (None if group.subject == UNROUTED_RECEIPTS else group.subject) not in unrouted:
                self._signal("station_unrouted", group.subject, False)
        waiting_on = waiting_per_printer(counts)
        for type_name in _CRITICAL_WITH_JOBS:
            for group in await self._store.firing(type_name):
                if group.severity == WARNING and waiting_on.get(group.subject) and self._open(now):
                    # Tickets now wait for an idle printer that is down: the same outage, critical now, not one more.
                    self._signal(type_name, group.subject, True, count=0)
        if await self._store.unsettled_items(_INVALID_KEY) == []:  # firing, and every order it lists settled
            self._signal("recovery_invalid", "recovery", False)
        await self._central_out.settle()
        await self._mqtt_out.settle()
        down_s = self._central_out.down_s()
        if down_s is not None and not self._central_fired and down_s >= cfg.central_down_min * 60:
            self._central_fired = True
            self._signal(
                "central_unreachable",
                "central",
                True,
                mono=self._central_out.since,
                again=self._central_out.before,  # an earlier run's outage still on: the same occurrence if still firing
                down_min=f"{cfg.central_down_min:g}",
                detail=self._central_detail,
                cause=str(
                    self._central_cause
                ),  # render.py's central_unreachable:(answers), :(reached): central's trouble
            )
        back = self._mqtt_out.answering_since
        if back is not None and self.clock.mono() - back >= _MQTT_HOLDS_S:
            self._mqtt_fired = False
            self._mqtt_out.up()
            self._signal("mqtt_unreachable", "mqtt", False, mono=back)  # over since it came back, told a minute later
        mqtt_down_s = None if self._mqtt_out.answering_since is not None else self._mqtt_out.down_s()
        if mqtt_down_s is not None and not self._mqtt_fired and mqtt_down_s >= cfg.mqtt_down_min * 60:
            self._mqtt_fired = True
            self._signal(
                "mqtt_unreachable",
                "mqtt",
                True,
                mono=self._mqtt_out.since,
                again=True,  # still firing from the run before (a restart while it was down): the same outage
                down_min=f"{cfg.mqtt_down_min:g}",
                broker=shown_url(self._settings.mqtt.url),
                detail=self._mqtt_detail,
            )
        await self._backup_age(now)
        if cfg.disk_free_min_mb:
            usage = await asyncio.to_thread(shutil.disk_usage, self._settings.agent.data_dir)
            free_mb = usage.free // 2**20
            self._level(
                "storage_problem",
                "disk",
                free_mb < cfg.disk_free_min_mb,
                # Numbers, worded in the mail's language (an English "MB wanted" line in German mails: i18n82, F2)
                detail="",
                free_mb=free_mb,
                min_mb=cfg.disk_free_min_mb,
            )

    async def _named_jobs(self, type_name: str, printer: str) -> list[int]:
        """The jobs a ticket alarm's mails named (its group's items)."""
        group = await self._store.group(f"{type_name}:{printer}")
        return [item["id"] for item in (group or {}).get("details", {}).get("items", [])]

    async def _backup_age(self, now: float) -> None:
        """The nightly backup not succeeding for backup.stale_after_h (a stick full or read-only, the timer off): a
        failing card would leave no copy, and the failed runs told nobody (the upgrade79 probe, S1). Looked at every
        _BACKUP_LOOK_S; a database without any backup counts from its first start."""
        stale_h = self._settings.backup.stale_after_h
        looked = self._backup_looked
        if not stale_h or (looked is not None and self.clock.mono() - looked < _BACKUP_LOOK_S):
            return
        self._backup_looked = self.clock.mono()
        taken = await asyncio.to_thread(newest_backup_at, self._settings)
        if taken is not None and taken > now + BACKUP_AHEAD_SKEW_S:
            # Written while the clock was ahead (a failing RTC; NTP stepped it back since): its date says nothing of
            # its age, and failing nights would have gone unsaid until the clock passed it (the verify79 probe, V4).
            # Counted from when this run first saw it: the nightly backup's next success replaces it as the newest.
            if self._backup_ahead is None or self._backup_ahead[0] != taken:
                self._backup_ahead = (taken, now)
            taken = self._backup_ahead[1]
        since = taken if taken is not None else await in_service_since(self._db)
        if since is None:
            return
        where = backup_dir(self._settings)
        self._level(
            "backup_stale",
            "backup",
            now - since >= stale_h * 3600,
            age=wait_text(max(0, int((now - since) // 60))),
            dir=str(where),
        )

    async def _clear_gone_devices(self) -> None:
        """A printer's (or scanner's) alarm still on from an earlier run for a name the config no longer has (renamed,
        or removed) is over: no status of that name will ever come to end it, and it would be reminded every
        repeat_interval_s and hold back what it inhibits (a backlog) for good. One set up again under that name later
        starts afresh."""
        configured = {t: set(self._settings.printers) for t in _PRINTER_ALERTS}
        configured["scanner_offline"] = set(self._settings.scanners)
        for type_name, names in configured.items():
            for group in await self._store.firing(type_name):
                if group.subject not in names:
                    self._signal(type_name, group.subject, False)
        self._gone_devices_checked = True

    # ---- throttle ------------------------------------------------------------------------------------------

    def _with_waiting(self, signal: Signal, waiting: int) -> Signal:
        # A printer off with nothing to print, or outside opening hours, is no emergency: a warning, which waits for
        # opening hours (and turns critical then if tickets still wait for it).
        if signal.type in _CRITICAL_WITH_JOBS and not (waiting and self._open(signal.at)):
            signal = dataclasses.replace(signal, severity=WARNING)
        return dataclasses.replace(signal, details={**signal.details, "jobs_waiting": waiting})

    def _open(self, at: float) -> bool:
        return in_opening_hours(self._by_the_hour(at), self._cfg)

    def _by_the_hour(self, at: float) -> dt.datetime:
        """The store's hour at ``at`` (our wall time) for the manager's opening and quiet hours: on central's clock
        while ours is known to be off (a hardware clock in local time held a printer's alarm in service as
        "outside hours": the clock76 probe, D2)."""
        return store_time(at, self._tz, self._central)

    async def _follow_clock(self) -> tuple[float, float]:
        """Moves the stored alert times with a step of the wall clock (NTP, a box that booted in 1970), so every
        duration measured against them (group wait and interval, repeat, cap, retry backoff, storm guard, silences)
        stays what it was. A step shows as wall time moving differently from monotonic time. One loop at a time: two
        that looked at once (the rules and the checks, as a run starts) each moved the times by the step.

        Returns the (wall, monotonic) pair it checked: the round's clock (see _wall_on). A wall time read again later in
        the round may be past a step this look did not see (NTP while it awaited the store): written, the next look
        moved it by that step once more (boot83 F7: the digest's mark 56 years ahead, none sent until 2082)."""
        async with self._clock_turn:
            return await self._follow_clock_now()

    def _wall_on(self, checked: tuple[float, float]) -> float:
        """Wall time now on the clock ``checked`` (a pair _follow_clock checked): the one the stored times are on."""
        return checked[0] + (self.clock.mono() - checked[1])

    async def _follow_clock_now(self) -> tuple[float, float]:
        wall, mono = self.clock.wall(), self.clock.mono()
        if self._clock_anchor is None:  # first look at the tables in this run
            # A step between an earlier run of this boot and this one (NTP setting a box that booted years behind while
            # the agent was down) is a step like any other, measured from when the tables last matched the clock: the
            # mark kept with each move of them. Else an alarm queued then was mailed as a reminder of an outage "since
            # 2021". Not the last clean stop (a store of an older release has only that): a run killed after it had
            # followed a step left it behind, and the next start took the step again; with none in this boot (a kill
            # in its first run) no step was taken at all (the boot83 probe, F2 and F4).
            self._clock_anchor = await self._store.clock_mark(self.clock.boot()) or await self._jobs.last_stop()
            if self._clock_anchor is None:  # this boot's first run: it owes its later runs the mark they measure from
                await self._store.clamp_future(wall)
                self._clock_anchor, self._clock_mark_owed = (wall, mono), True
        anchor = self._clock_anchor
        stepped = (wall - anchor[0]) - (mono - anchor[1])
        if abs(stepped) < _CLOCK_STEP_MIN_S:
            if self._clock_mark_owed:
                await self._keep_clock_mark(anchor)
            return wall, mono
        self._clock_anchor = (wall, mono)  # set before awaiting: another loop must not move the times again
        try:
            await self._store.shift_times(stepped, self._clock_mark(wall, mono))
        except StoreError:
            self._clock_anchor = anchor  # moved at the next try
            raise
        self._clock_mark_owed = False  # kept with the move
        # The mail loop may have planned its sleep on the old times (read between the step and this move): its plan
        # moves too, and it plans again now, or a retry due in a second would wait up to 30 ticks.
        if self._next_mail_at is not None:
            self._next_mail_at += stepped
        self._new_mail.set()
        log.warning("clock_stepped", seconds=round(stepped, 1), note="alert timers moved with it")
        return wall, mono

    def _clock_mark(self, wall: float, mono: float) -> ClockMark | None:
        boot = self.clock.boot()
        return None if boot is None else ClockMark(boot=boot, wall=wall, mono=mono)

    async def _keep_clock_mark(self, anchor: tuple[float, float]) -> None:
        mark = self._clock_mark(*anchor)
        try:
            if mark is not None:
                await self._store.keep_clock_mark(mark)
        except StoreError:
            # A card that takes no write now does not stop the look: the fold after it mails the storage alarm
            # directly, which it did before the mark was kept. Kept at a later look.
            return
        self._clock_mark_owed = False

    async def step(self) -> None:
        """Fold new occurrences into their groups, then send what the rules say is due."""
        # Asked for with a printer's state, which is in this round's occurrences: a round under way when it came is not
        # the one that took it in.
        mail_after, self._mail_after_step = self._mail_after_step, False
        checked = await self._follow_clock()
        if not self._first_round:  # before the first mail: an earlier run's storage alarm as it stands now
            self._first_round = True
            with suppress(OSError):  # a card full since it was first set up: the runtime directory's note only
                await asyncio.to_thread(self._card_note.make)
            await self._settle_earlier_storage_alarm()
        if self._pending and not self._stopping:  # once stopping, the stop folds what is pending itself
            self._folded.clear()
            try:
                await self._fold(checked)
            finally:
                self._folded.set()
        if self._storage_mailed is not None:
            await self._storage_told(checked)
        try:
            await self.flush(checked)
        except StoreError:
            # The alarm's occurrence fitted in the database, its mail does not (it needs new pages): it goes straight
            # to the relay too.
            if self._storage_signal is not None:
                await self._mail_storage_directly([self._storage_signal])
            raise
        if mail_after:
            self._new_mail.set()

    async def _fold(self, checked: tuple[float, float]) -> None:
        """The pending occurrences into their groups, and what that tells."""
        run_over = self._run_over  # its all-clear is in this batch (one coming meanwhile waits for the next)
        batch, self._pending = self._stamped(self._pending, checked), []
        if any(s.type.startswith("printer_") and s.firing for s in batch):
            waiting = waiting_per_printer(await self._jobs.counts(NOT_DONE_JOB_STATES))
            batch = [
                self._with_waiting(s, waiting.get(s.subject, 0)) if s.type.startswith("printer_") and s.firing else s
                for s in batch
            ]
        try:
            outcomes = await self._store.apply(batch)
        except StoreError:
            # The database may be back at the next try; nothing is forgotten meanwhile, and memory stays bounded.
            self._pending = compact(batch + self._pending)
            await self._mail_storage_directly(batch)
            raise
        if run_over and self._run_over:  # the run's outcome is in the groups now
            self._run_awaited, self._run_over = None, False
        for signal, new_episode in outcomes:
            if not new_episode:
                self._bus.publish(AlertSuppressed(alert_type=signal.type, key=signal.key, reason="throttled"))
        if (stored := _storage_alarm(batch)) is not None:  # its write failed, then the disk got room
            await self._told_by_earlier_run(stored.key)

    @staticmethod
    def _stamped(signals: list[Signal], checked: tuple[float, float]) -> list[Signal]:
        """Each occurrence's wall time from its monotonic time, on the clock ``checked`` (the stored times')."""
        wall, mono = checked
        return [dataclasses.replace(s, at=wall - (mono - s.mono)) for s in signals]

    async def _mail_stall(self, signal: Signal) -> None:
        """A stalled card's alarm, straight to the relay, tried again while the card stalls if the relay failed it
        (the outbox, which would, waits behind the card). Held by the storm guard (the card stalled again soon after
        its last alarm), it goes when that window ends if the card still stalls then; a stall over by then is told by
        the rules once its occurrences are stored (the digest)."""
        while (held_s := await self._mail_storage_directly([signal])) is not None:
            await asyncio.sleep(held_s)
            if self._storage_signal is not signal:
                return

    async def _mail_storage_directly(self, batch: list[Signal]) -> float | None:
        """The outbox lives in the database that just failed: tell the manager once, bypassing it. Returns when to try
        again (seconds: the storm guard holds it, or the relay failed it), None when it went or needs no mail."""
        if self._ready is not None:
            await self._ready.wait()
        async with self._storage_turn:
            return await self._mail_storage_alarm(batch)

    async def _mail_storage_alarm(self, batch: list[Signal]) -> float | None:
        signal = _storage_alarm(batch)
        if signal is None:
            return None
        await self._told_by_earlier_run(signal.key)
        if self._storage_owed == []:
            return None
        now = self.clock.wall()
        told_at = await self._store.told_firing_at(signal.key)  # read only: it answers on the full disk
        if told_at is not None and now - told_at < self._cfg.repeat_interval_s:
            self._storage_owed = []  # the outbox told it (an earlier run's, or this one's): no second alarm
            log.info("storage_alert_told_before", key=signal.key, ago_s=round(now - told_at))
            return None
        # A critical alarm's storm guard, as the rules apply it to the outbox's mails: a card that stalls every few
        # minutes (a worn one's housekeeping) is not an alarm each time, nor one without its all-clear.
        group = await self._store.group(signal.key)  # read only too
        if (held_s := self._storm_guard_left(group, now)) is not None:
            if not self._storage_guarded:
                self._storage_guarded = True
                log.info("storage_alert_storm_guarded", key=signal.key, mailed_in_s=round(held_s))
            return held_s
        extra = self._storage_outages_since_mail(signal, group)
        if group is not None:
            extra += await self._store.digested_since_mail(signal.key)
        alarm = {
            "key": signal.key,
            "type": signal.type,
            "subject": signal.subject,
            "severity": signal.severity,
            "first_at": signal.at,
            "details": signal.details,
        }
        recipients = self._recipients(signal.severity) if self._storage_owed is None else self._storage_owed
        # Every round whose writes fail comes here: after a refused password, each was one more failed login.
        if (rest_s := await self.outbox.login_rest_left()) is not None:
            return rest_s
        try:
            delivery = await self._mailer.send_without_outbox(
                self._renderer.alert(alarm, kind="firing", extra=extra, recipients=recipients)
            )
        except AlertError as err:
            log.error("alert_mail_failed", key=signal.key, error=str(err), note="database not writable and mail failed")
            if isinstance(err, LoginRefusedError) and err.permanent:
                return await self.outbox.login_refused(str(err))
            self._storage_failures += 1
            return retry_delay(self._storage_failures, base=self._cfg.retry_base_s, cap=self._cfg.retry_max_s)
        self._storage_failures = 0
        # A deferred recipient (4xx) is tried again at the next round while the database still refuses writes, and by
        # a later run: the note says who is still owed.
        self._storage_owed = list(delivery.deferred)
        if delivery.accepted and self._storage_mailed is None:
            self._storage_mailed = (signal.key, self.clock.mono())
        if self._storage_mailed is not None:
            await asyncio.to_thread(self._note_storage_mailed, self._storage_mailed[1], self._storage_owed)
        if delivery.deferred or delivery.refused:
            log.warning(
                "alert_mail_deferred",
                key=signal.key,
                deferred=list(delivery.deferred),
                refused=delivery.refused,
                note="deferred recipients are tried again while the database refuses writes",
            )
        return None

    def _storm_guard_left(self, group: dict[str, Any] | None, now: float) -> float | None:
        """How long the storm guard holds a new storage alarm still (None: it does not): within critical_storm_s of
        the last critical mail, the group's as the rules have it, or this run's direct mail not yet recorded (a card
        that stalled again at once holds back the record with its occurrences)."""
        starts = []
        if group is not None and group["mailed"] != "firing" and group["critical_mail_at"] is not None:
            starts.append(float(group["critical_mail_at"]))
        if self._storage_mailed is not None and self._storage_owed is None:  # None: a new episode, not a retry
            starts.append(now - (self.clock.mono() - self._storage_mailed[1]))
        left = storm_guard_left(max(starts, default=None), now, self._cfg)
        return left if left > 0 else None

    def _storage_outages_since_mail(self, signal: Signal, group: dict[str, Any] | None) -> int:
        """The card's outages since its last mail that neither the digest nor this one is: stored and not yet told,
        and this run's still waiting to be. A signal a round took is stored (its batch behind a stalled card is
        committed, only its fsync waits), so this one is among the stored unless it still waits."""
        waiting = [s for s in self._pending if s.type == signal.type and s.firing]
        stored = 0 if group is None else int(group["fires_since_mail"])
        if all(s.mono != signal.mono for s in waiting):
            stored -= 1
        return max(0, stored) + sum(s.mono != signal.mono for s in waiting)

    async def _told_by_earlier_run(self, key: str) -> None:
        """Whether an earlier run mailed the storage alert directly (its note): then that mail is this run's alarm,
        recorded as such once its occurrences are stored, and a restart on the full disk (or one whose disk got room
        just after a write failed) is no news but to the recipients the relay deferred. Looked for once per
        episode."""
        if self._storage_owed is not None or self._storage_mailed is not None:
            return  # this run mailed it itself, or looked already
        earlier = await asyncio.to_thread(self._storage_mailed_before, self._cfg.repeat_interval_s)
        if earlier is None:
            return
        mono, self._storage_owed = earlier
        self._storage_mailed = (key, mono)
        log.info("storage_alert_mailed_before", key=key, ago_s=round(self.clock.mono() - mono), owed=self._storage_owed)

    async def _settle_earlier_storage_alarm(self) -> None:
        """A storage alarm this run did not raise, as it stands: one an earlier run of this boot mailed directly (its
        note in the runtime directory) is told by that mail, recorded as such before anything else is mailed; and one
        stored firing, or noted, ends once the card has room again. A run that never meets the problem sees no
        transition to end it: the disk got room while the agent was down, or while it ran on the room its start gave
        back, which is not room (its writes succeed on a full card): the card needs that much and as much again.
        Looked at in the first round and at every check."""
        if self._db.write_problem is not None or self._storage_owed is not None or self._storage_mailed is not None:
            return  # this run meets the problem itself: its transitions tell
        stored = any(group.subject == "database" for group in await self._store.firing("storage_problem"))
        earlier = await asyncio.to_thread(self._storage_mailed_before, math.inf)
        mailed = None if earlier is None else earlier[0]
        if earlier is not None and stored:  # its end comes at a later check, once the mail is recorded
            self._storage_mailed, self._storage_owed = (_STORAGE_KEY, earlier[0]), earlier[1]
            return
        if not (stored or mailed is not None) or not await self._db.card_has_room():
            return
        if mailed is not None:  # nothing stored: stored now as told by that mail, then ended
            self._signal("storage_problem", "database", True, mono=mailed)
            self._storage_owed, self._storage_mailed = [], (_STORAGE_KEY, mailed)
            log.info("storage_alert_mailed_before", key=_STORAGE_KEY, ago_s=round(self.clock.mono() - mailed))
        self._signal("storage_problem", "database", False)
        log.info("storage_alarm_over", key=_STORAGE_KEY, note="the card has room again")

    def _storage_mailed_before(self, within_s: float) -> tuple[float, list[str]] | None:
        """When (monotonic, on this run's clock) an earlier run mailed the storage alert directly, and to whom the relay
        deferred it, if that is less than ``within_s`` ago (for the alarm again: repeat_interval_s, so a condition that
        just stays is mailed again every repeat interval, not at every start). The runtime directory's note, else the
        card's (a reboot emptied the first); a note of another boot is timed on the wall clock, the only one that spans
        a reboot, and one a clock step puts in the future counts as just now."""
        for text in (_read_text(storage_mark_path(self._settings)), self._card_note.read()):
            try:
                mark = json.loads(text or "")
                boot, mono, wall = mark["boot"], float(mark["mono"]), mark.get("wall")
                owed = [str(address) for address in mark.get("owed", [])]
            except (ValueError, TypeError, KeyError, AttributeError):
                continue
            if boot is not None and boot == self.clock.boot():
                return (mono, owed) if self.clock.noted_within(boot, mono, within_s) else None
            if not isinstance(wall, int | float):
                return None
            ago = max(0.0, self.clock.wall() - wall)
            return (self.clock.mono() - ago, owed) if ago < within_s else None
        return None

    def _note_storage_mailed(self, mono: float | None, owed: list[str] | None = None) -> None:
        """Notes the direct mail for a restart or a reboot on the same full disk, in the runtime directory and on the
        card (None: forgets it, the database has it now)."""
        path = storage_mark_path(self._settings)
        note = None
        if mono is not None:
            wall = self.clock.wall() - (self.clock.mono() - mono)
            note = json.dumps({"boot": self.clock.boot(), "mono": mono, "wall": wall, "owed": owed or []})
        try:
            if note is None:
                path.unlink(missing_ok=True)
            else:
                write_durably(path, note.encode())
        except OSError as err:
            log.warning("storage_alert_mark_not_written", path=str(path), error=str(err))
        try:
            if note is None:
                self._card_note.make()  # the card has room now: one it could not make at the start is made
            self._card_note.write(note)
        except (OSError, ValueError) as err:  # ValueError: a note too long for its file (hundreds of recipients)
            log.warning("storage_alert_mark_not_written", path=str(self._card_note.path), error=str(err))

    async def _storage_told(self, checked: tuple[float, float]) -> None:
        """The storage alert's occurrences are stored: its direct mail is recorded as its alarm. Not while one is still
        in memory (a stall's, signalled after this round took its batch): the record would find nothing to mark, and
        the alarm would count as never mailed (no storm guard for the card's next stall)."""
        async with self._storage_turn:
            if self._storage_mailed is not None and not _storage_alarm(self._pending):
                await self._record_storage_told(checked)

    async def _record_storage_told(self, checked: tuple[float, float]) -> None:
        assert self._storage_mailed is not None
        key, mono = self._storage_mailed
        # Those the relay deferred the direct mail for get the alarm through the outbox, the others have it.
        owed = self._storage_owed or []
        group = await self._store.group(key) if owed else None
        mail = None if group is None else self._renderer.alert(group, kind="firing", extra=0, recipients=owed)
        others = [] if group is None else [r for r in self._recipients(group["severity"]) if r not in owed]
        await self._store.mailed_directly(key, at=checked[0] - (checked[1] - mono), owed=mail, delivered=others)
        # The database says it is told from now on (told_firing_at), also to a later run.
        self._storage_mailed = self._storage_owed = None
        await asyncio.to_thread(self._note_storage_mailed, None)

    def _recipients(self, severity: str) -> list[str]:
        extra = self._cfg.critical_to if severity == CRITICAL else []
        return list(dict.fromkeys([*self._cfg.to, *extra]))

    async def flush(self, checked: tuple[float, float]) -> None:
        now, cfg = self._wall_on(checked), self._cfg
        groups = await self._store.open_groups()
        firing_keys = {g["key"] for g in groups if g["state"] == "firing"}
        run_awaited = self._run_awaited is not None and self.clock.mono() - self._run_awaited < _RUN_AWAITED_S
        if self._central_out.since is not None or run_awaited:
            # Known down, not yet for central_down_min: a recovery it cut short is its symptom, and waits with it; so
            # it waits for the outcome of a run under way, or due since the line came back (over if that completes).
            firing_keys.add("central_unreachable:central")
        if self._central_out.since is not None and self._central_cause == CentralDown.LINE:
            firing_keys.add(f"{STORE_LINE_DOWN}:central")
        recounting = firing_keys | self._causes_over.keys()

        def causes(group: dict[str, Any]) -> set[str]:
            return recounting if group["type"] in _RECOUNTED else firing_keys

        matchers = [r.matcher for r in await self._store.active_silences(now)]
        hours = self._by_the_hour(now)
        warned_last_hour = await self._store.warning_mails_since(now - 3600)
        unreached = await self._store.unreached_alarms() if any(g["state"] == "resolved" for g in groups) else set()
        waiting_now: dict[str, int] | None = None  # per printer, read once a flush if a mail needs it
        queued = 0
        for group in groups:
            due = due_mail(group, now, cfg, alarm_unreached=group["key"] in unreached)
            if due is None or (self._storage_mailed is not None and group["key"] == self._storage_mailed[0]):
                continue  # a storage alarm mailed directly is its group's news, once its occurrences are stored
            key = group["key"]
            if due.kind == "drop":
                await self._drop(group, now, "cleared")
                continue
            if due.kind == "resolved" and group["notified"] == "resolved" and group["held_reason"] == "inhibited":
                # Held behind its cause, whose mails told it, and over with it: its all-clear alone is of an alarm
                # nobody was sent.
                await self._drop(group, now, "inhibited")
                continue
            if due.kind == "resolved" and await self._tickets_moved_on(group):
                # Its alarm under the printer's new name tells it; this all-clear would say those orders printed.
                await self._drop(group, now, "moved")
                continue
            if due.kind == "resolved" and group["notified"] == "firing" and group["notified_severity"] == CRITICAL:
                # The end of a critical alarm is critical, whatever the outage was at its end (found once more with
                # nothing waiting): it passes what its alarm passed and reaches whom it reached.
                group = {**group, "severity": CRITICAL}
            critical = group["severity"] == CRITICAL
            replaces = due.kind == "resolved" and key in unreached
            reason = (
                ("silenced" if silenced(key, matchers) else None)
                or ("inhibited" if due.kind != "resolved" and inhibited(group, causes(group)) else None)
                or held_by_hours(group["severity"], hours, cfg)
                # an all-clear that takes the place of its alarm nobody received adds no mail to the hour's
                or ("cap" if not critical and warned_last_hour >= cfg.max_per_hour and not replaces else None)
            )
            if reason and group["state"] == "resolved" and group["notified"] == "resolved":
                await self._drop(group, now, reason)  # it is over and nobody was told: telling later is only noise
                continue
            if reason:
                if group["held_reason"] != reason:  # once per reason, not every tick
                    await self._store.hold(key, reason, now, group["fires_since_mail"])
                    self._bus.publish(AlertSuppressed(alert_type=group["type"], key=key, reason=reason))
                    log.info("alert_held", key=key, reason=reason, occurrences=group["fires_since_mail"])
                continue
            if (
                (cfg.digest and not critical)
                # storm guard: a device's next episode soon after its last critical mail (one the manager was last
                # mailed resolved about, its news since in the digest; turning critical included)
                or (due.kind == "firing" and group["mailed"] != "firing" and storm_guarded(group, now, cfg))
                # its firing news went to the digest too; or, over before anyone was told, a storm's next episode
                or (due.kind == "resolved" and group["notified"] != "resolved" and group["mailed"] != "firing")
                or (due.kind == "resolved" and group["notified"] == "resolved" and storm_guarded(group, now, cfg))
            ):
                await self._store.told(group, kind=due.kind, now=now, mail=None, count=group["fires_since_mail"])
                continue
            extra = due.extra
            if due.kind == "firing" and group["mailed"] != "firing" and group["critical_mail_at"] is not None:
                # The storm guard sent its news since the last mail to the digest: this mail counts those outages too.
                extra += await self._store.digested_since_mail(key)
            if due.kind != "resolved" and "failover" in group["details"]:
                # Where the tickets go as it is now: a backup out since the alarm was raised is none
                details = {k: v for k, v in group["details"].items() if k not in ("failover", "failover_after_s")}
                group = {**group, "details": details | self._failover(group["subject"])}
            if due.kind != "resolved" and "jobs_waiting" in group["details"]:
                # As many as wait now: the count signalled is of the outage's first moment.
                if waiting_now is None:
                    waiting_now = waiting_per_printer(await self._jobs.counts(NOT_DONE_JOB_STATES))
                details = {**group["details"], "jobs_waiting": waiting_now.get(group["subject"], 0)}
                group = {**group, "details": details}
            mail = self._renderer.alert(
                group, kind=due.kind, extra=extra, recipients=self._recipients(group["severity"])
            )
            await self._store.told(group, kind=due.kind, now=now, mail=mail, count=group["fires_since_mail"])
            log.info("alert_queued", key=key, kind=due.kind, extra=extra)
            warned_last_hour += not critical
            queued += 1
            # The outbox sends it now, also if a later write of this round fails (a full card takes small ones): the
            # round ended on that refusal without a word to it, and the mail waited for its next look, 30 s (a
            # storage alarm so queued counted as told, and the manager got its all-clear alone: verify67).
            self._new_mail.set()
        queued += await self._digest(now, hours)  # warnings with digest on, and what the storm guard held back
        if queued:
            self._new_mail.set()

    async def _tickets_moved_on(self, group: dict[str, Any]) -> bool:
        """Every ticket of a dead or held ticket's alarm went to another printer still dead or held (its printer
        renamed in the config, or replaced): nothing was settled, so the alarm's end is no news."""
        state = _TICKET_ALARM_STATES.get(group["type"])
        ids = [item["id"] for item in group["details"].get("items", [])]
        if state is None or not ids:
            return False
        jobs = await self._jobs.by_ids(ids)
        return len(jobs) == len(ids) and all(j.state == state and j.printer != group["subject"] for j in jobs)

    async def _drop(self, group: dict[str, Any], now: float, reason: str) -> None:
        await self._store.drop(group["key"], now, reason, group["fires_since_mail"])
        self._bus.publish(AlertSuppressed(alert_type=group["type"], key=group["key"], reason=reason))
        log.info("alert_dropped", key=group["key"], reason=reason, occurrences=group["fires_since_mail"])

    async def _digest(self, now: float, hours: dt.datetime) -> int:
        """``hours``: the store's time now (on central's clock while ours is known to be off, as opening hours are
        read): the digest goes at digest_at by it; its marks are on our clock."""
        at = parse_hours(self._cfg.digest_at)
        assert at is not None  # the config check guarantees HH:MM
        last = await self._store.last_digest()
        # fold=0: on the October night 02:00-02:59 comes twice and the digest goes at the first; in March a time
        # that never comes maps past the gap (02:30 -> 03:30), so none is skipped.
        due = hours.replace(hour=at[0].hour, minute=at[0].minute, second=0, microsecond=0, fold=0).timestamp()
        today_at = now + (due - hours.timestamp())  # on our clock
        if now < today_at or (last is not None and (last.at >= today_at or self._digest_lately(last))):
            return 0
        entries = [dataclasses.asdict(e) for e in await self._store.digest_entries(last.log_id if last else 0)]
        sent = MonoTime(boot=boot, mono=self.clock.mono()) if (boot := self.clock.boot()) else None
        mark = DigestMark(at=now, log_id=entries[-1]["id"] if entries else (last.log_id if last else 0), sent=sent)
        mail = self._renderer.digest(entries, recipients=self._cfg.to) if entries else None
        await self._store.digested(mark, mail)
        return int(mail is not None)

    def _digest_lately(self, last: DigestMark) -> bool:
        """The last digest went less than _DIGEST_GAP_S ago by this boot's monotonic clock: a clock that was ahead
        when it went, now put right, must not send a second one the same morning (its wall time moved with the step,
        see AlertStore.shift_times, so the next day's comes as due)."""
        sent = last.sent
        return sent is not None and sent.boot == self.clock.boot() and self.clock.mono() - sent.mono < _DIGEST_GAP_S

    # ---- delivery ------------------------------------------------------------------------------------------

    async def deliver_due(self) -> int:
        """Send what the outbox holds; see Outbox."""
        await self._follow_clock()
        return await self.outbox.deliver_due()

    async def outbox_status(self) -> OutboxStatus:
        """Mails waiting, mails dead-lettered (for a person to retry or discard), and anything held in memory."""
        return await self.outbox.status(waiting_signals=len(self._pending))

    async def retry_mail(self, mail_id: int) -> OutboxMail:
        mail = await self.outbox.retry(mail_id)
        self._new_mail.set()
        return mail

    async def discard_mail(self, mail_id: int) -> OutboxMail:
        return await self.outbox.discard(mail_id)

    async def send_test(self) -> OutboxMail:
        """A test mail through the same outbox as every alert, to everyone who gets alerts; returns how it went."""
        mail = self._renderer.test(recipients=self.outbox.recipients(Audience.CRITICAL))
        tried = await self.outbox.send_now("test", mail, Audience.CRITICAL)
        # A recipient it deferred is tried again at the outbox's backoff: the mail loop plans its next look anew
        # (before, it slept its 30 s, unaware of the mail).
        self._new_mail.set()
        return tried

    # ---- life cycle ----------------------------------------------------------------------------------------

    async def start(self) -> None:
        # The same roll's alarm stays on across a restart: a lever that reads clear at the start (a wobbling core) is
        # held down PAPER_LOW_CLEAR_S like any, not an all-clear that its next near end follows with a second alarm.
        # Read before the spools' first states are heard.
        self._low_rolls = dict.fromkeys((group.subject for group in await self._store.firing(_PAPER_LOW)), None)
        for event_type in (
            PrinterStatusChanged,
            ScannerConnectionChanged,
            JobDead,
            JobHeld,
            CancelRefused,
            CentralLinkChanged,
            RecoveryStarted,
            RecoveryFailed,
            RecoveryCompleted,
            StorageProblem,
            StorageRecovered,
            OrderConflicted,
            RecoveryOrderInvalid,
            OrderTotalsMismatched,
            MqttConnectionChanged,
            MqttDelivery,
            MqttEventsRefused,
            MqttOrderRejected,
            MqttSessionLost,
            OrderEventsRefused,
            OrderEventRejected,
            DatabaseMoved,
            JobRedirected,
            PushAuthChanged,
            TextUnprintable,
        ):
            self._unsubscribe.append(self._bus.subscribe(self.on_event, event_type))
        self._mail_task = asyncio.create_task(
            self._loop("deliver", self._deliver_and_plan, self._new_mail, self._until_next_mail), name="alerts-mail"
        )
        self._tasks = [
            asyncio.create_task(
                self._loop("step", self.step, self._new_signals, lambda: self._tick_s), name="alerts-rules"
            ),
            self._mail_task,
            asyncio.create_task(
                self._loop("check", self.check, None, lambda: self._cfg.check_interval_s), name="alerts-check"
            ),
        ]

    async def _deliver_and_plan(self) -> None:
        if self._ready is not None:
            await self._ready.wait()
        await self._ensure_first_look()
        if self._looking():
            return
        await self.deliver_due()
        self._next_mail_at = await self._store.next_mail_at()

    async def _ensure_first_look(self) -> _FirstLook:
        """What an earlier run left may be over by now, or not: the printer back, the station routed. Until the start
        has looked, the outbox sends nothing, so that a problem over by the restart is told by its all-clear alone,
        which supersedes its alarm or reminder still waiting ("over before anyone was told"). It waits a critical
        group's wait if an earlier run left an alarm it could not mail (the relay was down), and while a printer with
        an open alarm (mailed, held, or in its group wait) has not told its state (its first status poll,
        `status_poll_s` at most, or its first ticket)."""
        if self._first_look is None:
            now = self.clock.mono()
            carried = await self._store.unreached_alarms()
            keys = carried | {g["key"] for g in await self._store.open_groups()}
            named = {key.partition(":")[2] for key in keys if key.startswith("printer_")}
            waits = [self._settings.printers[p] for p in named if p in self._settings.printers]
            shortest = now + self._cfg.critical_group_wait_s if carried else now
            longest = max([shortest, *(now + p.status_poll_s + p.status_timeout for p in waits)])
            if self._first_look is None:  # the other loop may have made it meanwhile
                printers = frozenset(p.name for p in waits)
                self._first_look = _FirstLook(shortest=shortest, longest=longest, printers=printers)
        return self._first_look

    def _looking(self) -> float:
        """Seconds the start's first look may still take (0 once it is over)."""
        look, now = self._first_look, self.clock.mono()
        if look is None or now >= look.longest:
            return 0.0
        return look.longest - now if look.printers - self._status_told else max(0.0, look.shortest - now)

    def _until_next_mail(self) -> float:
        """Until the next retry is due; new mail wakes the loop at once, so an empty outbox is only looked at now and
        then."""
        if looking := self._looking():
            return looking
        wait = self._tick_s * 30
        if self._next_mail_at is not None:
            wait = min(wait, self._next_mail_at - self.clock.wall())
        if (server_wait := self.outbox.server_wait()) is not None:
            wait = max(wait, server_wait)  # the relay cannot be used: nothing is due before it is tried again
        return max(0.0, wait)

    async def _loop(
        self, name: str, work: Callable[[], Any], wake: asyncio.Event | None, interval: Callable[[], float]
    ) -> None:
        store_failures = 0
        while not self._stopping:  # not only cancel(): a library it awaits may swallow it
            if wake is not None:
                wake.clear()
            try:
                await work()
                if store_failures > 1:
                    log.info("alerts_resumed", part=name, failures=store_failures)
                store_failures = 0
            except (StoreError, OSError) as err:
                # A write that cannot be made now (full or read-only disk) is not retried in a tight loop: the
                # work waits, growing to _STORE_BACKOFF_MAX_S, and nothing wakes it sooner. Said at the first
                # failure and then every _STORE_FAILURES_SAID: each line is written to the card that is full, and
                # the storage alert tells the rest (the disk78 probe, F3: an error line twice a minute for hours).
                store_failures += 1
                delay = min(_STORE_BACKOFF_MAX_S, _STORE_BACKOFF_S * 2 ** (store_failures - 1))
                if store_failures % _STORE_FAILURES_SAID == 1:
                    log.error("alerts_failed", part=name, error=str(err), retry_in_s=delay, failures=store_failures)
                await asyncio.sleep(delay)
                continue
            except Exception:  # alerting must never take the agent down with it
                log.exception("alerts_failed", part=name)
            if wake is not None:
                await wait_set(wake, interval())
            else:
                await asyncio.sleep(interval())

    async def stop(self) -> None:
        self._stopping = True
        self.outbox.stopping = True
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        # A mail the relay is taking now is seen through and recorded: cut off, its outcome would be unknown and the
        # next start would send it again. No other mail is started. One whose connection is still being made is cut
        # off at once (the relay has none of it; it waits in the outbox): without internet, the relay's name alone
        # can take 10-30 s not to be resolved.
        self._new_mail.set()
        if self._mail_task is not None and not self._mailer.connecting:
            await asyncio.wait([self._mail_task], timeout=_STOP_GRACE_S)
        # A round folding occurrences into their groups finishes its write: cancelled, the write rolls back and what it
        # took from _pending is lost (a scanner pulled just before a restart had its delay start again at the next).
        await wait_set(self._folded, _STOP_GRACE_S)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._pending:
            # Occurrences still in memory go into the throttle state; their mails wait in the outbox for the next start.
            try:
                checked = await self._follow_clock()  # a step since the last round: the next run would move them by it
                await self._store.apply(self._stamped(self._pending, checked))
                if self._storage_mailed is not None:
                    await self._storage_told(checked)
            except StoreError as err:
                log.error("alerts_lost_on_stop", occurrences=len(self._pending), error=str(err))
        log.info("alerts_stopped")
