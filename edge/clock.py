"""Time for every part that waits or measures: wall time for records, monotonic time for durations.

A store box without a battery-backed clock boots in 1970 and NTP later steps it by hours; wall time
is only for what is written down or shown. Every duration (retry delays, staleness within a run,
throttle windows, probe backoff) is measured on the monotonic clock, which a step does not move and
which counts the time the box was suspended (``Clock.mono``).
Parts take a ``clock=`` argument so tests can step the wall clock (``SteppedClock.step``) or move
time forward without sleeping (``SteppedClock.advance``).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import os
import random
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import structlog

if TYPE_CHECKING:
    import ctypes

log = structlog.get_logger()


class Clock:
    """The system's clocks."""

    def wall(self) -> float:
        """Seconds since 1970 as the system believes now; may jump when NTP or a person sets the clock."""
        return time.time()

    def mono(self) -> float:
        """Seconds on a clock that only moves forward, at a steady rate: since the box booted, the time it was
        suspended included (Linux's CLOCK_BOOTTIME), so comparable across runs of the agent within one boot (see
        ``boot``), not across boots. Not the event loop's clock: a difference with ``time.monotonic()`` is wrong by
        every suspend since the boot."""
        return _mono()

    def synchronized(self) -> bool:
        """Whether the kernel says a time service (systemd-timesyncd, chrony, ntpd) has set the wall clock: adjtimex(2)
        does not answer TIME_ERROR (STA_UNSYNC). A box without a battery boots unsynchronized and stays so until NTP
        answers; False where the system does not say."""
        return _kernel_synchronized()

    def wall_at(self, mono: float) -> float:
        """A moment of the monotonic clock as the wall clock tells it now: after NTP stepped the wall clock, a time
        read off it before would be off by the step."""
        return self.wall() - (self.mono() - mono)

    def boot(self) -> str | None:
        """This boot's id (the kernel's boot_id) and the clock mono() reads: two runs that read the same one share
        their monotonic clock. None where the system does not say."""
        return _boot_id()

    def noted_within(self, boot: str | None, mono: float | None, window_s: float) -> bool:
        """Whether ``mono``, a monotonic time an earlier run noted with its ``boot``, is less than ``window_s`` ago:
        only a run of this boot shares this clock."""
        return mono is not None and boot is not None and boot == self.boot() and 0 <= self.mono() - mono < window_s


# CLOCK_MONOTONIC stops while the box is suspended (a mini PC's idle suspend, a laptop's lid): a ticket that waited
# 75 s across a 60 s suspend read as 15 s old and printed unmarked (the boot83 probe, F1). CLOCK_BOOTTIME goes on.
# Where there is none (not Linux), the monotonic clock.
_BOOTTIME = getattr(time, "CLOCK_BOOTTIME", None)
_mono: Callable[[], float] = time.monotonic if _BOOTTIME is None else functools.partial(time.clock_gettime, _BOOTTIME)


# Named in the boot's id: a monotonic time a release before stop 83 kept (on CLOCK_MONOTONIC, under the bare boot_id)
# is not on this clock, and read on it after a suspend in the same boot it was hours off: a fresh ticket held as an
# hour old, a silence's alarm mailed (the verify83 probe, F3 and F5). Such a run's times are another boot's now.
_CLOCK_NAME = "" if _BOOTTIME is None else "/boottime"


@functools.cache
def _boot_id() -> str | None:
    """Read once: it does not change while the process runs."""
    try:
        kernel = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None
    return kernel + _CLOCK_NAME if kernel else None


_TIME_ERROR = 5  # adjtimex(2)'s answer for a clock not synchronized (STA_UNSYNC), <sys/timex.h>


@functools.cache
def _libc() -> ctypes.CDLL | None:
    """The C library's global namespace (an LD_PRELOAD shim's adjtimex first, as for any caller); loaded once."""
    import ctypes  # here: only a start after a reboot with tickets waiting asks

    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


def _kernel_synchronized() -> bool:
    """adjtimex(2) with modes 0 only reads; its struct timex is under 256 bytes on every Linux ABI."""
    import ctypes

    libc = _libc()
    if libc is None or not hasattr(libc, "adjtimex"):
        return False
    timex = ctypes.create_string_buffer(512)
    return libc.adjtimex(timex) not in (-1, _TIME_ERROR)


SYSTEM_CLOCK = Clock()


# Our wall clock further than this from another host's is worth a line in the log and a doctor's warning.
CLOCK_OFF_S = 60.0


def clock_off_words(box_minus_theirs_s: float, theirs: str) -> str | None:
    """ "the box's clock is 62 min ahead of central's", or None while the two are within CLOCK_OFF_S."""
    off = box_minus_theirs_s
    if abs(off) <= CLOCK_OFF_S:
        return None
    gap = f"{abs(off) / 60:.0f} min" if abs(off) >= 120 else f"{abs(off):.0f} s"
    return f"the box's clock is {gap} {'ahead of' if off > 0 else 'behind'} {theirs}'s"


class RemoteClock:
    """Another host's wall clock, as the Date of its answers gives it, carried forward on our monotonic clock: right
    while ours is wrong (a box without a battery, a hardware clock kept in local time) and not moved when NTP steps
    ours. Unknown (None) until the host has answered once in this run."""

    def __init__(self, name: str, clock: Clock = SYSTEM_CLOCK) -> None:
        self._name = name
        self._clock = clock
        self._ahead: float | None = None  # its wall time minus our monotonic time
        self._off = False  # ours was last found further from it than CLOCK_OFF_S

    def heard(self, date: float, round_trip_s: float) -> None:
        """An answer dated ``date`` (whole seconds: its clock read between date and date + 1) arrived just now,
        ``round_trip_s`` after its request was sent; it was dated about midway."""
        self._ahead = date + 0.5 - (self._clock.mono() - round_trip_s / 2)
        off = self.box_minus_theirs()
        assert off is not None  # just heard
        if (abs(off) > CLOCK_OFF_S) != self._off:
            self._off = not self._off
            if self._off:
                log.warning("box_clock_off", against=self._name, box_minus_theirs_s=round(off), hint="check NTP")
            else:
                log.info("box_clock_agrees", against=self._name, box_minus_theirs_s=round(off))

    def wall(self) -> float | None:
        """Its wall clock now, or None if it has not answered yet."""
        return None if self._ahead is None else self._clock.mono() + self._ahead

    def box_minus_theirs(self) -> float | None:
        """How far our wall clock is ahead of it (behind: negative), or None if it has not answered yet."""
        theirs = self.wall()
        return None if theirs is None else self._clock.wall() - theirs

    def as_theirs(self, at: float) -> float:
        """A time of our wall clock as its clock has it while ours is off by more than CLOCK_OFF_S (else as it is):
        for what a person reads or expects by the hour."""
        off = self.box_minus_theirs()
        return at - off if off is not None and abs(off) > CLOCK_OFF_S else at


class SteppedClock(Clock):
    """The system's clocks plus offsets a test controls: ``step`` jumps the wall clock only, as NTP does;
    ``advance`` moves both, as if that much time had passed."""

    def __init__(self, *, wall_offset: float = 0.0) -> None:
        self.wall_offset = wall_offset
        self.mono_offset = 0.0

    def wall(self) -> float:
        return time.time() + self.wall_offset

    def mono(self) -> float:
        return super().mono() + self.mono_offset

    def step(self, seconds: float) -> None:
        self.wall_offset += seconds

    def advance(self, seconds: float) -> None:
        self.wall_offset += seconds
        self.mono_offset += seconds


async def wait_set(event: asyncio.Event, seconds: float) -> bool:
    """Wait until ``event`` is set, at most ``seconds``; True if it is set. Every loop that sleeps until woken uses
    this, not ``asyncio.wait_for``: on Python 3.11 that returns the event's result when a cancel arrives together
    with it, so a stopping loop went round again and its stop waited for ever."""
    if event.is_set():
        return True
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await event.wait()
    return event.is_set()  # set as the time ran out: still news for the caller


async def wait_real(event: threading.Event, seconds: float) -> bool:
    """Wait until ``event`` is set, at most ``seconds`` of real time; True if it is set. For the store's brief waits
    (a claim lingering for an order, a batch waiting for its senders): they are weighed against an fsync, which takes
    real time, so they wait on a thread rather than on the loop's clock (a test that stops that clock must not stop
    them). ``event`` may be set from the loop."""
    return await asyncio.to_thread(event.wait, seconds)


async def repeat(job: Callable[[], Awaitable[object]], interval_s: float, *, jitter_s: float = 0.0) -> None:
    """Runs ``job`` every ``interval_s`` seconds (plus up to ``jitter_s``) until cancelled, one run at a time: a run
    that overruns delays the next, none piles up. It waits on the event loop's monotonic clock, so a wall-clock step
    neither skips runs nor fires a burst of them. A run that fails is logged; the next one still comes."""
    while True:
        await asyncio.sleep(interval_s + random.uniform(0.0, jitter_s))  # spreads a fleet's runs
        try:
            await job()
        except Exception as err:
            log.exception("repeated_job_failed", job=getattr(job, "__qualname__", repr(job)), error=str(err))


def store_zone(zone: str) -> ZoneInfo | None:
    """The store's time zone: ``agent.timezone``, else the box's own as a zone with its rules (TZ, /etc/localtime),
    not only today's offset, which would never tell the autumn night's repeated hour (the verify76 probe, V3); None
    where the box names none either (its offset now is all there is)."""
    if zone:
        return ZoneInfo(zone)
    key = os.environ.get("TZ", "").removeprefix(":")
    try:
        if key:
            return ZoneInfo(key)
        with open("/etc/localtime", "rb") as file:  # its key: the file it links to, which names the zone
            return ZoneInfo.from_file(file, key=os.path.realpath("/etc/localtime"))
    except (OSError, ValueError, ZoneInfoNotFoundError):
        return None


def store_time(at: float, tz: ZoneInfo | None, central: RemoteClock | None) -> dt.datetime:
    """Our wall time ``at`` as the store's local time, on ``central``'s clock while ours is known to be off: what a
    person reads in a mail, or expects by the hour (opening hours)."""
    return dt.datetime.fromtimestamp(at if central is None else central.as_theirs(at), tz)


def repeated_hour(local: dt.datetime) -> bool:
    """Whether the local time is in the hour the autumn change of clocks repeats (02:51 happens twice, an hour apart):
    shown alone, it does not say which."""
    return local.utcoffset() != local.replace(fold=1 - local.fold).utcoffset()


def shown_at(at: float, zone: str | None) -> str:
    """A wall time as the store reads it, in ``agent.timezone`` (else the box's zone) and named: a line of an `edge`
    command means the same hour as the status page and the mails. Before, the box's zone unnamed (UTC on most boxes):
    a silence "until 03:29:54" ended at 04:29 in Berlin (the docs probe, D11)."""
    tz = store_zone(zone or "")
    moment = dt.datetime.fromtimestamp(at, tz) if tz else dt.datetime.fromtimestamp(at).astimezone()
    return moment.strftime("%Y-%m-%d %H:%M:%S %Z")
