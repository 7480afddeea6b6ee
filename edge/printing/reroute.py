"""At start-up, jobs of a printer that left the config (renamed, replaced, removed) move to the printer that serves
their station now, or are held, logged and alerted: never stranded where no spool serves them."""

from __future__ import annotations

from collections.abc import Callable

import structlog

from edge.events import EventBus, JobHeld, JobRedirected
from edge.store import JobStore
from edge.store.jobs import NO_PRINTER

log = structlog.get_logger()


async def reroute_stranded(jobs: JobStore, printer_for: Callable[[str, str | None], str | None], bus: EventBus) -> None:
    for job in await jobs.reroute(printer_for):
        which = {"job_id": job.job_id, "order_id": job.order_id, "station": job.station}
        if job.to_printer is None:
            hint = "no printer serves this station any more: add it to [stations] (or [receipts]) and restart"
            log.error("job_held_no_printer", printer=job.from_printer, hint=hint, **which)
            bus.publish(
                JobHeld(job_id=job.job_id, order_id=job.order_id, printer=job.from_printer, age_s=0, reason=NO_PRINTER)
            )
        else:
            log.warning(
                "job_moved_to_configured_printer", from_printer=job.from_printer, to_printer=job.to_printer, **which
            )
            bus.publish(
                JobRedirected(
                    job_id=job.job_id, order_id=job.order_id, from_printer=job.from_printer, to_printer=job.to_printer
                )
            )
