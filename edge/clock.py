"""Time for every part that waits or measures: wall time for records, monotonic time for durations.

A store box without a battery-backed clock boots in 1970 and NTP later steps it by hours; wall time
is only for what is written down or shown. Every duration (retry delays, staleness within a run,
throttle windows, probe backoff) is measured on the monotonic clock, which a step does not move.
Parts take a ``clock=`` argument so tests can step the wall clock (``SteppedClock.step``) or move
time forward without sleeping (``SteppedClock.advance``).
"""

from __future__ import annotations

import time


class Clock:
    """The system's clocks."""

    def wall(self) -> float:
        """Seconds since 1970 as the system believes now; may jump when NTP or a person sets the clock."""
        return time.time()

    def mono(self) -> float:
        """Seconds on a clock that only moves forward, at a steady rate; meaningless across restarts."""
        return time.monotonic()


SYSTEM_CLOCK = Clock()


class SteppedClock(Clock):
    """The system's clocks plus offsets a test controls: ``step`` jumps the wall clock only, as NTP does;
    ``advance`` moves both, as if that much time had passed."""

    def __init__(self, *, wall_offset: float = 0.0) -> None:
        self.wall_offset = wall_offset
        self.mono_offset = 0.0

    def wall(self) -> float:
        return time.time() + self.wall_offset

    def mono(self) -> float:
        return time.monotonic() + self.mono_offset

    def step(self, seconds: float) -> None:
        self.wall_offset += seconds

    def advance(self, seconds: float) -> None:
        self.wall_offset += seconds
        self.mono_offset += seconds
