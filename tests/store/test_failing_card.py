"""A card that starts failing: the WAL's fsync answers EIO (a worn SD card, an eMMC at its end of life)."""

from __future__ import annotations

import asyncio
import errno
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest

from edge.app import Agent
from edge.events import StorageProblem, StorageRecovered
from edge.sim.orders import make_order
from edge.sim.printer import SimPrinter
from edge.store import db as db_module
from tests.helpers import Recorder, agent_process, api_client, db_rows, eventually, fresh, post


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


@pytest.mark.slow(seconds=6)
async def test_a_retry_of_an_order_whose_commit_was_never_synced_is_refused_until_an_fsync_succeeds(
    tmp_path: Path, printers: dict[str, SimPrinter], fsync_counter_shim: Path
) -> None:
    """The agent as its own process on a card whose WAL fsync answers EIO (scripts/slowfsync.c while a file exists).
    An order sent then is answered 503: its commit is in the WAL, not durable. The sender's retries, while every fsync
    still fails, must be 503 too: a "duplicate" answer would tell it "stored" for a commit no fsync made durable (a
    power cut loses it; on Linux a failed fsync may drop the pages it could not write). Once the card syncs again the
    retry is answered 2xx, and after a SIGKILL and a start the order is there and printed once. Before stop 83 the
    retries were answered 200 "duplicate" while the fsync still failed (storage83 F4): a failed fsync dropped its groups
    from the ones waiting for one, so the retry's write, which changes no row, synced nothing and was answered at once.
    """
    failing = tmp_path / "card-fails"
    env = {"LD_PRELOAD": str(fsync_counter_shim), "SLOWFSYNC_MS": "0", "SLOWFSYNC_FAIL_FILE": str(failing)}
    agent = agent_process(tmp_path, printers, env=env)
    order = fresh(make_order(1, print_receipt=False))
    await agent.start()
    try:
        async with api_client(agent.port) as api:
            failing.touch()  # the card starts failing its fsyncs
            assert (await post(api, order))[0] == 503
            retries = []
            for _ in range(8):  # the sender's retries; the spool's and alerter's writes fail and settle meanwhile
                await asyncio.sleep(0.25)
                retries.append((await post(api, order))[0])
            assert retries == [503] * len(retries), "a retry was answered before its commit was synced"
            failing.unlink()
            status, body = await post(api, order)
            assert status in (200, 201), body
            await printers["kitchen"].wait_for_printed(1)
        db = tmp_path / "data" / "edge.db"
        printed = "SELECT count(*) FROM print_jobs WHERE state = 'printed'"
        await eventually(lambda: db_rows(db, printed), lambda rows: rows[0][0] == 1, what="its ticket marked printed")
        await agent.kill()  # a power cut or the watchdog
        await agent.start()
        assert await db_rows(db, "SELECT count(*) FROM orders WHERE id = ?", order["id"]) == [(1,)]
        await asyncio.sleep(1.0)  # a second ticket, if the start printed it again, is out by now
        assert len([t for t in printers["kitchen"].printed if order["number"].encode() in t]) == 1
    finally:
        failing.unlink(missing_ok=True)
        await agent.close()


@pytest.mark.slow(seconds=6)
async def test_a_ticket_whose_claim_the_failing_card_did_not_sync_prints_once_unmarked(
    tmp_path: Path, printers: dict[str, SimPrinter], fsync_counter_shim: Path
) -> None:
    """An order is stored while the kitchen printer is off; the WAL's fsync starts answering EIO
    (scripts/slowfsync.c) and the printer comes back: the spool claims the ticket, the claim commits and its fsync
    fails, so nothing is sent. Once the card syncs again the ticket prints once, unmarked: not a byte of it went out
    before. Before stop 83 it printed marked COPY (storage83 F2, F4): the failed claim left the job 'printing', and the
    requeue after the storage problem marked every such job COPY as if it might be half out."""
    failing = tmp_path / "card-fails"
    env = {"LD_PRELOAD": str(fsync_counter_shim), "SLOWFSYNC_MS": "0", "SLOWFSYNC_FAIL_FILE": str(failing)}
    agent = agent_process(tmp_path, printers, env=env)
    db = tmp_path / "data" / "edge.db"
    kitchen = printers["kitchen"]
    order = fresh(make_order(1, print_receipt=False))
    await agent.start()
    try:
        async with api_client(agent.port) as api:
            kitchen.set_offline(True)
            assert (await post(api, order))[0] == 201
            await asyncio.sleep(0.5)  # the spool finds the printer off
            failing.touch()
            kitchen.set_offline(False)
            claimed = "SELECT count(*) FROM print_jobs WHERE state = 'printing'"
            await eventually(lambda: db_rows(db, claimed), lambda rows: rows[0][0] == 1, what="the ticket claimed")
            failing.unlink()
            [ticket] = await kitchen.wait_for_printed(1)
            assert await db_rows(db, "SELECT copy FROM print_jobs") == [(0,)]
            assert order["number"].encode() in ticket
    finally:
        failing.unlink(missing_ok=True)
        await agent.close()
