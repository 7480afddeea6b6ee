"""Moves a station's waiting tickets off a printer of its list paused too long to the first healthy one: the
primary's to a backup, a backup's to the primary."""

from __future__ import annotations

import asyncio

import structlog

from edge.errors import StoreUnavailableError
from edge.log import SaidOnce
from edge.printing.spooler import Spooler
from edge.printing.status import BLOCKING_STATES
from edge.store.jobs import JobStore

log = structlog.get_logger()

_CHECK_S = 0.5


class Failover:
    """Watches each station that lists backups (``[stations] kitchen = ["kitchen", "front"]``).

    New jobs are always routed to the primary; only jobs waiting on a printer paused and stuck for
    ``after_s`` (Spooler.stuck_for: a printer that flaps, online for a moment between pauses without taking a ticket,
    is stuck all along), or failing (Spooler.failing: it cut tickets short, which never pauses it), move,
    so once the primary is back new tickets print there again. A job moves in
    one UPDATE of waiting rows and a spool claims a job only if it is still its own, so no job
    prints on both printers.
    """

    def __init__(
        self,
        *,
        stations: dict[str, list[str]],
        spoolers: dict[str, Spooler],
        jobs: JobStore,
        after_s: float,
    ) -> None:
        """``jobs`` publishes JobRedirected for each job it moves."""
        self._routes = {station: printers for station, printers in stations.items() if len(printers) > 1}
        self._spoolers = spoolers
        self._jobs = jobs
        self._after_s = after_s
        self._task: asyncio.Task[None] | None = None
        self._no_backup: set[str] = set()  # stations already logged as having no healthy backup
        self._storage = SaidOnce("failover_waits_for_storage")  # why moves cannot be written, until one is

    def start(self) -> None:
        if self._routes:
            self._task = asyncio.create_task(self._run(), name="failover")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(_CHECK_S)
            for station, printers in self._routes.items():
                try:
                    await self.check(station, printers)
                except StoreUnavailableError as err:  # a full card: tried again at the next check
                    self._storage.failed(str(err), station=station)
                except Exception:  # one station's trouble must not end failover for the others
                    log.exception("failover_error", station=station)
                else:
                    self._storage.passed()

    async def check(self, station: str, printers: list[str]) -> None:
        """The station's waiting tickets on a printer of its list paused and stuck ``after_s`` (Spooler.stuck_for)
        move to the first healthy one:
        off the primary to a backup, and off a backup to the primary (a ticket left on a printer that the config
        made a backup since, or moved there by an earlier failover, must not wait for it while the primary prints)."""
        for name in printers:
            await self._move_off(station, printers, self._spoolers[name])

    async def _move_off(self, station: str, printers: list[str], stuck: Spooler) -> None:
        primary = stuck.name == printers[0]
        waited = stuck.stuck_for()
        if not stuck.failing and (waited is None or waited < self._after_s):
            if primary:
                self._no_backup.discard(station)
            return
        target = next(
            (self._spoolers[name] for name in printers if name != stuck.name and _healthy(self._spoolers[name])), None
        )
        if target is None:
            if primary and station not in self._no_backup:
                log.error("failover_no_backup", station=station, primary=stuck.name, backups=printers[1:])
                self._no_backup.add(station)
            return
        moved = await self._jobs.redirect(station, from_printer=stuck.name, to_printer=target.name)
        if not moved:
            return
        why = f"cut {stuck.cut_short} tickets short in a row" if waited is None else f"no ticket out for {waited:.1f} s"
        log.warning(
            "jobs_redirected",
            station=station,
            from_printer=stuck.name,
            to_printer=target.name,
            job_ids=[job.id for job in moved],
            why=why,
        )
        target.wake()


def _healthy(spooler: Spooler) -> bool:
    """Not paused, not failing and not known to be blocked; a printer whose state is unknown is given the job."""
    return spooler.paused_since is None and not spooler.failing and spooler.state not in BLOCKING_STATES
