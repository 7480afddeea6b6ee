"""Composition root: builds every part, starts them in order, stops them in reverse."""

from __future__ import annotations

import asyncio
import signal
import sys
import time

import structlog
from aiohttp import web

from edge import __version__
from edge.alerts import Alerter, Mailer
from edge.api.deps import ApiDeps
from edge.api.routes import make_api
from edge.api.server import ApiServer
from edge.clock import SYSTEM_CLOCK, Clock
from edge.config import Settings
from edge.events import EventBus, OrderStored, StorageProblem, StorageRecovered
from edge.metrics import Metrics
from edge.ops import DataDirLock, Housekeeping
from edge.orders.intake import OrderIntake, Router
from edge.printing.ages import JobAges
from edge.printing.drivers import make_driver
from edge.printing.failover import Failover
from edge.printing.jobs import JobRenderer, make_renderer
from edge.printing.render import print_options
from edge.printing.reroute import reroute_stranded
from edge.printing.spooler import Spooler
from edge.printing.status import PrinterState
from edge.scanners import Scanner, ScanRecorder
from edge.states import WAITING_JOB_STATES, JobState
from edge.store import Database, JobStore, OrderStore
from edge.store.identity import record_store
from edge.store.scans import BusinessDay, ScanStore
from edge.sync import SyncService
from edge.systemd import Notifier

log = structlog.get_logger()

_SWITCH_INTERVAL_S = 0.001


class Agent:
    """The whole agent in one process. ``start`` returns once the database is open and the API listens."""

    def __init__(self, settings: Settings, *, clock: Clock = SYSTEM_CLOCK) -> None:
        self.settings = settings
        self.clock = clock  # every part that waits or measures time gets this one (tests step it)
        self.stopping = False  # set by the first stop(); a second call does nothing
        self.bus = EventBus()
        # Operator templates and each printer's options are tried now: a broken one stops the start, not the first
        # order.
        self.renderer = make_renderer(settings)
        for printer in settings.printers.values():
            self.renderer.check_options(printer.name, print_options(printer), width=printer.width)
        self.render_job = JobRenderer(settings, self.renderer).render
        self.failover: Failover | None = None
        self.db: Database | None = None
        self.spoolers: dict[str, Spooler] = {}
        self.scanners: dict[str, Scanner] = {}
        self.deps: ApiDeps | None = None
        self._server: ApiServer | None = None
        self._runner: web.AppRunner | None = None  # the server's, for tests that list the routes
        self.port: int | None = None
        self.started_at = time.time()
        self.notifier = Notifier()
        self.metrics = Metrics(self.bus, list(settings.printers))
        self._lock: DataDirLock | None = None
        self._housekeeping: Housekeeping | None = None
        self.alerter: Alerter | None = None
        self.sync: SyncService | None = None

    def wake_printer(self, name: str) -> None:
        if spooler := self.spoolers.get(name):
            spooler.wake()

    def _on_order_stored(self, event: OrderStored) -> None:
        for name in event.printers:
            self.wake_printer(name)

    def _on_write_health(self, problem: str | None) -> None:
        if problem is None:
            log.info("storage_recovered")
            self.bus.publish(StorageRecovered())
        else:
            log.error("storage_problem", detail=problem)
            self.bus.publish(StorageProblem(detail=problem))

    async def status_line(self) -> str:
        """One line for systemd's STATUS=, e.g. "2 of 3 printers online, 0 queued"."""
        assert self.deps is not None
        counts = await self.deps.jobs.counts()
        states = [s.state for s in self.spoolers.values()]
        online = sum(1 for state in states if state in (PrinterState.ONLINE, PrinterState.PAPER_NEAR_END))
        unknown = states.count(PrinterState.UNKNOWN)
        queued = sum(n for (_, state), n in counts.items() if state in WAITING_JOB_STATES)
        dead = sum(n for (_, state), n in counts.items() if state == JobState.DEAD)
        unchecked = f" ({unknown} not checked yet)" if unknown else ""
        storage = f", storage: {self.db.write_problem}" if self.db is not None and self.db.write_problem else ""
        return f"{online} of {len(states)} printers online{unchecked}, {queued} queued, {dead} dead{storage}"

    async def start(self) -> None:
        s = self.settings
        # Long tickets render (and large orders validate) in threads; while one holds the GIL the loop waits up
        # to this long for it each time (default 5 ms), so 1 ms keeps the loop within its 20 ms budget.
        sys.setswitchinterval(min(sys.getswitchinterval(), _SWITCH_INTERVAL_S))
        # One agent per data directory; `edge restore` takes the same lock, so it cannot run under us.
        self._lock = DataDirLock.acquire(s.agent.data_dir)
        try:
            self.db = await Database.open(s.agent.db_path)
            # A database keeps the store it belongs to: another store's recovery cursor would skip this one's orders.
            await self.db.write(
                lambda conn: record_store(conn, s.agent.store_id, now=self.clock.wall(), db_path=s.agent.db_path)
            )
        except BaseException:
            if self.db is not None:
                await self.db.close()
                self.db = None
            self._lock.release()
            raise
        self.db.on_write_health = self._on_write_health
        self._housekeeping = Housekeeping(self.db, s.retention, clock=self.clock, outbox_in_use=bool(s.central.url))
        self._housekeeping.start()
        # Mail is optional (no smtp.host: no alerts). Started before the spools, so it hears their first state.
        if s.smtp.host:
            self.alerter = Alerter(settings=s, db=self.db, bus=self.bus, mailer=Mailer(s.smtp), clock=self.clock)
            self.alerter.start()
        orders = OrderStore(self.db, clock=self.clock)
        jobs = JobStore(self.db, clock=self.clock, printers=s.printers, bus=self.bus)
        if interrupted := await jobs.requeue_interrupted():
            log.warning("jobs_interrupted_by_crash", job_ids=interrupted, action="reprinting marked COPY")
        router = Router.from_settings(s)
        await reroute_stranded(jobs, router.printer_for)
        ages = JobAges(clock=self.clock, printing=s.printing, staleness=s.staleness)
        ages.seed(await jobs.waiting())
        self.bus.subscribe(lambda event: ages.received(event.job_ids), OrderStored)
        for name, printer in s.printers.items():
            self.spoolers[name] = Spooler(
                printer=printer,
                driver=make_driver(printer),
                jobs=jobs,
                render=self.render_job,
                bus=self.bus,
                spool=s.spool,
                ages=ages,
                clock=self.clock,
            )
        self.bus.subscribe(self._on_order_stored, OrderStored)
        for spooler in self.spoolers.values():
            spooler.start()
        self.failover = Failover(
            stations=s.stations, spoolers=self.spoolers, jobs=jobs, after_s=s.printing.failover_after_s
        )
        self.failover.start()
        scans = ScanStore(self.db, clock=self.clock, business_day=BusinessDay.from_settings(s.agent), bus=self.bus)
        recorder = ScanRecorder(scans)
        for name, scanner in s.scanners.items():
            self.scanners[name] = Scanner(scanner, recorder.record, self.bus)
            self.scanners[name].start()

        intake = OrderIntake(router, orders, self.bus)
        if s.central.url:  # without a central API the core runs the same, there is just nothing to reconcile with
            self.sync = SyncService(s, db=self.db, intake=intake, orders=orders, bus=self.bus, clock=self.clock)
            await self.sync.start()
        self.deps = ApiDeps(
            settings=s,
            db=self.db,
            intake=intake,
            orders=orders,
            jobs=jobs,
            spoolers=self.spoolers,
            wake_printer=self.wake_printer,
            scanners=self.scanners,
            metrics=self.metrics,
            render_job=self.render_job,
            started_at=self.started_at,
            renderer=self.renderer,
            sync=self.sync,
            clock=self.clock,
            alerter=self.alerter,
        )
        self._server = ApiServer(make_api(self.deps), s.api, clock=self.clock)
        self._runner = self._server.runner
        self.port = await self._server.start()
        if s.api.host not in ("127.0.0.1", "localhost", "::1"):
            log.warning(
                "api_listening_beyond_loopback",
                host=s.api.host,
                hint="anyone on this network can reach the API; keep the token secret",
            )
            if not s.api.token:
                # Loud on purpose: only the request signature stands between the network and the API.
                log.error(
                    "API_OPEN_WITHOUT_TOKEN",
                    host=s.api.host,
                    hint="no api.token is set: set one, or bind api.host to 127.0.0.1",
                )
        log.info(
            "agent_ready",
            version=__version__,
            store_id=s.agent.store_id,
            api=f"http://{s.api.host}:{self.port}",
            printers=list(s.printers),
            db=str(s.agent.db_path),
        )
        self.notifier.ready(await self.status_line())
        self.notifier.start_watchdog(self.status_line)

    async def stop(self) -> None:
        """Stop taking orders (503), let in-flight requests and jobs finish, close the database."""
        if self.stopping:
            return
        self.stopping = True
        log.info("agent_stopping")
        self.notifier.stopping()
        await self.notifier.close()
        if self._housekeeping is not None:
            self._housekeeping.stop()
        if self.deps is not None:
            self.deps.accepting = False
        if self._server is not None:
            await self._server.stop()
        if self.failover is not None:
            await self.failover.stop()  # before the spools, so no job moves while they wind down
        grace = self.settings.api.shutdown_grace_s
        try:
            await asyncio.wait_for(asyncio.gather(*(s.stop() for s in self.spoolers.values())), timeout=grace)
        except TimeoutError:
            log.error(
                "spool_stop_timeout",
                seconds=grace,
                note="jobs still printing stay 'printing' and reprint as COPY at next start",
            )
        if self.sync is not None:  # after the spools: their in-flight outcome is recorded before anything is cancelled
            await self.sync.stop()  # an interrupted recovery run resumes at the next start
        await asyncio.gather(
            *(s.stop() for s in self.scanners.values())
        )  # a scan in progress commits before the store closes
        if self.alerter is not None:
            await self.alerter.stop()  # after the spools: their last state changes still reach the throttle state
        if self.db is not None:
            await self.db.close()
        if self._lock is not None:
            self._lock.release()
        self.metrics.close()
        log.info("agent_stopped")


async def run_until_signal(agent: Agent) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await agent.start()
        await stop.wait()
    finally:
        await agent.stop()
