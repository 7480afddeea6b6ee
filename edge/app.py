"""Composition root: builds every part, starts them in order, stops them in reverse."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import inspect
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import TYPE_CHECKING, Any

import structlog
from aiohttp import web

from edge import __version__
from edge.api.deps import ApiDeps
from edge.api.routes import make_api
from edge.api.server import ApiServer
from edge.clock import SYSTEM_CLOCK, Clock, RemoteClock
from edge.config import Settings
from edge.durable import runtime_note
from edge.errors import StoreError, StoreNotWritableError, StoreUnavailableError
from edge.events import DatabaseMoved, EventBus, OrderRevised, OrderStored, StorageProblem, StorageRecovered
from edge.hardware import hardware_ids
from edge.heap import resume_collector
from edge.metrics import Metrics
from edge.ops.housekeeping import Housekeeping
from edge.ops.lock import DataDirLock
from edge.ops.owner import unwritable_database
from edge.orders.intake import OrderIntake, Router
from edge.printing.ages import JobAges
from edge.printing.check import PrintingCheck
from edge.printing.drivers import make_driver
from edge.printing.failover import Failover
from edge.printing.jobs import JobRenderer
from edge.printing.reroute import reroute_stranded
from edge.printing.spooler import Spooler
from edge.printing.status import PrinterState
from edge.scanners import Scanner, ScanRecorder
from edge.states import NOT_DONE_JOB_STATES, WAITING_JOB_STATES, JobState
from edge.store.db import STORE_RETRY_S, Database
from edge.store.files import remove_restore_leftover
from edge.store.holders import wait_for_other_writers
from edge.store.identity import first_records
from edge.store.jobs import JobStore
from edge.store.orders import OrderStore
from edge.store.retention import OutboxReaders
from edge.store.scans import BusinessDay, ScanStore
from edge.systemd import Notifier

if TYPE_CHECKING:
    from edge.alerts.alerter import Alerter
    from edge.sync import SyncService
    from edge.sync.mqtt import MqttLink

log = structlog.get_logger()

_SWITCH_INTERVAL_S = 0.001
_COLLECTOR_PAUSE_S = 1.0  # the longest the garbage collector stays paused in a start (edge/heap.py)
# After the stop, threads still busy get this long: a render or a WAL sync ends in milliseconds, a name lookup that the
# shop router's DNS forwarder does not answer (no internet) holds its thread 10-30 s.
EXIT_WAIT_S = 1.0


class Agent:
    """The whole agent in one process. ``start`` returns once the database is open and the API listens."""

    def __init__(self, settings: Settings, *, clock: Clock = SYSTEM_CLOCK) -> None:
        self.settings = settings
        self.clock = clock  # every part that waits or measures time gets this one (tests step it)
        self.stopping = False  # set by the first stop(); a second call does nothing
        self.bus = EventBus()
        # Operator templates and each printer's options are tried now: a broken one stops the start, not the first
        # order. A restart with the very same inputs (fingerprinted in the data dir's cache) tries them after READY.
        self.printing = PrintingCheck(settings, cache_dir=settings.agent.data_dir / "cache")
        self.job_renderer = JobRenderer(settings, self.printing.renderer, files=self.printing.files)
        self.render_job = self.job_renderer.render
        self.failover: Failover | None = None
        self.db: Database | None = None
        self.spoolers: dict[str, Spooler] = {}
        self._spools_held: asyncio.Task[None] | None = None  # started once the start's moves are written (a full card)
        self.scanners: dict[str, Scanner] = {}
        self.scan_recorder: ScanRecorder | None = None
        self.deps: ApiDeps | None = None
        self._server: ApiServer | None = None
        self._runner: web.AppRunner | None = None  # the server's, for tests that list the routes
        self.port: int | None = None
        self.started_mono = self.clock.mono()  # the uptime, on the clock a wall-clock step does not move
        self.notifier = Notifier()
        self.metrics = Metrics(self.bus, list(settings.printers))
        self._stack: contextlib.AsyncExitStack | None = None  # the started parts' stops, run by stop()
        self._forced = asyncio.Event()  # set by a second signal: no more waiting for jobs in flight
        self._housekeeping: Housekeeping | None = None
        self.alerter: Alerter | None = None
        self.sync: SyncService | None = None
        self.mqtt: MqttLink | None = None

    def wake_printer(self, name: str) -> None:
        if spooler := self.spoolers.get(name):
            spooler.wake()

    def _on_order_stored(self, event: OrderStored | OrderRevised) -> None:
        for name in event.printers:
            self.wake_printer(name)

    def _on_write_health(self, problem: str | None) -> None:
        if problem is None:
            log.info("storage_recovered")
            self.bus.publish(StorageRecovered())
            for spooler in self.spoolers.values():  # a job whose outcome the store refused prints again now
                spooler.wake()
        else:
            log.error("storage_problem", detail=problem)
            self.bus.publish(StorageProblem(detail=problem))

    async def status_line(self) -> str:
        """One line for systemd's STATUS=, e.g. "2 of 3 printers online, 0 queued"."""
        assert self.deps is not None
        counts = await self.deps.jobs.counts(NOT_DONE_JOB_STATES)
        states = [s.state for s in self.spoolers.values()]
        online = sum(1 for state in states if state in (PrinterState.ONLINE, PrinterState.PAPER_NEAR_END))
        unknown = states.count(PrinterState.UNKNOWN)
        queued = sum(n for (_, state), n in counts.items() if state in WAITING_JOB_STATES)
        dead = sum(n for (_, state), n in counts.items() if state == JobState.DEAD)
        unchecked = f" ({unknown} not checked yet)" if unknown else ""
        storage = f", storage: {self.db.write_problem}" if self.db is not None and self.db.write_problem else ""
        return f"{online} of {len(states)} printers online{unchecked}, {queued} queued, {dead} dead{storage}"

    async def start(self) -> None:
        """Start every part in order, pushing each one's stop right after it starts: ``stop`` (or a start that fails
        half-way) runs them in reverse, and a stop that fails is logged while the others still run."""
        s = self.settings
        self._warn_about_env_file()
        # Long tickets render (and large orders validate) in threads; while one holds the GIL the loop waits up
        # to this long for it each time (default 5 ms), so 1 ms keeps the loop within its 20 ms budget.
        sys.setswitchinterval(min(sys.getswitchinterval(), _SWITCH_INTERVAL_S))
        # `edge run` starts with the garbage collector paused (edge/heap.py): back at READY, or after a second.
        asyncio.get_running_loop().call_later(_COLLECTOR_PAUSE_S, resume_collector)
        async with contextlib.AsyncExitStack() as stack:
            # One agent per data directory; `edge restore` takes the same lock, so it cannot run under us.
            lock = DataDirLock.acquire(s.agent.data_dir)
            self._on_stop(stack, "lock", lock.release)
            self.printing.remember()  # it passed in __init__; the data dir is ours now
            await asyncio.to_thread(remove_restore_leftover, s.agent.db_path)
            self._on_stop(stack, "metrics", self.metrics.close)
            if (not_ours := await asyncio.to_thread(unwritable_database, s.agent.db_path)) is not None:
                raise StoreNotWritableError(not_ours)
            # A technician's sqlite3 in a write transaction would fail the start's first writes, and systemd's
            # restarts with them: the start waits for it instead, and says for whom.
            await wait_for_other_writers(s.agent.db_path, self._starting)
            made = not await asyncio.to_thread(s.agent.db_path.exists)
            self.db = db = await Database.open_keeping_room(s.agent.db_path)
            if (
                made
            ):  # a new box; or a data_dir moved without its edge.db, whose waiting orders it strands (config80 F6)
                log.warning(
                    "database_created",
                    path=str(s.agent.db_path),
                    hint="a new, empty database: if this box took orders before, its database is elsewhere; stop the"
                    " agent and move edge.db* here",
                )
            self._on_stop(stack, "database", db.close)  # last but the lock: every other part may write until it stops
            # The scanners read on while every other part stops (the API, the spools: a ticket in flight, up to the
            # grace period; sync; the alerter: a mail the relay is taking) and stop just before the store closes: a
            # ticket scanned meanwhile is recorded, not lost after the beep. The alerter needs none of their scans.
            self._on_stop(stack, "scanners", self._stop_scanners)
            # A database keeps the store it belongs to: another store's recovery cursor would skip this one's orders.
            started_mono = self.clock.mono()
            boot = self.clock.boot()
            hardware = await asyncio.to_thread(hardware_ids)
            started = await db.write(
                lambda conn: first_records(
                    conn,
                    s.agent.store_id,
                    now=self.clock.wall(),
                    db=s.agent.db_path,
                    boot=boot,
                    mono=started_mono,
                    hardware=hardware,
                )
            )
            new_box = started.new_box
            if started.moved is not None:
                log.warning(
                    "database_ran_in_another_box",
                    ran_until=started.moved.ran_until,
                    hardware=sorted(hardware),
                    action="orders recovered from before now print marked COPY; new event key mark",
                    hint="a cloned or moved SD card: if this box replaces that one, keep the other off; if it is"
                    " another store's box, give it its own agent.store_id and an empty data_dir",
                )
            db.on_write_health = self._on_write_health
            db.stall_after_s = s.alerts.storage_stall_s
            # Mail is optional (no smtp.host: no alerts). Started before the spools, so it hears their first state,
            # and stopped after them, so their last state changes still reach the throttle state.
            # Orders are dated by central's clock; with a link, their ages are taken on it (edge/printing/ages.py).
            central_time = RemoteClock("central", self.clock) if s.central.url else None
            ages = JobAges(clock=self.clock, printing=s.printing, staleness=s.staleness, central=central_time)
            ready = asyncio.Event()  # set at READY (see Alerter)
            if s.smtp.host:
                from edge.alerts.alerter import Alerter  # here: a box without mail never loads it
                from edge.alerts.mailer import Mailer

                self.alerter = Alerter(
                    settings=s,
                    db=db,
                    bus=self.bus,
                    mailer=Mailer(s.smtp, clock=self.clock, central=central_time),
                    clock=self.clock,
                    ages=ages,
                    ready=ready,
                    central=central_time,
                )
                await self.alerter.start()
                self._on_stop(stack, "alerter", self.alerter.stop)
            elif unmailed := s.unmailed_alerts:
                log.warning("alerts_not_mailed", reason=unmailed, recipients=len(s.alerts.to))
            if started.moved is not None:  # heard by the alerter: told once, at the start that found it
                self.bus.publish(DatabaseMoved(ran_until=started.moved.ran_until))
            orders = OrderStore(db, clock=self.clock, listed=bool(s.central.url))
            jobs = JobStore(db, clock=self.clock, printers=s.printers, bus=self.bus)
            self._on_stop(stack, "stop mark", lambda: self._mark_stopped(jobs, ages))  # after the parts pushed below
            locks: dict[str, threading.Lock] = {}  # one printer under two names takes one job at a time
            answered, without_in_order = await jobs.answered_devices(), await jobs.devices_without_in_order()
            drivers = {
                name: make_driver(printer, devices=locks, answered=answered, without_in_order=without_in_order)
                for name, printer in s.printers.items()
            }
            devices = {name: driver.transport.device for name, driver in drivers.items()}
            waiting: set[str] = set()  # printers whose spools put them back in line once the store writes again
            try:
                if interrupted := await jobs.requeue_interrupted():
                    log.warning("jobs_interrupted_by_crash", job_ids=interrupted, action="reprinting marked COPY")
            except StoreUnavailableError as err:  # a full card whose room is spent: start, print nothing unrecorded
                waiting = await jobs.printers_interrupted()
                log.warning("interrupted_jobs_wait_for_storage", printers=sorted(waiting), error=str(err))
            # Also those of a crash before, never reached since.
            to_clear = await jobs.printers_to_clear(devices, interrupted=waiting)
            last = await jobs.last_devices()

            def renamed(old: str, new: str) -> bool:
                """``old`` (a printer in the run before) is the device ``new`` reaches now."""
                return last.get(old, "") == devices[new] != ""

            try:
                await jobs.remember_devices(devices)
            except StoreUnavailableError as err:  # a full card: the last run's record stays until a start can write
                log.warning("printer_devices_not_recorded", error=str(err))
            router = Router.from_settings(s)
            # A full card may refuse the moves a config change needs: the spools then start once they are written, or
            # a ticket would print where its station no longer is, and those of a printer gone would wait for a start.
            moved = await self._move_stranded(jobs, router, renamed, first=True)
            # A kill keeps no waits, the jobs' monotonic times (in this boot) do; a clean stop's for older jobs.
            waited = {**await jobs.stopped_waits(), **await jobs.boot_waits()}
            ages.seed(await jobs.waiting(), last_written=await jobs.last_written(), waited=waited)
            self.bus.subscribe(lambda event: ages.received(event.job_ids), OrderStored)
            self.bus.subscribe(self._on_order_stored, OrderStored)
            self.bus.subscribe(lambda event: ages.received(event.job_ids), OrderRevised)
            self.bus.subscribe(self._on_order_stored, OrderRevised)
            intake = OrderIntake(router, orders, self.bus)
            # Without a central API the core runs the same, there is just nothing to reconcile with. Started before
            # the spools so that it stops after them: their in-flight outcome is recorded before sync, outbox and
            # recovery are cancelled (an interrupted recovery run resumes at the next start).
            if s.central.url:
                from edge.sync import SyncService  # here: a box without a central API never loads it

                self.sync = SyncService(
                    s,
                    db=db,
                    intake=intake,
                    orders=orders,
                    bus=self.bus,
                    clock=self.clock,
                    central_time=central_time,
                    # A first run that never reached central leaves it to a later run (this boot, or from this start).
                    first_start_mono=started_mono
                    if new_box
                    else await orders.first_start_unsettled(boot, mono=started_mono, wall=self.clock.wall()),
                )
                await self.sync.start()
                self._on_stop(stack, "sync", self.sync.stop)
            for name, printer in s.printers.items():
                self.spoolers[name] = Spooler(
                    printer=printer,
                    driver=drivers[name],
                    jobs=jobs,
                    render=self.render_job,
                    rendered_with=self.job_renderer.rendered_with,
                    bus=self.bus,
                    spool=s.spool,
                    ages=ages,
                    clock=self.clock,
                    clear_first=name in to_clear,
                    requeue_first=name in waiting,
                )
            if moved:
                self._start_spools()
            else:
                self._spools_held = asyncio.create_task(
                    self._start_spools_once_moved(jobs, router, renamed), name="moves"
                )
            self._on_stop(stack, "spools", self._stop_spools)
            self.failover = Failover(
                stations=s.stations, spoolers=self.spoolers, jobs=jobs, after_s=s.printing.failover_after_s
            )
            self.failover.start()
            self._on_stop(stack, "failover", self.failover.stop)  # before the spools: no job moves while they wind down
            day = BusinessDay.from_settings(s.agent)
            scans = ScanStore(db, clock=self.clock, business_day=day, bus=self.bus, central=central_time)
            left = runtime_note(s.agent.store_id, s.agent.data_dir, "scans-held.json")
            self.scan_recorder = recorder = ScanRecorder(scans, clock=self.clock, left=left)
            await recorder.resume()
            for name, scanner in s.scanners.items():
                self.scanners[name] = Scanner(scanner, recorder.record, self.bus)
                self.scanners[name].start()
            self.deps = ApiDeps(
                settings=s,
                db=db,
                intake=intake,
                orders=orders,
                jobs=jobs,
                spoolers=self.spoolers,
                wake_printer=self.wake_printer,
                scanners=self.scanners,
                metrics=self.metrics,
                render_job=self.render_job,
                started_mono=self.started_mono,
                renderer=self.printing.renderer,
                sync=self.sync,
                clock=self.clock,
                alerter=self.alerter,
                ages=ages,
                scans=scans,
                bus=self.bus,
            )
            readers = OutboxReaders(central=bool(s.central.url), mqtt=bool(s.mqtt.url))
            self._housekeeping = Housekeeping(
                db, s.retention, clock=self.clock, readers=readers, central=central_time, receipts=s.receipts
            )
            if db.gave_room_at_open:  # a full card: retention's deletes get the room before new orders can spend it
                await self._housekeeping.make_room_now(self._making_room)
            self._server = ApiServer(make_api(self.deps), s.api, clock=self.clock)
            self._runner = self._server.runner
            self.port = await self._server.start()
            lock.note_address(s.api.host, self.port)  # commands find it here after an api edit awaiting the restart
            self._on_stop(stack, "api", self._stop_api)  # first to stop: no new orders while the rest winds down
            if s.mqtt.url:
                await self._start_mqtt(stack, intake, db)
            self._housekeeping.start()
            self._on_stop(stack, "housekeeping", self._housekeeping.stop)  # no purge runs while the parts wind down
            self._warn_if_exposed()
            log.info(
                "agent_ready",
                version=__version__,
                store_id=s.agent.store_id,
                api=f"http://{s.api.host}:{self.port}",
                printers=list(s.printers),
                db=str(s.agent.db_path),
            )
            ready.set()
            self.notifier.ready(await self.status_line())
            resume_collector()
            self.notifier.start_watchdog(self.status_line)
            if self.printing.warms:  # the printing stack loads now, in a thread, not at the first order
                warming = asyncio.ensure_future(asyncio.to_thread(self.printing.warm))
                self._on_stop(stack, "printing warm-up", lambda: warming)
            self._on_stop(stack, "systemd", self._notify_stopping)
            self._stack = stack.pop_all()

    def _making_room(self, rows: int) -> None:
        """The start's purge on a full card, after each of its transactions: systemd hears that the start goes on."""
        self._starting(f"making room on the full card: {rows} old rows purged before taking orders")

    def _starting(self, status: str) -> None:
        """A start that takes long but gets on (or waits for another program): systemd hears what it does."""
        self.notifier.extend_start(status, now=self.clock.mono())

    async def _start_mqtt(self, stack: contextlib.AsyncExitStack, intake: OrderIntake, db: Database) -> None:
        """The second door for orders, next to HTTP push; stopped before the API (orders being stored are acked)."""
        from edge.sync.mqtt import MqttLink  # only here: an agent without [mqtt] never imports paho-mqtt

        catch_up = self.sync.recovery.trigger if self.sync is not None else None
        self.mqtt = MqttLink(self.settings, intake=intake, db=db, bus=self.bus, catch_up=catch_up, clock=self.clock)
        self.metrics.watch_mqtt(self.mqtt)
        await self.mqtt.start()
        self._on_stop(stack, "mqtt", self.mqtt.stop)
        assert self.deps is not None
        self.deps.mqtt = self.mqtt

    @staticmethod
    async def _mark_stopped(jobs: JobStore, ages: JobAges) -> None:
        """The stop's time and the waiting jobs' waits on record for the next start's ages (JobStore.last_written,
        stopped_waits); a card that refuses the write only leaves the last order's time there."""
        try:
            await jobs.mark_stopped(ages.waits(job_id for job_id, *_ in await jobs.waiting()))
        except StoreError as err:
            log.warning("stop_not_recorded", error=str(err))

    def _on_stop(self, stack: contextlib.AsyncExitStack, part: str, stop: Callable[[], object]) -> None:
        """Run ``stop`` when the agent stops; if it fails, say so and let the other parts stop all the same."""

        async def stop_part() -> None:
            try:
                result = stop()
                if inspect.isawaitable(result):
                    await result
            except Exception as err:
                log.error("agent_part_stop_failed", part=part, error=f"{type(err).__name__}: {err}", exc_info=True)

        stack.push_async_callback(stop_part)

    def _warn_about_env_file(self) -> None:
        """One line for the keys of the config file that the secrets file (or the environment) overrides, one for its
        variables that name no setting and one for the environment's (`edge config check` refuses those; the agent
        runs, as it did before)."""
        s = self.settings
        if s.overridden:
            log.warning("config_overridden_by_env_file", keys=list(s.overridden))
        if in_file := [str(v) for v in s.unknown_variables if v.line is not None]:
            log.warning(
                "config_env_file_unknown_keys",
                file=str(s.secrets_file),
                keys=in_file,
                hint="they name no setting and change nothing: correct or delete them",
            )
        for unsafe in s.unsafe:
            log.warning("config_unsafe", key=unsafe.key, problem=unsafe.problem)
        if in_environment := [str(v) for v in s.unknown_variables if v.line is None]:
            log.warning(
                "config_environment_unknown_keys",
                keys=in_environment,
                hint="set in the agent's environment (a systemd drop-in's Environment=, a shell export), they name no"
                " setting and change nothing: correct or remove them there",
            )

    def _warn_if_exposed(self) -> None:
        api = self.settings.api
        if api.host in ("127.0.0.1", "localhost", "::1"):
            return
        log.warning(
            "api_listening_beyond_loopback",
            host=api.host,
            hint="anyone on this network can reach the API; keep the token secret",
        )
        if not api.token:
            # Loud on purpose: only the request signature stands between the network and the API.
            log.error(
                "API_OPEN_WITHOUT_TOKEN",
                host=api.host,
                hint="no api.token is set: set one, or bind api.host to 127.0.0.1",
            )

    async def _notify_stopping(self) -> None:
        self.notifier.stopping()
        await self.notifier.close()

    async def _stop_api(self) -> None:
        """New writes answer 503 (the sender retries), requests in progress finish."""
        assert self.deps is not None and self._server is not None
        self.deps.accepting = False
        await self._server.stop()

    @staticmethod
    async def _move_stranded(
        jobs: JobStore, router: Router, renamed: Callable[[str, str], bool], *, first: bool = False
    ) -> bool:
        """The jobs whose printer no longer serves their station move (edge/printing/reroute.py); False when the store
        refused the write (said at the first try only)."""
        try:
            await reroute_stranded(jobs, router.printers_for, renamed)
        except StoreUnavailableError as err:
            if first:
                log.warning("spools_wait_for_storage", error=str(err), reason="jobs to move to the printers configured")
            return False
        return True

    def _start_spools(self) -> None:
        for spooler in self.spoolers.values():
            spooler.start()

    async def _start_spools_once_moved(
        self, jobs: JobStore, router: Router, renamed: Callable[[str, str], bool]
    ) -> None:
        """The start's moves, tried again each second until the store takes them; then the spools start."""
        while not await self._move_stranded(jobs, router, renamed):  # noqa: ASYNC110 (a disk gets room unannounced)
            await asyncio.sleep(STORE_RETRY_S)
        log.info("spools_started", reason="the jobs to move are moved")
        self._start_spools()

    async def _stop_spools(self) -> None:
        """Each spool finishes the job in flight and records its outcome, within the grace period. The end of the
        grace period, or a second signal, cancels them: a job still going out stays 'printing' and is printed again,
        marked COPY, at the next start."""
        if self._spools_held is not None:
            self._spools_held.cancel()
            await asyncio.gather(self._spools_held, return_exceptions=True)
        spoolers = list(self.spoolers.values())
        grace = self.settings.api.shutdown_grace_s
        finishing: asyncio.Future[list[BaseException | None]] | None = None
        try:
            # One spool that fails to stop must not cut the others' job in flight short: each has its grace period.
            finishing = asyncio.gather(*(s.stop() for s in spoolers), return_exceptions=True)
            forced: asyncio.Future[Any] = asyncio.ensure_future(self._forced.wait())
            try:
                await asyncio.wait([finishing, forced], timeout=grace, return_when=asyncio.FIRST_COMPLETED)
            finally:
                forced.cancel()
            if finishing.done():
                if failed := [err for err in finishing.result() if err is not None]:
                    raise failed[0]  # a spool's own failure to stop
                return
            note = "jobs still printing stay 'printing' and reprint as COPY at next start"
            if self._forced.is_set():
                log.warning("spool_stop_forced", note=note)
            else:
                log.error("spool_stop_timeout", seconds=grace, note=note)
        finally:
            await asyncio.gather(*(s.abort() for s in spoolers))
            if finishing is not None:  # ended by the aborts; its outcome was told above
                await asyncio.gather(finishing, return_exceptions=True)

    async def _stop_scanners(self) -> None:
        """Side by side: each may wait for its read to return."""
        results = await asyncio.gather(*(s.stop() for s in self.scanners.values()), return_exceptions=True)
        if self.scan_recorder is not None:
            await self.scan_recorder.stop()  # after the readers: a scan read at the stop may still be held
        if errors := [r for r in results if isinstance(r, Exception)]:
            raise ExceptionGroup("scanners did not stop", errors)

    def force_stop(self) -> None:
        """A second SIGTERM or SIGINT, as uvicorn's second Ctrl+C: stop without waiting for the jobs in flight."""
        if not self._forced.is_set():
            log.warning(
                "agent_stop_forced", note="jobs in flight stay 'printing' and print again as COPY at next start"
            )
            self._forced.set()

    @property
    def forced(self) -> bool:
        return self._forced.is_set()

    async def stop(self) -> None:
        """Stop taking orders (503), let in-flight requests and jobs finish, close the database: every part that
        started is stopped, in reverse order, even if one of them fails to."""
        if self.stopping:
            return
        self.stopping = True
        if self._stack is None:  # nothing started, or a start that failed stopped what it had: no stop to tell
            return
        log.info("agent_stopping")
        await self._stack.aclose()
        log.info("agent_stopped")


# EX_TEMPFAIL (sysexits.h): stopped on SIGHUP to be started again, which the unit's Restart=on-failure does.
EXIT_RESTART = 75


@dataclasses.dataclass(frozen=True)
class Stopped:
    forced: bool  # a second signal cut the grace period short
    restart: bool  # SIGHUP: exit EXIT_RESTART


async def run_until_signal(agent: Agent) -> Stopped:
    """Run until SIGTERM, SIGINT or SIGHUP, then stop; a second one cuts the grace period short. SIGHUP is the
    reload a technician sends (`systemctl kill -s HUP`), or a dropped SSH session's: the agent reads its config only
    at start, so it is a restart (Python's default ended the process on the spot, a ticket going out printed again as
    COPY, and systemd counts a death by SIGHUP as a clean exit: nothing started it again)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    hung_up = False

    def on_signal(sig: signal.Signals) -> None:
        nonlocal hung_up
        if stop.is_set():
            agent.force_stop()
        else:
            hung_up = sig == signal.SIGHUP
            log.info("agent_signal", signal=sig.name, then="restart" if hung_up else "stop")
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        await agent.start()
        await stop.wait()
    finally:
        await agent.stop()
    return Stopped(forced=agent.forced, restart=hung_up)


def _lookups_in_flight() -> list[str]:
    """host:port of each name lookup a thread is blocked in (socket.getaddrinfo's frame: aiohttp's resolver, the
    mailer's and paho's connects all end there)."""
    found = []
    for top in sys._current_frames().values():
        frame: FrameType | None = top
        while frame is not None:
            if frame.f_code is socket.getaddrinfo.__code__:
                found.append(f"{frame.f_locals.get('host')}:{frame.f_locals.get('port')}")
                break
            frame = frame.f_back
    return sorted(found)


def threads_left(timeout: float = EXIT_WAIT_S) -> list[str]:
    """After the agent stopped and the loop's executor was shut down (without waiting): wait at most ``timeout`` for
    the threads a normal exit would join; the names of those still busy, logged with the lookups they hang in.

    Nothing of the agent's is in them any more (the database is closed, the lock released); a hung name lookup would
    otherwise hold the exit, and so a restart, for as long as the DNS server takes not to answer."""
    deadline = time.monotonic() + timeout
    while busy := [t.name for t in threading.enumerate() if not t.daemon and t is not threading.main_thread()]:
        if time.monotonic() >= deadline:
            lookups = _lookups_in_flight()
            # A printer's thread still sending a long ticket is no DNS trouble (the loop80 probe, F2): named as it is.
            why = "a name lookup the DNS server does not answer" if lookups else "a printer still taking a ticket?"
            log.warning(
                "exit_without_waiting",
                threads=sorted(busy),
                lookups=lookups,
                note=f"still busy {timeout:g}s after the stop ({why})",
            )
            break
        time.sleep(0.01)
    return busy
