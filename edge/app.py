"""Composition root: builds every part, starts them in order, stops them in reverse."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from zoneinfo import ZoneInfo

import aiosqlite
import structlog
from aiohttp import web

from edge import __version__
from edge.api.routes import ApiDeps, make_api
from edge.config import PrinterSettings, Settings
from edge.events import EventBus, OrderStored
from edge.orders.intake import OrderIntake, Router
from edge.orders.model import parse_order
from edge.printing.driver import PrinterDriver
from edge.printing.render import Renderer
from edge.printing.spooler import Spooler
from edge.store import Database, JobStore, OrderStore
from edge.transports.file import FileTransport
from edge.transports.tcp import TcpTransport

log = structlog.get_logger()


def make_driver(printer: PrinterSettings) -> PrinterDriver:
    if printer.type == "network":
        transport = TcpTransport(printer.name, printer.host, printer.port, connect_timeout=printer.connect_timeout, write_timeout=printer.write_timeout)
    else:
        assert printer.path is not None  # config fills it in for file printers
        transport = FileTransport(printer.name, printer.path)
    return PrinterDriver(printer.name, transport, status_timeout=printer.status_timeout)


class Agent:
    """The whole agent in one process. ``start`` returns once the database is open and the API listens."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.bus = EventBus()
        self.renderer = Renderer(tz=ZoneInfo(settings.agent.timezone) if settings.agent.timezone else None)
        self.db: Database | None = None
        self.spoolers: dict[str, Spooler] = {}
        self.deps: ApiDeps | None = None
        self._runner: web.AppRunner | None = None
        self.port: int | None = None
        self.started_at = time.time()

    def render_job(self, job: aiosqlite.Row) -> bytes:
        order = parse_order(json.loads(job["payload"]))
        printer = self.settings.printers[job["printer"]]
        language = self.settings.agent.language
        if job["kind"] == "ticket":
            return self.renderer.ticket(order, job["station"], width=printer.width, language=language, copy=bool(job["copy"]))
        return self.renderer.receipt(
            order,
            width=printer.width,
            language=language,
            copy=bool(job["copy"]),
            store_name=self.settings.agent.store_name or self.settings.agent.store_id,
            footer=self.settings.receipts.footer,
        )

    def wake_printer(self, name: str) -> None:
        if spooler := self.spoolers.get(name):
            spooler.wake()

    def _on_order_stored(self, event: OrderStored) -> None:
        for name in event.printers:
            self.wake_printer(name)

    async def start(self) -> None:
        s = self.settings
        self.db = await Database.open(s.agent.db_path)
        orders, jobs = OrderStore(self.db), JobStore(self.db)
        if interrupted := await jobs.requeue_interrupted():
            log.warning("jobs_interrupted_by_crash", job_ids=interrupted, action="reprinting marked COPY")
        for name, printer in s.printers.items():
            self.spoolers[name] = Spooler(printer=printer, driver=make_driver(printer), jobs=jobs, render=self.render_job, bus=self.bus, spool=s.spool)
        self.bus.subscribe(self._on_order_stored, OrderStored)
        for spooler in self.spoolers.values():
            spooler.start()

        intake = OrderIntake(Router.from_settings(s), orders, self.bus)
        self.deps = ApiDeps(settings=s, db=self.db, intake=intake, orders=orders, jobs=jobs, spoolers=self.spoolers, wake_printer=self.wake_printer)
        self._runner = web.AppRunner(make_api(self.deps), access_log=None, shutdown_timeout=5.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, s.api.host, s.api.port)
        await site.start()
        self.port = self._runner.addresses[0][1]
        if s.api.host not in ("127.0.0.1", "localhost", "::1"):
            log.warning("api_listening_beyond_loopback", host=s.api.host, hint="anyone on this network can reach the API; keep the token secret")
        log.info("agent_ready", version=__version__, store_id=s.agent.store_id, api=f"http://{s.api.host}:{self.port}", printers=list(s.printers), db=str(s.agent.db_path))

    async def stop(self) -> None:
        """Stop taking orders (503), let in-flight requests and jobs finish, close the database."""
        log.info("agent_stopping")
        if self.deps is not None:
            self.deps.accepting = False
        if self._runner is not None:
            await self._runner.cleanup()
        grace = self.settings.api.shutdown_grace_s
        try:
            await asyncio.wait_for(asyncio.gather(*(s.stop() for s in self.spoolers.values())), timeout=grace)
        except TimeoutError:
            log.error("spool_stop_timeout", seconds=grace, note="jobs still printing stay 'printing' and reprint as COPY at next start")
        if self.db is not None:
            await self.db.close()
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
