"""A link's outage (central's line, the MQTT broker), measured from when it began even across restarts of the agent."""

from __future__ import annotations

from edge.clock import Clock
from edge.store.alerts import AlertStore, MonoTime


class Outage:
    """When a link went down, kept in the database while it is down: a start that finds the link down again measures
    from then, so its alert comes the configured minutes after the link went down, not after the last start (a crash
    loop, systemd restarting the agent every few seconds, is never mailed otherwise). Only within one boot, on its
    monotonic clock, so a step of the wall clock between two runs (NTP soon after a boot) adds nothing: of a box
    switched off for a day nobody knows what the link did."""

    def __init__(self, store: AlertStore, clock: Clock, link: str) -> None:
        self._store, self._clock, self._link = store, clock, link
        self.since: float | None = None  # monotonic; None while the link is up
        self.before = False  # the outage now is one an earlier run met (carried over a restart)
        self._recorded = False  # its start is kept in the database
        self._carried: float | None = None  # an earlier run's outage start, for the next down
        self._loaded = False
        self._back = False  # the link came back since the last settle: the record goes
        self.answering_since: float | None = None  # monotonic: back during the outage, maybe only for a moment

    def down(self, *, ago_s: float = 0.0) -> bool:
        """The link is down, since ``ago_s`` before now; True when this starts the outage (not one known)."""
        self.answering_since = None
        if self.since is not None:
            return False
        self.since = self._clock.mono() - ago_s
        return True

    def answers(self) -> None:
        """The link is back, maybe only for a moment (a broker crash-looping): the outage goes on until the caller
        calls it over (up), and down again it is the same one. Its record goes meanwhile: a restart now finds the link
        answering, not an outage to carry."""
        if self.since is None:
            self.up()
        elif self.answering_since is None:
            self.answering_since, self._back = self._clock.mono(), True

    def up(self) -> None:
        self.since, self.before, self._back, self.answering_since = None, False, True, None

    def down_s(self) -> float | None:
        return None if self.since is None else self._clock.mono() - self.since

    async def settle(self) -> None:
        """Bring memory and the database's record together: take an earlier run's start on the first call, drop the
        record once the link is back, keep a new outage's start."""
        if not self._loaded:
            self._loaded = True
            recorded = await self._store.down_since(self._link)
            boot = self._clock.boot()
            if (
                recorded is not None
                and boot is not None
                and recorded.boot == boot
                and recorded.mono <= self._clock.mono()
            ):
                self._carried, self._recorded = recorded.mono, True
            elif recorded is not None:
                await self._store.record_down_since(self._link, None)
        if self._back:
            self._back, self._carried = False, None
            if self._recorded:
                self._recorded = False
                await self._store.record_down_since(self._link, None)
        if self.since is None or self.answering_since is not None:
            return
        if self._carried is not None:
            self.since = min(self.since, self._carried)
            self._carried, self.before = None, True
        if not self._recorded and (boot := self._clock.boot()) is not None:
            self._recorded = True
            await self._store.record_down_since(self._link, MonoTime(boot=boot, mono=self.since))
