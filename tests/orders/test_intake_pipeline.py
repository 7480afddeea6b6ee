"""Intake while the disk is slow: no order is answered before the fsync that covers it has ended."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from edge.app import Agent
from edge.sim.orders import make_order
from edge.store import db as db_mod
from tests.helpers import api_client, db_rows, post, wait_until


async def test_an_order_pushed_while_an_earlier_fsync_runs_is_answered_only_after_an_fsync_of_its_own(
    make_agent: Callable[..., Awaitable[Agent]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fsync of the write-ahead log is held (standing in for a slow SD card): a first order is committed but not
    answered; a second order, pushed meanwhile, is not answered either; once the fsync is let go both are answered
    201, the second only after an fsync that began once it was committed."""
    agent = await make_agent()
    first, second = make_order(1), make_order(2)
    release = threading.Event()
    real = db_mod.sync_to_disk
    covering: list[float] = []  # when each fsync that began with the second order committed ended

    def held_fsync(wal: Path, *, data_only: bool = False) -> None:
        release.wait(10)
        covers = _committed_now(agent.settings.agent.db_path, second["id"])
        real(wal, data_only=data_only)
        if covers:
            covering.append(time.monotonic())

    monkeypatch.setattr(db_mod, "sync_to_disk", held_fsync)

    async def stored(order_id: str) -> bool:
        return bool(await db_rows(agent, "SELECT 1 FROM orders WHERE id = ?", order_id))

    try:
        async with api_client(agent) as api:
            answers = [asyncio.create_task(post(api, first))]
            await wait_until(lambda: stored(first["id"]), what="the first order committed")
            answers.append(asyncio.create_task(post(api, second)))
            answered: list[float] = []
            answers[1].add_done_callback(lambda _: answered.append(time.monotonic()))
            await asyncio.sleep(0.2)
            assert not any(a.done() for a in answers)
            release.set()
            assert [status for status, _ in await asyncio.gather(*answers)] == [201, 201]
            assert covering and covering[0] <= answered[0]
    finally:
        release.set()


def _committed_now(db: Path, order_id: str) -> bool:
    """Read on the fsync's thread, from a connection of its own."""
    with contextlib.closing(sqlite3.connect(db)) as conn:
        return conn.execute("SELECT 1 FROM orders WHERE id = ?", (order_id,)).fetchone() is not None
