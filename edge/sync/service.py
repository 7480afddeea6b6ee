"""The sync part as one unit for the composition root: client, link monitor, outbox, recovery and its schedule."""

from __future__ import annotations

import asyncio
from typing import Any

import structlog

from edge.clock import SYSTEM_CLOCK, Clock, RemoteClock, repeat
from edge.config import Settings, shown_url
from edge.events import EventBus
from edge.orders.intake import OrderIntake
from edge.states import ACTIVE_RUN_STATES, RunTrigger
from edge.store.db import Database
from edge.store.orders import OrderStore
from edge.sync.client import CentralClient
from edge.sync.monitor import LinkMonitor
from edge.sync.outbox import OutboxSender
from edge.sync.recovery import Recovery

log = structlog.get_logger()


class SyncService:
    """Started only when ``central.url`` is set; the core works the same without it."""

    def __init__(
        self,
        settings: Settings,
        *,
        db: Database,
        intake: OrderIntake,
        orders: OrderStore,
        bus: EventBus,
        clock: Clock = SYSTEM_CLOCK,
        central_time: RemoteClock | None = None,
        first_start_mono: float | None = None,
    ) -> None:
        """``first_start_mono``: see Recovery."""
        central = settings.central
        self.settings = central
        self.central_time = central_time
        self.client = CentralClient(central, settings.agent.store_id, central_time=central_time)
        self.monitor = LinkMonitor(self.client, bus, central, clock=clock)
        self.outbox = OutboxSender(
            db,
            self.client,
            bus,
            batch_size=central.batch_size,
            link_up=self._link_up,
            refused_retry_s=central.refused_retry_s,
            clock=clock,
        )
        self.recovery = Recovery(
            db=db,
            client=self.client,
            intake=intake,
            orders=orders,
            outbox=self.outbox,
            bus=bus,
            settings=central,
            history_age_s=_history_age_s(settings),
            clock=clock,
            central_time=central_time,
            first_start_mono=first_start_mono,
        )
        self._schedule: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.client.start()
        await self.recovery.resume()
        self.monitor.start()
        self.outbox.start()
        if self.settings.schedule_interval_s:
            # Catches drift even without an outage; the jitter spreads a fleet's scheduled runs.
            interval = self.settings.schedule_interval_s
            self._schedule = asyncio.create_task(
                repeat(self._scheduled, interval, jitter_s=interval / 10), name="recovery-schedule"
            )
        log.info("sync_started", central=shown_url(self.settings.url), rate_limit_rps=self.settings.rate_limit_rps)

    async def stop(self) -> None:
        if self._schedule is not None:
            self._schedule.cancel()
            await asyncio.gather(self._schedule, return_exceptions=True)
        await self.recovery.stop()
        await self.outbox.stop()
        await self.monitor.stop()
        await self.client.close()

    def _link_up(self) -> bool:
        return self.monitor.up is True

    async def _scheduled(self) -> None:
        if self.monitor.up:  # while down, the line coming back triggers a run anyway
            await self.recovery.trigger(RunTrigger.SCHEDULE)

    def _box_minus_central_s(self) -> int | None:
        """How far the box's wall clock is from central's, as its last answer told; None before any answer."""
        off = self.central_time.box_minus_theirs() if self.central_time is not None else None
        return None if off is None else round(off)

    async def status(self) -> dict[str, Any]:
        last_id = await self.recovery.last_run_id()
        # With its conflicts and refused orders (order id, number, reason): what a technician must see.
        last = await self.recovery.run(last_id) if last_id is not None else None
        # A run just recorded is active before its task starts: the record says so, not only the task.
        recorded_active = last is not None and last["state"] in ACTIVE_RUN_STATES
        return {
            "enabled": True,
            "central": shown_url(self.settings.url),
            "link": {
                "up": self.monitor.up,
                "since": self.monitor.since,
                "detail": self.monitor.detail,
                "refused": self.monitor.refused,
            },
            "box_minus_central_s": self._box_minus_central_s(),
            "cursor": await self.recovery.cursor(),
            "active_run": self.recovery.active_run or (last["id"] if last is not None and recorded_active else None),
            "last_run": last,
            "outbox_pending": await self.outbox.pending(),
        }


def _history_age_s(settings: Settings) -> float:
    """How long before a new box's first start (or a restore) an order is history, not work: the longest a ticket may
    wait before it is held ([staleness] per station included); none is when some station never holds one."""
    ages = [settings.printing.stale_ticket_min, *settings.staleness.values()]
    return 0.0 if 0 in ages else max(ages) * 60
