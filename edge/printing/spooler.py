"""One spool worker per printer: takes due jobs in order, sends them, records every outcome durably."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING

import structlog

from edge.clock import SYSTEM_CLOCK, Clock, wait_set
from edge.config import PrinterSettings, SpoolSettings
from edge.errors import (
    DeviceUnreachableError,
    DeviceWriteError,
    InvalidOrderError,
    StoreUnavailableError,
    UnreadableRowError,
)
from edge.events import EventBus, PrinterStatusChanged, TextUnprintable
from edge.log import SaidOnce
from edge.orders.changes import struck_lines
from edge.orders.model import parse_order
from edge.printing.ages import JobAges
from edge.printing.driver import PrinterDriver, PrinterNotReadyError
from edge.printing.held_log import HeldLog
from edge.printing.status import BLOCKING_STATES, HUNG_UP_MID_TICKET, PrinterState
from edge.states import JobState, JobVariant
from edge.store.db import STORE_RETRY_S
from edge.store.jobs import JobStore, StaleJob
from edge.store.rows import PrintableJob, PrintedMark

if TYPE_CHECKING:
    from edge.printing.jobs import RenderJob

log = structlog.get_logger()

# A paused printer with paper or cover trouble is probed this often, so it resumes within 2 s of the fix.
_PAUSED_PROBE_S = 1.0
_IDLE_WAKE_S = 30.0
# Claim about this much printing per commit (see Spooler._burst), at most this many jobs.
_CLAIM_HORIZON_S = 0.05
_CLAIM_MAX = 16
# A look that found only stale jobs is followed by one this long: a backlog's stale tickets are held in a few commits,
# and the recent ones behind them print within seconds (each look reads the printer's whole queue).
_HOLD_LOOK = 256
# While jobs wait for the clock to be confirmed (JobAges.unconfirmed), an idle spool looks again this often.
_CLOCK_LOOK_S = 0.25
# A confirmed job's printed mark waits this long for a claim to ride on before it is committed on its own.
_PRINTED_RIDE_S = 0.05
# Tickets cut short in a row after which a printer is failing (Spooler.failing): one is a hiccup (a jack nudged), the
# ticket is tried again there as COPY; two are a fault, and its station's backup takes its tickets.
_FAILING_AFTER = 2


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
        render: RenderJob,
        bus: EventBus,
        rendered_with: Callable[[PrintableJob], str],
        spool: SpoolSettings,
        ages: JobAges,
        clock: Clock = SYSTEM_CLOCK,
        clear_first: bool = False,
        requeue_first: bool = False,
    ) -> None:
        """``ages``: how old a job is and when it is stale (held for a person instead of printed). ``jobs`` publishes
        what happens to each job (printed, failed, dead, held) once it is recorded. ``clear_first``: a crash cut a job
        on this printer short (JobStore.printers_to_clear): its buffers are cleared at the first contact.
        ``requeue_first``: the start could not put the jobs a crash left 'printing' here back in line (a full card):
        the spool does, as soon as the store writes again, before it claims any. ``rendered_with``: the settings that
        shape a job's bytes, kept with its claim for `edge preview` (JobRenderer.rendered_with)."""
        self.name = printer.name
        self.state = PrinterState.UNKNOWN
        self.state_detail = ""
        self.paused_since: float | None = None  # monotonic time the spool paused, for failover
        # Monotonic time of the pause since which no ticket got out: a printer that reads online between pauses and
        # takes nothing (it answers status, refuses jobs) is stuck all along, not paused anew each time
        self._stuck_since: float | None = None
        # Jobs in a row the printer took part of and then hung up on, while it reads fine between them (a failing
        # interface board, a loose jack): the spool never pauses for that, and each retry spends an attempt
        self.cut_short = 0
        # A whole ticket out is the sign to revive what this printer was given up on for hanging up: after each
        # ticket it cut short, and once a run (an earlier run's, before a restart, are in the database only).
        self._revive_due = True
        self.driver = driver
        self.clock = clock
        self._poll_s = printer.status_poll_s
        self._ages = ages
        self._jobs = jobs
        self._render = render
        self._rendered_with = rendered_with
        self._bus = bus
        self._told_unprintable: set[str] = set()  # texts this printer cannot show, told once a run
        self._spool = spool
        self._wake = asyncio.Event()
        self._stop_asked = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self.current_job: int | None = None
        self._confirmed: list[PrintedMark] = []  # printed, not yet recorded: rides on the next commit
        # Claimed, the claim refused (committed or not: its fsync may have failed) and nothing of them sent: the
        # requeue after a refused write puts them back in line unmarked, not as COPY like a job that may be half out.
        self._unsent: list[int] = []
        self._storage = SaidOnce("spool_waits_for_storage", device_id=self.name)  # why commits fail, until one passes
        # A write failed (what it would have said of a claimed job may be lost with it), or a crash's requeue waits.
        self._unrecorded = requeue_first
        self._crashed = requeue_first  # that requeue records the printer as to be cleared, as a start's does
        self._confirmed_at = 0.0  # monotonic time the oldest of them was confirmed
        self._last_send_s = 1.0  # until a job has gone out, claim one at a time
        self._holding = False  # the last look found stale jobs only: the next one is _HOLD_LOOK long
        self._held_log = HeldLog(self.name, clock.mono)
        self._clear_unrecorded = clear_first  # the clear is asked for until the store hears it went out
        self._answer_recorded = driver.answered_earlier  # the store knows its device answers status
        self._lacks_in_order_recorded = driver.lacks_in_order is True  # what the store knows of it answering GS r
        if clear_first:
            driver.clear_at_first_contact()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"spool-{self.name}")

    def wake(self) -> None:
        """New work for this printer: look now instead of at the next timer."""
        self._wake.set()

    async def stop(self) -> None:
        """Let the job in flight finish (its outcome is recorded), then stop."""
        self._stopping = True
        self._wake.set()
        self._stop_asked.set()
        try:
            if self._task is not None:
                await self._task
        finally:
            self.driver.close()

    async def abort(self) -> None:
        """Stop now, not after the job in flight: that job stays 'printing' and is printed again, marked COPY, at the
        next start."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self.driver.close()

    @property
    def out_unrecorded(self) -> frozenset[int]:
        """Jobs the printer confirmed out whose printed mark waits for the spool's next commit (still 'printing' in
        the store): a Reprint pressed now finds them out, not going out."""
        return frozenset(mark.job_id for mark in self._confirmed)

    @property
    def failing(self) -> bool:
        """Whether the printer cut the last _FAILING_AFTER jobs short: failover moves its tickets at once, before
        their attempts run out on it."""
        return self.cut_short >= _FAILING_AFTER

    def stuck_for(self) -> float | None:
        """While the spool is paused (printer offline, out of paper, cover open): seconds since the pause after which
        no ticket got out and none stopped waiting, however often the printer read online meanwhile; None while it
        prints."""
        if self.paused_since is None or self._stuck_since is None:
            return None
        return self.clock.mono() - self._stuck_since

    def _set_state(self, state: PrinterState, detail: str = "") -> None:
        detail = detail or self.driver.caveat
        if state != self.state:
            log.info("printer_status", device_id=self.name, old=self.state.value, new=state.value, detail=detail)
            self._bus.publish(
                PrinterStatusChanged(printer=self.name, old=self.state.value, new=state.value, detail=detail)
            )
        self.state, self.state_detail = state, detail

    async def _sleep(self, seconds: float) -> None:
        """Sleep, but wake early for new work or shutdown."""
        await wait_set(self._wake, max(0.0, seconds))
        self._wake.clear()

    async def _run(self) -> None:
        mono, wall = self.clock.mono, self.clock.wall
        # A retry is never due later than its cap from now, whatever the wall clock did since it was set.
        max_delay = self._spool.retry_max_s
        next_poll = mono() + self._poll_s
        while not self._stopping:
            try:
                # The store refuses the requeue (nothing is claimed before it: its COPY goes first) or the claim:
                # the printer is watched meanwhile, the store asked again in a while.
                held = False
                if self._unrecorded:
                    try:
                        await self._requeue_unrecorded()
                    except StoreUnavailableError:  # next time round; the printer is watched meanwhile (status, alerts)
                        held = True
                await self._record_contact()  # after a crash's requeue, which records the clear as still to go out
                unconfirmed = self._ages.unconfirmed()  # neither printed nor held until the clock is confirmed
                burst = (
                    []
                    if held
                    else await self._jobs.next_burst(
                        self.name,
                        wall(),
                        max_delay=max_delay,
                        limit=_HOLD_LOOK if self._holding else self._burst(),
                        skip=unconfirmed,
                    )
                )
                if not burst:
                    self._stuck_since = None  # nothing waits: no ticket is stuck
                if burst and await self._print_burst(burst):
                    if self.driver.asks_status:  # the jobs' own status checks count as a poll; jobs sent blind do not
                        next_poll = mono() + self._poll_s
                    continue
                # A claim the store refused (a full card) is tried again in a while, the printer watched meanwhile:
                # before, the spool went from the refused claim to its retry and back, never to its status poll, and a
                # printer switched off while tickets waited stayed "online" (the disk-fault probe, diskfault F1).
                held = held or bool(burst)
                if self._confirmed and not held:
                    # Nothing to ride on yet: a new order within this short wait carries the marks in its claim.
                    left = self._confirmed_at + _PRINTED_RIDE_S - mono()
                    if left > 0:
                        await self._sleep(left)
                    else:
                        await self._commit_marks()
                    continue
                if self.driver.transport.can_read and mono() >= next_poll:
                    await self._poll()
                    next_poll = mono() + self._poll_s
                    continue
                self._held_log.idle()
                # One reading of the wall clock for the question and the answer: a step while the store answers
                # would otherwise turn a retry due within its cap into a sleep until the next poll.
                now = wall()
                due = (
                    now + STORE_RETRY_S
                    if held
                    else await self._jobs.next_due_at(self.name, now, max_delay=max_delay, skip=unconfirmed)
                )
                wait = min(_IDLE_WAKE_S, next_poll - mono() if self.driver.transport.can_read else _IDLE_WAKE_S)
                if unconfirmed:  # nothing says when central answers or NTP sets the clock: look again soon
                    wait = min(wait, _CLOCK_LOOK_S)
                await self._sleep(wait if due is None else min(wait, due - now))
            except StoreUnavailableError as err:
                # A full or read-only disk: the storage alert tells the manager; one line here, not one a second.
                self._unrecorded = True
                self._storage.failed(str(err))
                await self._sleep(STORE_RETRY_S)
            except Exception:  # the spool must outlive any one bad job or database hiccup
                log.exception("spool_error", device_id=self.name)
                await self._sleep(1.0)
        # Stopped, not aborted: what the last job showed of the printer (it answers status) is kept, as a restart
        # right after the first ticket would otherwise read its silence later as a model without status.
        await self._record_contact()
        self._held_log.idle(stopping=True)
        if self._confirmed:  # what went out is recorded as printed
            try:
                await self._commit_marks()
            except StoreUnavailableError as err:  # they stay 'printing', as after a crash
                log.warning(
                    "spool_marks_not_recorded",
                    device_id=self.name,
                    job_ids=[mark.job_id for mark in self._confirmed],
                    error=str(err),
                    effect="printed again marked COPY at the next start",
                )

    async def _requeue_unrecorded(self) -> None:
        """Once the store writes again after refusing a write: what went out is recorded as printed, then this
        printer's jobs still marked 'printing' (their outcome, a cut-short ticket, a release, a failure, was lost with
        the write) go back in line as a crash leaves them, marked COPY: they may be half out. Without it they waited
        for the next start (an acknowledged order that never printed)."""
        if self._confirmed:
            await self._commit_marks()
        if interrupted := await self._jobs.requeue_interrupted(self.name, crashed=self._crashed, unsent=self._unsent):
            event = "jobs_interrupted_by_crash" if self._crashed else "jobs_interrupted_by_storage"
            log.warning(event, device_id=self.name, job_ids=interrupted, action="reprinting marked COPY")
        self._unrecorded = self._crashed = False
        self._unsent = []

    async def _record_contact(self) -> None:
        """What the store keeps of the printer: once the clear asked for at the start went out, it forgets it (a
        restart before then clears again, harmless to the job, which prints again as COPY); once the printer first
        answers a status query, its device is recorded as one that answers (JobStore.answered_devices), and whether
        it answers GS r once that is learnt (JobStore.devices_without_in_order). A store that refuses now hears it
        next time round."""
        if self._clear_unrecorded and not self.driver.clearing_first:
            with contextlib.suppress(StoreUnavailableError):
                await self._jobs.buffers_cleared(self.name, self.driver.transport.device)
                self._clear_unrecorded = False
        if not self._answer_recorded and self.driver.answered_status:
            with contextlib.suppress(StoreUnavailableError):
                await self._jobs.device_answered(self.driver.transport.device)
                self._answer_recorded = True
        lacks = self.driver.lacks_in_order
        if lacks is not None and lacks != self._lacks_in_order_recorded:
            with contextlib.suppress(StoreUnavailableError):
                await self._jobs.in_order_learnt(self.driver.transport.device, answers=not lacks)
                self._lacks_in_order_recorded = lacks

    def _burst(self) -> int:
        """How many due jobs to claim in one commit: enough that the printer never waits for the disk (a fast printer
        gets several per fsync), few enough that a crash leaves little claimed but never sent (each reprints as COPY
        though nobody saw it): about _CLAIM_HORIZON_S of printing, judged by the last job's time at the printer."""
        return max(1, min(_CLAIM_MAX, int(_CLAIM_HORIZON_S / max(self._last_send_s, 1e-3))))

    async def _commit_marks(
        self, *, claim: Sequence[tuple[int, int, str]] = (), release: Sequence[int] = ()
    ) -> frozenset[int]:
        """The confirmed jobs' printed marks, with this claim or release, in one commit; returns the jobs claimed."""
        marks, self._confirmed = self._confirmed, []
        try:
            done = await self._jobs.commit_marks(self.name, printed=marks, claim=claim, release=release)
        except BaseException:
            self._confirmed = marks + self._confirmed  # not recorded: they ride on the next commit
            raise
        self._storage.passed()
        for mark in marks:
            if mark.job_id in done.printed:
                self._ages.forget(mark.job_id)
            else:
                log.error("job_changed_while_printing", device_id=self.name, job_id=mark.job_id)
        return done.claimed

    async def _print_burst(self, burst: list[PrintableJob | UnreadableRowError]) -> bool:
        """Hold the stale jobs of a look in one commit; render the first _burst() others, claim them in one commit
        (carrying the printed marks of the jobs before), send them one by one. A job the printer cannot take pauses the
        spool; the claimed jobs behind it go back in line unsent. False when the store refused the claim: nothing was
        sent."""
        take, stale = self._burst(), []
        ready: list[tuple[PrintableJob, bytes]] = []
        for job in burst:
            if isinstance(job, UnreadableRowError):
                await self._unreadable(job)
            elif (late := self._stale(job)) is not None:
                stale.append((job, *late))
            # The rest of a long look stays in line for the next one: a burst claims what it always did.
            elif len(ready) < take and (data := await self._prepare(job)) is not None:
                ready.append((job, data))
        await self._hold(stale)
        self._holding = bool(stale) and not ready
        if not ready:
            return True
        try:
            claimed = await self._commit_marks(
                claim=[(job.id, job.revision, self._rendered_with(job)) for job, _ in ready]
            )
        except StoreUnavailableError as err:
            self._unsent += [job.id for job, _ in ready]
            self._unrecorded = True
            self._storage.failed(str(err))
            return False
        todo = [(job, data) for job, data in ready if job.id in claimed]  # others: moved, held or rewritten meanwhile
        for n, (job, data) in enumerate(todo):
            if self._stopping:  # stop() lets the job in flight finish, not the whole burst
                await self._commit_marks(release=[j.id for j, _ in todo[n:]])
                return True
            pause, sent = await self._send(job, data)
            if pause is not None:
                with self._state_known(*pause):
                    await self._commit_marks(release=[j.id for j, _ in todo[n if not sent else n + 1 :]])
                await self._pause(*pause)
                return True
        return True

    async def _prepare(self, job: PrintableJob) -> bytes | None:
        """The job's bytes, or None when it cannot be rendered (it failed) or is a STORNO with nothing to strike."""
        with structlog.contextvars.bound_contextvars(order_id=job.order_id, job_id=job.id):
            self.current_job = job.id
            try:
                if job.variant == JobVariant.CANCEL and await asyncio.to_thread(_strikes_nothing, job):
                    # Planned while a change that emptied the station was going out; it went out, so the station's
                    # paper holds nothing of the order: none is printed (an empty one did, the lifecycle79 probe, F3).
                    if await self._jobs.drop_empty_storno(job.id):
                        log.info("storno_not_printed", device_id=self.name, reason="nothing of it on the paper")
                    return None
                try:
                    # Off the loop: a 500-item ticket is tens of ms of CPU; in a thread the loop gets the GIL back
                    # within the switch interval (the agent sets 1 ms), so intake and group commit go on meanwhile.
                    unprintable: list[str] = []
                    data = await asyncio.to_thread(self._render, job, unprintable)
                except Exception as err:  # a rendering bug must end in a dead job a person sees, not a silent loop
                    log.exception("render_failed", device_id=self.name)
                    await self._failed(job, f"cannot render the ticket: {err}", partial=False, expected=job.state)
                    return None
                self._tell_unprintable(job, unprintable)
                return data
            finally:
                self.current_job = None

    def _tell_unprintable(self, job: PrintableJob, texts: list[str]) -> None:
        """Text the code page cannot show prints as "?": the ticket goes out (the item's SKU beside a name with
        nothing left of it), and the manager hears of each such text once, to change the menu or the printer."""
        if new := tuple(text for text in texts if text not in self._told_unprintable):
            self._told_unprintable.update(new)
            log.warning("text_unprintable", device_id=self.name, texts=new, effect='printed as "?"')
            self._bus.publish(
                TextUnprintable(printer=self.name, order_id=job.order_id, order_number=job.order_number, texts=new)
            )

    async def _unreadable(self, err: UnreadableRowError) -> None:
        """A job this version cannot read would stall the printer behind it: it is dead at once (another attempt
        reads the same row), which tells central and the manager; the row stays as it is for a newer version."""
        log.error("job_unreadable", device_id=self.name, job_id=err.row_id, order_id=err.order_id, error=str(err))
        await self._jobs.mark_failed(
            err.row_id,
            err.order_id,
            error=str(err),
            next_attempt_at=self.clock.wall(),
            max_attempts=0,  # dead on this attempt
            partial=False,
            expected=JobState(err.state),  # queued or failed: the burst holds no others
        )

    async def _poll(self) -> None:
        """Status between jobs, so a printer out of paper is known (and alerted) before the next order needs it."""
        state = await self.driver.status()
        if state in BLOCKING_STATES:
            # An error names its kind (DLE EOT 3), as the ticket's own check does; otherwise why it is silent.
            why = self.driver.stopped_why if state == PrinterState.ERROR else self.driver.silence
            await self._pause(state, why or "found by the status poll between jobs")
        else:
            self._set_state(state)

    def _stale(self, job: PrintableJob) -> tuple[float, float] | None:
        """(age, stale age) of a job older than its stale age, and past its order's due time, that no person released:
        it is not printed on its own, a person releases or discards it."""
        limit = self._ages.held_after_s(job)
        if not limit or job.released_at is not None:
            return None
        age = self._ages.age(job)
        return (age, limit) if age > limit else None

    async def _hold(self, stale: Sequence[tuple[PrintableJob, float, float]]) -> None:
        """Hold these stale jobs (with their ages and stale ages) in one commit; the technician's log names the first
        few, counts the rest (HeldLog)."""
        if not stale:
            return
        held = await self._jobs.hold_many(self.name, [StaleJob(job.id, job.state, age) for job, age, _ in stale])
        self._held_log.held([(job, age, limit) for job, age, limit in stale if job.id in held])

    async def _send(self, job: PrintableJob, data: bytes) -> tuple[tuple[PrinterState, str] | None, bool]:
        """Send one claimed job and record what the printer did with it. Returns why the spool must pause (None: go
        on), and whether the printer took the job (False: it is still claimed, unsent, and goes back in line)."""
        with structlog.contextvars.bound_contextvars(order_id=job.order_id, job_id=job.id):
            self.current_job = job.id
            started = self.clock.mono()
            try:
                outcome = await self.driver.print(data)
            except DeviceUnreachableError as err:
                return (PrinterState.OFFLINE, str(err)), False
            except PrinterNotReadyError as err:
                return (err.state, str(err)), False
            except DeviceWriteError as err:
                # Cut short: a printer that now reports a fault stopped on it (no attempt spent); else it failed.
                after = await self.driver.status()
                if after in BLOCKING_STATES:
                    await self._uncertain(job, after, str(err))
                    return (after, str(err)), True
                self._set_state(PrinterState.ERROR, f"{HUNG_UP_MID_TICKET}: {err}")
                self.cut_short += 1
                self._revive_due = True
                await self._failed(job, str(err), partial=True, pulse_lost=self.driver.pulse_unseen)
                return None, True
            finally:
                self.current_job = None
            self._last_send_s = self.clock.mono() - started
            if not outcome.on_paper:
                detail = self.driver.silence or f"{outcome.state.value.replace('_', ' ')} after the job"
                await self._uncertain(job, outcome.state, detail)
                return (outcome.state, detail), True
            latency = self._ages.waited(job)  # stored (or queued as a copy) to confirmed, on the monotonic clock
            # Recorded with the next claim (or after a short wait): until then a crash reprints it as COPY.
            if not self._confirmed:
                self._confirmed_at = self.clock.mono()
            held_on = "" if outcome.processed else self.driver.transport.device  # taken, not seen out
            self._confirmed.append(PrintedMark(job.id, job.order_id, latency, held_on))
            if self._revive_due:  # its line holds: what it was given up on for hanging up goes back in line
                self._revive_due = False
                await self._revive_given_up()
            self.cut_short = 0
            self._stuck_since = None
            self._set_state(outcome.state)
            log.info(
                "job_printed",
                device_id=self.name,
                kind=job.kind,
                copy=job.copy,
                confirmed=outcome.confirmed,
                latency_ms=round(latency * 1000, 1),
            )
            return None, True

    async def _revive_given_up(self) -> None:
        if revived := await self._jobs.revive_given_up(self.name, self._spool.max_attempts):
            log.warning(
                "jobs_revived",
                device_id=self.name,
                job_ids=revived,
                reason="the printer prints whole again",
                # not the order and job just printed, which the context holds: the line is of the tickets revived
                order_id=None,
                job_id=None,
            )

    @contextlib.contextmanager
    def _state_known(self, state: PrinterState, detail: str) -> Iterator[None]:
        """Around the record of what the printer did: if the store refuses it, the printer's state is set all the same
        (it is known, and alerted), and the refusal goes on up."""
        try:
            yield
        except StoreUnavailableError:
            self._set_state(state, detail)
            raise

    async def _uncertain(self, job: PrintableJob, state: PrinterState, detail: str) -> None:
        """The printer took the job, then reported a fault: part of it may be on paper. It prints again as COPY once
        the fault is cleared; that copy, not this attempt, is what central hears about."""
        with self._state_known(state, detail):
            recorded = await self._jobs.mark_uncertain(job.id, detail)
        if recorded:
            log.warning(
                "job_uncertain", device_id=self.name, state=state.value, detail=detail, action="reprint as COPY"
            )

    async def _failed(
        self,
        job: PrintableJob,
        error: str,
        *,
        partial: bool,
        expected: JobState = JobState.PRINTING,
        pulse_lost: bool = False,
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
            pulse_lost=pulse_lost,
        )
        if recorded is None:
            log.info("job_failure_not_recorded", device_id=self.name, reason="a person changed the job meanwhile")
            return
        if recorded.state == JobState.DEAD:
            log.error("job_dead", device_id=self.name, attempts=recorded.attempts, error=error)
        elif recorded.state == JobState.DISCARDED:
            self._ages.forget(job.id)
            log.info("job_discarded", device_id=self.name, reason="its order was cancelled", error=error)
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
        if self._stuck_since is None:
            self._stuck_since = self.paused_since
        try:
            await self._probe_until_ready(state, detail)
        finally:
            self.paused_since = None

    async def _probe_until_ready(self, state: PrinterState, detail: str) -> None:
        delay = 0.25
        while not self._stopping:
            # New orders do not wake it: each would be one more status read of a printer known to be blocked (a
            # connection attempt, when it is off), and the probe comes within its cap anyway.
            await wait_set(self._stop_asked, delay)
            if self._stopping:
                return
            current = await self.driver.status()
            await self._record_contact()  # while the printer waits for a roll, which may take a while
            if current not in BLOCKING_STATES:
                self._set_state(current)
                return
            # The cause as the last probe found it (a silent printer switched off is off now), else the pause's own.
            self._set_state(current, self.driver.stopped_why or (detail if current == state else ""))
            cap = self._spool.offline_probe_max_s if current == PrinterState.OFFLINE else _PAUSED_PROBE_S
            delay = min(delay * 2, cap)


def _strikes_nothing(job: PrintableJob) -> bool:
    """Whether a STORNO finds nothing of its order on its station's paper (the revisions its PRINTABLE row names)."""
    if job.base_payload is None or job.station is None:
        return False  # it fails at its render, seen
    try:
        revisions = [
            parse_order(json.loads(p), stored=True)
            for p in [job.base_payload, *json.loads(job.struck_payloads or "[]")]
        ]
    except (ValueError, InvalidOrderError):  # a revision this version cannot read: it fails at its render, seen
        return False
    return not struck_lines(revisions, job.station)
