"""The technician's log of one printer's stale holds: a few by name, the rest counted in one line."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import structlog

from edge.store.rows import PrintableJob

log = structlog.get_logger()

# Held tickets named one by one in a minute; the rest of that minute's are counted, and the count said at most once a
# minute: an outage's backlog held thousands at once, and a warning line each (4,424 for one outage, the recovery72
# probe) filled the box's journal on its SD card and buried the line that mattered.
_NAMED = 5
_EVERY_S = 60.0
# Where a person sees every held ticket (docs/operations.md): the count's line points there instead of naming them.
_SEE = "edge jobs --held, or the status page"


class HeldLog:
    """One spool's `job_held` lines (order, job, kind, station, ages) for the first _NAMED tickets it holds in a minute,
    and for the others one `jobs_held` line (count, oldest and newest age, where to see them all) when the spool falls
    idle or stops, at most once a minute: a few stale tickets are each named as before, a backlog's thousands are a
    handful of lines."""

    def __init__(self, device_id: str, mono: Callable[[], float]) -> None:
        self._device_id = device_id
        self._mono = mono
        self._named_since: float | None = None  # start of the minute whose names are counted in _named
        self._named = 0
        self._said_at: float | None = None  # when the last count was said
        self._count = 0  # held, not named, not yet said
        self._oldest_s = 0.0
        self._newest_s = 0.0

    def held(self, jobs: Sequence[tuple[PrintableJob, float, float]]) -> None:
        """These jobs (each with its age and stale age) were held, in this order."""
        now = self._mono()
        if self._named_since is None or now - self._named_since >= _EVERY_S:
            self._named_since, self._named = now, 0
        for job, age, limit in jobs:
            if self._named < _NAMED:
                self._named += 1
                log.warning(
                    "job_held",
                    device_id=self._device_id,
                    order_id=job.order_id,
                    job_id=job.id,
                    kind=job.kind,
                    station=job.station,
                    age_s=round(age),
                    stale_after_s=limit,
                )
                continue
            self._oldest_s = max(self._oldest_s, age) if self._count else age
            self._newest_s = min(self._newest_s, age) if self._count else age
            self._count += 1

    def idle(self, *, stopping: bool = False) -> None:
        """The spool has nothing to do (or stops): the held tickets counted since the last count are said, unless one
        was said less than a minute ago (then at a later idle; at a stop, always: no count is lost)."""
        now = self._mono()
        if not self._count or (not stopping and self._said_at is not None and now - self._said_at < _EVERY_S):
            return
        log.warning(
            "jobs_held",
            device_id=self._device_id,
            count=self._count,
            oldest_age_s=round(self._oldest_s),
            newest_age_s=round(self._newest_s),
            see=_SEE,
        )
        self._said_at, self._count = now, 0
