"""Connectivity monitor: probes the central API's health endpoint and publishes each change of the line as an event."""

from __future__ import annotations

import asyncio
import time

import structlog

from edge.config import CentralSettings
from edge.errors import CentralApiError
from edge.events import CentralLinkChanged, EventBus
from edge.sync.client import CentralClient

log = structlog.get_logger()

# First re-probe after a failure; doubles up to probe_max_s, which is kept small so a returning line is seen at once.
_PROBE_MIN_S = 0.1


class LinkMonitor:
    """``up`` is None until the first answer or failure; transitions (never samples) go on the bus."""

    def __init__(self, client: CentralClient, bus: EventBus, settings: CentralSettings) -> None:
        self._client = client
        self._bus = bus
        self._settings = settings
        self.up: bool | None = None
        self.since = time.time()
        self.detail = ""
        self._down_since = 0.0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        client.on_answer = self.mark_up
        client.on_unreachable = self.check_now

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="central-link-monitor")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def mark_up(self) -> None:
        self._set(True, "")

    def check_now(self, detail: str = "") -> None:
        """A call got no answer: probe at once instead of at the next slow tick (the probe decides, one timeout is no outage)."""
        self._wake.set()

    def _set(self, up: bool, detail: str) -> None:
        self.detail = detail
        if up == self.up:
            return
        previous, self.up, self.since = self.up, up, time.time()
        if up:
            log.info(
                "central_link_up", down_for_s=None if previous is None else round(self.since - self._down_since, 3)
            )
        else:
            self._down_since = self.since
            log.warning("central_link_down", detail=detail)
        self._bus.publish(CentralLinkChanged(up=up, detail=detail))

    async def _run(self) -> None:
        delay = _PROBE_MIN_S
        while True:
            try:
                await self._client.health()
            except CentralApiError as err:
                self._set(False, str(err))
                wait, delay = delay, min(delay * 2, self._settings.probe_max_s)
            else:
                self._set(True, "")
                wait, delay = self._settings.probe_up_s, _PROBE_MIN_S
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=wait)
            except TimeoutError:
                pass
            self._wake.clear()
