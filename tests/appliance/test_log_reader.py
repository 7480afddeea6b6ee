"""The agent's log is read by another process (journald under systemd, a terminal over SSH): one that stops reading
(journald waiting on the same stalled card it writes to, an SSH session gone quiet) must not stop the agent."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
import structlog

from edge.log import LogStream, configure_logging
from edge.sim.orders import make_order
from edge.sim.printer import SimPrinter
from tests.helpers import agent_process, api_client, fresh, post, wait_until


@contextlib.contextmanager
def unread_pipe(path: Path) -> Iterator[int]:
    """A named pipe at ``path`` whose reader holds it open and reads nothing until the test says so: the smallest pipe
    the kernel makes (one page), so a few orders' lines fill it."""
    os.mkfifo(path)
    reader = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        fcntl.fcntl(reader, fcntl.F_SETPIPE_SZ, 4096)
        yield reader
    finally:
        os.close(reader)


def read_lines(reader: int, into: list[str], partial: list[bytes]) -> None:
    """Whatever the pipe holds now, as whole lines."""
    while True:
        try:
            chunk = os.read(reader, 65536)
        except BlockingIOError:
            return
        if not chunk:
            return
        partial.append(chunk)
        *lines, rest = b"".join(partial).split(b"\n")
        partial[:] = [rest]
        into.extend(line.decode(errors="replace") for line in lines)


async def test_a_log_reader_that_stops_reading_does_not_stop_orders_tickets_or_ready(
    tmp_path: Path, printers: dict[str, SimPrinter]
) -> None:
    """The agent logs at info into a pipe nobody reads. Sixty orders, one after the other, are each answered 201 within
    5 s, /ready stays 200 and every ticket prints; once the pipe is read again every line comes, in order (a pause this
    short is within what the agent keeps: nothing dropped), and the log goes on. Before: the first log line that did
    not fit blocked the agent's event loop in write(): after about fifteen orders none was answered, /ready answered
    nothing and printing stopped, for as long as the reader did not read."""
    agent = agent_process(tmp_path, printers, log_level="info")
    agent.log = tmp_path / "log-pipe"
    with unread_pipe(agent.log) as reader:
        await agent.start()
        try:
            async with api_client(agent.port) as api:
                ids = []
                for n in range(1, 61):
                    status, body = await asyncio.wait_for(post(api, fresh(make_order(n, print_receipt=False))), 5)
                    assert status == 201, (n, body)
                    ids.append(body["order_id"])
                async with asyncio.timeout(5), api.get("/ready") as ready:
                    assert ready.status == 200
                await wait_until(lambda: len(printers["kitchen"].printed) >= 60, 15, "sixty kitchen tickets")
                status, body = await post(api, fresh(make_order(61, print_receipt=False)))  # the reader reads again
                assert status == 201, body
                ids.append(body["order_id"])
                lines: list[str] = []
                partial: list[bytes] = []

                def stored() -> list[str]:
                    read_lines(reader, lines, partial)
                    return [event["order_id"] for event in map(json.loads, lines) if event["event"] == "order_stored"]

                await wait_until(lambda: len(stored()) == 61, 10, "every order's line")
                assert stored() == ids
                assert not [line for line in lines if "log_lines_dropped" in line]
        finally:
            await agent.close()


async def test_a_stop_while_the_log_reader_does_not_read_ends_within_seconds(
    tmp_path: Path, printers: dict[str, SimPrinter]
) -> None:
    """SIGTERM while the log's pipe is full and unread: the agent stops (exit 0) within seconds, as systemd's stop
    expects; its last lines get two seconds, then go. Before: the loop sat blocked in write() and never saw the
    signal, until systemd killed it at TimeoutStopSec."""
    agent = agent_process(tmp_path, printers, log_level="info")
    agent.log = tmp_path / "log-pipe"
    with unread_pipe(agent.log):
        await agent.start()
        try:
            async with api_client(agent.port) as api:
                for n in range(1, 31):  # the pipe holds about ten orders' lines
                    status, body = await asyncio.wait_for(post(api, fresh(make_order(n, print_receipt=False))), 5)
                    assert status == 201, (n, body)
            assert await agent.terminate(timeout=10) == 0
        finally:
            await agent.close()


async def test_an_agent_started_with_its_stderr_closed_runs(tmp_path: Path, printers: dict[str, SimPrinter]) -> None:
    """A supervisor that closes the agent's stderr (an init script's `2>&-`, a daemon helper closing every descriptor)
    leaves it no log: it runs anyway, answers orders and prints them, and stops with exit 0. Before: it exited 1 before
    READY, saying nothing anywhere (its log stream could not be opened on a stderr that is not there)."""
    agent = agent_process(tmp_path, printers, log_level="info")
    process = await asyncio.create_subprocess_exec(
        "sh",
        "-c",
        'exec "$0" -m edge run --config "$1" 2>&-',
        sys.executable,
        str(agent.config),
        stdout=asyncio.subprocess.DEVNULL,
    )
    try:
        async with api_client(agent.port) as api:

            async def ready() -> bool:
                assert process.returncode is None, f"the agent exited {process.returncode}"
                try:
                    async with api.get("/ready") as answer:
                        return answer.status == 200
                except aiohttp.ClientConnectionError:
                    return False

            await wait_until(ready, 15, "the agent ready")
            status, body = await post(api, fresh(make_order(1, print_receipt=False)))
            assert status == 201, body
            await wait_until(lambda: printers["kitchen"].printed, 10, "the kitchen ticket")
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 10) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


def test_lines_a_stopped_reader_could_not_take_are_dropped_and_counted_once_it_reads_again() -> None:
    """Past what the agent keeps for a reader that stopped (here eight lines), lines are dropped, never waited for:
    200 lines are logged at once though the pipe takes none after its first page. Once the pipe is read, the lines
    kept come in order, and `log_lines_dropped` with the count of the rest (one line, or more when a write got
    through while they were being logged): every line is either on the pipe or counted."""
    read, write = os.pipe()
    fcntl.fcntl(read, fcntl.F_SETPIPE_SZ, 4096)
    os.set_blocking(read, False)
    saved = structlog.get_config()
    with os.fdopen(write, "w") as stream:
        lines = LogStream(stream, capacity=8)
        try:
            configure_logging(fmt="json", level="info", lines=lines)
            logger = structlog.get_logger()
            logging = threading.Thread(target=lambda: [logger.info("line", n=n) for n in range(200)], daemon=True)
            logging.start()
            logging.join(5)
            assert not logging.is_alive(), "a log call waited for the reader"
            got: list[str] = []
            partial: list[bytes] = []
            deadline = time.monotonic() + 5
            while not [line for line in got if "log_lines_dropped" in line] and time.monotonic() < deadline:
                read_lines(read, got, partial)
                time.sleep(0.01)
            lines.close(2)  # what it kept is written now: it fits the pipe, read empty
            read_lines(read, got, partial)
            events = [json.loads(line) for line in got]
            numbers = [event["n"] for event in events if event["event"] == "line"]
            told = [event for event in events if event["event"] == "log_lines_dropped"]
            assert told, got[-3:]
            assert numbers == sorted(numbers) and len(numbers) < 200
            assert sum(event["count"] for event in told) == 200 - len(numbers)
        finally:
            lines.close(2)
            structlog.configure(**saved)
            os.close(read)


def test_what_libraries_log_goes_out_with_the_agents_lines_redacted(capfd: pytest.CaptureFixture[str]) -> None:
    """A warning a library logs through Python's logging (asyncio's "Task exception was never retrieved", with the
    exception's message) comes out as one of the agent's lines: on its stream, in its format, with secrets scrubbed.
    Before, Python's last resort wrote it to stderr itself: unredacted, unformatted, and on the event loop, where a log
    reader that stopped reading blocked the agent again."""
    secret = "central-Tok3n-visible-nowhere"
    read_end, write_end = os.pipe()
    saved = structlog.get_config()
    try:
        with os.fdopen(write_end, "w") as stream:
            lines = LogStream(stream)
            configure_logging(fmt="json", level="info", secrets=[secret], lines=lines)
            try:
                raise ConnectionError(f"GET https://central.test/?token={secret} failed")
            except ConnectionError:
                logging.getLogger("asyncio").error("Task exception was never retrieved", exc_info=True)
            logging.getLogger("aiosqlite").info("a library's chatter below warning")
            lines.close(5)
        with os.fdopen(read_end) as reader:
            [line] = reader.read().splitlines()
    finally:
        structlog.configure(**saved)
    event = json.loads(line)
    assert (event["logger"], event["level"], event["message"]) == (
        "asyncio",
        "error",
        "Task exception was never retrieved",
    )
    assert "ConnectionError" in event["exception"] and secret not in line and "token=***" in line
    assert secret not in capfd.readouterr().err
