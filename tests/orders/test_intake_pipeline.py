"""Intake while the disk is slow: the next orders commit while the fsync of the ones before is still running, and no
order is answered before the fsync that covers it has ended."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from edge.app import Agent
from edge.sim.orders import make_order
from edge.store import db as db_mod
from tests.helpers import api_client, db_rows, post, wait_until


async def test_orders_commit_while_an_earlier_fsync_runs_and_are_answered_after_theirs(
    make_agent: Callable[..., Awaitable[Agent]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fsync of the write-ahead log is held (standing in for a slow SD card): a first order is committed but not
    answered; a second order, pushed meanwhile, is committed too (seen from a second connection) instead of waiting for
    the first one's fsync; once the fsync is let go both are answered 201."""
    agent = await make_agent()
    release = threading.Event()
    real = db_mod.sync_to_disk

    def held_fsync(wal: Path, *, data_only: bool = False) -> None:
        release.wait(10)
        real(wal, data_only=data_only)

    monkeypatch.setattr(db_mod, "sync_to_disk", held_fsync)

    async def stored(order_id: str) -> bool:
        return bool(await db_rows(agent, "SELECT 1 FROM orders WHERE id = ?", order_id))

    first, second = make_order(1), make_order(2)
    try:
        async with api_client(agent) as api:
            answers = [asyncio.create_task(post(api, first))]
            await wait_until(lambda: stored(first["id"]), what="the first order committed")
            answers.append(asyncio.create_task(post(api, second)))
            await wait_until(lambda: stored(second["id"]), what="the second order committed during the first's fsync")
            assert not any(a.done() for a in answers)
            release.set()
            assert [status for status, _ in await asyncio.gather(*answers)] == [201, 201]
    finally:
        release.set()
