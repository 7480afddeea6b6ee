"""One spool worker per printer: takes due jobs in order, sends them, records every outcome durably."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable

import aiosqlite
import structlog

from edge.config import PrinterSettings, SpoolSettings
from edge.errors import DeviceUnreachableError, DeviceWriteError
from edge.events import EventBus, JobDead, JobFailed, JobPrinted, PrinterStatusChanged
from edge.printing.driver import PrinterDriver, PrinterNotReadyError
from edge.printing.status import BLOCKING_STATES, PrinterState
from edge.store import JobStore

log = structlog.get_logger()

# A paused printer with paper or cover trouble is probed this often, so it resumes within 2 s of the fix.
_PAUSED_PROBE_S = 1.0
_IDLE_WAKE_S = 30.0


def retry_delay(attempts: int, *, base: float, cap: float) -> float:
    """Exponential backoff with jitter: half fixed so retries never bunch at zero, half random so printers don't sync."""
    ceiling = min(cap, base * 2 ** max(0, attempts - 1))
    return ceiling / 2 + random.uniform(0, ceiling / 2)


class Spooler:
    def __init__(
        self,
        *,
        printer: PrinterSettings,
        driver: PrinterDriver,
        jobs: JobStore,
        render: Callable[[aiosqlite.Row], bytes],
        bus: EventBus,
        spool: SpoolSettings,
    ) -> None:
        self.name = printer.name
        self.state = PrinterState.UNKNOWN
        self.state_detail = ""
        self._driver = driver
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

    def _set_state(self, state: PrinterState, detail: str = "") -> None:
        if state != self.state:
            log.info("printer_status", device_id=self.name, old=self.state.value, new=state.value, detail=detail)
            self._bus.publish(PrinterStatusChanged(printer=self.name, old=self.state.value, new=state.value, detail=detail))
        self.state, self.state_detail = state, detail

    async def _sleep(self, seconds: float) -> None:
        """Sleep, but wake early for new work or shutdown."""
        try:
            await asyncio.wait_for(self._wake.wait(), timeout=max(0.0, seconds))
        except TimeoutError:
            pass
        self._wake.clear()

    async def _run(self) -> None:
        while not self._stopping:
            try:
                job = await self._jobs.next_for(self.name, time.time())
                if job is None:
                    due = await self._jobs.next_due_at(self.name)
                    await self._sleep(_IDLE_WAKE_S if due is None else min(_IDLE_WAKE_S, due - time.time()))
                    continue
                await self._print(job)
            except Exception:  # the spool must outlive any one bad job or database hiccup
                log.exception("spool_error", device_id=self.name)
                await self._sleep(1.0)

    async def _print(self, job: aiosqlite.Row) -> None:
        job_id, order_id = job["id"], job["order_id"]
        structlog.contextvars.bind_contextvars(order_id=order_id, job_id=job_id)
        self.current_job = job_id
        try:
            try:
                data = self._render(job)
            except Exception as err:  # a rendering bug must end in a dead job a person sees, not a silent loop
                log.exception("render_failed", device_id=self.name)
                await self._failed(job, f"cannot render the ticket: {err}", partial=False)
                return
            await self._jobs.mark_printing(job_id)
            try:
                outcome = await self._driver.print(data)
            except DeviceUnreachableError as err:
                await self._jobs.release(job_id)
                await self._pause(PrinterState.OFFLINE, str(err))
            except PrinterNotReadyError as err:
                await self._jobs.release(job_id)
                await self._pause(err.state, str(err))
            except DeviceWriteError as err:
                self._set_state(PrinterState.ERROR, str(err))
                await self._failed(job, str(err), partial=True)
            else:
                printed_at = await self._jobs.mark_printed(job_id, order_id)
                self._set_state(outcome.state)
                latency = printed_at - job["received_at"]
                log.info("job_printed", device_id=self.name, kind=job["kind"], copy=bool(job["copy"]), confirmed=outcome.confirmed, latency_ms=round(latency * 1000, 1))
                self._bus.publish(JobPrinted(job_id=job_id, order_id=order_id, printer=self.name, latency_s=latency))
        finally:
            self.current_job = None
            structlog.contextvars.unbind_contextvars("order_id", "job_id")

    async def _failed(self, job: aiosqlite.Row, error: str, *, partial: bool) -> None:
        delay = retry_delay(job["attempts"] + 1, base=self._spool.retry_base_s, cap=self._spool.retry_max_s)
        state, attempts = await self._jobs.mark_failed(
            job["id"], job["order_id"], error=error, next_attempt_at=time.time() + delay, max_attempts=self._spool.max_attempts, partial=partial
        )
        if state == "dead":
            log.error("job_dead", device_id=self.name, attempts=attempts, error=error)
            self._bus.publish(JobDead(job_id=job["id"], order_id=job["order_id"], order_number=job["number"], printer=self.name, error=error, attempts=attempts))
        else:
            log.warning("job_failed", device_id=self.name, attempts=attempts, error=error, retry_in_s=round(delay, 2))
            self._bus.publish(JobFailed(job_id=job["id"], order_id=job["order_id"], printer=self.name, error=error, attempts=attempts))

    async def _pause(self, state: PrinterState, detail: str) -> None:
        """The printer cannot take jobs: no attempts are spent; probe with capped backoff until it can."""
        self._set_state(state, detail)
        delay = 0.25
        while not self._stopping:
            await self._sleep(delay)
            if self._stopping:
                return
            current = await self._driver.status()
            if current not in BLOCKING_STATES:
                self._set_state(current)
                return
            self._set_state(current, detail if current == state else "")
            cap = self._spool.offline_probe_max_s if current == PrinterState.OFFLINE else _PAUSED_PROBE_S
            delay = min(delay * 2, cap)
