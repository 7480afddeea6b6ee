"""Clocks for the printing tests: the box's wall clock behind time.time() for the whole process (``box_clock``), and
one clock behind the agent and the event loop's timers that a test stops and moves (``loop_clock``)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import aiosqlite
import pytest

from edge.clock import SteppedClock
from edge.orders.model import Order, parse_order
from edge.printing.render import Renderer
from edge.sim.printer import SimPrinter
from tests.helpers import EXAMPLE

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


class LoopClock(SteppedClock):
    """The agent's clock and the event loop's as one clock the test can stop (``freeze``) and move (``advance``).
    Stopped, no asyncio timer fires (the spool's sleeps, its probe backoff, its poll timer) until the test moves the
    clock, however slow the machine: intervals are counted on this clock, exactly, instead of hoped for in real time.
    Threads (the printer driver's status reads) still run at their own pace: ``settle`` waits for them."""

    def __init__(self) -> None:
        super().__init__()
        self._frozen_at: float | None = None  # real monotonic time the clock stopped at
        self._in_flight = 0  # calls handed to threads (asyncio.to_thread, aiosqlite) not yet returned to the loop
        self._run_in_executor: Callable[..., asyncio.Future[Any]] | None = None  # the loop's own, not counted

    def mono(self) -> float:
        return (time.monotonic() if self._frozen_at is None else self._frozen_at) + self.mono_offset

    def freeze(self) -> None:
        self._frozen_at = time.monotonic()

    def thaw(self) -> None:
        """Real time flows again, from where the clock stands (never backwards)."""
        if self._frozen_at is not None:
            self.mono_offset += self._frozen_at - time.monotonic()
            self._frozen_at = None

    async def settle(self, *, timeout: float = 10.0) -> None:  # noqa: ASYNC109 (real seconds: the clock may be stopped)
        """Until every thread call has returned and the loop has run what each woke (a spool that read the printer's
        status is back asleep on its next timer). Fails if the agent is still busy after ``timeout`` real seconds: at
        a stopped clock, that is a loop that never waits."""
        deadline = time.monotonic() + timeout
        while True:
            for _ in range(20):  # a timer's wake-up reaches the spool's next await within a few loop turns
                await asyncio.sleep(0)
            if not self._in_flight:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"the agent still busy after {timeout:g} s at a stopped clock: a busy loop?")
            await self._nap()

    async def _nap(self) -> None:
        """A millisecond of real time, with no timer (none fires while stopped) and not counted as the agent's."""
        assert self._run_in_executor is not None, "LoopClock without its fixture"
        await self._run_in_executor(None, time.sleep, 0.001)

    async def until(
        self,
        check: Callable[[], object],
        what: str,
        *,
        timeout: float = 10.0,  # noqa: ASYNC109 (real seconds: the clock may be stopped)
        settle: bool = True,
    ) -> None:
        """With the clock stopped, until ``check()`` holds (the agent gets there on its own, without timers); fails
        naming ``what`` after ``timeout`` real seconds. ``settle=False``: checks also while the agent is still busy
        in a thread (a job going out to a slow printer)."""
        deadline = time.monotonic() + timeout
        while not check():
            if time.monotonic() > deadline:
                raise AssertionError(f"not {what} after {timeout:g} s")
            await self._nap()
            if settle:
                await self.settle()

    async def run(self, seconds: float, *, step: float = 0.01, each: Callable[[], None] = lambda: None) -> None:
        """Moves the clock ``seconds`` forward in steps of ``step``; after each, the agent has done what was due (the
        timers fired, the printer answered) and ``each`` is called."""
        for _ in range(round(seconds / step)):
            self.advance(step)
            await self.settle()
            each()

    def counting(self, run_in_executor: Callable[..., asyncio.Future[Any]]) -> Callable[..., asyncio.Future[Any]]:
        """``loop.run_in_executor`` (under asyncio.to_thread) counting its calls until their result is on the loop."""

        self._run_in_executor = run_in_executor

        def run(executor: Any, func: Callable[..., Any], *args: Any) -> asyncio.Future[Any]:
            future = run_in_executor(executor, func, *args)
            self._busy()
            future.add_done_callback(lambda _: self._done())  # runs on the loop just before the caller resumes
            return future

        return run

    def counting_queries(self, execute: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        """aiosqlite's ``Connection._execute`` (every statement and fetch, run on the connection's thread) counting its
        calls until the caller resumes."""

        async def run(conn: aiosqlite.Connection, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
            self._busy()
            try:
                return await execute(conn, fn, *args, **kwargs)
            finally:
                self._done()

        return run

    def _busy(self) -> None:
        self._in_flight += 1

    def _done(self) -> None:
        self._in_flight -= 1


@pytest.fixture
async def loop_clock(make_agent: Callable[..., Any], monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[LoopClock]:
    """A LoopClock behind the running event loop's timers (``loop.time``), counting the agent's work in threads
    (``run_in_executor`` under asyncio.to_thread; aiosqlite's statements); pass it to the agent
    (``make_agent(clock=loop_clock)``). Running on real time until the test freezes it. (It asks for make_agent only to
    be torn down before it: the agents stop on real time.)"""
    loop = asyncio.get_running_loop()
    clock = LoopClock()
    loop.time = clock.mono  # type: ignore[method-assign]  # asyncio's timers read the loop's time through this
    loop.run_in_executor = clock.counting(loop.run_in_executor)  # type: ignore[method-assign]
    monkeypatch.setattr(aiosqlite.Connection, "_execute", clock.counting_queries(aiosqlite.Connection._execute))
    yield clock
    clock.thaw()  # the agents stop on real time again (their timers keep this clock: it never goes back)


@pytest.fixture(scope="module")
def renderer() -> Renderer:
    """The renderer at its defaults (a module may set its own, e.g. another time zone)."""
    return Renderer()


@pytest.fixture(scope="module")
def order() -> Order:
    """The contract's example order, parsed."""
    return parse_order(EXAMPLE)


@pytest.fixture
async def printer() -> AsyncIterator[SimPrinter]:
    """One simulated network printer on loopback, for tests of the driver alone."""
    sim = SimPrinter("kitchen")
    await sim.start()
    yield sim
    await sim.stop()
