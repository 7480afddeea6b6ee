"""A card that starts failing: the WAL's fsync answers EIO (a worn SD card, an eMMC at its end of life)."""

from __future__ import annotations

import errno
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest

from edge.app import Agent
from edge.events import StorageProblem, StorageRecovered
from edge.sim.orders import make_order
from edge.store import db as db_module
from tests.helpers import Recorder, api_client, eventually, post


async def test_a_failing_fsync_is_a_storage_problem_until_the_card_takes_writes_again(
    make_agent: Callable[..., Awaitable[Agent]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """While the write-ahead log's fsync fails with an I/O error, orders are answered 503 (not stored for sure), and
    the agent says so as for a full or read-only card: StorageProblem (the storage alert mail), /ready 503 and
    edge_storage_writable 0; once fsync works again, one write clears it. Before, the orders got 503 but nothing told
    the manager: the metric stayed 1 and no alert went (probe_intake D4)."""
    failing = False
    real = db_module.sync_to_disk

    def sync(wal: Path, *, data_only: bool = False) -> None:
        if failing:
            raise OSError(errno.EIO, "Input/output error")
        real(wal, data_only=data_only)

    monkeypatch.setattr(db_module, "sync_to_disk", sync)
    events = Recorder()
    agent = await make_agent(listen=events)
    failing = True  # the card starts failing while the agent runs
    async with api_client(agent) as api:
        order = make_order(1, print_receipt=False)  # dated now, to the second: the retry below resends this one
        status, body = await post(api, order)
        assert status == 503, body
        [problem] = events.of(StorageProblem)
        assert "cannot sync the write-ahead log" in problem.detail
        async with api.get("/ready") as response:
            assert response.status == 503
        async with api.get("/metrics") as response:
            assert "edge_storage_writable 0.0" in await response.text()
        failing = False
        await eventually(lambda: _ready(api), lambda status: status == 200, what="/ready once writes go through")
        assert events.of(StorageRecovered)
        # The sender's retry: the order had committed, only its fsync failed, so it is there now (a duplicate).
        assert (await post(api, order))[0] == 200


async def _ready(api: aiohttp.ClientSession) -> int:
    async with api.get("/ready") as response:
        return response.status
