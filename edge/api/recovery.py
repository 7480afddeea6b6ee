"""Recovery routes: status, trigger (joins an active run), history, one run, cancel."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from edge.api.deps import ApiDeps
from edge.api.errors import add_post, error_response, path_id, query_limit
from edge.errors import NotFoundError
from edge.states import RunTrigger

if TYPE_CHECKING:
    from edge.sync import SyncService  # imported only when a central API is configured ([central] url)

SYNC: web.AppKey[SyncService] = web.AppKey("sync")
_OFF = "recovery is off: no central API is configured ([central] url)"


def _sync(request: web.Request) -> SyncService | None:
    return request.app.get(SYNC)


def _run_id(request: web.Request) -> int:
    return path_id(request, "run_id", "recovery run")


async def get_status(request: web.Request) -> web.Response:
    sync = _sync(request)
    if sync is None:
        return web.json_response({"enabled": False, "reason": _OFF})
    return web.json_response(await sync.status())


async def post_run(request: web.Request) -> web.Response:
    sync = _sync(request)
    if sync is None:
        return error_response(409, "not_configured", _OFF)
    run_id, joined = await sync.recovery.trigger(RunTrigger.MANUAL)
    return web.json_response({"run_id": run_id, "joined": joined, "run": await sync.recovery.run(run_id)}, status=202)


async def get_runs(request: web.Request) -> web.Response:
    sync = _sync(request)
    if sync is None:
        return web.json_response({"runs": []})
    return web.json_response({"runs": await sync.recovery.runs(query_limit(request, default=20, maximum=500))})


async def get_run(request: web.Request) -> web.Response:
    sync = _sync(request)
    run_id = _run_id(request)
    if sync is None:
        raise NotFoundError(f"recovery run {run_id} does not exist")
    return web.json_response(await sync.recovery.run(run_id))


async def post_cancel(request: web.Request) -> web.Response:
    sync = _sync(request)
    if sync is None:
        return error_response(409, "not_configured", _OFF)
    run_id = _run_id(request)
    if not await sync.recovery.cancel(run_id):
        run = await sync.recovery.run(run_id)
        return error_response(
            409, "not_active", f"recovery run {run_id} is {run['state']}; only the active run can be cancelled"
        )
    return web.json_response(await sync.recovery.run(run_id))


def add_routes(app: web.Application, deps: ApiDeps) -> None:
    """Without a central API (``deps.sync`` None) the routes still answer, saying recovery is off."""
    if deps.sync is not None:
        app[SYNC] = deps.sync
    app.router.add_get("/api/v1/recovery/status", get_status)
    add_post(app, "/api/v1/recovery/runs", post_run)
    app.router.add_get("/api/v1/recovery/runs", get_runs)
    app.router.add_get("/api/v1/recovery/runs/{run_id}", get_run)
    add_post(app, "/api/v1/recovery/runs/{run_id}/cancel", post_cancel)
