"""The technician's status page at /: printers, scanners, orders, dead and held jobs, central link, recovery, alerts.

Rendered server-side, in words and in the agent's time zone (agent.timezone), because the first questions on site
are "does it print, is the line to central up, did it catch up after the outage, what went wrong".
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import json
import time
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import structlog
from aiohttp import web

from edge import __version__
from edge.api.deps import ApiDeps
from edge.api.errors import path_id
from edge.api.scans import scanner_json
from edge.clock import clock_off_words
from edge.errors import StoreError, WrongStateError
from edge.printing.ages import order_time
from edge.printing.decode import preview
from edge.printing.profiles import DEFAULT_WIDTH, line_width
from edge.states import NOT_DONE_JOB_STATES, WAITING_JOB_STATES, HoldReason, JobState, RunState
from edge.store.alerts import AlertStore
from edge.store.outbox import OutboxStore
from edge.store.recovery import RecoveryStore
from edge.store.rows import RecoveryRun

if TYPE_CHECKING:
    import jinja2

log = structlog.get_logger()

_HERE = Path(__file__).parent
_RECENT_ORDERS = 15
_RECENT_ALERTS = 5
_CONFLICTS_NAMED = 5  # more are counted, not listed
_DEAD_LISTED = 50  # the newest; dead_count counts them all
_HELD_LISTED = 50  # the oldest; held_count counts them all
_HOLD_WORDS = {
    HoldReason.STALE: "too old to print unasked",
    HoldReason.NO_PRINTER: "no printer is set up for its station",
}
_TRIGGERS = {
    "link_back": "after the central link came back",
    "startup": "at start-up",
    "schedule": "scheduled",
    "manual": "started by hand",
}


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def recovery_words(run: RecoveryRun, conflicts: list[str]) -> str:
    """'3 orders recovered, 2 changed, 1 conflict — A-1042': what the last run did, as the technician asks it."""
    counts, errors, state = run.counts, run.errors, run.state
    if state not in (RunState.COMPLETED, RunState.FAILED, RunState.CANCELLED):
        return f"Running ({state})"
    stored, conflict, invalid = counts.get("stored", 0), counts.get("conflict", 0), counts.get("invalid", 0)
    changed, cancelled = counts.get("changed", 0), counts.get("cancelled", 0)  # an older run's record has neither
    parts = [_plural(stored, "order") + " recovered"] if stored else []
    parts += [f"{n} {word}" for n, word in ((changed, "changed"), (cancelled, "cancelled")) if n]
    parts = parts or ["no missed orders"]
    if conflict:
        named = ", ".join(conflicts) + (" …" if conflict > len(conflicts) else "")
        parts.append(f"{_plural(conflict, 'conflict')} — {named}")
    if invalid:
        parts.append(f"{invalid} invalid")
    if history := counts.get("history", 0):
        parts.append(f"{history} from before this box or its restore (not printed)")
    text = ", ".join(parts)
    if state == RunState.FAILED:
        return f"Failed: {errors[-1] if errors else 'see the log'} ({text} until then)"
    if state == RunState.CANCELLED:
        return f"Cancelled ({text} until then)"
    return text[0].upper() + text[1:]


def _alert_words(alert: dict[str, Any]) -> str:
    what = alert["type"].replace("_", " ").capitalize()
    return f"{what} — {alert['subject']}" if alert["subject"] else what


async def _central(deps: ApiDeps) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """The central link as SyncService.status() reports it, and the outbox backlog; (None, None) without central."""
    if deps.sync is None:
        return None, None
    sync = await deps.sync.status()
    link, off = sync.get("link") or {}, sync.get("box_minus_central_s")
    backlog = await OutboxStore(deps.db).backlog()
    return (
        {
            "up": link.get("up"),
            "since": link.get("since"),
            "detail": link.get("detail", ""),
            "refused": link.get("refused", ""),  # central answers, but refuses the box's calls (token, store id)
            "box_minus_central_s": off,
            "clock_words": None if off is None else clock_off_words(off, "central"),
        },
        {"pending": backlog.pending, "oldest_at": backlog.oldest_at},
    )


async def snapshot(deps: ApiDeps) -> dict[str, Any]:
    """Everything the page and `edge status` show, as plain data."""
    db = deps.db
    counts = await deps.jobs.counts(NOT_DONE_JOB_STATES)
    printers = []
    for name in deps.settings.printers:
        spooler = deps.spoolers.get(name)
        printers.append(
            {
                "name": name,
                "state": spooler.state.value if spooler else "unknown",
                "detail": spooler.state_detail if spooler else "",
                "queued": sum(counts.get((name, s), 0) for s in WAITING_JOB_STATES),
                "dead": counts.get((name, JobState.DEAD), 0),
            }
        )
    recent = await deps.orders.recent(_RECENT_ORDERS)
    by_order: dict[str, list[dict[str, Any]]] = {}
    for job in await deps.jobs.for_orders([o.id for o in recent]):
        by_order.setdefault(job.order_id, []).append(
            {
                "id": job.id,
                "order_id": job.order_id,
                "kind": job.kind,
                "station": job.station,
                "printer": job.printer,
                "redirected_from": job.redirected_from,  # moved to ``printer`` by a failover (or a config change)
                "state": job.state,
                "copy": int(job.copy),
            }
        )
    orders = [
        {"id": o.id, "number": o.number, "received_at": o.received_at, "jobs": by_order.get(o.id, [])} for o in recent
    ]
    dead = [
        {
            "id": j.id,
            "order_id": j.order_id,
            "number": j.order_number,
            "printer": j.printer,
            "station": j.station,
            "kind": j.kind,
            "attempts": j.attempts,
            "last_error": j.last_error,
        }
        for j in await deps.jobs.recent(state=JobState.DEAD, limit=_DEAD_LISTED)
    ]
    central, outbox = await _central(deps)
    held = [  # tickets waiting for a person: the oldest first (they waited longest), the order they would print in
        {
            "id": j.id,
            "order_id": j.order_id,
            "number": j.order_number,
            "printer": j.printer,
            "station": j.station,
            "kind": j.kind,
            "variant": j.variant,  # a change or void ticket, named on the page: discarding a STORNO keeps the order
            "created_at": j.created_at,
            "held_at": j.held_at,
            # the wait and the age the hold reads (edge.printing.ages: the monotonic clock's, across a kill in this
            # boot too), not the wall clock's: after a step those said 2 h for a ticket seconds old (boot83 F5)
            "waited_s": round(deps.ages.waited(j)),
            "held_reason": j.held_reason,
            "reason_words": _HOLD_WORDS.get(j.held_reason, j.held_reason) if j.held_reason else "",
            "ordered_at": (ordered := order_time(j.order_created_at)),
            "order_age_s": None if ordered is None else max(0, round(deps.ages.age(j))),
        }
        for j in await deps.jobs.oldest(JobState.HELD, _HELD_LISTED)
    ]
    oldest = deps.ages.oldest_wait(await deps.jobs.waiting())
    mail = await _mail(deps)
    recovery: list[dict[str, Any]] = []
    recovery_text, alerts = None, []
    try:  # tables other parts own: if their schema moved on, the page still shows everything else
        runs = RecoveryStore(db)
        if (run := await runs.last_run()) is not None:
            recovery = [
                {
                    "id": run.id,
                    "trigger": run.trigger,
                    "state": run.state,
                    "created_at": run.created_at,
                    "finished_at": run.finished_at,
                    "counts": json.dumps(run.counts),  # as stored: the page has always shown the JSON text
                    "errors": json.dumps(run.errors),
                }
            ]
            recovery_text = recovery_words(run, await runs.conflict_numbers(run.id, _CONFLICTS_NAMED))
        alerts = [dataclasses.asdict(g) for g in await AlertStore(db).latest_groups(_RECENT_ALERTS)]
    except (StoreError, ValueError, KeyError) as err:
        log.warning("status_page_query_failed", error=str(err))
    return {
        "store_id": deps.settings.agent.store_id,
        "version": __version__,
        "uptime_s": round(deps.clock.mono() - deps.started_mono),  # a wall-clock step neither adds nor takes away
        "accepting": deps.accepting,
        "storage_problem": db.write_problem,
        "printers": printers,
        "scanners": [scanner_json(reader) for reader in deps.scanners.values()],
        "queued": sum(p["queued"] for p in printers),
        "oldest_waiting_s": round(oldest) if oldest is not None else None,  # on the monotonic clock, as held
        "waiting_for_clock": len(deps.ages.unconfirmed()),  # from before a reboot, aged once the clock is confirmed
        "orders": orders,
        "dead_jobs": dead,  # the newest _DEAD_LISTED
        "dead_count": sum(n for (_, state), n in counts.items() if state == JobState.DEAD),
        "held_jobs": held,  # the oldest _HELD_LISTED
        "held_count": sum(n for (_, state), n in counts.items() if state == JobState.HELD),
        # what Release all prints: a held job whose printer left the config stays held. The page's request names
        # these ids, so a ticket held after the person read the count waits for the next look.
        "held_releasable": len(releasable := await deps.jobs.releasable_held()),
        "held_releasable_ids": releasable,
        "central_up": deps.metrics.registry.get_sample_value("edge_central_api_up")
        if deps.metrics and deps.settings.central.url
        else None,
        "central": central,  # {"up", "since", "detail", "refused"}; None without a central API
        "outbox": outbox,  # {"pending", "oldest_at"} status events not yet at central; None without a central API
        "recovery": recovery,
        "recovery_text": recovery_text,
        "recovery_trigger": _TRIGGERS.get(recovery[0]["trigger"], recovery[0]["trigger"]) if recovery else None,
        "alerts": alerts,
        "mail": mail,  # the alert mail outbox; None without an SMTP server
        "mqtt": await deps.mqtt.status() if deps.mqtt is not None else None,  # None without [mqtt]
    }


async def _mail(deps: ApiDeps) -> dict[str, Any] | None:
    """Alert mails waiting and dead-lettered, without addresses or bodies (the page may be public)."""
    if deps.alerter is None:
        return None
    status = await deps.alerter.outbox_status()
    return {
        "pending": status.pending,
        "server_error": status.server_error,
        "unrecorded": status.unrecorded,
        "waiting_signals": status.waiting_signals,
        "dead": [
            {"id": m.id, "subject": m.subject, "created_at": m.created_at, "refused": len(m.refused)}
            for m in status.dead
        ],
    }


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    seconds = int(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size} {unit}"
    return f"{seconds} s"


def _clock(context: jinja2.runtime.Context, ts: float | None) -> str:
    """A wall time in the agent's zone (agent.timezone; the system's when unset)."""
    return datetime.fromtimestamp(ts, context.get("tz")).strftime("%d.%m. %H:%M:%S") if ts else "–"


@functools.cache
def _templates() -> tuple[jinja2.Template, jinja2.Template]:
    """status.html and panel.html, compiled once, at the first request for them and in a thread: the agent reaches
    READY without jinja2, and no request after the first waits on the disk for a template."""
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(_HERE / "templates"),
        autoescape=jinja2.select_autoescape(["html"]),  # order text is customer input: never raw HTML
        trim_blocks=True,
        lstrip_blocks=True,
        auto_reload=False,
    )
    env.filters.update(duration=_duration, clock=jinja2.pass_context(_clock), plural=_plural, alert_words=_alert_words)
    return env.get_template("status.html"), env.get_template("panel.html")


def add_routes(app: web.Application, deps: ApiDeps) -> None:
    """/ and its fragments; without `status_page_public` only the /api/ twins (token-guarded) answer."""
    public = deps.settings.api.status_page_public
    zone = deps.settings.agent.timezone
    tz = ZoneInfo(zone) if zone else None
    zone_name = zone or time.strftime("%Z")

    async def page(request: web.Request) -> web.Response:
        data = await snapshot(deps) if public else None
        page_template, _ = await asyncio.to_thread(_templates)
        html = page_template.render(
            data=data,
            public=public,
            store_id=deps.settings.agent.store_id,
            version=__version__,
            tz=tz,
            zone=zone_name,
            iana_zone=zone or "",  # the browser writes its own times in it ("not up to date since …")
            refresh_ms=round(deps.settings.api.status_refresh_s * 1000),
        )
        return web.Response(text=html, content_type="text/html")

    async def panel(request: web.Request) -> web.Response:
        _, panel_template = await asyncio.to_thread(_templates)
        html = panel_template.render(data=await snapshot(deps), tz=tz, zone=zone_name)
        return web.Response(text=html, content_type="text/html", headers={"Cache-Control": "no-store"})

    async def status_json(request: web.Request) -> web.Response:
        return web.json_response(await snapshot(deps), dumps=lambda v: json.dumps(v, default=str))

    async def job_preview(request: web.Request) -> web.Response:
        job = await deps.jobs.get(path_id(request, "job_id", "print job"))
        assert deps.render_job is not None  # the agent always sets it
        printer = deps.settings.printers.get(job.printer)
        width = line_width(printer) if printer else DEFAULT_WIDTH
        try:
            data = await asyncio.to_thread(deps.render_job, job)  # a long ticket must not stall the loop
        except Exception as err:  # an order stored by an older, laxer intake: say why, never a 500
            raise WrongStateError(f"print job {job.id} cannot be rendered: {err}") from err
        return web.Response(text=preview(data, width=width), content_type="text/plain")

    app.router.add_get("/", page)
    app.router.add_static("/static/", _HERE / "static")
    app.router.add_get("/api/v1/status", status_json)
    app.router.add_get("/api/v1/status/panel", panel)
    app.router.add_get("/api/v1/jobs/{job_id}/preview", job_preview)
    if public:  # operational state only: a ticket's text (guest name, phone, notes) always needs the token
        app.router.add_get("/status/panel", panel)
