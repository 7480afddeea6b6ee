"""Power-cut test: the agent as a real process under scripts/powercut.c while 3 clients push orders; at a random moment
it is killed and its database put back to what its fsyncs had made durable (what a power cut leaves, where a SIGKILL
alone keeps every write in the page cache), then it starts again. Model and limits: docs/testing.md."""

from __future__ import annotations

import asyncio
import collections
import random
from pathlib import Path

import aiohttp
import pytest

from edge.printing.decode import decode
from edge.sim.orders import make_order
from edge.sim.ports import free_port
from edge.sim.powercut import PowerCut
from edge.sim.printer import SimPrinter
from edge.sim.process import AgentProcess, write_config
from tests.helpers import (
    COPY_MARK,
    TOKEN,
    api_client,
    db_rows,
    eventually,
    originals_on_paper,
    post_until_taken,
    ticket_variant,
    wait_until,
)

ORDERS = 240
CUTS = 3
CLIENTS = 3


def receipt(n: int) -> bool:
    return n % 3 == 0


def bar(n: int) -> bool:
    return n % 4 == 0


@pytest.mark.crash
@pytest.mark.slow(seconds=20)
async def test_a_power_cut_loses_no_acknowledged_order_and_prints_nothing_unmarked_twice(
    tmp_path: Path, powercut_shim: Path
) -> None:
    """After each cut every order answered 2xx before it is still stored, every ticket and receipt reaches paper, and a
    ticket that was on paper before the cut comes out again only marked COPY: nothing prints unmarked twice."""
    kitchen, front = SimPrinter("kitchen"), SimPrinter("front")
    kitchen.bytes_per_s = 120_000  # about 4 ms a ticket: cuts land while tickets go out and their marks wait
    await kitchen.start()
    await front.start()
    port = free_port()
    data_dir = tmp_path / "data"
    db = data_dir / "edge.db"
    config = write_config(
        tmp_path / "edge.toml",
        data_dir=data_dir,
        api_port=port,
        token=TOKEN,
        printers={"kitchen": kitchen.port, "front": front.port},
        store_id="power-cut",
    )
    # Syncs as slow as an SD card's: a commit is not durable for 10 ms, long enough for a cut to land there.
    power = PowerCut(powercut_shim, data_dir, tmp_path / "durable", sync_ms=10)
    agent = AgentProcess(config, port, tmp_path / "agent.log", env=power.env())

    acknowledged: list[str] = []  # in the order the 2xx answers came
    acked_before_cut: list[int] = []  # len(acknowledged) at each cut
    todo = collections.deque(range(ORDERS))

    async def client() -> None:
        async with api_client(port, timeout=aiohttp.ClientTimeout(total=10)) as session:
            while todo:
                n = todo.popleft()
                order = make_order(n, prefix="cut", print_receipt=receipt(n), bar=bar(n))
                await post_until_taken(session, "/api/v1/orders", order)
                acknowledged.append(order["id"])

    async def cuts() -> None:
        nonlocal agent
        rng = random.Random(3)
        for _ in range(CUTS):
            await agent.start()
            target = len(acknowledged) + rng.randint(25, 60)
            await wait_until(lambda t=target: len(acknowledged) >= t, 30, f"{target} orders answered")
            await asyncio.sleep(rng.uniform(0, 0.03))  # the moment of the cut: between answers, not just after one
            await agent.kill()
            acked_before_cut.append(len(acknowledged))
            await asyncio.to_thread(power.cut)
        agent = AgentProcess(config, port, tmp_path / "agent.log")  # after the last cut: a plain start
        await agent.start()

    try:
        await asyncio.wait_for(asyncio.gather(cuts(), *(client() for _ in range(CLIENTS))), timeout=60)
        assert len(acknowledged) == ORDERS and len(acked_before_cut) == CUTS

        stored = {r[0] for r in await db_rows(db, "SELECT id FROM orders")}
        lost = [o for o in acknowledged if o not in stored]
        assert not lost, f"answered 2xx, gone after a power cut (cuts after {acked_before_cut} answers): {lost}"
        [(all_jobs,)] = await db_rows(db, "SELECT COUNT(*) FROM print_jobs")
        await eventually(
            lambda: db_rows(db, "SELECT COUNT(*) FROM print_jobs WHERE state = 'printed'"),
            lambda rows: rows[0][0] == all_jobs,
            30,
            "every job printed",
        )
        assert await agent.terminate() == 0
        assert await db_rows(db, "PRAGMA integrity_check") == [("ok",)]

        originals = originals_on_paper(kitchen.printed)
        assert {ticket_variant(decode(data).text) for data in kitchen.printed} == {(None, None)}  # whole tickets only
        numbers = {make_order(n, prefix="cut")["number"]: n for n in range(ORDERS)}
        for data in front.printed:
            text = decode(data).text
            for n in {numbers[w] for w in text.split() if w in numbers}:
                originals[(f"cut_{n:06d}", "receipt")] += COPY_MARK not in text
        wanted = {(f"cut_{n:06d}", "kitchen") for n in range(ORDERS)}
        wanted |= {(f"cut_{n:06d}", "bar") for n in range(ORDERS) if bar(n)}
        wanted |= {(f"cut_{n:06d}", "receipt") for n in range(ORDERS) if receipt(n)}
        assert wanted - set(originals) == set(), "tickets or receipts never on paper"
        assert set(originals) == wanted, "printed but never ordered"
        twice = sorted(t for t, count in originals.items() if count > 1)
        assert not twice, f"printed unmarked twice (cuts after {acked_before_cut} answers): {twice}"
    finally:
        if agent.proc and agent.proc.returncode is None:
            await agent.kill()
        await kitchen.stop()
        await front.stop()
