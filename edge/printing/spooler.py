"""One spool worker per printer: takes due jobs in order, sends them, records every outcome durably."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable

import structlog

from edge.clock import SYSTEM_CLOCK, Clock
from edge.config import PrinterSettings, SpoolSettings
from edge.errors import DeviceUnreachableError, DeviceWriteError
from edge.events import EventBus, PrinterStatusChanged
from edge.printing.ages import JobAges
from edge.printing.driver import PrinterDriver, PrinterNotReadyError
from edge.printing.status import BLOCKING_STATES, PrinterState
from edge.states import JobState
from edge.store import JobStore
from edge.store.rows import PrintableJob

log = structlog.get_logger()

# A paused printer with paper or cover trouble is probed this often, so it resumes within 2 s of the fix.
_PAUSED_PROBE_S = 1.0
_IDLE_WAKE_S = 30.0


def retry_delay(attempts: int, *, base: float, cap: float) -> float:
    """Exponential backoff with jitter: half fixed, so retries never bunch at zero; half random, so printers differ."""
    ceiling = min(cap, base * 2 ** max(0, attempts - 1))
    return ceiling / 2 + random.uniform(0, ceiling / 2)


class Spooler:
    def __init__(
        self,
        *,
        printer: PrinterSettings,
        driver: PrinterDriver,
        jobs: JobStore,
        render: Callable[[PrintableJob], bytes],
        bus: EventBus,
        spool: SpoolSettings,
        ages: JobAges,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        """``ages``: how old a job is and when it is stale (held for a person instead of printed). ``jobs`` publishes
        what happens to each job (printed, failed, dead, held) once it is recorded."""
        self.name = printer.name
        self.state = PrinterState.UNKNOWN
        self.state_detail = ""
        self.paused_since: float | None = None  # monotonic time the spool paused, for failover
        self.driver = driver
        self.clock = clock
        self._poll_s = printer.status_poll_s
        self._ages = ages
        self._jobs = jobs
        self._render = render
        self._bus = bus
        self._spool = spool
        self._wake = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self.current_job: int | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"spool-{self.name}")

    def wake(self) -> None:
        """New work for this printer: look now instead of at the next timer."""
        self._wake.set()

    async def stop(self) -> None:
        """Let the job in flight finish (its outcome is recorded), then stop."""
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            await self._task

    async def abort(self) -> None:
        """Stop now, not after the job in flight: that job stays 'printing' and is printed again, marked COPY, at the
        next start."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def paused_for(self) -> float | None:
        """Seconds this spool has been paused (printer offline, out of paper, cover open), None while it prints."""
        return None if self.paused_since is None else self.clock.mono() - self.paused_since

    def _set_state(self, state: PrinterState, detail: str = "") -> None:
        if state != self.state:
            log.info("printer_status", device_id=self.name, old=self.state.value, new=state.value, detail=detail)
            self._bus.publish(
                PrinterStatusChanged(printer=self.name, old=self.state.value, new=state.value, detail=detail)
            )
        self.state, self.state_detail = state, detail

    async def _sleep(self, seconds: float) -> None:
        """Sleep, but wake early for new work or shutdown."""
        try:
            await asyncio.wait_for(self._wake.wait(), timeout=max(0.0, seconds))
        except TimeoutError:
            pass
        self._wake.clear()

    async def _run(self) -> None:
        mono, wall = self.clock.mono, self.clock.wall
        # A retry is never due later than its cap from now, whatever the wall clock did since it was set.
        max_delay = self._spool.retry_max_s
        next_poll = mono() + self._poll_s
        while not self._stopping:
            try:
                job = await self._jobs.next_for(self.name, wall(), max_delay=max_delay)
                if job is not None:
                    await self._print(job)
                    next_poll = mono() + self._poll_s  # the job's own status checks count as a poll
                    continue
                if self.driver.transport.can_read and mono() >= next_poll:
                    await self._poll()
                    next_poll = mono() + self._poll_s
                    continue
                due = await self._jobs.next_due_at(self.name, wall(), max_delay=max_delay)
                wait = min(_IDLE_WAKE_S, next_poll - mono() if self.driver.transport.can_read else _IDLE_WAKE_S)
                await self._sleep(wait if due is None else min(wait, due - wall()))
            except Exception:  # the spool must outlive any one bad job or database hiccup
                log.exception("spool_error", device_id=self.name)
                await self._sleep(1.0)

    async def _poll(self) -> None:
        """Status between jobs, so a printer out of paper is known (and alerted) before the next order needs it."""
        state = await self.driver.status()
        if state in BLOCKING_STATES:
            await self._pause(state, "found by the status poll between jobs")
        else:
            self._set_state(state)

    async def _hold_if_stale(self, job: PrintableJob) -> bool:
        """A job older than its stale age is not printed on its own: a person releases or discards it."""
        limit = self._ages.stale_after_s(job)
        if not limit or job.released_at is not None:
            return False
        age = self._ages.age(job)
        if age <= limit:
            return False
        if await self._jobs.hold(job.id, self.name, expected=job.state, age_s=age):
            self._ages.forget(job.id)
            log.warning(
                "job_held",
                device_id=self.name,
                kind=job.kind,
                station=job.station,
                age_s=round(age),
                stale_after_s=limit,
            )
        return True

    async def _print(self, job: PrintableJob) -> None:
        job_id, order_id = job.id, job.order_id
        structlog.contextvars.bind_contextvars(order_id=order_id, job_id=job_id)
        self.current_job = job_id
        try:
            if await self._hold_if_stale(job):
                return
            try:
                # Off the loop: a 500-item ticket is tens of ms of CPU; in a thread the loop gets the GIL back
                # within the switch interval (the agent sets 1 ms), so intake and group commit go on meanwhile.
                data = await asyncio.to_thread(self._render, job)
            except Exception as err:  # a rendering bug must end in a dead job a person sees, not a silent loop
                log.exception("render_failed", device_id=self.name)
                await self._failed(job, f"cannot render the ticket: {err}", partial=False, expected=job.state)
                return
            if not await self._jobs.mark_printing(job_id, self.name, revision=job.revision):
                return  # a failover moved it, a person held it or an order change rewrote it, since it was read
            try:
                outcome = await self.driver.print(data)
            except DeviceUnreachableError as err:
                await self._jobs.release(job_id)
                await self._pause(PrinterState.OFFLINE, str(err))
            except PrinterNotReadyError as err:
                await self._jobs.release(job_id)
                await self._pause(err.state, str(err))
            except DeviceWriteError as err:
                # Cut short: a printer that now reports a fault stopped on it (no attempt spent); else it failed.
                after = await self.driver.status()
                if after in BLOCKING_STATES:
                    await self._uncertain(job, after, str(err))
                else:
                    self._set_state(PrinterState.ERROR, str(err))
                    await self._failed(job, str(err), partial=True)
            else:
                if not outcome.on_paper:
                    await self._uncertain(job, outcome.state, f"{outcome.state.value.replace('_', ' ')} after the job")
                    return
                latency = self._ages.waited(job)  # stored (or queued as a copy) to confirmed, on the monotonic clock
                printed_at = await self._jobs.mark_printed(job_id, order_id, latency_s=latency)
                self._set_state(outcome.state)
                if printed_at is None:
                    log.error("job_changed_while_printing", device_id=self.name)
                    return
                self._ages.forget(job_id)
                log.info(
                    "job_printed",
                    device_id=self.name,
                    kind=job.kind,
                    copy=job.copy,
                    confirmed=outcome.confirmed,
                    latency_ms=round(latency * 1000, 1),
                )
        finally:
            self.current_job = None
            structlog.contextvars.unbind_contextvars("order_id", "job_id")

    async def _uncertain(self, job: PrintableJob, state: PrinterState, detail: str) -> None:
        """The printer took the job, then reported a fault: part of it may be on paper. It prints again as COPY once
        the fault is cleared; that copy, not this attempt, is what central hears about."""
        if await self._jobs.mark_uncertain(job.id, detail):
            log.warning(
                "job_uncertain", device_id=self.name, state=state.value, detail=detail, action="reprint as COPY"
            )
        await self._pause(state, detail)

    async def _failed(
        self, job: PrintableJob, error: str, *, partial: bool, expected: JobState = JobState.PRINTING
    ) -> None:
        delay = retry_delay(job.attempts + 1, base=self._spool.retry_base_s, cap=self._spool.retry_max_s)
        recorded = await self._jobs.mark_failed(
            job.id,
            job.order_id,
            error=error,
            next_attempt_at=self.clock.wall() + delay,
            max_attempts=self._spool.max_attempts,
            partial=partial,
            expected=expected,
        )
        if recorded is None:
            log.info("job_failure_not_recorded", device_id=self.name, reason="a person changed the job meanwhile")
            return
        if recorded.state == JobState.DEAD:
            self._ages.forget(job.id)
            log.error("job_dead", device_id=self.name, attempts=recorded.attempts, error=error)
        else:
            log.warning(
                "job_failed",
                device_id=self.name,
                attempts=recorded.attempts,
                error=error,
                retry_in_s=round(delay, 2),
            )

    async def _pause(self, state: PrinterState, detail: str) -> None:
        """The printer cannot take jobs: no attempts are spent; probe with capped backoff until it can."""
        self._set_state(state, detail)
        self.paused_since = self.clock.mono()
        try:
            await self._probe_until_ready(state, detail)
        finally:
            self.paused_since = None

    async def _probe_until_ready(self, state: PrinterState, detail: str) -> None:
        delay = 0.25
        while not self._stopping:
            await self._sleep(delay)
            if self._stopping:
                return
            current = await self.driver.status()
            if current not in BLOCKING_STATES:
                self._set_state(current)
                return
            self._set_state(current, detail if current == state else "")
            cap = self._spool.offline_probe_max_s if current == PrinterState.OFFLINE else _PAUSED_PROBE_S
            delay = min(delay * 2, cap)
