"""At start-up, jobs on a printer that no longer serves their station (it left the config: renamed, replaced, removed;
or the station, or the receipts, now print elsewhere) move to the printer that serves it now, or are held, logged and
alerted: never stranded where no spool serves them, never printed at the wrong station."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import structlog

from edge.states import JobKind
from edge.store.jobs import JobStore

log = structlog.get_logger()


async def reroute_stranded(
    jobs: JobStore,
    printers_for: Callable[[JobKind, str | None], Sequence[str]],
    same_device: Callable[[str, str], bool],
) -> None:
    """The store publishes JobRedirected or JobHeld (no_printer) for each job once the moves are committed. A job
    whose printer was only renamed (``same_device``) moves unmarked: its paper comes out where it was meant to."""
    for job in await jobs.reroute(printers_for, same_device):
        which = {"job_id": job.job_id, "order_id": job.order_id, "station": job.station}
        if job.to_printer is None:
            hint = "no printer serves this station any more: add it to [stations] (or [receipts]) and restart"
            log.error("job_held_no_printer", printer=job.from_printer, hint=hint, **which)
        else:
            log.warning(
                "job_moved_to_configured_printer", from_printer=job.from_printer, to_printer=job.to_printer, **which
            )
