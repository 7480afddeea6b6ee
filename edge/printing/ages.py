"""How old a print job is, for the stale-ticket hold: the order's own age when we stored it, plus the time its job has
waited since, measured on the monotonic clock so that a step of the wall clock changes neither. With a central link,
on central's clock: created_at is central's time, and the box's own clock may be wrong."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime

import structlog

from edge.clock import Clock, RemoteClock
from edge.config import PrintingSettings
from edge.orders.model import late_after_s
from edge.states import JobKind
from edge.store.rows import PrintableJob

# Jobs whose receipt time is remembered; past this the oldest entries go (they fall back to the wall clock).
_REMEMBERED = 50_000
# How long jobs whose wait only the box's wall clock tells (from before a reboot) wait for that clock to be confirmed
# (central heard, NTP synchronized) before it is taken as it is: a WAN still down after a power cut must not keep the
# morning's backlog from printing, or being held, for good.
CLOCK_CONFIRM_S = 45.0

log = structlog.get_logger()


def order_time(iso: str) -> float | None:
    """One of an order's times (created_at, due_at: central's clock) in unix seconds; None for rows written by hand or
    by an old version."""
    try:
        return datetime.fromisoformat(iso).timestamp()
    except (TypeError, ValueError):
        return None


class JobAges:
    """Receipt times of jobs on the monotonic clock, kept in memory from the moment each is stored.

    Jobs from before this run (and any not announced) are taken at first sight with their wall-clock wait, never
    negative; from then on the monotonic clock counts.
    """

    def __init__(
        self,
        *,
        clock: Clock,
        printing: PrintingSettings,
        staleness: Mapping[str, float],
        central: RemoteClock | None = None,
    ) -> None:
        """``central``: central's clock as its answers tell it, where the agent has a central link."""
        self._clock = clock
        self._central = central
        self._printing = printing
        self._staleness = dict(staleness)
        self._since: dict[int, float] = {}  # job id -> monotonic time it started waiting
        self._seeded: set[int] = set()  # jobs whose wait before this run was read off the wall clock
        self._last_written: tuple[float, float] | None = None  # the store's last write's wall time; mono at start
        self._unconfirmed: set[int] = set()  # seeded at the start off a wall clock no one has confirmed yet
        self._confirm_by = 0.0  # monotonic time after which the box's clock is taken unconfirmed

    def received(self, job_ids: Iterable[int]) -> None:
        """New jobs start waiting now (called when their order is stored)."""
        now = self._clock.mono()
        for job_id in job_ids:
            self._since.setdefault(job_id, now)
        if len(self._since) > _REMEMBERED:
            for job_id in list(self._since)[: _REMEMBERED // 2]:
                self.forget(job_id)

    def seed(
        self,
        jobs: Iterable[tuple[int, float, str]],
        *,
        last_written: float | None = None,
        waited: Mapping[int, float] | None = None,
    ) -> None:
        """(job id, created_at, its order's created_at) of jobs already waiting at start-up: their wait so far from the
        wall clock, once — never longer than their order exists by that clock: a job stored while the clock was
        behind (a box booted in 1970, before NTP) is as old as its order, not 56 years. ``last_written``: the wall
        time of the store's last write (JobStore.last_written), read at the start: a clock behind it is.
        ``waited``: the waits a clean stop in this boot kept, with the time since (JobStore.stopped_waits), measured
        on the monotonic clock whatever the wall clock did (an NTP step back during that run lost them, and a stale
        ticket printed). Those whose wait the wall clock told are unconfirmed() for a while."""
        mono = self._clock.mono()
        for job_id, wait in (waited or {}).items():
            if job_id not in self._since:
                self._since[job_id] = mono - wait
                self._seeded.add(job_id)
        if last_written is not None:
            self._last_written = (last_written, mono)
        self._unconfirmed.update(self._from_wall(jobs))
        self._confirm_by = mono + CLOCK_CONFIRM_S

    def _from_wall(self, jobs: Iterable[tuple[int, float, str]]) -> list[int]:
        """Seed these jobs' waits off the wall clock (see seed); returns the ids seeded so."""
        mono = self._clock.mono()
        wall = self._clock.wall()
        if self._last_written is not None:
            # A box without a hardware clock restores the time it last saved after a power cut (fake-hwclock): behind
            # the store's last write, "now" is at least that write's time and the monotonic time since the start.
            written, started = self._last_written
            wall = max(wall, written + mono - started)
        seeded = []
        for job_id, created_at, order_created_at in jobs:
            if job_id in self._since:
                continue
            wait = max(0.0, wall - created_at)
            if (created := order_time(order_created_at)) is not None:
                wait = min(wait, max(0.0, wall - created))
            self._since[job_id] = mono - wait
            self._seeded.add(job_id)
            seeded.append(job_id)
        return seeded

    def unconfirmed(self) -> frozenset[int]:
        """Jobs waiting since before a reboot whose age cannot be told yet, neither printed nor held meanwhile: their
        wait came off the box's wall clock at the start, and nothing has confirmed that clock since (central's clock
        heard in this run, or the kernel's word that NTP set it), for at most CLOCK_CONFIRM_S; after that the box's
        clock is taken as it is. Before stop 83 (boot83 F3, F3b) the spools decided at once: a clock restored to last
        night's time (fake-hwclock) or to 1970 printed a 10-hour-old ticket into the morning, one 2 h ahead held a
        fresh one for a person, even with central's first answer only tens of milliseconds away."""
        if self._unconfirmed and self._clock_confirmed():
            self._unconfirmed.clear()
        return frozenset(self._unconfirmed)

    def _clock_confirmed(self) -> bool:
        if self._central is not None and self._central.wall() is not None:
            return True
        if self._clock.synchronized():
            return True
        if self._clock.mono() < self._confirm_by:
            return False
        log.warning(
            "clock_not_confirmed",
            jobs=len(self._unconfirmed),
            waited_s=CLOCK_CONFIRM_S,
            effect="tickets from before the reboot are aged on the box's clock: printed or held as it says",
            hint="check NTP and the link to central",
        )
        return True

    def waits(self, job_ids: Iterable[int]) -> dict[int, float]:
        """How long each of these jobs has waited, on the monotonic clock, for a clean stop to keep (seed)."""
        now = self._clock.mono()
        return {job_id: now - self._since[job_id] for job_id in job_ids if job_id in self._since}

    def forget(self, job_id: int) -> None:
        """The job is printed or discarded. A held or dead one is remembered: released or retried, its wait goes on
        from when it was stored, not from a wall clock that may have been stepped meanwhile."""
        self._since.pop(job_id, None)
        self._seeded.discard(job_id)
        self._unconfirmed.discard(job_id)

    def waited(self, job: PrintableJob) -> float:
        """Seconds the job has waited since it was created (stored, or queued as a copy)."""
        return self._waited(job.id, job.created_at, job.order_created_at)

    def oldest_wait(self, jobs: Iterable[tuple[int, float, str]]) -> float | None:
        """Seconds the longest-waiting of these jobs (id, created_at, its order's created_at) has waited; None for
        none. For the queue's age (metric, status page, backlog alert): the wait the hold reads (waited)."""
        return max((self._waited(*job) for job in jobs), default=None)

    def _waited(self, job_id: int, created_at: float, order_created_at: str) -> float:
        """The one wait of a job: on the monotonic clock; one from before this run that our wall clock told (seed),
        never longer than its order exists on central's clock once central has answered, as age() takes it. Before
        stop 82 the queue's age skipped that: 2 h for a ticket seconds old on a box 2 h ahead (the prom82 probe, F4)."""
        if job_id not in self._since:  # stored in this run unannounced (a copy): its wall time is this run's
            self._from_wall([(job_id, created_at, order_created_at)])
        waited = max(0.0, self._clock.mono() - self._since[job_id])
        central_now = self._central.wall() if self._central is not None else None
        if job_id in self._seeded and central_now is not None and (created := order_time(order_created_at)) is not None:
            waited = min(waited, max(0.0, central_now - created))
        return waited

    def age(self, job: PrintableJob) -> float:
        """The order's age as far as this box can tell: on central's clock once central has answered (created_at is
        its time; never less than the job has waited here in this run), else how late it was when stored, by our
        clock, plus waited since. A created_at in the future (central's clock ahead, or ours behind: a box booted in
        1970) is late by 0: such an order is taken as fresh, never held because a clock is wrong."""
        waited = self.waited(job)
        created = order_time(job.order_created_at)
        if created is None:  # no age to hold it for
            return waited
        central_now = self._central.wall() if self._central is not None else None
        if central_now is not None:
            # A wait from before this run came off our wall clock, which may have been wrong then or now: central's
            # tells the age alone.
            age = central_now - created if job.id in self._seeded else max(central_now - created, waited)
        else:
            age = max(0.0, job.order_received_at - created) + waited
        if job.follows_printed_at is not None:
            # A change or STORNO to a ticket printed lately (a person may have released an old one) is news for a meal
            # being made: as old as that ticket's time on the rail, never older than its order.
            age = min(age, max(0.0, self._clock.wall() - job.follows_printed_at))
        return age

    def held_after_s(self, job: PrintableJob) -> float:
        """The age after which a job is held (0: never): its stale age, per station for tickets ([staleness] over
        printing.stale_ticket_min), one for receipts; or its order's due time, when that is later (a pre-order taken
        overnight while the printer was off)."""
        if job.kind == JobKind.RECEIPT:
            stale = self._printing.stale_receipt_min * 60
        else:
            stale = self._staleness.get(job.station or "", self._printing.stale_ticket_min) * 60
        created = order_time(job.order_created_at)
        if not stale or created is None:
            return stale
        return late_after_s(created, order_time(job.order_due_at) if job.order_due_at else None, stale)
