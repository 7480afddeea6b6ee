"""The agent's HTTP API: order intake and status, reprints, printers, jobs, health and readiness."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from edge import __version__
from edge.api import alerts, printing, recovery, scans, status_page
from edge.api.auth import Authenticator
from edge.api.deps import DEPS, ApiDeps, require_accepting
from edge.api.errors import (
    BODY_TIMEOUT_S,
    ORDER_REFUSALS,
    InvalidQueryError,
    add_post,
    error_middleware,
    error_response,
    forbid_framing,
    path_id,
    query_limit,
    read_json,
)
from edge.api.hosts import HostAllowList
from edge.api.printing import job_json
from edge.api.retries import retry_safe
from edge.clock import Clock
from edge.errors import NotFoundError, WrongStateError
from edge.log import Summarised
from edge.orders.model import NOT_UNICODE, has_lone_surrogate, is_order_id, parse_cancel
from edge.states import NOT_DONE_JOB_STATES, InsertOutcome, JobKind, JobState, OrderSource
from edge.store import migrations
from edge.store.db import Database
from edge.store.holders import holder_note
from edge.store.jobs import COPY_JUST_OUT_S
from edge.store.orders import InsertResult
from edge.store.revisions import RevisionStore
from edge.store.scans import NamedBy
from edge.store.webhooks import WebhookStore


def _deps(request: web.Request) -> ApiDeps:
    return request.app[DEPS]


@retry_safe  # the order id is the idempotency key: a sender's retry is answered 200 duplicate
async def post_order(request: web.Request) -> web.Response:
    deps = _deps(request)
    require_accepting(deps)
    payload = await read_json(request)
    return _accepted(await deps.intake.accept(payload))


# An idle box's readiness write at most once in this long: ~290 commits a day at most, where a monitor asking every
# 5 s made 17,280 (a store's orders make a few hundred).
WRITE_PROBE_FRESH_S = 300.0
# Stored now; kept for an order not here yet (202: it is not stored, but the order will come cancelled).
_CREATED = {InsertOutcome.STORED: 201, InsertOutcome.CANCEL_PENDING: 202}


def _accepted(result: InsertResult, **more: str | list[str]) -> web.Response:
    body = {
        "order_id": result.order_id,
        "status": result.outcome,
        "revision": result.revision,
        "job_ids": list(result.job_ids),
        **more,
    }
    return web.json_response(body, status=_CREATED.get(result.outcome, 200))


@retry_safe  # the order id and revision are the idempotency key: a retry is answered 200 duplicate
async def post_cancel(request: web.Request) -> web.Response:
    """The same as sending the order again at ``revision`` with status "cancelled" (and the ``reason``). For an order
    not here (yet): kept, 202 cancel_pending; the order then comes cancelled and prints nothing."""
    deps = _deps(request)
    require_accepting(deps)
    order_id = request.match_info["order_id"]
    if not is_order_id(order_id):
        raise NotFoundError(f"order {order_id[:70]!r} does not exist (no order can have this id)")
    cancel = parse_cancel(await read_json(request))
    result = await deps.intake.cancel(order_id, cancel, source=OrderSource.PUSH)
    if result.outcome != InsertOutcome.CANCEL_PENDING:
        return _accepted(result)
    # The sender's rule stands: a cancel for an id not here is kept. But a person may have typed the number on today's
    # ticket, as a reprint takes it: the answer names the open order that has it (the api80 probe, F6), or each one
    # where two show it, as a reprint by it names them (the verify81 probe, F3).
    numbered = [(id_, number) for id_, number in await deps.scans.open_numbered_today(order_id) if id_ != order_id]
    kept = f"no order {order_id} here yet: this cancel is kept for an order with that id"
    if not numbered:
        return _accepted(result)
    if len(numbered) == 1:
        ((id_, number),) = numbered
        hint = f"{kept}; ticket {number} is open order {id_}: to cancel that, POST /api/v1/orders/{id_}/cancel (its id)"
        return _accepted(result, ticket_number_of=id_, hint=hint)
    ids = [id_ for id_, _ in numbered]
    hint = (
        f"{kept}; ticket {order_id} is on {len(ids)} of today's open orders, {', '.join(ids)}: this cancel leaves them"
        " open; to cancel one, POST /api/v1/orders/<its id>/cancel"
    )
    return _accepted(result, ticket_number_of_orders=ids, hint=hint)


async def get_order(request: web.Request) -> web.Response:
    deps = _deps(request)
    order_id = request.match_info["order_id"]
    order = await deps.orders.get(order_id)
    if order is None:
        raise NotFoundError(f"order {order_id} does not exist")
    jobs = await deps.jobs.for_order(order_id)
    progress = await deps.scans.progress(order_id)
    revisions = await RevisionStore(deps.db).history(order_id)
    return web.json_response(
        {
            "id": order.id,
            "number": order.number,
            "source": order.source,
            "received_at": order.received_at,
            "revision": order.revision,
            "status": order.status,
            "revisions": [
                {"revision": r.revision, "status": r.status, "received_at": r.received_at, "job_ids": list(r.job_ids)}
                for r in revisions
            ],
            # All it still wants is on paper: a job a revision or a cancel discarded is not waited for
            "printed": all(j.state in (JobState.PRINTED, JobState.DISCARDED) for j in jobs)
            and any(j.state == JobState.PRINTED for j in jobs),
            # Pickup: open, ready or handed_out, and which station tickets are done.
            "state": progress.state,
            "ready_at": progress.ready_at,
            "handed_out_at": progress.handed_out_at,
            "stations": [{"station": s.station, "done": s.done, "done_at": s.done_at} for s in progress.stations],
            "jobs": [job_json(j) for j in jobs],
            "order": json.loads(order.payload),
        }
    )


async def post_reprint(request: web.Request) -> web.Response:
    deps = _deps(request)
    require_accepting(deps)
    order_id = request.match_info["order_id"]
    station = None
    if request.can_read_body:
        body = await read_json(request)
        if not isinstance(body, dict) or not isinstance(body.get("station", ""), (str, type(None))):
            return error_response(
                422, "invalid_request", 'body must be {"station": "<name>"} or empty', field="station"
            )
        station = body.get("station")
        if station is not None and has_lone_surrogate(station):
            return error_response(422, "invalid_request", NOT_UNICODE, field="station")
    # The id, or the number on today's ticket as a person reads it (edge reprint A-1042); ?by= says which where a
    # till's integer ids meet its daily numbers: unsaid, a string that is both, of two orders, is asked about (409).
    try:
        by = NamedBy(request.query["by"]) if "by" in request.query else None
    except ValueError:
        raise InvalidQueryError("by", "must be id (the order's id) or number (the number on its ticket)") from None
    named, why = await deps.scans.order_named(order_id, by)
    if named is None:
        raise NotFoundError(f"order {order_id} does not exist: {why}")
    order_id = named
    # A box that prints no receipts by design reprints an order's tickets: its receipt, printed before, has no printer.
    kind = None if deps.intake.router.receipts_enabled else JobKind.TICKET
    return await _copies(deps, order_id, station=station, kind=kind)


async def _copies(deps: ApiDeps, order_id: str, *, station: str | None, kind: JobKind | None = None) -> web.Response:
    out = await _seen_out(deps, order_id)
    copies = await deps.jobs.add_copies(
        order_id, station=station, kind=kind, printer_for=deps.intake.router.printer_for, out=out
    )
    for printer in {job.printer for job in await deps.jobs.for_order(order_id)}:
        deps.wake_printer(printer)
    # A COPY still there is not copied beside itself (a second press, elsewhere, a moment later): 200 naming it.
    body: dict[str, Any] = {
        "order_id": order_id,
        "job_ids": list(copies.queued),
        "waiting": [there.job_id for there in copies.waiting],
    }
    if copies.waiting:
        said = [f"job {t.job_id} {_COPY_THERE_SAID[t.state]}" for t in copies.waiting if t.copy]
        reasons = [f"not copied: job {t.job_id} {_ORIGINAL_WAITS[t.state]}" for t in copies.waiting if not t.copy]
        if said:
            reasons.append(
                f"not copied again: a COPY of it is there already ({', '.join(said)});"
                f" a Reprint {COPY_JUST_OUT_S:g} s after it came out prints another"
            )
        body["reason"] = "; ".join(reasons)
    return web.json_response(body, status=201 if copies.queued else 200)


# How long a Reprint waits for a ticket of its order that is going out to be confirmed out (or not): its paper is on
# the printer a moment before its GS r reply reaches the spool. Longer, it is still printing (a long ticket).
_OUT_SOON_S = 0.5


async def _seen_out(deps: ApiDeps, order_id: str) -> set[int]:
    """The order's jobs its spools saw come out, their printed marks not yet committed; waited for a moment while one
    is going out, so a ticket that just came out is copied and one still printing is not (the loop80 probe, F1). Real
    time, not the loop's clock: a test's clock standing still must not hold the answer."""
    going = {j.id for j in await deps.jobs.for_order(order_id) if j.state == JobState.PRINTING}  # read once
    seen: set[int] = set()
    waited = 0.0
    while True:
        # The spools' memory, not the store again: a mark seen waiting is out, also once it was committed.
        seen |= {job_id for spooler in deps.spoolers.values() for job_id in spooler.out_unrecorded}
        if waited >= _OUT_SOON_S or going <= seen:
            return seen
        await asyncio.to_thread(time.sleep, 0.02)
        waited += 0.02


# What the answer says of a COPY a reprint found already there, by its state.
_COPY_THERE_SAID = {
    JobState.QUEUED: "waits to print",
    JobState.FAILED: "waits to print (its printer is tried again)",
    JobState.PRINTING: "is going out now",
    JobState.PRINTED: f"came out less than {COPY_JUST_OUT_S:g} s ago",
}


# What the answer says of an original a reprint found not printed yet, by its state (add_copies' _ORIGINAL_WAITING).
_ORIGINAL_WAITS = {
    JobState.QUEUED: "has not printed yet and prints on its own",
    JobState.FAILED: "has not printed yet and is tried again on its own",
    JobState.PRINTING: "is being printed now (if it does not come out whole, it is printed again)",
}


# A job a person reprints by its row: a held one has not printed (release it), a discarded one is not wanted, and one
# still to print would come out twice, as itself and as its COPY.
_NOT_REPRINTED = {
    JobState.QUEUED: "it has not printed yet and prints on its own",
    JobState.FAILED: "it has not printed yet and is tried again on its own",
    JobState.PRINTING: "it is being printed and not printed yet: if it does not come out, it is printed again",
    JobState.HELD: "it is held and has not printed: release it instead",
    JobState.DISCARDED: "it was discarded",
}


async def post_job_reprint(request: web.Request) -> web.Response:
    """A COPY of one job's ticket (its station's, as the order is now) or receipt: the Reprint in a dead job's row.
    The whole order's reprint gave the kitchen and bar a COPY of food already made when the guest needed a receipt."""
    deps = _deps(request)
    require_accepting(deps)
    job = await deps.jobs.get(path_id(request, "job_id", "print job"))
    if (why := _NOT_REPRINTED.get(JobState(job.state))) is not None:
        raise WrongStateError(f"print job {job.id} cannot be reprinted: {why}")
    if job.kind == JobKind.RECEIPT and not deps.intake.router.receipts_enabled:
        raise WrongStateError(f"print job {job.id} is a receipt: this box prints none (receipts.enabled = false)")
    return await _copies(deps, job.order_id, station=job.station, kind=JobKind(job.kind))


async def get_printers(request: web.Request) -> web.Response:
    deps = _deps(request)
    counts = await deps.jobs.counts()
    printers: list[dict[str, Any]] = []
    for name, printer in deps.settings.printers.items():
        spooler = deps.spoolers.get(name)
        printers.append(
            {
                "name": name,
                "type": printer.type,
                "state": spooler.state.value if spooler else "unknown",
                "detail": spooler.state_detail if spooler else "",
                "jobs": {state: counts.get((name, state), 0) for state in JobState},
            }
        )
    # A printer that left the config but still has jobs not done (held, dead) is listed, never invisible. Jobs that
    # never had a printer ("") are not a printer's: the held jobs list them.
    for name in sorted({p for (p, state), n in counts.items() if n and state in NOT_DONE_JOB_STATES}):
        if name and name not in deps.settings.printers:
            jobs = {state: counts.get((name, state), 0) for state in JobState}
            printers.append({"name": name, "type": None, "state": "not_configured", "detail": "", "jobs": jobs})
    return web.json_response({"printers": printers})


async def get_jobs(request: web.Request) -> web.Response:
    deps = _deps(request)
    state = request.query.get("state")
    if state is not None and state not in set(JobState):
        return error_response(422, "invalid_request", f"state must be one of {', '.join(JobState)}", field="state")
    order = request.query.get("order", "newest")
    if order not in ("newest", "oldest"):
        return error_response(422, "invalid_request", "order must be newest or oldest", field="order")
    jobs = await deps.jobs.recent(
        state=JobState(state) if state is not None else None,
        printer=request.query.get("printer"),
        limit=query_limit(request, default=100, maximum=1000),
        oldest_first=order == "oldest",
    )
    return web.json_response({"jobs": [job_json(j) | {"order_number": j.order_number} for j in jobs]})


async def post_retry(request: web.Request) -> web.Response:
    deps = _deps(request)
    require_accepting(deps)
    job_id = path_id(request, "job_id", "print job")
    job = await deps.jobs.retry(job_id)
    deps.wake_printer(job.printer)
    return web.json_response(job_json(job))


async def health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok", "version": __version__})


class WriteProbe:
    """The database write check behind /ready, shared: /ready is open and polled (the health-check timer every minute,
    monitoring, anyone on the network), and each check is a commit with an fsync on an SD card, ~8 KiB written. A
    good result holds for ``fresh_s``, and longer while the agent's own writes reach the disk (an order stored proves
    as much as a probe); concurrent calls share one check; a failing one is checked again on the next call, and a good
    one a second after a write of the agent's failed, so a card that fails or is repaired shows at once. A card that
    fails while nothing is written shows at the next probe, at most ``fresh_s`` later."""

    def __init__(self, db: Database, *, clock: Clock, fresh_s: float = WRITE_PROBE_FRESH_S) -> None:
        self._db = db
        self._clock = clock
        self._fresh_s = fresh_s
        self._check: asyncio.Future[str | None] | None = None
        self._good_until = self._checked_at = 0.0
        self._proofs = 0  # the database's durable writes when the result was last confirmed

    async def problem(self) -> str | None:
        """None while the database takes writes, else why not."""
        if self._db.stall is not None:  # a check would wait for the card with the orders: what it would find is known
            return self._db.stall
        # Nor behind another program's write lock (and the orders' busy waits queued on it), past `edge health`'s
        # patience: the kernel's lock table tells at once. On the loop: /proc and the stats of files the agent holds
        # open take microseconds and never the card, while the executor's threads may all wait on a stalled card.
        if (held := holder_note(self._db.path)) is not None:
            return f"database {self._db.path}: cannot write: {held}"
        check = self._check
        if check is None or (check.done() and not self._still_good(check)):
            check = self._check = asyncio.ensure_future(self._run())
        return await asyncio.shield(check)  # a caller that goes away does not cancel the others' check

    def _still_good(self, check: asyncio.Future[str | None]) -> bool:
        if check.result() is not None:
            return False
        if self._db.write_problem is not None:  # a write of the agent's failed: checked again, at most once a second
            return self._clock.mono() < self._checked_at + 1.0
        if self._db.durable_writes != self._proofs:  # the agent's own writes reached the disk since
            self._confirmed()
        return self._clock.mono() < self._good_until

    def _confirmed(self) -> None:
        self._proofs = self._db.durable_writes
        self._good_until = self._clock.mono() + self._fresh_s

    async def _run(self) -> str | None:
        problem = await self._db.writable()
        if problem is None and self._db.write_problem is not None and not await self._db.probe_space():
            problem = self._db.write_problem  # small writes pass, but there is no room for new orders
        self._checked_at = self._clock.mono()
        self._confirmed()
        return problem


READY = web.AppKey("ready", WriteProbe)
LATEST_SCHEMA = web.AppKey("latest_schema", int)


async def ready(request: web.Request) -> web.Response:
    deps = _deps(request)
    problem = await request.app[READY].problem()
    version = await deps.db.schema_version()
    latest = request.app[LATEST_SCHEMA]
    checks: dict[str, dict[str, Any]] = {
        "database_writable": {"ok": problem is None, "detail": problem or ""},
        "migrations_current": {
            "ok": version == latest,
            "detail": "" if version == latest else f"schema {version}, agent expects {latest}",
        },
        "accepting": {"ok": deps.accepting, "detail": "" if deps.accepting else "shutting down"},
    }
    if problem is not None and deps.db.write_problem is not None:
        # The agent's own storage alert tells the manager of this one (sent directly when its outbox cannot be written):
        # the health-check timer, reading this, does not mail "not running" beside it.
        checks["database_writable"]["alert"] = "storage_problem"
    if deps.mqtt is not None:
        # A broker that is down is not the agent's fault (HTTP intake and printing go on); one that refuses our login
        # or certificate needs a person, like a bad config, so it fails the check.
        # Nor one that delivers no orders (its ACL): they come by recovery, late, and the agent's own alert says so.
        state = deps.mqtt.state
        detail = "" if state == "connected" else f"{state}: {deps.mqtt.detail}".rstrip(": ")
        if state == "connected" and deps.mqtt.not_delivering:
            detail = f"connected, but {deps.mqtt.not_delivering}"
        checks["mqtt"] = {"ok": state != "refused", "detail": detail}
    ok = all(c["ok"] for c in checks.values())
    return web.json_response({"ready": ok, "checks": checks}, status=200 if ok else 503)


async def metrics(request: web.Request) -> web.Response:
    deps = _deps(request)
    if deps.metrics is None:
        raise NotFoundError("metrics are not collected in this process")
    body = await deps.metrics.scrape(deps.jobs, deps.spoolers, deps.ages, deps.scanners)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def make_api(deps: ApiDeps) -> web.Application:
    deps.auth = Authenticator(
        deps.settings.api,
        store=WebhookStore(deps.db),
        clock=deps.clock,
        central=deps.sync.central_time if deps.sync is not None else None,
        bus=deps.bus,
    )
    if deps.metrics is not None:
        deps.metrics.watch_rejections(deps.auth.rejected)
    app = web.Application(
        client_max_size=deps.settings.api.max_body_bytes,
        middlewares=[
            error_middleware,
            HostAllowList(deps.settings.api.allowed_hosts, clock=deps.clock.mono).middleware,
            deps.auth.middleware,
        ],
    )
    app.on_response_prepare.append(forbid_framing)
    app[DEPS] = deps
    app[BODY_TIMEOUT_S] = deps.settings.api.body_timeout_s
    app[ORDER_REFUSALS] = Summarised("order_refused", every_s=60.0, level="info", clock=deps.clock.mono)
    app[READY] = WriteProbe(deps.db, clock=deps.clock)
    app[LATEST_SCHEMA] = migrations.latest_version(migrations.load_migrations())  # what this agent was started with
    add_post(app, "/api/v1/orders", post_order)
    app.router.add_get("/api/v1/orders/{order_id}", get_order)
    add_post(app, "/api/v1/orders/{order_id}/reprint", post_reprint)
    add_post(app, "/api/v1/jobs/{job_id}/reprint", post_job_reprint)
    add_post(app, "/api/v1/orders/{order_id}/cancel", post_cancel)
    app.router.add_get("/api/v1/printers", get_printers)
    app.router.add_get("/api/v1/jobs", get_jobs)
    add_post(app, "/api/v1/jobs/{job_id}/retry", post_retry)
    app.router.add_get("/health", health)
    app.router.add_get("/ready", ready)
    app.router.add_get("/metrics", metrics)
    status_page.add_routes(app, deps)
    scans.add_routes(app, deps)
    printing.add_routes(app, deps)
    recovery.add_routes(app, deps)
    alerts.add_routes(app, deps)
    return app
