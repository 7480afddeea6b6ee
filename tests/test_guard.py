"""The guard against blocking calls on the event loop (tests/conftest.py) fails a test that makes one, and lets the
same call through in a worker thread or in a test without a loop."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
from blockbuster import BlockingError


async def test_sleeping_on_the_loop_fails() -> None:
    """time.sleep on the loop's thread stalls every task: BlockingError."""
    with pytest.raises(BlockingError, match=r"time\.sleep"):
        time.sleep(0.001)  # noqa: ASYNC251 (the blocking call the guard must catch)


async def test_sqlite_on_the_loop_fails_and_in_a_thread_passes(tmp_path: Path) -> None:
    """A second SQLite connection read on the loop is refused; the same read through asyncio.to_thread is fine."""

    def read() -> list[tuple[int]]:
        with sqlite3.connect(tmp_path / "x.db") as conn:
            return conn.execute("SELECT 1").fetchall()

    with pytest.raises(BlockingError, match=r"sqlite3\."):
        read()
    assert await asyncio.to_thread(read) == [(1,)]


async def test_waiting_for_a_child_process_on_the_loop_fails() -> None:
    """subprocess.run waits for the child on the loop's thread: BlockingError; asyncio's subprocesses do not."""
    with pytest.raises(BlockingError, match="waitpid"):
        subprocess.run(["true"], check=True)  # noqa: ASYNC221 (the blocking call the guard must catch)
    process = await asyncio.create_subprocess_exec("true")
    assert await process.wait() == 0


def test_a_test_without_a_loop_may_block() -> None:
    """Plain (synchronous) tests have no loop to stall."""
    time.sleep(0.001)
