"""A job's wait as JobAges tells it (the hold, the queue's age in /metrics and on the status page, the print latency),
on clocks that stand still: the floors of the wait, which a moving clock blurs."""

from __future__ import annotations

from datetime import UTC, datetime

from edge.clock import Clock, RemoteClock
from edge.config import PrintingSettings
from edge.printing.ages import JobAges


class StoppedClock(Clock):
    """The box's clocks, standing still where the test puts them."""

    def __init__(self, wall: float, mono: float) -> None:
        self._wall, self._mono = wall, mono

    def wall(self) -> float:
        return self._wall

    def mono(self) -> float:
        return self._mono


def iso(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).isoformat()


def test_a_job_stored_this_moment_has_waited_nothing() -> None:
    """A job received now, read at once on a clock that has not moved: 0 s, not a moment more. Before stop 83 no test
    read a wait this fresh: a floor of 1 s (mut83's mutant of ``max(0.0, …)``) survived, which /metrics would have
    shown as the queue's age and each ticket's print latency."""
    clock = StoppedClock(wall=1_800_000_000.0, mono=500.0)
    ages = JobAges(clock=clock, printing=PrintingSettings(), staleness={})
    ages.received([1])
    assert ages.oldest_wait([(1, clock.wall(), iso(clock.wall()))]) == 0.0


def test_a_job_from_before_this_run_whose_order_central_dates_after_its_now_has_waited_nothing() -> None:
    """A job from before this run (seeded: 300 s by the box's wall clock) whose order central's clock dates 10 s after
    its own now (the till's clock ahead of central's): its wait is on central's clock, never below 0, and so 0 s.
    Before stop 83 no test put an order after central's now: a floor of 1 s there (mut83) survived."""
    clock = StoppedClock(wall=1_800_000_000.0, mono=500.0)
    central = RemoteClock("central", clock)
    central.heard(clock.wall() - 1000.5, round_trip_s=0.0)  # central's now: 1000 s behind the box's
    central_now = central.wall()
    assert central_now is not None
    ages = JobAges(clock=clock, printing=PrintingSettings(), staleness={}, central=central)
    ages.seed([(1, clock.wall() - 300, iso(central_now + 10))])
    assert ages.oldest_wait([(1, clock.wall() - 300, iso(central_now + 10))]) == 0.0
