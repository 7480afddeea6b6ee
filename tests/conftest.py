"""Shared fixtures: real SQLite files, simulated printers on loopback, the real agent and an HTTP client."""

from __future__ import annotations

import copy
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from blockbuster import BlockBuster, BlockBusterFunction

from edge.app import Agent
from edge.clock import SYSTEM_CLOCK, Clock
from edge.config import Settings, parse_settings
from edge.events import Event
from edge.sim.powercut import build_shim
from edge.sim.printer import SimPrinter
from edge.sim.process import AgentProcess
from edge.sim.smtp import SmtpSink
from tests.helpers import EXAMPLE, FsyncCounter, api_client, config_dict, fresh
from tests.warm import Starter

# What may not run on the event loop's thread while a test runs (blockbuster's names): sleeping, blocking sockets,
# SQLite, waiting on a thread's lock, waiting for a child process. Each stalls every task on the loop: the agent under
# test, its
# simulated printers and the test's own clients. A flaky "database is locked" came from a test writing SQLite on the
# loop while the agent's writer waited for that same loop. File reads and stats (blockbuster's os.* and io.*) are left
# out: the agent reads its templates and config on the loop at start-up, by design, in microseconds.
_NEVER_ON_THE_LOOP = ("time.sleep", "socket.", "ssl.", "sqlite3.", "threading.Lock.", "builtins.input", "os.waitpid")


def _wait_blocks(pid: int, options: int) -> bool:
    return not options & os.WNOHANG


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The files of the long end-to-end tests (marked slow) first, the longest first by what their marks say they take
    (``slow(seconds=N)``, N measured on the 2-core machine under the suite's load): the workers start on them and fill
    in with the short ones, instead of one worker starting a minute-long file when the rest is done. xdist hands out
    whole files in this order (``--no-loadscope-reorder``: by default it puts the files with most tests first)."""
    cost: dict[Path, float] = {}
    for item in items:
        for mark in item.iter_markers("slow"):
            cost[item.path] = cost.get(item.path, 0.0) + float(mark.kwargs.get("seconds", 10))
    items.sort(key=lambda item: -cost.get(item.path, 0.0))  # stable: a module's tests stay in order


@pytest.fixture(autouse=True)
def no_blocking_calls_on_the_loop() -> Iterator[BlockBuster]:
    """Fails the test (BlockingError) when code of the agent or of the tests makes a blocking call on a thread that runs
    an event loop. Blocking work belongs in ``asyncio.to_thread`` (as ``tests.helpers.db_rows`` does)."""
    guard = BlockBuster(["edge", "tests"])
    guard.functions["os.waitpid"] = BlockBusterFunction(
        None, "os.waitpid", scanned_modules=["edge", "tests"], can_block_predicate=lambda *a: not _wait_blocks(*a)
    )
    for name, function in guard.functions.items():
        if name.startswith(_NEVER_ON_THE_LOOP):
            function.activate()
    try:
        yield guard
    finally:
        guard.deactivate()


@pytest.fixture(autouse=True)
def own_runtime_directory(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Each test its own systemd RuntimeDirectory (edge/durable.py::runtime_dir), as each boot has: what an agent notes
    there (the storage mail it sent) stays with the test, and in agents the test starts, instead of the shared /tmp
    across tests and runs. A test that sets the variable itself still wins."""
    monkeypatch.setenv("RUNTIME_DIRECTORY", str(tmp_path_factory.mktemp("run")))


@pytest.fixture(autouse=True, scope="session")
def warm_starts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Starter]:
    """The agents the tests start as processes (AgentProcess, tests.helpers.edge) fork from one warm process per test
    worker instead of importing everything again (tests/warm.py)."""
    starter = Starter(tmp_path_factory.mktemp("warm"))
    AgentProcess.starter = starter
    try:
        yield starter
    finally:
        AgentProcess.starter = None
        starter.close()


@pytest.fixture(scope="session")
def powercut_shim(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """scripts/powercut.c built once per test process (see edge/sim/powercut.py); fails where it cannot be built."""
    return build_shim(tmp_path_factory.mktemp("powercut"))


@pytest.fixture(scope="session")
def wall_clock_shim(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """scripts/wallclock.c built once per test process: an agent process under it has its wall clock set off by
    ``WALLCLOCK_OFFSET_S`` seconds, its monotonic clock the box's (tests.helpers.wall_clock_off), or the clocks a
    suspend of ``SUSPENDED_S`` seconds leaves (tests.helpers.suspended)."""
    return build_shim(tmp_path_factory.mktemp("wallclock"), "wallclock.c")


@pytest.fixture(scope="session")
def fsync_counter_shim(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """scripts/slowfsync.c built once per test process: the agent under it (``SLOWFSYNC_MS=0``) counts its fsyncs in
    the file ``SLOWFSYNC_COUNT_FILE`` names (8 bytes, little-endian)."""
    return build_shim(tmp_path_factory.mktemp("slowfsync"), "slowfsync.c")


@pytest.fixture
def fsyncs(tmp_path: Path, fsync_counter_shim: Path) -> FsyncCounter:
    """Counts the fsyncs of an agent process started with ``env=fsyncs.env``."""
    return FsyncCounter(fsync_counter_shim, tmp_path / "fsyncs")


@pytest.fixture
def example_order() -> dict[str, Any]:
    """The backend's contract example as shipped (a fresh copy per test), taken just now (see ``fresh``)."""
    return fresh(copy.deepcopy(EXAMPLE))


@pytest.fixture
async def printers(tmp_path: Path) -> AsyncIterator[dict[str, SimPrinter]]:
    """Two simulated network printers, kitchen and front, listening on loopback."""
    sims = {"kitchen": SimPrinter("kitchen"), "front": SimPrinter("front")}
    for sim in sims.values():
        await sim.start()
    yield sims
    for sim in sims.values():
        await sim.stop()


@pytest.fixture
def make_settings(tmp_path: Path, printers: dict[str, SimPrinter]) -> Callable[..., Settings]:
    def make(**overrides: Any) -> Settings:
        return parse_settings(config_dict(tmp_path / "data", printers, **overrides), source="test")

    return make


@pytest.fixture
async def make_agent(make_settings: Callable[..., Settings]) -> AsyncIterator[Callable[..., Awaitable[Agent]]]:
    """Starts real agents: ``await make_agent(settings=None, clock=None, listen=None, **overrides)`` (overrides:
    config sections for ``make_settings``); each is stopped at the end unless the test stopped it already."""
    started: list[Agent] = []

    async def make(
        settings: Settings | None = None,
        *,
        clock: Clock | None = None,
        listen: Callable[[Event], object] | None = None,
        **overrides: Any,
    ) -> Agent:
        a = Agent(settings or make_settings(**overrides), clock=clock or SYSTEM_CLOCK)
        if listen is not None:  # subscribed before the start: hears what the agent publishes while starting, too
            a.bus.subscribe(listen, Event)
        await a.start()
        started.append(a)
        return a

    yield make
    for a in reversed(started):
        await a.stop()


@pytest.fixture
async def agent(make_agent: Callable[..., Awaitable[Agent]]) -> Agent:
    """The real agent: SQLite file in tmp_path, API on a free loopback port, spools to the simulated printers."""
    return await make_agent()


@pytest.fixture
async def api(agent: Agent) -> AsyncIterator[aiohttp.ClientSession]:
    """An HTTP client for the agent's API, authenticated."""
    async with api_client(agent) as session:
        yield session


@pytest.fixture
async def sink() -> AsyncIterator[SmtpSink]:
    """A plain SMTP server on loopback that keeps every mail (no TLS: the alert tests cover that)."""
    server = SmtpSink()
    await server.start()
    yield server
    await server.stop()
