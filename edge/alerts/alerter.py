"""Turns bus events and periodic checks into alert groups, throttles them by the rules, and delivers mail from the outbox."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
import shutil
import time
from collections.abc import Callable
from typing import Any
from zoneinfo import ZoneInfo

import structlog

from edge.alerts.mailer import Mailer
from edge.alerts.render import AlertRenderer
from edge.alerts.rules import CRITICAL, TYPES, WARNING, due_mail, held_by_hours, inhibited, parse_hours, silenced
from edge.config import Settings
from edge.errors import AlertError, StoreError
from edge.events import (
    AlertSent,
    AlertSuppressed,
    CentralLinkChanged,
    Event,
    EventBus,
    JobDead,
    JobHeld,
    OrderTotalsMismatched,
    PrinterStatusChanged,
    RecoveryCompleted,
    RecoveryFailed,
    StorageProblem,
    StorageRecovered,
)
from edge.printing.spooler import retry_delay
from edge.store import Database, JobStore
from edge.store.alerts import AlertStore, Mail, Signal

log = structlog.get_logger()

# Printer state → the alert type it fires; the other printer alerts clear (see on_event for offline and unknown).
_PRINTER_TYPES = {
    "offline": "printer_offline",
    "error": "printer_offline",
    "paper_out": "printer_paper_out",
    "cover_open": "printer_cover_open",
    "paper_near_end": "printer_paper_low",
}
_PRINTER_ALERTS = tuple(dict.fromkeys(_PRINTER_TYPES.values()))
_CRITICAL_WITH_JOBS = ("printer_offline", "printer_paper_out")  # critical only while tickets wait for that printer
_WAITING_STATES = ("queued", "failed", "printing", "held")
_DIGEST_META = "alerts_last_digest"


def waiting_per_printer(counts: dict[tuple[str, str], int]) -> dict[str, int]:
    waiting: dict[str, int] = {}
    for (printer, state), n in counts.items():
        if state in _WAITING_STATES:
            waiting[printer] = waiting.get(printer, 0) + n
    return waiting


def make_renderer(settings: Settings) -> AlertRenderer:
    a = settings.agent
    return AlertRenderer(
        language=a.language,
        store_name=a.store_name or a.store_id,
        store_id=a.store_id,
        tz=ZoneInfo(a.timezone) if a.timezone else None,
        status_page_url=settings.alerts.status_page_url,
        template_dir=settings.alerts.template_dir,
    )


class Alerter:
    """Sources → groups in SQLite → rules → mail outbox → SMTP. Every step survives a restart."""

    def __init__(
        self,
        *,
        settings: Settings,
        db: Database,
        bus: EventBus,
        mailer: Mailer,
        clock: Callable[[], float] = time.time,
        tick_s: float = 1.0,
    ) -> None:
        self._settings = settings
        self._cfg = settings.alerts
        self._store = AlertStore(db)
        self._jobs = JobStore(db)
        self._bus = bus
        self._mailer = mailer
        self._renderer = make_renderer(settings)
        self._tz = ZoneInfo(settings.agent.timezone) if settings.agent.timezone else None
        self.clock = clock
        self._tick_s = tick_s
        self._pending: list[Signal] = []
        self._new_signals = asyncio.Event()
        self._new_mail = asyncio.Event()
        self._central_down_since: float | None = None
        self._central_detail = ""
        self._central_fired = False
        self._levels: dict[str, bool] = {}  # last value of each checked condition: checks signal changes, not samples
        self._storage_mailed = False
        self._next_mail_at: float | None = 0.0
        self._unsubscribe: list[Callable[[], None]] = []
        self._tasks: list[asyncio.Task[None]] = []

    # ---- sources -------------------------------------------------------------------------------------------

    def _signal(
        self,
        type_name: str,
        subject: str,
        firing: bool,
        *,
        at: float | None = None,
        item: dict[str, Any] | None = None,
        **details: Any,
    ) -> None:
        self._pending.append(
            Signal(
                type=type_name,
                subject=subject,
                firing=firing,
                at=self.clock() if at is None else at,
                severity=TYPES[type_name].severity,
                details=details,
                item=item,
            )
        )
        self._new_signals.set()

    def on_event(self, event: Event) -> None:
        """Bus handler: cheap and synchronous; the worker does the database work."""
        match event:
            case PrinterStatusChanged(printer=printer, new=new, detail=detail):
                fired = _PRINTER_TYPES.get(new)
                # Unreachable says nothing about paper or cover; "unknown" (no status answers) only that it is reachable.
                clears = (
                    () if new in ("offline", "error") else ("printer_offline",) if new == "unknown" else _PRINTER_ALERTS
                )
                for type_name in _PRINTER_ALERTS:
                    if type_name == fired:
                        self._signal(type_name, printer, True, detail=detail)
                    elif type_name in clears:
                        self._signal(type_name, printer, False)
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
            case JobHeld():
                self._signal(
                    "print_job_held",
                    event.printer,
                    True,
                    item={"id": event.job_id, "order": event.order_id, "age_min": round(event.age_s / 60)}
                    | ({"reason": event.reason} if event.reason != "stale" else {}),
                )
            case OrderTotalsMismatched():
                item = {"id": event.order_id, "order": event.number, "error": event.problems[0][:120]}
                self._signal(
                    "order_totals_mismatch", "totals", True, order=event.number, detail=event.problems[0], item=item
                )
            case CentralLinkChanged(up=up, detail=detail):
                if up:
                    self._central_down_since, self._central_fired = None, False
                    self._signal("central_unreachable", "central", False)
                elif self._central_down_since is None:
                    self._central_down_since = self.clock()
                    self._central_detail = detail
            case RecoveryFailed():
                self._signal(
                    "recovery_failed", "recovery", True, phase=event.phase, detail=event.error, run_id=event.run_id
                )
            case RecoveryCompleted():
                self._signal("recovery_failed", "recovery", False)
            case StorageProblem(detail=detail):
                self._signal("storage_problem", "database", True, detail=detail)
            case StorageRecovered():
                self._storage_mailed = False
                self._signal("storage_problem", "database", False)

    def _level(self, type_name: str, subject: str, firing: bool, **details: Any) -> None:
        key = f"{type_name}:{subject}"
        if self._levels.get(key) != firing:
            self._levels[key] = firing
            self._signal(type_name, subject, firing, **details)

    async def check(self) -> None:
        """Conditions nobody publishes: a queue backlog, the central line down too long, a disk filling up, dead jobs cleared."""
        now, cfg = self.clock(), self._cfg
        counts = await self._jobs.counts()
        oldest = await self._jobs.oldest_waiting()
        waiting = sum(n for (_, state), n in counts.items() if state in _WAITING_STATES)
        oldest_min = round((now - oldest) / 60) if oldest else 0
        backlog = waiting > cfg.backlog_jobs or (oldest is not None and now - oldest >= cfg.backlog_age_min * 60)
        self._level("queue_backlog", "queue", backlog, waiting=waiting, oldest_min=oldest_min)
        for type_name, state in (("print_job_failed", "dead"), ("print_job_held", "held")):
            for group in await self._store.firing(type_name):
                if not counts.get((group["subject"], state)):
                    self._signal(type_name, group["subject"], False)
        waiting_on = waiting_per_printer(counts)
        for type_name in _CRITICAL_WITH_JOBS:
            for group in await self._store.firing(type_name):
                if group["severity"] == WARNING and waiting_on.get(group["subject"]):
                    self._signal(type_name, group["subject"], True)  # tickets now wait for an idle printer that is down
        if (
            self._central_down_since is not None
            and not self._central_fired
            and now - self._central_down_since >= cfg.central_down_min * 60
        ):
            self._central_fired = True
            self._signal(
                "central_unreachable",
                "central",
                True,
                at=self._central_down_since,
                down_min=f"{cfg.central_down_min:g}",
                detail=self._central_detail,
            )
        if cfg.disk_free_min_mb:
            usage = await asyncio.to_thread(shutil.disk_usage, self._settings.agent.data_dir)
            free_mb = usage.free // 2**20
            self._level(
                "storage_problem",
                "disk",
                free_mb < cfg.disk_free_min_mb,
                detail=f"{free_mb} MB free, at least {cfg.disk_free_min_mb} MB wanted",
            )

    # ---- throttle ------------------------------------------------------------------------------------------

    @staticmethod
    def _with_waiting(signal: Signal, waiting: int) -> Signal:
        # A printer switched off after closing, with nothing to print, is no emergency: a warning, which waits for opening hours.
        severity = WARNING if signal.type in _CRITICAL_WITH_JOBS and not waiting else signal.severity
        return dataclasses.replace(signal, severity=severity, details={**signal.details, "jobs_waiting": waiting})

    async def step(self) -> None:
        """Fold new occurrences into their groups, then send what the rules say is due."""
        if self._pending:
            batch, self._pending = self._pending, []
            if any(s.type.startswith("printer_") and s.firing for s in batch):
                waiting = waiting_per_printer(await self._jobs.counts())
                batch = [
                    self._with_waiting(s, waiting.get(s.subject, 0))
                    if s.type.startswith("printer_") and s.firing
                    else s
                    for s in batch
                ]
            try:
                outcomes = await self._store.apply(batch)
            except StoreError:
                self._pending[:0] = batch  # the database may be back at the next tick; nothing is forgotten meanwhile
                await self._mail_storage_directly(batch)
                raise
            for signal, new_episode in outcomes:
                if not new_episode:
                    self._bus.publish(AlertSuppressed(alert_type=signal.type, key=signal.key, reason="throttled"))
        await self.flush()

    async def _mail_storage_directly(self, batch: list[Signal]) -> None:
        """The outbox lives in the database that just failed: tell the manager once, bypassing it."""
        signal = next((s for s in batch if s.type == "storage_problem" and s.firing), None)
        if signal is None or self._storage_mailed:
            return
        group = {
            "key": signal.key,
            "type": signal.type,
            "subject": signal.subject,
            "severity": signal.severity,
            "first_at": signal.at,
            "details": signal.details,
        }
        try:
            await self._mailer.send(
                self._renderer.alert(group, kind="firing", extra=0, recipients=self._recipients(signal.severity))
            )
            self._storage_mailed = True
        except AlertError as err:
            log.error("alert_mail_failed", key=signal.key, error=str(err), note="database not writable and mail failed")

    def _recipients(self, severity: str) -> list[str]:
        extra = self._cfg.critical_to if severity == CRITICAL else []
        return list(dict.fromkeys([*self._cfg.to, *extra]))

    async def flush(self) -> None:
        now, cfg = self.clock(), self._cfg
        groups = await self._store.open_groups()
        firing_keys = {g["key"] for g in groups if g["state"] == "firing"}
        matchers = [r["matcher"] for r in await self._store.active_silences(now)]
        local = dt.datetime.fromtimestamp(now, self._tz)
        mailed_last_hour = await self._store.mails_since(now - 3600)
        queued = 0
        for group in groups:
            due = due_mail(group, now, cfg)
            if due is None:
                continue
            key = group["key"]
            if due.kind == "drop":
                await self._drop(group, now, "cleared")
                continue
            reason = (
                ("silenced" if silenced(key, matchers) else None)
                or ("inhibited" if due.kind != "resolved" and inhibited(group, firing_keys) else None)
                or held_by_hours(group["severity"], local, cfg)
                or ("cap" if mailed_last_hour >= cfg.max_per_hour else None)
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
            if cfg.digest and group["severity"] == WARNING:
                await self._store.told(group, kind=due.kind, now=now, mail=None, count=group["fires_since_mail"])
                continue
            mail = self._renderer.alert(
                group, kind=due.kind, extra=due.extra, recipients=self._recipients(group["severity"])
            )
            await self._store.told(group, kind=due.kind, now=now, mail=mail, count=group["fires_since_mail"])
            log.info("alert_queued", key=key, kind=due.kind, extra=due.extra)
            mailed_last_hour += 1
            queued += 1
        if cfg.digest:
            queued += await self._digest(now, local)
        if queued:
            self._new_mail.set()

    async def _drop(self, group: dict[str, Any], now: float, reason: str) -> None:
        await self._store.drop(group["key"], now, reason, group["fires_since_mail"])
        self._bus.publish(AlertSuppressed(alert_type=group["type"], key=group["key"], reason=reason))
        log.info("alert_dropped", key=group["key"], reason=reason, occurrences=group["fires_since_mail"])

    async def _digest(self, now: float, local: dt.datetime) -> int:
        at = parse_hours(self._cfg.digest_at)
        assert at is not None  # the config check guarantees HH:MM
        last = float(await self._store.meta(_DIGEST_META) or 0)
        today_at = local.replace(hour=at[0].hour, minute=at[0].minute, second=0, microsecond=0).timestamp()
        if now < today_at or last >= today_at:
            return 0
        entries = [dict(r) for r in await self._store.digest_entries(last)]
        await self._store.set_meta(_DIGEST_META, repr(now))
        if not entries:
            return 0
        await self._store.add_mail("digest", self._renderer.digest(entries, recipients=self._cfg.to), now)
        return 1

    # ---- delivery ------------------------------------------------------------------------------------------

    async def deliver_due(self) -> int:
        """Send what the outbox holds; a failure waits with backoff and is tried again, the mail is never dropped."""
        sent = 0
        for row in await self._store.due_mails(self.clock()):
            mail = Mail(
                recipients=json.loads(row["recipients"]),
                subject=row["subject"],
                text=row["text_body"],
                html=row["html_body"],
            )
            try:
                await self._mailer.send(
                    mail,
                    message_id=f"<alert-{row['id']}.{int(row['created_at'])}@{self._settings.agent.store_id}.edge-agent>",
                )
            except AlertError as err:
                delay = retry_delay(row["attempts"] + 1, base=self._cfg.retry_base_s, cap=self._cfg.retry_max_s)
                await self._store.mark_failed(row["id"], str(err), self.clock() + delay)
                log.warning(
                    "alert_mail_failed",
                    mail_id=row["id"],
                    error=str(err),
                    retry_in_s=round(delay, 1),
                    attempts=row["attempts"] + 1,
                )
                break  # the server is down for all of them; keep the order
            await self._store.mark_sent(row["id"], self.clock())
            sent += 1
            key = row["group_key"] or row["kind"]
            self._bus.publish(
                AlertSent(
                    alert_type=key.split(":", 1)[0],
                    key=key,
                    resolved=row["kind"] == "resolved",
                    recipients=len(mail.recipients),
                )
            )
        return sent

    # ---- life cycle ----------------------------------------------------------------------------------------

    def start(self) -> None:
        for event_type in (
            PrinterStatusChanged,
            JobDead,
            JobHeld,
            CentralLinkChanged,
            RecoveryFailed,
            RecoveryCompleted,
            StorageProblem,
            StorageRecovered,
            OrderTotalsMismatched,
        ):
            self._unsubscribe.append(self._bus.subscribe(self.on_event, event_type))
        self._tasks = [
            asyncio.create_task(
                self._loop("step", self.step, self._new_signals, lambda: self._tick_s), name="alerts-rules"
            ),
            asyncio.create_task(
                self._loop("deliver", self._deliver_and_plan, self._new_mail, self._until_next_mail), name="alerts-mail"
            ),
            asyncio.create_task(
                self._loop("check", self.check, None, lambda: self._cfg.check_interval_s), name="alerts-check"
            ),
        ]

    async def _deliver_and_plan(self) -> None:
        await self.deliver_due()
        self._next_mail_at = await self._store.next_mail_at()

    def _until_next_mail(self) -> float:
        """Until the next retry is due; new mail wakes the loop at once, so an empty outbox is only looked at now and then."""
        longest = self._tick_s * 30
        return longest if self._next_mail_at is None else max(0.0, min(longest, self._next_mail_at - self.clock()))

    async def _loop(
        self, name: str, work: Callable[[], Any], wake: asyncio.Event | None, interval: Callable[[], float]
    ) -> None:
        while True:
            if wake is not None:
                wake.clear()
            try:
                await work()
            except (StoreError, OSError) as err:
                log.error("alerts_failed", part=name, error=str(err))
            except Exception:  # alerting must never take the agent down with it
                log.exception("alerts_failed", part=name)
            if wake is None:
                await asyncio.sleep(interval())
                continue
            try:
                await asyncio.wait_for(wake.wait(), timeout=interval())
            except TimeoutError:
                pass

    async def stop(self) -> None:
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._pending:
            try:  # occurrences still in memory go into the throttle state; their mails wait in the outbox for the next start
                await self._store.apply(self._pending)
            except StoreError as err:
                log.error("alerts_lost_on_stop", occurrences=len(self._pending), error=str(err))
        log.info("alerts_stopped")
