"""The technician's status page at /: printers, last orders, dead and held jobs, recovery, alerts; rendered server-side."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jinja2
import structlog
from aiohttp import web

from edge import __version__
from edge.api.errors import path_id
from edge.errors import StoreError, WrongStateError
from edge.metrics import WAITING_STATES
from edge.printing.decode import preview
from edge.store import Database

if TYPE_CHECKING:
    from edge.api.routes import ApiDeps

log = structlog.get_logger()

_HERE = Path(__file__).parent
_RECENT_ORDERS = 15
_LAST_RECOVERY = (
    "SELECT id, trigger, state, created_at, finished_at, counts, errors FROM recovery_runs ORDER BY id DESC LIMIT 1"
)
_RECENT_ALERTS = "SELECT type, subject, severity, state, changed_at FROM alert_groups ORDER BY changed_at DESC LIMIT 5"
_TEMPLATES = jinja2.Environment(
    loader=jinja2.FileSystemLoader(_HERE / "templates"),
    autoescape=jinja2.select_autoescape(["html"]),  # order text is customer input: never raw HTML
    trim_blocks=True,
    lstrip_blocks=True,
    auto_reload=False,  # read once at start-up: a request never waits on the disk for a template
)


async def _table_exists(db: Database, name: str) -> bool:
    return await db.fetchone("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)) is not None


async def _optional_rows(db: Database, table: str, sql: str) -> list[dict[str, Any]]:
    """Rows from a table another part owns (recovery: migration 002, alerts: 003); empty if it is not there (yet)."""
    if not await _table_exists(db, table):
        return []
    try:
        return [dict(row) for row in await db.fetchall(sql)]
    except StoreError as err:  # their schema moved on: the page still shows everything else
        log.warning("status_page_query_failed", table=table, error=str(err))
        return []


async def snapshot(deps: ApiDeps) -> dict[str, Any]:
    """Everything the page and `edge status` show, as plain data."""
    db, now = deps.db, time.time()
    counts = await deps.jobs.counts()
    printers = []
    for name in deps.settings.printers:
        spooler = deps.spoolers.get(name)
        printers.append(
            {
                "name": name,
                "state": spooler.state.value if spooler else "unknown",
                "detail": spooler.state_detail if spooler else "",
                "queued": sum(counts.get((name, s), 0) for s in WAITING_STATES),
                "dead": counts.get((name, "dead"), 0),
            }
        )
    orders = [dict(row) for row in await deps.orders.recent(_RECENT_ORDERS)]
    if orders:
        marks = ",".join("?" * len(orders))
        jobs = await db.fetchall(
            f"SELECT id, order_id, kind, station, printer, state, copy FROM print_jobs WHERE order_id IN ({marks}) ORDER BY id",
            tuple(o["id"] for o in orders),
        )
        by_order: dict[str, list[dict[str, Any]]] = {}
        for job in jobs:
            by_order.setdefault(job["order_id"], []).append(dict(job))
        orders = [
            {"id": o["id"], "number": o["number"], "received_at": o["received_at"], "jobs": by_order.get(o["id"], [])}
            for o in orders
        ]
    dead = [
        {
            "id": r["id"],
            "order_id": r["order_id"],
            "number": r["number"],
            "printer": r["printer"],
            "attempts": r["attempts"],
            "last_error": r["last_error"],
        }
        for r in await deps.jobs.list(state="dead", limit=50)
    ]
    held = [  # stale tickets waiting for a person: oldest first, the order they would have printed in
        {
            "id": r["id"],
            "order_id": r["order_id"],
            "number": r["number"],
            "printer": r["printer"],
            "station": r["station"],
            "kind": r["kind"],
            "created_at": r["created_at"],
            "held_at": r["held_at"],
            "waited_s": round(now - r["created_at"]),
        }
        for r in reversed(await deps.jobs.list(state="held", limit=50))
    ]
    oldest = await deps.jobs.oldest_waiting()
    return {
        "store_id": deps.settings.agent.store_id,
        "version": __version__,
        "uptime_s": round(now - deps.started_at),
        "accepting": deps.accepting,
        "storage_problem": db.write_problem,
        "printers": printers,
        "queued": sum(p["queued"] for p in printers),
        "oldest_waiting_s": round(now - oldest) if oldest is not None else None,
        "orders": orders,
        "dead_jobs": dead,
        "held_jobs": held,
        "central_up": deps.metrics.registry.get_sample_value("edge_central_api_up")
        if deps.metrics and deps.settings.central.url
        else None,
        "recovery": await _optional_rows(db, "recovery_runs", _LAST_RECOVERY),
        "alerts": await _optional_rows(db, "alert_groups", _RECENT_ALERTS),
    }


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    seconds = int(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size} {unit}"
    return f"{seconds} s"


def _clock(ts: float | None) -> str:
    return time.strftime("%d.%m. %H:%M:%S", time.localtime(ts)) if ts else "–"


_TEMPLATES.filters["duration"] = _duration
_TEMPLATES.filters["clock"] = _clock


def add_routes(app: web.Application, deps: ApiDeps) -> None:
    """/ and its fragments; without `status_page_public` only the /api/ twins (token-guarded) answer."""
    public = deps.settings.api.status_page_public
    page_template, panel_template = _TEMPLATES.get_template("status.html"), _TEMPLATES.get_template("panel.html")

    async def page(request: web.Request) -> web.Response:
        data = await snapshot(deps) if public else None
        html = page_template.render(
            data=data, public=public, store_id=deps.settings.agent.store_id, version=__version__
        )
        return web.Response(text=html, content_type="text/html")

    async def panel(request: web.Request) -> web.Response:
        html = panel_template.render(data=await snapshot(deps))
        return web.Response(text=html, content_type="text/html", headers={"Cache-Control": "no-store"})

    async def status_json(request: web.Request) -> web.Response:
        return web.json_response(await snapshot(deps), dumps=lambda v: json.dumps(v, default=str))

    async def job_preview(request: web.Request) -> web.Response:
        job = await deps.jobs.get(path_id(request, "job_id", "print job"))
        assert deps.render_job is not None  # the agent always sets it
        printer = deps.settings.printers.get(job["printer"])
        width = printer.width if printer else 48
        try:
            data = await asyncio.to_thread(deps.render_job, job)  # a long ticket must not stall the loop
        except Exception as err:  # an order stored by an older, laxer intake: say why, never a 500
            raise WrongStateError(f"print job {job['id']} cannot be rendered: {err}") from err
        return web.Response(text=preview(data, width=width), content_type="text/plain")

    app.router.add_get("/", page)
    app.router.add_static("/static/", _HERE / "static")
    app.router.add_get("/api/v1/status", status_json)
    app.router.add_get("/api/v1/status/panel", panel)
    app.router.add_get("/api/v1/jobs/{job_id}/preview", job_preview)
    if public:
        app.router.add_get("/status/panel", panel)
        app.router.add_get("/status/jobs/{job_id}/preview", job_preview)
