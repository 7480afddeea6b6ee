"""Recovery after an outage in three persisted phases: validation → processing → completion; a crash resumes the run."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import random
from collections.abc import Coroutine
from typing import Any

import structlog

from edge.clock import CLOCK_OFF_S, SYSTEM_CLOCK, Clock, RemoteClock
from edge.config import CentralSettings
from edge.errors import (
    CentralApiError,
    EdgeError,
    InvalidOrderError,
    NotFoundError,
    StoreError,
    StoreUnavailableError,
    WrongStateError,
)
from edge.events import (
    CentralAnswersAgain,
    CentralLinkChanged,
    EventBus,
    OrderConflicted,
    OrdersRecovered,
    RecoveryOrderInvalid,
    RecoveryStarted,
    StorageRecovered,
)
from edge.orders.intake import OrderIntake
from edge.orders.model import (
    NOT_CONTENT,
    Order,
    as_sent,
    has_lone_surrogate,
    late_after_s,
    parse_order,
    same_cancel,
    storable_text,
)
from edge.states import InsertOutcome, ItemClass, OrderSource, OrderStatus, RunState, RunTrigger
from edge.store.db import Database
from edge.store.orders import InsertResult, NewOrder, OrderStore
from edge.store.recovery import RecoveryStore
from edge.store.revisions import KnownOrder
from edge.store.rows import RecoveryItem
from edge.sync.client import (
    CentralClient,
    CentralGarbledError,
    CentralLaterError,
    CentralRejectedError,
    CentralSlowAnswerError,
    CentralTimeoutError,
)
from edge.sync.outbox import OutboxSender

log = structlog.get_logger()


# Prepared orders kept from validation for processing (a few KB each): beyond this, processing prepares them again.
_PREPARED_MAX = 20_000
# The smallest page a slow line makes a run ask for (a smaller central.page_size stays as it is): ten orders are about
# 11 KB, which even a 64 kbit/s line carries in well under the 13 s a call may take.
_PAGE_FLOOR = 10
# Changes a run may page through without one order (empty pages with has_more, superseded versions left out) before
# it takes the listing for one that never ends: a backend whose cursor moves while its filter drops everything paged
# four times a second for ever. 100 pages of the contract's largest; a busy store's day of superseded versions is less.
_EMPTY_CHANGES_MAX = 100_000
# A cursor the backend no longer honours: 400 as the contract says, or 410 Gone, as sync APIs answer a sync token they
# expired (Google Calendar, Microsoft Graph's delta links): before, a 410 failed every run for good.
_CURSOR_REFUSED = frozenset({400, 410})
_RETRY_CAP_S = 900.0  # a failed run's next try, at most this far off when there is no schedule


class RecoveryIncompleteError(EdgeError):
    """Completion found an order from validation that is still not stored: the cursor must not move."""


class CursorStuckError(CentralApiError):
    """The backend's next_cursor repeats one already sent while it says there is more: paging would never end."""


class _CancelRequested(Exception):
    """Raised at the run's next safe point (between pages and batches, never inside a transaction)."""


class Recovery:
    """Runs one recovery at a time; a trigger while one is active joins it, or a fresh run follows it when it will not
    list again (see trigger). See docs/central-api.md for the rules."""

    def __init__(
        self,
        *,
        db: Database,
        client: CentralClient,
        intake: OrderIntake,
        orders: OrderStore,
        outbox: OutboxSender,
        bus: EventBus,
        settings: CentralSettings,
        history_age_s: float = 0.0,
        clock: Clock = SYSTEM_CLOCK,
        central_time: RemoteClock | None = None,
        first_start_mono: float | None = None,
    ) -> None:
        """``first_start_mono``: when this run of the agent was a new database's first start, on the monotonic
        clock (None: it was not)."""
        self._runs = RecoveryStore(db, bus=bus)
        self._clock = clock  # wall time for the run's records, monotonic for its duration
        self._client = client
        self._intake = intake
        self._orders = orders
        self._outbox = outbox
        self._bus = bus
        self._settings = settings
        # An order this database does not know, created this long before it may have printed what it does not know
        # (a new box, a restore), is history, not work: the longest a ticket may wait (0: none is).
        self._history_age_s = history_age_s
        self._central_time = central_time
        self._first_start_mono = first_start_mono
        self._task: asyncio.Task[None] | None = None
        self._cancel = asyncio.Event()
        self._active_id: int | None = None
        self._trigger_lock = asyncio.Lock()
        self._background: set[asyncio.Task[Any]] = set()
        self._link_was_down = False
        self._retry_in = 0.0  # after a run failed on a busy or slow central: the wait before the next (0: none failed)
        self._page_size = settings.page_size  # the run's: smaller than configured once a page was too slow to arrive
        # Missing orders as validation prepared them, so processing in the same process does not parse and route
        # them again; after a restart (or beyond the cap) processing prepares them from the stored JSON.
        self._prepared: dict[str, NewOrder] = {}
        # A run resumed after a restart whose validation happened before it (the saved payloads may be stale: central
        # may have cancelled or changed an order since), until central answers its validation again; the run central
        # has answered the last page of (what central takes from then on, it does not list); and for a run of
        # either kind, the first trigger that came meanwhile, which a fresh run answers once that run has ended (see
        # trigger).
        self._stale_id: int | None = None
        self._listed_id: int | None = None
        self._follows: dict[int, RunTrigger] = {}
        # The active run's start delay while it sits it out (a retry's backoff, the start jitter): a trigger may bring
        # the start forward (see trigger).
        self._start_delay: asyncio.Timeout | None = None
        # A run the full card refused (its start, or its orders), asked for again once the card has room: central
        # took those orders meanwhile, and the schedule would bring them a quarter of an hour later (diskfault2).
        self._owed: RunTrigger | None = None
        self._unsubscribe = [
            bus.subscribe(self._on_link, CentralLinkChanged),
            bus.subscribe(self._on_answers_again, CentralAnswersAgain),
            bus.subscribe(self._on_room, StorageRecovered),
        ]

    # --- life cycle -------------------------------------------------------------------------

    async def resume(self) -> int | None:
        """At start-up: carry on with a run a crash or a stop interrupted, from its persisted phase."""
        runs = await self._runs.active_runs()
        for stale in runs[:-1]:  # only one run is ever active; older ones can only be left over from a bug
            await self._runs.supersede(stale.id, runs[-1].id, self._clock.wall())
        if not runs:
            return None
        run = runs[-1]
        log.info("recovery_resuming", run_id=run.id, phase=run.state)
        async with self._trigger_lock:
            if run.state in (RunState.PROCESSING, RunState.COMPLETION):  # before a trigger can come: see _execute
                self._stale_id = run.id
            self._launch(run.id, run.trigger, run.state, delay=0.0)
        return run.id

    async def stop(self) -> None:
        """Stop without marking anything: an interrupted run resumes at the next start."""
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        tasks = [*self._background, *([self._task] if self._task else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _on_link(self, event: CentralLinkChanged) -> None:
        if not event.up:
            self._link_was_down = True
            return
        trigger = RunTrigger.LINK_BACK if self._link_was_down else RunTrigger.STARTUP
        self._link_was_down = False
        if self._first_start_mono is not None:  # central's clock is known now, long before a run may list a page
            self._spawn(self._date_mark())
        # Fleet manners: a thousand stores whose line returns together must not call at the same instant. Central's
        # first answer at start-up tells of nothing a run started since (it has reached central) did not list.
        delay = random.uniform(0, self._settings.start_jitter_s)
        self._spawn(self.trigger(trigger, delay=delay, news=trigger != RunTrigger.STARTUP))

    def _on_answers_again(self, event: CentralAnswersAgain) -> None:
        """Central answers again after a spell of taking requests and answering none: what it took meanwhile comes
        as after the line's return."""
        self._spawn(self.trigger(RunTrigger.LINK_BACK, delay=random.uniform(0, self._settings.start_jitter_s)))

    def _on_room(self, event: StorageRecovered) -> None:
        if (owed := self._owed) is not None:
            self._owed = None
            log.info("recovery_after_storage", trigger=owed)
            self._spawn(self.trigger(owed))

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._spawned_done)

    def _spawned_done(self, task: asyncio.Task[Any]) -> None:
        """A trigger in the background that failed is said (one the card refused is owed, see trigger): before, it was
        asyncio's "Task exception was never retrieved"."""
        self._background.discard(task)
        if (
            not task.cancelled()
            and (err := task.exception()) is not None
            and not isinstance(err, StoreUnavailableError)
        ):
            log.error("recovery_trigger_failed", error=str(err) or type(err).__name__)

    @property
    def active_run(self) -> int | None:
        """The id of the run in progress (waiting for its start delay included), else None."""
        return self._active_id if self._task is not None and not self._task.done() else None

    def _ended(self) -> None:
        """The run's end is committed (and announced): a trigger from now on starts a new run instead of joining one
        that only has its log line left to write."""
        self._active_id = None

    # --- commands ---------------------------------------------------------------------------

    async def trigger(self, trigger: RunTrigger, *, delay: float = 0.0, news: bool = True) -> tuple[int, bool]:
        """Start a run, or join the active one: returns (run id, joined). A run that will not list what central has
        now does not satisfy a trigger that is ``news`` (of orders a listing before it may have missed: a line or
        broker session that came back or began, a person, the schedule): one central has answered the last page of
        (it is storing or completing), or one resumed after a restart that works from what it validated before it
        (central did not answer its validation again). A fresh run follows it, so that what central took or changed
        meanwhile is applied at once. A run still waiting for its start (a retry's backoff) starts after this
        trigger's delay if that is sooner."""
        async with self._trigger_lock:
            if (active := self.active_run) is not None:
                past_listing = active == self._listed_id and news
                if active == self._stale_id or past_listing:
                    self._follows.setdefault(active, trigger)
                    reason = "resumed, stale" if active == self._stale_id else "past its listing"
                    log.info("recovery_follows", run_id=active, trigger=trigger, reason=reason)
                else:
                    log.info("recovery_joined", run_id=active, trigger=trigger)
                    self._start_sooner(active, trigger, delay)
                return active, True
            try:
                run_id = await self._runs.create_run(trigger, self._clock.wall())
            except StoreUnavailableError as err:
                self._owed = trigger
                log.warning("recovery_waits_for_storage", trigger=trigger, error=str(err))
                raise
            if delay > 0:
                log.info("recovery_delayed", run_id=run_id, trigger=trigger, delay_s=round(delay, 2))
            self._launch(run_id, trigger, RunState.WAITING, delay=delay)
            return run_id, False

    async def cancel(self, run_id: int) -> bool:
        """Cancel the active run at its next page or batch; False when ``run_id`` is not the active run, or ended
        otherwise before the cancel took."""
        task = self._task
        if task is None or self.active_run != run_id:
            await self.run(run_id)  # NotFoundError for an unknown id
            return False
        self._cancel.set()
        await asyncio.gather(task, return_exceptions=True)
        # Its end may have been committed already, its fsync still running (a slow disk): then it ended as it was
        # going to, and this cancel changed nothing.
        ended = await self._runs.run(run_id)
        return ended is not None and ended.state == RunState.CANCELLED

    # --- queries ----------------------------------------------------------------------------

    async def cursor(self) -> str:
        return await self._runs.cursor()

    async def run(self, run_id: int) -> dict[str, Any]:
        """One run as the API answers it, with its conflicts and refused orders."""
        run = await self._runs.run(run_id)
        if run is None:
            raise NotFoundError(f"recovery run {run_id} does not exist")
        return run.public() | {
            key: [
                {
                    "order_id": i.order_id,
                    "number": i.number,
                    "reason": i.detail,
                    "payload": json.loads(i.payload) if i.payload else None,  # the backend's, as sent
                }
                for i in await self._runs.items(run_id, cls)
            ]
            for key, cls in (("conflicts", ItemClass.CONFLICT), ("invalid", ItemClass.INVALID))
        }

    async def runs(self, limit: int = 20) -> list[dict[str, Any]]:
        """The last runs, newest first, as the API answers them."""
        return [r.public() for r in await self._runs.runs(limit)]

    async def last_run_id(self) -> int | None:
        run = await self._runs.last_run()
        return run.id if run is not None else None

    # --- the run ----------------------------------------------------------------------------

    def _start_sooner(self, run_id: int, trigger: RunTrigger, delay: float) -> None:
        """The active run, if it is still sitting out its start delay, starts after ``delay`` from now when that is
        sooner: the line coming back, or a person asking, does not wait out the backoff of a run that failed on a busy
        central (minutes at the shipped retry_max_s, doubling)."""
        waiting = self._start_delay
        if waiting is None or waiting.expired():
            return
        starts = asyncio.get_running_loop().time() + delay
        if (due := waiting.when()) is None or starts < due:
            waiting.reschedule(starts)
            log.info("recovery_brought_forward", run_id=run_id, trigger=trigger, delay_s=round(delay, 2))

    def _launch(self, run_id: int, trigger: RunTrigger, state: RunState, *, delay: float) -> None:
        self._active_id = run_id
        self._cancel = asyncio.Event()
        self._task = asyncio.create_task(self._execute(run_id, trigger, state, delay), name=f"recovery-{run_id}")

    async def _execute(self, run_id: int, trigger: RunTrigger, state: RunState, delay: float) -> None:
        phase = state
        # Resumed after its validation (resume): the payloads it saved were central's before the restart, and central
        # may have cancelled or changed an order since. So it validates again: the same pages since the same cursor
        # (about as long again as the validation before the crash, seconds for 10,000 orders), what is stored
        # classifies as present, what central changed comes as it is now, and nothing prints that is cancelled
        # already. Only when central does not answer does it store what it saved (the orders are not held back by
        # central's outage), and a trigger meanwhile (the link coming up) starts a fresh run after it (trigger).
        late = self._stale_id == run_id
        ended = False
        retry: RunTrigger | None = None
        structlog.contextvars.bind_contextvars(recovery_run=run_id)
        try:
            if delay > 0:
                await self._sit_out(delay)
            self._checkpoint()
            started = self._clock.mono()  # durations on the monotonic clock: NTP may step the wall clock meanwhile
            if state == RunState.WAITING:
                await self._runs.mark_started(run_id, self._clock.wall())
            log.info("recovery_started", trigger=trigger, resumed=state != RunState.WAITING)
            self._bus.publish(RecoveryStarted(run_id=run_id, trigger=trigger))
            if phase in (RunState.WAITING, RunState.VALIDATION) or late:
                phase = RunState.VALIDATION
                try:
                    await self._validate(run_id)
                except CentralApiError as err:
                    if self._stale_id != run_id:  # central answered a page: the saved payloads are gone
                        raise
                    log.warning(
                        "recovery_revalidation_unanswered",
                        error=str(err),
                        action="storing the orders validated before the restart; a fresh run follows the next trigger",
                    )
                phase = RunState.PROCESSING if self._stale_id == run_id else phase
            if phase in (RunState.VALIDATION, RunState.PROCESSING):
                phase = RunState.PROCESSING
                await self._process(run_id, trigger)
            self._checkpoint()
            phase = RunState.COMPLETION
            await self._complete(run_id, started)
            ended = True
        except asyncio.CancelledError:
            log.info("recovery_interrupted", phase=phase, note="resumes at next start")
            raise
        except _CancelRequested:
            await self._runs.cancel(run_id, phase, self._clock.wall())
            self._ended()
            ended = True
            log.warning("recovery_cancelled", phase=phase)
        except Exception as err:  # any failure ends the run; the cursor did not move, the next run sees it all again
            error = str(err) or type(err).__name__
            retried = isinstance(err, CentralLaterError | CentralTimeoutError | CentralGarbledError)
            if retried:
                # Central is there but busy or slow (a gateway shielding a fleet that came back together), or gave an
                # answer that was not its own (cut off, a portal's page): the next run comes after retry_max_s,
                # doubling while they fail, not at the schedule's quarter of an hour.
                cap = self._settings.schedule_interval_s or _RETRY_CAP_S
                self._retry_in = min(2 * self._retry_in, cap) if self._retry_in else self._settings.retry_max_s
                retry = trigger
            # RecoveryFailed, once committed; with the retry planned, which its alarm waits for
            await self._runs.fail(
                run_id, phase, error, self._clock.wall(), retry_in_s=self._retry_in if retried else None
            )
            self._ended()
            ended = True
            log.error("recovery_failed", phase=phase, error=error)
            if retried:
                log.info("recovery_retry_planned", in_s=round(self._retry_in, 1), trigger=trigger)
            elif isinstance(err, StoreUnavailableError):  # the card: once it has room, the run comes again
                self._owed = trigger
                log.info("recovery_retry_planned", when="the card has room again", trigger=trigger)
        finally:
            self._prepared.clear()
            structlog.contextvars.unbind_contextvars("recovery_run")
            follow = self._follows.pop(run_id, None)
            if self._stale_id == run_id:
                self._stale_id = None
            if ended and follow is not None:
                log.info("recovery_following", after_run=run_id, trigger=follow)
                self._spawn(self.trigger(follow))
            elif ended and retry is not None:
                self._spawn(self.trigger(retry, delay=self._retry_in))

    async def _sit_out(self, delay: float) -> None:
        """Wait ``delay`` for the run's start, less if a trigger brings it forward (_start_sooner); a cancel ends the
        wait."""
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay) as self._start_delay:
                    await self._cancel.wait()
        finally:
            self._start_delay = None

    async def _validate(self, run_id: int) -> None:
        """Page through the orders changed since the confirmed cursor, classify each; writes only the run's report (and
        history's seen-order records)."""
        await self._runs.enter_phase(run_id, RunState.VALIDATION, self._clock.wall())
        if self._stale_id != run_id:
            await self._runs.clear_items(run_id)  # a resumed validation starts over
        self._prepared.clear()
        cursor, pages = await self._runs.since_cursor(run_id), 0
        self._page_size = self._settings.page_size  # every run, a resumed one too, starts from the configured size
        printed_until: float | None = None
        sent = {cursor}  # every cursor this run asked with: one coming back with has_more would loop for ever
        empty, empty_changes = 0, 0  # pages in a row with has_more and no order, and the changes they stood for
        restarted = False  # listed again from the beginning after a refused cursor
        fetch = self._fetch(run_id, cursor)
        try:
            while True:
                try:
                    orders, next_cursor, more = await fetch
                except CentralRejectedError as err:
                    if err.status not in _CURSOR_REFUSED or not cursor or restarted:
                        raise
                    # The backend no longer knows our cursor (reset, restored; also one it handed out in this run,
                    # restored while we paged): list from its beginning instead of failing every run from now on.
                    # Safe: what was here (even if purged since) classifies as present and is not printed again, and
                    # what this run saw already keeps its newest version (save_page). Once a run: a backend that
                    # refuses its own cursors would have it list for ever.
                    log.warning(
                        "recovery_cursor_rejected", cursor=cursor, error=str(err), action="validating from the start"
                    )
                    cursor, sent, restarted = "", {""}, True
                    fetch = self._fetch(run_id, cursor)
                    continue
                if more:  # an empty page with has_more is normal (docs/central-api.md): only has_more ends the list
                    if next_cursor in sent:
                        raise CursorStuckError(
                            f"central API answered page {pages + 1} (since {cursor[:80]!r}) with more to follow"
                            f" (has_more, or a full page without it) and next_cursor {next_cursor[:80]!r}, a cursor"
                            " this run already sent: its cursor does not advance (a timestamp cursor?"
                            " docs/central-api.md forbids them)"
                        )
                    empty, empty_changes = (empty + 1, empty_changes + self._page_size) if not orders else (0, 0)
                    if empty_changes >= _EMPTY_CHANGES_MAX:
                        raise CursorStuckError(
                            f"central API answered {empty} pages in a row (since {cursor[:80]!r}) empty, with has_more"
                            f" and a new cursor each time: its listing does not end ({empty_changes} changes listed"
                            " without one order)"
                        )
                    sent.add(next_cursor)
                    fetch = self._fetch(run_id, next_cursor)  # the next page travels while this one is classified
                if not pages:  # central has answered: its clock is known
                    printed_until = await self._printed_until()
                    if self._stale_id == run_id:  # resumed after its validation, validated again after the restart:
                        # what it saved goes only now (a run central does not answer stores it: _execute), and a
                        # trigger may join it again (or follow it, after its last page: _page)
                        await self._runs.clear_items(run_id)
                        self._stale_id = None
                        self._follows.pop(run_id, None)
                await self._runs.save_page(
                    run_id, await self._classify(orders, page=pages, printed_until=printed_until), next_cursor
                )
                pages += 1
                self._checkpoint()
                if not more:
                    break
                cursor = next_cursor
        finally:
            fetch.cancel()  # a page still travelling; one a cancel ended has its exception retrieved here
            await asyncio.gather(fetch, return_exceptions=True)
        log.info("recovery_validated", pages=pages, page_size=self._page_size, counts=await self._runs.counts(run_id))

    async def _printed_until(self) -> float | None:
        """Until when another database may have printed (None: no order is history): orders this database does not
        know that were late by then are history, _is_history. Nothing is, while the mark is not dated (_date_mark)."""
        await self._date_mark()
        if self._first_start_mono is not None:  # an answer without a Date: not against a mark that may be wrong
            return None
        printed_until = await self._orders.may_have_printed_until()
        return printed_until if printed_until and self._history_age_s else None

    async def _date_mark(self) -> None:
        """A new database's first start, or a restore onto a new box, was marked on the box's clock, and central's
        orders are on its own. A box without a battery starts with the time it last saved, until NTP sets it (or
        never, NTP blocked by the shop's firewall): behind, a month of central's orders would print; ahead, the orders
        before the start, and those recovery brings back from after it, would never print. So that moment is
        restated on central's clock (its answers' Date, carried on the monotonic clock) as soon as central has
        answered (the link's first answer, or a run's first page), when the two differ by more than CLOCK_OFF_S: a
        push is judged by it too (orders._insert_fresh), and central may answer long before a run lists a page."""
        mono = self._first_start_mono
        central_now = self._central_time.wall() if self._central_time is not None else None
        if mono is None or central_now is None:
            return
        self._first_start_mono = None  # before any await: the link's answer and a run's first page may both come
        try:
            printed_until = await self._orders.may_have_printed_until()
            if printed_until is None:
                return
            on_central = min(central_now, float((central_now - (self._clock.mono() - mono)) // 1))
            off = abs(on_central - printed_until) > CLOCK_OFF_S
            await self._orders.settle_first_start(printed_until, on_central if off else None)
        except BaseException:
            self._first_start_mono = mono  # not dated: a later answer tries again
            raise
        if off:
            log.warning("first_start_restated", box_clock=printed_until, central_clock=on_central)

    def _is_history(self, order: Order, printed_until: float) -> bool:
        """Late by then, as the stale hold reckons it, by the longest a ticket may wait (a pre-order due later is
        still the kitchen's work: it prints as COPY)."""
        made, due = order.created_at.timestamp(), order.fulfilment.due_at
        return printed_until - made > late_after_s(made, due.timestamp() if due else None, self._history_age_s)

    def _fetch(self, run_id: int, cursor: str) -> asyncio.Future[tuple[list[Any], str, bool]]:
        return asyncio.ensure_future(self._page(run_id, cursor))

    async def _page(self, run_id: int, cursor: str) -> tuple[list[Any], str, bool]:
        """One page since ``cursor``. A page of 1000 is ~1.1 MB: on a slow line (512 kbit/s, central not gzipping)
        ~17 s of the 13 s a call may take, and asked again at the same size it never arrives. So an answer that does
        not arrive whole in time is asked again at once (the timeout was the wait) for half as many orders, down to
        _PAGE_FLOOR, where the client's retries take over. The rest of the run keeps the smaller size (it does not
        grow back: the line too slow at its start is most likely the same at its end, and each try too big costs a
        whole timeout); the next run starts from page_size again. `limit` is only a maximum: the cursors are the
        same."""
        floor = min(_PAGE_FLOOR, self._settings.page_size)
        while True:
            at_floor = self._page_size <= floor
            try:
                page = await self._unless_cancelled(
                    self._client.orders_since(cursor, self._page_size, retry_slow=at_floor)
                )
            except CentralSlowAnswerError as err:
                if at_floor:
                    raise
                self._page_size = max(floor, self._page_size // 2)
                log.warning("recovery_page_smaller", page_size=self._page_size, error=str(err))
                continue
            if not page[2]:  # the last page: what central takes from now on, this run does not list (trigger); noted
                # as it arrives, not when the run gets to it (classifying the page before), so no trigger between joins
                self._listed_id = run_id
            return page

    async def _classify(self, orders: list[Any], *, page: int, printed_until: float | None) -> list[RecoveryItem]:
        ids = [
            o["id"]
            for o in orders
            if isinstance(o, dict) and isinstance(o.get("id"), str) and not has_lone_surrogate(o["id"])
        ]
        known = await self._orders.known(ids)
        items, conflicting, history = [], [], []
        for n, payload in enumerate(orders):
            raw_id = payload.get("id") if isinstance(payload, dict) else None
            try:
                new = self._intake.router.prepare(payload, OrderSource.RECOVERY)
            except InvalidOrderError as err:
                order_id = storable_text(raw_id) if isinstance(raw_id, str) else f"(page {page} item {n})"
                log.error("recovery_invalid_order", order_id=order_id, field=err.field, reason=err.reason)
                raw = as_sent(payload)
                items.append(RecoveryItem(order_id, ItemClass.INVALID, raw, detail=f"{err.field}: {err.reason}"))
                continue
            order = new.order
            stored = known.get(order.id)
            if stored is None and printed_until is not None and self._is_history(order, printed_until):
                cls = ItemClass.HISTORY
                history.append(new)
            elif (
                stored is None
                or (stored.history and order.revision > stored.revision)
                or (stored.stored and order.revision > stored.revision and not _cancelled_again(new, stored))
            ):
                # Not here, or a higher revision: processing stores it as an update, like a push would (a history
                # order's, changed since it was recorded, as the new order it is).
                cls = ItemClass.MISSING
                earlier = self._prepared.get(order.id)  # listed before in this run: the newer version stays
                if (earlier is None and len(self._prepared) < _PREPARED_MAX) or (
                    earlier is not None and earlier.order.revision <= order.revision
                ):
                    self._prepared[order.id] = new
            elif order.revision != stored.revision or stored.same_content(new) or not stored.stored:
                # The same, or older than ours (stale), or purged since, or a higher cancelled revision of an order
                # cancelled here (docs/http-api.md, "Revisions": the stored revision stands): nothing to do.
                cls = ItemClass.PRESENT
            else:
                cls = ItemClass.CONFLICT  # the same revision with other content
                conflicting.append(order.id)
            items.append(
                RecoveryItem(
                    order.id,
                    cls,
                    None if cls in (ItemClass.PRESENT, ItemClass.HISTORY) else new.payload,
                    priority=order.priority,
                    due_ts=order.fulfilment.due_at.timestamp() if order.fulfilment.due_at else None,
                    created_ts=order.created_at.timestamp(),
                    revision=order.revision,
                )
            )
        await self._orders.remember_seen(history)  # a run resumed before its page was saved finds them present
        if conflicting:
            payloads = await self._orders.payloads(conflicting)
            items = [
                (
                    dataclasses.replace(i, cls=ItemClass.PRESENT, payload=None)
                    if _same_cancel(payloads.get(i.order_id), i.payload)
                    else dataclasses.replace(i, detail=_difference(payloads.get(i.order_id), i.payload))
                )
                if i.cls == ItemClass.CONFLICT
                else i
                for i in items
            ]
        return items

    async def _process(self, run_id: int, trigger: RunTrigger) -> None:
        """Store the missing orders batch by batch through the intake path; re-running stores nothing twice."""
        await self._runs.enter_phase(run_id, RunState.PROCESSING, self._clock.wall())
        # The conflict rule: the order already here wins and is never reprinted; the backend's version is only reported.
        # Conflicts and refused orders are never only a log line: each is reported (alert, counter, the run's lists).
        for cls in (ItemClass.CONFLICT, ItemClass.INVALID):
            for item in await self._runs.items(run_id, cls):
                self._report(run_id, cls, item.order_id, item.number, item.detail or "")
        router, batches = self._intake.router, 0
        taken: set[str] = set()  # every order this process has handed to the store in this run
        while items := await self._runs.next_missing(run_id, self._settings.batch_size):
            self._checkpoint()
            if again := sorted(i.order_id for i in items if i.order_id in taken):
                # Every outcome below settles its order (stored, present, conflict, invalid): one selected again is
                # a bug, and selecting it for ever would spin the run (a core busy, the cursor never moving).
                raise RecoveryIncompleteError(
                    f"processing selected {len(again)} orders again after storing them ({', '.join(again[:5])}):"
                    " not settled"
                )
            taken.update(i.order_id for i in items)
            batch: list[NewOrder] = []
            invalid: list[tuple[str, str | None]] = []
            for item in items:
                try:
                    prepared = self._prepared.pop(item.order_id, None)
                    assert item.payload is not None  # validation keeps the JSON of every missing order
                    batch.append(prepared or router.prepare(json.loads(item.payload), OrderSource.RECOVERY))
                except InvalidOrderError as err:  # routing changed since validation (e.g. a printer removed)
                    reason = f"{err.field}: {err.reason}"
                    invalid.append((item.order_id, reason))
                    self._report(run_id, ItemClass.INVALID, item.order_id, item.number, reason)
            if invalid:
                await self._runs.reclassify(run_id, ItemClass.INVALID, invalid)
            if batch:
                results = await self._orders.insert_many(batch)
                conflicts: list[tuple[str, str | None]] = []
                present: list[tuple[str, str | None]] = []
                new_here: list[Order] = []
                for result, new in zip(results, batch, strict=True):
                    if isinstance(result, StoreError):
                        raise result  # the ones before it are stored; the next run takes the rest
                    if isinstance(result, Exception):
                        # It alone could not be stored (a change to an order this version cannot read as stored):
                        # the local order is kept, as for any conflict; the others in the batch are stored.
                        if not isinstance(result, WrongStateError):
                            log.error("recovery_store_failed", order_id=new.order.id, error=str(result))
                        reason = str(result)
                        conflicts.append((new.order.id, reason))
                        self._report(run_id, ItemClass.CONFLICT, new.order.id, new.order.number, reason)
                        continue
                    stored_now = result.outcome in _STORING and result.revision >= new.order.revision
                    if stored_now:
                        self._intake.publish(result, new)  # OrderStored (OrderRevised) wakes the spools
                        if result.outcome == InsertOutcome.STORED:
                            new_here.append(new.order)
                    elif result.outcome not in (InsertOutcome.CONFLICT, InsertOutcome.CLOSED):
                        # Nothing to store after all (a higher cancelled revision of an order cancelled here, one
                        # stored or purged meanwhile): present, so processing does not select it again.
                        present.append((result.order_id, _not_stored_reason(result, new)))
                    else:
                        reason = (
                            "stored meanwhile (pushed) with other content"
                            if result.outcome == InsertOutcome.CONFLICT
                            else f"cancelled here; central's revision {new.order.revision} would reopen it"
                        )
                        conflicts.append((result.order_id, reason))
                        self._report(run_id, ItemClass.CONFLICT, result.order_id, new.order.number, reason)
                if conflicts:
                    await self._runs.reclassify(run_id, ItemClass.CONFLICT, conflicts)
                if present:
                    await self._runs.reclassify(run_id, ItemClass.PRESENT, present)
                if new_here:
                    self._recovered(run_id, trigger, new_here)
            batches += 1
            # Reporting is the outbox's own loop (woken by OrderStored): a slow or refusing events endpoint must
            # never hold back storing, and so printing, the next batch.
        log.info("recovery_processed", batches=batches)

    def _recovered(self, run_id: int, trigger: RunTrigger, orders: list[Order]) -> None:
        """Orders new to the box, stored by this run, with their age on central's clock (which dated them): a live
        door (MQTT) that should have brought them can tell it did not."""
        now = (self._central_time.wall() if self._central_time is not None else None) or self._clock.wall()
        ages = tuple((o.id, now - o.created_at.timestamp()) for o in orders)
        self._bus.publish(OrdersRecovered(run_id=run_id, trigger=trigger, ages_s=ages))

    def _report(self, run_id: int, cls: ItemClass, order_id: str, number: str | None, reason: str) -> None:
        if cls == ItemClass.CONFLICT:
            log.warning("recovery_conflict", order_id=order_id, reason=reason, rule="local order kept, not reprinted")
            self._bus.publish(
                OrderConflicted(
                    order_id=order_id, source=OrderSource.RECOVERY, number=number or "", reason=reason, run_id=run_id
                )
            )
        else:
            self._bus.publish(RecoveryOrderInvalid(run_id=run_id, order_id=order_id, number=number, reason=reason))

    async def _complete(self, run_id: int, started: float) -> None:
        """Verify every order is here, then (only then) advance the cursor and write the summary.

        Event delivery is not a condition: the `received` rows are in the outbox, committed with their orders, and
        go out when the events endpoint takes them; the cursor is about orders, not about reports."""
        await self._runs.enter_phase(run_id, RunState.COMPLETION, self._clock.wall())
        self._retry_in = 0.0
        if not_stored := await self._runs.not_stored(run_id):
            raise RecoveryIncompleteError(f"{not_stored} orders seen in validation are not stored locally")
        counts = await self._runs.counts(run_id)
        duration = self._clock.mono() - started  # of this process's part of the run, if it was resumed
        await self._runs.complete(run_id, counts, self._clock.wall(), duration_s=duration)  # RecoveryCompleted
        self._ended()
        log.info(
            "recovery_completed",
            counts=counts,
            duration_s=round(duration, 3),
            outbox_pending=await self._outbox.pending(),
        )

    async def _unless_cancelled(
        self, call: Coroutine[Any, Any, tuple[list[Any], str, bool]]
    ) -> tuple[list[Any], str, bool]:
        """``call``, unless the run is cancelled first: a page waiting out a busy central's retries (Retry-After,
        backoff: minutes at the defaults) ends at the cancel, and central is not asked again."""
        fetch = asyncio.ensure_future(call)
        cancelled = asyncio.ensure_future(self._cancel.wait())
        try:
            await asyncio.wait((fetch, cancelled), return_when=asyncio.FIRST_COMPLETED)
        finally:  # also when this page itself is cancelled (a stop): the call ends with it, its outcome retrieved
            cancelled.cancel()
            if not fetch.done():
                fetch.cancel()
                await asyncio.gather(fetch, return_exceptions=True)
        if fetch.cancelled():
            raise _CancelRequested()
        return fetch.result()

    def _checkpoint(self) -> None:
        if self._cancel.is_set():
            raise _CancelRequested()


_STORING = (InsertOutcome.STORED, InsertOutcome.UPDATED, InsertOutcome.CANCELLED)


def _cancelled_again(new: NewOrder, stored: KnownOrder) -> bool:
    """A higher cancelled revision of an order cancelled here: nothing to store (the stored revision stands)."""
    return stored.status == OrderStatus.CANCELLED and new.order.status == OrderStatus.CANCELLED


def _not_stored_reason(result: InsertResult, new: NewOrder) -> str:
    if result.outcome == InsertOutcome.CANCELLED:
        return f"cancelled here at revision {result.revision}; central's cancelled revision {new.order.revision} stands"
    return f"{result.outcome} here at revision {result.revision}: nothing to store"


def _same_cancel(stored_payload: str | None, sent_payload: str | None) -> bool:
    """Whether both are the order cancelled at this revision, but for the reason's words: the reason is not the
    order's content (the cancel route's "Gast gegangen", or none, and central's "Customer cancelled" are one cancel;
    the STORNO keeps the words the box got)."""
    if stored_payload is None or sent_payload is None:
        return False
    try:
        sent = parse_order(json.loads(sent_payload))
    except InvalidOrderError:
        return False
    return same_cancel(stored_payload, sent)


def _difference(stored_payload: str | None, sent_payload: str | None) -> str:
    """What a person needs to know about a conflict: which top-level fields differ from the stored order (a cancel's
    reason is not content)."""
    if stored_payload is None or sent_payload is None:
        return "other content than an order stored here before and purged since (retention)"
    stored, sent = json.loads(stored_payload), json.loads(sent_payload)
    fields = sorted(k for k in stored.keys() | sent.keys() if k != NOT_CONTENT and stored.get(k) != sent.get(k))
    # The stored one may have printed nothing (cancelled, or still waiting): what is sure is that this one never prints.
    return f"differs from the order stored here in: {', '.join(fields)}; the stored one stands, this one is not printed"
