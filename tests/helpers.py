"""Helpers every test folder shares: the token and example order, an API client, posting orders, reading committed
rows from a second connection (in a thread: never on the event loop), waiting for a condition with a deadline, and
recording what the agent publishes."""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import copy
import dataclasses
import hashlib
import inspect
import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import sysconfig
import tarfile
import time
import tracemalloc
import unicodedata
import zipfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from edge.app import Agent
from edge.clock import SteppedClock
from edge.config import Settings
from edge.events import Event, EventBus, ScannerConnectionChanged, ScanRecorded
from edge.printing.decode import decode
from edge.sim.orders import due_at, make_order, taken_at
from edge.sim.ports import free_port
from edge.sim.printer import SimPrinter
from edge.sim.process import AgentProcess, write_config
from edge.sim.scanner import SimScanner
from edge.sim.smtp import SmtpSink
from edge.store import db as db_module
from tests.warm import Starter

T = TypeVar("T")

TOKEN = "test-token-0123456789"
EXAMPLE = json.loads((Path(__file__).parent / "fixtures" / "order-example.json").read_text(encoding="utf-8"))
# A dessert made in the kitchen: the item a change adds in the change tests.
TIRAMISU = {
    "sku": "TIRAMISU",
    "name": "Tiramisu",
    "qty": 1,
    "unit_price": "6.50",
    "requires_production": True,
    "station": "kitchen",
    "modifiers": [],
    "note": None,
}
WAIT_S = 10.0  # generous: two shared cores, several test runs at once
# The two costly properties (the API fuzz, rendering any order: ~17 s of CPU together at full size) take a third of
# their examples by default; EDGE_DEEP_PROPERTIES=1 runs them all (after changing the API, the model or the renderer).
DEEP_PROPERTIES = os.environ.get("EDGE_DEEP_PROPERTIES") == "1"


def examples(deep: int) -> int:
    """Hypothesis examples for a costly property: ``deep`` in a deep run, a third of it otherwise."""
    return deep if DEEP_PROPERTIES else deep // 3


_POLL_S = 0.02
# A box's install built by install.sh or upgrade.sh in a test: from this checkout, with nothing from a package index
# (tests talk to loopback only). The release's dependencies and pip's build backend (setuptools, wheel: test extras)
# are borrowed from this venv through PYTHONPATH; no build isolation, which would fetch the backend. So is pip: a
# venv made --without-pip skips ensurepip, 7 of a build's 10 s of CPU. REAL_VENV: the box's way, pip in the release.
BORROWED = {"PYTHONPATH": sysconfig.get_paths()["purelib"]}
REAL_VENV = {**BORROWED, "EDGE_PIP_ARGS": "--no-deps --no-index --no-build-isolation"}
OFFLINE_BUILD = {**REAL_VENV, "EDGE_VENV_ARGS": "--without-pip"}


# A keyboard-wedge scanner (docs/scanners.md): the agent starts with it only where evdev loads.
HID_SCANNER = '\n[scanners.wedge]\ntype = "hid"\nport = "/dev/input/by-id/usb-wedge-event-kbd"\n'


def has_evdev(release: Path) -> bool:
    """The release's (venv's) own packages hold a loadable evdev (isolated: not the caller's PYTHONPATH)."""
    found = subprocess.run(
        [str(release / "bin/python"), "-I", "-c", "import evdev"], capture_output=True, text=True, timeout=30
    )
    return found.returncode == 0


def build_with_evdev(directory: Path, *, compiles: bool = True) -> dict[str, str]:
    """OFFLINE_BUILD where pip resolves the release's dependencies as on a box, so the hid extra counts: they are all
    there (borrowed, satisfied) but evdev, which this venv's libraries lend no longer (``directory``/borrowed links to
    the rest) and which pip finds in ``directory``/wheels: a wheel of this venv's own evdev (what pip compiles on a
    box; it cannot be compiled here, offline), or with ``compiles=False`` an sdist whose compile fails as on a box
    without gcc. So a release (and the agent it runs, whose PYTHONPATH this is) has evdev only where pip was asked."""
    purelib = Path(sysconfig.get_paths()["purelib"])
    borrowed, wheels = directory / "borrowed", directory / "wheels"
    borrowed.mkdir(parents=True)
    wheels.mkdir()
    for entry in purelib.iterdir():
        if entry.name != "evdev" and not entry.name.startswith("evdev-"):
            (borrowed / entry.name).symlink_to(entry)
    if compiles:
        _evdev_wheel(purelib, wheels)
    else:
        _evdev_sdist_without_compiler(directory / "sdist", wheels)
    return {
        **OFFLINE_BUILD,
        "PYTHONPATH": str(borrowed),
        "EDGE_PIP_ARGS": f"--no-index --no-build-isolation --find-links {wheels}",
    }


def _evdev_wheel(purelib: Path, wheels: Path) -> None:
    [info] = purelib.glob("evdev-*.dist-info")
    version = info.name.removeprefix("evdev-").removesuffix(".dist-info")
    files = [p for p in (purelib / "evdev").rglob("*") if p.is_file() and "__pycache__" not in p.parts]
    files += [info / "METADATA", info / "WHEEL"]
    record = []
    with zipfile.ZipFile(wheels / f"evdev-{version}-py3-none-any.whl", "w") as wheel:
        for path in files:
            name, data = str(path.relative_to(purelib)), path.read_bytes()
            wheel.writestr(name, data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            record.append(f"{name},sha256={digest},{len(data)}")
        wheel.writestr(f"{info.name}/RECORD", "\n".join([*record, f"{info.name}/RECORD,,"]) + "\n")


def _evdev_sdist_without_compiler(work: Path, wheels: Path) -> None:
    project = work / "evdev-99.0.0"
    project.mkdir(parents=True)
    (project / "PKG-INFO").write_text("Metadata-Version: 2.1\nName: evdev\nVersion: 99.0.0\n")
    (project / "setup.py").write_text(
        "from setuptools import Extension, setup\n"
        "from setuptools.command.build_ext import build_ext\n\n\n"
        "class NoCompiler(build_ext):\n"
        "    def run(self):\n"
        "        raise SystemExit(\"error: command 'gcc' failed: No such file or directory\")\n\n\n"
        'setup(name="evdev", version="99.0.0", ext_modules=[Extension("evdev._input", ["input.c"])],'
        ' cmdclass={"build_ext": NoCompiler})\n'
    )
    with tarfile.open(wheels / "evdev-99.0.0.tar.gz", "w:gz") as sdist:
        sdist.add(project, arcname=project.name)


def guest_words() -> Any:
    """A hypothesis strategy for what tills send beside the contract as a guest's allergies or an order's note: any
    JSON (text of any Unicode, lone surrogates too), the shapes meant most often (strings, arrays, objects with a name
    or code)."""
    from hypothesis import strategies as st  # only the properties that use it load hypothesis

    any_char = st.characters(codec=None, min_codepoint=0, max_codepoint=0x10FFFF, exclude_categories=())
    leaves = st.one_of(
        st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False), st.text(any_char)
    )
    return st.recursive(
        leaves,
        lambda inner: st.one_of(
            st.lists(inner, max_size=4), st.dictionaries(st.sampled_from(["name", "code", "id"]), inner, max_size=3)
        ),
        max_leaves=8,
    )


def in_nfd(value: Any) -> Any:
    """``value`` with every text decomposed, as macOS and iOS write it ("Käse": "a" and a combining diaeresis)."""
    if isinstance(value, str):
        return unicodedata.normalize("NFD", value)
    if isinstance(value, list):
        return [in_nfd(part) for part in value]
    if isinstance(value, dict):
        return {key: in_nfd(part) for key, part in value.items()}
    return value


def fresh(order: dict[str, Any]) -> dict[str, Any]:
    """The order as if taken just now (to the microsecond: tests hold tickets after well under a second).

    Staleness is the order's own age (created_at): the contract example as shipped (22 Nov 2026) is an old order
    that would be held, not printed."""
    return taken_at(order, datetime.now(UTC))


def asap(order: dict[str, Any]) -> dict[str, Any]:
    """The order (changed in place) for as soon as possible: no due time. A ticket is not held as stale before its
    order's due time (the example's is 26 minutes after it is made), so a test holding tickets after a stale age of a
    minute or less uses these."""
    return due_at(order, None)


def orders(example: dict[str, Any], count: int, *, receipt: bool = False) -> list[dict[str, Any]]:
    """``count`` copies of ``example`` as orders ord_000, ord_001 … numbered N-000, N-001 …"""
    out = []
    for n in range(count):
        o = copy.deepcopy(example)
        o["id"], o["number"], o["print_receipt"] = f"ord_{n:03d}", f"N-{n:03d}", receipt
        out.append(o)
    return out


def config_dict(data_dir: Path, printers: dict[str, SimPrinter], **overrides: Any) -> dict[str, Any]:
    """A test config: the simulated printers, fast retries, the API on a free loopback port (``overrides``:
    sections)."""
    raw: dict[str, Any] = {
        "agent": {"store_id": "test-store", "data_dir": str(data_dir), "language": "de", "log_format": "json"},
        "api": {"host": "127.0.0.1", "port": 0, "token": TOKEN},
        "printers": {
            name: {"type": "network", "host": "127.0.0.1", "port": p.port, "status_timeout": 0.5}
            for name, p in printers.items()
        },
        "stations": {"kitchen": "kitchen", "bar": "kitchen"},
        "receipts": {"printer": "front"},
        "spool": {"retry_base_s": 0.05, "retry_max_s": 0.2, "offline_probe_max_s": 0.5},
    }
    for section, values in overrides.items():
        raw.setdefault(section, {}).update(values)
    return raw


def with_printer(settings: Settings, name: str, **fields: Any) -> Settings:
    """``settings`` with some of one printer's fields set (``cash_drawer=True``, ``width=42``): config_dict's
    overrides replace a printer's whole section, its host and port too."""
    printer = dataclasses.replace(settings.printers[name], **fields)
    return dataclasses.replace(settings, printers={**settings.printers, name: printer})


def cli_config(path: Path, data_dir: Path, printers: dict[str, SimPrinter], port: int = 9) -> Path:
    """A config file for `edge …` run as a real process on the same data directory."""
    return write_config(
        path,
        data_dir=data_dir,
        api_port=port,
        token=TOKEN,
        printers={n: p.port for n, p in printers.items()},
        store_id="test-store",  # the store of the agents make_agent starts
    )


def agent_process(
    tmp_path: Path,
    printers: dict[str, SimPrinter],
    *,
    env: dict[str, str] | None = None,
    nofile: int | None = None,
    data_dir: Path | None = None,
    **config: Any,
) -> AgentProcess:
    """The agent as its own process (not started): a config in ``tmp_path`` for these printers on a free port, the
    data in ``data_dir`` (``tmp_path/data`` unless given), its log in ``tmp_path/agent.log``; ``config``: more
    write_config arguments."""
    port = free_port()
    path = write_config(
        tmp_path / "edge.toml",
        data_dir=data_dir or tmp_path / "data",
        api_port=port,
        token=TOKEN,
        printers={name: sim.port for name, sim in printers.items()},
        **config,
    )
    return AgentProcess(path, port, tmp_path / "agent.log", env=env, nofile=nofile)


def wall_clock_off(shim: Path, seconds: int) -> dict[str, str]:
    """Environment for an agent process (AgentProcess's ``env``) whose wall clock is ``seconds`` ahead (behind:
    negative) of the box's, as NTP or a person set it; its monotonic clock is the box's. ``shim``: the
    wall_clock_shim fixture (scripts/wallclock.c)."""
    return {"LD_PRELOAD": str(shim), "WALLCLOCK_OFFSET_S": str(seconds)}


def suspended(shim: Path, seconds: int) -> dict[str, str]:
    """Environment for an agent process (AgentProcess's ``env``) started as if the box had slept ``seconds`` (a
    suspend) since the test or an earlier run read the clocks: its wall clock and CLOCK_BOOTTIME that much ahead of
    the box's, its CLOCK_MONOTONIC the box's, which a suspend does not move. ``shim``: the wall_clock_shim fixture."""
    return {"LD_PRELOAD": str(shim), "SUSPENDED_S": str(seconds)}


def reconfigure(agent: AgentProcess, data_dir: Path, printers: dict[str, int], **config: Any) -> None:
    """The config of ``agent`` (stopped) written again, as a technician changes it between runs: its port and token,
    ``printers`` (name -> loopback port), ``config``: more write_config arguments."""
    write_config(agent.config, data_dir=data_dir, api_port=agent.port, token=TOKEN, printers=printers, **config)


def api_client(
    agent: Agent | int, *, token: str | None = TOKEN, address: str | None = None, **kwargs: Any
) -> aiohttp.ClientSession:
    """An HTTP client for the agent's API on loopback (``agent`` or its port); with the bearer token unless
    ``token=None``; from another loopback ``address`` (127.0.0.2, …) if given: to the agent, another machine on the
    LAN, its wrong tokens counted apart (edge/api/auth.py's GuessBrake).
    Use as ``async with api_client(agent) as api:``.

    A new connection for each request unless ``connector`` says otherwise: many tests move the agent's clock past the
    API's idle timeout (15 s), and the agent sheds a kept-alive connection at its next sweep; a request sent on it just
    then is reset (CI runs at e6a5a89 and 17281f2). A real sender retries such a request; a test would only fail."""
    port = agent if isinstance(agent, int) else agent.port
    headers = {**({"Authorization": f"Bearer {token}"} if token else {}), **kwargs.pop("headers", {})}
    connector = kwargs.pop("connector", None) or aiohttp.TCPConnector(
        force_close=True, local_addr=(address, 0) if address else None
    )
    return aiohttp.ClientSession(base_url=f"http://127.0.0.1:{port}", headers=headers, connector=connector, **kwargs)


async def days_pass(agent: Agent, clock: SteppedClock, days: float, *, prefix: str = "later") -> str:
    """``days`` pass in a store that stays open: the box clock steps on and the store takes one order of that day (a
    kitchen ticket, no receipt; ``prefix`` for its id, another each time days pass again); its id. Retention dates
    "now" by what it knows besides the box clock (the newest order's own time, central's clock:
    edge/ops/housekeeping.py), so a box clock that moved alone looks jumped."""
    clock.step(days * 86400)
    order = make_order(1, prefix=prefix, created_at=datetime.fromtimestamp(int(clock.wall()), UTC), print_receipt=False)
    async with api_client(agent) as api:
        status, body = await post(api, order)
    assert status == 201, body
    return str(order["id"])


async def taken_then(agent: Agent, clock: SteppedClock, order: dict[str, Any], when: datetime) -> dict[str, Any]:
    """The box clock stepped to ``when`` and ``order``, created then, taken (201) and its jobs printed: an order of
    that day, its originals on paper. Returns the order."""
    clock.step(when.timestamp() - clock.wall())
    async with api_client(agent) as api:
        status, body = await post(api, taken_at(order, when))
    assert status == 201, body
    await eventually(
        lambda: db_rows(agent, "SELECT state FROM print_jobs WHERE order_id = ?", order["id"]),
        lambda rows: rows and all(state == "printed" for (state,) in rows),
        what=f"order {order['id']}'s jobs printed",
    )
    return order


async def ids_meet_numbers(make_agent: Callable[..., Awaitable[Agent]], **overrides: Any) -> Agent:
    """A till whose ids are one running integer and whose numbers restart daily, in Berlin at 23:30 on 29 Nov 2026
    (``overrides``: more config sections): order id "57" (number 3) and "58" (number 4) of 27 Nov, 12:00 and 12:05;
    today's "912" (number 57, 23:30), "913" (number 59, 23:31) and "70" (number 70, 23:32). Kitchen tickets only,
    all printed (five originals on the kitchen printer)."""
    zone = ZoneInfo("Europe/Berlin")
    older, today = datetime(2026, 11, 27, 12, 0, tzinfo=zone), datetime(2026, 11, 29, 23, 30, tzinfo=zone)
    clock = SteppedClock(wall_offset=older.timestamp() - time.time())
    agent = await make_agent(agent={"timezone": "Europe/Berlin"}, clock=clock, **overrides)
    minute = timedelta(minutes=1)
    taken = [("57", "3", older), ("58", "4", older + 5 * minute)]
    taken += [("912", "57", today), ("913", "59", today + minute), ("70", "70", today + 2 * minute)]
    for seq, (order_id, number, when) in enumerate(taken, 1):
        order = make_order(seq, print_receipt=False) | {"id": order_id, "number": number}
        await taken_then(agent, clock, order, when)
    return agent


async def post(api: aiohttp.ClientSession, body: Any, **kwargs: Any) -> tuple[int, Any]:
    """POST /api/v1/orders: (status, JSON body); ``body`` as JSON, or raw when bytes or str."""
    kw = {"json": body} if not isinstance(body, (bytes, str)) else {"data": body}
    async with api.post("/api/v1/orders", **kw, **kwargs) as response:
        return response.status, await response.json(content_type=None)


@contextlib.asynccontextmanager
async def commits_seen(path: Path) -> AsyncIterator[Callable[[], Awaitable[int]]]:
    """Whether another connection (the agent) committed to the database at ``path`` since the last look: 0 or 1
    (SQLite's data_version tells whether, not how many). Use as ``async with commits_seen(path) as committed:``."""
    # Used from worker threads (off the loop), one at a time.
    watcher = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    seen = [-1]

    async def committed() -> int:
        now = await asyncio.to_thread(lambda: watcher.execute("PRAGMA data_version").fetchone()[0])
        if seen[0] < 0:
            seen[0] = now
        changed = int(now != seen[0])
        seen[0] = now
        return changed

    try:
        await committed()
        yield committed
    finally:
        watcher.close()


def _read(path: Path, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
    # Closed here, not when the garbage collector gets to it: a connection closing last checkpoints the WAL and deletes
    # it, and one left over a staged power cut did so with its stale view of the WAL, after the files were put back.
    with contextlib.closing(sqlite3.connect(path)) as conn, conn:
        return conn.execute(sql, params).fetchall()


async def db_rows(where: Agent | Path, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    """Reads through a second connection of our own, as another process would: what is committed, not what the agent
    holds in memory. In a thread: a read on the event loop would stall the agent the test is watching."""
    path = where.settings.agent.db_path if isinstance(where, Agent) else where
    return await asyncio.to_thread(_read, path, sql, params)


async def key_mark(where: Agent | Path) -> str:
    """What ends the idempotency keys of a database's status events: "@" and its mark (docs/central-api.md)."""
    [(mark,)] = await db_rows(where, "SELECT value FROM meta WHERE key = 'event_key_mark'")
    return f"@{mark}"


async def orders_stored(
    where: Agent | Path,
    want: set[str],
    *,
    timeout: float,  # noqa: ASYNC109 (the deadline is the point)
    what: str,
) -> None:
    """Waits until the stored order ids are exactly ``want``."""
    await eventually(
        lambda: db_rows(where, "SELECT id FROM orders"),
        lambda rows: {order_id for (order_id,) in rows} == want,
        timeout=timeout,
        what=what,
    )


async def db_execute(where: Agent | Path, sql: str, *params: Any) -> None:
    """Writes (and commits) through a second connection, in a thread: a write on the event loop would wait for the
    agent's own writer, which waits for the loop ("database is locked")."""
    path = where.settings.agent.db_path if isinstance(where, Agent) else where
    await asyncio.to_thread(_read, path, sql, params)


def slow_fsync(
    monkeypatch: pytest.MonkeyPatch,
    seconds: float,
    times: list[tuple[float, float]] | None = None,
    *,
    clock: SteppedClock | None = None,
) -> None:
    """Every fsync of the store's write-ahead log takes ``seconds`` longer, as on an SD card (on the fsync's own
    thread, as a slow card blocks it); ``times`` gets when each began and ended (monotonic). With ``clock``, that time
    passes on the agent's clock instead (advanced, no real wait): a long start in a moment."""
    real = db_module.sync_to_disk

    def slow(wal: Path, *, data_only: bool = False) -> None:
        began = time.monotonic()
        if clock is None:
            time.sleep(seconds)
        else:
            clock.advance(seconds)
        real(wal, data_only=data_only)
        if times is not None:
            times.append((began, time.monotonic()))

    monkeypatch.setattr(db_module, "sync_to_disk", slow)


async def job_rows(agent: Agent, sql: str = "SELECT state, attempts, copy FROM print_jobs ORDER BY id") -> list[tuple]:
    """(state, attempts, copy) of every print job, oldest first (or what ``sql`` selects)."""
    return await db_rows(agent, sql)


async def print_latency_sum(api: aiohttp.ClientSession, printer: str) -> float:
    """The seconds of print latency /metrics has summed for ``printer`` (stored, or queued as a copy, to on paper).
    Waits for its first observation: a job's printed mark commits just before the event that records it is heard, so
    a test that saw the mark may ask a moment too soon."""

    async def read() -> list[float]:
        async with api.get("/metrics") as response:
            text = await response.text()
        prefix = f'edge_print_latency_seconds_sum{{printer="{printer}"}}'
        return [float(line.split()[-1]) for line in text.splitlines() if line.startswith(prefix)]

    [total] = await eventually(read, lambda found: len(found) == 1, what=f"print latency of {printer} on /metrics")
    return total


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """/metrics' text as {(name, sorted labels): value}, read by prometheus_client's own parser."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def scrape(agent: Agent) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """What Prometheus would read on the agent's /metrics now (no token: it needs none)."""
    async with api_client(agent, token=None) as plain, plain.get("/metrics") as response:
        assert response.status == 200, response.status
        return samples(await response.text())


async def waits_shown(agent: Agent | int) -> tuple[float, float]:
    """The oldest job's wait as /metrics and the status API show it (``agent`` or its port)."""
    async with api_client(agent) as api:
        async with api.get("/metrics") as response:
            metrics = await response.text()
        async with api.get("/api/v1/status") as response:
            status = await response.json()
    [gauge] = [line for line in metrics.splitlines() if line.startswith("edge_oldest_queued_job_age_seconds ")]
    return float(gauge.split()[1]), status["oldest_waiting_s"]


async def wait_until(check: Callable[[], object], timeout: float = WAIT_S, what: str = "the condition") -> None:  # noqa: ASYNC109 (the deadline is the point)
    """Polls ``check`` (a function, or one returning an awaitable) until it is true; fails naming ``what`` after
    ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        found = check()
        if inspect.isawaitable(found):
            found = await found
        if found:
            return
        if loop.time() > deadline:
            raise AssertionError(f"not {what} after {timeout:g} s")
        await asyncio.sleep(_POLL_S)


async def eventually(
    read: Callable[[], Awaitable[T]],
    check: Callable[[T], object],
    timeout: float = WAIT_S,  # noqa: ASYNC109 (the deadline is the point)
    what: str = "the condition",
) -> T:
    """Reads (e.g. rows from the database) until ``check`` holds for what was read; returns that. Fails naming
    ``what`` and the last value after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = await read()
        if check(value):
            return value
        if loop.time() > deadline:
            raise AssertionError(f"not {what} after {timeout:g} s; last read: {value!r}")
        await asyncio.sleep(_POLL_S)


async def status_reads(printer: SimPrinter, reads: int, timeout: float = WAIT_S) -> None:  # noqa: ASYNC109
    """Waits until ``printer`` has answered ``reads`` more status reads (DLE EOT 1, 2 and 4 each): proof that the
    spool went on probing a paused printer, where a sleep only hopes it did."""
    start = printer.status_queries
    await wait_until(lambda: printer.status_queries >= start + 3 * reads, timeout, f"{reads} more status reads")


async def until(api: aiohttp.ClientSession, url: str, done: Callable[[Any], bool], what: str) -> None:
    """Polls one of the agent's JSON routes until ``done(body)``; fails naming ``what`` after 10 s."""
    for _ in range(200):
        async with api.get(url) as response:
            if done(await response.json()):
                return
        await asyncio.sleep(0.05)
    raise AssertionError(f"not {what} after 10 s: {url}")


class FsyncCounter:
    """The fsyncs of an agent run under scripts/slowfsync.c without a delay: ``env`` for its process, ``count()``
    so far (the shim adds to an 8-byte little-endian counter in ``file``, shared with it through mmap)."""

    def __init__(self, shim: Path, file: Path) -> None:
        file.write_bytes(bytes(8))
        self.file = file
        self.env = {"LD_PRELOAD": str(shim), "SLOWFSYNC_MS": "0", "SLOWFSYNC_COUNT_FILE": str(file)}

    def count(self) -> int:
        return int.from_bytes(self.file.read_bytes()[:8], "little")


class Recorder:
    """Every event the agent's bus publishes, for waiting on and asserting."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self._changed = asyncio.Event()

    def __call__(self, event: Event) -> None:
        self.events.append(event)
        self._changed.set()

    def of(self, kind: type[Event]) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind)]

    async def wait(
        self,
        kind: type[Event],
        count: int = 1,
        timeout: float = 20.0,  # noqa: ASYNC109 (a test helper: the timeout is the point)
        where: Callable[[Any], bool] = lambda e: True,
    ) -> list[Any]:
        """The first ``count`` events of ``kind`` (that fit ``where``), once they were published."""
        async with asyncio.timeout(timeout):
            while len(found := [e for e in self.of(kind) if where(e)]) < count:
                self._changed.clear()
                await self._changed.wait()
        return found


# Scanners ---------------------------------------------------------------------------------------------------------


class Seen:
    """Every scan and connection event published on ``bus`` (or, without one, to this as a listener: ``make_agent(
    listen=seen)``), with a way to wait for the next ones."""

    def __init__(self, bus: EventBus | None = None) -> None:
        self.events: list[Event] = []
        self._changed = asyncio.Event()
        if bus is not None:
            bus.subscribe(self, Event)

    def __call__(self, event: Event) -> None:
        if isinstance(event, (ScanRecorded, ScannerConnectionChanged)):
            self.events.append(event)
            self._changed.set()

    @property
    def scans(self) -> list[ScanRecorded]:
        return [e for e in self.events if isinstance(e, ScanRecorded)]

    def connections(self, scanner: str) -> list[bool]:
        return [e.connected for e in self.events if isinstance(e, ScannerConnectionChanged) and e.scanner == scanner]

    async def until(self, condition: Callable[[], bool], what: str, timeout: float = WAIT_S) -> None:  # noqa: ASYNC109
        async def wait() -> None:
            while not condition():
                self._changed.clear()
                await self._changed.wait()

        try:
            await asyncio.wait_for(wait(), timeout)
        except TimeoutError:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; events: {self.events}") from None

    async def scans_count(self, n: int) -> list[ScanRecorded]:
        await self.until(lambda: len(self.scans) >= n, f"{n} scans")
        return self.scans

    async def connected(self, scanner: str, value: bool = True, times: int = 1) -> None:
        await self.until(
            lambda: self.connections(scanner).count(value) >= times, f"scanner {scanner} connected={value} x{times}"
        )


def scanner_config(sims: dict[str, SimScanner], **changes: dict[str, Any]) -> dict[str, Any]:
    """The [scanners] section for the kitchen, bar and counter simulated scanners; ``changes`` per scanner."""
    config: dict[str, dict[str, Any]] = {
        "kitchen": {"port": str(sims["kitchen"].path), "station": "kitchen", "reconnect_max_s": 0.3},
        "bar": {"port": str(sims["bar"].path), "station": "bar", "reconnect_max_s": 0.3},
        "counter": {"port": str(sims["counter"].path), "hand_out": True, "hand_out_gap_s": 0, "reconnect_max_s": 0.3},
    }
    for name, values in changes.items():
        config[name].update(values)
    return config


async def push_order(agent: Agent, seq: int, *, bar: bool = False) -> dict[str, Any]:
    """Store an order through the real intake path (kitchen ticket; with ``bar`` also a bar ticket)."""
    assert agent.deps is not None
    order = make_order(seq, bar=bar)
    await agent.deps.intake.accept(order)
    return order


def wal_commits(db_path: Path) -> int:
    """Commits in the database's write-ahead log since it last restarted. Each commit is one fsync with
    synchronous=FULL; count before the log reaches wal_autocheckpoint (1000 pages), or it restarts."""
    return len(wal_commit_ends(db_path))


def wal_commit_ends(db_path: Path) -> list[int]:
    """Where each commit in the database's write-ahead log ends, read from the file as SQLite wrote it: a frame whose
    header gives the database size after it ends a transaction (https://sqlite.org/fileformat.html#wal_file_format
    , 4.1). Only frames carrying the log header's salts belong to the current log; those after the last commit are
    a transaction that never committed (a write the full disk refused: its frames stay in the file, unused)."""
    wal = Path(f"{db_path}-wal")
    data = wal.read_bytes() if wal.exists() else b""
    if len(data) < 32:
        return []
    page_size = int.from_bytes(data[8:12], "big")
    salts = data[16:24]
    ends, offset = [], 32
    while offset + 24 + page_size <= len(data):
        header = data[offset : offset + 24]
        if header[8:16] != salts:
            break
        offset += 24 + page_size
        if int.from_bytes(header[4:8], "big") != 0:
            ends.append(offset)
    return ends


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=30)


def make_ca(folder: Path, name: str) -> tuple[Path, Path]:
    """A CA certificate and key, as a public CA or a company's own CA would have."""
    cert, key = folder / f"{name}-ca.pem", folder / f"{name}-ca.key"
    _openssl(
        *("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2"),
        *("-subj", f"/CN={name} root CA", "-addext", "basicConstraints=critical,CA:TRUE"),
        *("-addext", "keyUsage=critical,keyCertSign,cRLSign", "-keyout", str(key), "-out", str(cert)),
    )
    return cert, key


def issue_server_cert(
    folder: Path, ca: tuple[Path, Path], name: str, *, hosts: Sequence[str] = (), days: int = 2
) -> tuple[Path, Path]:
    """A server certificate for 127.0.0.1 / localhost (and ``hosts``) signed by ``ca``: (cert, key); valid from now
    for ``days`` (-1: it ran out yesterday)."""
    cert, key, csr, ext = (folder / f"{name}{suffix}" for suffix in (".pem", ".key", ".csr", ".ext"))
    names = ",".join(f"DNS:{host}" for host in ("localhost", *hosts))
    ext.write_text(f"subjectAltName=IP:127.0.0.1,{names}\n", encoding="utf-8")
    _openssl(
        *("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"),
        *("-subj", "/CN=localhost", "-keyout", str(key), "-out", str(csr)),
    )
    _openssl(
        *("x509", "-req", "-in", str(csr), "-CA", str(ca[0]), "-CAkey", str(ca[1]), "-CAcreateserial"),
        *("-days", str(days), "-extfile", str(ext), "-out", str(cert)),
    )
    return cert, key


@contextlib.contextmanager
def small_disk(folder: Path, mib: int) -> Iterator[Path]:
    """``folder`` as a file system of ``mib`` MiB (tmpfs) while the block runs: a disk that really fills, as an SD
    card does. Skips the test where mounting is not allowed."""
    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a small file system")
    mount = ["mount", "-t", "tmpfs", "-o", f"size={mib}m", "tmpfs", str(folder)]
    if subprocess.run(mount, capture_output=True, timeout=10).returncode != 0:
        pytest.skip("mount not allowed here")
    try:
        yield folder
    finally:  # lazily: an agent the test killed may still hold a file open for a moment
        subprocess.run(["umount", "-l", str(folder)], capture_output=True, timeout=10)


async def edge(
    *args: str, kill_after_s: float = 60, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`python -m edge ARGS` as its own process (``env``: added to the environment); killed after ``kill_after_s``
    seconds (then the test fails on it)."""
    warm = AgentProcess.starter
    if isinstance(warm, Starter):
        done = await asyncio.to_thread(warm.run, args, env=env, cwd=None, timeout=kill_after_s)
        if done is not None:
            return done
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "edge",
        *args,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), timeout=kill_after_s)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode is not None
    return subprocess.CompletedProcess(args, process.returncode, out.decode(), err.decode())


def edge_blocking(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """`python -m edge ARGS` for a test without an event loop, as subprocess.run(capture_output=True, text=True)
    (``env``: added to the environment)."""
    warm = AgentProcess.starter
    if isinstance(warm, Starter) and (done := warm.run(args, env=env, cwd=cwd, timeout=timeout)) is not None:
        return done
    return subprocess.run(
        [sys.executable, "-m", "edge", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        env={**os.environ, **(env or {})},
    )


def toml(raw: dict[str, Any]) -> str:
    """Just enough TOML for the test configs (tables of strings, numbers, booleans, lists of strings)."""
    lines: list[str] = []

    def table(prefix: str, body: dict[str, Any]) -> None:
        lines.append(f"[{prefix}]")
        lines.extend(f"{k} = {json.dumps(v)}" for k, v in body.items() if not isinstance(v, dict) and v is not None)
        for k, v in body.items():
            if isinstance(v, dict):
                table(f"{prefix}.{k}", v)

    for section, body in raw.items():
        table(section, body)
    return "\n".join(lines) + "\n"


CENTRAL_TOKEN = "central-token-abcdef123456"
# Fast but real: probes and retries in tenths of seconds, no start delay, a rate limit high enough for a short run.
FAST = {
    "token": CENTRAL_TOKEN,
    "rate_limit_rps": 200.0,
    "start_jitter_s": 0.0,
    "schedule_interval_s": 0.0,
    "probe_up_s": 0.2,
    "probe_max_s": 0.2,
    "retry_base_s": 0.05,
    "retry_max_s": 0.5,
    "page_size": 100,
    "batch_size": 50,
}


def mail_to(sink: SmtpSink) -> dict[str, Any]:
    """Settings sections that send every alert to ``sink`` at once (no group wait)."""
    return {
        "smtp": {"host": "127.0.0.1", "port": sink.port, "security": "none", "sender": "edge@store.test"},
        "alerts": {
            "to": ["chef@store.test"],
            "group_wait_s": 0,
            "critical_group_wait_s": 0,
            "disk_free_min_mb": 0,
            "check_interval_s": 0.2,
        },
    }


def in_english(config: Path) -> None:
    """Blocking. The agent of ``config`` speaks English (its mails, its tickets): agent.language added."""
    config.write_text(config.read_text().replace("[agent]\n", '[agent]\nlanguage = "en"\n', 1))


async def edge_backup(config: Path) -> Path:
    """`edge backup` with ``config``: the backup file it wrote."""
    backed_up = await edge("backup", "--config", str(config))
    assert backed_up.returncode == 0, backed_up.stderr
    return Path(backed_up.stdout.split("backup written: ")[1].strip())


def killed_writer(db: Path, megabytes: int) -> None:
    """A process that writes ``megabytes`` into the database's write-ahead log and is killed (SIGKILL, a power cut)
    before that log is written back: the log stays beside the database, its pages new to the file."""
    code = (
        "import os, signal, sqlite3, sys\n"
        "conn = sqlite3.connect(sys.argv[1])\n"
        "conn.execute('PRAGMA journal_mode=WAL')\n"
        "conn.execute('PRAGMA wal_autocheckpoint=0')\n"
        "with conn:\n"
        "    conn.execute('CREATE TABLE ballast(b BLOB)')\n"
        f"    conn.execute('INSERT INTO ballast VALUES (randomblob({megabytes} * 1024 * 1024))')\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    done = subprocess.run([sys.executable, "-c", code, str(db)], capture_output=True, timeout=60)
    assert done.returncode == -signal.SIGKILL, done.stderr
    assert Path(f"{db}-wal").stat().st_size > megabytes * 2**20


async def take_one_order(agent: AgentProcess) -> None:
    """The agent process started, sample order 1 taken (201), the agent stopped cleanly."""
    await agent.start()
    async with api_client(agent.port) as api:
        assert (await post(api, make_order(1)))[0] == 201
    assert await agent.terminate() == 0


_IMPORTED = re.compile(r"^import time:\s+\d+ \|\s+\d+ \|\s+(\S+)$", re.MULTILINE)


def log_events(log: Path) -> list[dict[str, Any]]:
    """The JSON lines of an agent process's log: whole lines only (one the agent is still writing, without its newline
    yet, is left for the next read: one CI run read half a line)."""
    return [
        json.loads(line)
        for line in log.read_text().splitlines(keepends=True)
        if line.startswith("{") and line.endswith("\n")
    ]


def imported_modules(log: str) -> list[str]:
    """The modules Python's import log (PYTHONPROFILEIMPORTTIME=1) in ``log`` names, in import order."""
    return _IMPORTED.findall(log)


def damage_table(db: Path, table: str) -> None:
    """Garbage over the first bytes of ``table``'s root page, as a torn write on an SD card leaves it (the WAL first
    checkpointed, so the page read is the file's)."""
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0] == 0
        root = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = ?", (table,)).fetchone()[0]
        size = conn.execute("PRAGMA page_size").fetchone()[0]
    with db.open("r+b") as file:
        file.seek(size * (root - 1))
        file.write(b"\xde\xad\xbe\xef" * 64)


def ticket_variant(text: str) -> tuple[str | None, int | None]:
    """What a kitchen ticket is, from its text: a whole ticket (None), or change / cancel / added with its revision."""
    revision = re.search(r"Rev\. (\d+)", text)
    if "STORNO" in text:
        return "cancel", int(revision.group(1)) if revision else None
    if "ÄNDERUNG" in text:
        # A change ticket lists lines with a sign or an arrow; a station's first ticket lists them plain.
        variant = "change" if re.search(r"^(\+ |- |~ |\d+ -> )", text, re.MULTILINE) else "added"
        return variant, int(revision.group(1)) if revision else None
    return None, None


async def post_until_taken(session: aiohttp.ClientSession, path: str, body: Any) -> None:
    """As a backend sends: again and again until the agent answers 200/201 (it is down while killed or cut off); any
    other answer than 503 fails the test."""
    while True:
        try:
            async with session.post(path, json=body) as response:
                if response.status in (200, 201):
                    return
                assert response.status == 503, await response.text()
        except (TimeoutError, aiohttp.ClientError):
            pass
        await asyncio.sleep(0.05)


COPY_MARK = "KOPIE / COPY"


def originals_on_paper(printed: Iterable[bytes]) -> collections.Counter[tuple[str, str]]:
    """Each whole ticket a printer got, by (order id, station) from its QR code -> how many of its prints were not
    marked COPY (0 when only copies came out). A ticket a kill cut short has no QR code yet and is left out: its reprint
    follows."""
    originals: collections.Counter[tuple[str, str]] = collections.Counter()
    for data in printed:
        doc = decode(data)
        if doc.qr_codes:
            _, _, order_id, station = doc.qr_codes[0].split(":")[:4]
            originals[(order_id, station)] += COPY_MARK not in doc.text
    return originals


def fill(card: Path, *, leave: int = 0, name: str = "filler") -> Path:
    """Fills the card with one file, leaving ``leave`` bytes free; returns the file (unlink it to make room)."""
    filler = card / name
    with open(filler, "wb", buffering=0) as f:
        with contextlib.suppress(OSError):
            while True:
                f.write(b"\0" * 4096)
        if leave:
            f.truncate(f.tell() - leave)
    return filler


# A card that refuses the scans' writes (as a full one does), for the scans held and recorded once there is room
FULL_SCANS = (
    "CREATE TRIGGER full_scans BEFORE INSERT ON scans BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END"
)


@contextlib.contextmanager
def notify_socket(monkeypatch: pytest.MonkeyPatch, *, watchdog_usec: str | None = None) -> Iterator[socket.socket]:
    """An abstract-namespace datagram socket, announced as @name in NOTIFY_SOCKET to agents made from now on, as
    systemd does for a Type=notify unit (with WATCHDOG_USEC when given); read it with ``receive``."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    name = f"edge-test-{os.getpid()}-{id(sock)}"
    sock.bind("\0" + name)
    sock.setblocking(False)
    monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
    if watchdog_usec is not None:
        monkeypatch.setenv("WATCHDOG_USEC", watchdog_usec)
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    try:
        yield sock
    finally:
        sock.close()


async def receive(sock: socket.socket, until: str, timeout: float = 10.0) -> list[str]:  # noqa: ASYNC109 (a helper)
    """Datagrams from the agent until one carries the line ``until``."""
    loop = asyncio.get_running_loop()
    got: list[str] = []
    async with asyncio.timeout(timeout):
        while not any(until in m.split("\n") for m in got):
            got.append((await loop.sock_recv(sock, 4096)).decode())
    return got


def held_by(filename: str) -> int:
    """Bytes allocated by the lines of ``filename`` and still alive, while ``tracemalloc`` traces: whether a part's
    memory grows with what it is fed."""
    snapshot = tracemalloc.take_snapshot().filter_traces([tracemalloc.Filter(True, filename)])
    return sum(stat.size for stat in snapshot.statistics("filename"))
