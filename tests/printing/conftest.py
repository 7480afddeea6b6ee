"""A box clock for the printing tests: the agent's SteppedClock, also behind time.time() for the whole process."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from edge.clock import SteppedClock

_REAL_TIME = time.time


class BoxClock(SteppedClock):
    """The box's wall clock as every part of the agent sees it, whether it asks ``agent.clock`` or ``time.time()``."""

    def wall(self) -> float:
        return _REAL_TIME() + self.wall_offset


@pytest.fixture
def box_clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[BoxClock]:
    """Steps of the box's wall clock (NTP, a box booted in 1970) cannot be made on a shared machine: the system clock
    is emulated instead, for code that reads time.time() directly (the order store, event stamps) as for code that
    asks the agent's clock. Monotonic time is the real one (``advance`` adds to it for parts that use the clock)."""
    clock = BoxClock()
    monkeypatch.setattr(time, "time", clock.wall)
    yield clock


YEARS_56 = 56 * 365 * 86400  # a box without a battery-backed clock boots at 1970-01-01
