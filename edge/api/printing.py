"""Printing API for people: release or discard held (stale) jobs, print a printer's test page."""

from __future__ import annotations

import asyncio
from typing import Any

import structlog
from aiohttp import web

from edge.api.deps import ApiDeps, require_accepting
from edge.api.errors import add_post, error_response, path_id, read_json
from edge.errors import DeviceError, NotFoundError
from edge.printing.profiles import line_width
from edge.printing.render import print_options
from edge.states import JobState
from edge.store.rows import Job

log = structlog.get_logger()


def job_json(job: Job) -> dict[str, Any]:
    """A print job as the API answers it."""
    return {
        "id": job.id,
        "order_id": job.order_id,
        "kind": job.kind,
        "station": job.station,
        "printer": job.printer,
        "state": job.state,
        "copy": job.copy,
        "attempts": job.attempts,
        "last_error": job.last_error,
        "created_at": job.created_at,
        "printed_at": job.printed_at,
        "held_reason": job.held_reason,  # stale | no_printer, while held
        # None: a whole ticket or receipt; change, cancel (a STORNO), added: born of that revision of the order
        "variant": job.variant,
        "revision": job.revision,
    }


def add_routes(app: web.Application, deps: ApiDeps) -> None:
    async def release(request: web.Request) -> web.Response:
        """POST /api/v1/jobs/{id}/release — a held job prints after all (its ticket shows the original order time)."""
        require_accepting(deps)
        job_id = path_id(request, "job_id", "print job")
        await deps.jobs.release_held(job_id)
        job = await deps.jobs.get(job_id)
        log.info("job_released", job_id=job_id, printer=job.printer)
        deps.wake_printer(job.printer)
        return web.json_response(job_json(job))

    async def release_all(request: web.Request) -> web.Response:
        """POST /api/v1/jobs/release-held — every held job prints, oldest first; with {"job_ids": [...]} only those
        of them still held: the ones a person counted in "Print 3 held tickets now?", not those held since."""
        require_accepting(deps)
        counted: list[int] | None = None
        if request.can_read_body:
            body = await read_json(request)
            counted = body.get("job_ids") if isinstance(body, dict) else None
            # Job ids are positive (a negative one was taken and matched nothing, 200), and SQLite's integers 64-bit.
            if not isinstance(counted, list) or not all(type(i) is int and 0 < i < 2**63 for i in counted):
                return error_response(
                    422, "invalid_request", 'body must be {"job_ids": [<job id>, ...]} or empty', field="job_ids"
                )
        released = await deps.jobs.release_held(among=counted)
        log.info("jobs_released", job_ids=released, counted=counted is not None)
        for printer in deps.settings.printers:
            deps.wake_printer(printer)
        return web.json_response(
            {
                "released": released,
                # counted but not released: released, discarded or printed by someone else meanwhile, or its
                # printer is not configured
                "not_released": sorted(set(counted or ()) - set(released)),
                "still_held": sum(n for (_, state), n in (await deps.jobs.counts([JobState.HELD])).items()),
            }
        )

    async def discard(request: web.Request) -> web.Response:
        """POST /api/v1/jobs/{id}/discard — a held, failed or dead job is never printed."""
        require_accepting(deps)
        job_id = path_id(request, "job_id", "print job")
        await deps.jobs.discard(job_id)
        log.info("job_discarded", job_id=job_id)
        return web.json_response(job_json(await deps.jobs.get(job_id)))

    async def test_page(request: web.Request) -> web.Response:
        """POST /api/v1/printers/{name}/test — reads the status, prints the test page between jobs, reads it again."""
        name = request.match_info["name"]
        printer, spooler = deps.settings.printers.get(name), deps.spoolers.get(name)
        if printer is None or spooler is None:
            raise NotFoundError(
                f"printer {name!r} is not configured (known: {', '.join(deps.settings.printers) or 'none'})"
            )
        renderer = deps.renderer
        assert renderer is not None  # the agent always sets it

        def render() -> bytes:  # in a thread: right after a cached start it may still load the printing stack
            return renderer().test_page(
                printer_name=name,
                width=line_width(printer),
                language=deps.settings.agent.language,
                options=print_options(printer),
            )

        data = await asyncio.to_thread(render)
        before = await spooler.driver.status()
        body = {
            "printer": name,
            "type": printer.type,
            "profile": printer.profile,
            "status": before.value,
            "printed": False,
            "confirmed": False,
            "error": None,
        }
        try:
            # The driver's lock keeps this between two jobs of the spool, never inside one.
            outcome = await spooler.driver.print(data)
        except DeviceError as err:
            body["error"] = str(err)
            return web.json_response(body, status=503)
        body |= {"printed": True, "confirmed": outcome.confirmed, "status_after": outcome.state.value}
        return web.json_response(body)

    add_post(app, "/api/v1/jobs/release-held", release_all)
    add_post(app, "/api/v1/jobs/{job_id}/release", release)
    add_post(app, "/api/v1/jobs/{job_id}/discard", discard)
    add_post(app, "/api/v1/printers/{name}/test", test_page)
