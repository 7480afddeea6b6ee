"""Connectivity monitor: the line's state from health probes and from what real calls experience, changes as events."""

from __future__ import annotations

import asyncio
import random

import structlog

from edge.clock import SYSTEM_CLOCK, Clock, wait_set
from edge.config import CentralSettings
from edge.errors import CentralApiError
from edge.events import CentralAnswersAgain, CentralLinkChanged, EventBus
from edge.states import CentralDown
from edge.sync.client import (
    CentralBusyError,
    CentralClient,
    CentralLaterError,
    CentralSlowAnswerError,
    CentralTimeoutError,
    CentralUnreachableError,
    refused_setting,
)

log = structlog.get_logger()

# First re-probe after a failure; doubles up to probe_max_s, which is kept small so a returning line is seen at once.
_PROBE_MIN_S = 0.1
# A new reason while the link stays down is logged at most this often: a flaky line may alternate two reasons at
# every probe (two a second), which would flood the journal of a small box.
_STILL_DOWN_LOG_S = 60.0


class LinkMonitor:
    """``up`` is None until the first answer or failure; transitions (never samples) go on the bus.

    Any call's answer (not a 5xx) marks the link up: it is proof of life. A probe that gets no answer marks it
    down, except a probe that merely timed out while some call got an answer within the last ``probe_up_s``:
    a slow health check behind a busy backend is not an outage the rest of the agent should stop for.
    """

    def __init__(
        self, client: CentralClient, bus: EventBus, settings: CentralSettings, *, clock: Clock = SYSTEM_CLOCK
    ) -> None:
        self._client = client
        self._bus = bus
        self._settings = settings
        self._clock = clock
        self.up: bool | None = None
        self._since = clock.mono()  # the last change of up; shown as a wall time (since)
        self.detail = ""
        self._down_since = clock.mono()
        self._cause = CentralDown.LINE  # why it is down, as last told
        self._last_answer: float | None = None  # clock.mono() of the last answer to any call
        self._still_down_logged: float | None = None  # clock.mono() of the last central_link_still_down
        # clock.mono() of the first probe of a spell that got through and no answer, no call answered meanwhile
        self._silent_since: float | None = None
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        # What central said when it last refused a call of the box (its token, its store id), with the setting to
        # check; "" once a call is taken. Health takes no token: the link is up all the same, and says so.
        self.refused = ""
        client.on_answer = self._answered
        client.on_unreachable = self.check_now

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="central-link-monitor")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def mark_up(self) -> None:
        self._last_answer = self._clock.mono()
        self._silent_since = None  # an answer ends a silent spell
        self._set(True, "")

    def _answered(self, status: int, said: str) -> None:
        if refused_setting(status) is not None:  # logged by the call's own caller (recovery, outbox)
            self.refused = said
        elif status < 300:
            self.refused = ""
        self.mark_up()

    def check_now(self, detail: str = "") -> None:
        """A call got no answer: probe at once instead of at the next slow tick (the probe decides)."""
        self._wake.set()

    def _answered_lately(self) -> bool:
        return self._last_answer is not None and self._clock.mono() - self._last_answer <= self._settings.probe_up_s

    @property
    def since(self) -> float:
        """When up last changed, as the wall clock tells it now (a step of NTP since moves it too)."""
        return self._clock.wall_at(self._since)

    def _set(self, up: bool, detail: str, *, cause: CentralDown = CentralDown.LINE, down_for_s: float = 0.0) -> None:
        changed, self.detail = detail != self.detail, detail
        if up == self.up:
            if changed and not up:  # still down, for another reason: the technician's fix may have done its part
                now = self._clock.mono()
                if self._still_down_logged is None or now - self._still_down_logged >= _STILL_DOWN_LOG_S:
                    self._still_down_logged = now
                    log.warning("central_link_still_down", detail=detail)
            if not up and cause != self._cause:
                # Down still, on the other side now (the store's line back to a central whose service is not, or
                # the reverse): told, so what is mailed about it says what is so, not what it was at the start.
                self._cause = cause
                self._bus.publish(CentralLinkChanged(up=False, detail=detail, cause=cause))
            return
        previous, self.up, self._since, self._cause = self.up, up, self._clock.mono() - down_for_s, cause
        if up:
            down_for = None if previous is None else round(self._clock.mono() - self._down_since, 3)
            log.info("central_link_up", down_for_s=down_for)
        else:
            self._down_since = self._since
            log.warning("central_link_down", detail=detail)
        self._bus.publish(CentralLinkChanged(up=up, detail=detail, cause=cause, down_for_s=down_for_s))

    def _hung_for(self) -> float | None:
        """How long central has taken probes and answered nothing, no call answered either, once that is at least
        ``silent_down_s``; None before."""
        if self._silent_since is None or self._answered_lately():
            return None
        silent_s = self._clock.mono() - self._silent_since
        return silent_s if silent_s >= self._settings.silent_down_s else None

    def _answered_again(self, silent: float | None) -> None:
        """A probe answered in time with the link up: after a spell of at least ``probe_up_s`` (from ``silent``) in
        which probes got through and nothing came back (central's application hung behind its load balancer), not
        long enough to call the link down, no run came for the line's return: recovery is told, and fetches what
        central took meanwhile. A link the spell took down starts that run itself when it comes up."""
        if silent is not None and (silent_s := self._clock.mono() - silent) >= self._settings.probe_up_s:
            log.warning("central_answers_again", silent_s=round(silent_s, 1))
            self._bus.publish(CentralAnswersAgain(silent_s=silent_s))

    def _told(self, err: CentralLaterError) -> float:
        """The wait its Retry-After asked for (up to retry_max_s), plus jitter: a fleet told the same does not come
        back in one burst; 0 without one."""
        if not err.retry_after_s:
            return 0.0
        return min(err.retry_after_s, self._settings.retry_max_s) + random.uniform(0, self._settings.retry_base_s)

    async def _run(self) -> None:
        delay = _PROBE_MIN_S
        while True:
            silent, was_up = self._silent_since, self.up  # as before the probe, whose answer ends a spell (mark_up)
            try:
                await self._client.health()
            except CentralTimeoutError as err:
                if self._answered_lately() or isinstance(err, CentralSlowAnswerError):
                    if self._silent_since is None and not self._answered_lately():
                        self._silent_since = self._clock.mono()
                    if (hung_s := self._hung_for()) is not None:
                        hung = f"central takes connections and has answered nothing for {hung_s:.0f} s"
                        self._set(False, hung, cause=CentralDown.REACHED, down_for_s=hung_s)
                        wait, delay = delay, min(delay * 2, self._settings.probe_max_s)
                    else:
                        # Calls get answers, or the probe got through and only its answer is slow (a dependency
                        # check behind health): central is there. Kept down, no call would be made to find out.
                        log.info("central_probe_slow", detail=str(err), note="central is there: the link is up")
                        self._set(True, "")
                        wait, delay = self._settings.probe_up_s, _PROBE_MIN_S
                else:
                    self._set(False, str(err), cause=_unanswered(err))
                    wait, delay = delay, min(delay * 2, self._settings.probe_max_s)
            except CentralBusyError as err:  # an answer: the backend is there, only busy; the probe came too soon
                self._set(True, "")
                wait, delay = max(self._settings.probe_up_s, self._told(err)), _PROBE_MIN_S
            except CentralApiError as err:
                self._set(
                    False,
                    str(err),
                    cause=_unanswered(err) if isinstance(err, CentralUnreachableError) else CentralDown.ANSWERS,
                )
                wait, delay = delay, min(delay * 2, self._settings.probe_max_s)
                if isinstance(err, CentralLaterError):  # down for maintenance: asked again when it said
                    wait = max(wait, self._told(err))
                elif not isinstance(err, CentralUnreachableError):
                    # An answer, but not the contract's (a wrong path's 404, a load balancer's "OK"): a person fixes
                    # central.url; until then it is asked at the pace of a link that is up, not twice a second.
                    wait = self._settings.probe_up_s
            else:
                self.mark_up()
                if was_up:
                    self._answered_again(silent)
                wait, delay = self._settings.probe_up_s, _PROBE_MIN_S
            # The probe's own failure asked for a probe at once (every failed call does: check_now): it is this one.
            # Left set, the next came at once, paced only by the rate limit (the central77 probe, C1: 5 a second).
            self._wake.clear()
            await wait_set(self._wake, wait)
            self._wake.clear()


def _unanswered(err: CentralUnreachableError) -> CentralDown:
    return CentralDown.REACHED if err.reached else CentralDown.LINE
